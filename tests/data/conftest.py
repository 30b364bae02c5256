"""Tiny datasets written in the real on-disk formats (CIFAR pickles, image folders, tarballs)."""

from __future__ import annotations

import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colearning.data import cifar


@dataclass
class Expected:
    """What a loader should return for the generated files."""

    path: Path
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]

    def assert_loaded(self, raw: object) -> None:
        """The loaded RawDataset equals the generated arrays exactly."""
        np.testing.assert_array_equal(raw.train_x, self.train_x)
        np.testing.assert_array_equal(raw.train_y, self.train_y)
        np.testing.assert_array_equal(raw.test_x, self.test_x)
        np.testing.assert_array_equal(raw.test_y, self.test_y)
        assert raw.classes == self.classes
        assert raw.train_x.dtype == np.uint8 and raw.train_y.dtype == np.int64


def write_pickle(path: Path, content: object) -> None:
    # Protocol 2 is what the official (Python 2) release uses; bytes then go via _codecs.
    path.write_bytes(pickle.dumps(content, protocol=2))


def make_tar(source: Path, archive: Path, arcname: str) -> Path:
    """Pack folder ``source`` as ``arcname`` into ``archive`` (gzip when it ends in gz)."""
    mode = "w:gz" if archive.name.endswith(("gz", "tgz")) else "w"
    with tarfile.open(archive, mode) as tar:
        tar.add(source, arcname=arcname)
    return archive


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real ~/.cache and the network."""
    monkeypatch.setenv("COLEARNING_DATA", str(tmp_path / "default-data"))
    monkeypatch.setenv("COLEARNING_CACHE", str(tmp_path / "default-cache"))
    for name in cifar.DOWNLOADS:
        missing = (tmp_path / "no-server" / f"{name}.tar.gz").as_uri()
        monkeypatch.setitem(cifar.DOWNLOADS, name, {"url": missing, "md5": "0" * 32})


@pytest.fixture
def make_cifar(tmp_path: Path) -> Callable[..., Expected]:
    """make(name, archive=False) -> Expected; writes the official folder (or tar.gz) layout.

    CIFAR-10 gets all five data batches (4 images each) and a test batch of 6;
    CIFAR-100 a train file of 12 and a test file of 6. ``path`` is the folder or archive.
    """

    def make(name: str = "cifar10", *, archive: bool = False) -> Expected:
        layout = cifar.LAYOUTS[name]
        root = tmp_path / f"{name}-files"
        folder = root / layout.folder
        folder.mkdir(parents=True)
        rng = np.random.default_rng(len(name))
        sizes = [4] * len(layout.train_files) if name == "cifar10" else [12]
        xs, ys = {}, {}
        for file_name, size in zip(
            (*layout.train_files, *layout.test_files), (*sizes, 6), strict=True
        ):
            xs[file_name] = rng.integers(0, 256, (size, 3072), dtype=np.uint8)
            ys[file_name] = [int(v) for v in rng.integers(0, layout.num_classes, size)]
            content = {
                b"batch_label": file_name.encode(),
                b"data": xs[file_name],
                layout.label_key: ys[file_name],
                b"filenames": [f"{i}.png".encode() for i in range(size)],
            }
            if name == "cifar100":
                content[b"coarse_labels"] = [v // 5 for v in ys[file_name]]
            write_pickle(folder / file_name, content)
        classes = [f"class_{i}" for i in range(layout.num_classes)]
        write_pickle(folder / layout.meta_file, {layout.names_key: [c.encode() for c in classes]})
        (folder / "readme.html").write_text("<html></html>")
        path = make_tar(folder, root / layout.archive, layout.folder) if archive else folder

        def side(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
            x = np.concatenate([xs[f] for f in files]).reshape(-1, 3, 32, 32)
            return x, np.array(sum((ys[f] for f in files), []), dtype=np.int64)

        (train_x, train_y), (test_x, test_y) = side(layout.train_files), side(layout.test_files)
        return Expected(path, train_x, train_y, test_x, test_y, classes)

    return make


@pytest.fixture
def make_imagefolder(tmp_path: Path) -> Callable[..., Expected]:
    """make(kind="dir"|"tar"|"tgz", top=None) -> Expected for 6x6 PNGs of classes cat, dog.

    Train has 3 images per class, test 2; one train image is grayscale (becomes RGB).
    ``top`` puts everything under one leading folder inside the tarball.
    """

    def make(kind: str = "dir", *, top: str | None = None) -> Expected:
        root = tmp_path / "imagefolder"
        rng = np.random.default_rng(7)
        classes = ["cat", "dog"]
        arrays: dict[str, tuple[list[np.ndarray], list[int]]] = {}
        for split, per_class in (("train", 3), ("test", 2)):
            images, labels = [], []
            for label, name in enumerate(classes):
                (root / split / name).mkdir(parents=True)
                for index in range(per_class):
                    pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
                    if split == "train" and name == "dog" and index == 0:
                        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
                        Image.fromarray(pixels[:, :, 0], "L").save(root / split / name / "0.png")
                    else:
                        Image.fromarray(pixels).save(root / split / name / f"{index}.png")
                    images.append(pixels.transpose(2, 0, 1))
                    labels.append(label)
            arrays[split] = (images, labels)
        (root / "README.txt").write_text("not an image")
        if kind == "dir":
            path = root
        else:
            suffix = "tar" if kind == "tar" else "tgz"
            path = tmp_path / f"images.{suffix}"
            with tarfile.open(path, "w:gz" if kind == "tgz" else "w") as tar:
                for child in sorted(root.iterdir()):
                    tar.add(child, arcname=f"{top}/{child.name}" if top else child.name)
        return Expected(
            path,
            np.stack(arrays["train"][0]),
            np.array(arrays["train"][1], dtype=np.int64),
            np.stack(arrays["test"][0]),
            np.array(arrays["test"][1], dtype=np.int64),
            classes,
        )

    return make
