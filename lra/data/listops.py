"""ListOps (LRA): nested MIN / MAX / MED / SM expressions over digits, 10 classes.

Format (the official release ``listops-1000/basic_{train,val,test}.tsv``): tab-separated, header ``Source\\tTarget``,
CRLF line ends (Python's ``csv`` excel dialect). ``Source`` renders every operator node as a left-nested chain,
``( ( ( [MAX 2 ) 9 ) ] )`` = MAX(2, 9); ``Target`` is the value, one digit.

Generator: the LRA one (``lra_benchmarks/data/listops.py``), reimplemented. A node at depth d < max_depth is a digit
with probability 0.75, else an operator drawn uniformly with ``randint(2, max_args)`` children; at max_depth it is a
digit. The length counts digits, operators and ``]`` (not parentheses); trees with ``min_length < length <
max_length`` are kept, duplicates dropped, and train / val / test are consecutive slices. The original deduplicates
in a Python ``set`` whose order depends on hash randomisation; here the first occurrence order is kept, so a seed
gives byte-identical files. Randomness: ``random.Random(seed)``.

Vocabulary (fixed, documented; the official one depends on Python set order): id 0 ``<pad>``, 1-10 the digits
``0``-``9``, 11-14 ``[MIN [MAX [MED [SM``, 15 ``]`` (the official pipeline's ``X``), 16 ``<mask>`` (reserved for
masked pretraining). Parentheses are dropped, as in the official pipeline.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from lra.data.files import publish_dir, require_local, write_text_atomic

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
VOCAB = ("<pad>",) + tuple(str(d) for d in range(10)) + OPERATORS + ("]", "<mask>")
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}
PAD_ID, MASK_ID, VOCAB_SIZE = 0, TOKEN_ID["<mask>"], len(VOCAB)
SPLITS = ("train", "val", "test")
HEADER = ("Source", "Target")


# ----------------------------------------------------------------------------------------------------- values

def apply_operator(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        return int(np.median(args))  # even count: mean of the middle pair, truncated
    if op == "[SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def evaluate(source: str) -> int:
    """The value of a rendered expression, parsed from its tokens with a stack (independent of the generator)."""
    stack: list[tuple[str, list[int]]] = []
    value = None
    for tok in source.replace("(", " ").replace(")", " ").split():
        if tok in OPERATORS:
            stack.append((tok, []))
        elif tok == "]":
            if not stack:
                raise ValueError(f"unbalanced ']' in {source!r}")
            op, args = stack.pop()
            value = apply_operator(op, args)
            if stack:
                stack[-1][1].append(value)
        elif tok.isdigit() and len(tok) == 1:
            if stack:
                stack[-1][1].append(int(tok))
            else:
                value = int(tok)
        else:
            raise ValueError(f"unknown ListOps token {tok!r} in {source!r}")
    if stack or value is None:
        raise ValueError(f"incomplete ListOps expression {source!r}")
    return value


# ----------------------------------------------------------------------------------------------------- generator

class _TooLong(Exception):
    pass


def _draw(rng: random.Random, max_depth: int, max_args: int, budget: int):
    """One random tree as (rendered text, value, length); abandons it once its length reaches ``budget``."""
    length = 0

    def node(depth):
        nonlocal length
        r = rng.random() if depth < max_depth else 1.0
        if r > 0.25:
            length += 1
            if length >= budget:
                raise _TooLong
            d = rng.randint(0, 9)
            return str(d), d
        op = rng.choice(OPERATORS)
        n_children = rng.randint(2, max_args)
        length += 2  # the operator and its closing ']'
        if length >= budget:
            raise _TooLong
        text, values = op, []
        for _ in range(n_children):
            child_text, child_value = node(depth + 1)
            text = f"( {text} {child_text} )"
            values.append(child_value)
        return f"( {text} ] )", apply_operator(op, values)

    text, value = node(1)
    return text, value, length


def generate(num_examples: int, *, seed: int, max_depth: int = 10, max_args: int = 10, min_length: int = 500,
             max_length: int = 2000, progress: bool = True) -> list[tuple[str, int]]:
    """``num_examples`` unique (source, target) rows with ``min_length < length < max_length``."""
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    rows: dict[str, int] = {}
    with tqdm(total=num_examples, desc="ListOps", unit="tree", disable=not progress, file=sys.stderr) as bar:
        while len(rows) < num_examples:
            try:
                text, value, length = _draw(rng, max_depth, max_args, max_length)
            except _TooLong:
                continue
            if length > min_length and text not in rows:
                rows[text] = value
                bar.update(1)
    return list(rows.items())


# ----------------------------------------------------------------------------------------------------- files

def write_tsv(path: str | os.PathLike, rows) -> None:
    """The official format (header, tab, CRLF), written to a temporary file and renamed into place."""
    path = Path(path)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, delimiter="\t")  # excel dialect: \r\n line ends
    writer.writerow(HEADER)
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def read_tsv(path: str | os.PathLike) -> list[tuple[str, int]]:
    """Rows of a ListOps TSV (UTF-8). A malformed row, a row that is not UTF-8, an empty file and a file with no
    rows after its header are ValueErrors naming the file (and the 1-based line)."""
    path = Path(path)
    rows = []
    lineno = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte {raw[e.start:e.start + 1]!r} at column "
                                 f"{e.start + 1})") from None
            fields = line.split("\t")
            if lineno == 1:
                if tuple(fields) != HEADER:
                    raise ValueError(f"{path}:1: expected the header 'Source<TAB>Target', got {line[:80]!r}")
                continue
            if not line:
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}:{lineno}: expected 2 tab-separated fields, got {len(fields)}")
            source, target = fields
            if not (target.isdigit() and len(target) == 1):
                raise ValueError(f"{path}:{lineno}: target must be one digit 0-9, got {target!r}")
            try:
                tokenize(source)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            rows.append((source, int(target)))
    if lineno == 0:
        raise ValueError(f"{path}: empty file (0 bytes); expected the header 'Source<TAB>Target' and one row per "
                         f"example")
    if not rows:
        raise ValueError(f"{path}: no examples, only the header (every split needs at least one row)")
    return rows


def tokenize(source: str) -> list[int]:
    """Token ids of a rendered expression (parentheses dropped)."""
    ids = []
    for tok in source.replace("(", " ").replace(")", " ").split():
        if tok not in TOKEN_ID or tok in ("<pad>", "<mask>"):
            raise ValueError(f"unknown ListOps token {tok!r}")
        ids.append(TOKEN_ID[tok])
    return ids


def encode(rows, seq_len: int) -> dict[str, np.ndarray]:
    """``inputs`` int32 [N, seq_len] (0-padded, truncated like the official pipeline), ``lengths``, ``labels``."""
    inputs = np.zeros((len(rows), seq_len), np.int32)
    lengths = np.zeros((len(rows),), np.int32)
    labels = np.zeros((len(rows),), np.int32)
    for i, (source, target) in enumerate(rows):
        ids = tokenize(source)[:seq_len]
        inputs[i, :len(ids)] = ids
        lengths[i] = len(ids)
        labels[i] = target
    return {"inputs": inputs, "lengths": lengths, "labels": labels}


def find_release_dir(root: str | os.PathLike) -> Path:
    """The directory holding ``basic_{train,val,test}.tsv``: ``root`` itself, ``root/listops-1000``, or
    ``root/lra_release/listops-1000`` (the tarball's extra level)."""
    root = require_local(root, "config.data.data_dir").expanduser()
    for cand in (root, root / "listops-1000", root / "lra_release" / "listops-1000"):
        if all((cand / f"basic_{s}.tsv").is_file() for s in SPLITS):
            return cand
    raise FileNotFoundError(
        f"no ListOps data under {root}: expected {root / 'listops-1000'}/basic_{{train,val,test}}.tsv (the official "
        f"LRA release, lra_release/listops-1000/), or generate the data instead with "
        f"`python -m lra.data.listops --data_dir=DIR` (or --config.data.source=generate, the default)")


def load_split(directory: str | os.PathLike, split: str, seq_len: int) -> dict[str, np.ndarray]:
    if split not in SPLITS:
        raise ValueError(f"unknown ListOps split {split!r}; expected one of {SPLITS}")
    return encode(read_tsv(find_release_dir(directory) / f"basic_{split}.tsv"), seq_len)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_generated(data_dir: str | os.PathLike, *, seed: int = 0, num_train: int = 96_000, num_val: int = 2_000,
                     num_test: int = 2_000, max_depth: int = 10, max_args: int = 10, min_length: int = 500,
                     max_length: int = 2000, progress: bool = True) -> Path:
    """A generated set under ``<data_dir>/listops_generated/<name>/``, made once and reused.

    The set is written to a temporary sibling directory and renamed into place when complete, so a killed run
    never leaves a directory that looks finished; ``manifest.json`` records the parameters and file checksums.
    """
    params = dict(seed=seed, num_train=num_train, num_val=num_val, num_test=num_test, max_depth=max_depth,
                  max_args=max_args, min_length=min_length, max_length=max_length)
    name = (f"seed{seed}_n{num_train}-{num_val}-{num_test}_len{min_length}-{max_length}"
            f"_depth{max_depth}_args{max_args}")
    parent = require_local(data_dir, "config.data.data_dir").expanduser() / "listops_generated"
    final = parent / name
    manifest = final / "manifest.json"
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        if recorded.get("params") != params:
            raise ValueError(f"{manifest} records parameters {recorded.get('params')} but {params} were asked for; "
                             f"remove {final} to regenerate")
        return final
    parent.mkdir(parents=True, exist_ok=True)
    rows = generate(num_train + num_val + num_test, progress=progress, **{k: v for k, v in params.items()
                                                                           if k.startswith(("seed", "max_", "min_"))})
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.incomplete-"))
    try:
        bounds = {"train": (0, num_train), "val": (num_train, num_train + num_val),
                  "test": (num_train + num_val, num_train + num_val + num_test)}
        files = {}
        for split, (a, b) in bounds.items():
            write_tsv(tmp / f"basic_{split}.tsv", rows[a:b])
            files[f"basic_{split}.tsv"] = _sha256(tmp / f"basic_{split}.tsv")
        (tmp / "manifest.json").write_text(json.dumps(
            {"source": "lra.data.listops.generate (LRA ListOps generator, first-occurrence dedup)", "params": params,
             "vocab": list(VOCAB), "sha256": files}, indent=2) + "\n")
        publish_dir(tmp, final)  # if another process finished the same set first, its copy is kept
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def main(argv=None):
    ap = argparse.ArgumentParser(description="Generate a ListOps set in the official LRA format.")
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num_train", type=int, default=96_000)
    ap.add_argument("--num_val", type=int, default=2_000)
    ap.add_argument("--num_test", type=int, default=2_000)
    ap.add_argument("--max_depth", type=int, default=10)
    ap.add_argument("--max_args", type=int, default=10)
    ap.add_argument("--min_length", type=int, default=500)
    ap.add_argument("--max_length", type=int, default=2000)
    args = vars(ap.parse_args(argv))
    print(ensure_generated(args.pop("data_dir"), **args))


if __name__ == "__main__":
    main()
