"""LRA Image: grayscale CIFAR-10 as sequences of 1,024 pixels, 10 classes.

Sources, under ``data_dir`` (one is enough; looked for in this order):

1. ``cifar-10-batches-bin/`` (unpacked ``cifar-10-binary.tar.gz``, https://www.cs.toronto.edu/~kriz/cifar.html):
   ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``, each a run of 3,073-byte records: one label
   byte (0-9), then the 1,024 red, 1,024 green and 1,024 blue values of a 32 x 32 image, row-major. This is what TFDS
   ``cifar10`` (the official LRA pipeline's source) is built from.
2. ``cifar-10-binary.tar.gz`` itself, read in place, front to back to the end of its gzip stream (a damaged
   archive, its gzip trailer included, is an error naming it). ``python -m lra.data.prepare --task=image
   --download`` fetches and checks it (:mod:`lra.data.download`).
3. ``cifar-10-batches-py/`` (unpacked ``cifar-10-python.tar.gz``): ``data_batch_1`` .. ``data_batch_5``,
   ``test_batch``, Python-2 pickles of ``{b"data": uint8 [N, 3072] (the same R, G, B planes), b"labels": [N ints],
   ...}``. They are read through :class:`RestrictedUnpickler`, which resolves only the NumPy globals such files
   reference (array reconstruction, ``ndarray``, ``dtype``) and raises ``pickle.UnpicklingError`` naming any other
   global, so a crafted pickle cannot run code.
4. ``cifar-10-python.tar.gz`` itself.

``data_dir`` may also be one of the two folders itself. Both archives give identical arrays.

Grayscale: TensorFlow's ``tf.image.rgb_to_grayscale`` on uint8 images, as the official pipeline applies it:
``x / 255`` in float32, ``g = 0.2989 R + 0.5870 G + 0.1140 B``, then back to uint8 as ``convert_image_dtype`` does,
``trunc(g * 255.5)`` (computed here in float32 in the same order; a tie within float32 rounding of an integer may
fall the other way in TF's matmul). PIL's ``convert("L")`` (S4's torchvision pipeline) rounds
``(299 R + 587 G + 114 B) / 1000`` instead: the two differ by at most one level (on about a quarter of random
pixels), a difference tests check.

Splits (official: TFDS ``train[:90%]``, ``train[90%:]``, ``test``): train = the first 45,000 of the 50,000 training
images in file order (``data_batch_1`` .. ``data_batch_5``), val = the last 5,000 (``data_batch_5``), test = the
10,000 of ``test_batch``. TFDS serves records in its own shuffled order, so its 5,000 validation images are a
different random 10% (not reproducible without TFDS); the test split is the same. A split left empty (a cut-down
set too small for a validation image) is an error naming the source.

Inputs (``tokenize``): ``True`` -> int32 tokens ``[N, 1024]`` = the gray level 0-255 itself, vocabulary 256 (as the
official pipeline; no id is reserved for padding: every sequence is full, ``lengths`` = 1,024, and the mask, not the
id, marks padding). ``False`` -> float32 ``[N, 1024, 1]``, ``(x / 255 - MEAN) / STD`` with S4's constants
``MEAN = 122.6 / 255``, ``STD = 61.0 / 255`` (the mean and std of CIFAR-10 gray levels); ``PIXEL_RANGE`` gives the
values of levels 0 and 255.
"""
from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np

from lra.data.files import iter_tar, require_local

SEQ_LEN, NUM_CLASSES, VOCAB_SIZE, SIDE = 1024, 10, 256, 32
SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.1
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale
MEAN, STD = 122.6 / 255, 61.0 / 255  # S4's Normalize for grayscale CIFAR-10
PIXEL_RANGE = ((0.0 - MEAN) / STD, (1.0 - MEAN) / STD)  # continuous inputs of levels 0 and 255
RECORD = 1 + 3 * SEQ_LEN
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
FOLDERS = {"bin": "cifar-10-batches-bin", "py": "cifar-10-batches-py"}
ARCHIVES = {"bin": "cifar-10-binary.tar.gz", "py": "cifar-10-python.tar.gz"}
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


# ----------------------------------------------------------------------------------------------------- grayscale

def to_gray(rgb: np.ndarray) -> np.ndarray:
    """``[N, 3072]`` uint8 (R, G, B planes) -> ``[N, 1024]`` uint8 gray levels, TF's ``rgb_to_grayscale``."""
    planes = rgb.reshape(len(rgb), 3, SEQ_LEN).astype(np.float32) * np.float32(1.0 / 255.0)
    w = [np.float32(x) for x in GRAY_WEIGHTS]
    gray = planes[:, 0] * w[0] + planes[:, 1] * w[1] + planes[:, 2] * w[2]
    return (gray * np.float32(255.5)).astype(np.uint8)  # float -> uint8 truncates, as TF's cast


# ----------------------------------------------------------------------------------------------------- readers

def parse_bin(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Records of a binary batch -> (``[N, 3072]`` uint8 RGB planes, ``[N]`` int32 labels)."""
    arr = np.frombuffer(raw, np.uint8)
    if arr.size == 0 or arr.size % RECORD:
        raise ValueError(f"{where}: {arr.size} bytes is not a whole number of {RECORD}-byte CIFAR-10 records")
    records = arr.reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int32)
    if labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise ValueError(f"{where}: record {bad} has label {labels[bad]}, not 0-9 (not a CIFAR-10 batch?)")
    return records[:, 1:].copy(), labels


def _multiarray():
    try:
        from numpy._core import multiarray  # NumPy 2 (numpy.core is a deprecated alias of it)
    except ImportError:  # NumPy 1
        from numpy.core import multiarray
    return multiarray


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10's Python batches and nothing else. The real files reference exactly
    ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``; this also admits the same names
    under NumPy 2's ``numpy._core.multiarray`` and ``_codecs.encode`` (how Python 3 pickles ``bytes`` at protocol
    2), and refuses every other global with a ``pickle.UnpicklingError`` naming it, before anything is called."""

    ALLOWED = {
        **{(m, n): n for m in ("numpy.core.multiarray", "numpy._core.multiarray")
           for n in ("_reconstruct", "ndarray", "dtype")},
        ("numpy", "ndarray"): "ndarray",
        ("numpy", "dtype"): "dtype",
        ("_codecs", "encode"): "encode",
    }

    def find_class(self, module, name):
        what = self.ALLOWED.get((module, name))
        if what is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: a CIFAR-10 batch holds only NumPy arrays")
        if what == "_reconstruct":
            return _multiarray()._reconstruct
        if what == "encode":
            return codecs.encode
        return {"ndarray": np.ndarray, "dtype": np.dtype}[what]


def parse_py(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A Python batch (pickle) -> (``[N, 3072]`` uint8 RGB planes, ``[N]`` int32 labels)."""
    try:
        batch = RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(f"{where}: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{where}: not a CIFAR-10 Python batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise ValueError(f"{where}: expected a dict, got {type(batch).__name__}")
    get = lambda key: batch.get(key.encode(), batch.get(key))  # noqa: E731 (bytes keys; str keys if re-pickled)
    data, labels = get("data"), get("labels")
    if data is None or labels is None:
        raise ValueError(f"{where}: no 'data' and 'labels' entries (keys: {sorted(map(repr, batch))})")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SEQ_LEN or labels.shape != (len(data),):
        raise ValueError(f"{where}: data {data.dtype}{list(data.shape)} with {labels.shape} labels are not CIFAR-10 "
                         f"records (expected uint8 [N, 3072] and N labels)")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{where}: labels outside 0-9")
    return data, labels.astype(np.int32)


def find_source(data_dir) -> tuple[str, Path]:
    """``(kind, path)``: kind ``"bin"`` or ``"py"``, path a folder or a ``.tar.gz`` (order: module docstring)."""
    root = require_local(data_dir, "config.data.data_dir").expanduser()
    for kind in ("bin", "py"):
        if root.name == FOLDERS[kind] and root.is_dir():
            return kind, root
    looked = []
    for kind in ("bin", "py"):
        for path in (root / FOLDERS[kind], root / ARCHIVES[kind]):
            looked.append(path)
            if path.is_dir() if path.name == FOLDERS[kind] else path.is_file():
                return kind, path
    raise FileNotFoundError(
        f"no CIFAR-10 under {root}: looked for {', '.join(map(str, looked))}; `python -m lra.data.prepare "
        f"--task=image --download --data_dir={root}` fetches and checks it (or download {URL}, or the Python "
        f"version, cifar-10-python.tar.gz, into {root} yourself; unpacking it is optional)")


def read_batches(data_dir, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """RGB planes and labels of the named batches (e.g. ``TRAIN_BATCHES``), concatenated in that order."""
    kind, source = find_source(data_dir)
    suffix, parse = (".bin", parse_bin) if kind == "bin" else ("", parse_py)
    raws = {}
    if source.is_dir():
        for name in names:
            path = source / (name + suffix)
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing from {source} (CIFAR-10 has {', '.join(TRAIN_BATCHES)} "
                                        f"and test_batch{suffix or ''}); download {URL} again")
            raws[name] = (path.read_bytes(), str(path))
    else:
        wanted = {f"{FOLDERS[kind]}/{name}{suffix}": name for name in names}
        try:
            for member, f in iter_tar(source):  # to the end of the gzip stream: its trailer is checked too
                name = wanted.get(member.name.removeprefix("./"))
                if name is not None and f is not None:
                    raws[name] = (f.read(), f"{source}:{member.name}")
        except ValueError as e:
            raise ValueError(f"{e}; download {URL} again (python -m lra.data.prepare --task=image --download)") \
                from e
        missing = [m for m, name in wanted.items() if name not in raws]
        if missing:
            raise FileNotFoundError(f"{source} lacks {', '.join(missing)}; download {URL} again")
    parts = [parse(*raws[name]) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_split(data_dir, split: str, *, tokenize: bool = True) -> dict[str, np.ndarray]:
    """One split: ``inputs`` int32 ``[N, 1024]`` (tokens) or float32 ``[N, 1024, 1]``, ``lengths`` (all 1,024),
    ``labels`` int32 ``[N]``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rgb, labels = read_batches(data_dir, TEST_BATCHES if split == "test" else TRAIN_BATCHES)
    if split != "test":
        n = len(rgb)
        cut = int(round(n * (1 - VAL_FRACTION)))  # 45,000 of 50,000
        rgb, labels = (rgb[:cut], labels[:cut]) if split == "train" else (rgb[cut:], labels[cut:])
        if not len(rgb):
            raise ValueError(f"{find_source(data_dir)[1]}: the {split} split is empty ({n} training image(s), "
                             f"{cut} for train and the rest for val)")
    gray = np.concatenate([to_gray(rgb[a:a + 5000]) for a in range(0, len(rgb), 5000)]) if len(rgb) else \
        np.zeros((0, SEQ_LEN), np.uint8)
    if tokenize:
        inputs = gray.astype(np.int32)
    else:
        inputs = ((gray.astype(np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD))[..., None]
    return {"inputs": inputs, "lengths": np.full(len(gray), SEQ_LEN, np.int32), "labels": labels}
