"""The imagefolder loader on folders and tarballs of tiny PNG/JPEG files."""

from __future__ import annotations

import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from colearning.data import load_dataset
from colearning.errors import ConfigError, DataError
from tests.data.conftest import make_tar


def load(path, tmp_path, **kwargs):
    return load_dataset(
        "imagefolder", str(path), cache_dir=str(tmp_path / "cache"), progress=False, **kwargs
    )


@pytest.mark.parametrize(
    ("kind", "top"),
    [("dir", None), ("tar", None), ("tar", "cifar10"), ("tgz", None), ("tgz", "cifar10")],
)
def test_layouts(make_imagefolder, tmp_path, kind, top):
    expected = make_imagefolder(kind, top=top)
    raw = load(expected.path, tmp_path)
    expected.assert_loaded(raw)  # includes the grayscale PNG, expanded to RGB
    assert (raw.in_channels, raw.image_size, raw.num_classes) == (3, 6, 2)


def test_tar_gz_suffix_and_progress_bar(make_imagefolder, tmp_path):
    expected = make_imagefolder("tgz")
    renamed = expected.path.rename(expected.path.with_name("images.tar.gz"))
    expected.assert_loaded(load_dataset("imagefolder", str(renamed), progress=True))


def test_jpeg_and_hidden_files(tmp_path):
    pixels = np.full((8, 8, 3), 120, dtype=np.uint8)
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "jpg" / split / name).mkdir(parents=True)
            Image.fromarray(pixels).save(tmp_path / "jpg" / split / name / "0.jpg", quality=95)
            (tmp_path / "jpg" / split / name / ".DS_Store").write_bytes(b"\0junk")
    raw = load(tmp_path / "jpg", tmp_path)
    assert raw.train_x.shape == (2, 3, 8, 8) and raw.classes == ["a", "b"]
    assert np.abs(raw.test_x.astype(int) - 120).max() <= 2


def test_unreadable_image_is_named(make_imagefolder, tmp_path):
    expected = make_imagefolder("dir")
    bad = expected.path / "train" / "cat" / "9.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError) as excinfo:
        load(expected.path, tmp_path)
    assert str(bad) in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_unreadable_image_in_tar_is_named(make_imagefolder, tmp_path):
    expected = make_imagefolder("dir")
    (expected.path / "test" / "dog" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(expected.path / "train", arcname="train")
        tar.add(expected.path / "test", arcname="test")
    with pytest.raises(DataError, match=f"{archive}:test/dog/5.png is not a readable image"):
        load(archive, tmp_path)


def test_images_of_different_sizes(make_imagefolder, tmp_path):
    expected = make_imagefolder("dir")
    odd = expected.path / "test" / "dog" / "7.png"
    Image.fromarray(np.zeros((7, 7, 3), dtype=np.uint8)).save(odd)
    with pytest.raises(DataError, match="7x7 but .* is 6x6; resize") as excinfo:
        load(expected.path, tmp_path)
    assert str(odd) in str(excinfo.value)


def test_non_square_images(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "wide" / split / "a").mkdir(parents=True)
        Image.fromarray(np.zeros((4, 6, 3), dtype=np.uint8)).save(
            tmp_path / "wide" / split / "a" / "0.png"
        )
    with pytest.raises(DataError, match="is 6x4, not square"):
        load(tmp_path / "wide", tmp_path)


def test_mismatched_class_sets(make_imagefolder, tmp_path):
    expected = make_imagefolder("dir")
    (expected.path / "test" / "bird").mkdir()
    shutil.copy(expected.path / "test" / "cat" / "0.png", expected.path / "test" / "bird")
    with pytest.raises(DataError, match="only in train: -; only in test: bird"):
        load(expected.path, tmp_path)


def test_missing_split(make_imagefolder, tmp_path):
    expected = make_imagefolder("dir")
    shutil.rmtree(expected.path / "test")
    with pytest.raises(DataError, match="no images under test/"):
        load(expected.path, tmp_path)


def test_several_top_folders(make_imagefolder, tmp_path):
    expected = make_imagefolder("dir")
    archive = tmp_path / "two.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(expected.path / "train", arcname="a/train")
        tar.add(expected.path / "test", arcname="b/test")
    with pytest.raises(DataError, match=r"several top folders \(a, b\)"):
        load(archive, tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load(tmp_path / "empty", tmp_path)


def test_truncated_tgz(make_imagefolder, tmp_path):
    archive = make_imagefolder("tgz").path
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(DataError, match="is not a readable tar archive"):
        load(archive, tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "absent", tmp_path)
    with pytest.raises(ConfigError, match="needs a path"):
        load_dataset("imagefolder")


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_single_class_folder_is_refused(make_imagefolder, tmp_path):
    expected = make_imagefolder("dir")
    for split in ("train", "test"):
        shutil.rmtree(expected.path / split / "dog")
    with pytest.raises(DataError, match=r"single class folder \(cat\); a classifier needs at "
                                        "least 2 classes") as excinfo:
        load(expected.path, tmp_path)
    assert str(expected.path) in one_line(excinfo)


def test_broken_link_is_named(make_imagefolder, tmp_path):
    expected = make_imagefolder("dir")
    link = expected.path / "train" / "cat" / "9.png"
    link.symlink_to(tmp_path / "deleted.png")
    with pytest.raises(DataError, match="is a broken symbolic link") as excinfo:
        load(expected.path, tmp_path)
    assert str(link) in one_line(excinfo) and str(tmp_path / "deleted.png") in str(excinfo.value)


@pytest.mark.parametrize("where", ["file to itself", "folder to its split", "folder to root"])
def test_link_loop_is_named(make_imagefolder, tmp_path, where):
    expected = make_imagefolder("dir")
    cat = expected.path / "train" / "cat"
    if where == "file to itself":
        link = cat / "9.png"
        link.symlink_to("9.png")
    elif where == "folder to its split":
        link = cat / "again"
        link.symlink_to("..", target_is_directory=True)
    else:  # one link at the top and one deep down, each back to the root
        (expected.path / "mirror").symlink_to(".", target_is_directory=True)
        link = expected.path / "mirror"
        (cat / "up").symlink_to("../..", target_is_directory=True)
    with pytest.raises(DataError, match="is a symbolic link loop") as excinfo:
        load(expected.path, tmp_path)
    assert str(link) in one_line(excinfo)


def test_linked_folders_are_followed(make_imagefolder, tmp_path):
    expected = make_imagefolder("dir")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (expected.path / "train" / "cat").rename(elsewhere / "cat")
    (expected.path / "train" / "cat").symlink_to(elsewhere / "cat", target_is_directory=True)
    image = expected.path / "test" / "dog" / "1.png"
    image.rename(elsewhere / "1.png")
    image.symlink_to(elsewhere / "1.png")
    expected.assert_loaded(load(expected.path, tmp_path))


def test_symbolic_link_in_tar_is_named(make_imagefolder, tmp_path):
    expected = make_imagefolder("dir")
    (expected.path / "train" / "cat" / "3.png").symlink_to("0.png")
    archive = make_tar(expected.path, tmp_path / "linked.tar", "images")
    with pytest.raises(DataError, match="is a symbolic link .*tar --dereference") as excinfo:
        load(archive, tmp_path)
    assert f"{archive}:images/train/cat/3.png" in one_line(excinfo)


def test_hard_link_in_tar_is_read(make_imagefolder, tmp_path):
    expected = make_imagefolder("dir")
    for split in ("train", "test"):  # each dog image the same file as the cat image
        for name in ("0.png", "1.png"):
            (expected.path / split / "dog" / name).unlink()
            (expected.path / split / "dog" / name).hardlink_to(expected.path / split / "cat" / name)
    archive = make_tar(expected.path, tmp_path / "hard.tar.gz", "images")
    with tarfile.open(archive) as tar:
        assert tar.getmember("images/test/dog/0.png").islnk()
    raw = load(archive, tmp_path)
    np.testing.assert_array_equal(raw.test_x[2:], raw.test_x[:2])  # dog 0, 1 == cat 0, 1
    np.testing.assert_array_equal(raw.train_x[3:5], raw.train_x[:2])
    np.testing.assert_array_equal(raw.test_y, [0, 0, 1, 1])


def test_file_that_is_not_an_archive(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(photo)
    with pytest.raises(DataError, match="is not a tar archive") as excinfo:
        load(photo, tmp_path)
    assert str(photo) in one_line(excinfo)
