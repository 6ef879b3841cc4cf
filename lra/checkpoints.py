"""Checkpoints of a run: one Orbax ``CheckpointManager`` over ``<workdir>/checkpoints/<step>/``, every checkpoint
verified before it is trusted.

- **What is kept**: the latest ``keep`` checkpoints (at least two, so a damaged newest one has a predecessor) and the
  best one by validation score (accuracy when classifying, minus the loss when pretraining), which is saved with that
  score as its metric. One manager, two Orbax preservation policies (``LatestN`` and ``BestN``).
- **Checksums**: after a save has finished, process 0 writes ``lra_checksums.json`` into the step directory: the size
  and SHA-256 of every file of the checkpoint. A checkpoint without it (a save cut short) or with a file that is
  missing, of another size or of another digest is *damaged*.
- **Restore**: :func:`restore_newest_good` tries the newest checkpoint first; a damaged one is reported by name (the
  file and what is wrong with it), moved aside to ``<workdir>/damaged_checkpoints/`` (nothing is deleted) and the
  next older one is tried. A checkpoint whose files are intact but whose structure differs from the model is a
  config/model mismatch, and only then is the error about the config.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from lra.data.files import as_path, file_size, is_local, write_text_atomic

CHECKSUMS = "lra_checksums.json"


class _QuietUnscoredSaves(logging.Filter):
    """Orbax warns on every save without metrics when a best metric is tracked; here most saves are unscored
    (the latest-N ones) by design."""

    def filter(self, record):
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietUnscoredSaves())


class DamagedCheckpoint(Exception):
    """A checkpoint whose files do not match the checksums written when it was saved."""


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def make_manager(directory, keep: int = 2, *, read_only: bool = False) -> ocp.CheckpointManager:
    """The manager of ``directory``: keeps the latest ``keep`` steps and the best-scoring one."""
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m["score"], reverse=False, n=1,
                                      keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        create=not read_only, read_only=read_only, enable_async_checkpointing=False, preservation_policy=policy,
        best_fn=lambda m: m["score"], best_mode="max", keep_checkpoints_without_metrics=True)
    directory = Path(directory).absolute() if is_local(directory) else as_path(directory)  # gs://... stays a URL
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))


def step_dir(manager: ocp.CheckpointManager, step: int) -> Path:
    return as_path(str(manager.directory)) / str(step)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(directory: Path) -> list[Path]:
    out = []  # listed level by level (iterdir): the same on a local disk and an object store
    for p in directory.iterdir():
        if p.is_dir():
            out += _files(p)
        elif p.name != CHECKSUMS:
            out.append(p)
    return sorted(out, key=str)


def write_checksums(directory: Path) -> None:
    """Record size and SHA-256 of every file of a finished checkpoint (written aside, then renamed)."""
    files = {str(p.relative_to(directory)): {"size": file_size(p), "sha256": _digest(p)}
             for p in _files(directory)}
    write_text_atomic(directory / CHECKSUMS, json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")


def verify(directory: Path) -> list[str]:
    """What is wrong with the checkpoint in ``directory`` (an empty list when every file matches its checksum)."""
    manifest = directory / CHECKSUMS
    if not manifest.is_file():
        return [f"{manifest.name} is missing (the save did not finish, or the checkpoint predates checksums)"]
    try:
        expected = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as e:
        return [f"{manifest.name} is unreadable ({e})"]
    problems = []
    for rel, want in sorted(expected.items()):
        p = directory / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif file_size(p) != want["size"]:
            problems.append(f"{rel}: {file_size(p)} bytes, {want['size']} when saved")
        elif _digest(p) != want["sha256"]:
            problems.append(f"{rel}: SHA-256 differs from the one recorded when saved")
    present = {str(p.relative_to(directory)) for p in _files(directory)}
    problems += [f"{rel}: not part of the checkpoint when saved" for rel in sorted(present - set(expected))]
    return problems


def save_checkpoint(manager: ocp.CheckpointManager, state, meta: dict, score: float | None = None) -> None:
    """Save ``state`` and the JSON ``meta`` at the state's step (all processes together), then its checksums.
    ``score`` (finite) makes it a candidate for the best checkpoint."""
    step = int(jax.device_get(state.step))
    metrics = {"score": float(score)} if score is not None else None
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                 metrics=metrics, force=True)
    manager.wait_until_finished()
    if jax.process_index() == 0:
        write_checksums(step_dir(manager, step))
    _sync(f"lra checksums {step}")


def abstract_like(target):
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) if isinstance(x, jax.Array) else x,
        target)


def restore_checkpoint(manager: ocp.CheckpointManager, target, step: int | None = None) -> tuple[Any, dict]:
    """Verify, then restore step ``step`` (default: the latest) into the shapes, dtypes and shardings of ``target``.
    :class:`DamagedCheckpoint` names the damaged files; a structure mismatch is a ValueError about the model."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    directory = step_dir(manager, step)
    problems = verify(directory)
    if problems:
        raise DamagedCheckpoint(f"checkpoint {directory} is damaged: " + "; ".join(problems))
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_like(target)),
                                                                 meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"checkpoint {directory} does not match the model of this config: {e}") from e
    return restored["state"], restored["meta"]


def restore_raw(directory, step: int | None = None) -> tuple[Any, dict, int]:
    """A verified checkpoint of another run (e.g. a pretraining run) as plain arrays, without a target:
    ``(state tree, meta, step)``; ``step`` defaults to the best-scoring checkpoint, else the latest."""
    manager = make_manager(directory, read_only=True)
    if step is None:
        step = best_step(manager)
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    problems = verify(step_dir(manager, step))
    if problems:
        raise DamagedCheckpoint(f"checkpoint {step_dir(manager, step)} is damaged: " + "; ".join(problems))
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                             meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"], step


def restore_best(directory, target) -> tuple[Any, dict]:
    """The best checkpoint of the run whose checkpoints are in ``directory`` (``<workdir>/checkpoints``), verified
    and restored into ``target``'s shapes and shardings: ``(state, meta)``."""
    manager = make_manager(directory, read_only=True)
    step = best_step(manager)
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    return restore_checkpoint(manager, target, step)


def best_step(manager: ocp.CheckpointManager) -> int | None:
    """The step of the best-scoring checkpoint (one saved with a score); the latest step if none has a score."""
    scores = {s: m["score"] for s in manager.all_steps() if (m := manager.metrics(s)) is not None}
    if not scores:
        return manager.latest_step()
    return max(scores, key=lambda s: (scores[s], -s))


def quarantine(manager: ocp.CheckpointManager, step: int, damaged_root: Path) -> Path:
    """Move a damaged checkpoint out of the manager's directory (process 0), so that it is neither restored nor
    overwritten; returns where it went."""
    src = step_dir(manager, step)
    dst = damaged_root / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0:
        damaged_root.mkdir(parents=True, exist_ok=True)
        n = 0
        while dst.exists():
            n += 1
            dst = damaged_root / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
        if is_local(src):
            shutil.move(str(src), str(dst))
        else:  # an object store moves object by object (copy, then delete): not atomic, but nothing is lost
            src.rename(dst)
    _sync(f"lra quarantine {step}")
    manager.reload()
    return dst


def restore_newest_good(manager: ocp.CheckpointManager, target, damaged_root: Path) -> tuple[Any, dict] | None:
    """The newest checkpoint that passes verification, restored into ``target``; each damaged one on the way is
    reported (a warning naming it and its damaged files) and moved to ``damaged_root``. None when there is no
    checkpoint left (the run starts from the beginning)."""
    while (step := manager.latest_step()) is not None:
        try:
            return restore_checkpoint(manager, target, step)
        except DamagedCheckpoint as e:
            dst = quarantine(manager, step, damaged_root)
            older = manager.latest_step()
            then = f"falling back to step {older}" if older is not None else "no older checkpoint: starting afresh"
            warnings.warn(f"{e}; moved to {dst}; {then}", stacklevel=2)
            if jax.process_index() == 0:
                print(f"warning: {e}; moved to {dst}; {then}", flush=True)
    return None
