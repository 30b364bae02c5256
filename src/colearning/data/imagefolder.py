"""Image files laid out as ``<split>/<class>/<image>`` in a directory or a tar archive."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from colearning.data import walk
from colearning.data.raw import RawDataset
from colearning.data.tarstream import iter_tar_files
from colearning.errors import DataError

SPLITS = ("train", "test")
LAYOUT_HINT = "expected <split>/<class>/<image> with splits train and test"
# Suffixes that mark a file as an image when telling an image folder from other data.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def read_imagefolder(source: Path, *, progress: bool = True) -> RawDataset:
    """Decode every image under ``source`` (directory, .tar, .tar.gz or .tgz) to RGB uint8.

    Inside a tarball (or directory) one leading top folder is allowed, e.g.
    ``cifar10/train/cat/0001.png``. Classes are the sorted class-folder names; images are
    ordered by (class, file name) so a directory and its tarball give identical arrays.
    In a directory, symbolic links to files and folders are followed; a broken link or a
    link loop is a DataError naming it. A single class is a DataError too.
    """
    if source.is_dir():
        files = _directory_files(source, progress=progress)
    elif source.is_file():
        files = iter_tar_files(
            source, want=lambda name: _place(name) is not None, progress=progress
        )
    elif source.exists():
        raise DataError(f"{source} is not an image folder or a .tar/.tar.gz archive (it is a "
                        "device or another special file); pass a directory or an archive")
    else:
        raise DataError(f"image folder {source} does not exist; pass an existing directory or tar")
    return _assemble(source, _decode_all(source, files))


def _place(name: str) -> tuple[str | None, str, str, str] | None:
    """(top folder, split, class, file) of an image path, or None for anything else."""
    parts = PurePosixPath(name).parts
    # Skip hidden files and folders, e.g. .DS_Store and macOS '._x.jpg' / '__MACOSX' copies.
    if any(part.startswith(walk.HIDDEN) for part in parts):
        return None
    if len(parts) == 3 and parts[0] in SPLITS:
        return (None, *parts)
    if len(parts) == 4 and parts[1] in SPLITS:
        return parts[0], parts[1], parts[2], parts[3]
    return None


def is_image_path(name: str) -> bool:
    """Whether ``name`` (a path inside a folder or archive) is an image in the layout."""
    return name.lower().endswith(IMAGE_SUFFIXES) and _place(name) is not None


def is_image_folder(folder: Path) -> bool:
    """Whether ``folder`` has train/ and test/ folders, itself or in one of its folders."""
    def has_splits(path: Path) -> bool:
        return all((path / split).is_dir() for split in SPLITS)

    try:
        return has_splits(folder) or any(
            has_splits(child) for child in folder.iterdir()
            if child.is_dir() and not child.name.startswith(walk.HIDDEN)
        )
    except OSError:
        return False


def _directory_files(root: Path, *, progress: bool) -> Iterator[tuple[str, bytes]]:
    # Links to files and folders are followed; a broken link or a loop is a DataError
    # (walk.data_files), so no image is dropped silently and no loop is walked forever.
    names = [name for name, _ in walk.data_files(root) if _place(name) is not None]
    for name in tqdm(names, desc=f"decode {root.name}", disable=not progress):
        path = root / name
        try:
            data = path.read_bytes()
        except OSError as error:
            raise DataError(f"cannot read {path} ({error.strerror or error}); make it "
                            "readable or delete it") from None
        yield name, data


def _decode(data: bytes, where: str) -> np.ndarray:
    """One image file -> uint8 [H, W, 3]."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        reason = "not a format PIL can identify"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        reason = str(error)
    raise DataError(f"{where} is not a readable image ({reason}); replace or delete it")


def _decode_all(
    source: Path, files: Iterable[tuple[str, bytes]]
) -> dict[tuple[str | None, str, str, str], np.ndarray]:
    images: dict[tuple[str | None, str, str, str], np.ndarray] = {}
    first: tuple[str, tuple[int, ...]] | None = None
    for name, data in files:
        where = f"{source}:{name}" if source.is_file() else str(source / name)
        place = _place(name)
        assert place is not None  # both readers filter on _place
        image = _decode(data, where)
        if first is None:
            first = (where, image.shape)
            if image.shape[0] != image.shape[1]:
                raise DataError(
                    f"{where} is {image.shape[1]}x{image.shape[0]}, not square; "
                    "resize the images to a square size"
                )
        elif image.shape != first[1]:
            raise DataError(
                f"{where} is {image.shape[1]}x{image.shape[0]} but {first[0]} is "
                f"{first[1][1]}x{first[1][0]}; resize all images to the same size"
            )
        images[place] = image
    return images


def _assemble(
    source: Path, images: dict[tuple[str | None, str, str, str], np.ndarray]
) -> RawDataset:
    if not images:
        raise DataError(f"no images found in {source}; {LAYOUT_HINT}")
    tops = sorted({str(top) for top, *_ in images if top is not None})
    if len(tops) > 1 or (tops and any(top is None for top, *_ in images)):
        raise DataError(
            f"{source} has images under several top folders ({', '.join(tops)}); {LAYOUT_HINT} "
            "inside at most one top folder"
        )
    class_sets = {split: sorted({c for _, s, c, _ in images if s == split}) for split in SPLITS}
    for split, names in class_sets.items():
        if not names:
            raise DataError(f"{source} has no images under {split}/; {LAYOUT_HINT}")
    if class_sets["train"] != class_sets["test"]:
        only_train = sorted(set(class_sets["train"]) - set(class_sets["test"])) or ["-"]
        only_test = sorted(set(class_sets["test"]) - set(class_sets["train"])) or ["-"]
        raise DataError(
            f"{source}: train and test have different classes (only in train: "
            f"{', '.join(only_train)}; only in test: {', '.join(only_test)}); "
            "give both splits the same class folders"
        )
    classes = class_sets["train"]
    if len(classes) < 2:
        raise DataError(
            f"{source} has a single class folder ({classes[0]}); a classifier needs at least 2 "
            "classes: add another class folder under train/ and test/"
        )
    label = {name: index for index, name in enumerate(classes)}
    arrays = {}
    for split in SPLITS:
        keys = sorted((c, f) for _, s, c, f in images if s == split)
        top = tops[0] if tops else None
        stacked = np.stack([images[(top, split, c, f)] for c, f in keys])
        arrays[split] = (
            np.ascontiguousarray(stacked.transpose(0, 3, 1, 2)),
            np.array([label[c] for c, _ in keys], dtype=np.int64),
        )
    return RawDataset(
        train_x=arrays["train"][0],
        train_y=arrays["train"][1],
        test_x=arrays["test"][0],
        test_y=arrays["test"][1],
        classes=classes,
    ).check(str(source))
