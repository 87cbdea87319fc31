"""Writing files and folders so that nothing already written is lost.

Every file a user gets goes through :func:`atomic_write`: the bytes land in a
temporary file in the same folder (created with ``O_EXCL`` under an
unpredictable name, so a symlink planted there is never followed), are
flushed to disk, then renamed over the destination (a rename replaces a
symlink rather than writing through it), and the folder entry is flushed
too. A crash or Ctrl-C at any point leaves either the old file or the new one.

A model directory is replaced as a whole by :func:`atomic_directory`: it is
written under a temporary name beside the destination and swapped in with
one ``renameat2(RENAME_EXCHANGE)`` where the kernel offers it, so a reader
sees the old directory or the new one, never a mixture.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
from typing import IO, Iterator

__all__ = ["atomic_write", "atomic_directory", "fsync_directory", "remove_stale_temporaries", "write_json",
           "copy_file", "jsonable"]

TEMP_PREFIX = ".rg-tmp-"


def fsync_directory(directory: str) -> None:
    """Flush a folder's entries (the rename itself) to disk."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # e.g. a platform without directory fds: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file for writing; on clean exit it replaces ``path``.

    ``mode`` is "w" (text) or "wb" (bytes). On an exception (KeyboardInterrupt
    included) the temporary file is removed and ``path`` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) and not os.path.islink(path):
        raise IsADirectoryError(f"{path}: is a directory, cannot write a file there")
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + os.path.basename(path) + ".", dir=directory)
    try:
        kwargs = {} if mode == "wb" else {"encoding": encoding, "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def jsonable(value):
    """``value`` with numpy arrays and scalars (and tuple / non-str keys) made plain JSON."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path, value, **dump_options) -> None:
    """``json.dump(value)`` into ``path`` through :func:`atomic_write` (UTF-8)."""
    import json

    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, **dump_options)


def copy_file(source, target) -> None:
    """Copy ``source``'s bytes to ``target`` through :func:`atomic_write`."""
    with open(source, "rb") as reader, atomic_write(target, "wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux renameat2); False where not supported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP if hasattr(errno, "ENOTSUP") else errno.EINVAL):
        return False
    raise OSError(error, os.strerror(error), a)


@contextlib.contextmanager
def atomic_directory(path) -> Iterator[str]:
    """Yield a fresh temporary folder beside ``path``; on clean exit it becomes ``path``.

    An existing ``path`` is replaced as a whole (swapped, then removed); on an
    exception the temporary folder is removed and ``path`` is untouched.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    if os.path.islink(path):
        raise FileExistsError(f"{path}: is a symlink; refusing to replace it")
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path}: exists and is not a directory")
    tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX + os.path.basename(path) + ".", dir=parent)
    try:
        yield tmp
        for root, _dirs, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(root, name), "rb") as handle:
                    os.fsync(handle.fileno())
            fsync_directory(root)
        if os.path.isdir(path):
            if _exchange(tmp, path):
                fsync_directory(parent)
                shutil.rmtree(tmp, ignore_errors=True)  # now holds the old contents
                return
            # No atomic exchange: move the old one aside first, so a crash
            # between the two renames leaves it under a temporary name, intact.
            old = tempfile.mkdtemp(prefix=TEMP_PREFIX + os.path.basename(path) + ".old.", dir=parent)
            os.rmdir(old)
            os.rename(path, old)
            os.rename(tmp, path)
            fsync_directory(parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
            fsync_directory(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(directory: str) -> list:
    """Remove temporary files and folders this module left behind (a SIGKILL
    mid-write); returns their names. Safe to call on every resume."""
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(TEMP_PREFIX):
            continue
        full = os.path.join(directory, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(full)
        removed.append(name)
    return removed
