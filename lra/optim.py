"""The optimizer: AdamW with a warmup + decay schedule, global-norm clipping, and parameter groups by name.

``make_optimizer(config.optimizer, num_steps)`` is the one place a run's optimizer is made; ``param_label`` decides
each parameter's group (own learning rate, weight decay or not) from its name.
"""
from __future__ import annotations

from typing import Any

import jax
import optax


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
    """Linear warmup from 0 over ``opt.warmup_steps`` (at most ``num_steps``), then ``opt.schedule`` down to
    ``lr * opt.final_lr_ratio`` at ``num_steps`` (cosine, linear) or flat (constant)."""
    warmup = min(opt.warmup_steps, num_steps)
    if opt.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(num_steps, warmup + 1),
                                                  end_value=lr * opt.final_lr_ratio)
    decay_steps = max(num_steps - warmup, 1)
    if opt.schedule == "linear":
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
