"""The decoded-data cache: hits skip decoding, stale or corrupt files are rebuilt."""

from __future__ import annotations

import os
import warnings

import pytest

from colearning.data import cache, cifar, imagefolder, load_dataset


def forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded although the cache should have been used")

    monkeypatch.setattr(imagefolder, "read_imagefolder", fail)
    monkeypatch.setattr(cifar, "read", fail)


def count_decoding(monkeypatch) -> list[int]:
    calls = []
    original = imagefolder.read_imagefolder

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(imagefolder, "read_imagefolder", counted)
    return calls


def load(name, path, cache_dir):
    return load_dataset(name, str(path), cache_dir=str(cache_dir), progress=False)


@pytest.mark.parametrize("kind", ["dir", "tgz"])
def test_second_load_does_not_decode(make_imagefolder, tmp_path, monkeypatch, kind):
    expected = make_imagefolder(kind)
    expected.assert_loaded(load("imagefolder", expected.path, tmp_path / "c"))
    files = list((tmp_path / "c").iterdir())
    assert len(files) == 1 and files[0].name.startswith("imagefolder-")  # no temp files left
    forbid_decoding(monkeypatch)
    expected.assert_loaded(load("imagefolder", expected.path, tmp_path / "c"))


def test_cifar_is_cached_in_default_dir(make_cifar, tmp_path, monkeypatch):
    expected = make_cifar("cifar10", archive=True)
    load_dataset("cifar10", str(expected.path), progress=False)
    assert len(list((tmp_path / "default-cache").glob("cifar10-*.npy"))) == 1  # COLEARNING_CACHE
    forbid_decoding(monkeypatch)
    expected.assert_loaded(load_dataset("cifar10", str(expected.path), progress=False))


def test_changed_source_misses(make_imagefolder, tmp_path, monkeypatch):
    expected = make_imagefolder("dir")
    calls = count_decoding(monkeypatch)
    load("imagefolder", expected.path, tmp_path / "c")
    image = expected.path / "train" / "cat" / "0.png"
    os.utime(image, ns=(0, image.stat().st_mtime_ns + 10**9))  # edited in place
    load("imagefolder", expected.path, tmp_path / "c")
    assert len(calls) == 2


def test_edit_inside_a_linked_folder_misses(make_imagefolder, tmp_path, monkeypatch):
    expected = make_imagefolder("dir")
    cat = expected.path / "train" / "cat"
    cat.rename(tmp_path / "cat")
    cat.symlink_to(tmp_path / "cat", target_is_directory=True)
    calls = count_decoding(monkeypatch)
    expected.assert_loaded(load("imagefolder", expected.path, tmp_path / "c"))
    image = tmp_path / "cat" / "0.png"
    os.utime(image, ns=(0, image.stat().st_mtime_ns + 10**9))  # edited behind the link
    expected.assert_loaded(load("imagefolder", expected.path, tmp_path / "c"))
    assert len(calls) == 2


def test_same_path_other_name_and_file_key(make_imagefolder, tmp_path):
    source = make_imagefolder("tgz").path
    first = cache.cache_path("imagefolder", source, tmp_path)
    assert first == cache.cache_path("imagefolder", source, tmp_path)
    assert first != cache.cache_path("cifar10", source, tmp_path)
    os.utime(source, ns=(0, source.stat().st_mtime_ns + 1))
    assert first != cache.cache_path("imagefolder", source, tmp_path)


def corrupt(path, how):
    data = path.read_bytes()
    if how == "garbage":
        path.write_bytes(b"\x93NUMPY garbage" * 10)
    elif how == "truncated":
        path.write_bytes(data[: len(data) * 2 // 3])
    elif how.startswith("flipped"):
        # The file ends with the test images, then test labels (header ~128 B, data 32 B).
        position = len(data) - (300 if how == "flipped data" else 150)
        path.write_bytes(data[:position] + bytes([data[position] ^ 1]) + data[position + 1 :])
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["garbage", "truncated", "flipped data", "flipped header", "empty"])
def test_corrupt_cache_is_rebuilt(make_imagefolder, tmp_path, monkeypatch, how):
    expected = make_imagefolder("tar")
    load("imagefolder", expected.path, tmp_path / "c")
    (cache_file,) = (tmp_path / "c").iterdir()
    corrupt(cache_file, how)
    with pytest.warns(UserWarning, match="is corrupt .*deleting it and rebuilding"):
        expected.assert_loaded(load("imagefolder", expected.path, tmp_path / "c"))
    forbid_decoding(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected.assert_loaded(load("imagefolder", expected.path, tmp_path / "c"))


def test_unwritable_cache_only_warns(make_imagefolder, tmp_path):
    expected = make_imagefolder("dir")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write decoded-data cache"):
        expected.assert_loaded(load("imagefolder", expected.path, blocker / "c"))


def test_digits_are_not_cached(tmp_path):
    load_dataset("digits", cache_dir=str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


def test_a_cache_entry_that_is_a_directory_is_a_one_line_data_error(tmp_path, make_imagefolder,
                                                                   capsys):
    from colearning.cli import main
    from colearning.data.cache import cache_path

    tree = make_imagefolder("dir").path
    cache = tmp_path / "cache"
    cache_path("imagefolder", tree, cache).mkdir(parents=True)
    assert main(["train", "--run-dir", str(tmp_path / "r"), "data.name=imagefolder",
                 f"data.path={tree}", f"data.cache_dir={cache}", "model.name=mlp",
                 "train.epochs=1", "--no-progress", "device=cpu"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "is a directory or special file, not a cache file: move it away" in err
