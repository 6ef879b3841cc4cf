"""Downloading the sources of the three LRA tasks that are not generated, with the standard library only.

    python -m lra.data.prepare --task=text --download --data_dir=./lra_data        # IMDB, aclImdb_v1.tar.gz
    python -m lra.data.prepare --task=image --download --data_dir=./lra_data       # CIFAR-10, binary version
    python -m lra.data.prepare --task=retrieval --download --data_dir=./lra_data   # AAN pairs of the LRA release

Each file (:data:`SOURCES`: its official address, and its size and SHA-256 where they are published) is fetched
into ``.<name>.part`` beside its final name, with a progress bar. An interrupted transfer (a cut connection, a
killed run) is resumed where it stopped with an HTTP ``Range`` request, by the retry loop or by the next run; a
server that ignores the range sends the whole file again, which is then written from the start. When the transfer
is complete, the size and the SHA-256 are checked against the published ones and only then is the file renamed to
its final name, so a file under its final name is whole and checked. A mismatch is a :class:`ChecksumError` naming
the file and both values, and the bad download is removed (a rerun fetches it anew). An HTTP error such as 404 is a
:class:`DownloadError` naming the address and the status.

The published values are those of tensorflow-datasets (``tensorflow_datasets/url_checksums/imdb_reviews.txt`` and
``tensorflow_datasets/url_checksums/cifar10.txt`` in github.com/tensorflow/datasets), which records them for the
same archives its ``imdb_reviews`` and ``cifar10`` builders read. Nobody publishes a checksum of the LRA release
(``lra_release.gz``, several gigabytes: ListOps, the AAN pairs and every Pathfinder set): its SHA-256 is printed
when the download completes, nothing is checked.

Addresses can be pointed elsewhere (a mirror, or a local server in the tests): the ``url`` argument of
:func:`fetch`, or the environment variable named in the table (``LRA_URL_IMDB``, ``LRA_URL_CIFAR10``,
``LRA_URL_LRA_RELEASE``); a file served from elsewhere is held to the same size and checksum.

Retrieval needs three files of the release: :func:`extract_aan` reads the downloaded archive front to back as a
stream and writes only ``tsv_data/new_aan_pairs.{train,eval,test}.tsv`` (each written aside and renamed), stopping
as soon as it has all three; nothing else is unpacked. The archive itself is kept (it also holds the Pathfinder
release); delete it if that is not wanted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from lra.data.files import atomic_write, iter_tar, require_local

CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Source:
    url: str
    filename: str
    size: int | None  # bytes, where published
    sha256: str | None  # where published
    env: str  # environment variable that overrides ``url``


SOURCES = {
    # size and SHA-256: tensorflow/datasets tensorflow_datasets/url_checksums/imdb_reviews.txt (recorded for the
    # http:// address of the same file; the server redirects http to https)
    "imdb": Source("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz", "aclImdb_v1.tar.gz",
                   84_125_825, "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe", "LRA_URL_IMDB"),
    # size and SHA-256: tensorflow/datasets tensorflow_datasets/url_checksums/cifar10.txt
    "cifar10": Source("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "cifar-10-binary.tar.gz",
                      170_052_171, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                      "LRA_URL_CIFAR10"),
    # the LRA release (S4's README, S5's download script); no size or checksum is published
    "lra_release": Source("https://storage.googleapis.com/long-range-arena/lra_release.gz", "lra_release.gz",
                          None, None, "LRA_URL_LRA_RELEASE"),
}
TASK_SOURCES = {"text": "imdb", "image": "cifar10", "retrieval": "lra_release"}
AAN_FILES = ("new_aan_pairs.train.tsv", "new_aan_pairs.eval.tsv", "new_aan_pairs.test.tsv")
_AAN_MEMBER = re.compile(r"^(?:\./)?(?:[^/]+/)*tsv_data/(new_aan_pairs\.(?:train|eval|test)\.tsv)$")


class DownloadError(RuntimeError):
    """A download that could not be completed (HTTP error, too many failed attempts)."""


class ChecksumError(DownloadError):
    """A downloaded file whose size or SHA-256 is not the published one."""


def sha256_of(path: Path, progress: bool = False) -> str:
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=f"sha256 {Path(path).name}", disable=not progress, file=sys.stderr,
                                     leave=False) as bar:
        while block := f.read(CHUNK):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def check_file(path: Path, source: Source, *, progress: bool = False) -> str:
    """The file's SHA-256, after checking its size and SHA-256 against ``source`` (where published)."""
    size = os.path.getsize(path)
    if source.size is not None and size != source.size:
        raise ChecksumError(f"{path}: {size:,} bytes, but {source.filename} has {source.size:,} bytes (published)")
    digest = sha256_of(path, progress)
    if source.sha256 is not None and digest != source.sha256:
        raise ChecksumError(f"{path}: SHA-256 mismatch for {source.filename}: expected {source.sha256} (published), "
                            f"got {digest}")
    return digest


def _content_range_start(value: str | None) -> tuple[int, int | None] | None:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None); None if it does not parse."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if m is None:
        return None
    return int(m.group(1)), (None if m.group(3) == "*" else int(m.group(3)))


def _transfer(url: str, part: Path, source: Source, *, progress: bool, timeout: float) -> bool:
    """One request: append to ``part`` from its current size (a Range request), or write it from the start if the
    server sends the whole file. True when the transfer reached the announced end."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "lra-data-download/1 (python urllib)"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if have and resp.status == 206:
            parsed = _content_range_start(resp.headers.get("Content-Range"))
            if parsed is None or parsed[0] != have:  # not the range asked for: start again
                part.unlink()
                return False
            total = parsed[1] if parsed[1] is not None else (have + length if length is not None else None)
            mode = "ab"
        else:  # 200: the whole file, from the start
            have, mode = 0, "wb"
            total = length
        if total is not None and source.size is not None and total != source.size:
            raise ChecksumError(f"{url} serves {total:,} bytes, but {source.filename} has {source.size:,} bytes "
                                f"(published)")
        with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                         desc=source.filename, disable=not progress, file=sys.stderr) as bar:
            while block := resp.read(CHUNK):
                f.write(block)
                bar.update(len(block))
    now = part.stat().st_size
    return total is None or now >= total


def fetch(name: str, dest_dir, *, url: str | None = None, source: Source | None = None, progress: bool = True,
          retries: int = 5, retry_wait: float = 2.0, timeout: float = 60.0) -> Path:
    """Download source ``name`` of :data:`SOURCES` into ``dest_dir`` (see the module docstring); returns the path
    of the checked file. A file already under the final name is checked, not fetched again. ``source`` replaces
    the table's entry (tests); ``retries`` failed attempts in a row (no new bytes) are allowed before giving up."""
    source = source or SOURCES[name]
    url = url or os.environ.get(source.env) or source.url
    dest = Path(dest_dir).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / source.filename
    if final.is_file():
        if source.size is not None or source.sha256 is not None:  # nothing to check otherwise
            check_file(final, source, progress=progress)
        return final
    part = dest / f".{source.filename}.part"
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        if source.size is not None and before > source.size:  # cannot be a prefix of the file
            part.unlink()
            before = 0
        try:
            if _transfer(url, part, source, progress=progress, timeout=timeout):
                break
            problem = "the connection closed before the end of the file"
        except urllib.error.HTTPError as e:
            if e.code == 416 and before and (source.size is None or before == source.size):
                break  # nothing left to send: the part is whole (checked below)
            if e.code == 416:
                part.unlink(missing_ok=True)
                problem = "HTTP 416 (the partial download is longer than the file); starting again"
            elif e.code < 500 and e.code != 429:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason} (downloading {source.filename} into {dest}); "
                                    f"check the address, or set {source.env} to a mirror") from None
            else:
                problem = f"HTTP {e.code} {e.reason}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            problem = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        after = part.stat().st_size if part.exists() else 0
        failures = 0 if after > before else failures + 1
        if failures > retries:
            raise DownloadError(f"{url}: giving up after {retries} failed attempts in a row ({problem}); the "
                                f"{after:,} bytes received so far are kept in {part} and a rerun resumes there")
        print(f"{source.filename}: {problem}; resuming at {after:,} bytes", file=sys.stderr)
        time.sleep(retry_wait * failures)
    try:
        digest = check_file(part, source, progress=progress)
    except ChecksumError as e:
        part.unlink()
        raise ChecksumError(f"{e.args[0].replace(str(part), str(final))} (downloaded from {url}; the download was "
                            f"removed, rerun to fetch it again)") from None
    os.replace(part, final)
    if source.sha256 is None:
        print(f"{final}: {os.path.getsize(final):,} bytes, SHA-256 {digest} (no published checksum to compare)",
              file=sys.stderr)
    return final


def extract_aan(archive: Path, dest_dir) -> Path:
    """Stream the LRA release ``archive`` and write only ``tsv_data/new_aan_pairs.{train,eval,test}.tsv`` to
    ``dest_dir/tsv_data/`` (each aside, then renamed); stops once it has all three. Returns that folder."""
    out = Path(dest_dir).expanduser() / "tsv_data"
    out.mkdir(parents=True, exist_ok=True)
    found = set()
    for member, f in iter_tar(archive):
        m = _AAN_MEMBER.match(member.name)
        if m is None or f is None or m.group(1) in found:
            continue
        atomic_write(out / m.group(1), lambda w, src=f: shutil.copyfileobj(src, w, CHUNK))
        found.add(m.group(1))
        if len(found) == len(AAN_FILES):
            break  # the rest (the Pathfinder images) is not needed
    missing = [n for n in AAN_FILES if n not in found]
    if missing:
        raise ValueError(f"{archive}: no tsv_data/{', tsv_data/'.join(missing)} in the archive (is it the LRA "
                         f"release, {SOURCES['lra_release'].url}?)")
    return out


def _already_there(task: str, data_dir: Path) -> Path | None:
    """The unpacked source the task would read instead of the archive (then nothing is fetched), or None. The
    archive itself does not count: :func:`fetch` checks it."""
    if task == "retrieval":
        folder = data_dir / "tsv_data"
        return folder if all((folder / n).is_file() for n in AAN_FILES) else None
    from lra.data import image, text
    try:
        found = text.find_source(data_dir) if task == "text" else image.find_source(data_dir)[1]
    except FileNotFoundError:
        return None
    return None if found.is_file() else found


def download_task(task: str, data_dir, *, progress: bool = True, url: str | None = None, **kw) -> Path:
    """Fetch what ``task`` (text, image, retrieval) reads into ``data_dir``; returns the archive or, for
    retrieval, the ``tsv_data`` folder. An unpacked source already there (``aclImdb/``, ``cifar-10-batches-*/``,
    the three AAN files) is used as it is; an archive already there is checked, not fetched again."""
    if task not in TASK_SOURCES:
        raise ValueError(f"--download is for {', '.join(sorted(TASK_SOURCES))}; {task} data are generated by the "
                         f"project (or read from an unpacked LRA release)")
    data_dir = require_local(data_dir, "config.data.data_dir").expanduser()
    present = _already_there(task, data_dir)
    if present is not None:
        print(f"{task}: {present} is already there; nothing to download", file=sys.stderr)
        return present
    archive = fetch(TASK_SOURCES[task], data_dir, progress=progress, url=url, **kw)
    return extract_aan(archive, data_dir) if task == "retrieval" else archive
