"""CIFAR-10/100 loaders on tiny files in the official pickle format."""

from __future__ import annotations

import collections
import pickle
import shutil
import tarfile

import numpy as np
import pytest

from colearning.data import load_dataset
from colearning.errors import DataError


def load(path, tmp_path, name="cifar10", **kwargs):
    return load_dataset(
        name, str(path), cache_dir=str(tmp_path / "cache"), progress=False, **kwargs
    )


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def rewrite(folder, file_name, **changes):
    """Rewrite one pickled batch with some entries replaced."""
    content = pickle.loads((folder / file_name).read_bytes(), encoding="bytes")
    content.update({key.encode(): value for key, value in changes.items()})
    (folder / file_name).write_bytes(pickle.dumps(content, protocol=2))


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "tar.gz"])
def test_cifar10_official_files(make_cifar, tmp_path, archive):
    expected = make_cifar("cifar10", archive=archive)
    raw = load(expected.path, tmp_path)
    expected.assert_loaded(raw)
    assert raw.train_x.shape == (20, 3, 32, 32) and raw.test_x.shape == (6, 3, 32, 32)
    assert (raw.num_classes, raw.in_channels, raw.image_size, raw.n_total) == (10, 3, 32, 26)


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "tar.gz"])
def test_cifar100_official_files(make_cifar, tmp_path, archive):
    expected = make_cifar("cifar100", archive=archive)
    raw = load(expected.path, tmp_path, name="cifar100")
    expected.assert_loaded(raw)
    assert raw.num_classes == 100 and len(raw.train_y) == 12


@pytest.mark.parametrize("keep", ["folder", "archive"])
def test_directory_holding_the_release(make_cifar, tmp_path, keep):
    expected = make_cifar("cifar10", archive=True)  # writes both the folder and the archive
    parent = expected.path.parent
    if keep == "archive":
        shutil.rmtree(parent / "cifar-10-batches-py")
    else:
        expected.path.unlink()
    expected.assert_loaded(load(parent, tmp_path))


def test_default_place_is_colearning_data(make_cifar, tmp_path, monkeypatch):
    expected = make_cifar("cifar10")
    monkeypatch.setenv("COLEARNING_DATA", str(expected.path.parent))
    expected.assert_loaded(load_dataset("cifar10", cache_dir=str(tmp_path / "c"), progress=False))


@pytest.mark.parametrize("download", [True, False])
def test_missing_release_names_the_expected_path(tmp_path, download):
    with pytest.raises(DataError) as excinfo:
        load(tmp_path / "nowhere", tmp_path, download=download)
    assert str(tmp_path / "nowhere" / "cifar-10-python.tar.gz") in one_line_error(excinfo)


def test_missing_release_at_default_place(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar100", progress=False)
    expected = tmp_path / "default-data" / "cifar-100-python.tar.gz"  # COLEARNING_DATA, conftest
    assert str(expected) in one_line_error(excinfo)


def test_truncated_tar_gz(make_cifar, tmp_path):
    archive = make_cifar("cifar10", archive=True).path
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError) as excinfo:
        load(archive, tmp_path)
    assert str(archive) in one_line_error(excinfo)


def test_archive_missing_a_member(make_cifar, tmp_path):
    folder = make_cifar("cifar10").path
    (folder / "data_batch_3").unlink()
    archive = tmp_path / "partial.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    with pytest.raises(DataError, match="cifar-10-batches-py/data_batch_3"):
        load(archive, tmp_path)


def test_folder_missing_a_file(make_cifar, tmp_path):
    folder = make_cifar("cifar10").path
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError) as excinfo:
        load(folder, tmp_path)
    assert str(folder / "data_batch_4") in one_line_error(excinfo)


def test_bad_pickle(make_cifar, tmp_path):
    folder = make_cifar("cifar10").path
    (folder / "data_batch_2").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError) as excinfo:
        load(folder, tmp_path)
    assert str(folder / "data_batch_2") in one_line_error(excinfo)


def test_pickle_with_code_is_refused(make_cifar, tmp_path):
    folder = make_cifar("cifar10").path
    (folder / "test_batch").write_bytes(pickle.dumps(collections.OrderedDict(a=1)))
    with pytest.raises(DataError, match="forbidden global collections.OrderedDict"):
        load(folder, tmp_path)


def test_wrong_image_shape(make_cifar, tmp_path):
    folder = make_cifar("cifar10").path
    rewrite(folder, "data_batch_1", data=np.zeros((4, 3071), dtype=np.uint8))
    with pytest.raises(DataError, match=r"data_batch_1: b'data' is uint8 \[4, 3071\]"):
        load(folder, tmp_path)


def test_label_count_mismatch(make_cifar, tmp_path):
    folder = make_cifar("cifar10").path
    rewrite(folder, "data_batch_5", labels=[0, 1])
    with pytest.raises(DataError, match="data_batch_5: b'labels'"):
        load(folder, tmp_path)


def test_label_out_of_range(make_cifar, tmp_path):
    folder = make_cifar("cifar100").path
    rewrite(folder, "test", fine_labels=[0, 1, 2, 3, 4, 100])
    with pytest.raises(DataError, match=r"test: labels span \[0, 100\]"):
        load(folder, tmp_path, name="cifar100")


def test_missing_key_and_bad_meta(make_cifar, tmp_path):
    folder = make_cifar("cifar10").path
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}))
    with pytest.raises(DataError, match="should list 10 class names"):
        load(folder, tmp_path)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"names": []}))
    with pytest.raises(DataError, match="has no b'label_names' entry"):
        load(folder, tmp_path)


def test_image_folder_archive_suggests_imagefolder(make_imagefolder, tmp_path):
    archive = make_imagefolder("tgz", top="cifar10").path
    with pytest.raises(DataError, match=r"holds class folders of images \(e.g. cifar10/test/cat/"
                                        r"0.png\), not the official cifar-10-python.tar.gz; to "
                                        "train on it, set data.name=imagefolder") as excinfo:
        load(archive, tmp_path)
    assert str(archive) in one_line_error(excinfo)


def test_image_folder_suggests_imagefolder(make_imagefolder, tmp_path):
    folder = make_imagefolder("dir").path
    before = sorted(folder.rglob("*"))
    with pytest.raises(DataError, match="holds train/ and test/ folders, an image folder, not "
                                        "CIFAR-100's .*set data.name=imagefolder") as excinfo:
        load(folder, tmp_path, name="cifar100")
    assert str(folder) in one_line_error(excinfo)
    assert sorted(folder.rglob("*")) == before  # no download into the user's folder


def test_labels_of_one_class_are_refused(make_cifar, tmp_path):
    folder = make_cifar("cifar10").path
    for file_name in (f"data_batch_{i}" for i in range(1, 6)):
        rewrite(folder, file_name, labels=[3] * 4)
    with pytest.raises(DataError, match=r"every train image has the same label \(class_3\)"):
        load(folder, tmp_path)
