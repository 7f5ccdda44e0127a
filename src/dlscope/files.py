"""Atomic file writes: every result, summary, figure and download goes through `atomic_file`, so a
kill at any moment leaves either the old file or the new one, never half of one.

Also here: cleaning up what a kill leaves anyway (the temporary files of writes it interrupted),
reading a folder's files without following links out of it, and the lock that keeps two runs from
writing into one run folder at once."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path

# atomic_file's temporary names: "." + the file's name + "." + mkstemp's 8 random characters
# (+ an optional suffix such as ".png"), e.g. ".report.html.k2j4_x9a"
TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?")


@contextlib.contextmanager
def atomic_file(path: Path | str, suffix: str = ""):
    """Yield a temporary path beside `path`; when the block succeeds, rename it onto `path`.

    The data is flushed to the disk before the rename (fsync), so that a power cut cannot leave a
    renamed but empty file. The file gets the usual permissions (mkstemp makes it 0600, which a
    report served to others, or a shared run folder, should not have)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        _fsync(path.parent)  # the rename itself
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder; the file's own fsync is what matters
        pass
    finally:
        os.close(fd)


def save_atomic(obj, path: Path | str) -> None:
    """torch.save, atomically."""
    import torch

    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def remove_temp_files(folder: Path | str) -> list[Path]:
    """Delete the temporary files that killed atomic writes left in `folder` (not below it).

    Only for folders this process holds the lock of: another writer's temporary file in
    progress looks the same."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if TEMP_NAME.fullmatch(p.name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


# --------------------------------------------------------------------------- reading a folder from elsewhere

MAX_READ_BYTES = 256 * 2**20  # a JSON or result file larger than this is not one dlscope wrote


def open_regular(path: Path | str):
    """`path` opened for reading (binary) if it is a regular file itself; OSError otherwise.

    A run folder may come from elsewhere: a file in it that is a symbolic link must not make us
    read outside the folder (O_NOFOLLOW), and a FIFO or a device could block or never end
    (O_NONBLOCK for the open, then only regular files)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):
            raise OSError(errno.ELOOP, "a symbolic link, not a file of this folder", str(path)) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    if info.st_size > MAX_READ_BYTES:
        os.close(fd)
        raise OSError(errno.EFBIG, f"{info.st_size} bytes, larger than any file dlscope writes", str(path))
    return os.fdopen(fd, "rb")


def read_text_regular(path: Path | str) -> str:
    """The UTF-8 text of a regular file of the folder (see open_regular)."""
    with open_regular(path) as f:
        return f.read().decode("utf-8")


# --------------------------------------------------------------------------- the run folder's lock

# Older versions locked a file of this name inside the folder; the lock is now on the folder
# itself, so that a run, and a run refused by the lock, leave no file behind (not even after kill -9).
LOCK_NAME = ".dlscope-lock"


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock."""


_held: dict[str, list] = {}  # real path -> [descriptor, depth]: the locks this process holds


@contextlib.contextmanager
def folder_lock(folder: Path | str):
    """Hold `folder` for this process while the block runs; another process that asks for it is
    refused with FolderInUse. The lock is an flock on the folder itself (opened read-only), so
    nothing is created in it, and the system drops the lock when the holder dies, even by kill -9.
    Re-entrant within one process (run all holds it while each experiment takes it again). The
    folder must exist."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    key = os.path.realpath(folder)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            raise FolderInUse(
                f"{folder} is in use by another dlscope run{f' (pid {holder})' if holder else ''}; "
                f"wait for it to finish, or use another --out"
            ) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EBADF):
                raise
            # a file system without locks (some network mounts): go on unlocked rather than not at all
        _held[key] = [fd, 1]
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing releases the flock


def _lock_holder(fd: int) -> str | None:
    """The pid holding an flock on fd's folder, from /proc/locks (Linux), or None if unknown."""
    info = os.fstat(fd)
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found = {}
    for line in lines:
        parts = line.split()
        if "FLOCK" not in parts or "->" in parts:  # "->": a process waiting, not the holder
            continue
        for i, part in enumerate(parts[1:], 1):
            dev, _, ino = part.rpartition(":")
            if ino == str(info.st_ino) and parts[i - 1].isdigit():
                exact = dev == f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}"
                found[exact] = parts[i - 1]
    # the device numbers /proc/locks shows can differ from stat's (overlay file systems): the inode alone then
    return found.get(True) or found.get(False)
