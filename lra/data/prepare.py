"""Prepare one LRA task for training: generate or convert it into its cached, loader-ready form, and record it.

    python -m lra.data.prepare --task=pathx --data_dir=./lra_data             # generate 200,000 Path-X images
    python -m lra.data.prepare --task=text --data_dir=/data/imdb              # parse and cache the IMDB archive
    python -m lra.data.prepare --task=image --download --data_dir=./lra_data   # fetch CIFAR-10 first, checked
    python -m lra.data.prepare --config=configs/lra_pathfinder.py --config.data.resolution=64 --workers=2

The task's data settings are those of its config (``configs/lra_<task>.py``, or ``--config=FILE[:ARG]``), with
``--config.data.<key>=<value>`` overrides as ``train.py`` takes them; an unknown key is an error naming it. Then
every split is loaded through :func:`lra.tasks.get_task`, exactly as training will load it, which is what does the
work and leaves the loader-ready form behind:

* ListOps, Pathfinder, Path-X with ``data.source=generate``: the set is generated (in a hidden ``.incomplete``
  directory, renamed into place when whole; a killed run resumes where it stopped);
* Pathfinder family: the PNGs are decoded once into one uint8 ``.npy`` that training memory-maps (Path-X: 2.6 GB on
  disk, read a batch at a time, never whole in RAM);
* Text and Retrieval: the parsed documents are cached as ``.npz`` (one byte buffer + offsets per part);
* Image: the CIFAR-10 batches are read (small enough to read on every run; nothing is cached).

``--download`` (text, image, retrieval) first fetches the source into ``data_dir`` (:mod:`lra.data.download`: the
official address, resumed after an interruption, size and SHA-256 checked where published); a source already there
is not fetched again.

Every cache is written beside its final name and renamed into place, so a killed run never leaves one that looks
complete. Last, a manifest is written (atomically) to ``<data_dir>/prepared/<task>-<digest>.json``, ``<digest>``
hashing the data settings: the task, the settings, the source it read (file or folder), the generator's own manifest
where the set was generated (its parameters, seed and checksums), and per split the number of examples, the label
counts and a SHA-256 over the model inputs and labels exactly as the loader returns them. A rerun with a manifest in
place only checks that the source is still there; ``--verify`` recomputes the checksums and fails naming the split
that changed. Before that it checks the derived caches against their source (Pathfinder: the decoded images against
the PNGs' digests recorded at decoding, and the PNGs against theirs): a cache that does not match is rebuilt, with
a warning naming it, and is never taken for a change of the source; a source that changed is named.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from lra.data.files import write_text_atomic

CONFIGS = {"listops": "lra_listops", "text": "lra_text", "retrieval": "lra_retrieval",  # task -> config name
           "image": "lra_image", "pathfinder": "lra_pathfinder", "pathx": "lra_pathx"}
MANIFEST_VERSION = 1
CHUNK = 1024  # examples hashed at a time: a Path-X split is never materialised whole


def load_config(spec: str):
    """``FILE[:ARG]`` or ``NAME[:ARG]`` -> the config its ``get_config(ARG)`` returns (unlocked, for overrides)."""
    from configs import base

    config = base.load_file(spec)
    config.unlock()
    return config


def _parse_value(old, text: str, key: str):
    if isinstance(old, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"config.{key} is a bool; got {text!r}")
    for kind in (int, float):
        if isinstance(old, kind):
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"config.{key} is {kind.__name__}; got {text!r}") from None
    return text


def apply_overrides(config, overrides: list[tuple[str, str]], where: str) -> None:
    """``[("data.resolution", "64"), ...]``: set each key, typed as the value it replaces; unknown keys raise."""
    for key, text in overrides:
        node, parts = config, key.split(".")
        for part in parts[:-1]:
            if part not in node:
                raise KeyError(f"unknown config key config.{key} in {where}")
            node = node[part]
        if parts[-1] not in node:
            known = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else ""
            raise KeyError(f"unknown config key config.{key} in {where} (known here: {known})")
        node[parts[-1]] = _parse_value(node[parts[-1]], text, key)


NOT_DATA = ("workers", "cache_dir")  # data settings that change how, not what


def data_digest(config) -> str:
    """A short hash of what decides the prepared data: the task and its data settings (but ``NOT_DATA``)."""
    data = {k: v for k, v in config.data.to_dict().items() if k not in NOT_DATA}
    blob = json.dumps({"task": config.task, "data": data}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def split_summary(arrays: dict, progress: bool = False, desc: str = "") -> dict:
    """Count, label counts and a SHA-256 over every array of one split (keys sorted, ``CHUNK`` rows at a time)."""
    from tqdm.auto import tqdm

    n = len(arrays["labels"])
    h = hashlib.sha256()
    for key in sorted(arrays):
        values = arrays[key]
        h.update(f"{key}:{np.dtype(values.dtype).str}:{tuple(values.shape)}".encode())
        for start in tqdm(range(0, n, CHUNK), desc=f"{desc} {key}", disable=not progress, file=sys.stderr,
                          leave=False):
            h.update(np.ascontiguousarray(values[start:start + CHUNK]).tobytes())
    labels, counts = np.unique(np.asarray(arrays["labels"]), return_counts=True)
    return {"examples": int(n), "label_counts": {str(int(k)): int(v) for k, v in zip(labels, counts)},
            "sha256": h.hexdigest()}


def check_caches(config, task: str, source, progress: bool = True) -> list[str]:
    """``--verify``'s first step: check the task's derived cache against its source, rebuilding a cache that does
    not match (with a warning naming it); returns the source files found changed since the cache was made. Text
    and Retrieval need nothing here: their ``.npz`` caches are CRC-checked on every read and rebuilt if damaged."""
    if task in ("pathfinder", "pathx") and source is not None:
        from lra.data import pathfinder
        return pathfinder.check_cache(source, config.data.resolution, cache_dir=config.data.cache_dir or None,
                                      progress=progress)
    return []


def prepare(config, *, config_file: str = "", verify: bool = False, progress: bool = True) -> Path:
    """Generate / convert / cache ``config``'s task and write its manifest; returns the manifest's path."""
    from lra import tasks

    spec = tasks.get_task(config)
    manifest_path = Path(config.data.data_dir).expanduser() / "prepared" / f"{spec.name}-{data_digest(config)}.json"
    source = Path(spec.source()) if spec.source is not None else None  # generates the set if the config says so
    if manifest_path.is_file() and not verify:
        return manifest_path
    t0 = time.perf_counter()
    source_changes = check_caches(config, spec.name, source, progress=progress) if verify else []
    splits = {}
    for split in tasks.SPLITS:
        splits[split] = split_summary(spec.load(split), progress=progress, desc=f"{spec.name}/{split}")
    if manifest_path.is_file():
        recorded = json.loads(manifest_path.read_text())
        for split, now in splits.items():
            was = recorded.get("splits", {}).get(split)
            if was != now:
                changed = f" ({'; '.join(source_changes[:5])})" if source_changes else ""
                raise ValueError(f"{manifest_path}: split {split!r} no longer matches its manifest (recorded {was}, "
                                 f"now {now}); the source data under {source} changed{changed}. If that change is "
                                 f"intended, remove the manifest and rerun to record the new data; otherwise "
                                 f"restore the source.")
        return manifest_path
    generator = None
    if source is not None and source.is_dir() and (source / "manifest.json").is_file():
        generator = json.loads((source / "manifest.json").read_text())
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(manifest_path, json.dumps({
        "version": MANIFEST_VERSION, "task": spec.name, "config_file": config_file,
        "data": config.data.to_dict(), "source": str(source.resolve()) if source else None,
        "generator": generator, "seq_len": spec.seq_len, "num_classes": spec.num_classes,
        "vocab_size": spec.vocab_size, "paired": spec.paired, "splits": splits,
        "prepared_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds_to_check": round(time.perf_counter() - t0, 1)}, indent=2) + "\n")
    return manifest_path


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = []
    rest = []
    for a in argv:
        if a.startswith("--config.") and "=" in a:
            key, value = a[len("--config."):].split("=", 1)
            overrides.append((key, value))
        else:
            rest.append(a)
    ap = argparse.ArgumentParser(prog="lra-prepare", description=__doc__.split("\n\n")[0],
                                 epilog="Any --config.<key>=<value> overrides that key of the task's config.")
    ap.add_argument("--task", choices=sorted(CONFIGS), help="the task (its config is configs/lra_<task>.py)")
    ap.add_argument("--config", help="a config file or name instead, FILE[:ARG] or NAME[:ARG] as train.py takes it")
    ap.add_argument("--data_dir", help="= --config.data.data_dir")
    ap.add_argument("--cache_dir", help="= --config.data.cache_dir (tasks that cache)")
    ap.add_argument("--workers", help="= --config.data.workers (Pathfinder: processes; 0 = every core)")
    ap.add_argument("--verify", action="store_true", help="recompute the checksums of a prepared task")
    ap.add_argument("--download", action="store_true",
                    help="text, image, retrieval: first fetch the source into data_dir (checked, resumable)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars while checksumming")
    args = ap.parse_args(rest)
    if not args.config and not args.task:
        ap.error("give --task (or --config)")
    spec = args.config or CONFIGS[args.task]  # a name: the installed config (configs.resolve)
    try:
        config = load_config(spec)
        if args.task and config.task != args.task:
            raise ValueError(f"--task={args.task} but {spec} is a config for task {config.task!r}")
        shorthand = [(f"data.{k}", v) for k, v in (("data_dir", args.data_dir), ("cache_dir", args.cache_dir),
                                                   ("workers", args.workers)) if v is not None]
        apply_overrides(config, shorthand + overrides, spec)
        if args.download:
            from lra.data import download
            try:
                download.download_task(config.task, config.data.data_dir, progress=not args.quiet)
            except download.DownloadError as e:
                raise ValueError(str(e)) from e
        path = prepare(config, config_file=spec, verify=args.verify, progress=not args.quiet)
    except (FileNotFoundError, KeyError, ValueError) as e:
        sys.exit(f"error: {e.args[0] if isinstance(e, KeyError) else e}")
    manifest = json.loads(path.read_text())
    counts = ", ".join(f"{k} {v['examples']}" for k, v in manifest["splits"].items())
    print(f"{manifest['task']}: {counts} examples from {manifest['source']}\nmanifest: {path}")


if __name__ == "__main__":
    main()
