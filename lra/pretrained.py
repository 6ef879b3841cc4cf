"""Self-pretraining, then finetuning: a pretraining run's encoder initialises a finetuning run (``config.init_from``),
and ``run`` chains the two phases of ``config.pretrain``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from lra import checkpoints
from lra.run_dir import has_checkpoint
from lra.steps import TrainState


def check_pretraining_run(source: Path) -> None:
    """Fail before any work if ``config.init_from`` is not a pretraining run's workdir."""
    if not (source / "config.json").is_file():
        raise ValueError(f"config.init_from={str(source)!r}: {source / 'config.json'} not found (expected the "
                         f"workdir of a pretraining run)")
    if not has_checkpoint(source):
        raise ValueError(f"config.init_from={str(source)!r}: no checkpoint under {source / 'checkpoints'} (expected "
                         f"the workdir of a finished pretraining run)")


def _flat(tree) -> dict[tuple[str, ...], Any]:
    return {tuple(str(getattr(k, "key", k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflat_like(target, flat: dict) -> Any:
    paths = [tuple(str(getattr(k, "key", k)) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(target)[0]]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(target), [flat[p] for p in paths])


# The input layers a masked-LM pretraining run widens by one: the <mask> token's embedding row, the mask-indicator
# input column. Finetuning drops that last row.
WIDENED_INPUTS = (("embedding", "embed", "embedding"), ("embedding", "input_proj", "kernel"))


def transfer_encoder(target: dict, source: dict, what: str) -> dict:
    """``target``'s leaves with every ``encoder`` leaf replaced by ``source``'s (same path; a widened input layer
    loses its extra last row); every other leaf (the new head) is kept. A missing, extra or differently shaped
    encoder leaf is an error that lists them all."""
    tgt, src = _flat(target), _flat(source)
    enc = lambda flat: {p: v for p, v in flat.items() if p and p[0] == "encoder"}
    t_enc, s_enc = enc(tgt), enc(src)
    # A classifier with a CLS token (pooling "cls") has what pretraining never saw: the token itself (kept fresh, like
    # the head) and one more learned position; the pretrained positions then shift by one, behind the CLS token's.
    cls = ("encoder", "embedding", "cls")
    missing = sorted(set(t_enc) - set(s_enc) - {cls})
    extra = sorted(set(s_enc) - set(t_enc))
    out, wrong = dict(tgt), []
    for p in sorted(set(t_enc) & set(s_enc)):
        value, want = np.asarray(s_enc[p]), t_enc[p].shape
        if p[1:] in WIDENED_INPUTS and value.shape[1:] == want[1:] and value.shape[0] == want[0] + 1:
            value = value[:-1]
        if (cls in t_enc and p[1:] == ("embedding", "pos_embedding") and value.shape[1:] == want[1:]
                and value.shape[0] + 1 == want[0]):
            value = np.concatenate([np.asarray(t_enc[p])[:1], value], axis=0)
        if value.shape != want:
            wrong.append(f"{'/'.join(p)}: pretrained {value.shape}, this model {want}")
            continue
        out[p] = jax.device_put(value.astype(t_enc[p].dtype), t_enc[p].sharding)
    if missing or extra or wrong:
        lines = ([f"missing in the checkpoint: {'/'.join(p)}" for p in missing]
                 + [f"not in this model: {'/'.join(p)}" for p in extra] + [f"shape differs: {w}" for w in wrong])
        raise ValueError(f"the pretrained {what} do not match this model's encoder:\n  " + "\n  ".join(lines))
    return _unflat_like(target, out)


def init_from_pretrained(state: TrainState, source: Path) -> TrainState:
    """The encoder's parameters and state collections (BatchNorm statistics, routing centroids) from the
    pretraining run in ``source``; the head stays freshly initialised, the optimizer state fresh."""
    directory = source / "checkpoints"
    pre, _, step = checkpoints.restore_raw(directory)  # the best checkpoint (lowest validation loss), verified
    directory = directory / str(step)
    params = transfer_encoder(state.params, pre["params"], f"parameters of {directory}")
    model_state = {}
    for name, coll in state.model_state.items():
        if name not in pre.get("model_state", {}):
            raise ValueError(f"the pretraining run {source} has no {name!r} collection, which this model keeps")
        model_state[name] = transfer_encoder(coll, pre["model_state"][name], f"{name!r} state of {directory}")
    return state.replace(params=params, model_state=model_state)


def phase_configs(config) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """The pretraining and finetuning configs of a two-phase run (``config.pretrain`` set): pretraining trains
    ``config.pretraining.num_train_steps`` steps (0: as many as finetuning) at ``config.pretraining.lr`` (0: the
    finetuning lr) with the objective ``config.pretrain``; finetuning classifies from its encoder."""
    pre, fine = config.copy_and_resolve_references(), config.copy_and_resolve_references()
    for c in (pre, fine):
        c.unlock()
        c.pretrain = ""
    pre.objective = config.pretrain
    pre.init_from = ""
    pre.num_train_steps = config.pretraining.num_train_steps or config.num_train_steps
    pre.optimizer.lr = config.pretraining.lr or config.optimizer.lr
    fine.objective = "classify"
    return pre, fine
