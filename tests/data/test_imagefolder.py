"""The imagefolder loader on folders and tarballs of tiny PNG/JPEG files."""

from __future__ import annotations

import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from colearning.data import load_dataset
from colearning.errors import ConfigError, DataError


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
        (tmp_path / "jpg" / split / "a").mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / "jpg" / split / "a" / "0.jpg", quality=95)
        (tmp_path / "jpg" / split / "a" / ".DS_Store").write_bytes(b"\0junk")
    raw = load(tmp_path / "jpg", tmp_path)
    assert raw.train_x.shape == (1, 3, 8, 8) and raw.classes == ["a"]
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
