"""Combiner-Fixed (Ren et al. 2021, "Combiner: Full Attention Transformer with Sparse Computation Cost").

Attention as ``o_i = E_{p(j|i)}[v_j]`` with ``p(j|i)`` factorised so that every key is reached, directly or through
a summary of its segment. Segments of length ``s`` (default about sqrt(L); the length is padded to a multiple of s
with masked tokens), ``S_r = {rs, ..., rs + s - 1}``, ``g(i) = floor(i / s)``; queries pre-scaled by ``1/sqrt(P)``.

* Segment summaries ("identity-max"): ``qbar_r = max_{j in S_r} q_j``, ``kbar_r = max_{j in S_r} k_j``
  (elementwise, over real tokens), and the local expectation ``vbar_r = sum_{j in S_r} pi_{r,j} v_j`` with
  ``pi_{r,.} = softmax_{j in S_r}(<qbar_r, k_j>)``.
* For query i, ONE softmax over the direct logits ``<q_i, k_j>`` (j in its own segment) and the indirect logits
  ``<q_i, kbar_r>`` (every other segment r): weights ``alpha_ij``, ``alphabar_ir``;
  ``o_i = sum_{j in S_g(i)} alpha_ij v_j + sum_{r != g(i)} alphabar_ir vbar_r``.
* Implied full attention: ``A_ij = alpha_ij`` in the own segment, ``A_ij = alphabar_{i,g(j)} pi_{g(j),j}``
  elsewhere; rows sum to 1 and every entry is positive.
* Causal: direct keys ``j <= i`` in the own segment, indirect terms only for ``r < g(i)``.

Two variants of the bidirectional layer (``variant``):

* ``"official"`` (the default): the official Combiner code (google-research/google-research,
  ``combiner/combiner/tf/approx_attention.py``, ``sqrt_fixed_full``, at commit
  5b09c22d73a9d35eb6c5d2a99b95677a45053466) masks no segment out of the indirect logits when not causal, so a
  token's own segment is reached twice: directly and through its own summary (indirect terms for every ``r``,
  ``A_ij = alpha_ij + alphabar_{i,g(i)} pi_{g(i),j}`` in the own segment). The published Combiner LRA numbers came
  from that code. With ``s = 1`` it is softmax attention whose own-token logit gains ``log 2``.
* ``"partition"`` (the project's earlier default): the own segment is counted once (indirect terms for
  ``r != g(i)``), so the terms partition the keys; ``s = 1`` and ``s = L`` both reduce to standard softmax
  attention.

The causal layer is the same in both (indirect terms only for ``r < g(i)``, as the official code's strict mask).

Kernel functions over ``[batch, heads, length, dim]``: :func:`combiner_attention` (segments as blocks: ``O(L s P)``
direct, ``O(L n_s P)`` indirect, ``O(L^1.5 P)`` time and memory at ``s = sqrt(L)``) next to its plain form
:func:`combiner_dense` (= :func:`combiner_matrix`, the implied ``L x L`` matrix A, times V). The Flax mixer is
:class:`Combiner`.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import NEG_INF, attention_mask, head_dim_of, project_out, project_qkv


def _acc(dtype):
    return jnp.promote_types(dtype, jnp.float32)


VARIANTS = ("official", "partition")


def _check_variant(variant):
    if variant not in VARIANTS:
        raise ValueError(f"unknown Combiner variant {variant!r}; expected one of {VARIANTS}")


def default_segment_size(length: int) -> int:
    """About sqrt(L) (1024 -> 32, 4096 -> 64, 16384 -> 128)."""
    return max(1, round(math.sqrt(length)))


def _masked_softmax(logits, allowed, axis=-1):
    logits = jnp.where(allowed, logits, NEG_INF)
    return jnp.where(jnp.any(allowed, axis=axis, keepdims=True), jax.nn.softmax(logits, axis=axis), 0.0)


def combiner_attention(q, k, v, segment: int, *, key_mask=None, causal=False, variant="official"):
    """Combiner-Fixed by segment blocks. q, k: [B, H, L, P]; v: [B, H, L, Pv]; key_mask: [B, L] bool;
    ``variant``: ``official`` (own segment also through its summary) or ``partition``. Returns [B, H, L, Pv]."""
    _check_variant(variant)
    B, H, L, P = q.shape
    acc = _acc(q.dtype)
    s = max(1, min(segment, L))
    n = -(-L // s)
    pad = n * s - L
    q, k, v = (a.astype(acc) for a in (q, k, v))
    q = q * P ** -0.5
    valid = jnp.ones((B, L), bool) if key_mask is None else key_mask.astype(bool)
    if pad:
        q, k, v = (jnp.pad(a, ((0, 0), (0, 0), (0, pad), (0, 0))) for a in (q, k, v))
        valid = jnp.pad(valid, ((0, 0), (0, pad)))
    seg = lambda a: a.reshape(a.shape[:2] + (n, s) + a.shape[3:])
    qs, ks, vs = seg(q), seg(k), seg(v)  # [B, H, n, s, P]
    vm = valid.reshape(B, 1, n, s)
    seg_valid = jnp.any(vm, axis=-1)  # [B, 1, n]

    # Segment summaries: max-pooled query and key (over real tokens), local expectation of the values.
    pool = lambda a: jnp.where(seg_valid[..., None], jnp.max(jnp.where(vm[..., None], a, NEG_INF), axis=3), 0.0)
    q_bar, k_bar = pool(qs), pool(ks)  # [B, H, n, P]
    pi = _masked_softmax(jnp.einsum("bhnp,bhnsp->bhns", q_bar, ks), vm)  # [B, H, n, s]
    v_bar = jnp.einsum("bhns,bhnsp->bhnp", pi, vs)

    # One softmax over [direct logits in the own segment | indirect logits to the other segments' summaries].
    direct = jnp.einsum("bhrip,bhrjp->bhrij", qs, ks)  # [B, H, n, s, s]
    indirect = jnp.einsum("bhrip,bhmp->bhrim", qs, k_bar)  # [B, H, n, s, n]
    d_ok = vm[:, :, :, None, :]  # [B, 1, n, 1, s]
    r, m = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
    if causal:
        other = m < r  # [n(own), n(summary)]
    else:
        other = jnp.ones((n, n), bool) if variant == "official" else m != r
    i_ok = seg_valid[:, :, None, None, :] & other[None, None, :, None, :]  # [B, 1, n, 1, n]
    if causal:
        d_ok = d_ok & jnp.tril(jnp.ones((s, s), bool))
    allowed = jnp.concatenate([jnp.broadcast_to(d_ok, (B, 1, n, s, s)), jnp.broadcast_to(i_ok, (B, 1, n, s, n))], -1)
    probs = _masked_softmax(jnp.concatenate([direct, indirect], -1), allowed)
    o = jnp.einsum("bhrij,bhrjp->bhrip", probs[..., :s], vs) + jnp.einsum("bhrim,bhmp->bhrip", probs[..., s:], v_bar)
    return o.reshape(B, H, n * s, -1)[:, :, :L].astype(v.dtype)


def combiner_matrix(q, k, segment: int, *, key_mask=None, causal=False, variant="official"):
    """Plain form: the implied full attention matrix A [B, H, L, L], built entry by entry from the formula
    (``A_ij = alpha_ij`` in the own segment, ``alphabar_{i,g(j)} pi_{g(j),j}`` elsewhere; ``official`` adds
    ``alphabar_{i,g(i)} pi_{g(i),j}`` in the own segment too), on whole-length arrays."""
    _check_variant(variant)
    B, H, L, P = q.shape
    acc = _acc(q.dtype)
    q, k = q.astype(acc) * P ** -0.5, k.astype(acc)
    s = max(1, min(segment, L))
    n = -(-L // s)
    g = jnp.arange(L) // s
    valid = jnp.ones((B, L), bool) if key_mask is None else key_mask.astype(bool)
    in_seg = (g[None, :] == jnp.arange(n)[:, None])[None] & valid[:, None, :]  # [B, n, L]: j real and in S_r
    seg_valid = jnp.any(in_seg, -1)  # [B, n]

    def seg_max(x):  # [B, H, L, P] -> [B, H, n, P]
        m = jnp.max(jnp.where(in_seg[:, None, :, :, None], x[:, :, None], NEG_INF), axis=3)
        return jnp.where(seg_valid[:, None, :, None], m, 0.0)

    q_bar, k_bar = seg_max(q), seg_max(k)
    # pi[r, j]: softmax over j in S_r of <qbar_r, k_j>; gathered at r = g(j) -> [B, H, L]
    pi = _masked_softmax(jnp.einsum("bhrp,bhjp->bhrj", q_bar, k), in_seg[:, None])
    pi_j = jnp.take_along_axis(pi, jnp.broadcast_to(g[None, None, None, :], (B, H, 1, L)), axis=2)[:, :, 0]

    direct = jnp.einsum("bhip,bhjp->bhij", q, k)  # [B, H, L, L]
    indirect = jnp.einsum("bhip,bhrp->bhir", q, k_bar)  # [B, H, L, n]
    same = g[:, None] == g[None, :]
    d_ok = same[None, None] & valid[:, None, None, :]
    if causal:
        d_ok = d_ok & attention_mask(None, L, L, True)
    gi, r = g[:, None], jnp.arange(n)[None, :]
    if causal:
        i_ok = r < gi
    else:
        i_ok = jnp.ones((L, n), bool) if variant == "official" else r != gi
    i_ok = i_ok[None, None] & seg_valid[:, None, None, :]  # [B, 1, L, n]
    # the joint normaliser Z_i over both kinds of logits
    top = jnp.maximum(jnp.max(jnp.where(d_ok, direct, NEG_INF), -1), jnp.max(jnp.where(i_ok, indirect, NEG_INF), -1))
    e_direct = jnp.where(d_ok, jnp.exp(direct - top[..., None]), 0.0)
    e_indirect = jnp.where(i_ok, jnp.exp(indirect - top[..., None]), 0.0)
    z = jnp.sum(e_direct, -1) + jnp.sum(e_indirect, -1)
    z = jnp.where(z > 0, z, 1.0)[..., None]
    # indirect weight of the segment of j, times pi_{g(j), j}, for j outside i's segment
    via = jnp.take_along_axis(e_indirect, jnp.broadcast_to(g[None, None, None, :], (B, H, L, L)), axis=3)
    own_twice = variant == "official" and not causal  # the own segment's summary term is there too
    a = e_direct / z + jnp.where(same[None, None] & (not own_twice), 0.0, via / z * pi_j[:, :, None, :])
    return a


def combiner_dense(q, k, v, segment: int, *, key_mask=None, causal=False, variant="official"):
    """Plain form: ``A V`` with A from :func:`combiner_matrix`."""
    a = combiner_matrix(q, k, segment, key_mask=key_mask, causal=causal, variant=variant)
    return jnp.einsum("bhij,bhjp->bhip", a, v.astype(a.dtype)).astype(v.dtype)


class Combiner(nn.Module):
    """Combiner-Fixed multi-head attention mixer; ``segment_size`` 0 = about sqrt(L) of the input length."""

    d_model: int
    causal: bool = False
    num_heads: int = 8
    segment_size: int = 0
    qkv_dim: int = 0  # total width of q/k/v over all heads; 0 = d_model
    variant: str = "official"  # official (own segment also through its summary, as the published code) | partition
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, mask=None, deterministic=True):
        # No key bias (project_qkv): as in plain attention it adds the same <q_i, b> to every logit of a query
        # (max-pooling commutes with adding b), and the same <qbar_r, b> to every summary logit, so softmax ignores it.
        q, k, v = project_qkv(x, self.num_heads, head_dim_of(self.d_model, self.num_heads, self.qkv_dim), self.dtype)
        s = self.segment_size or default_segment_size(x.shape[1])
        o = combiner_attention(q, k, v, s, key_mask=mask, causal=self.causal, variant=self.variant)
        return project_out(o, self.d_model, self.dtype)
