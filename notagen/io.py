"""Small file helpers shared by every component: atomic writes (files and folders) and content hashes.

Every file the package writes goes through `atomic_path` (or the `atomic_write_*` helpers built on it): the data is
written to a temporary file beside the target, flushed to disk, given the mode `open()` would have given it, and
renamed over the target, so readers see either the old file or the whole new one, never a part. Folders that must
appear complete (a generated piece, a checkpoint directory) are built beside the target by `atomic_directory`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from notagen.errors import InputError

TMP_SUFFIX = ".tmp"
"""Temporary files end in this (unless a writer needs the target's extension), so a cleaner can find the ones a
kill left behind (`.NAME.*.tmp`)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide shipped files from other users


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = TMP_SUFFIX) -> Iterator[Path]:
    """A temporary path beside `path` to write to (by any means: a library, a subprocess); on a normal exit it is
    synced, given a normal file mode and renamed to `path`; on an exception it is removed and `path` is untouched.

    `suffix` ends the temporary name (a tool that picks its output type by extension wants `.tmp.wav`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` so that readers see either the old file or the whole new one, never a part."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    """Atomically write an object as JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A hidden folder beside `path` to fill; on a normal exit it replaces `path` (an older folder of that name is
    removed), so the folder exists complete or not at all. On an exception the partial folder is removed."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)  # a rename cannot replace a non-empty folder: move the old one aside first
    os.replace(partial, path)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove what writes cut short by a kill left in `folder` and below: `atomic_path` temporaries (`.NAME.*.tmp`,
    `.NAME.*.tmp.EXT`) and `atomic_directory` partial folders (`.NAME.partial`; `.NAME.old` too, unless `NAME` is
    missing: a kill between the two renames left the old folder as the only copy, so it is put back). Only for a
    folder one process writes (a resumed build or run, before it starts writing). Returns what was removed."""
    removed = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in filenames:
            if name.startswith(".") and (name.endswith(TMP_SUFFIX) or f"{TMP_SUFFIX}." in name):
                (here / name).unlink(missing_ok=True)
                removed.append(here / name)
        for name in list(dirnames):
            if name.startswith(".") and name.endswith((".partial", ".old")):
                dirnames.remove(name)
                original = here / name[1:].rsplit(".", 1)[0]
                if name.endswith(".old") and not original.exists():
                    os.replace(here / name, original)
                    continue
                shutil.rmtree(here / name, ignore_errors=True)
                removed.append(here / name)
    return removed


def read_jsonl(path: str | os.PathLike[str], strict: bool = False) -> list[Any]:
    """The records of a JSON-lines file, in order; blank lines are skipped. A line that is not JSON (one cut short
    by a kill) is skipped, or with `strict` an InputError naming the file and line."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                if strict:
                    raise InputError(f"{path}:{number}: not a JSON line ({error.msg})") from None
    return records


def append_jsonl(path: str | os.PathLike[str], record: Any) -> None:
    """Append one record as a JSON line (a log: a kill may cut the last line short; `read_jsonl` skips it)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def content_hash(data: bytes | str) -> str:
    """A short, stable hash of some content (hex SHA-256, 16 characters)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:16]


def file_hash(path: str | os.PathLike[str]) -> str:
    """`content_hash` of a file's bytes."""
    return content_hash(Path(path).read_bytes())
