"""LRA Pathfinder family: are the two markers on one contour? 2 classes.

Layout (the official release, and what the generator writes): ``pathfinder{R}/<difficulty>/metadata/<k>.npy`` and
``pathfinder{R}/<difficulty>/imgs/<k>/sample_<i>.png``, R in 32 / 64 / 128 / 256, difficulty ``curv_baseline``
(easy), ``curv_contour_length_9`` (intermediate) or ``curv_contour_length_14`` (hard). Despite the suffix the release's
metadata files are plain text, one row per image of 11 space-separated fields ``subdir file index label continuity
contour_length distractor_length paddle_length paddle_thickness paddle_margin n_contrasts``; the original generator's
own output (``np.save`` of an (N, 11) unicode array) is read too. Files are taken in integer order of their stem,
rows in order (as S4); an empty PNG (the release has one) is skipped and all of them are counted in one warning.
Images are 8-bit grayscale, R x R.

Tasks: "Pathfinder" = pathfinder32 ``curv_contour_length_14``, "Path-X" = pathfinder128 ``curv_contour_length_14``
(S4/S5 usage; LRA's code does not pin the difficulty); 64, 256 and the other difficulties through the config.

Split: one permutation of all images, ``np.random.default_rng(split_seed)``, ``split_seed = 42`` (S4's seed; S4 uses
torch's generator, so the members differ), cut into 80% train, 10% val, 10% test (val and test ``int(0.1 N)``);
loading a split left empty (a set of fewer than 10 images) is an error naming the directory.

Inputs (``tokenize``): 256 tokens (the pixel's level; LRA's setting) as int32 ``[N, R*R]``, or continuous
``x / 255`` in [0, 1] as float32 ``[N, R*R, 1]`` (S4's ``center: False``); ``center=True`` maps to [-1, 1] (S5).
The split arrays convert pixels on indexing (:class:`PixelSequences`): Path-X's 160,000 training images stay 2.6 GB
of uint8 instead of 10 GB of float32.

Decoding 200,000 PNGs takes minutes, so the decoded uint8 array is cached as ``decoded-<digest>.npy`` next to the
metadata (or in ``cache_dir``), named by a hash of the metadata files; it is written to a temporary file by parallel
worker processes and renamed into place, so a killed run never leaves a cache that looks complete, and a
temporary file left by a run killed outright (``kill -9``) is removed by the next one. Beside it,
``decoded-<digest>.index.npy`` records, per image, its size, modification time and SHA-256 and the SHA-256 of its
decoded pixels. Every load compares the sizes and times (a second or two for 200,000 files; an image whose time
changed but whose bytes did not is accepted), so a PNG changed after decoding is noticed and the cache rebuilt with
a warning naming it. ``python -m lra.data.prepare --verify`` also hashes every PNG and every cached image
(:func:`check_cache`): a damaged cache is rebuilt, never mistaken for a change of the images.

Generation (:func:`ensure_generated`, ``python -m lra.data.pathfinder --generate``): :mod:`lra.data.pathfinder_gen`
renders each image from its own seed, in parallel processes, into the same layout (1,000 images per ``imgs/<k>``).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from lra.data import pathfinder_gen as gen
from lra.data.files import (STALE_FOREIGN_S, atomic_write, make_temp, publish_dir, remove_stale_temps, require_local,
                            writable, write_text_atomic)

URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
NUM_CLASSES, VOCAB_SIZE = 2, 256
RESOLUTIONS = tuple(gen.RESOLUTIONS)
SPLITS = ("train", "val", "test")
SPLIT_SEED = 42
NUM_FIELDS = 11
IMAGES_PER_DIR = 1000
difficulty_dir = gen.difficulty_dir


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _pool(workers: int) -> ProcessPoolExecutor:
    # spawn: the caller may hold JAX's threads, which a fork would copy mid-flight
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="img", disable=not progress, file=sys.stderr, smoothing=0.05)


# ----------------------------------------------------------------------------------------------------- reading

def find_dir(data_dir, resolution: int, difficulty: str) -> Path:
    """``pathfinder{R}/<difficulty>`` under ``data_dir``, under its ``lra_release/`` (or the tarball's doubled
    ``lra_release/lra_release/``) level; ``data_dir`` may also be that directory or its ``pathfinder{R}`` parent."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"Pathfinder resolution must be one of {RESOLUTIONS}, got {resolution}")
    name, parent = difficulty_dir(difficulty), f"pathfinder{resolution}"
    root = require_local(data_dir, "config.data.data_dir").expanduser()
    candidates = [root / sub / parent / name for sub in (".", "lra_release", "lra_release/lra_release")]
    if root.name == parent:
        candidates.append(root / name)
    if root.name == name and root.parent.name == parent:
        candidates.append(root)
    for cand in candidates:
        if (cand / "metadata").is_dir():
            return cand
    looked = ", ".join(str(c / "metadata") for c in candidates[:3])
    raise FileNotFoundError(
        f"no Pathfinder data for pathfinder{resolution}/{name} under {root} (looked for {looked}). Either unpack "
        f"the LRA release ({URL}; it holds lra_release/pathfinder{{32,64,128,256}}/) into {root}, or generate a set "
        f"with `python -m lra.data.pathfinder --generate --resolution {resolution} --difficulty {difficulty} "
        f"--num 200000 --out {root}` (what --config.data.source=generate does)")


def metadata_files(directory: Path) -> list[Path]:
    meta = Path(directory) / "metadata"
    files = list(meta.glob("*.npy"))
    if not files:
        raise FileNotFoundError(f"{meta} holds no .npy metadata files")
    for f in files:
        if not f.stem.isdigit():
            raise ValueError(f"{f}: metadata files are named <integer>.npy (imgs/<integer>/ holds their images)")
    return sorted(files, key=lambda f: int(f.stem))


def _metadata_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line or row number, fields) of one metadata file, text or ``np.save`` format."""
    raw = path.read_bytes()
    if raw.startswith(b"\x93NUMPY"):
        try:
            table = np.load(io.BytesIO(raw), allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path}: unreadable np.save array ({e})") from None
        if table.ndim != 2 or table.shape[1] != NUM_FIELDS:
            raise ValueError(f"{path}: expected an (N, {NUM_FIELDS}) array of metadata rows, got shape {table.shape}")
        return [(n, [str(v) for v in row]) for n, row in enumerate(table.tolist(), start=1)]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: neither UTF-8 text rows nor an np.save array ({e})") from None
    return [(n, line.split()) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]


def read_metadata(directory) -> tuple[list[tuple[str, int]], list[tuple[Path, int]]]:
    """Every image's (relative path, label), metadata files in integer order and rows in order, and where each row
    came from (file, line). A malformed row is a ValueError naming its file and line."""
    items, where = [], []
    for path in metadata_files(Path(directory)):
        for line, f in _metadata_lines(path):
            if len(f) != NUM_FIELDS:
                raise ValueError(f"{path}:{line}: expected {NUM_FIELDS} space-separated fields (subdir file index "
                                 f"label continuity contour_length distractor_length paddle_length "
                                 f"paddle_thickness paddle_margin n_contrasts), got {len(f)}: {' '.join(f)[:120]!r}")
            subdir, name, index, label = f[:4]
            if label not in ("0", "1"):
                raise ValueError(f"{path}:{line}: label (field 4) must be 0 or 1, got {label!r}")
            if not index.lstrip("-").isdigit():
                raise ValueError(f"{path}:{line}: image index (field 3) must be an integer, got {index!r}")
            rel = Path(subdir) / name
            if rel.is_absolute() or ".." in rel.parts or not name.endswith(".png"):
                raise ValueError(f"{path}:{line}: expected a relative image path like 'imgs/0 sample_0.png', "
                                 f"got {subdir!r} {name!r}")
            items.append((str(rel), int(label)))
            where.append((path, line))
    return items, where


def _decode_chunk(directory: str, paths: list[str], resolution: int, target: str | None, start: int):
    """Worker: decode PNGs to uint8 [n, R, R]; into rows ``start:`` of the .npy at ``target`` if given. Also returns
    the SHA-256 of each PNG file and of each decoded image (``n * 32`` bytes each), which the cache's index keeps."""
    from PIL import Image

    out = np.empty((len(paths), resolution, resolution), np.uint8)
    png_sums, pixel_sums = bytearray(), bytearray()
    for i, rel in enumerate(paths):
        full = Path(directory) / rel
        try:
            data = full.read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                im = im if im.mode == "L" else im.convert("L")
                arr = np.asarray(im, np.uint8)
        except Exception as e:  # noqa: BLE001 - name the file whatever PIL raises
            raise ValueError(f"{full}: not a readable PNG ({type(e).__name__}: {e})") from None
        if arr.shape != (resolution, resolution):
            raise ValueError(f"{full}: image is {arr.shape[1]}x{arr.shape[0]}, expected {resolution}x{resolution}")
        out[i] = arr
        png_sums += hashlib.sha256(data).digest()
        pixel_sums += hashlib.sha256(np.ascontiguousarray(arr).tobytes()).digest()
    if target is None:
        return start, out, bytes(png_sums), bytes(pixel_sums)
    mm = np.load(target, mmap_mode="r+")
    mm[start:start + len(paths)] = out
    mm.flush()
    del mm
    return start, None, bytes(png_sums), bytes(pixel_sums)


def _cache_key(directory: Path, resolution: int) -> str:
    h = hashlib.sha256(f"pathfinder{resolution}".encode())
    for f in metadata_files(directory):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


# The decoded cache's index: one record per metadata row, what the cache was made from. An image is "the same" when
# its size and modification time are (checked on every load, cheaply); when they are not, its bytes are hashed and
# compared with ``png`` (a touched or copied file is accepted and its record updated). ``pixels`` is the SHA-256 of
# the decoded image, which ``check_cache`` (prepare --verify) compares with the cache itself.
INDEX_DTYPE = np.dtype([("size", "<i8"), ("mtime_ns", "<i8"), ("kept", "?"), ("png", "u1", (32,)),
                        ("pixels", "u1", (32,))])


def _cache_paths(directory: Path, resolution: int, cache_dir) -> tuple[Path, Path, str]:
    key = _cache_key(directory, resolution)
    where = require_local(cache_dir, "config.data.cache_dir").expanduser() if cache_dir else directory
    return where / f"decoded-{key}.npy", where / f"decoded-{key}.index.npy", key


def _stat_images(directory: Path, items, where) -> tuple[np.ndarray, np.ndarray]:
    """Sizes and modification times (ns) of every listed image; a missing one is named with its metadata row."""
    sizes, mtimes = np.empty(len(items), np.int64), np.empty(len(items), np.int64)
    for i, (rel, _) in enumerate(items):
        full = directory / rel
        try:
            st = full.stat()
        except FileNotFoundError:
            path, line = where[i]
            raise FileNotFoundError(f"{full}: listed in {path}:{line} but missing") from None
        sizes[i], mtimes[i] = st.st_size, st.st_mtime_ns
    return sizes, mtimes


def _names(directory: Path, items, rows, limit: int = 3) -> str:
    shown = ", ".join(str(directory / items[i][0]) for i in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def _read_cache(cache: Path, index_file: Path, directory: Path, items, sizes, mtimes, resolution: int):
    """``(images, index, problem)``: the memory-mapped cache and its index if they match the images listed in
    ``items`` (``problem`` None), else what does not match."""
    try:
        index = np.load(index_file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        return None, None, f"its index {index_file.name} is unreadable ({type(e).__name__}: {e})"
    if index.dtype != INDEX_DTYPE or index.shape != (len(items),):
        return None, None, f"its index {index_file.name} does not list the {len(items)} images of the metadata"
    moved = np.flatnonzero((index["size"] != sizes) | (index["mtime_ns"] != mtimes))
    if len(moved):  # touched or replaced: compare the bytes with the digests recorded at decoding
        changed = [int(i) for i in moved if sizes[i] != index["size"][i] or (sizes[i] and hashlib.sha256(
                   (directory / items[i][0]).read_bytes()).digest() != index["png"][i].tobytes())]
        if changed:
            return None, None, f"{len(changed)} image(s) changed since it was made: {_names(directory, items, changed)}"
        index["mtime_ns"] = mtimes  # same bytes (a copy, a touch): record the new times
        atomic_write(index_file, lambda f: np.save(f, index))
    try:
        images = np.load(cache, mmap_mode="r")
    except (OSError, ValueError, EOFError) as e:  # truncated, not a .npy
        return None, None, f"its array is unreadable ({type(e).__name__}: {e})"
    kept = int(index["kept"].sum())
    if images.dtype != np.uint8 or images.shape != (kept, resolution, resolution):
        return None, None, f"its array is {images.dtype}{list(images.shape)}, not uint8[{kept}, {resolution}, " \
                           f"{resolution}]"
    return images, index, None


def _remove_unstamped_temps(cache: Path) -> None:
    """Earlier versions named the decode's temporary file ``.decoded-<key>.<random>.npy.tmp``, without the process
    that wrote it; one older than a day is a leftover of a killed run (as large as the cache) and is removed."""
    for tmp in cache.parent.glob(f".{cache.stem}.*.npy.tmp"):
        try:
            st = tmp.stat()
            if "~" in tmp.name or time.time() - st.st_mtime < STALE_FOREIGN_S:
                continue
            tmp.unlink()
        except OSError:
            continue
        warnings.warn(f"removed {tmp} ({st.st_size:,} bytes), a temporary file left by an interrupted run",
                      stacklevel=3)


def _discard_cache(cache: Path, index_file: Path) -> None:
    index_file.unlink(missing_ok=True)  # first: a cache without its index is never used
    cache.unlink(missing_ok=True)
    cache.with_name(cache.name.replace(".npy", ".kept.npy")).unlink(missing_ok=True)  # an older version's index


_MEMO: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def load_examples(directory, resolution: int, *, workers: int = 0, cache_dir=None, progress: bool = True):
    """All images of one release/generated directory as uint8 ``[N, R, R]`` (memory-mapped from the cache) and
    their int32 labels, empty PNGs skipped. Decoded once and cached (see the module docstring); a cache that does
    not match the images (one changed since, or the cache damaged) is rebuilt with a warning naming it."""
    directory = Path(directory)
    cache, index_file, key = _cache_paths(directory, resolution, cache_dir)
    memo_key = (str(directory.resolve()), resolution, key)
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    items, where = read_metadata(directory)
    sizes, mtimes = _stat_images(directory, items, where)
    empty = [int(i) for i in np.flatnonzero(sizes == 0)]  # the release lists one empty PNG
    remove_stale_temps(cache)  # a decode killed before it could remove its own temporary file
    _remove_unstamped_temps(cache)
    if cache.is_file() or index_file.is_file():
        images, index, problem = _read_cache(cache, index_file, directory, items, sizes, mtimes, resolution) \
            if index_file.is_file() else (None, None, "it has no index (written by an older version)")
        if problem is None:
            _warn_empty(directory, items, empty)
            labels = np.asarray([items[i][1] for i in np.flatnonzero(index["kept"])], np.int32)
            _MEMO[memo_key] = (images, labels)
            return images, labels
        warnings.warn(f"Pathfinder: the decoded cache {cache} does not match the images under {directory} "
                      f"({problem}); rebuilding it", stacklevel=2)
        _discard_cache(cache, index_file)
    _warn_empty(directory, items, empty)
    kept = np.flatnonzero(sizes > 0)
    if not len(kept):
        raise ValueError(f"{directory}: every image listed in its metadata is an empty file")
    labels = np.asarray([items[i][1] for i in kept], np.int32)
    workers = workers or default_workers()
    use_cache = writable(cache.parent)
    if not use_cache:
        warnings.warn(f"Pathfinder: {cache.parent} is not writable, so decoded images are not cached; set "
                      f"config.data.cache_dir to cache them elsewhere", stacklevel=2)
    paths = [items[i][0] for i in kept]
    chunk = max(1, min(2000, math.ceil(len(paths) / (4 * workers))))
    spans = [(s, paths[s:s + chunk]) for s in range(0, len(paths), chunk)]
    index = np.zeros(len(items), INDEX_DTYPE)
    index["size"], index["mtime_ns"], index["kept"] = sizes, mtimes, sizes > 0
    png_sums = np.zeros((len(paths), 32), np.uint8)
    pixel_sums = np.zeros((len(paths), 32), np.uint8)
    tmp = None
    if use_cache:
        tmp = make_temp(cache, suffix=".npy.tmp")
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), resolution, resolution)).flush()
        images = None
    else:
        images = np.empty((len(paths), resolution, resolution), np.uint8)

    def collect(s, arr, pngs, pixels):
        n = len(pngs) // 32
        if arr is not None:
            images[s:s + n] = arr
        png_sums[s:s + n] = np.frombuffer(pngs, np.uint8).reshape(n, 32)
        pixel_sums[s:s + n] = np.frombuffer(pixels, np.uint8).reshape(n, 32)

    try:
        with _bar(len(paths), f"decode pathfinder{resolution}/{directory.name}", progress) as bar:
            if workers == 1 or len(spans) <= 1:
                for s, ps in spans:
                    collect(*_decode_chunk(str(directory), ps, resolution, tmp, s))
                    bar.update(len(ps))
            else:
                with _pool(workers) as pool:
                    futures = {pool.submit(_decode_chunk, str(directory), ps, resolution, tmp, s): len(ps)
                               for s, ps in spans}
                    for fut in as_completed(futures):
                        collect(*fut.result())
                        bar.update(futures[fut])
        index["png"][kept], index["pixels"][kept] = png_sums, pixel_sums
        if use_cache:
            index_file.unlink(missing_ok=True)  # the index goes in last: a cache without one is never used
            os.chmod(tmp, 0o644)  # as readable as the images (mkstemp made it private)
            os.replace(tmp, cache)
            tmp = None
            atomic_write(index_file, lambda f: np.save(f, index))
            images = np.load(cache, mmap_mode="r")
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    _MEMO[memo_key] = (images, labels)
    return images, labels


def check_cache(directory, resolution: int, *, cache_dir=None, progress: bool = True) -> list[str]:
    """What ``prepare --verify`` does before recomputing the checksums: hash every PNG and every cached image and
    compare them with the digests recorded when the cache was made. Returns the PNGs whose bytes changed since
    (the source changed: named, one line each). A cache that no longer matches, because the PNGs changed or
    because the cache itself is damaged, is discarded with a warning naming it, and the next load rebuilds it;
    a damaged cache is never reported as a change of the source. No cache yet: nothing to compare, ``[]``."""
    directory = Path(directory)
    cache, index_file, key = _cache_paths(directory, resolution, cache_dir)
    for memo_key in [k for k in _MEMO if k[0] == str(directory.resolve()) and k[1] == resolution]:
        del _MEMO[memo_key]
    if not (cache.is_file() or index_file.is_file()):
        return []
    items, where = read_metadata(directory)
    sizes, mtimes = _stat_images(directory, items, where)
    try:
        index = np.load(index_file, allow_pickle=False)
        usable = index.dtype == INDEX_DTYPE and index.shape == (len(items),)
    except (OSError, ValueError, EOFError):
        usable = False
    if not usable:  # nothing to compare the PNGs with: the load rebuilds it (with its own warning)
        return []
    changed = []
    with _bar(len(items), f"verify PNGs pathfinder{resolution}/{directory.name}", progress) as bar:
        for i, (rel, _) in enumerate(items):
            data = (directory / rel).read_bytes()
            if bool(index["kept"][i]) != bool(data) or (data and hashlib.sha256(data).digest()
                                                         != index["png"][i].tobytes()):
                changed.append(f"{directory / rel} changed since the cache was made")
            bar.update(1)
    problem = f"{len(changed)} PNG(s) changed since it was made" if changed else None
    if problem is None:
        try:
            images = np.load(cache, mmap_mode="r")
            pixels = index["pixels"][index["kept"]]
            if images.shape != (len(pixels), resolution, resolution):
                problem = f"its array has shape {images.shape}, its index lists {len(pixels)} images"
            else:
                bad = [i for i in range(len(pixels))
                       if hashlib.sha256(np.ascontiguousarray(images[i]).tobytes()).digest() != pixels[i].tobytes()]
                if bad:
                    problem = (f"it is damaged: {len(bad)} decoded image(s) differ from what was decoded from their "
                               f"PNGs, which are unchanged")
            del images
        except (OSError, ValueError, EOFError) as e:
            problem = f"its array is unreadable ({type(e).__name__}: {e})"
    if problem is not None:
        warnings.warn(f"Pathfinder: the decoded cache {cache} does not match the images under {directory} "
                      f"({problem}); discarded, it is rebuilt now", stacklevel=2)
        _discard_cache(cache, index_file)
    return changed


def _warn_empty(directory: Path, items, empty) -> None:
    if empty:
        shown = ", ".join(items[i][0] for i in empty[:3]) + (", ..." if len(empty) > 3 else "")
        warnings.warn(f"Pathfinder: skipped {len(empty)} empty PNG file(s) under {directory} ({shown})",
                      stacklevel=3)


def split_indices(n: int, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """80/10/10 of a seeded permutation (val and test ``int(0.1 n)`` each), each split in increasing order."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = n_test = int(n * 0.1)
    n_train = n - n_val - n_test
    parts = {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}
    return {k: np.sort(v) for k, v in parts.items()}


class PixelSequences:
    """The images ``images[indices]`` as model inputs, converted when indexed: int32 tokens ``[n, R*R]`` or float32
    ``[n, R*R, 1]`` (``x / 255``, or ``2 x / 255 - 1`` with ``center``). Supports ``len``, ``shape``, ``dtype``,
    indexing with an int / slice / index array (what the batch pipeline does) and ``np.asarray``."""

    def __init__(self, images: np.ndarray, indices: np.ndarray, *, tokenize: bool, center: bool = False):
        self.images, self.indices = images, np.asarray(indices, np.int64)
        self.tokenize, self.center = tokenize, center
        length = images.shape[1] * images.shape[2]
        self.shape = (len(self.indices), length) if tokenize else (len(self.indices), length, 1)
        self.dtype = np.dtype(np.int32 if tokenize else np.float32)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx):
        single = np.ndim(idx) == 0 and not isinstance(idx, slice)
        rows = self.indices[np.atleast_1d(idx) if single else idx]
        order = np.argsort(rows, kind="stable")  # read the (memory-mapped) cache in file order
        pix = np.empty((len(rows),) + self.images.shape[1:], np.uint8)
        pix[order] = self.images[rows[order]]
        pix = pix.reshape(len(rows), -1)
        if self.tokenize:
            out = pix.astype(np.int32)
        else:
            out = pix.astype(np.float32)[..., None] / np.float32(255.0)
            if self.center:
                out = out * np.float32(2.0) - np.float32(1.0)
        return out[0] if single else out

    def __array__(self, dtype=None, copy=None):
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"PixelSequences(shape={self.shape}, dtype={self.dtype}, center={self.center})"


def pixel_range(center: bool) -> tuple[float, float]:
    """The continuous inputs of intensities 0 and 255."""
    return (-1.0, 1.0) if center else (0.0, 1.0)


def load_split(directory, split: str, resolution: int, *, tokenize: bool = False, center: bool = False,
               split_seed: int = SPLIT_SEED, workers: int = 0, cache_dir=None, progress: bool = True
               ) -> dict[str, object]:
    """``inputs`` (:class:`PixelSequences`), ``lengths`` (all ``R*R``) and ``labels`` of one split."""
    if split not in SPLITS:
        raise ValueError(f"unknown Pathfinder split {split!r}; expected one of {SPLITS}")
    images, labels = load_examples(directory, resolution, workers=workers, cache_dir=cache_dir, progress=progress)
    idx = split_indices(len(labels), split_seed)[split]
    if not len(idx):
        raise ValueError(f"{directory}: the {split} split is empty: {len(labels)} image(s) give train / val / test "
                         f"{', '.join(str(len(v)) for v in split_indices(len(labels), split_seed).values())} "
                         f"(80/10/10); every split needs at least 10 images in all")
    return {"inputs": PixelSequences(images, idx, tokenize=tokenize, center=center),
            "lengths": np.full(len(idx), resolution * resolution, np.int32), "labels": labels[idx]}


# ----------------------------------------------------------------------------------------------------- generating

def _metadata_row(batch: int, j: int, label: int, margin: int, p: gen.Params) -> str:
    return " ".join([f"imgs/{batch}", f"sample_{j}.png", str(j), str(label)] + p.metadata_fields(margin))


def _generate_chunk(out_dir: str, p: gen.Params, seed: int, start: int, stop: int, per_dir: int):
    """Worker: render images ``start:stop`` (one ``imgs/<k>`` directory), write their PNGs, return their rows and
    the SHA-256 of each PNG."""
    from PIL import Image

    rows, digests = [], []
    for i in range(start, stop):
        sample = gen.render(p, gen.image_rng(seed, p, i))
        k, j = divmod(i, per_dir)
        buf = io.BytesIO()
        Image.fromarray(sample.image).save(buf, format="PNG")  # uint8 [R, R]: 8-bit grayscale
        data = buf.getvalue()
        sub = Path(out_dir) / "imgs" / str(k)
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"sample_{j}.png").write_bytes(data)
        rows.append(_metadata_row(k, j, sample.label, sample.margin, p))
        digests.append(hashlib.sha256(data).hexdigest())
    return start, rows, digests


def write_set(out_dir, p: gen.Params, num_images: int, *, seed: int = 0, workers: int = 0,
              images_per_dir: int = IMAGES_PER_DIR, progress: bool = True) -> dict[str, str]:
    """Render ``num_images`` images into ``out_dir`` in the release layout. Resumable: a directory ``imgs/<k>`` is
    complete once ``metadata/<k>.npy`` exists (written last, atomically), and complete ones are kept. Image ``i``
    depends on (seed, parameters, i) only, so the bytes do not depend on ``workers``. Returns, per metadata file, a
    SHA-256 over its images' SHA-256s."""
    out = Path(out_dir)
    (out / "metadata").mkdir(parents=True, exist_ok=True)
    (out / "digests").mkdir(exist_ok=True)
    n_dirs = math.ceil(num_images / images_per_dir)
    digests: dict[str, str] = {}
    todo = []
    for k in range(n_dirs):
        lo, hi = k * images_per_dir, min((k + 1) * images_per_dir, num_images)
        meta = out / "metadata" / f"{k}.npy"
        done = out / "digests" / f"{k}.sha256"
        if meta.is_file() and done.is_file() and len(meta.read_text().splitlines()) == hi - lo:
            digests[meta.name] = done.read_text().strip()
        else:
            todo.append((k, lo, hi))
    workers = workers or default_workers()
    remaining = sum(hi - lo for _, lo, hi in todo)
    # small chunks: an image's cost is heavy-tailed (restarts), and big chunks leave a worker idle at the end
    chunk = max(1, min(25, math.ceil(remaining / (32 * workers))))
    jobs = [(k, s, min(s + chunk, hi)) for k, lo, hi in todo for s in range(lo, hi, chunk)]
    pending = {k: {"rows": {}, "digests": {}, "left": hi - lo} for k, lo, hi in todo}

    def collect(k, start, rows, sums):
        entry = pending[k]
        for n, (row, d) in enumerate(zip(rows, sums)):
            entry["rows"][start + n], entry["digests"][start + n] = row, d
        entry["left"] -= len(rows)
        if entry["left"] == 0:
            order = sorted(entry["rows"])
            digest = hashlib.sha256("".join(entry["digests"][i] for i in order).encode()).hexdigest()
            write_text_atomic(out / "digests" / f"{k}.sha256", digest + "\n")
            write_text_atomic(out / "metadata" / f"{k}.npy", "".join(entry["rows"][i] + "\n" for i in order))
            digests[f"{k}.npy"] = digest
            del pending[k]

    with _bar(remaining, f"pathfinder{p.resolution} cl{p.contour_length}", progress) as bar:
        if workers == 1 or len(jobs) <= 1:
            for k, s, e in jobs:
                _, rows, sums = _generate_chunk(str(out), p, seed, s, e, images_per_dir)
                collect(k, s, rows, sums)
                bar.update(e - s)
        else:
            with _pool(workers) as pool:
                futures = {pool.submit(_generate_chunk, str(out), p, seed, s, e, images_per_dir): (k, s, e)
                           for k, s, e in jobs}
                for fut in as_completed(futures):
                    k, s, e = futures[fut]
                    _, rows, sums = fut.result()
                    collect(k, s, rows, sums)
                    bar.update(e - s)
    return {name: digests[name] for name in sorted(digests, key=lambda n: int(n.split(".")[0]))}


def generated_root(data_dir, *, seed: int, num_images: int, num_distractor_snakes: int | None = None) -> Path:
    """``<data_dir>/pathfinder_generated/seed<seed>_n<num>[_d<distractors>]``: holds ``pathfinder{R}/<difficulty>``
    like the release, so ``--config.data.source=release --config.data.data_dir=<it>`` reads it too."""
    name = f"seed{seed}_n{num_images}"
    if num_distractor_snakes is not None and num_distractor_snakes >= 0:
        name += f"_d{num_distractor_snakes}"
    return Path(data_dir).expanduser() / "pathfinder_generated" / name


def ensure_generated(data_dir, *, resolution: int = 32, difficulty: str = "hard", num_images: int = 200_000,
                     seed: int = 0, workers: int = 0, num_distractor_snakes: int | None = None,
                     images_per_dir: int = IMAGES_PER_DIR, progress: bool = True) -> Path:
    """A generated set, made once and reused; returns its ``pathfinder{R}/<difficulty>`` directory.

    Written in ``.<difficulty>.incomplete`` beside the final directory (a rerun after a kill resumes there) and
    renamed into place when complete; ``manifest.json`` records the parameters and digests."""
    p = gen.params_for(resolution, difficulty, num_distractor_snakes)
    params = dict(_params_dict(p), seed=seed, num_images=num_images, images_per_dir=images_per_dir,
                  batch=gen.BATCH.get(resolution, 64), generator=gen.VERSION)
    parent = generated_root(data_dir, seed=seed, num_images=num_images,
                            num_distractor_snakes=num_distractor_snakes) / f"pathfinder{resolution}"
    final = parent / difficulty_dir(difficulty)
    manifest = final / "manifest.json"
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        if recorded.get("params") != json.loads(json.dumps(params)):
            raise ValueError(f"{manifest} records parameters {recorded.get('params')} but {params} were asked for; "
                             f"remove {final} to regenerate")
        return final
    work = parent / f".{final.name}.incomplete"
    work.mkdir(parents=True, exist_ok=True)
    stamp = work / "params.json"
    wanted = json.dumps(params, indent=2, sort_keys=True) + "\n"
    if stamp.is_file() and stamp.read_text() != wanted:  # an interrupted run with other parameters
        shutil.rmtree(work)
        work.mkdir(parents=True)
    write_text_atomic(stamp, wanted)
    digests = write_set(work, p, num_images, seed=seed, workers=workers, images_per_dir=images_per_dir,
                        progress=progress)
    stamp.unlink(missing_ok=True)
    shutil.rmtree(work / "digests", ignore_errors=True)  # the manifest holds them now
    write_text_atomic(work / "manifest.json", json.dumps(
        {"source": "lra.data.pathfinder_gen (Pathfinder generator reimplemented, see its docstring)",
         "params": params, "sha256_of_image_sha256s": digests}, indent=2) + "\n")
    publish_dir(work, final)
    return final


def _params_dict(p: gen.Params) -> dict:
    d = dataclasses.asdict(p)
    d["margins"] = list(d["margins"])
    return d


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Generate a Pathfinder set in the LRA release layout (--generate), or decode and cache a "
                    "release directory (without it).")
    ap.add_argument("--generate", action="store_true", help="render a new set with lra.data.pathfinder_gen")
    ap.add_argument("--resolution", type=int, default=32, choices=RESOLUTIONS)
    ap.add_argument("--difficulty", default="hard", help="easy | intermediate | hard (or a release directory name)")
    ap.add_argument("--num", type=int, default=200_000, help="images to generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num_distractor_snakes", type=int, default=-1, help="-1: the LRA setting")
    ap.add_argument("--out", "--data_dir", dest="out", default="./lra_data",
                    help="data directory (generated sets go to <out>/pathfinder_generated/...)")
    ap.add_argument("--workers", type=int, default=0, help="processes; 0 = all cores")
    ap.add_argument("--cache_dir", default="", help="where the decoded-image cache goes (default: beside the data)")
    args = ap.parse_args(argv)
    if args.generate:
        distractors = None if args.num_distractor_snakes < 0 else args.num_distractor_snakes
        d = ensure_generated(args.out, resolution=args.resolution, difficulty=args.difficulty, num_images=args.num,
                             seed=args.seed, workers=args.workers, num_distractor_snakes=distractors)
    else:
        d = find_dir(args.out, args.resolution, args.difficulty)
        images, labels = load_examples(d, args.resolution, workers=args.workers, cache_dir=args.cache_dir or None)
        print(f"{d}: {len(labels)} images, {labels.mean():.3f} positive", file=sys.stderr)
    print(d)


if __name__ == "__main__":
    main()
