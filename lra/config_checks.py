"""Every numeric config field checked before a run does any work: the error names the field and the allowed range.

``RULES`` maps a field (dotted path) to its allowed range; fields not listed are still checked by name: any float
must be finite, a ``*dropout*`` or ``*_prob`` field must lie in [0, 1), a ``num_*``, ``*_every`` or ``*_size`` field
of the run (top level), the data or the encoder must be a positive integer. Mixer fields (``model.mixer_kwargs``) use
0 and -1 as "choose for me", so only the finiteness and dropout rules apply to them.
"""
from __future__ import annotations

import math
from typing import Callable

import ml_collections

Rule = tuple[Callable[[float], bool], str]


def _ge(lo) -> Rule:
    return (lambda v: v >= lo), f">= {lo}"


def _gt(lo) -> Rule:
    return (lambda v: v > lo), f"> {lo}"


def _in(lo, hi, hi_open=True) -> Rule:
    return ((lambda v: lo <= v < hi) if hi_open else (lambda v: lo <= v <= hi)), \
        f"in [{lo}, {hi}{')' if hi_open else ']'}"


POSITIVE_INT = _ge(1)
RULES: dict[str, Rule] = {
    "num_train_steps": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "eval_batch_size": POSITIVE_INT,
    "grad_accum_steps": POSITIVE_INT,
    "log_every": POSITIVE_INT,
    "eval_every": POSITIVE_INT,
    "checkpoint_every": POSITIVE_INT,
    "keep_checkpoints": _ge(2),
    "max_nonfinite_steps": POSITIVE_INT,
    "prefetch": ((lambda v: isinstance(v, int) and v >= 0), "an integer >= 0 (0: no prefetching)"),
    "optimizer.lr": _gt(0),
    "optimizer.ssm_lr": ((lambda v: True), "any value (<= 0: use optimizer.lr)"),
    "optimizer.weight_decay": _ge(0),
    "optimizer.b1": _in(0, 1),
    "optimizer.b2": _in(0, 1),
    "optimizer.eps": _gt(0),
    "optimizer.grad_clip": ((lambda v: True), "any value (<= 0: no clipping)"),
    "optimizer.warmup_steps": _ge(0),
    "optimizer.decay_steps": ((lambda v: v >= 0), ">= 0 (0: to the end of the run)"),
    "optimizer.final_lr_ratio": _in(0, 1, hi_open=False),
    "pretraining.mask_prob": ((lambda v: 0 < v < 1), "in (0, 1)"),
    "pretraining.num_train_steps": ((lambda v: v >= 0), ">= 0 (0: as config.num_train_steps)"),
    "pretraining.lr": ((lambda v: v >= 0), ">= 0 (0: as config.optimizer.lr)"),
    "mesh.data": ((lambda v: v == -1 or v >= 1), ">= 1, or -1 for all remaining devices"),
    "mesh.model": ((lambda v: v == -1 or v >= 1), ">= 1, or -1 for all remaining devices"),
    "model.d_model": POSITIVE_INT,
    "model.num_layers": POSITIVE_INT,
    "model.mlp_ratio": _gt(0),
    "model.head_hidden": ((lambda v: v >= 0), ">= 0 (0: one linear layer)"),
    "data.workers": _ge(0),
    "data.val_fraction": ((lambda v: 0 < v < 1), "in (0, 1)"),
    "data.num_distractor_snakes": ((lambda v: v >= -1), ">= 0, or -1 for LRA's setting"),
    "data.generator_seed": _ge(0),
    "data.split_seed": _ge(0),
    "data.val_seed": _ge(0),
}
WANDB_MODES = ("", "online", "offline", "disabled")
POSITIVE_BY_NAME = ("num_", "_every", "_size", "seq_len", "resolution", "max_depth", "max_args", "min_length",
                    "max_length")


def _rule_for(path: str) -> Rule | None:
    if path in RULES:
        return RULES[path]
    name = path.rsplit(".", 1)[-1]
    if "dropout" in name or name.endswith("_prob"):
        return _in(0, 1)
    if path.startswith("model.mixer_kwargs."):
        return None
    if any(name.startswith(p) if p.endswith("_") else (name.endswith(p) if p.startswith("_") else name == p)
           for p in POSITIVE_BY_NAME):
        return POSITIVE_INT
    return None


def _walk(node, prefix=""):
    for k, v in node.items():
        path = f"{prefix}{k}"
        if isinstance(v, (ml_collections.ConfigDict, dict)):
            yield from _walk(v, path + ".")
        else:
            yield path, v


def problems(config) -> list[str]:
    """Each numeric field outside its range, as ``"config.<field>=<value>: must be <range>"``."""
    out = []
    for path, v in _walk(config):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            out.append(f"config.{path}={v}: must be a finite number")
            continue
        rule = _rule_for(path)
        if rule is not None and not rule[0](v):
            out.append(f"config.{path}={v}: must be {rule[1]}")
    profile = config.get("profile_steps")
    if profile is not None and not (
            isinstance(profile, (tuple, list)) and len(profile) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in profile)
            and (tuple(profile) == (0, 0) or min(profile) >= 1)):
        out.append(f"config.profile_steps={profile!r}: must be (first step >= 1, number of steps >= 1), or (0, 0) "
                   f"for no profile")
    wandb = config.get("wandb")
    if wandb is not None and wandb.get("mode", "") not in WANDB_MODES:
        out.append(f"config.wandb.mode={wandb.mode!r}: must be one of {WANDB_MODES} ('': the library's default)")
    if config.get("data") is not None and "min_length" in config.data and "max_length" in config.data:
        if config.data.min_length > config.data.max_length:
            out.append(f"config.data.min_length={config.data.min_length} > config.data.max_length="
                       f"{config.data.max_length}: min_length must be <= max_length")
    return out


def validate(config) -> None:
    """Raise ValueError listing every out-of-range numeric field (before any work is done)."""
    found = problems(config)
    if found:
        raise ValueError("invalid config:\n  " + "\n  ".join(found))
