"""Hydra: a bidirectional quasiseparable matrix mixer from two SSD passes (Hwang et al. 2024).

**SSD (Mamba-2) pass**, per head h with scalar decay ``a_h < 0``, step sizes ``dt_t > 0``, and b, c shared by the
heads of a group:

    S_t = exp(a dt_t) S_{t-1} + dt_t x_t b_t^T        (S in R^{P x N}),     y_t = S_t c_t

i.e. ``y = M x`` with the semiseparable ``M_ts = <c_t, b_s> exp(a sum_{r=s+1}^{t} dt_r) dt_s`` for s <= t, else 0.

**Quasiseparable mixer** (the Hydra layer), per head, with ``Sh`` the shift down by one (zero first row) and ``J``
the time reversal:

    Y = Sh M_fwd X + J Sh M_bwd J X + diag(delta) X

``M_fwd`` is built from ``(b_fwd, c_fwd, dt_fwd)``, ``M_bwd`` from the time-reversed ``(b_bwd, c_bwd, dt_bwd)``; the
shifts drop each pass's diagonal and the data-dependent ``delta`` fills it. Every block strictly below (or above) the
diagonal has rank <= N.

Forms, each with one signature over ``[batch, heads, length, head_dim]`` (``dt`` ``[B, H, L]``, ``a`` ``[H]``,
``b, c`` ``[B, G, L, N]`` with G groups dividing the heads, ``initial_state``/final state ``[B, H, P, N]``):

* :func:`ssd_chunked` -- the chunked SSD algorithm (chunk T, default 64; lengths padded to a multiple of T with
  ``dt = 0``, an identity step that writes nothing): (1) intra-chunk outputs by a masked ``T x T`` matmul with
  within-chunk cumulative log-decays, (2) each chunk's local state, (3) an inter-chunk ``lax.associative_scan`` over
  the ``L / T`` chunk states (unrolled, so XLA's cost analysis sees all of its work), (4) off-diagonal outputs
  from the incoming state. Cost ``O(L T (N + P) + L N P)`` per head, memory ``O(L T)``.
* :func:`ssd_recurrent` -- the recurrence above, one :func:`ssd_step` per token (``lax.scan``).
* :func:`ssd_dense` / :func:`ssd_matrix` -- the ``L x L`` matrix ``M`` built explicitly (small L only).
* :func:`quasiseparable` -- Hydra's mixer from one :func:`ssd_chunked` call on both directions stacked along the
  batch axis; plain forms :func:`quasiseparable_matrix` (dense ``Q``) and :func:`quasiseparable_dense` (``Q @ x``).

Numerics: log-decays, their within-chunk cumulative sums and every exponential run in float32 (float64 under x64)
whatever the input dtype; only differences of *within-chunk* cumulative sums are exponentiated, and the
above-diagonal differences are masked to -inf before ``exp`` (never exponentiated, so no overflow and no NaN
gradients).

The Flax module :class:`Hydra` follows the official ``hydra/modules/hydra.py``: one input projection into
``[z | x | b_fwd | c_fwd | b_bwd | c_bwd | dt_fwd | dt_bwd]``; a depthwise non-causal conv (kernel 7, centred) + SiLU
over ``[x, b's, c's]``; ``dt = softplus(raw + dt_bias)``, ``A = -exp(A_log)`` and ``x`` shared by both directions;
``delta = D + fc_D(x)``; ``out_proj(RMSNorm(Y) * SiLU(z))``. ``causal=True`` is its causal relative Mamba-2 (forward
pass only, causal conv, no shift, ``delta = D``), with a recurrent step mode (:meth:`Hydra.init_stream`,
:meth:`Hydra.stream`) equal to the parallel form.

Initialisation as the official PyTorch module (goombalab/hydra, ``hydra/modules/hydra.py``): ``in_proj``,
``fc_D`` and ``out_proj`` are ``nn.Linear`` without bias and ``conv1d`` a depthwise ``nn.Conv1d`` with bias
(``conv_bias=True``), all at PyTorch's default, uniform in +-1/sqrt(fan_in) for weights and biases (fan_in: the
input width; the kernel size for the depthwise conv) (:mod:`models.init`). The project's earlier defaults were
Flax's LeCun-normal projections and a zero conv bias.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.init import linear, torch_uniform


def _acc(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def _per_head(bc, heads):
    """``[B, G, L, N]`` (or ``[B, G, N]``) group tensors -> one copy per head, ``[B, H, ...]``."""
    return jnp.repeat(bc, heads // bc.shape[1], axis=1)


def _check_groups(x, b):
    if x.shape[1] % b.shape[1]:
        raise ValueError(f"{x.shape[1]} heads are not divisible into {b.shape[1]} groups of b, c")


# ----------------------------------------------------------------------------------------------------- SSD kernels

def ssd_step(state, x_t, dt_t, a, b_t, c_t):
    """One token: ``state`` [B, H, P, N], ``x_t`` [B, H, P], ``dt_t`` [B, H], ``a`` [H], ``b_t, c_t`` [B, G, N].
    Returns ``(state, y_t [B, H, P])``."""
    H = x_t.shape[1]
    b_t, c_t = _per_head(b_t, H), _per_head(c_t, H)
    decay = jnp.exp(a * dt_t)[..., None, None]
    state = decay * state + (dt_t[..., None] * x_t)[..., None] * b_t[:, :, None, :]
    return state, jnp.einsum("bhpn,bhn->bhp", state, c_t)


def ssd_recurrent(x, dt, a, b, c, initial_state=None):
    """Plain form: the recurrence, token by token. Returns ``(y [B, H, L, P], final_state [B, H, P, N])``."""
    _check_groups(x, b)
    acc = _acc(x.dtype)
    B, H, L, P = x.shape
    state = jnp.zeros((B, H, P, b.shape[-1]), acc) if initial_state is None else initial_state.astype(acc)
    xs = (x.astype(acc).transpose(2, 0, 1, 3), dt.astype(acc).transpose(2, 0, 1),
          b.astype(acc).transpose(2, 0, 1, 3), c.astype(acc).transpose(2, 0, 1, 3))

    def body(s, inp):
        x_t, dt_t, b_t, c_t = inp
        return ssd_step(s, x_t, dt_t, a.astype(acc), b_t, c_t)

    state, y = jax.lax.scan(body, state, xs)
    return y.transpose(1, 2, 0, 3).astype(x.dtype), state


def _segment_sums(la):
    """``seg[..., t, s] = sum_{r=s+1}^{t} la[..., r]`` for s <= t (each a plain sum, no differences), -inf above."""
    L = la.shape[-1]
    below = jnp.tril(jnp.ones((L, L), bool), -1)
    seg = jnp.cumsum(jnp.where(below, la[..., :, None], 0.0), axis=-2)
    return jnp.where(jnp.tril(jnp.ones((L, L), bool)), seg, -jnp.inf)


def ssd_matrix(dt, a, b, c):
    """Plain form: the semiseparable matrix ``M`` [B, H, L, L] of one SSD pass (row t = output, column s = input)."""
    acc = _acc(dt.dtype)
    H = dt.shape[1]
    dt = dt.astype(acc)
    la = a.astype(acc)[None, :, None] * dt
    cb = jnp.einsum("bhtn,bhsn->bhts", _per_head(c.astype(acc), H), _per_head(b.astype(acc), H))
    return cb * jnp.exp(_segment_sums(la)) * dt[:, :, None, :]


def ssd_dense(x, dt, a, b, c, initial_state=None):
    """Plain form: ``y = M x`` with ``M`` from :func:`ssd_matrix`, plus the initial state's decayed readout.
    Returns ``(y, final_state)`` like :func:`ssd_recurrent`."""
    _check_groups(x, b)
    acc = _acc(x.dtype)
    B, H, L, P = x.shape
    xa, dta = x.astype(acc), dt.astype(acc)
    bh, ch = _per_head(b.astype(acc), H), _per_head(c.astype(acc), H)
    y = ssd_matrix(dt, a, b, c) @ xa
    la = a.astype(acc)[None, :, None] * dta
    to_end = jnp.exp(_segment_sums(la)[..., -1, :])  # decay from s to the end: exp(sum_{r>s} la_r)
    final = jnp.einsum("bhs,bhsp,bhsn->bhpn", to_end * dta, xa, bh)
    if initial_state is not None:
        s0 = initial_state.astype(acc)
        from_start = jnp.exp(jnp.cumsum(la, -1))  # exp(sum_{r<=t} la_r)
        y = y + from_start[..., None] * jnp.einsum("bhpn,bhtn->bhtp", s0, ch)
        final = final + from_start[..., -1, None, None] * s0
    return y.astype(x.dtype), final


def ssd_chunked(x, dt, a, b, c, chunk_size: int = 64, initial_state=None):
    """Chunked SSD; same outputs and final state as :func:`ssd_recurrent`, for any length."""
    _check_groups(x, b)
    acc = _acc(x.dtype)
    B, H, L, P = x.shape
    G, N = b.shape[1], b.shape[-1]
    T = max(1, min(chunk_size, L))
    n = -(-L // T)
    pad = n * T - L
    xa, dta, ba, ca = (t.astype(acc) for t in (x, dt, b, c))
    if pad:  # dt = 0, x = 0: identity steps that write nothing (the final state is unchanged)
        padl = lambda t: jnp.pad(t, ((0, 0), (0, 0), (0, pad)) + ((0, 0),) * (t.ndim - 3))
        xa, dta, ba, ca = (padl(t) for t in (xa, dta, ba, ca))
    # z batch, g group, h head, k chunk, t/s position in chunk, p head dim, i state dim. Work is laid out per head
    # ([B, H, n, T, ...]; only C B^T is computed per group): the per-head decay mask is [B, H, n, T, T] anyway, and
    # a [B, G, H/G, ...] layout made XLA's CPU backend segfault in jit(jacrev) (see the test
    # test_bidirectional_module_sees_both_sides).
    xa = xa.reshape(B, H, n, T, P)
    dta = dta.reshape(B, H, n, T)
    ba, ca = ba.reshape(B, G, n, T, N), ca.reshape(B, G, n, T, N)
    la = a.astype(acc)[None, :, None, None] * dta
    gam = jnp.cumsum(la, axis=-1)  # within-chunk cumulative log-decay, <= 0, decreasing

    # 1. intra-chunk: (C B^T * Ldec * dt_s) X, with Ldec_ts = exp(gam_t - gam_s) for s <= t
    causal = jnp.tril(jnp.ones((T, T), bool))
    ldec = jnp.exp(jnp.where(causal, gam[..., :, None] - gam[..., None, :], -jnp.inf))
    cb = _per_head(jnp.einsum("zgkti,zgksi->zgkts", ca, ba), H)
    y = jnp.einsum("zhkts,zhksp->zhktp", cb * ldec * dta[..., None, :], xa)
    bh, ch = _per_head(ba, H), _per_head(ca, H)

    # 2. each chunk's own end state: sum_s exp(gam_end - gam_s) dt_s x_s b_s^T
    to_end = jnp.exp(gam[..., -1:] - gam) * dta
    local = jnp.einsum("zhks,zhksp,zhksi->zhkpi", to_end, xa, bh)

    # 3. inter-chunk: S_end,k = exp(gam_end,k) S_end,k-1 + local_k, by an associative scan over the chunks
    def combine(first, second):
        (d1, s1), (d2, s2) = first, second
        return d1 * d2, d2[..., None, None] * s1 + s2

    decay_prod, ends = jax.lax.associative_scan(combine, (jnp.exp(gam[..., -1]), local), axis=2)
    if initial_state is None:
        s0 = jnp.zeros((B, H, 1, P, N), acc)
    else:
        s0 = initial_state.astype(acc)[:, :, None]
        ends = ends + decay_prod[..., None, None] * s0
    starts = jnp.concatenate([s0, ends[:, :, :-1]], axis=2)

    # 4. off-diagonal: what enters chunk k, decayed to each position and read out by c_t
    y = y + jnp.exp(gam)[..., None] * jnp.einsum("zhkti,zhkpi->zhktp", ch, starts)
    y = y.reshape(B, H, n * T, P)[:, :, :L]
    return y.astype(x.dtype), ends[:, :, -1]


# ----------------------------------------------------------------------------------------------------- quasiseparable

def shift_down(y):
    """``(Sh y)_0 = 0``, ``(Sh y)_t = y_{t-1}`` along axis 2 (not a roll: row 0 is zero)."""
    return jnp.pad(y, ((0, 0), (0, 0), (1, 0)) + ((0, 0),) * (y.ndim - 3))[:, :, :-1]


def _flip(t):
    return jnp.flip(t, axis=2)


def quasiseparable(x, dt_fwd, dt_bwd, a, b_fwd, c_fwd, b_bwd, c_bwd, delta, chunk_size: int = 64):
    """Hydra's mixer ``Y = Sh M_fwd X + J Sh M_bwd J X + diag(delta) X`` by one chunked SSD call over both directions
    stacked along the batch axis. All inputs in forward time order (the backward direction reads its ``dt_bwd``,
    ``b_bwd``, ``c_bwd`` reversed); ``delta`` [B, H, L]. Returns ``y`` [B, H, L, P]."""
    B = x.shape[0]
    stack = lambda fwd, bwd: jnp.concatenate([fwd, _flip(bwd)], axis=0)
    y, _ = ssd_chunked(stack(x, x), stack(dt_fwd, dt_bwd), a, stack(b_fwd, b_bwd), stack(c_fwd, c_bwd), chunk_size)
    y = shift_down(y)
    return y[:B] + _flip(y[B:]) + delta[..., None].astype(x.dtype) * x


def quasiseparable_matrix(dt_fwd, dt_bwd, a, b_fwd, c_fwd, b_bwd, c_bwd, delta):
    """Plain form: the dense ``Q = Sh M_fwd + J Sh M_bwd J + diag(delta)``, ``[B, H, L, L]``."""
    m_fwd = ssd_matrix(dt_fwd, a, b_fwd, c_fwd)
    m_bwd = ssd_matrix(_flip(dt_bwd), a, _flip(b_bwd), _flip(c_bwd))
    L = dt_fwd.shape[-1]
    diag = delta.astype(m_fwd.dtype)[..., :, None] * jnp.eye(L, dtype=m_fwd.dtype)
    return shift_down(m_fwd) + shift_down(m_bwd)[:, :, ::-1, ::-1] + diag


def quasiseparable_dense(x, dt_fwd, dt_bwd, a, b_fwd, c_fwd, b_bwd, c_bwd, delta):
    """Plain form: ``Q @ x`` with ``Q`` from :func:`quasiseparable_matrix`."""
    q = quasiseparable_matrix(dt_fwd, dt_bwd, a, b_fwd, c_fwd, b_bwd, c_bwd, delta)
    return (q @ x.astype(q.dtype)).astype(x.dtype)


# ----------------------------------------------------------------------------------------------------- module

class DepthwiseConv1d(nn.Module):
    """Depthwise convolution over time with bias: centred ("same") padding, or causal (left) padding with an
    optional ``history`` of preceding inputs for streaming."""

    features: int
    size: int = 7
    causal: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, history=None):
        """``x`` [B, L, C] -> (output [B, L, C], the last ``size - 1`` inputs: the next call's causal history)."""
        # PyTorch's Conv1d default for a depthwise kernel (fan_in = size), for the weight and the bias alike
        w = self.param("kernel", torch_uniform(self.size), (self.size, self.features))
        bias = self.param("bias", torch_uniform(self.size), (self.features,))
        left = self.size - 1 if self.causal else (self.size - 1) // 2
        right = self.size - 1 - left
        B, L, C = x.shape
        if history is None:
            history = jnp.zeros((B, left, C), x.dtype)
        xp = jnp.concatenate([history.astype(x.dtype), x, jnp.zeros((B, right, C), x.dtype)], axis=1)
        y = sum(xp[:, i:i + L] * w[i].astype(x.dtype) for i in range(self.size)) + bias.astype(x.dtype)
        return y, xp[:, L:L + left]


def dt_bias_init(dt_min: float, dt_max: float, floor: float):
    """``dt`` log-uniform in [dt_min, dt_max], floored, stored as its inverse softplus ``dt + log(-expm1(-dt))``."""
    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, jnp.float32)
        dt = jnp.maximum(jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)), floor)
        return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)
    return init


class HydraStream(NamedTuple):
    state: jax.Array  # [B, H, P, N] float32
    conv: jax.Array  # [B, d_conv - 1, conv channels]: the causal conv's history


class Hydra(nn.Module):
    """Hydra mixer (bidirectional, the default) or, with ``causal=True``, its causal relative Mamba-2."""

    d_model: int
    causal: bool = False
    d_state: int = 64
    head_dim: int = 64
    expand: int = 2
    d_conv: int = 7
    chunk_size: int = 64  # benchmarks/results/hydra.md: fewest flops, least memory and fastest on CPU (official: 256)
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    norm_eps: float = 1e-5
    dtype: Any = jnp.float32

    @property
    def inner(self) -> int:
        return self.expand * self.d_model

    @property
    def num_heads(self) -> int:
        return self.inner // self.head_dim

    @property
    def directions(self) -> int:
        return 1 if self.causal else 2

    def setup(self):
        E, N, H, d = self.inner, self.d_state, self.num_heads, self.directions
        if E % self.head_dim:
            raise ValueError(f"Hydra: head_dim={self.head_dim} does not divide the inner width expand * d_model = "
                             f"{self.expand} * {self.d_model} = {E}")
        D = self.d_model
        self.in_proj = linear(2 * E + 2 * d * N + d * H, D, use_bias=False, dtype=self.dtype, name="in_proj")
        self.conv = DepthwiseConv1d(E + 2 * d * N, self.d_conv, self.causal, self.dtype, name="conv")
        self.nd_dt_bias = self.param("nd_dt_bias", dt_bias_init(self.dt_min, self.dt_max, self.dt_init_floor), (H,))
        self.nd_A_log = self.param("nd_A_log", nn.initializers.zeros, (H,))  # a = -exp(0) = -1 in every head
        self.nd_D = self.param("nd_D", nn.initializers.ones, (H,))
        if not self.causal:
            self.fc_D = linear(H, E, use_bias=False, dtype=self.dtype, name="fc_D")
        self.norm_scale = self.param("scale", nn.initializers.ones, (E,))
        self.out_proj = linear(self.d_model, E, use_bias=False, dtype=self.dtype, name="out_proj")

    # [B, L, H * P] <-> [B, H, L, P]
    def _heads(self, u):
        return u.reshape(u.shape[:2] + (self.num_heads, self.head_dim)).transpose(0, 2, 1, 3)

    @staticmethod
    def _merge(y):
        return y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)

    def _project(self, x):
        """-> z [B, L, E], conv input [B, L, E + 2dN], step sizes dt [B, L, dH] (float32, after softplus)."""
        E = self.inner
        zxbcdt = self.in_proj(x)
        z, xbc, dt = jnp.split(zxbcdt, [E, zxbcdt.shape[-1] - self.directions * self.num_heads], axis=-1)
        bias = jnp.tile(self.nd_dt_bias, self.directions)
        return z, xbc, jax.nn.softplus(dt.astype(jnp.float32) + bias)

    def _gate(self, y, z):
        """RMSNorm over the inner width (float32), then the SiLU(z) gate, then the output projection."""
        y = y.astype(jnp.float32)
        y = y * jax.lax.rsqrt(jnp.mean(y * y, -1, keepdims=True) + self.norm_eps) * self.norm_scale
        return self.out_proj((y * nn.silu(z.astype(jnp.float32))).astype(self.dtype))

    def __call__(self, x, *, mask=None, deterministic=True):
        keep = (lambda t: t) if mask is None else (lambda t: jnp.where(mask[..., None], t, 0).astype(t.dtype))
        E, N, H = self.inner, self.d_state, self.num_heads
        z, xbc, dt = self._project(keep(x))
        xbc, _ = self.conv(keep(xbc))
        xbc = keep(nn.silu(xbc))  # the centred conv reads padded neighbours: zero them again after it
        dt = keep(dt).transpose(0, 2, 1)  # [B, dH, L]; dt = 0 at padding: an identity step
        u = xbc[..., :E]
        xh = self._heads(u)
        a = -jnp.exp(self.nd_A_log.astype(jnp.float32))
        bc = xbc[:, None, :, E:]  # [B, 1, L, 2dN]: one group of b, c shared by all heads
        if self.causal:
            y, _ = ssd_chunked(xh, dt, a, bc[..., :N], bc[..., N:], self.chunk_size)
            y = y + self.nd_D[:, None, None].astype(y.dtype) * xh
        else:
            delta = (self.fc_D(u).astype(jnp.float32) + self.nd_D).transpose(0, 2, 1)  # [B, H, L]
            b_f, c_f, b_b, c_b = jnp.split(bc, 4, axis=-1)
            y = quasiseparable(xh, dt[:, :H], dt[:, H:], a, b_f, c_f, b_b, c_b, delta, self.chunk_size)
        return keep(self._gate(self._merge(y), z))

    def init_stream(self, batch: int) -> HydraStream:
        if not self.causal:
            raise ValueError("streaming needs causal=True (the bidirectional Hydra reads the whole sequence)")
        channels = self.inner + 2 * self.d_state
        return HydraStream(jnp.zeros((batch, self.num_heads, self.head_dim, self.d_state), jnp.float32),
                           jnp.zeros((batch, self.d_conv - 1, channels), self.dtype))

    def stream(self, carry: HydraStream, x_t):
        """One token ``x_t`` [B, D] -> (carry, output [B, D]): the recurrent form of ``causal=True``; memory
        independent of the length seen."""
        if not self.causal:
            raise ValueError("streaming needs causal=True (the bidirectional Hydra reads the whole sequence)")
        E, N = self.inner, self.d_state
        z, xbc, dt = self._project(x_t[:, None])
        xbc, history = self.conv(xbc, carry.conv)
        xbc = nn.silu(xbc)[:, 0]
        x_h = xbc[:, :E].reshape(-1, self.num_heads, self.head_dim)
        a = -jnp.exp(self.nd_A_log.astype(jnp.float32))
        state, y = ssd_step(carry.state, x_h.astype(jnp.float32), dt[:, 0], a,
                            xbc[:, None, E:E + N].astype(jnp.float32), xbc[:, None, E + N:].astype(jnp.float32))
        y = y + self.nd_D[:, None] * x_h
        out = self._gate(y.reshape(y.shape[0], 1, E), z)
        return HydraStream(state, history.astype(carry.conv.dtype)), out[:, 0]
