"""Aaren: attention as a many-to-many RNN (Feng et al. 2024, "Attention as an RNN").

Per layer and head a LEARNED query ``q`` (a parameter, not computed from tokens) attends over every prefix:

    sigma_s = <q, k_s> * scale,     o_t = sum_{s<=t} exp(sigma_s) v_s / sum_{s<=t} exp(sigma_s)

Stable state ``(m, u, w)``: ``m_t = max_{s<=t} sigma_s``, ``u_t = sum exp(sigma_s - m_t)``,
``w_t = sum exp(sigma_s - m_t) v_s``, ``o_t = w_t / u_t``. Two states combine associatively:

    (m1, u1, w1) + (m2, u2, w2) = (m, u1 e^{m1-m} + u2 e^{m2-m}, w1 e^{m1-m} + w2 e^{m2-m}),  m = max(m1, m2)

with leaf ``(sigma_s, 1, v_s)`` and identity ``(FLOOR, 0, 0)``. ``FLOOR`` is a finite stand-in for -inf, so no
``-inf - -inf`` ever appears; ``m`` is under stop_gradient (the output does not depend on it). Padded tokens are
identity leaves: they never enter a prefix, and a position with no real token in its prefix outputs 0.

Three forms with one signature ``f(query, k, v, mask, scale) -> o`` over ``[batch, heads, length, dim]``:
:func:`prefix_attention` (``lax.associative_scan``: log depth, no L x L object), :func:`prefix_attention_dense`
(the L x L causal softmax with the same query in every row) and :func:`prefix_attention_loop` (the RNN, one
:func:`step` per token). Streaming: :meth:`Aaren.prefill` then :meth:`Aaren.stream`, memory independent of length.

Unverified choices (no official code): query init N(0, 1/P), score scale 1/sqrt(P); both configurable. Aaren is
causal by construction: ``causal=False`` is accepted (the registry's default for classification) and changes
nothing; for classification read the last real position (``pooling="last"``, full attention of the learned query
over the whole sequence) or mean-pool (``pooling="mean"``).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

FLOOR = -1e30  # finite "minus infinity" for the running max


class Carry(NamedTuple):
    m: jax.Array  # [..., heads]          running max of scores
    u: jax.Array  # [..., heads]          sum of exp(score - m)
    w: jax.Array  # [..., heads, dim]     sum of exp(score - m) * v


def combine(a: Carry, b: Carry) -> Carry:
    """The associative (and commutative) merge of two prefix states; elementwise over leading axes."""
    m = jax.lax.stop_gradient(jnp.maximum(a.m, b.m))
    ea, eb = jnp.exp(a.m - m), jnp.exp(b.m - m)  # finite: every m >= FLOOR, so each difference is <= 0
    return Carry(m, a.u * ea + b.u * eb, a.w * ea[..., None] + b.w * eb[..., None])


def scores(query, k, scale):
    """``<q_h, k_{b,h,t}> * scale``: query [heads, dim] (or [batch, heads, dim]), k [B, H, L, P] -> [B, H, L]."""
    query = jnp.broadcast_to(query, (k.shape[0],) + query.shape[-2:])
    return jnp.einsum("bhp,bhlp->bhl", query, k).astype(jnp.promote_types(k.dtype, jnp.float32)) * scale


def leaves(sigma, v, mask) -> Carry:
    """Per-token states; padded tokens (mask False) become the identity."""
    acc = jnp.promote_types(v.dtype, jnp.float32)
    valid = jnp.ones(sigma.shape, bool) if mask is None else jnp.broadcast_to(mask[:, None, :], sigma.shape)
    m = jnp.where(valid, sigma, FLOOR).astype(acc)
    u = valid.astype(acc)
    w = jnp.where(valid[..., None], v, 0).astype(acc)
    return Carry(m, u, w)


def readout(c: Carry):
    """``o = w / u``, and 0 where no real token has been seen (u = 0)."""
    safe = jnp.where(c.u > 0, c.u, 1.0)
    return jnp.where((c.u > 0)[..., None], c.w / safe[..., None], 0.0)


def prefix_attention(query, k, v, mask=None, scale=None):
    """Every prefix's output by a parallel prefix scan over the length axis. Shapes as in :func:`scores`."""
    scale = k.shape[-1] ** -0.5 if scale is None else scale
    c = leaves(scores(query, k, scale), v, mask)
    return readout(jax.lax.associative_scan(combine, c, axis=2)).astype(v.dtype)


def prefix_attention_dense(query, k, v, mask=None, scale=None):
    """Plain form: the L x L causal softmax whose every row uses the same learned query."""
    scale = k.shape[-1] ** -0.5 if scale is None else scale
    sigma = scores(query, k, scale)  # [B, H, L]
    L = k.shape[2]
    allowed = jnp.tril(jnp.ones((L, L), bool))[None, None]
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    probs = jax.nn.softmax(jnp.where(allowed, sigma[:, :, None, :], FLOOR), axis=-1)
    probs = jnp.where(allowed, probs, 0.0)  # also zeroes rows with no allowed key (uniform over FLOORs)
    return jnp.einsum("bhts,bhsp->bhtp", probs, v.astype(probs.dtype)).astype(v.dtype)


def init_carry(batch: int, heads: int, dim: int, dtype=jnp.float32) -> Carry:
    return Carry(jnp.full((batch, heads), FLOOR, dtype), jnp.zeros((batch, heads), dtype),
                 jnp.zeros((batch, heads, dim), dtype))


def step(carry: Carry, sigma_t, v_t, valid_t=None) -> Carry:
    """Fold one token into the carry: ``sigma_t`` [B, H], ``v_t`` [B, H, P], ``valid_t`` [B] bool."""
    leaf = leaves(sigma_t[..., None], v_t[:, :, None, :], None if valid_t is None else valid_t[:, None])
    return combine(carry, Carry(leaf.m[..., 0], leaf.u[..., 0], leaf.w[:, :, 0]))


def prefix_attention_loop(query, k, v, mask=None, scale=None):
    """Plain form: the RNN, one :func:`step` per token (``lax.scan``)."""
    scale = k.shape[-1] ** -0.5 if scale is None else scale
    B, H, L, P = k.shape
    sigma = scores(query, k, scale)
    valid = jnp.ones((B, L), bool) if mask is None else mask

    def body(c, xs):
        s_t, v_t, ok = xs
        c = step(c, s_t, v_t, ok)
        return c, readout(c)

    acc = jnp.promote_types(v.dtype, jnp.float32)
    _, outs = jax.lax.scan(body, init_carry(B, H, P, acc),
                           (sigma.transpose(2, 0, 1), v.transpose(2, 0, 1, 3), valid.T))
    return outs.transpose(1, 2, 0, 3).astype(v.dtype)


class Aaren(nn.Module):
    """Aaren mixer: learned query per head, key/value projections, prefix attention, output projection."""

    d_model: int
    causal: bool = True  # causal by construction; False is accepted and changes nothing (see module docstring)
    num_heads: int = 4
    query_init_std: float = 0.0  # 0: 1/sqrt(head_dim), i.e. q ~ N(0, 1/P)
    score_scale: float = 0.0  # 0: 1/sqrt(head_dim)
    dtype: Any = jnp.float32

    def setup(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        P = self.d_model // self.num_heads
        std = self.query_init_std or P ** -0.5
        self.query = self.param("query", nn.initializers.normal(std), (self.num_heads, P))
        proj = lambda name: nn.DenseGeneral((self.num_heads, P), dtype=self.dtype, name=name)
        self.key_proj, self.value_proj = proj("key"), proj("value")
        self.out = nn.DenseGeneral(self.d_model, axis=(-2, -1), dtype=self.dtype, name="out")

    @property
    def scale(self) -> float:
        return self.score_scale or (self.d_model // self.num_heads) ** -0.5

    def _kv(self, x):
        # [B, L, H, P] -> [B, H, L, P]
        return self.key_proj(x).transpose(0, 2, 1, 3), self.value_proj(x).transpose(0, 2, 1, 3)

    def __call__(self, x, *, mask=None, deterministic=True):
        k, v = self._kv(x)
        o = prefix_attention(self.query, k, v, mask, self.scale)
        y = self.out(o.transpose(0, 2, 1, 3))
        return y if mask is None else jnp.where(mask[..., None], y, 0).astype(y.dtype)  # padded outputs are zero

    def prefill(self, x, mask=None):
        """Outputs for a prefix and the carry after it (for streaming continuation)."""
        k, v = self._kv(x)
        c = jax.lax.associative_scan(combine, leaves(scores(self.query, k, self.scale), v, mask), axis=2)
        outputs = self.out(readout(c).astype(v.dtype).transpose(0, 2, 1, 3))
        return outputs, Carry(c.m[:, :, -1], c.u[:, :, -1], c.w[:, :, -1])

    def init_stream(self, batch: int) -> Carry:
        return init_carry(batch, self.num_heads, self.d_model // self.num_heads)

    def stream(self, carry: Carry, x_t, valid_t=None):
        """One token ``x_t`` [B, D] -> (new carry, output [B, D]); the carry's size does not depend on length."""
        k, v = self._kv(x_t[:, None, :])
        carry = step(carry, scores(self.query, k, self.scale)[:, :, 0], v[:, :, 0], valid_t)
        return carry, self.out(readout(carry).astype(v.dtype))
