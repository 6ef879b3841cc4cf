"""The one initialiser for mixers whose reference implementation is PyTorch code.

PyTorch's ``nn.Linear`` and ``nn.Conv1d`` initialise both their weights and their biases uniformly in
``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (``reset_parameters``: ``kaiming_uniform_(a=sqrt(5))`` for the weight, whose
bound ``gain * sqrt(3 / fan_in)`` with ``gain = sqrt(2 / (1 + 5))`` is ``1/sqrt(fan_in)``, and the same bound for
the bias). ``fan_in`` is the number of inputs of one output: ``in_features`` for a linear layer,
``in_channels / groups * kernel_size`` for a convolution (the kernel size for a depthwise one). Flax's defaults
differ: LeCun normal kernels (about 1.7x the standard deviation, ``1/sqrt(fan_in)`` against
``1/sqrt(3 fan_in)``) and zero biases.

S4 (state-spaces/s4), Hydra (goombalab/hydra), DeltaNet (fla-org/flash-linear-attention's layer) and routing
attention (lucidrains/routing-transformer) were published from PyTorch code, so their own projections and
convolutions are built here; the encoder (embeddings, norms, channel MLP, heads) keeps Flax's defaults.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def torch_uniform(fan_in: int):
    """The PyTorch default for weights and biases alike: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, whatever the
    shape of the array it fills."""
    if fan_in < 1:
        raise ValueError(f"fan_in must be a positive integer, got {fan_in!r}")
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def linear(features: int | Sequence[int], fan_in: int, *, use_bias: bool = True, dtype: Any = jnp.float32,
           name: str | None = None, axis: int | Sequence[int] = -1) -> nn.Module:
    """A linear layer initialised as ``torch.nn.Linear(fan_in, prod(features))``: ``nn.Dense`` for one output axis
    over the last input axis, ``nn.DenseGeneral`` otherwise (same parameter shapes as without this helper)."""
    init = torch_uniform(fan_in)
    if isinstance(features, int) and axis == -1:
        return nn.Dense(features, use_bias=use_bias, dtype=dtype, kernel_init=init, bias_init=init, name=name)
    return nn.DenseGeneral(features, axis=axis, use_bias=use_bias, dtype=dtype, kernel_init=init, bias_init=init,
                           name=name)
