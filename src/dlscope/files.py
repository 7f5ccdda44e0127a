"""Atomic file writes: every result, summary, figure and download goes through `atomic_file`, so a
kill at any moment leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_file(path: Path | str, suffix: str = ""):
    """Yield a temporary path beside `path`; when the block succeeds, rename it onto `path`.

    The file gets the usual permissions (mkstemp makes it 0600, which a report served to others,
    or a shared run folder, should not have)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_atomic(obj, path: Path | str) -> None:
    """torch.save, atomically."""
    import torch

    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
