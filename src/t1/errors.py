"""User-facing errors.

`T1Error` marks a mistake the user can fix (bad file, bad field, wrong model). The CLI prints
its message on one line and exits non-zero; everything else is a bug and keeps its traceback.

The machine can refuse too: a full disk, a permission, a read-only or immutable file. Such an
`OSError` is not a bug either; `disk_error` turns it into a `T1Error` that names the path and
says that re-running resumes.
"""

from __future__ import annotations

import errno
import os

# what the machine, not the program, got wrong: errno -> what to tell the user
DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (an immutable or protected file?)",
    errno.EROFS: "read-only file system",
}


class T1Error(Exception):
    """A problem with the user's input, reported without a traceback."""


def is_disk_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_ERRNOS


def disk_error(e: OSError, path: str | os.PathLike | None = None) -> T1Error:
    """The one line for `e`, raised while reading or writing `path` (default: the file it names)."""
    where = path if path is not None else (e.filename or "t1")
    why = DISK_ERRNOS.get(e.errno) or e.strerror or str(e)
    return T1Error(f"{where}: cannot read or write ({why}); fix it and re-run the same command: "
                   "finished work is kept and the job resumes")
