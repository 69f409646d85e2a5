"""Image files named on a command line: files, folders (recursively) and ``.zip`` files,
and labelled sets (a folder of one subfolder per label, Keras' ``image_dataset_from_directory``
layout, or a CSV of ``path,label``) - for ``cnn-serve predict`` and ``cnn-serve evaluate``.

Files are read when their batch is sent, not all at once (10,000 photos would not fit); a zip
member larger than ``MAX_FILE_BYTES`` is a row with an error, never read; a zip of more than
``MAX_ZIP_MEMBERS`` files is refused.
"""

from __future__ import annotations

import csv
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_BYTES = 64 * 2**20  # one image; more is an error row
MAX_ZIP_MEMBERS = 1_000_000
MAX_CSV_BYTES = 256 * 2**20
READ_BYTES = 64 * 2**10


@dataclass(frozen=True)
class ImageFile:
    """One image to send: where it is (``archive.zip/inner/path`` for a zip member), how to
    read it, and its label when the set is labelled."""

    path: str
    read: Callable[[], bytes]
    label: str | None = None
    size: int = 0  # bytes, as the folder or zip lists it (for cutting requests by size)


class BadInput(ValueError):
    """A path or set that cannot be read at all (one line for the user)."""


def _reader(path: Path, size: int) -> Callable[[], bytes]:
    name = str(path)  # os.open takes a str faster than a Path

    def read() -> bytes:
        """The file in one read of its listed size and a byte more (a file that grew since:
        more reads of 64 KB); asking for the whole bound at once allocates it (17 us a file
        instead of 4)."""
        if size > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES:,} bytes")
        fd = os.open(name, os.O_RDONLY)
        try:
            parts = [os.read(fd, size + 1)]
            total = len(parts[0])
            while total > size and (part := os.read(fd, READ_BYTES)):
                parts.append(part)
                total += len(part)
                if total > MAX_FILE_BYTES:
                    break
        finally:
            os.close(fd)
        if total > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES:,} bytes")
        return parts[0] if len(parts) == 1 else b"".join(parts)

    return read


def _zip_reader(archive: Path, member: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        if member.file_size > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES:,} bytes")
        with zipfile.ZipFile(archive) as z, z.open(member) as f:
            return f.read()  # its declared size is within the bound; zipfile checks it

    return read


def _zip(archive: Path) -> Iterator[ImageFile]:
    try:
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadInput(f"{archive}: not a readable zip ({type(exc).__name__})") from None
    if len(members) > MAX_ZIP_MEMBERS:
        raise BadInput(f"{archive}: more than {MAX_ZIP_MEMBERS:,} files")
    for member in sorted(members, key=lambda m: m.filename):
        yield ImageFile(
            f"{archive}/{member.filename}", _zip_reader(archive, member), size=member.file_size
        )


def gather(paths: list[Path]) -> Iterator[ImageFile]:
    """Every file under ``paths``, in the order given, folders and zips in name order;
    hidden files (``.DS_Store``) are left out."""
    for path in paths:
        if not path.exists():
            raise BadInput(f"{path}: no such file or folder")
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                if not any(part.startswith(".") for part in found.relative_to(path).parts):
                    yield from _one(found)
        else:
            yield from _one(path)


def _one(path: Path) -> Iterator[ImageFile]:
    if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
        yield from _zip(path)
    else:
        size = path.stat().st_size
        yield ImageFile(str(path), _reader(path, size), size=size)


def labelled(data: Path) -> list[ImageFile]:
    """A labelled set: a folder of one subfolder per label, or a CSV of ``path,label``
    (paths relative to the CSV; a header row ``path,label`` is skipped)."""
    if data.is_dir():
        folders = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise BadInput(
                f"{data}: no subfolders; put each label's images in a folder named by it"
            )
        return [
            ImageFile(f.path, f.read, folder.name, f.size)
            for folder in folders
            for f in gather([folder])
        ]
    if data.suffix.lower() == ".csv" and data.is_file():
        return _from_csv(data)
    raise BadInput(f"{data}: give a folder of label folders, or a CSV of path,label")


def _from_csv(data: Path) -> list[ImageFile]:
    if data.stat().st_size > MAX_CSV_BYTES:
        raise BadInput(f"{data}: larger than {MAX_CSV_BYTES:,} bytes")
    rows = list(csv.reader(data.read_text(encoding="utf-8-sig").splitlines()))
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    files = []
    for number, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[0].strip():
            raise BadInput(f"{data}: row {number} is not path,label")
        path = (data.parent / row[0].strip()).resolve()
        size = path.stat().st_size if path.is_file() else 0  # a missing one: its row says so
        files.append(ImageFile(str(path), _reader(path, size), row[1].strip(), size))
    return files
