"""Writing data so that nothing half-written ever looks complete: one file written aside and renamed into place, one
directory built aside and renamed into place. Every reader, generator and cache under ``lra/data`` goes through these.

Temporary files are named ``.<final name>.<host>~<pid>~<random>.tmp``: a run killed before it could remove its own
(``kill -9``, a lost machine) leaves one behind, and :func:`remove_stale_temps`, called before the next write of
the same file, removes those whose process on this host is gone (and, from another host, those a day old).

Archives are read front to back by :func:`iter_tar`, which also reads a gzip stream to its end so that its CRC and
length trailer are checked: a damaged archive is an error naming it, never silently accepted.

**Paths**: :func:`as_path` gives an ``etils.epath.Path``: a local path behaves as ``pathlib.Path``, and a URL
(``gs://bucket/run``, ``s3://...``) stays a URL read and written through the object store's client, instead of
becoming a local directory named ``gs:``. What the helpers here guarantee there:

* :func:`atomic_write` and :func:`write_text_atomic` keep their guarantee on an object store differently: the content
  is produced in memory first and then uploaded as one object, which the store publishes whole when the upload
  completes (an interrupted upload publishes nothing; a reader sees the old object or the new one). No temporary
  object, no rename (an object store renames by copying).
* :func:`publish_dir` cannot be atomic there (a "directory" is many objects, renamed one by one): it refuses a
  non-local path with an error. The data sets it publishes, like every data and cache directory, are local:
  :func:`require_local` is the error naming the setting (``config.data.data_dir``) when one is not."""
from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
import warnings
import zlib
from pathlib import Path
from typing import Callable, Iterator

from etils import epath

STALE_FOREIGN_S = 24 * 3600  # a temporary file from another host (shared file system) is stale after a day


def as_path(path):
    """``path`` (a str, ``pathlib.Path`` or URL): a local one as ``pathlib.Path`` (exactly as before), a URL as an
    ``epath.Path`` that stays a URL (``pathlib`` would make ``gs://b/run`` the local ``gs:/b/run``)."""
    return Path(path) if is_local(path) else epath.Path(path)


def file_size(path) -> int:
    """The size in bytes of the file at ``path`` (local or URL; their ``stat`` results differ)."""
    st = path.stat()
    return st.st_size if hasattr(st, "st_size") else int(st.length)


def is_local(path) -> bool:
    """Whether ``path`` is on a local (or mounted) file system rather than an object store URL (``gs://...``)."""
    return "://" not in os.fspath(path)


def require_local(path, what: str) -> Path:
    """``path`` as a ``pathlib.Path``; a ValueError naming ``what`` (e.g. ``config.data.data_dir``) for a URL. The
    data readers memory-map their caches and publish generated sets by renaming directories, which an object store
    cannot do: copy the data to a local disk (``gsutil -m cp -r``) and point ``what`` there."""
    if not is_local(path):
        raise ValueError(f"{what}={os.fspath(path)!r} is not a local path: data and caches are memory-mapped and "
                         f"published by directory renames, which object stores do not offer; copy the data to a "
                         f"local disk (e.g. gsutil -m cp -r) and give that path")
    return Path(path)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"


def temp_prefix(path: Path) -> str:
    """The prefix of this process's temporary files for ``path`` (``mkstemp`` adds the random part)."""
    return f".{Path(path).name}.{_host()}~{os.getpid()}~"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or cannot tell: keep its file
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove temporary files for ``path`` left by runs that died: same host and the process is gone, another host
    and older than a day, or an unstamped name (an older version's) older than a day. Warns naming each one."""
    path = Path(path)
    head = f".{path.name}."
    stamped = re.compile(rf"^{re.escape(head)}([^~/]*)~(\d+)~[^/]*\.tmp$")
    removed = []
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(head) and p.name.endswith(".tmp")]
    except OSError:
        return removed
    for tmp in candidates:
        m = stamped.match(tmp.name)
        try:
            age = time.time() - tmp.stat().st_mtime
        except OSError:
            continue
        if m is not None:
            host, pid = m.group(1), int(m.group(2))
            if host == _host():
                stale = pid != os.getpid() and not _alive(pid)
            else:
                stale = age > STALE_FOREIGN_S
        else:
            stale = age > STALE_FOREIGN_S
        if stale:
            try:
                size = tmp.stat().st_size
                tmp.unlink()
            except OSError:
                continue
            removed.append(tmp)
            warnings.warn(f"removed {tmp} ({size:,} bytes), a temporary file left by an interrupted run",
                          stacklevel=2)
    return removed


def make_temp(path: Path, suffix: str = ".tmp") -> str:
    """A new, empty temporary file beside ``path`` (stale ones of earlier runs removed first); returns its name."""
    path = Path(path)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=suffix)
    os.close(fd)
    return tmp


def writable(directory: Path) -> bool:
    """Whether ``directory`` exists (made if need be) and can be written."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


def atomic_write(path: Path, write: Callable, *, binary: bool = True) -> None:
    """``write(f)`` into a temporary file beside ``path``, then ``os.replace`` it there: readers see all of it or
    nothing, and a failure removes the temporary file. Text files are written without newline translation (and as
    UTF-8 on an object store). The file is made readable by all (``mkstemp`` makes it private; data are as readable
    as the data beside them). A URL ``path`` is written as one object (see the module's docstring)."""
    if not is_local(path):  # an object store: one upload of the whole content, published when it completes
        buffer = io.BytesIO() if binary else io.StringIO(newline="")
        write(buffer)
        content = buffer.getvalue()
        with as_path(path).open("wb") as f:
            f.write(content if binary else content.encode("utf-8"))
        return
    path = Path(path)
    tmp = make_temp(path)
    try:
        with open(tmp, "wb") if binary else open(tmp, "w", newline="") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    """``text`` into ``path`` (local or URL), all of it or nothing (:func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def publish_dir(work: Path, final: Path) -> None:
    """Rename the finished directory ``work`` to ``final``. If another process published the same set first (the
    rename fails and ``final`` exists), its copy is kept and ``work`` removed. Local paths only: an object store
    has no atomic directory rename."""
    require_local(final, "a published directory")
    try:
        os.rename(work, final)
    except OSError:
        if not Path(final).is_dir():
            raise
        shutil.rmtree(work, ignore_errors=True)


_DAMAGE = (tarfile.TarError, EOFError, OSError, zlib.error)


class _MemberFile:
    """A member's file object whose read errors (a damaged stream) are ValueErrors naming the archive."""

    def __init__(self, f, archive: Path, name: str):
        self._f, self._archive, self._name = f, archive, name

    def read(self, n: int = -1) -> bytes:
        try:
            return self._f.read(n)
        except _DAMAGE as e:
            raise ValueError(f"{self._archive}: not a readable tar archive, damaged or truncated: reading "
                             f"{self._name} failed ({type(e).__name__}: {e})") from e


def iter_tar(path: Path) -> Iterator[tuple[tarfile.TarInfo, object]]:
    """``(member, file object or None)`` for every member of the tar archive at ``path`` (plain or gzip-compressed),
    read front to back without unpacking anything. Once the last member has been read, the rest of a gzip stream
    is read too, so that a damaged or truncated archive (a bad CRC or length in the gzip trailer included) raises a
    ValueError naming ``path`` (a caller that stops early skips that final check). Read each member's file object
    before asking for the next member."""
    path = Path(path)
    with open(path, "rb") as raw:
        gz = gzip.GzipFile(fileobj=raw, mode="rb") if raw.read(2) == b"\x1f\x8b" else None
        raw.seek(0)
        try:
            with tarfile.open(fileobj=gz or raw, mode="r|") as tar:
                for member in tar:
                    f = tar.extractfile(member) if member.isfile() else None
                    yield member, (None if f is None else _MemberFile(f, path, member.name))
            if gz is not None:
                while gz.read(1 << 20):
                    pass
        except _DAMAGE as e:
            raise ValueError(f"{path}: not a readable tar archive, damaged or truncated "
                             f"({type(e).__name__}: {e})") from e
