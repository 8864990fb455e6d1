"""Atomic writes: write to a temporary name in the same folder, then rename.

A reader (or a resumed job) therefore sees either the old file (or folder) or the complete new
one, never a partial write, even after Ctrl-C or a kill. `atomic_open` writes one file,
`atomic_folder` a whole folder (a BM25 index, an exported model, a converted checkpoint).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from .errors import T1Error, disk_error, is_disk_error


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name beside `path` for a writer that takes a name (faiss, gguf, llama.cpp's
    quantiser); once the block ends without an error the file becomes `path`, on any error it is
    removed, leaving what was there untouched. A full disk is one line naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise disk_error(e, path) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_disk_error(e):  # a full disk, an immutable file: the old file is intact
            raise disk_error(e, path) from None
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """`open(path, mode)` that replaces `path` only once the block ends without an error, synced."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary folder beside `folder` to write into; once the block ends without an
    error it becomes `folder` (an existing one is moved aside first, then deleted), and on any
    error it is removed, leaving what was there untouched."""
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    except OSError as e:
        raise disk_error(e, folder) from None
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would keep other users out of a published folder
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old."))
            folder.rename(old / folder.name)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_temporaries(folder: str | os.PathLike, own=None) -> int:
    """Delete what `atomic_open` leaves when a process is killed between writing and renaming
    (`.NAME.XXXX.tmp`), and what `atomic_folder` leaves (`.NAME.XXXX/`), of those names that
    `own(name)` says the caller wrote (default: every `.*.tmp` file); only call it while no
    process writes into `folder`. Returns how many."""
    own = own or (lambda name: name.startswith(".") and name.endswith(".tmp"))
    stale = [p for p in Path(folder).iterdir() if own(p.name)] if Path(folder).is_dir() else []
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(stale)


def check_output_file(path: str | os.PathLike, inputs=()) -> Path:
    """Fail now, before the work, if `path` cannot become a file: not a folder, not one of the
    command's `inputs`, and its folder writable (or creatable)."""
    path = Path(path)
    if path.is_dir():
        raise T1Error(f"{path}: is a folder, not a file to write")
    check_not_input(path, inputs)
    folder = check_output_folder(path.parent)
    if folder.is_dir():  # try it: permissions alone do not tell (read-only mounts, /proc)
        try:
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as e:
            raise T1Error(f"{path}: cannot write there ({e.strerror or e})") from None
    return path


def check_output_folder(folder: str | os.PathLike, inputs=()) -> Path:
    """Fail now, before hours of work, if `folder` cannot become a writable folder: it, or the
    nearest part of its path that exists, must be a writable folder, and none of `inputs`."""
    folder = Path(folder)
    check_not_input(folder, inputs)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"{existing} is a file"
        raise T1Error(f"{folder}: cannot be an output folder ({where})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise T1Error(f"{folder}: cannot write there ({existing} is not writable)")
    return folder


def check_not_input(out: str | os.PathLike, inputs) -> None:
    """Refuse an output that is one of the command's inputs, lies inside a folder it reads, or
    holds one: writing it would replace or delete what the command is reading."""
    target = Path(out).resolve()
    for given in inputs:
        if given is None or not Path(given).exists():
            continue
        source = Path(given).resolve()
        if target == source or (target.exists() and os.path.samefile(target, source)):
            how = "is"
        elif source.is_dir() and source in target.parents:
            how = "is inside"
        elif target in source.parents:
            how = "holds"
        else:
            continue
        raise T1Error(f"{out}: {how} an input of this command ({given}); write the output elsewhere")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_jsonl(path: str | os.PathLike, rows) -> None:
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)
