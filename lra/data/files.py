"""Writing data so that nothing half-written ever looks complete: one file written aside and renamed into place, one
directory built aside and renamed into place. Every reader, generator and cache under ``lra/data`` goes through these."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def writable(directory: Path) -> bool:
    """Whether ``directory`` exists (made if need be) and can be written."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


def atomic_write(path: Path, write: Callable, *, binary: bool = True) -> None:
    """``write(f)`` into a temporary file beside ``path``, then ``os.replace`` it there: readers see all of it or
    nothing, and a failure removes the temporary file. Text files are written without newline translation. The
    file is made readable by all (``mkstemp`` makes it private; data are as readable as the data beside them)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False)


def publish_dir(work: Path, final: Path) -> None:
    """Rename the finished directory ``work`` to ``final``. If another process published the same set first (the
    rename fails and ``final`` exists), its copy is kept and ``work`` removed."""
    try:
        os.rename(work, final)
    except OSError:
        if not Path(final).is_dir():
            raise
        shutil.rmtree(work, ignore_errors=True)
