"""The optimizer: AdamW with a warmup + decay schedule, global-norm clipping, and parameter groups by name.

``make_optimizer(config.optimizer, num_steps)`` is the one place a run's optimizer is made; ``param_label`` decides
each parameter's group (own learning rate, weight decay or not) from its name.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def param_label(path: tuple[str, ...], opt=None) -> str:
    """The optimizer group of a parameter, from its name (the last element of its path).

    ``ssm_*`` -> "ssm" (own learning rate ``ssm_lr``, no weight decay), except S4's step size ``ssm_log_dt`` when
    ``opt.dt_group == "base"`` -> "no_decay" (base learning rate, no weight decay: S4's ``lr.dt: null``);
    ``bias`` and ``scale`` (norms) -> "no_decay" unless ``opt.decay_bias_and_norm``; ``nd_*`` -> "no_decay" always;
    everything else -> "default". This is the one place that decides; mixers opt in by naming.
    """
    name = path[-1]
    dt_group = opt.get("dt_group", "ssm") if opt is not None else "ssm"
    decay_bias_and_norm = opt.get("decay_bias_and_norm", False) if opt is not None else False
    if dt_group not in ("ssm", "base"):
        raise ValueError(f"unknown config.optimizer.dt_group {dt_group!r}; expected 'ssm' or 'base'")
    if name == "ssm_log_dt" and dt_group == "base":
        return "no_decay"
    if name.startswith("ssm_"):
        return "ssm"
    if name.startswith("nd_") or (name in ("bias", "scale") and not decay_bias_and_norm):
        return "no_decay"
    return "default"


def label_params(params, opt=None) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, _: param_label(tuple(getattr(k, "key", str(k)) for k in path), opt), params)


def make_schedule(opt, lr: float, num_steps: int) -> optax.Schedule:
    """The learning rate at each step: a linear warmup from 0 over ``opt.warmup_steps`` (at most ``num_steps``),
    then ``opt.schedule`` over ``opt.decay_steps`` steps (0: to the end of the run; a longer horizon is cut by the
    run's end, as in published runs whose scheduler was set for more steps than they trained):

    - ``cosine``: half a cosine from ``lr`` to ``lr * final_lr_ratio``;
    - ``linear``: a straight line from ``lr`` to ``lr * final_lr_ratio``;
    - ``constant``: ``lr``;
    - ``rsqrt``: LRA's ``constant * linear_warmup * rsqrt_decay``: ``lr * min(1, t / W) / sqrt(max(t, W))`` (so the
      peak, at the end of the warmup, is ``lr / sqrt(W)``).
    """
    warmup = min(opt.warmup_steps, num_steps)
    decay_steps = opt.get("decay_steps", 0) or max(num_steps - warmup, 1)
    if opt.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, warmup + decay_steps,
                                                  end_value=lr * opt.final_lr_ratio)
    if opt.schedule == "rsqrt":
        W = float(warmup)

        def rsqrt(step):
            t = jnp.asarray(step, jnp.float32)
            ramp = jnp.minimum(1.0, t / W) if W > 0 else 1.0
            return lr * ramp / jnp.sqrt(jnp.maximum(t, max(W, 1.0)))
        return rsqrt
    if opt.schedule == "linear":
        decay = optax.linear_schedule(lr, lr * opt.final_lr_ratio, decay_steps)
    elif opt.schedule == "constant":
        decay = optax.constant_schedule(lr)
    else:
        raise ValueError(f"unknown config.optimizer.schedule {opt.schedule!r}; expected cosine, linear, constant or "
                         f"rsqrt")
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def make_optimizer(opt, num_steps: int) -> optax.GradientTransformation:
    """AdamW with warmup + decay and global-norm clipping; parameter groups by :func:`param_label`: "default" (lr,
    weight decay), "no_decay" (lr, none), "ssm" (``ssm_lr``, none)."""
    if opt.name != "adamw":
        raise ValueError(f"unknown config.optimizer.name {opt.name!r}; expected 'adamw'")

    def adamw(lr, wd):
        return optax.adamw(make_schedule(opt, lr, num_steps), b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=wd)

    groups = {
        "default": adamw(opt.lr, opt.weight_decay),
        "no_decay": adamw(opt.lr, 0.0),
        "ssm": adamw(opt.ssm_lr if opt.ssm_lr > 0 else opt.lr, 0.0),
    }
    chain = [optax.multi_transform(groups, lambda params: label_params(params, opt))]
    if opt.grad_clip > 0:
        chain.insert(0, optax.clip_by_global_norm(opt.grad_clip))
    return optax.chain(*chain)
