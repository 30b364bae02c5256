"""Downloading a release: file:// URLs stand in for the official server."""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request

import pytest

from colearning.data import cifar, load_dataset
from colearning.errors import DataError


@pytest.fixture
def served(make_cifar, monkeypatch):
    """A tiny cifar-10-python.tar.gz served at a file:// URL with its true md5."""
    expected = make_cifar("cifar10", archive=True)
    md5 = hashlib.md5(expected.path.read_bytes()).hexdigest()
    monkeypatch.setitem(cifar.DOWNLOADS, "cifar10", {"url": expected.path.as_uri(), "md5": md5})
    return expected


def test_download_with_good_checksum(served, tmp_path):
    target = tmp_path / "data"
    raw = load_dataset("cifar10", str(target), cache_dir=str(tmp_path / "c"), progress=True)
    served.assert_loaded(raw)
    assert (target / "cifar-10-python.tar.gz").read_bytes() == served.path.read_bytes()
    assert [p.name for p in target.iterdir()] == ["cifar-10-python.tar.gz"]  # no temp left


def test_download_to_default_place(served, tmp_path):
    served.assert_loaded(load_dataset("cifar10", progress=False))
    assert (tmp_path / "default-data" / "cifar-10-python.tar.gz").is_file()


def test_download_with_bad_checksum(served, tmp_path, monkeypatch):
    monkeypatch.setitem(cifar.DOWNLOADS["cifar10"], "md5", "f" * 32)
    target = tmp_path / "data"
    with pytest.raises(DataError, match="expected f{32}") as excinfo:
        load_dataset("cifar10", str(target), progress=False)
    assert str(target / "cifar-10-python.tar.gz") in str(excinfo.value)
    assert list(target.iterdir()) == []  # neither the bad file nor the temp file stays


def test_failed_download_says_where_to_put_the_file(tmp_path):
    # conftest points the URL at a file that does not exist, like a server that is offline.
    with pytest.raises(DataError, match="could not download") as excinfo:
        load_dataset("cifar100", str(tmp_path / "data"), progress=False)
    message = str(excinfo.value)
    assert "\n" not in message
    assert f"put it at {tmp_path / 'data' / 'cifar-100-python.tar.gz'}" in message
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("failure", [
    urllib.error.URLError(OSError(-3, "Temporary failure in name resolution")),
    http.client.IncompleteRead(b"partial", 1000),  # the connection dropped mid-file
], ids=["offline", "cut short"])
def test_download_failures_are_one_line_data_errors(tmp_path, monkeypatch, failure):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    target = tmp_path / "data"
    with pytest.raises(DataError, match="could not download .*; download it by hand") as excinfo:
        load_dataset("cifar10", str(target), progress=False)
    assert "\n" not in str(excinfo.value)
    assert list(target.iterdir()) == []  # no temp file left


def test_download_into_a_folder_that_cannot_be_made(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the data folder should be")
    with pytest.raises(DataError, match="cannot download cifar-10-python.tar.gz into "
                                        f"{blocker / 'data'} .*writable folder") as excinfo:
        load_dataset("cifar10", str(blocker / "data"), progress=False)
    assert "\n" not in str(excinfo.value)
