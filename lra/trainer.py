"""Train, evaluate, checkpoint, log: one loop for every task, model and objective.

``train_and_evaluate(config, workdir)`` runs a whole job; running it again on the same workdir resumes from the
latest checkpoint (parameters, optimizer and mixer state, data iterator position, best validation score), so an
interrupted run ends exactly as an uninterrupted one would.

Workdir layout::

    config.json            the resolved config (a rerun with a different config is refused)
    metrics.jsonl          one JSON object per logged train interval / evaluation
    tb/                    TensorBoard events
    checkpoints/latest/    Orbax, the most recent checkpoint
    checkpoints/best/      Orbax, the best checkpoint by validation accuracy
    final_eval.json        test (and validation) metrics of the best checkpoint, written at the end

Train metrics are logged over windows of ``log_every`` steps; keep ``checkpoint_every`` a multiple of it for the
window after a resume to cover the same steps as in an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

import models
from lra import objectives, sharding, tasks
from lra.data import pipeline


# ----------------------------------------------------------------------------------------------------- optimizer

def param_label(path: tuple[str, ...]) -> str:
    """The optimizer group of a parameter, from its name (the last element of its path).

    ``ssm_*`` -> "ssm" (own learning rate, no weight decay); ``bias`` and ``scale`` (norms) and
    ``nd_*`` -> "no_decay"; everything else -> "default". This is the one place that decides; mixers opt in by naming.
    """
    name = path[-1]
    if name.startswith("ssm_"):
        return "ssm"
    if name in ("bias", "scale") or name.startswith("nd_"):
        return "no_decay"
    return "default"


def label_params(params) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, _: param_label(tuple(getattr(k, "key", str(k)) for k in path)), params)


def make_schedule(opt, lr: float, num_steps: int) -> optax.Schedule:
    warmup = min(opt.warmup_steps, num_steps)
    decay_steps = max(num_steps - warmup, 1)
    if opt.schedule == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=opt.final_lr_ratio)
    elif opt.schedule == "linear":
        decay = optax.linear_schedule(lr, lr * opt.final_lr_ratio, decay_steps)
    elif opt.schedule == "constant":
        decay = optax.constant_schedule(lr)
    else:
        raise ValueError(f"unknown config.optimizer.schedule {opt.schedule!r}; expected cosine, linear or constant")
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def make_optimizer(opt, num_steps: int) -> optax.GradientTransformation:
    """AdamW with warmup + decay and global-norm clipping; parameter groups by :func:`param_label`."""
    if opt.name != "adamw":
        raise ValueError(f"unknown config.optimizer.name {opt.name!r}; expected 'adamw'")

    def adamw(lr, wd):
        return optax.adamw(make_schedule(opt, lr, num_steps), b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=wd)

    groups = {
        "default": adamw(opt.lr, opt.weight_decay),
        "no_decay": adamw(opt.lr, 0.0),
        "ssm": adamw(opt.ssm_lr if opt.ssm_lr > 0 else opt.lr, 0.0),
    }
    chain = [optax.multi_transform(groups, label_params)]
    if opt.grad_clip > 0:
        chain.insert(0, optax.clip_by_global_norm(opt.grad_clip))
    return optax.chain(*chain)


# ----------------------------------------------------------------------------------------------------- state

# Collections a forward pass writes for the step that ran it, never kept in the state: ``losses`` (auxiliary losses
# sown by mixers, added to the task loss) and ``intermediates`` (sown for inspection).
TRANSIENT_COLLECTIONS = ("losses", "intermediates")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any  # non-parameter collections (e.g. batch_stats, routing centroids)


def model_inputs(task: tasks.TaskSpec, batch) -> tuple[tuple, dict]:
    """Positional and keyword arguments of the model for a batch (masks from lengths)."""
    def mask(inputs, lengths):
        return jnp.arange(inputs.shape[1])[None, :] < lengths[:, None]

    if task.paired:
        return ((batch["inputs1"], batch["inputs2"]),
                {"mask1": mask(batch["inputs1"], batch["lengths1"]), "mask2": mask(batch["inputs2"], batch["lengths2"])})
    return (batch["inputs"],), {"mask": mask(batch["inputs"], batch["lengths"])}


def dummy_batch(task: tasks.TaskSpec, batch_size: int = 1) -> dict[str, np.ndarray]:
    if task.vocab_size is not None:
        x = np.zeros((batch_size, task.seq_len), np.int32)
    else:
        x = np.zeros((batch_size, task.seq_len, task.input_channels), np.float32)
    lengths = np.full((batch_size,), task.seq_len, np.int32)
    if task.paired:
        return {"inputs1": x, "lengths1": lengths, "inputs2": x, "lengths2": lengths}
    return {"inputs": x, "lengths": lengths}


class Steps:
    """The compiled train and eval steps of one run, with explicit shardings over the mesh."""

    def __init__(self, model, task, tx, mesh, objective: Callable):
        self.model, self.task, self.tx, self.mesh, self.objective = model, task, tx, mesh, objective
        rep, data = sharding.replicated(mesh), sharding.data_sharding(mesh)
        self.train_step = jax.jit(self._train_step, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                                  donate_argnums=(0,))
        self.eval_step = jax.jit(self._eval_step, in_shardings=(rep, data), out_shardings=rep)

    def init(self, rng) -> TrainState:
        args, kwargs = model_inputs(self.task, dummy_batch(self.task))
        variables = jax.jit(lambda r: self.model.init({"params": r, "dropout": r}, *args, **kwargs),
                            out_shardings=sharding.replicated(self.mesh))(rng)
        variables = {k: v for k, v in variables.items() if k not in TRANSIENT_COLLECTIONS}
        params = variables.pop("params")
        opt_state = jax.jit(self.tx.init, out_shardings=sharding.replicated(self.mesh))(params)
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, model_state=variables)
        return jax.device_put(state, sharding.replicated(self.mesh))  # same placement as the steps' outputs

    def _apply(self, params, model_state, batch, *, train: bool, rng=None):
        """Returns (outputs, new model state, auxiliary loss). In training every state collection is mutable and
        the values sown into ``losses`` (already weighted, e.g. routing's commitment loss) sum to the aux loss."""
        args, kwargs = model_inputs(self.task, batch)
        variables = {"params": params, **model_state}
        if not train:
            return self.model.apply(variables, *args, **kwargs, deterministic=True), model_state, 0.0
        out, new_state = self.model.apply(variables, *args, **kwargs, deterministic=False, rngs={"dropout": rng},
                                          mutable=[*model_state, "losses"])
        new_state = dict(new_state)
        aux = sum((jnp.sum(v) for v in jax.tree_util.tree_leaves(new_state.pop("losses", {}))), jnp.float32(0.0))
        return out, new_state, aux

    def _train_step(self, state: TrainState, batch, base_rng):
        rng = jax.random.fold_in(base_rng, state.step)

        def loss_fn(params):
            logits, new_model_state, aux = self._apply(params, state.model_state, batch, train=True, rng=rng)
            loss, sums = self.objective(logits, batch["labels"])
            sums["aux_loss"] = aux
            return loss + aux, (sums, new_model_state)

        (_, (sums, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        sums["grad_norm"] = optax.tree.norm(grads)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                             model_state=flax.core.unfreeze(model_state)), sums

    def _eval_step(self, state: TrainState, batch):
        logits, _, _ = self._apply(state.params, state.model_state, batch, train=False)
        _, sums = self.objective(logits, batch["labels"], batch["weights"])
        return sums


def evaluate(steps: Steps, state: TrainState, arrays, batch_size: int) -> dict[str, float]:
    """Exact metrics over a whole split (every example once; padded examples weigh 0)."""
    total = None
    for batch in pipeline.eval_batches(arrays, batch_size, process_index=jax.process_index(),
                                       process_count=jax.process_count()):
        sums = jax.device_get(steps.eval_step(state, sharding.shard_batch(batch, steps.mesh)))
        sums = {k: np.float64(v) for k, v in sums.items()}
        total = sums if total is None else {k: total[k] + sums[k] for k in total}
    return objectives.summarize(total)


# ----------------------------------------------------------------------------------------------------- workdir

class MetricWriter:
    """JSON lines + TensorBoard, written by process 0 only."""

    def __init__(self, workdir: Path, enabled: bool):
        self.path = workdir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(str(workdir / "tb"))

    def truncate_after(self, step: int) -> None:
        """On resume: forget records of steps the restored checkpoint has not seen (they will be redone)."""
        if not (self.enabled and self.path.exists()):
            return
        keep = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, self.path)

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
        for k, v in metrics.items():
            self.tb.add_scalar(f"{split}/{k}", v, step)
        self.tb.flush()

    def close(self):
        if self.tb is not None:
            self.tb.close()


def config_to_dict(config) -> dict:
    return json.loads(config.to_json_best_effort()) if isinstance(config, ml_collections.ConfigDict) else config


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def has_checkpoint(workdir: Path) -> bool:
    latest = workdir / "checkpoints" / "latest"
    return latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())


def write_config(config, workdir: Path) -> None:
    """Write the resolved config; refuse to resume a checkpointed workdir whose config differs (naming the
    fields). A workdir without a checkpoint (a run that failed before its first one) takes the new config."""
    resolved = config_to_dict(config)
    path = workdir / "config.json"
    if path.exists() and has_checkpoint(workdir):
        old = _flatten(json.loads(path.read_text()))
        new = _flatten(resolved)
        diff = sorted(k for k in set(old) | set(new) if old.get(k, "<absent>") != new.get(k, "<absent>"))
        if diff:
            lines = ", ".join(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in diff)
            raise ValueError(f"{workdir} holds a run with another config ({lines}); use a new --workdir to start "
                             f"a different run, or the same config to resume this one")
        return
    if jax.process_index() == 0:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)


def checkpoint_manager(directory: Path) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False),
        item_names=("state", "meta"))


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState, meta: dict) -> None:
    step = int(jax.device_get(state.step))
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                 force=True)
    manager.wait_until_finished()


def restore_checkpoint(manager: ocp.CheckpointManager, target: TrainState, step: int | None = None):
    """Restore into the shapes, dtypes and shardings of ``target``; a structure mismatch is a clear error."""
    step = manager.latest_step() if step is None else step
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) if isinstance(x, jax.Array) else x,
        target)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                 meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"checkpoint {manager.directory}/{step} does not match the model of this config: {e}") from e
    return restored["state"], restored["meta"]


# ----------------------------------------------------------------------------------------------------- main loop

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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Run (or resume) one job; returns the final metrics written to ``final_eval.json``."""
    workdir = Path(workdir)
    if config.objective not in objectives.OBJECTIVES:
        raise ValueError(f"unknown config.objective {config.objective!r}; expected one of {sorted(objectives.OBJECTIVES)}")
    task = tasks.get_task(config)
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(config, workdir)
    is_main = jax.process_index() == 0
    data = load_data(task)

    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch_size(config.batch_size, mesh, "config.batch_size")
    sharding.check_batch_size(config.eval_batch_size, mesh, "config.eval_batch_size")
    model = models.build(config.model, task)
    tx = make_optimizer(config.optimizer, config.num_train_steps)
    steps = Steps(model, task, tx, mesh, objectives.OBJECTIVES[config.objective])
    init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
    state = steps.init(init_rng)

    train_iter = pipeline.TrainIterator(data["train"], config.batch_size, seed=config.seed,
                                        process_index=jax.process_index(), process_count=jax.process_count())
    latest = checkpoint_manager(workdir / "checkpoints" / "latest")
    best = checkpoint_manager(workdir / "checkpoints" / "best")
    writer = MetricWriter(workdir, is_main)
    best_val = -1.0
    if latest.latest_step() is not None:
        state, meta = restore_checkpoint(latest, state)
        train_iter.set_state(meta["data"])
        best_val = meta["best_val_accuracy"]
        writer.truncate_after(int(state.step))
        for step in best.all_steps():  # a best checkpoint newer than `latest` will be redone identically
            if step > int(state.step):
                best.delete(step)
        print(f"Resumed from {latest.directory} at step {int(state.step)}", flush=True)

    n_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    if is_main:
        print(f"task={config.task} mixer={config.model.mixer} params={n_params:,} "
              f"train/val/test={[pipeline.num_examples(data[s]) for s in tasks.SPLITS]} mesh={dict(mesh.shape)}",
              flush=True)

    def checkpoint_meta():
        return {"data": train_iter.get_state(), "best_val_accuracy": best_val}

    from tqdm.auto import tqdm
    start = int(state.step)
    bar = tqdm(total=config.num_train_steps, initial=start, disable=not (is_main and config.progress_bar),
               dynamic_ncols=True, desc="train")
    window, t0, n_seen = None, time.perf_counter(), 0
    for step in range(start + 1, config.num_train_steps + 1):
        batch = sharding.shard_batch(next(train_iter), mesh)
        state, sums = steps.train_step(state, batch, dropout_rng)
        window = sums if window is None else jax.tree_util.tree_map(jnp.add, window, sums)
        n_seen += config.batch_size
        if step % config.log_every == 0 or step == config.num_train_steps:
            window = jax.device_get(window)
            elapsed = time.perf_counter() - t0
            m = objectives.summarize(window)
            n_steps = n_seen // config.batch_size
            m = {"loss": m["loss"], "accuracy": m["accuracy"],
                 "grad_norm": float(window["grad_norm"]) / n_steps,
                 "aux_loss": float(window["aux_loss"]) / n_steps,
                 "examples_per_s": n_seen / elapsed}
            writer.write(step, "train", m)
            bar.set_postfix(loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.3f}", ex_s=f"{m['examples_per_s']:.0f}")
            window, t0, n_seen = None, time.perf_counter(), 0
        if step % config.eval_every == 0 or step == config.num_train_steps:
            val = evaluate(steps, state, data["val"], config.eval_batch_size)
            writer.write(step, "val", val)
            if is_main:
                tqdm.write(f"step {step}: val loss {val['loss']:.4f} accuracy {val['accuracy']:.4f}")
            if val["accuracy"] > best_val:
                best_val = val["accuracy"]
                save_checkpoint(best, state, checkpoint_meta())
        if step % config.checkpoint_every == 0 or step == config.num_train_steps:
            save_checkpoint(latest, state, checkpoint_meta())
        bar.update(1)
    bar.close()

    if best.latest_step() is not None:
        state, _ = restore_checkpoint(best, state)
    result = {"step": int(state.step), "best_val_accuracy": best_val}
    for split in ("val", "test"):
        result.update({f"{split}_{k}": v for k, v in evaluate(steps, state, data[split], config.eval_batch_size).items()})
    writer.write(int(state.step), "test", {k[5:]: v for k, v in result.items() if k.startswith("test_")})
    writer.close()
    if is_main:
        tmp = workdir / "final_eval.tmp"
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, workdir / "final_eval.json")
        print(f"test accuracy (best-validation checkpoint, step {result['step']}): {result['test_accuracy']:.4f}",
              flush=True)
    return result
