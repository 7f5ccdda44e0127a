"""Atomic file writes: every result, summary, figure and download goes through `atomic_file`, so a
kill at any moment leaves either the old file or the new one, never half of one.

Also here: cleaning up what a kill leaves anyway (the temporary files of writes it interrupted),
and the lock that keeps two runs from writing into one run folder at once."""

from __future__ import annotations

import contextlib
import errno
import os
import re
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


# --------------------------------------------------------------------------- the run folder's lock

LOCK_NAME = ".dlscope-lock"


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock."""


_held: dict[str, list] = {}  # real path -> [file object, depth]: the locks this process holds


@contextlib.contextmanager
def folder_lock(folder: Path | str):
    """Hold `folder` for this process while the block runs; another process that asks for it is
    refused with FolderInUse. The lock is an flock on FOLDER/.dlscope-lock, so the system drops
    it when the holder dies, even by kill -9: no stale lock to clean up. Re-entrant within one
    process (run all holds it while each experiment takes it again). The folder must exist."""
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
    f = open(Path(folder) / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            raise FolderInUse(f"{folder} is in use by another dlscope run{f' (pid {holder})' if holder.isdigit() else ''}; "
                              f"wait for it to finish, or use another --out") from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            # a file system without locks (some network mounts): go on unlocked rather than not at all
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        _held[key] = [f, 1]
        try:
            yield
        finally:
            del _held[key]
    finally:
        f.close()  # closing releases the flock
