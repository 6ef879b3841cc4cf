"""Multi-head softmax attention: the Transformer baseline mixer.

Math: per head, ``A = softmax(Q K^T / sqrt(P) + mask)``, ``O = A V``. The mask is a large
finite negative number on padded keys and, when causal, on keys after the query; a query whose every key is masked
(possible only at padded positions) outputs 0. Logits and softmax run in float32 whatever the compute dtype.

Two kernel functions with one signature, both over ``[batch, heads, length, head_dim]``:

* :func:`attention_dense` -- the plain form: materialises the ``L x L`` probability matrix.
* :func:`attention_fused` -- ``jax.nn.dot_product_attention`` (XLA's fused kernel, cuDNN flash attention on GPUs),
  which never hands the probability matrix back to us.

The module :class:`MultiHeadAttention` picks the path with ``implementation`` (fused on accelerators, dense on CPU
by default); attention-probability dropout needs the probabilities and always takes the dense path.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import init as model_init

NEG_INF = -1e30  # finite "minus infinity": exp underflows to 0 without producing NaN in fully masked rows


def attention_mask(key_mask: jax.Array | None, q_len: int, k_len: int, causal: bool) -> jax.Array | None:
    """Boolean mask broadcastable to ``[batch, heads, q_len, k_len]``; True = the query may attend to the key."""
    mask = None
    if key_mask is not None:
        mask = key_mask[:, None, None, :].astype(bool)
    if causal:
        tri = jnp.tril(jnp.ones((q_len, k_len), dtype=bool))[None, None]
        mask = tri if mask is None else mask & tri
    return mask


def attention_dense(q, k, v, *, key_mask=None, causal=False, dropout_fn: Callable | None = None):
    """Plain softmax attention. q: [B,H,Lq,P], k: [B,H,Lk,P], v: [B,H,Lk,Pv], key_mask: [B,Lk] bool."""
    scale = q.shape[-1] ** -0.5
    acc = jnp.promote_types(q.dtype, jnp.float32)  # softmax in float32 at least (float64 in x64 tests)
    logits = jnp.einsum("bhqp,bhkp->bhqk", q, k, preferred_element_type=acc).astype(acc) * scale
    mask = attention_mask(key_mask, q.shape[2], k.shape[2], causal)
    if mask is not None:
        logits = jnp.where(mask, logits, NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1)
    if mask is not None:
        # Rows with no allowed key would be a uniform average of masked values: make them 0 instead.
        probs = jnp.where(jnp.any(mask, axis=-1, keepdims=True), probs, 0.0)
    if dropout_fn is not None:
        probs = dropout_fn(probs)
    return jnp.einsum("bhqk,bhkp->bhqp", probs.astype(v.dtype), v)


def attention_fused(q, k, v, *, key_mask=None, causal=False, dropout_fn: Callable | None = None):
    """Same result as :func:`attention_dense` through ``jax.nn.dot_product_attention`` (no dropout support)."""
    if dropout_fn is not None:
        raise ValueError("attention_fused does not support attention-probability dropout; use attention_dense")
    mask = attention_mask(key_mask, q.shape[2], k.shape[2], causal)
    # jax.nn.dot_product_attention works on [B, L, H, P].
    out = jax.nn.dot_product_attention(
        q.swapaxes(1, 2), k.swapaxes(1, 2), v.swapaxes(1, 2), mask=mask
    ).swapaxes(1, 2)
    if mask is not None:
        out = jnp.where(jnp.any(mask, axis=-1)[..., None], out, 0.0)
    return out


def head_dim_of(d_model: int, num_heads: int, qkv_dim: int = 0) -> int:
    """Per-head width of q/k/v: ``qkv_dim`` (0 = ``d_model``) split over the heads."""
    qkv_dim = qkv_dim or d_model
    if qkv_dim % num_heads:
        raise ValueError(f"qkv_dim={qkv_dim} is not divisible by num_heads={num_heads}")
    return qkv_dim // num_heads


def project_qkv(x, num_heads: int, head_dim: int, dtype, *, torch_init: bool = False,
                names=("query", "key", "value")):
    """The query, key and value projections of the attention-style mixers, ``[B, L, D] -> [B, H, L, P]`` each, as
    submodules named ``names`` of the calling (compact) module. No key bias: it adds the same number to every logit
    of a query, which softmax ignores (its gradient is identically zero, so Adam would only amplify rounding noise
    into it). ``torch_init``: PyTorch's ``nn.Linear`` initialisation (:mod:`models.init`) instead of Flax's."""
    D = x.shape[-1]

    def dense(name):
        if torch_init:
            return model_init.linear((num_heads, head_dim), D, use_bias=name != "key", dtype=dtype, name=name)
        return nn.DenseGeneral((num_heads, head_dim), use_bias=name != "key", dtype=dtype, name=name)

    return tuple(dense(n)(x).transpose(0, 2, 1, 3) for n in names)


def project_out(o, d_model: int, dtype, *, torch_init: bool = False):
    """Heads back to the model width: ``[B, H, L, P] -> [B, L, D]`` through the submodule ``out``."""
    H, P = o.shape[1], o.shape[3]
    if torch_init:
        layer = model_init.linear(d_model, H * P, axis=(-2, -1), dtype=dtype, name="out")
    else:
        layer = nn.DenseGeneral(d_model, axis=(-2, -1), dtype=dtype, name="out")
    return layer(o.transpose(0, 2, 1, 3))


class MultiHeadAttention(nn.Module):
    """Softmax multi-head attention mixer (bidirectional by default, ``causal=True`` for left-to-right)."""

    d_model: int
    causal: bool = False
    num_heads: int = 8
    qkv_dim: int = 0  # total width of q/k/v over all heads; 0 = d_model
    attention_dropout: float = 0.0
    # "fused" (jax.nn.dot_product_attention), "dense" (attention_dense) or "auto": fused on accelerators, dense on
    # CPU, where XLA's fused attention is the same computation and measured 1.5-2x slower
    # (benchmarks/results/train_throughput.md).
    implementation: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, mask=None, deterministic=True):
        q, k, v = project_qkv(x, self.num_heads, head_dim_of(self.d_model, self.num_heads, self.qkv_dim), self.dtype)
        dropout_fn = None
        if self.attention_dropout > 0.0 and not deterministic:
            dropout_fn = nn.Dropout(self.attention_dropout, deterministic=False)
        impl = self.implementation
        if impl == "auto":
            impl = "dense" if jax.default_backend() == "cpu" else "fused"
        if impl not in ("fused", "dense"):
            raise ValueError(f"unknown attention implementation {self.implementation!r}; expected auto, fused or dense")
        kernel = attention_fused if (impl == "fused" and dropout_fn is None) else attention_dense
        o = kernel(q, k, v, key_mask=mask, causal=self.causal, dropout_fn=dropout_fn)
        return project_out(o, self.d_model, self.dtype)
