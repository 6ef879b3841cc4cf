"""A finished (or running) run directory, read back: its config, its trained model, its evaluation.

- ``load_config(workdir)``: the run's resolved config (``config.json``) as a locked ConfigDict.
- ``load_run(workdir, checkpoint="best")``: one call for analysis: the model, its variables (parameters and state
  collections, ready for ``model.apply``), the run's config, the step, plus the compiled steps used in training.
- ``evaluate_run(workdir, checkpoint, split, overrides)``: what ``python evaluate.py`` does; on the run's own data it
  reproduces ``final_eval.json`` exactly (same checkpoint, same batches, same compiled evaluation).

Only settings that cannot change the model may be overridden when reading a run back (``EVAL_OVERRIDABLE``): where
the data are, which source, the evaluation batch size, the mesh. Anything else is refused, naming the field.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections

import models
from lra import checkpoints, objectives, sharding, tasks
from lra.evaluation import evaluate
from lra.optim import make_optimizer
from lra.data.files import as_path
from lra.steps import Steps, TrainState

EVAL_OVERRIDABLE = ("data.data_dir", "data.source", "data.cache_dir", "data.workers", "eval_batch_size", "mesh.data",
                    "mesh.model", "progress_bar")


def load_config(workdir) -> ml_collections.ConfigDict:
    path = as_path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a run directory (train.py writes config.json "
                                f"when a run starts)")
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    config.lock()
    return config


def _parse_like(old, text: str):
    if isinstance(old, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if isinstance(old, int):
        return int(text)
    if isinstance(old, float):
        return float(text)
    return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """``config`` with ``{"data.data_dir": ..., ...}`` applied; a field outside ``EVAL_OVERRIDABLE`` is refused
    (it would change the model or what the checkpoint means), naming it. String values are parsed as the field's
    type."""
    config = config.copy_and_resolve_references()
    for key, value in overrides.items():
        if key not in EVAL_OVERRIDABLE:
            raise ValueError(f"config.{key} cannot be overridden when evaluating a trained run: it may change the "
                             f"model or its inputs; only {', '.join('config.' + k for k in EVAL_OVERRIDABLE)} may")
        node = config
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        if last not in node:
            raise ValueError(f"config.{key}: the run's config has no such field")
        node[last] = _parse_like(node[last], value) if isinstance(value, str) else value
    return config


@dataclasses.dataclass
class LoadedRun:
    """A trained run read back: ``model.apply(variables, inputs, mask=..., deterministic=True)`` gives its outputs."""
    config: ml_collections.ConfigDict
    model: Any
    variables: dict
    step: int
    checkpoint: str  # the checkpoint directory it came from
    task: tasks.TaskSpec
    objective: objectives.Objective
    steps: Steps
    state: TrainState


def load_run(workdir, checkpoint: str = "best", overrides: dict[str, Any] | None = None) -> LoadedRun:
    """The model of the run in ``workdir`` with the weights of its ``best`` (by validation score) or ``latest``
    checkpoint, verified by its checksums; ``overrides`` as in :func:`apply_overrides`."""
    if checkpoint not in ("best", "latest"):
        raise ValueError(f"checkpoint must be 'best' or 'latest', got {checkpoint!r}")
    workdir = as_path(workdir)
    config = apply_overrides(load_config(workdir), overrides or {})
    task = tasks.get_task(config)
    objective = objectives.get(config, task)
    model = models.build(config.model, objective.model_task, head=objective.head, num_outputs=objective.num_outputs)
    mesh = sharding.make_mesh(config.mesh)
    steps = Steps(model, objective, make_optimizer(config.optimizer, config.num_train_steps), mesh,
                  config.grad_accum_steps)
    manager = checkpoints.make_manager(workdir / "checkpoints", read_only=True)
    step = checkpoints.best_step(manager) if checkpoint == "best" else manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {workdir / 'checkpoints'}")
    state, _ = checkpoints.restore_checkpoint(manager, steps.init(jax.random.key(0)), step)
    variables = {"params": state.params, **state.model_state}
    return LoadedRun(config=config, model=model, variables=variables, step=int(state.step),
                     checkpoint=str(checkpoints.step_dir(manager, step)), task=task, objective=objective, steps=steps,
                     state=state)


def evaluate_run(workdir, checkpoint: str = "best", split: str = "test",
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint of a run on one split; writes ``eval_<checkpoint>_<split>.json`` into the run directory
    (process 0, written aside and renamed) and returns what it wrote."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    run = load_run(workdir, checkpoint, overrides)
    metrics = evaluate(run.steps, run.state, run.task.load(split), run.config.eval_batch_size)
    result = {"checkpoint": checkpoint, "checkpoint_dir": run.checkpoint, "step": run.step, "split": split,
              "objective": run.objective.name, **{f"{split}_{k}": v for k, v in metrics.items()},
              "overrides": dict(overrides or {})}
    if jax.process_index() == 0:
        from lra.data.files import write_text_atomic
        write_text_atomic(as_path(workdir) / f"eval_{checkpoint}_{split}.json", json.dumps(result, indent=2) + "\n")
    return result


def count_params(config) -> int:
    """The number of trainable parameters of the model ``config`` builds (shapes only: nothing is computed)."""
    from lra.steps import dummy_batch, model_inputs
    task = tasks.get_task(config)
    objective = objectives.get(config, task)
    model = models.build(config.model, objective.model_task, head=objective.head, num_outputs=objective.num_outputs)
    args, kwargs = model_inputs(dummy_batch(objective.model_task))
    key = jax.random.key(0)
    shapes = jax.eval_shape(lambda: model.init({"params": key, "dropout": key}, *args, **kwargs))
    return int(sum(x.size for x in jax.tree_util.tree_leaves(shapes["params"])))
