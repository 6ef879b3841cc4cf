"""DeltaNet: linear attention with the delta rule (Schlag et al. 2021; Yang et al. 2024).

Per head, state ``S_t`` in R^{d_v x d_k}, ``S_0`` = 0 (or a given initial state):

    S_t = S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T = S_{t-1} + beta_t (v_t - S_{t-1} k_t) k_t^T
    o_t = S_t q_t                                   (the state already holds token t)

Three forms with one signature over ``[batch, heads, length, dim]`` (beta ``[batch, heads, length]``), each returning
``(outputs, final_state)``:

* :func:`delta_rule_recurrent` -- the recurrence above, one token per ``lax.scan`` step.
* :func:`delta_rule_dense` -- ``o_t = S_0 Pi_{1..t} q_t + sum_{s<=t} beta_s (k_s^T Pi_{s+1..t} q_t) v_s`` with
  ``Pi_{a..b} = (I - beta_a k_a k_a^T) ... (I - beta_b k_b k_b^T)``, built explicitly (tiny L only).
* :func:`delta_rule_chunked` -- the chunkwise WY / UT form. Within a chunk of C rows (K, V, Q, beta):
  ``T = (I + strict_lower(diag(beta) K K^T))^{-1} diag(beta)`` by a blocked unit-lower-triangular inverse, ``W = T K``,
  ``U = T V``; with the chunk's start state S:
  ``O = Q S^T + (Q K^T * M)(U - W S^T)`` (M: lower triangle with the diagonal), ``S' = S + (U - W S^T)^T K``.
  Matmuls only, sequential depth L / C. Lengths are padded to a multiple of C with k = 0, beta = 0 (identity
  transitions that write nothing). State, T and the inter-chunk loop run in float32 (float64 under x64).

The Flax module :class:`DeltaNet` follows fla's ``DeltaNet`` layer (fla-org/flash-linear-attention,
``fla/layers/delta_net.py`` at commit 0315a70ea55304398ad372e56cdd211ce0119571): q/k/v projections without bias,
causal depthwise short convolutions (kernel 4) + SiLU, L2-normalised q and k (q also scaled by 1/sqrt(d_k)),
``beta = sigmoid(W_b x)``, per-head RMSNorm, output projection. Defaults follow that layer's: no output gate
(``use_gate=False``; ``True`` adds fla's ``FusedRMSNormGated``: ``RMSNorm(o) * SiLU(W_g x)``), no bias on the short
convolutions (``conv_bias=False``), and PyTorch's initialisation of its ``nn.Linear`` projections and of the
``nn.Conv1d`` short convolutions (``ShortConvolution`` subclasses it): uniform in +-1/sqrt(fan_in), fan_in = the
input width for a projection and the kernel size for a depthwise convolution (:mod:`models.init`). (fla's
``DeltaNetForCausalLM`` re-initialises every ``nn.Linear`` and ``nn.Conv1d`` with N(0, 0.02) in ``_init_weights``;
that is the language model wrapper's choice, not the layer's, and is not followed here.) The project's earlier
defaults were a gate, conv biases (zero-initialised) and Flax's LeCun-normal kernels. ``causal=False`` (the LRA
classification default) is our bidirectional form (not from the paper): a second parameter set runs over each
sequence reversed within its real length, and the two directions' per-head outputs are summed before ``W_o``.

Computation (parameters as above, one set per direction): each direction's q/k/v/beta(/gate) kernels are
concatenated at call time into one input projection and its three short convolutions run as one over the 3 x width
channels; the bidirectional layer stacks the input and its reversal on a leading axis, so both directions share
one projection product, one convolution and ONE chunked-kernel call (batch 2B).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.init import linear, torch_uniform


def _acc(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def _zero_state(q, v):
    B, H, _, dk = q.shape
    return jnp.zeros((B, H, v.shape[-1], dk), _acc(q.dtype))


# ----------------------------------------------------------------------------------------------------- kernels

def delta_rule_step(state, q_t, k_t, v_t, beta_t):
    """One token: ``state`` [B, H, dv, dk], ``q_t, k_t`` [B, H, dk], ``v_t`` [B, H, dv], ``beta_t`` [B, H]."""
    pred = jnp.einsum("bhvk,bhk->bhv", state, k_t)
    state = state + beta_t[..., None, None] * jnp.einsum("bhv,bhk->bhvk", v_t - pred, k_t)
    return state, jnp.einsum("bhvk,bhk->bhv", state, q_t)


def delta_rule_recurrent(q, k, v, beta, initial_state=None):
    """Plain form: the recurrence, token by token. Returns ``(o [B,H,L,dv], final_state [B,H,dv,dk])``."""
    acc = _acc(q.dtype)
    state = _zero_state(q, v) if initial_state is None else initial_state.astype(acc)
    xs = tuple(a.astype(acc).swapaxes(0, 2).swapaxes(1, 2) for a in (q, k, v))  # [L, B, H, d]
    b = beta.astype(acc).transpose(2, 0, 1)

    def body(s, x):
        return delta_rule_step(s, *x)

    state, o = jax.lax.scan(body, state, xs + (b,))
    return o.transpose(1, 2, 0, 3).astype(v.dtype), state


def delta_rule_dense(q, k, v, beta, initial_state=None):
    """Plain form for tiny L: the explicit sum over products of Householder-like transitions."""
    acc = _acc(q.dtype)
    q, k, v, beta = (a.astype(acc) for a in (q, k, v, beta))
    B, H, L, dk = q.shape
    eye = jnp.eye(dk, dtype=acc)
    trans = eye - beta[..., None, None] * jnp.einsum("bhti,bhtj->bhtij", k, k)  # [B, H, L, dk, dk]
    s0 = _zero_state(q, v) if initial_state is None else initial_state.astype(acc)
    outs = []
    for t in range(L):
        o_t = jnp.einsum("bhvk,bhk->bhv", s0, jnp.einsum("bhij,bhj->bhi", _product(trans, 0, t + 1, eye), q[:, :, t]))
        for s in range(t + 1):
            pq = jnp.einsum("bhij,bhj->bhi", _product(trans, s + 1, t + 1, eye), q[:, :, t])
            o_t = o_t + (beta[:, :, s] * jnp.einsum("bhk,bhk->bh", k[:, :, s], pq))[..., None] * v[:, :, s]
        outs.append(o_t)
    final = s0 @ _product(trans, 0, L, eye) + jnp.einsum(
        "bhs,bhsv,bhsk->bhvk", beta, v,
        jnp.stack([jnp.einsum("bhk,bhkj->bhj", k[:, :, s], _product(trans, s + 1, L, eye)) for s in range(L)], 2))
    return jnp.stack(outs, 2), final


def _product(trans, a, b, eye):
    """``trans[a] @ trans[a+1] @ ... @ trans[b-1]`` (identity when empty), batched over [B, H]."""
    out = jnp.broadcast_to(eye, trans.shape[:2] + eye.shape)
    for i in range(a, b):
        out = out @ trans[:, :, i]
    return out


def _power_inverse(a):
    """``a^{-1}`` for unit-lower-triangular ``a`` [..., c, c], c small: with ``a = I + N`` (N strictly lower, so
    N^c = 0), ``a^{-1} = (I - N)(I + N^2)(I + N^4)...`` up to the first power >= c (2 log2(c) c x c products)."""
    c = a.shape[-1]
    eye = jnp.eye(c, dtype=a.dtype)
    n = eye - a  # = -N
    inv = eye + n
    power = n
    span = 2
    while span < c:
        power = power @ power
        inv = inv + inv @ power
        span *= 2
    return inv


def unit_lower_inverse(a, block: int = 16):
    """Inverse of a unit-lower-triangular ``a`` [..., C, C] with matmuls only, in O(C^3) work.

    The diagonal blocks of size ``block`` are inverted by :func:`_power_inverse`; then neighbouring blocks are merged
    pairwise, ``[[A, 0], [X, D]]^{-1} = [[A^-1, 0], [-D^-1 X A^-1, D^-1]]``, doubling the block size each level.
    A C not of the form ``block * 2^m`` is padded with an identity block. (Not ``solve_triangular``: XLA's CPU
    runtime was seen to deadlock running several of its LAPACK calls at once, in the bidirectional layer.)"""
    C = a.shape[-1]
    if C <= block:
        return _power_inverse(a)
    size = block
    while size < C:
        size *= 2
    if size > C:  # identity padding: block-diagonal, so the inverse's top-left C x C block is a's inverse
        pad = [(0, 0)] * (a.ndim - 2) + [(0, size - C)] * 2
        a = jnp.pad(a, pad) + jnp.diag(jnp.arange(size) >= C).astype(a.dtype)
    batch = a.shape[:-2]
    m = size // block
    inv = _power_inverse(jnp.stack([a[..., i * block:(i + 1) * block, i * block:(i + 1) * block]
                                    for i in range(m)], -3))  # [..., m, block, block]
    s = block
    while m > 1:
        m //= 2
        top, bottom = inv[..., 0::2, :, :], inv[..., 1::2, :, :]  # A^-1, D^-1 of each pair
        x = jnp.stack([a[..., (2 * j + 1) * s:(2 * j + 2) * s, 2 * j * s:(2 * j + 1) * s] for j in range(m)], -3)
        low = -(bottom @ (x @ top))
        zero = jnp.zeros(batch + (m, s, s), a.dtype)
        inv = jnp.concatenate([jnp.concatenate([top, zero], -1), jnp.concatenate([low, bottom], -1)], -2)
        s *= 2
    return inv[..., 0, :C, :C]


def unit_lower_solve(a, b):
    """Solve ``a x = b`` for unit-lower-triangular ``a`` [..., C, C] (:func:`unit_lower_inverse`, then a product)."""
    return unit_lower_inverse(a) @ b


def delta_rule_chunked(q, k, v, beta, chunk_size: int = 16, initial_state=None):
    """Chunkwise-parallel delta rule in the WY / UT form; same outputs and final state as the recurrence.

    All chunks at once, before the loop: ``T`` (:func:`unit_lower_inverse`), ``W = T diag(beta) K``,
    ``U = T diag(beta) V`` and the masked ``Q K^T``. The loop over chunks carries ``S^T`` and does four
    [C x d] products per chunk: ``new_v = U - W S^T``, ``O = Q S^T + (Q K^T * M) new_v``, ``S' = S + new_v^T K``.
    Arrays are laid out [chunks, batch, heads, rows, dim] and K is passed transposed, so every product in the loop
    contracts the last axis of its left factor and XLA emits no transposes there. (Handing the chunk-start states
    out of the loop and forming O after it with big products was measured slower here: the states take d / C
    times the memory of O, and touching fresh memory is what costs on this CPU.)"""
    return _chunked(q, k, v, beta, chunk_size, initial_state, time_axis=2)


def _chunked(q, k, v, beta, chunk_size, initial_state, time_axis):
    """:func:`delta_rule_chunked` for q, k, v laid out [N, H, L, d] (``time_axis=2``) or [N, L, H, d] (``1``,
    beta [N, L, H]); the outputs come back in the same layout. Either way the chunks are put first with ONE
    transpose per array and the outputs come back with one."""
    acc = _acc(q.dtype)
    if time_axis == 1:  # [N, L, H, d] -> [N, H, L, d] order of names; the data moves only in the transpose below
        N, L, H, dk = q.shape
        perm, bperm = (1, 0, 3, 2, 4), (1, 0, 3, 2)  # [N, n, C, H, d] -> [n, N, H, C, d]
    else:
        N, H, L, dk = q.shape
        perm, bperm = (2, 0, 1, 3, 4), (2, 0, 1, 3)  # [N, H, n, C, d] -> [n, N, H, C, d]
    dv = v.shape[-1]
    C = max(1, min(chunk_size, L))
    n = -(-L // C)
    pad = n * C - L
    q, k, v, beta = (a.astype(acc) for a in (q, k, v, beta))
    if pad:  # k = 0, beta = 0: identity transitions that write nothing
        widths = [(0, 0)] * 4
        widths[time_axis] = (0, pad)
        q, k, v = (jnp.pad(a, widths) for a in (q, k, v))
        beta = jnp.pad(beta, widths[:3])
    split = lambda a: a.reshape(a.shape[:time_axis] + (n, C) + a.shape[time_axis + 1:])
    q, k, v = (split(a).transpose(perm) for a in (q, k, v))  # [n, N, H, C, d]
    beta = split(beta).transpose(bperm)[..., None]

    kb = k * beta
    a = jnp.tril(jnp.einsum("nbhid,nbhjd->nbhij", kb, k), -1) + jnp.eye(C, dtype=acc)
    t = unit_lower_inverse(a)
    w, u = t @ kb, t @ (v * beta)  # two products: no concatenated copy of [K, V] to write and slice
    qk = jnp.tril(jnp.einsum("nbhid,nbhjd->nbhij", q, k))

    kt = k.swapaxes(-1, -2)  # [n, N, H, dk, C]

    def body(z, xs):  # z = S^T [N, H, dk, dv]: every product contracts the last axis of its left factor
        q_c, w_c, u_c, kt_c, qk_c = xs
        new_v = u_c - w_c @ z  # U - W S^T
        return z + kt_c @ new_v, q_c @ z + qk_c @ new_v

    z = jnp.zeros((N, H, dv, dk), acc) if initial_state is None else initial_state.astype(acc)
    z, o = jax.lax.scan(body, z.swapaxes(-1, -2), (q, w, u, kt, qk))
    state = z.swapaxes(-1, -2)
    if time_axis == 1:
        o = o.transpose(1, 0, 3, 2, 4).reshape(N, n * C, H, dv)[:, :L]
    else:
        o = o.transpose(1, 2, 0, 3, 4).reshape(N, H, n * C, dv)[:, :, :L]
    return o, state


# ----------------------------------------------------------------------------------------------------- module

def l2_normalize(x, eps=1e-6):
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def reverse_within_length(x, lengths):
    """Reverse each sequence over its first ``lengths[b]`` positions; padded positions stay where they are."""
    L = x.shape[1]
    t = jnp.arange(L)[None, :]
    idx = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def causal_conv(x, w, history=None):
    """Causal depthwise convolution over time: ``x`` [..., L, C], ``w`` [..., K, C] (leading axes broadcast),
    ``history`` [..., K-1, C] of preceding inputs (zeros when None). Returns (output, the last K-1 inputs)."""
    K, L = w.shape[-2], x.shape[-2]
    if history is None:
        history = jnp.zeros(x.shape[:-2] + (K - 1, x.shape[-1]), x.dtype)
    xp = jnp.concatenate([history.astype(x.dtype), x], axis=-2)
    w = w.astype(x.dtype)
    y = sum(xp[..., i:i + L, :] * w[..., i:i + 1, :] for i in range(K))
    return y, xp[..., L:, :]


class ShortConv(nn.Module):
    """Causal depthwise convolution over time (kernel ``size``), optional bias, then SiLU; initialised as PyTorch's
    depthwise ``nn.Conv1d`` (uniform in +-1/sqrt(size), bias likewise). ``weights()`` hands out (kernel, bias or
    None) so that a caller can run several of them as one convolution over the concatenated channels."""

    features: int
    size: int = 4
    use_bias: bool = False
    dtype: Any = jnp.float32

    def setup(self):
        self.kernel = self.param("kernel", torch_uniform(self.size), (self.size, self.features))
        self.bias = self.param("bias", torch_uniform(self.size), (self.features,)) if self.use_bias else None

    def weights(self):
        return self.kernel, self.bias

    def __call__(self, x, history=None):
        """``x`` [B, L, C]; ``history`` [B, size-1, C] of preceding inputs (zeros when None).
        Returns (output, the last size-1 inputs as the next history)."""
        w, b = self.weights()
        y, hist = causal_conv(x, w, history)
        if b is not None:
            y = y + b.astype(x.dtype)
        return nn.silu(y), hist


class _Kernel(nn.Module):
    """A bias-free projection's kernel [fan_in, features], initialised as ``models.init.linear`` (so as
    ``nn.Dense``: same name, shape and values), handed out rather than applied so that the layer can concatenate
    several projections into one product."""

    features: int
    fan_in: int

    @nn.compact
    def __call__(self):
        return self.param("kernel", torch_uniform(self.fan_in), (self.fan_in, self.features))


class DeltaNetStream(NamedTuple):
    state: jax.Array  # [B, H, dv, dk]
    conv: tuple  # three [B, size-1, channels] histories (q, k, v)


class DeltaNetDirection(nn.Module):
    """One direction's parameters: projections, short convs, per-head RMSNorm scale (+ gate). ``weights()`` hands
    them out fused (one input kernel [D, 3 width + H (+ width)], one conv kernel over the 3 width channels) for
    :func:`_features` / :func:`_finish`, which run any number of directions stacked on a leading axis."""

    num_heads: int
    head_dim: int
    chunk_size: int = 16  # fastest or tied in most rows of benchmarks/results/vs_fla_deltanet.md (16 / 32 / 64)
    conv_size: int = 4
    use_gate: bool = False
    norm_eps: float = 1e-5
    conv_bias: bool = False
    dtype: Any = jnp.float32

    def setup(self):
        width = self.num_heads * self.head_dim  # = the input width d_model (fla: expand_k = expand_v = 1)
        self.q_proj, self.k_proj, self.v_proj = (_Kernel(width, width, name=f"{n}_proj") for n in "qkv")
        self.b_proj = _Kernel(self.num_heads, width, name="b_proj")
        conv = lambda name: ShortConv(width, self.conv_size, self.conv_bias, self.dtype, name=name)
        self.q_conv, self.k_conv, self.v_conv = conv("q_conv"), conv("k_conv"), conv("v_conv")
        if self.use_gate:
            self.g_proj = _Kernel(width, width, name="g_proj")
        self.norm_scale = self.param("scale", nn.initializers.ones, (self.head_dim,))

    def weights(self):
        """(input kernel [D, F], conv kernel [K, 3 width], conv bias [3 width] or None, norm scale [d])."""
        projs = [self.q_proj(), self.k_proj(), self.v_proj(), self.b_proj()]
        projs += [self.g_proj()] if self.use_gate else []
        convs = [c.weights() for c in (self.q_conv, self.k_conv, self.v_conv)]
        bias = jnp.concatenate([b for _, b in convs]) if self.conv_bias else None
        return jnp.concatenate(projs, 1), jnp.concatenate([w for w, _ in convs], 1), bias, self.norm_scale

    def __call__(self, x, mask=None):
        o = _features_and_kernel(self, x[None], mask, [self.weights()])
        return o[0]

    def step(self, carry: DeltaNetStream, x_t):
        """One token [B, D] -> (carry, per-head output [B, H * dv])."""
        w = self.weights()
        q, k, v, beta, g, hist = _features(self, x_t[None, :, None], None, [w], jnp.concatenate(carry.conv, -1)[None])
        state, o = delta_rule_step(carry.state, q[0, :, 0], k[0, :, 0], v[0, :, 0], beta[0, :, 0])
        o = _finish(self, o[None, :, None], g, [w])[0, :, 0]
        return DeltaNetStream(state, tuple(jnp.split(hist[0], 3, -1))), o


def _features(cfg, x, mask, weights, history=None):
    """Directions stacked on a leading axis: ``x`` [Z, B, L, D], ``weights`` Z tuples of ``weights()``.
    Returns per-head q, k, v [Z, B, L, H, d], beta [Z, B, L, H], the gate input (or None), the conv history."""
    H, d = cfg.num_heads, cfg.head_dim
    W = H * d
    keep = (lambda a: a) if mask is None else (lambda a: jnp.where(mask[..., None], a, 0.0))
    kernel = jnp.stack([w[0] for w in weights]).astype(cfg.dtype)
    y = jnp.einsum("zbld,zdf->zblf", x.astype(cfg.dtype), kernel)  # all projections of all directions: one product
    qkv, b = keep(y[..., :3 * W]), y[..., 3 * W:3 * W + H]
    g = y[..., 3 * W + H:] if cfg.use_gate else None
    conv_w = jnp.stack([w[1] for w in weights])[:, None]  # [Z, 1, K, 3W]
    qkv, hist = causal_conv(qkv, conv_w, history)
    if cfg.conv_bias:
        qkv = qkv + jnp.stack([w[2] for w in weights])[:, None, None].astype(qkv.dtype)
    qkv = keep(nn.silu(qkv))
    split = lambda a: a.reshape(a.shape[:3] + (H, d))  # [Z, B, L, H, d]: the kernel takes this layout
    q = l2_normalize(split(qkv[..., :W])) * d ** -0.5
    k = l2_normalize(split(qkv[..., W:2 * W]))
    v = split(qkv[..., 2 * W:])
    beta = nn.sigmoid(b.astype(jnp.float32))  # [Z, B, L, H]
    if mask is not None:
        beta = jnp.where(mask[..., None], beta, 0.0)
    return q, k, v, beta, g, hist


def _finish(cfg, o, g, weights):
    """Per-head RMSNorm, optional SiLU gate; [Z, B, L, H, dv] -> [Z, B, L, H * dv]."""
    o = o.astype(jnp.float32)
    scale = jnp.stack([w[3] for w in weights])[:, None, None, None]
    o = o * jax.lax.rsqrt(jnp.mean(o * o, -1, keepdims=True) + cfg.norm_eps) * scale
    o = o.reshape(o.shape[:3] + (-1,)).astype(cfg.dtype)
    if g is not None:
        o = o * nn.silu(g)
    return o


def _features_and_kernel(cfg, x, mask, weights):
    """[Z, B, L, D] -> [Z, B, L, H * dv]: the Z directions through ONE chunked kernel call (stacked on the batch)."""
    q, k, v, beta, g, _ = _features(cfg, x, mask, weights)
    Z, B = x.shape[:2]
    flat = lambda a: a.reshape((Z * B,) + a.shape[2:])
    o, _ = _chunked(flat(q), flat(k), flat(v), flat(beta), cfg.chunk_size, None, time_axis=1)
    return _finish(cfg, o.reshape((Z, B) + o.shape[1:]), g, weights)


def _reverse(x, lengths, mask):
    return jnp.flip(x, 1) if mask is None else reverse_within_length(x, lengths)


class DeltaNet(nn.Module):
    """DeltaNet mixer; ``causal=True``: the forward direction only; ``causal=False``: forward + reversed."""

    d_model: int
    causal: bool = False
    num_heads: int = 4
    chunk_size: int = 16  # fastest or tied in most rows of benchmarks/results/vs_fla_deltanet.md (16 / 32 / 64)
    conv_size: int = 4
    use_gate: bool = False  # fla's default; True: the SiLU output gate
    norm_eps: float = 1e-5
    conv_bias: bool = False  # fla's default
    dtype: Any = jnp.float32

    def setup(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        make = lambda name: DeltaNetDirection(self.num_heads, self.d_model // self.num_heads, self.chunk_size,
                                              self.conv_size, self.use_gate, self.norm_eps, self.conv_bias,
                                              self.dtype, name=name)
        self.fwd = make("fwd")
        if not self.causal:
            self.bwd = make("bwd")
        self.out = linear(self.d_model, self.d_model, use_bias=False, dtype=self.dtype, name="out")

    def __call__(self, x, *, mask=None, deterministic=True):
        if mask is not None:
            x = jnp.where(mask[..., None], x, 0.0)
        if self.causal:
            o = _features_and_kernel(self.fwd, x[None], mask, [self.fwd.weights()])[0]
        else:  # both directions in one pass: the backward one reads each sequence reversed within its length
            lengths = None if mask is None else jnp.sum(mask, 1)
            xs = jnp.stack([x, _reverse(x, lengths, mask)])
            o = _features_and_kernel(self.fwd, xs, mask, [self.fwd.weights(), self.bwd.weights()])
            o = o[0] + _reverse(o[1], lengths, mask)
        if mask is not None:
            o = jnp.where(mask[..., None], o, 0.0)
        return self.out(o)

    def init_stream(self, batch: int) -> DeltaNetStream:
        if not self.causal:
            raise ValueError("streaming needs causal=True (the bidirectional form reads the whole sequence)")
        P, width = self.d_model // self.num_heads, self.d_model
        hist = jnp.zeros((batch, self.conv_size - 1, width), self.dtype)
        return DeltaNetStream(jnp.zeros((batch, self.num_heads, P, P), jnp.float32), (hist, hist, hist))

    def stream(self, carry: DeltaNetStream, x_t):
        """One token ``x_t`` [B, D] -> (carry, output [B, D]); memory independent of the length seen."""
        if not self.causal:
            raise ValueError("streaming needs causal=True (the bidirectional form reads the whole sequence)")
        carry, o = self.fwd.step(carry, x_t)
        return carry, self.out(o)
