"""CIFAR-10/100 in the official python-pickle releases: find or download them, then decode."""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from colearning.data import imagefolder
from colearning.data.download import default_data_dir, fetch
from colearning.data.raw import RawDataset
from colearning.data.tarstream import iter_tar_files
from colearning.errors import DataError

# Official addresses and checksums; a module-level dict so tests can point them elsewhere.
DOWNLOADS: dict[str, dict[str, str]] = {
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
    },
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106ba0a1b4a8d1b7",
    },
}


@dataclass(frozen=True)
class Layout:
    """File names and pickle keys of one release."""

    title: str
    archive: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int


LAYOUTS = {
    "cifar10": Layout(
        title="CIFAR-10",
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
    ),
    "cifar100": Layout(
        title="CIFAR-100",
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
    ),
}

_IMAGE_BYTES = 3 * 32 * 32


def locate(name: str, path: str | Path | None, *, download: bool, progress: bool) -> Path:
    """The extracted folder or .tar.gz for ``name`` under ``path``, downloading it if allowed.

    ``path`` may be the archive, the extracted folder, or a directory holding either;
    None means :func:`default_data_dir`.
    """
    layout = LAYOUTS[name]
    target = Path(path).expanduser() if path is not None else default_data_dir()
    if target.is_file():
        return target
    if target.is_dir():
        if target.name == layout.folder or (target / layout.meta_file).is_file():
            return target
        if (target / layout.folder).is_dir():
            return target / layout.folder
        if (target / layout.archive).is_file():
            return target / layout.archive
        if path is not None and imagefolder.is_image_folder(target):
            raise DataError(
                f"{target} holds train/ and test/ folders, an image folder, not "
                f"{layout.title}'s {layout.archive} or {layout.folder}; to train on it, "
                "set data.name=imagefolder"
            )
        dest = target / layout.archive
    elif target.name.endswith((".tar.gz", ".tgz", ".tar")):
        dest = target
    else:
        dest = target / layout.archive
    dest = dest.absolute()
    if not download:
        raise DataError(
            f"{layout.title} not found at {target}; put {layout.archive} (or its extracted "
            f"{layout.folder} folder) at {dest}, or allow downloading"
        )
    return fetch(DOWNLOADS[name]["url"], dest, DOWNLOADS[name]["md5"], progress=progress)


def read(name: str, source: Path, *, progress: bool = True) -> RawDataset:
    """Decode the release at ``source`` (extracted folder or tarball) into a RawDataset."""
    layout = LAYOUTS[name]
    wanted = (*layout.train_files, *layout.test_files, layout.meta_file)
    if source.is_dir():
        blobs = {}
        for file_name in wanted:
            file_path = source / file_name
            if not file_path.is_file():
                raise DataError(
                    f"{file_path} is missing; re-extract {layout.archive} into {source.parent}"
                )
            blobs[file_name] = (str(file_path), file_path.read_bytes())
    else:
        blobs = _read_tar_members(source, layout, wanted, progress=progress)
    names = _class_names(*blobs[layout.meta_file], layout)
    train = [_batch(*blobs[f], layout) for f in layout.train_files]
    test = [_batch(*blobs[f], layout) for f in layout.test_files]
    return RawDataset(
        train_x=np.concatenate([x for x, _ in train]),
        train_y=np.concatenate([y for _, y in train]),
        test_x=np.concatenate([x for x, _ in test]),
        test_y=np.concatenate([y for _, y in test]),
        classes=names,
    ).check(str(source))


def _read_tar_members(
    archive: Path, layout: Layout, wanted: tuple[str, ...], *, progress: bool
) -> dict[str, tuple[str, bytes]]:
    """{file name: (where, bytes)} of the wanted members, read in one streaming pass."""

    images: list[str] = []  # an image in class folders, if any: a sign of an image folder

    def in_folder(member: str) -> bool:
        if not images and imagefolder.is_image_path(member):
            images.append(member)
        parts = PurePosixPath(member).parts
        # The official archive nests everything in one folder; accept a flat one too.
        return parts[-1] in wanted and (len(parts) == 1 or parts[:-1] == (layout.folder,))

    blobs = {
        PurePosixPath(member).name: (f"{archive}:{member}", data)
        for member, data in iter_tar_files(archive, want=in_folder, progress=progress)
    }
    missing = [name for name in wanted if name not in blobs]
    if missing and images:
        raise DataError(
            f"{archive} holds class folders of images (e.g. {images[0]}), not the official "
            f"{layout.archive}; to train on it, set data.name=imagefolder"
        )
    if missing:
        raise DataError(
            f"{archive} lacks {', '.join(f'{layout.folder}/{m}' for m in missing)}; "
            f"it is not the official {layout.archive}, replace it"
        )
    return blobs


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, so a crafted file cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        return super().find_class(module, name)


def _unpickle(where: str, data: bytes, layout: Layout) -> dict:
    try:
        content = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # whatever fails, the file is corrupt
        raise DataError(
            f"{where} is not a valid {layout.title} pickle ({type(error).__name__}: {error}); "
            f"replace it with the official {layout.archive}"
        ) from None
    if not isinstance(content, dict):
        raise DataError(
            f"{where} holds a {type(content).__name__}, not a dict; "
            f"replace it with the official {layout.archive}"
        )
    return content


def _require(content: dict, key: bytes, where: str, layout: Layout) -> object:
    if key not in content:
        raise DataError(
            f"{where} has no {key!r} entry; replace it with the official {layout.archive}"
        )
    return content[key]


def _class_names(where: str, data: bytes, layout: Layout) -> list[str]:
    names = _require(_unpickle(where, data, layout), layout.names_key, where, layout)
    if not isinstance(names, list | tuple) or len(names) != layout.num_classes:
        raise DataError(
            f"{where}: {layout.names_key!r} should list {layout.num_classes} class names; "
            f"replace it with the official {layout.archive}"
        )
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _batch(where: str, data: bytes, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [n, 3, 32, 32] and labels int64 [n] of one pickled batch."""
    content = _unpickle(where, data, layout)
    images = np.asarray(_require(content, b"data", where, layout))
    labels = np.asarray(_require(content, layout.label_key, where, layout))
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != _IMAGE_BYTES:
        raise DataError(
            f"{where}: b'data' is {images.dtype} {list(images.shape)}, expected uint8 "
            f"[n, {_IMAGE_BYTES}]; replace it with the official {layout.archive}"
        )
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: {layout.label_key!r} is {labels.dtype} {list(labels.shape)}, expected "
            f"{len(images)} integers; replace it with the official {layout.archive}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise DataError(
            f"{where}: labels span [{labels.min()}, {labels.max()}], outside "
            f"[0, {layout.num_classes}); replace it with the official {layout.archive}"
        )
    # Rows are channel-major (1024 red, then green, then blue), each channel row-major.
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)
