"""The training loop: one loop for every task, model and objective; running it again on a workdir resumes.

``train_and_evaluate(config, workdir)`` runs (or resumes) one job; ``run(config, workdir)`` runs the two phases of
``config.pretrain`` when it is set. Everything else lives in one module per concern:

- :mod:`lra.config_checks`: every numeric field checked before any work.
- :mod:`lra.run_dir`: ``config.json`` (a rerun with another config is refused) and the one-run-per-workdir lock.
- :mod:`lra.optim`: the optimizer and its parameter groups.
- :mod:`lra.steps`: the state and the compiled train/eval steps, with the non-finite guard.
- :mod:`lra.evaluation`: exact evaluation of a split.
- :mod:`lra.checkpoints`: Orbax checkpoints (latest N + best), verified by checksums, with fallback.
- :mod:`lra.metrics`: ``metrics.jsonl`` (valid JSON) and TensorBoard.
- :mod:`lra.pretrained`: self-pretraining, then finetuning from its encoder.

Workdir layout::

    config.json            the resolved config of the run
    run.lock               held by the live run (process 0)
    metrics.jsonl          one JSON object per logged train window / evaluation
    tb/                    TensorBoard events
    checkpoints/<step>/    Orbax: the latest ``keep_checkpoints`` steps and the best by validation score
    damaged_checkpoints/   checkpoints that failed verification, moved aside (never deleted)
    final_eval.json        validation and test metrics of the best checkpoint, written at the end
    run_info.json          the device, parameter count and training wall-clock (summed over resumed sessions)

An interrupted run resumed with the same command ends exactly as an uninterrupted one, metrics included, for any
``log_every``/``eval_every``/``checkpoint_every``: a checkpoint carries the data iterator's position, the best score
and the partly filled train-metrics window.

**Non-finite steps.** A step whose loss or gradients are not finite is never applied (:mod:`lra.steps`), so no
checkpoint ever holds one. The loop counts consecutive such steps (reading the step's flags whenever it reads
metrics anyway, and at least every ``max_nonfinite_steps`` steps) and stops the run with :class:`NonFiniteTraining`
after ``config.max_nonfinite_steps`` of them in a row, naming the step, the last good checkpoint and the likely
causes. An evaluation with a non-finite loss never makes a checkpoint the best.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import models
from lra import checkpoints, config_checks, objectives, run_dir, sharding, tasks
from lra.checkpoints import DamagedCheckpoint, make_manager, restore_checkpoint, save_checkpoint  # noqa: F401
from lra.data import pipeline
from lra.data.files import as_path, write_text_atomic
from lra.data.prefetch import DevicePrefetcher
from lra.evaluation import EVAL_MASK_SEED, evaluate  # noqa: F401
from lra.metrics import MetricWriter, StepProfiler
from lra.optim import label_params, make_optimizer, make_schedule, param_label  # noqa: F401
from lra.pretrained import (check_pretraining_run, init_from_pretrained, phase_configs,  # noqa: F401
                            transfer_encoder)
from lra.run_dir import WorkdirLock, WorkdirLocked, write_config  # noqa: F401
from lra.steps import (TRANSIENT_COLLECTIONS, Steps, TrainState, dummy_batch, model_inputs,  # noqa: F401
                       residual_bytes)


class NonFiniteTraining(RuntimeError):
    """Too many consecutive train steps had a non-finite loss or gradient."""


def run(config, workdir: str | os.PathLike) -> dict[str, Any]:
    """One run, or with ``config.pretrain`` set two: ``workdir/pretrain`` (self-pretraining on the task's own
    training inputs) then ``workdir/finetune`` initialised from it. Running the same command again resumes
    whichever phase was interrupted (a finished pretraining phase, one with ``final_eval.json``, is not redone).
    ``workdir`` may be a URL (``gs://bucket/run``): it stays one (``epath``), it is not made a local directory."""
    workdir = as_path(workdir)
    config_checks.validate(config)
    if not config.get("pretrain"):
        return train_and_evaluate(config, workdir)
    if config.pretrain not in objectives.PRETRAINING:
        raise ValueError(f"unknown config.pretrain {config.pretrain!r}; expected one of {list(objectives.PRETRAINING)}")
    if config.init_from:
        raise ValueError("config.pretrain and config.init_from are both set: a two-phase run makes its own init")
    pre, fine = phase_configs(config)
    if not (workdir / "pretrain" / "final_eval.json").is_file():
        train_and_evaluate(pre, workdir / "pretrain")
    fine.init_from = str(workdir / "pretrain")
    return train_and_evaluate(fine, workdir / "finetune")


def load_data(task: tasks.TaskSpec) -> dict[str, dict[str, np.ndarray]]:
    """All splits of a task. Multi-process: process 0 prepares (e.g. generates) the data first, the others wait
    for it and then read the same files."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        if jax.process_index() == 0:
            data = {split: task.load(split) for split in tasks.SPLITS}
        multihost_utils.sync_global_devices("lra data prepared")
        if jax.process_index() == 0:
            return data
    return {split: task.load(split) for split in tasks.SPLITS}


def _lock(workdir: Path) -> WorkdirLock:
    """Process 0 takes the workdir's lock; every process learns whether it got it (so that none is left waiting)."""
    lock = WorkdirLock(workdir)
    error = None
    try:
        lock.acquire()
    except WorkdirLocked as e:
        error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not ok and error is None:
            error = WorkdirLocked(f"{workdir} is in use by another run (process 0 could not take its lock)")
    if error is not None:
        raise error
    return lock


class _FiniteWatch:
    """Counts consecutive non-finite train steps from the steps' flags, read in batches (no round trip per step)."""

    def __init__(self, limit: int, streak: int = 0, start: int = 0):
        self.limit, self.streak, self.start = limit, streak, start
        self.pending: list[tuple[int, Any]] = []

    def add(self, step: int, flag) -> None:
        self.pending.append((step, flag))

    def due(self) -> bool:
        return len(self.pending) >= self.limit

    def check(self) -> int | None:
        """Reads the pending flags; returns the step at which the streak reached the limit, if it did."""
        if not self.pending:
            return None
        flags = jax.device_get([f for _, f in self.pending])
        hit = None
        for (step, _), f in zip(self.pending, flags):
            if float(f) > 0:
                if self.streak == 0:
                    self.start = step
                self.streak += 1
                if self.streak >= self.limit and hit is None:
                    hit = step
            else:
                self.streak = 0
        self.pending.clear()
        return hit


def _nonfinite_error(config, step: int, watch: _FiniteWatch, last_good: str) -> NonFiniteTraining:
    opt = config.optimizer
    return NonFiniteTraining(
        f"training stopped at step {step}: {watch.streak} consecutive steps from step {watch.start} had a non-finite "
        f"loss or gradient (config.max_nonfinite_steps={config.max_nonfinite_steps}); none of them was applied. "
        f"Last good checkpoint: {last_good}. Likely causes: a learning rate too high for this model "
        f"(config.optimizer.lr={opt.lr}, ssm_lr={opt.ssm_lr}, warmup_steps={opt.warmup_steps}), no gradient "
        f"clipping (config.optimizer.grad_clip={opt.grad_clip}), overflow in reduced precision "
        f"(config.model.dtype={config.model.dtype!r}), or non-finite values in the input data.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Run (or resume) one job; returns the final metrics written to ``final_eval.json``."""
    workdir = as_path(workdir)
    if config.get("pretrain"):
        raise ValueError("config.pretrain is set: run both phases with lra.trainer.run (train.py does)")
    config_checks.validate(config)
    task = tasks.get_task(config)
    objective = objectives.get(config, task)
    if objective.name == "causal_lm" and not config.model.causal:
        raise ValueError("config.objective='causal_lm' needs a causal model (config.model.causal=True): a "
                         "bidirectional mixer would read the token it predicts; use 'masked_lm' for it")
    if config.init_from:
        check_pretraining_run(as_path(config.init_from))
    workdir.mkdir(parents=True, exist_ok=True)
    lock = _lock(workdir)
    try:
        return _train(config, workdir, task, objective)
    finally:
        lock.release()


def _train(config, workdir: Path, task: tasks.TaskSpec, objective: objectives.Objective) -> dict[str, Any]:
    write_config(config, workdir)
    is_main = jax.process_index() == 0
    data = load_data(task)

    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch_size(config.batch_size, mesh, "config.batch_size")
    sharding.check_batch_size(config.eval_batch_size, mesh, "config.eval_batch_size")
    model = models.build(config.model, objective.model_task, head=objective.head, num_outputs=objective.num_outputs)
    tx = make_optimizer(config.optimizer, config.num_train_steps)
    steps = Steps(model, objective, tx, mesh, config.grad_accum_steps)
    if steps.unsplit and is_main:
        print(f"partition rules: the model axis ({mesh.shape['model']}) does not divide these parameters, kept "
              f"replicated: {steps.unsplit}", flush=True)
    init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
    state = steps.init(init_rng)

    train_iter = pipeline.TrainIterator(data["train"], config.batch_size, seed=config.seed,
                                        process_index=jax.process_index(), process_count=jax.process_count())
    # batches placed on the devices with the step's input sharding, config.prefetch of them ahead (0: when asked)
    train_iter = DevicePrefetcher(train_iter, lambda b: sharding.shard_batch(b, mesh), config.get("prefetch", 2))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(train_iter.close)
        manager = make_manager(workdir / "checkpoints", config.keep_checkpoints)
        cleanup.callback(manager.close)
        writer = MetricWriter(workdir, is_main, config)
        cleanup.callback(writer.close)
        return _loop(config, workdir, data, mesh, steps, state, objective, train_iter, manager, writer, dropout_rng)


def _loop(config, workdir, data, mesh, steps, state, objective, train_iter, manager, writer, dropout_rng):
    is_main = jax.process_index() == 0
    # Checkpoints are chosen by validation accuracy when classifying, by validation loss when pretraining.
    score = (lambda m: -m["loss"]) if objective.pretraining else (lambda m: m["accuracy"])
    best_val = None  # best validation score so far (None: no finite evaluation yet)
    window, window_steps = None, 0  # train metric sums since the last log line, and how many steps they cover
    watch = _FiniteWatch(config.max_nonfinite_steps)
    last_good = "none (the initial parameters)"
    restored = None
    if manager.latest_step() is not None:
        restored = checkpoints.restore_newest_good(manager, state, workdir / "damaged_checkpoints")
    if restored is not None:
        state, meta = restored
        train_iter.set_state(meta["data"])
        best_val = meta["best_val_score"]
        if meta.get("window") is not None:
            window = {k: np.float32(v) for k, v in meta["window"].items()}
        window_steps = meta.get("window_steps", 0)
        watch.streak, watch.start = meta.get("nonfinite_streak", 0), meta.get("nonfinite_start", 0)
        last_good = str(checkpoints.step_dir(manager, int(state.step)))
        if is_main:
            print(f"Resumed from {last_good} at step {int(state.step)}", flush=True)
    elif config.init_from:
        state = init_from_pretrained(state, as_path(config.init_from))
        if is_main:
            print(f"Encoder initialised from the pretraining run {config.init_from}", flush=True)
    writer.truncate_after(int(state.step))

    n_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    # run_info.json: the machine and the training wall-clock, summed over sessions up to the last checkpoint
    info = run_dir.read_run_info(workdir)
    seconds_before, session_start = float(info.get("train_seconds", 0.0)) if restored else 0.0, time.perf_counter()
    info = {"device": run_dir.device_description(), "host": socket.gethostname(), "jax": jax.__version__,
            "num_params": int(n_params), "num_train_steps": config.num_train_steps, "finished": False,
            "train_seconds": seconds_before, "step": int(state.step)}

    def record_run_info(step, **extra):
        info.update(step=step, train_seconds=round(seconds_before + time.perf_counter() - session_start, 3), **extra)
        run_dir.write_run_info(workdir, info)
    if is_main:
        print(f"task={config.task} mixer={config.model.mixer} params={n_params:,} "
              f"train/val/test={[pipeline.num_examples(data[s]) for s in tasks.SPLITS]} mesh={dict(mesh.shape)}",
              flush=True)

    def check_finite(step):
        hit = watch.check()
        if hit is not None:
            raise _nonfinite_error(config, hit, watch, last_good)

    def checkpoint_meta():
        host_window = None if window is None else {k: float(v) for k, v in jax.device_get(window).items()}
        return {"data": train_iter.get_state(), "best_val_score": best_val, "window": host_window,
                "window_steps": window_steps, "nonfinite_streak": watch.streak, "nonfinite_start": watch.start}

    from tqdm.auto import tqdm
    start = int(state.step)
    bar = tqdm(total=config.num_train_steps, initial=start, disable=not (is_main and config.progress_bar),
               dynamic_ncols=True, desc="train")
    t0, n_seen = time.perf_counter(), 0
    profiler = StepProfiler(config.get("profile_steps"), workdir)
    for step in range(start + 1, config.num_train_steps + 1):
        batch = next(train_iter)  # already on the devices (lra.data.prefetch)
        profiler.before(step)
        state, sums = steps.train_step(state, batch, dropout_rng)
        profiler.after(step, state)
        watch.add(step, sums["nonfinite"])
        window = sums if window is None else jax.tree_util.tree_map(jnp.add, window, sums)
        window_steps += 1
        n_seen += config.batch_size
        last = step == config.num_train_steps
        is_log, is_eval, is_ckpt = (step % config.log_every == 0 or last, step % config.eval_every == 0 or last,
                                    step % config.checkpoint_every == 0 or last)
        if is_log:
            w = jax.device_get(window)
            m = objectives.summarize(w)
            applied = window_steps - float(w["nonfinite"])
            m = {"loss": m["loss"], "accuracy": m["accuracy"], "grad_norm": float(w["grad_norm"]) / max(applied, 1),
                 "aux_loss": float(w["aux_loss"]) / max(applied, 1)}
            if applied == 0:  # every step of the window was skipped: no value, not a misleading 0
                m = {k: float("nan") for k in m}
            m.update(nonfinite_steps=int(w["nonfinite"]), examples_per_s=n_seen / (time.perf_counter() - t0))
            writer.write(step, "train", m)
            bar.set_postfix(loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.3f}", ex_s=f"{m['examples_per_s']:.0f}")
            window, window_steps, t0, n_seen = None, 0, time.perf_counter(), 0
        if watch.due() or is_log or is_eval or is_ckpt:
            check_finite(step)
        new_best = False
        if is_eval:
            val = evaluate(steps, state, data["val"], config.eval_batch_size)
            # with the run's wall-clock so far (all sessions, as run_info.json): learning curves against time
            elapsed = round(seconds_before + time.perf_counter() - session_start, 3)
            writer.write(step, "val", {**val, "train_seconds": elapsed})
            if is_main:
                tqdm.write(f"step {step}: val loss {val['loss']:.4f} accuracy {val['accuracy']:.4f}")
            if math.isfinite(val["loss"]) and (best_val is None or score(val) > best_val):
                best_val, new_best = score(val), True
        if new_best or is_ckpt:
            save_checkpoint(manager, state, checkpoint_meta(), score=best_val if new_best else None)
            last_good = str(checkpoints.step_dir(manager, step))
            record_run_info(step)
        bar.update(1)
    bar.close()
    train_iter.close()  # no more batches made ahead during the final evaluation
    profiler.stop(state)  # a trace reaching past the last step ends there

    record_run_info(config.num_train_steps)
    result = final_evaluation(steps, state, manager, workdir, data, config, objective, best_val)
    record_run_info(config.num_train_steps, finished=True)
    writer.write(result["step"], "test", {k[5:]: v for k, v in result.items() if k.startswith("test_")})
    writer.close()
    if is_main:
        write_text_atomic(workdir / "final_eval.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
        what = (f"test loss {result['test_loss']:.4f}, accuracy {result['test_accuracy']:.4f}" if objective.pretraining
                else f"test accuracy {result['test_accuracy']:.4f}")
        print(f"{objective.name}: {what} (best-validation checkpoint, step {result['step']})", flush=True)
    return result


def final_evaluation(steps, state, manager, workdir, data, config, objective, best_val) -> dict[str, Any]:
    """Validation and test metrics of the best checkpoint (verified; a damaged one is reported, moved aside and the
    next best taken); of the final state when no checkpoint has a finite validation score."""
    while (step := checkpoints.best_step(manager)) is not None and manager.metrics(step) is not None:
        try:
            state, _ = restore_checkpoint(manager, state, step)
            break
        except DamagedCheckpoint as e:
            dst = checkpoints.quarantine(manager, step, workdir / "damaged_checkpoints")
            if jax.process_index() == 0:
                print(f"warning: {e}; moved to {dst}; taking the next best checkpoint", flush=True)
    key = "best_val_loss" if objective.pretraining else "best_val_accuracy"
    result = {"step": int(state.step), "objective": objective.name,
              key: None if best_val is None else abs(best_val)}
    for split in ("val", "test"):
        metrics = evaluate(steps, state, data[split], config.eval_batch_size)
        result.update({f"{split}_{k}": (v if math.isfinite(v) else None) for k, v in metrics.items()})
    return result


