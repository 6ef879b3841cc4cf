"""LRA Retrieval: pairs of ACL Anthology Network (AAN) papers, does one cite the other? 2 classes.

Files: ``tsv_data/new_aan_pairs.{train,eval,test}.tsv`` of the LRA release
(https://storage.googleapis.com/long-range-arena/lra_release.gz, a gzipped tar that unpacks to
``lra_release/lra_release/tsv_data/``). ``data_dir`` is the release's inner ``lra_release/`` folder, the folder
above it (the tarball's extra ``lra_release/`` level), the folder the tarball was unpacked into, or ``tsv_data/``
itself. Splits: ``train``, ``val`` = the ``eval`` file, ``test``. ``python -m lra.data.prepare --task=retrieval
--download`` fetches the release and extracts only these three files (:mod:`lra.data.download`).

Format (the official pipeline's ``make_csv_dataset`` call: tab-delimited, no header, no quote handling): one pair
per ``\\n``-terminated line (a trailing ``\\r`` is dropped, blank lines are skipped), exactly 5 tab-separated
fields ``label id1 id2 text1 text2``. Labels ``1``, ``0``, ``1.0`` or ``0.0`` (the official code reads a float and
casts it to int); anything else, or another field count, is a ValueError naming the file and line. Ids (ACL
Anthology ids such as ``P02-1040``) are not used.

Texts: in the release the fields look like Python bytes literals, ``b'...'`` or ``b"..."`` with backslash escapes
(``\\n``, ``\\xe2\\x80\\x93``, ``\\\\``, ``\\'``). With ``decode_literals=True`` (default) a field that is exactly one
such literal (checked with a regular expression: ASCII only, the opening ``b`` and quote, escapes, no unescaped
closing quote before the end) is decoded with ``ast.literal_eval`` (a literal parser, never ``eval``) into the bytes
it denotes; any other field is taken as it is (its raw bytes, i.e. UTF-8 text). ``decode_literals=False`` keeps every
field as written, which is what the official pipeline (and S4) fed the model: the literal's characters, escapes and
all. Unverified: that every release field is such a literal, and what its decoded bytes were before escaping.

Encoding: each document as in Text (byte ``b`` -> id ``b + 1``, 0 = padding, vocabulary 257), truncated to
``seq_len`` bytes (4,000 in LRA's ``matching/configs/base_match_config.py``; the official code first cuts each text
to 10,000 bytes, which changes nothing at 4,000) and padded to it. The model encodes both documents with one shared
encoder. Parsed, truncated documents are cached per file and settings as ``aan-<split>-<key>.npz`` in ``cache_dir``
(default: the ``tsv_data/`` folder), written atomically (see :mod:`lra.data.text`); ``<key>`` hashes the file's
name, size and modification time, ``seq_len`` and ``decode_literals``. A cache that is unreadable (truncated,
damaged) or inconsistent is rebuilt with a warning naming it.
"""
from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

import numpy as np

from lra.data.files import require_local
from lra.data.text import ByteSequences, Documents, cached, check_documents

NUM_CLASSES, VOCAB_SIZE = 2, 257
SPLITS = ("train", "val", "test")
FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
LABELS = {b"0": 0, b"1": 1, b"0.0": 0, b"1.0": 1}
URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
CACHE_VERSION = 1
# exactly one bytes literal: b, a quote, then (runs of characters that are neither that quote nor a backslash, or a
# backslash and any one character), then the same quote. Possessive quantifiers: linear time on 100 kB fields.
_BYTES_LITERAL = re.compile(rb"""b(?:'(?:[^'\\\n]++|\\.)*+'|"(?:[^"\\\n]++|\\.)*+")""", re.S)


def decode_text(field: bytes, decode_literals: bool = True) -> bytes:
    """A TSV text field -> the document's bytes: a bytes literal is parsed, anything else kept as it is."""
    if decode_literals and field.isascii() and _BYTES_LITERAL.fullmatch(field):
        try:
            value = ast.literal_eval(field.decode("ascii"))
        except (SyntaxError, ValueError):  # e.g. an invalid \x escape: not a literal after all
            return field
        if isinstance(value, bytes):
            return value
    return field


def find_release_dir(data_dir) -> Path:
    """The folder holding ``tsv_data/`` (see the module docstring for what ``data_dir`` may be)."""
    root = require_local(data_dir, "config.data.data_dir").expanduser()
    if root.name == "tsv_data" and (root / FILES["train"]).is_file():
        return root.parent
    looked = [root, root / "lra_release", root / "lra_release" / "lra_release"]
    for d in looked:
        if (d / "tsv_data").is_dir():
            return d
    raise FileNotFoundError(
        f"no AAN pairs (tsv_data/new_aan_pairs.*.tsv) under {root}: looked for "
        f"{', '.join(str(d / 'tsv_data') for d in looked)}; `python -m lra.data.prepare --task=retrieval "
        f"--download --data_dir={root}` fetches the LRA release ({URL}) and extracts only these files, or unpack "
        f"it (tar xzf lra_release.gz) there yourself, or point config.data.data_dir at its lra_release/ folder")


def read_tsv(path, decode_literals: bool = True) -> tuple[list[bytes], list[bytes], np.ndarray]:
    """``(text1s, text2s, labels)`` of one AAN file, texts decoded (see :func:`decode_text`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the LRA release ({URL}) has tsv_data/{path.name}")
    docs1, docs2, labels = [], [], []
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip(b"\n").rstrip(b"\r")
            if not line:
                continue
            fields = line.split(b"\t")
            if len(fields) != 5:
                raise ValueError(f"{path}:{lineno}: expected 5 tab-separated fields (label id1 id2 text1 text2), "
                                 f"got {len(fields)}")
            if fields[0] not in LABELS:
                raise ValueError(f"{path}:{lineno}: label {fields[0].decode('utf-8', 'replace')!r} is not one of "
                                 f"1, 0, 1.0, 0.0")
            labels.append(LABELS[fields[0]])
            docs1.append(decode_text(fields[3], decode_literals))
            docs2.append(decode_text(fields[4], decode_literals))
    if not labels:
        raise ValueError(f"{path}: no pairs in the file")
    return docs1, docs2, np.asarray(labels, np.int32)


def load_split(data_dir, split: str, *, seq_len: int = 4000, decode_literals: bool = True, cache_dir=None,
               cache: bool = True) -> dict:
    """One split: ``inputs1``/``inputs2`` (:class:`~lra.data.text.ByteSequences`, int32 ``[N, seq_len]`` when
    indexed), ``lengths1``/``lengths2``, ``labels``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    folder = find_release_dir(data_dir) / "tsv_data"
    path = folder / FILES[split]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the LRA release ({URL}) has tsv_data/{FILES[split]}")

    def build():
        docs1, docs2, labels = read_tsv(path, decode_literals)
        a, b = Documents.pack([d[:seq_len] for d in docs1]), Documents.pack([d[:seq_len] for d in docs2])
        return {"data1": a.data, "offsets1": a.offsets, "data2": b.data, "offsets2": b.offsets, "labels": labels}

    if cache:
        st = path.stat()
        key = hashlib.sha256(repr([CACHE_VERSION, path.name, st.st_size, st.st_mtime_ns, seq_len,
                                   decode_literals]).encode()).hexdigest()[:16]
        where = require_local(cache_dir, "config.data.cache_dir").expanduser() if cache_dir else folder
        def check(arrays):
            problem = check_documents(arrays, ("data1", "offsets1"), ("data2", "offsets2"))
            if problem is None and not (len(arrays.get("labels", ())) == len(arrays["offsets1"]) - 1
                                        == len(arrays["offsets2"]) - 1):
                problem = "labels and pairs differ in number"
            return problem

        arrays = cached(where / f"aan-{split}-{key}.npz", build, "AAN", check)
    else:
        arrays = build()
    inputs1 = ByteSequences(Documents(arrays["data1"], arrays["offsets1"]), seq_len)
    inputs2 = ByteSequences(Documents(arrays["data2"], arrays["offsets2"]), seq_len)
    return {"inputs1": inputs1, "lengths1": inputs1.lengths, "inputs2": inputs2, "lengths2": inputs2.lengths,
            "labels": arrays["labels"]}
