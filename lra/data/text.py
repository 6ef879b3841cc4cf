"""LRA Text: IMDB movie reviews read byte by byte, 2 classes.

Source: the original archive of Maas et al. (2011), https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz,
under ``data_dir``: the ``aclImdb_v1.tar.gz`` file itself (read in place with ``tarfile``, nothing is unpacked) or
its unpacked ``aclImdb/`` folder (``data_dir`` may also be that folder or the archive's path);
``python -m lra.data.prepare --task=text --download`` fetches and checks the archive (:mod:`lra.data.download`).
The archive is read front to back to the end of its gzip stream, so a damaged or truncated archive (a bad gzip
trailer included) is an error naming it. Reviews are
``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``, 12,500 per folder; ``train/unsup`` (50,000 unlabelled
reviews) is ignored. As TFDS ``imdb_reviews`` (which the official LRA pipeline loads) does, a review is the file's
bytes with surrounding ASCII whitespace stripped (``bytes.strip()``; HTML such as ``<br />`` is kept) and its label
is 0 for ``neg``, 1 for ``pos``. Order: neg then pos, by review id (``<id>`` of the file name), so the arrays do not
depend on the file system or the archive's member order (TFDS's record order is its own and is not reproduced).

Encoding (TFDS ``ByteTextEncoder``, as the official pipeline): byte ``b`` -> id ``b + 1``; 0 = padding; vocabulary
257. Reviews are truncated to ``seq_len`` bytes and zero-padded to it; ``lengths`` counts the real bytes. Lengths in
use: 4,096 (our default; S4 and most later papers), 4,000 (LRA's ``transformer_tlb_base.py``, the commonly quoted
"4K"), 1,000 (LRA's ``text_classification/configs/base_tc_config.py``). Inputs come back as :class:`ByteSequences`,
an array-like that pads rows when indexed, so a split costs its raw bytes in memory, not ``N x seq_len`` int32.

Splits: ``test`` = the 25,000 test reviews. ``official_protocol=True``: the LRA code's protocol, where the test
split is also the validation split and all 25,000 training reviews train. Default: ``val`` = ``val_fraction``
(10%, i.e. 2,500) of the training reviews, chosen by ``np.random.default_rng(val_seed).permutation`` (seed 0), and
``train`` = the other 22,500; both keep the corpus order.

Cache: reading 25,000 + 25,000 files (or scanning the 84 MB archive) takes a while, so the stripped reviews of both
parts are cached, once per source, as ``imdb-<key>.npz`` (one uint8 buffer + offsets + labels per part; no pickles)
in ``cache_dir`` (default: the folder holding ``aclImdb/`` or the archive, i.e. ``data_dir``). ``<key>`` hashes the
cache format and the source's fingerprint (the archive's size and modification time, or every review file's name,
size and modification time), so editing the data invalidates it; every ``seq_len``, protocol and seed is served from
the same cache. It is written to a temporary file and renamed into place, so an interrupted run never leaves a cache
that looks complete. A cache that cannot be read (truncated, a bad CRC: ``.npz`` members are CRC-checked) or does
not hold consistent arrays is rebuilt, with a warning naming it. An unwritable ``cache_dir`` only costs a warning.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from lra.data.files import atomic_write, iter_tar, require_local, writable

NUM_CLASSES, VOCAB_SIZE = 2, 257
SPLITS = ("train", "val", "test")
PARTS = ("train", "test")
LABELS = (("neg", 0), ("pos", 1))
ARCHIVE = "aclImdb_v1.tar.gz"
URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
CACHE_VERSION = 1
_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/([^/]+\.txt)$")


# ----------------------------------------------------------------------------------------------------- bytes

@dataclasses.dataclass(frozen=True)
class Documents:
    """Byte strings stored back to back: document ``i`` is ``data[offsets[i]:offsets[i + 1]]``."""

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64 [N + 1]

    @classmethod
    def pack(cls, docs: list[bytes]) -> "Documents":
        offsets = np.zeros(len(docs) + 1, np.int64)
        np.cumsum([len(d) for d in docs], out=offsets[1:])
        return cls(np.frombuffer(b"".join(docs), np.uint8).copy(), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> bytes:
        return self.data[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class ByteSequences:
    """Documents ``docs[indices]`` as model inputs, built when indexed: int32 ``[n, seq_len]``, byte ``b`` -> id
    ``b + 1``, truncated to ``seq_len`` and padded with 0. Supports ``len``, ``shape``, ``dtype``, indexing with an
    int, a slice or an index array (what the batch pipeline does) and ``np.asarray``."""

    def __init__(self, docs: Documents, seq_len: int, indices: np.ndarray | None = None):
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.docs, self.seq_len = docs, int(seq_len)
        self.indices = np.arange(len(docs)) if indices is None else np.asarray(indices, np.int64)
        self.shape = (len(self.indices), self.seq_len)
        self.dtype, self.ndim = np.dtype(np.int32), 2
        # one zero byte past the end, so the gather below never indexes out of range (even with no data at all)
        self._padded = np.concatenate([docs.data, np.zeros(1, np.uint8)])

    @property
    def lengths(self) -> np.ndarray:
        """Real tokens per row (document length capped at ``seq_len``), int32 ``[n]``."""
        return np.minimum(self.docs.lengths()[self.indices], self.seq_len).astype(np.int32)

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        start = self.docs.offsets[rows]
        n = np.minimum(self.docs.offsets[rows + 1] - start, self.seq_len)
        pos = np.arange(self.seq_len)
        real = pos[None, :] < n[:, None]
        gather = np.where(real, start[:, None] + pos[None, :], len(self.docs.data))
        return np.where(real, self._padded[gather].astype(np.int32) + 1, 0).astype(np.int32)

    def __getitem__(self, idx):
        single = np.ndim(idx) == 0 and not isinstance(idx, slice)
        out = self._rows(self.indices[np.atleast_1d(idx) if single else idx])
        return out[0] if single else out

    def __array__(self, dtype=None, copy=None):
        out = np.zeros(self.shape, np.int32)
        for a in range(0, len(self), 1024):  # in chunks: the gather indices of all rows at once would be 8 x larger
            out[a:a + 1024] = self._rows(self.indices[a:a + 1024])
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"ByteSequences(shape={self.shape}, dtype=int32)"


def encode_bytes(texts: list[bytes], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Byte ids (``b + 1``), truncated and zero-padded, as plain arrays: ``([N, seq_len] int32, lengths [N])``."""
    seqs = ByteSequences(Documents.pack(list(texts)), seq_len)
    return np.asarray(seqs), seqs.lengths


# ----------------------------------------------------------------------------------------------------- cache

def check_documents(arrays: dict, *parts: tuple[str, str]) -> str | None:
    """What is wrong with ``(data key, offsets key)`` pairs of cached arrays as :class:`Documents`, or None."""
    for data_key, offsets_key in parts:
        if data_key not in arrays or offsets_key not in arrays:
            return f"no {data_key!r} / {offsets_key!r} arrays"
        data, offsets = arrays[data_key], arrays[offsets_key]
        if data.dtype != np.uint8 or data.ndim != 1 or offsets.ndim != 1 or offsets.dtype.kind not in "iu":
            return f"{data_key!r} / {offsets_key!r} are not a uint8 buffer and integer offsets"
        if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(data) or np.any(np.diff(offsets) < 0):
            return f"the offsets {offsets_key!r} do not cover {data_key!r}"
    return None


def cached(path: Path, build, what: str, check: Callable[[dict], str | None] | None = None) -> dict[str, np.ndarray]:
    """The arrays in the ``.npz`` at ``path``; made by ``build()`` and saved there (atomically) if absent. A cache
    that cannot be read (truncated, damaged) or that ``check(arrays)`` finds wrong (it returns what is wrong, or
    None) is rebuilt with a warning naming it. A directory that cannot be written only costs a warning and a
    rebuild next time."""
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            problem = check(arrays) if check is not None else None
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:  # truncated, bad CRC, foreign
            problem = f"unreadable: {type(e).__name__}: {e}"
        if problem is None:
            return arrays
        warnings.warn(f"{what}: the cache {path} does not match its source ({problem}); rebuilding it",
                      stacklevel=3)
    arrays = build()
    if writable(path.parent):
        atomic_write(path, lambda f: np.savez(f, **arrays))
    else:
        warnings.warn(f"{what}: {path.parent} is not writable, so the parsed data are not cached; set "
                      f"config.data.cache_dir to cache them elsewhere", stacklevel=3)
    return arrays


# ----------------------------------------------------------------------------------------------------- source

def _order(name: str) -> tuple:
    """Review order within a folder: by the numeric id of ``<id>_<rating>.txt``, then by name."""
    head = name.split("_", 1)[0]
    return (int(head), name) if head.isdigit() else (float("inf"), name)


def find_source(data_dir) -> Path:
    """The unpacked ``aclImdb`` folder or the ``aclImdb_v1.tar.gz`` archive for ``data_dir`` (a folder holding
    either, the ``aclImdb`` folder itself or the archive's path); a FileNotFoundError naming what was looked for."""
    root = require_local(data_dir, "config.data.data_dir").expanduser()
    for candidate in (root / "aclImdb", root):
        if candidate.name == "aclImdb" and candidate.is_dir():
            return candidate
    for candidate in (root / ARCHIVE, root):
        if candidate.is_file() and candidate.name.endswith((".tar.gz", ".tgz", ".tar")):
            return candidate
    raise FileNotFoundError(
        f"no IMDB reviews under {root}: looked for {root / 'aclImdb'}/ (the unpacked archive) and {root / ARCHIVE}; "
        f"`python -m lra.data.prepare --task=text --download --data_dir={root}` fetches and checks it (or download "
        f"{URL} into {root} yourself; unpacking it is optional), or point config.data.data_dir at it")


def _folder_fingerprint(folder: Path) -> list:
    entries = []
    for part in PARTS:
        for name, _ in LABELS:
            d = folder / part / name
            if not d.is_dir():
                raise FileNotFoundError(f"{d} is missing: expected aclImdb/{part}/{name}/*.txt (the unpacked {ARCHIVE})")
            with os.scandir(d) as it:
                for e in it:
                    if e.name.endswith(".txt"):
                        st = e.stat()
                        entries.append((part, name, e.name, st.st_size, st.st_mtime_ns))
    return sorted(entries)


def _read_folder(folder: Path) -> dict[str, tuple[list[bytes], list[int]]]:
    out = {}
    for part in PARTS:
        texts, labels = [], []
        for name, label in LABELS:
            d = folder / part / name
            files = sorted((p for p in d.iterdir() if p.name.endswith(".txt")), key=lambda p: _order(p.name))
            if not files:
                raise ValueError(f"{d}: no reviews (*.txt) found")
            for p in files:
                texts.append(p.read_bytes().strip())
                labels.append(label)
        out[part] = (texts, labels)
    return out


def _read_archive(archive: Path) -> dict[str, tuple[list[bytes], list[int]]]:
    found: dict[tuple[str, str], list[tuple[str, bytes]]] = {(p, n): [] for p in PARTS for n, _ in LABELS}
    try:
        for member, f in iter_tar(archive):  # to the end of the gzip stream: its trailer is checked too
            m = _MEMBER.match(member.name)
            if m is None or f is None:
                continue  # train/unsup, vocabularies, URLs, README ...
            found[m.group(1), m.group(2)].append((m.group(3), f.read().strip()))
    except ValueError as e:
        raise ValueError(f"{e}; download {URL} again (python -m lra.data.prepare --task=text --download)") from e
    out = {}
    for part in PARTS:
        texts, labels = [], []
        for name, label in LABELS:
            reviews = sorted(found[part, name], key=lambda r: _order(r[0]))
            if not reviews:
                raise ValueError(f"{archive}: no reviews under aclImdb/{part}/{name}/ (is this {ARCHIVE}?)")
            texts += [t for _, t in reviews]
            labels += [label] * len(reviews)
        out[part] = (texts, labels)
    return out


_MEMO: dict[str, dict[str, tuple[Documents, np.ndarray]]] = {}


def load_reviews(data_dir, *, cache_dir=None, cache: bool = True) -> dict[str, tuple[Documents, np.ndarray]]:
    """``{"train": (reviews, labels), "test": (reviews, labels)}``: stripped review bytes and int32 labels, read
    from the archive or folder once, then from the cache (see the module docstring)."""
    source = find_source(data_dir)
    if source.is_dir():
        fingerprint = ["folder", _folder_fingerprint(source)]
    else:
        st = source.stat()
        fingerprint = ["archive", source.name, st.st_size, st.st_mtime_ns]
    key = hashlib.sha256(repr([CACHE_VERSION, fingerprint]).encode()).hexdigest()[:16]
    if key in _MEMO:
        return _MEMO[key]

    def build():
        parts = _read_folder(source) if source.is_dir() else _read_archive(source)
        arrays = {}
        for part, (texts, labels) in parts.items():
            docs = Documents.pack(texts)
            arrays.update({f"{part}_data": docs.data, f"{part}_offsets": docs.offsets,
                           f"{part}_labels": np.asarray(labels, np.int32)})
        return arrays

    if cache:
        where = require_local(cache_dir, "config.data.cache_dir").expanduser() if cache_dir else source.parent  # beside aclImdb/ or the archive
        def check(arrays):
            problem = check_documents(arrays, *((f"{p}_data", f"{p}_offsets") for p in PARTS))
            if problem is None and any(len(arrays.get(f"{p}_labels", ())) != len(arrays[f"{p}_offsets"]) - 1
                                       for p in PARTS):
                problem = "labels and reviews differ in number"
            return problem

        arrays = cached(where / f"imdb-{key}.npz", build, "IMDB", check)
    else:
        arrays = build()
    result = {part: (Documents(arrays[f"{part}_data"], arrays[f"{part}_offsets"]), arrays[f"{part}_labels"])
              for part in PARTS}
    _MEMO.clear()  # keep only the latest corpus in memory
    _MEMO[key] = result
    return result


def validation_indices(n: int, val_fraction: float, val_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of a seeded hold-out of ``round(n * val_fraction)`` (at least 1) examples, each sorted."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"config.data.val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} of {n} training reviews leaves none to train on")
    perm = np.random.default_rng(val_seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load_split(data_dir, split: str, *, seq_len: int = 4096, official_protocol: bool = False,
               val_fraction: float = 0.1, val_seed: int = 0, cache_dir=None, cache: bool = True) -> dict:
    """One split: ``inputs`` (:class:`ByteSequences`, int32 ``[N, seq_len]`` when indexed), ``lengths``, ``labels``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    corpus = load_reviews(data_dir, cache_dir=cache_dir, cache=cache)
    if split == "test" or (split == "val" and official_protocol):
        docs, labels = corpus["test"]
        indices = np.arange(len(docs))
    else:
        docs, labels = corpus["train"]
        indices = np.arange(len(docs))
        if not official_protocol:
            train, val = validation_indices(len(docs), val_fraction, val_seed)
            indices = val if split == "val" else train
    inputs = ByteSequences(docs, seq_len, indices)
    return {"inputs": inputs, "lengths": inputs.lengths, "labels": labels[indices]}
