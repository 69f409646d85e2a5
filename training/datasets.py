"""Dataset readers: local files in their standard formats -> uint8 arrays.

MNIST: the original IDX files (gzip or not) or Keras' ``mnist.npz``.
CIFAR-10: the official python batches (``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``)
or an image folder with one sub-folder per class (a directory or a .zip).
Every reader fails with :class:`DatasetError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from training.architectures import CIFAR10_CLASSES, DIGITS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IDX_DTYPES = {0x08: np.uint8}
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


class DatasetError(ValueError):
    """A dataset file is missing, truncated or malformed; the message names the file."""


@dataclass
class Dataset:
    """Images as uint8 [N, H, W, C], integer labels, class names and where they came from."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    format: str
    path: str | None
    provenance: str

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise DatasetError(
                f"{self.path}: {len(self.images)} images but {len(self.labels)} labels"
            )
        if len(self.images) == 0:
            raise DatasetError(f"{self.path}: no examples found")


# --- MNIST -----------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (optionally gzip-compressed) as an array of its declared shape."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: not a readable gzip file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in IDX_DTYPES or ndim == 0:
        raise DatasetError(f"{path}: unsupported IDX type 0x{dtype_code:02x} / {ndim} dims")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path}: truncated or padded: header declares {shape} = {expected} bytes of data, "
            f"file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{directory / stem}[.gz]: file not found")


def read_mnist(path: Path) -> Dataset:
    """MNIST training split from IDX files in a directory, or a Keras ``mnist.npz``."""
    path = Path(path)
    if path.is_dir() and (path / "mnist.npz").is_file():
        path = path / "mnist.npz"
    if path.suffix == ".npz":
        images, labels = _read_npz(path)
        fmt = "npz"
    elif path.is_dir():
        images_file = _find(path, "train-images-idx3-ubyte")
        labels_file = _find(path, "train-labels-idx1-ubyte")
        images, labels = read_idx(images_file), read_idx(labels_file)
        if images.ndim != 3 or labels.ndim != 1:
            raise DatasetError(f"{images_file}: expected [N,28,28] images and [N] labels")
        fmt = "idx"
    else:
        raise DatasetError(f"{path}: not found (expected a directory of IDX files or mnist.npz)")
    if labels.max(initial=0) > 9:
        raise DatasetError(f"{path}: labels outside 0-9")
    return Dataset(
        "mnist",
        images[..., None],
        labels.astype(np.int64),
        DIGITS,
        fmt,
        str(path),
        "MNIST training split (LeCun, Cortes, Burges)",
    )


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with np.load(path) as data:
            missing = {"x_train", "y_train"} - set(data.files)
            if missing:
                raise DatasetError(
                    f"{path}: missing array(s) {sorted(missing)} "
                    f"(a Keras mnist.npz has x_train, y_train)"
                )
            return data["x_train"], data["y_train"]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a readable .npz file ({exc})") from exc


# --- CIFAR-10 --------------------------------------------------------------------------------


def _unpickle(blob: bytes, where: str) -> dict:
    try:
        batch = pickle.loads(blob, encoding="bytes")
    except Exception as exc:  # pickle raises many types on corrupt input
        raise DatasetError(f"{where}: not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{where}: not a CIFAR-10 python batch (no data/labels)")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{where}: data has shape {data.shape}, expected [N, 3072]")
    return batch


def _cifar_from_batches(blobs: dict[str, bytes], where: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in CIFAR_BATCHES:
        if name not in blobs:
            raise DatasetError(f"{where}/{name}: file not found")
        batch = _unpickle(blobs[name], f"{where}/{name}")
        images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], np.int64))
    return np.concatenate(images).transpose(0, 2, 3, 1), np.concatenate(labels)


def _read_cifar_tar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with tarfile.open(path) as tar:
            blobs = {}
            for member in tar.getmembers():
                name = Path(member.name).name
                member_file = tar.extractfile(member) if member.isfile() else None
                if member_file is not None and name in CIFAR_BATCHES:
                    blobs[name] = member_file.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable tar archive ({exc})") from exc
    return _cifar_from_batches(blobs, str(path))


def _decode(blob: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(blob)) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{where}: not a decodable image ({exc})") from exc


def _class_order(names: set[str]) -> list[str]:
    """CIFAR-10's own order when the folders are its classes, else alphabetical."""
    return list(CIFAR10_CLASSES) if names == set(CIFAR10_CLASSES) else sorted(names)


def _images_from_folder(
    entries: dict[str, bytes], where: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    by_class: dict[str, list[str]] = {}
    for rel in sorted(entries):
        parts = Path(rel).parts
        if len(parts) >= 2 and Path(rel).suffix.lower() in IMAGE_SUFFIXES:
            by_class.setdefault(parts[-2], []).append(rel)
    if not by_class:
        raise DatasetError(f"{where}: no images in class sub-folders")
    classes = _class_order(set(by_class))
    images, labels = [], []
    for index, cls in enumerate(classes):
        for rel in by_class[cls]:
            images.append(_decode(entries[rel], f"{where}/{rel}"))
            labels.append(index)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DatasetError(f"{where}: images have different sizes {sorted(shapes)[:3]}")
    return np.stack(images), np.asarray(labels, np.int64), classes


def read_image_folder(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An image folder (one sub-folder per class), as a directory or a .zip."""
    path = Path(path)
    if path.is_dir():
        entries = {
            str(p.relative_to(path)): p.read_bytes()
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        }
        return _images_from_folder(entries, str(path))
    try:
        with zipfile.ZipFile(path) as archive:
            entries = {
                n: archive.read(n)
                for n in archive.namelist()
                if Path(n).suffix.lower() in IMAGE_SUFFIXES
            }
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable zip archive ({exc})") from exc
    return _images_from_folder(entries, str(path))


def read_cifar10(path: Path) -> Dataset:
    """CIFAR-10 training split from python batches (dir or tar.gz) or an image folder/zip."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: not found")
    classes = list(CIFAR10_CLASSES)
    if path.is_dir() and (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    if path.is_dir() and any((path / b).exists() for b in CIFAR_BATCHES):
        blobs = {b: (path / b).read_bytes() for b in CIFAR_BATCHES if (path / b).is_file()}
        images, labels = _cifar_from_batches(blobs, str(path))
        fmt = "cifar-python-batches"
    elif path.is_file() and tarfile.is_tarfile(path):
        images, labels = _read_cifar_tar(path)
        fmt = "cifar-python-tar"
    else:
        images, labels, classes = read_image_folder(path)
        fmt = "image-folder-zip" if path.is_file() else "image-folder"
    return Dataset(
        "cifar10",
        images,
        labels,
        classes,
        fmt,
        str(path),
        "CIFAR-10 training split (Krizhevsky, 2009)",
    )


READERS = {"mnist": read_mnist, "cifar10": read_cifar10}


def load(dataset: str, path: Path | None) -> Dataset:
    """Read ``dataset`` from ``path``; with no path, fall back to ``keras.datasets``."""
    if path is not None:
        return READERS[dataset](Path(path))
    import keras  # imported late: the readers above do not need TensorFlow

    (x, y), _ = getattr(keras.datasets, dataset).load_data()
    x = x[..., None] if x.ndim == 3 else x
    names = DIGITS if dataset == "mnist" else list(CIFAR10_CLASSES)
    return Dataset(
        dataset,
        x,
        y.reshape(-1).astype(np.int64),
        names,
        "keras.datasets",
        None,
        f"keras.datasets.{dataset} (downloaded)",
    )


def split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/validation indices, reproducible from ``seed``."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("validation split must be between 0 and 1")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction))
    return order[n_val:], order[:n_val]
