"""The user's own data as a RawDataset: arrays (numpy or torch), torch Datasets, .npz files.

    raw = as_raw((x_train, y_train, x_test, y_test))          # or + (x_val, y_val)
    raw = as_raw({"x_train": ..., "y_train": ..., "x_test": ..., "y_test": ...,
                  "classes": ["cat", "dog"]})                    # x_val, y_val, classes optional
    raw = as_raw({"train": train_set, "test": test_set})       # Datasets of (image, label)
    raw = read_npz("data.npz")                                 # the same keys, in a file

Images: [N, H, W, C], [N, C, H, W] (C from 1 to 4) or [N, H, W] (grayscale), square. The
channel axis is the one of axes 1 and 3 whose size is at most 4 and whose other two axes
are equal; when both qualify ([N, 3, 3, 3]) it is axis 1, PyTorch's order. uint8 is kept as
it is; other integers must lie in [0, 255]; floats must lie in [0, 1] and are quantized to
8 bits (round(x * 255)), like every built-in dataset: the training pool is uint8 on the
device (a quarter of float32), so finer float levels are not kept. Labels: integers in
[0, C); the classes are ``classes`` when given, else "0" .. str(max label). Each problem
is a one-line DataError that names the array and the fix.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearning.data.raw import RawDataset
from colearning.errors import DataError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_val", "y_val", "classes")
KEYS = REQUIRED + OPTIONAL
MAX_CHANNELS = 4  # gray, gray + alpha, RGB, RGBA


def as_raw(data: Any, source: str = "data") -> RawDataset:
    """``data`` as a checked RawDataset: a RawDataset, a tuple/list (x_train, y_train,
    x_test, y_test[, x_val, y_val]), a dict of those keys (and ``classes``), or torch
    Datasets of (image, label): a tuple (train, test[, val]) or a dict with keys train,
    test[, val]. ``source`` starts every error message."""
    if isinstance(data, RawDataset):
        return data.check(source)
    if isinstance(data, dict):
        if "train" in data or "test" in data:
            _known(data, ("train", "test", "val"), source)
            return _from_datasets([data.get(k) for k in ("train", "test", "val")], source)
        _known(data, KEYS, source)
        return from_arrays(**{k: data.get(k) for k in KEYS}, source=source)
    if isinstance(data, tuple | list):
        if data and isinstance(data[0], torch.utils.data.Dataset):
            if len(data) not in (2, 3):
                raise DataError(f"{source}: give Datasets as (train, test) or (train, test, "
                                f"val), got {len(data)} of them")
            return _from_datasets([*data, None][:3], source)
        if len(data) not in (4, 6):
            raise DataError(f"{source}: give arrays as (x_train, y_train, x_test, y_test) or "
                            f"with x_val, y_val after them, got {len(data)} items")
        return from_arrays(*data, source=source)
    if isinstance(data, torch.utils.data.Dataset):
        raise DataError(f"{source}: one Dataset has no test side; pass (train, test) or "
                        "{'train': ..., 'test': ...}")
    raise DataError(f"{source}: got {type(data).__name__}; pass arrays (x_train, y_train, "
                    "x_test, y_test), a dict of them, or (train, test) torch Datasets")


def from_arrays(x_train: Any, y_train: Any, x_test: Any, y_test: Any, x_val: Any = None,
                y_val: Any = None, classes: Any = None, *, source: str = "data") -> RawDataset:
    """The RawDataset of the given images and labels (see the module's rules)."""
    given = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
             "x_val": x_val, "y_val": y_val}
    for key in REQUIRED:
        if given[key] is None:
            raise DataError(f"{source}: {key} is missing; give {', '.join(REQUIRED)} "
                            "(x_val, y_val optional)")
    if (x_val is None) != (y_val is None):
        key = "y_val" if y_val is None else "x_val"
        raise DataError(f"{source}: {key} is missing; give x_val and y_val together, or "
                        "neither")
    sides = [s for s in ("train", "test", "val") if given[f"x_{s}"] is not None]
    xs = {s: images(given[f"x_{s}"], f"{source}: x_{s}") for s in sides}
    ys = {s: labels(given[f"y_{s}"], f"{source}: y_{s}") for s in sides}
    for side in sides:
        if len(xs[side]) != len(ys[side]):
            raise DataError(f"{source}: x_{side} has {len(xs[side])} images but y_{side} has "
                            f"{len(ys[side])} labels; give one label per image")
    names = _classes(classes, ys, source)
    return RawDataset(xs["train"], ys["train"], xs["test"], ys["test"], names,
                      xs.get("val"), ys.get("val")).check(source)


def images(x: Any, name: str) -> np.ndarray:
    """Images ``x`` ([N, H, W, C], [N, C, H, W] or [N, H, W]) as uint8 [N, C, H, W]."""
    x = _numpy(x, name)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim != 4:
        raise DataError(f"{name} has shape {list(x.shape)}; images must be [N, H, W, C], "
                        "[N, C, H, W] or [N, H, W] (grayscale)")
    elif not _channels_first(x.shape, name):
        x = x.transpose(0, 3, 1, 2)
    if x.shape[2] != x.shape[3]:
        raise DataError(f"{name}: images are {x.shape[2]}x{x.shape[3]}, not square; crop or "
                        "resize them to a square size")
    return np.ascontiguousarray(_to_uint8(x, name))


def labels(y: Any, name: str) -> np.ndarray:
    """Class indices ``y`` [N] (any integer dtype) as int64; one line when not that."""
    y = _numpy(y, name)
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name} has dtype {y.dtype}; labels must be integer class indices "
                        "(convert with y.astype(np.int64))")
    if y.ndim != 1:
        raise DataError(f"{name} has shape {list(y.shape)}; labels must be 1-D [N] class "
                        "indices (one-hot labels: y.argmax(1))")
    if len(y) and y.min() < 0:
        raise DataError(f"{name} holds label {y.min()}; labels are class indices 0, 1, ...")
    return y.astype(np.int64)


def read_npz(path: str | Path) -> RawDataset:
    """The arrays of an .npz file (keys x_train, y_train, x_test, y_test; optional x_val,
    y_val, classes; any other key is refused), read without unpickling anything."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file; pass an .npz file "
                        "(np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...))")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not an .npz file (a zip of arrays); save it with "
                        "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    try:
        with np.load(path, allow_pickle=False) as file:
            _known(dict.fromkeys(file.files), KEYS, str(path))
            missing = [key for key in REQUIRED if key not in file.files]
            if missing:
                raise DataError(f"{path} has no {missing[0]}; save x_train, y_train, x_test, "
                                "y_test (and optionally x_val, y_val, classes)")
            arrays = {key: file[key] for key in file.files}
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - a damaged file raises many kinds: one line
        if "allow_pickle" in str(error):  # object arrays need pickle, which is never loaded
            raise DataError(f"{path} holds Python objects, which are never unpickled; save "
                            "numeric arrays (and classes as a string array)") from None
        raise DataError(f"{path} is not a readable .npz file ({type(error).__name__}); save "
                        "it again with np.savez") from None
    return from_arrays(**arrays, source=str(path))


def fingerprint(raw: RawDataset) -> str:
    """sha256 of a RawDataset's arrays (dtype, shape, bytes) and class names: the same
    images, labels and classes give the same digest."""
    digest = hashlib.sha256(repr(list(raw.classes)).encode())
    for side, x, y in raw.sides():
        for array in (x, y):
            array = np.ascontiguousarray(array)
            digest.update(f"{side}{array.dtype.str}{list(array.shape)}".encode())
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _known(data: dict, valid: tuple[str, ...], source: str) -> None:
    unknown = [str(key) for key in data if key not in valid]
    if unknown:
        raise DataError(f"{source}: unknown key {unknown[0]!r}; valid: {', '.join(valid)}")


def _numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    if not isinstance(x, np.ndarray):
        raise DataError(f"{name} is a {type(x).__name__}; pass a numpy array or a torch "
                        "tensor")
    return x


def _channels_first(shape: tuple[int, ...], name: str) -> bool:
    """Whether a 4-D image array is [N, C, H, W] (else [N, H, W, C])."""
    first = shape[1] <= MAX_CHANNELS and shape[2] == shape[3]
    last = shape[3] <= MAX_CHANNELS and shape[1] == shape[2]
    if first or last:
        return first
    if shape[1] <= MAX_CHANNELS or shape[3] <= MAX_CHANNELS:
        height, width = shape[2:] if shape[1] <= MAX_CHANNELS else shape[1:3]
        raise DataError(f"{name}: images are {height}x{width}, not square; crop or resize "
                        "them to a square size")
    raise DataError(f"{name} has shape {list(shape)}; images must be [N, H, W, C] or "
                    f"[N, C, H, W] with C from 1 to {MAX_CHANNELS} channels")


def _to_uint8(x: np.ndarray, name: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not np.isfinite(x).all():
            raise DataError(f"{name} holds NaN or infinite values; images must be finite")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise DataError(f"{name} spans [{x.min():g}, {x.max():g}]; float images must lie "
                            "in [0, 1]: scale them (e.g. x / 255) or pass uint8 (standardize "
                            "with data.normalize=true, not in the arrays)")
        # The pool is uint8, as for every built-in dataset: 256 levels per pixel.
        return np.round(x.astype(np.float64 if x.dtype == np.float64 else np.float32) * 255
                        ).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer) and x.dtype != np.bool_:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{name} spans [{x.min()}, {x.max()}]; integer images must lie "
                            "in [0, 255] (or pass floats in [0, 1])")
        return x.astype(np.uint8)
    raise DataError(f"{name} has dtype {x.dtype}; images must be uint8 (0-255) or float in "
                    "[0, 1]")


def _classes(classes: Any, ys: dict[str, np.ndarray], source: str) -> list[str]:
    """The class names: ``classes`` (checked against the labels), else "0" .. max label."""
    top = max((int(y.max()) for y in ys.values() if len(y)), default=-1)
    if classes is None:
        return [str(k) for k in range(top + 1)]
    names = [str(name) for name in np.asarray(classes).reshape(-1).tolist()]
    if top >= len(names):
        side = next(s for s, y in ys.items() if len(y) and y.max() == top)
        raise DataError(f"{source}: y_{side} holds label {top} but there are {len(names)} "
                        f"classes; labels must be in [0, {len(names)}) or name more classes")
    return names


def _from_datasets(datasets: list[Any], source: str) -> RawDataset:
    """(train, test, val or None) torch Datasets of (image, label) as a RawDataset."""
    arrays: dict[str, Any] = {}
    for side, dataset in zip(("train", "test", "val"), datasets, strict=True):
        if dataset is None:
            if side != "val":
                raise DataError(f"{source}: the {side} Dataset is missing; give train and "
                                "test (val optional)")
            continue
        if not isinstance(dataset, torch.utils.data.Dataset):
            raise DataError(f"{source}: the {side} side is a {type(dataset).__name__}, not a "
                            "torch.utils.data.Dataset")
        arrays[f"x_{side}"], arrays[f"y_{side}"] = _stack(dataset, f"{source}: {side} Dataset")
    return from_arrays(**arrays, source=source)


def _stack(dataset: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Every (image, label) item of ``dataset`` stacked: images [N, ...], labels [N]."""
    xs, ys = [], []
    for index in range(len(dataset)):
        item = dataset[index]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise DataError(f"{name}: item {index} is not an (image, label) pair")
        image, label = item
        xs.append(image.detach().cpu().numpy() if isinstance(image, torch.Tensor)
                  else np.asarray(image))  # PIL images too
        ys.append(int(label) if isinstance(label, torch.Tensor) and label.numel() == 1
                  else label)
    if not xs:
        raise DataError(f"{name} is empty; give it images")
    if len({x.shape for x in xs}) > 1:
        raise DataError(f"{name}: images have different shapes ({xs[0].shape} and others); "
                        "resize them to one size")
    return np.stack(xs), np.asarray(ys)
