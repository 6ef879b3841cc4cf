"""S4 and S4D: structured state-space sequence mixers (Gu et al. 2022; Gu et al. 2022, "On the Parameterization and
Initialization of Diagonal State Space Models").

Each of the H channels is a linear system ``x' = A x + B u``, ``y = C^T x`` with a complex state of size N, of which
N' = N/2 eigenvalues are stored (the other half are their conjugates, which makes every kernel real). S4 uses
``A = Lambda - P P^H`` (diagonal plus low rank, from HiPPO-LegS) and learns ``C~ = (I - Abar^L)^T C``, so its
length-L convolution kernel comes from the truncated generating function evaluated at the roots of unity: four
Cauchy sums and a Woodbury correction, then an inverse FFT. S4D drops P and evaluates its kernel as a Vandermonde
product. The layer convolves each channel with its kernel through FFTs of length 2L (linear, not circular).

Layout of the pure functions: parameters are complex arrays (the module stores them as real pairs), ``Lambda``,
``P``, ``B`` are ``[G, N']`` for G copies shared over the H channels (channel h uses copy ``h % G``), ``C`` is
``[K, H, N']`` for K output vectors (1 causal, 2 bidirectional), ``log_dt`` is ``[H]``; kernels are ``[K, H, L]``;
sequences are ``[B, H, L]``. Next to each fast function stands its plain form: dense discretised matrices and
repeated multiplication, the O(L^2) convolution sum, the step-by-step recurrence.

Reference code: state-spaces/s4 (PyTorch), ``models/s4/s4.py``. The layer's own projection (the ``Linear(H -> 2H)``
before the GLU) is initialised as PyTorch's layer (uniform in +-1/sqrt(H), bias likewise; :mod:`models.init`); the
project's earlier default was Flax's LeCun normal kernel and a zero bias.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.init import linear

# ------------------------------------------------------------------------------------------------ initialisation


def hippo_legs(N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HiPPO-LegS ``(A, B, P)`` in float64: ``A_nk = -sqrt((2n+1)(2k+1))`` below the diagonal, ``-(n+1)`` on it;
    ``B_n = sqrt(2n+1)``; ``P_n = sqrt(n+1/2)``, so that ``A + P P^T = -I/2 + S`` with S skew-symmetric."""
    q = np.sqrt(2.0 * np.arange(N) + 1.0)
    A = -np.tril(np.outer(q, q), -1) - np.diag(np.arange(N) + 1.0)
    return A, q.copy(), np.sqrt(np.arange(N) + 0.5)


def nplr_legs(N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normal-plus-low-rank form of HiPPO-LegS: ``A = V (Lambda - p p^H) V^H`` over the full (conjugate-doubled)
    state. Returns the N/2 stored ``(Lambda, p, b)`` (eigenvalues with negative imaginary part) and their
    eigenvectors ``V`` [N, N/2]; the other half are the complex conjugates. The skew part is diagonalised with a
    Hermitian eigensolver on ``-i S`` in float64 (eigenvalues ``-1/2 + i w``)."""
    if N % 2:
        raise ValueError(f"the S4 state size must be even (conjugate pairs), got {N}")
    A, B, P = hippo_legs(N)
    S = A + np.outer(P, P) + 0.5 * np.eye(N)  # skew-symmetric
    w, V = np.linalg.eigh(-1j * S)  # -iS is Hermitian: S = V diag(i w) V^H
    keep = np.argsort(w)[: N // 2]  # the N/2 most negative w: one of each +-w pair
    V = V[:, keep]
    return -0.5 + 1j * w[keep], V.conj().T @ P, V.conj().T @ B, V


def init_lambda(N: int, init: str) -> np.ndarray:
    """The N/2 stored eigenvalues for state size N: ``legs`` (HiPPO-LegS, as S4), ``lin`` (``-1/2 + i pi n``) or
    ``inv`` (``-1/2 + i (N/pi)(N/(2n+1) - 1)``), the S4D initialisations."""
    n = np.arange(N // 2)
    if init == "legs":
        return nplr_legs(N)[0]
    if init == "lin":
        return -0.5 + 1j * np.pi * n
    if init == "inv":
        return -0.5 + 1j * (N / np.pi) * (N / (2 * n + 1) - 1)
    raise ValueError(f"unknown S4 init {init!r}; expected 'legs', 'lin' or 'inv'")


def log_dt_init(key, H: int, dt_min: float, dt_max: float):
    """Per-channel ``log(dt)`` uniform in ``[log dt_min, log dt_max]``."""
    return jax.random.uniform(key, (H,), jnp.float32, math.log(dt_min), math.log(dt_max))


# ------------------------------------------------------------------------------------------- kernel: fast path

# Elements (complex) of one chunk's [..., nodes, N] intermediate in the Cauchy and Vandermonde sums: bounded so that
# the Path-X case (H=256, N=64, L=16384: 1e9 elements at once) never builds a multi-GB array, forward or backward.
CHUNK_ELEMENTS = 1 << 22


def _over_node_chunks(f, nodes, width: int, chunk: int | None):
    """``f(nodes)`` -> ``[..., len(nodes)]``, evaluated over chunks of the nodes when the ``width`` elements per node
    would exceed CHUNK_ELEMENTS; each chunk is rematerialised in the backward pass (only its inputs are kept)."""
    n = nodes.shape[0]
    chunk = chunk or max(1, CHUNK_ELEMENTS // max(width, 1))
    if chunk >= n:
        return f(nodes)
    num = -(-n // chunk)
    padded = jnp.concatenate([nodes, jnp.broadcast_to(nodes[:1], (num * chunk - n,))])
    out = jax.lax.map(jax.checkpoint(f), padded.reshape(num, chunk))  # [num, ..., chunk]
    out = jnp.moveaxis(out, 0, -2)
    return out.reshape(*out.shape[:-2], num * chunk)[..., :n]


def cauchy(v, z, w, *, chunk: int | None = None):
    """``out[..., l] = sum_n v[..., n] / (z[l] - w[..., n])``; ``v`` and ``w`` broadcast together, ``z`` is 1-D.

    The reciprocals ``1 / (z_l - w_n)`` are formed once per pole and node and shared by every numerator that
    broadcasts against them (S4's four sums share their poles), then contracted as a batched matrix product.
    Memory O(chunk * w.size), not O(len(z) * v.size)."""
    lead = jnp.broadcast_shapes(v.shape[:-1], w.shape[:-1])

    def f(zc):
        r = 1.0 / (zc[:, None] - w[..., None, :])  # [..., chunk, N], one per pole
        return jnp.einsum("...n,...ln->...l", v, r)

    return jnp.broadcast_to(_over_node_chunks(f, z, w.size, chunk), (*lead, z.shape[0]))


def cauchy_direct(v, z, w):
    """Plain form of :func:`cauchy`: the whole ``[..., len(z), N]`` array of terms at once."""
    return jnp.sum(v[..., None, :] / (z[:, None] - w[..., None, :]), -1)


def _expand(param, H: int):
    """``[G, N']`` copies -> ``[H, N']`` (channel h uses copy ``h % G``)."""
    G = param.shape[0]
    if H % G:
        raise ValueError(f"{G} SSM copies do not divide {H} channels")
    return jnp.tile(param, (H // G, 1))


def _conj_full(a):
    """The full state's vector ``[a, conj(a)]`` along the last axis."""
    return jnp.concatenate([a, jnp.conj(a)], -1)


def _half_tangents(L: int, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``tan(pi k / L)`` for the DFT nodes ``omega_k = exp(-2 pi i k / L)`` (``(1 - omega)/(1 + omega) = i tan``),
    computed in float64; the Nyquist node (k = L/2, where the tangent is infinite) gets 0 and is flagged."""
    nyquist = (2 * ks) % (2 * L) == L
    t = np.tan(np.pi * np.where(nyquist, 0, ks) / L)
    return t, nyquist


def dplr_transfer(Lambda, P, B, C, log_dt, L: int, ks, *, chunk: int | None = None):
    """The kernel's DFT ``Khat_k = sum_l K_l omega_k^l`` at the nodes ``omega_k = exp(-2 pi i k/L)``, k in ``ks``.

    With ``g = (2/dt)(1 - omega)/(1 + omega) = (2/dt) i tan(pi k/L)`` and the four Cauchy sums over the full state
    ``r_ab = sum_n a_n b_n / (g - lambda_n)``: ``Khat = 2/(1+omega) [r_cb - r_cp r_pb / (1 + r_pp)]`` with
    ``2/(1+omega) = 1 + i tan``. At the Nyquist node ``omega = -1`` (both factors infinite) the limit is exact:
    ``Khat = (dt/2) sum_n c_n b_n``. Sums are written as ``dt * sum a b / (2 i tan - dt lambda)`` so the nodes are
    shared by all channels and no node is infinite. Returns ``[K, H, len(ks)]`` complex.
    """
    Kc, H, _ = C.shape
    t, nyquist = _half_tangents(L, np.asarray(ks))
    cdt = jnp.promote_types(C.dtype, jnp.complex64)
    dt = jnp.exp(log_dt).astype(cdt)[:, None]  # [H, 1]
    lam, p, b = (_conj_full(_expand(a, H)).astype(cdt) for a in (Lambda, P, B))  # [H, N]
    c = _conj_full(C).astype(cdt)  # [K, H, N]
    pc = jnp.conj(p)
    v = jnp.concatenate([c * b, c * p, (pc * b)[None], (pc * p)[None]], 0) * dt  # [2K + 2, H, N]
    z = jnp.asarray(2j * t, cdt)
    r = cauchy(v, z, dt * lam, chunk=chunk)  # [2K + 2, H, nodes]
    r_cb, r_cp, r_pb, r_pp = r[:Kc], r[Kc:2 * Kc], r[2 * Kc], r[2 * Kc + 1]
    khat = (1.0 + 1j * jnp.asarray(t, cdt)) * (r_cb - r_cp * r_pb / (1.0 + r_pp))
    nyq = 0.5 * dt * jnp.sum(c * b, -1, keepdims=True)  # [K, H, 1]
    return jnp.where(jnp.asarray(nyquist), nyq, khat)


def dplr_kernel(Lambda, P, B, C, log_dt, L: int, *, chunk: int | None = None):
    """S4's length-L kernel ``[K, H, L]`` (real) from the generating function at the ``L//2 + 1`` nonnegative
    frequencies and an inverse real FFT. ``C`` is S4's learned ``C~ = (I - Abar^L)^T C``."""
    khat = dplr_transfer(Lambda, P, B, C, log_dt, L, np.arange(L // 2 + 1), chunk=chunk)
    return jnp.fft.irfft(khat, n=L, axis=-1)


def discretize_diag(Lambda, B, log_dt, disc: str):
    """Diagonal ``(Abar, Bbar)`` ``[H, N']`` for S4D: ``zoh`` (``exp(dt lambda)``, ``(exp(dt lambda)-1)/lambda b``)
    or ``bilinear`` (``(1 + dt lambda/2)/(1 - dt lambda/2)``, ``dt b/(1 - dt lambda/2)``)."""
    dt = jnp.exp(log_dt)[:, None]
    H = log_dt.shape[0]
    lam, b = _expand(Lambda, H), _expand(B, H)
    dl = dt * lam
    if disc == "zoh":
        Abar = jnp.exp(dl)
        return Abar, (Abar - 1.0) / lam * b
    if disc == "bilinear":
        return (1.0 + dl / 2) / (1.0 - dl / 2), dt * b / (1.0 - dl / 2)
    raise ValueError(f"unknown S4D discretisation {disc!r}; expected 'zoh' or 'bilinear'")


def s4d_kernel(Lambda, B, C, log_dt, L: int, disc: str = "zoh", *, chunk: int | None = None):
    """S4D kernel ``K_l = 2 Re sum_n C_n Bbar_n Abar_n^l`` (Vandermonde; the 2 counts the conjugate half) ``[K, H, L]``,
    evaluated over chunks of l. ``C`` is the plain output vector (S4D has no C~ reparameterisation)."""
    Abar, Bbar = discretize_diag(Lambda, B, log_dt, disc)
    cdt = jnp.promote_types(C.dtype, jnp.complex64)
    v = (C * Bbar).astype(cdt)  # [K, H, N']
    log_a = jnp.log(Abar.astype(cdt))
    rdt = jnp.zeros((), cdt).real.dtype

    def f(ls):  # [chunk] -> [K, H, chunk]
        return 2.0 * jnp.sum(v[..., None, :] * jnp.exp(ls[:, None] * log_a[:, None, :]), -1).real

    return _over_node_chunks(f, jnp.arange(L, dtype=rdt), v.size, chunk)


# ----------------------------------------------------------------------------------------- kernel: plain forms


def dplr_discretize(Lambda, P, B, C, log_dt, L: int):
    """Dense bilinear discretisation of the full (conjugate-doubled) DPLR system, per channel:
    ``Abar [H, N, N]``, ``Bbar [H, N]`` and the plain output vector ``C = solve((I - Abar^L)^T, C~)`` ``[K, H, N]``
    (undoing S4's C~ reparameterisation for length L). Used by the reference kernel and the step mode."""
    H = log_dt.shape[0]
    cdt = jnp.promote_types(C.dtype, jnp.complex64)
    lam, p, b = (_conj_full(_expand(a, H)).astype(cdt) for a in (Lambda, P, B))
    c = _conj_full(C).astype(cdt)
    N = lam.shape[-1]
    eye = jnp.eye(N, dtype=cdt)
    A = jax.vmap(jnp.diag)(lam) - p[:, :, None] * jnp.conj(p)[:, None, :]  # [H, N, N]
    dt = jnp.exp(log_dt).astype(cdt)[:, None, None]
    left = eye - dt / 2 * A
    Abar = jnp.linalg.solve(left, eye + dt / 2 * A)
    Bbar = jnp.linalg.solve(left, (dt[..., 0] * b)[..., None])[..., 0]
    AL = jax.vmap(lambda a: jnp.linalg.matrix_power(a, L))(Abar)
    Cplain = jnp.linalg.solve(jnp.swapaxes(eye - AL, -1, -2), c[..., None])[..., 0]  # [K, H, N]
    return Abar, Bbar, Cplain


def _krylov_kernel(Abar, Bbar, C, L: int, scale: float = 1.0):
    """``K_l = scale * Re(C^T Abar^l Bbar)`` by repeated multiplication; dense ``Abar [H, N, N]`` or diagonal
    ``Abar [H, N]``."""
    def step(x, _):
        y = scale * jnp.sum(C * x, -1).real  # [K, H]
        x = jnp.einsum("hnm,hm->hn", Abar, x) if Abar.ndim == 3 else Abar * x
        return x, y

    _, ks = jax.lax.scan(step, Bbar, None, length=L)
    return jnp.moveaxis(ks, 0, -1)


def dplr_kernel_dense(Lambda, P, B, C, log_dt, L: int):
    """Plain form of :func:`dplr_kernel`: dense matrices, matrix inverses, ``K_l = C^T Abar^l Bbar``."""
    Abar, Bbar, Cplain = dplr_discretize(Lambda, P, B, C, log_dt, L)
    return _krylov_kernel(Abar, Bbar, Cplain, L)


def s4d_kernel_dense(Lambda, B, C, log_dt, L: int, disc: str = "zoh"):
    """Plain form of :func:`s4d_kernel`: repeated multiplication by the diagonal ``Abar``."""
    Abar, Bbar = discretize_diag(Lambda, B, log_dt, disc)
    return _krylov_kernel(Abar, Bbar, C, L, scale=2.0)


# ------------------------------------------------------------------------------------------------ convolution


def fft_conv(u, k):
    """Causal (linear) convolution ``y_t = sum_{s<=t} k_{t-s} u_s`` along the last axis via FFTs of length 2L.
    ``u`` [B, H, L], ``k`` [H, L]."""
    L = u.shape[-1]
    y = jnp.fft.irfft(jnp.fft.rfft(u, n=2 * L) * jnp.fft.rfft(k, n=2 * L), n=2 * L)
    return y[..., :L]


def fft_conv_bidirectional(u, k_fwd, k_bwd):
    """``y_t = sum_{s<=t} k_fwd[t-s] u_s + sum_{s>t} k_bwd[s-t-1] u_s``: one length-2L kernel
    ``[k_fwd, reverse(k_bwd)]`` and one circular convolution of size 2L (u zero-padded)."""
    L = u.shape[-1]
    k = jnp.concatenate([k_fwd, k_bwd[..., ::-1]], -1)
    y = jnp.fft.irfft(jnp.fft.rfft(u, n=2 * L) * jnp.fft.rfft(k, n=2 * L), n=2 * L)
    return y[..., :L]


def conv_direct(u, k):
    """Plain form of :func:`fft_conv`: the O(L^2) sum through the lower-triangular Toeplitz matrix."""
    L = u.shape[-1]
    lag = jnp.arange(L)[:, None] - jnp.arange(L)[None, :]
    T = jnp.where(lag >= 0, k[..., jnp.clip(lag, 0, L - 1)], 0.0)  # [H, L, L]
    return jnp.einsum("hts,bhs->bht", T, u)


def conv_bidirectional_direct(u, k_fwd, k_bwd):
    """Plain form of :func:`fft_conv_bidirectional`: the full Toeplitz matrix (lower part from ``k_fwd``, strictly
    upper part from ``k_bwd`` shifted by one)."""
    L = u.shape[-1]
    lag = jnp.arange(L)[:, None] - jnp.arange(L)[None, :]
    T = jnp.where(lag >= 0, k_fwd[..., jnp.clip(lag, 0, L - 1)], k_bwd[..., jnp.clip(-lag - 1, 0, L - 1)])
    return jnp.einsum("hts,bhs->bht", T, u)


# ------------------------------------------------------------------------------------------------- recurrence


def ssm_step(x, u_t, Abar, Bbar, C, scale: float = 1.0):
    """One step ``x <- Abar x + Bbar u_t``, ``y = scale * Re(C^T x)``. ``x`` [B, H, N] complex, ``u_t`` [B, H],
    ``Abar`` [H, N, N] (dense) or [H, N] (diagonal), ``C`` [H, N]. Returns (x, y [B, H])."""
    Ax = jnp.einsum("hnm,bhm->bhn", Abar, x) if Abar.ndim == 3 else Abar * x
    x = Ax + Bbar * u_t[..., None]
    return x, scale * jnp.sum(C * x, -1).real


def ssm_recurrence(u, Abar, Bbar, C, scale: float = 1.0):
    """Plain form of the convolution mode: run :func:`ssm_step` over ``u`` [B, H, L] from ``x = 0``."""
    x0 = jnp.zeros(u.shape[:2] + (Bbar.shape[-1],), Bbar.dtype)
    _, ys = jax.lax.scan(lambda x, ut: ssm_step(x, ut, Abar, Bbar, C, scale), x0, jnp.moveaxis(u, -1, 0))
    return jnp.moveaxis(ys, 0, -1)


# ------------------------------------------------------------------------------------------------ Flax module


def _complex(pair):
    return jax.lax.complex(pair[..., 0], pair[..., 1])


def _pair_init(values: np.ndarray):
    arr = np.stack([values.real, values.imag], -1).astype(np.float32)
    return lambda key, shape: jnp.broadcast_to(jnp.asarray(arr), shape)


class S4StepForm(NamedTuple):
    """A layer turned into its recurrence: ``Abar`` [H, N, N] (S4) or [H, N'] (S4D), ``Bbar`` [H, N],
    ``C`` [H, N], the skip ``D`` [H], and the output scale (2 for S4D's half state)."""
    Abar: Any
    Bbar: Any
    C: Any
    D: Any
    scale: float


class S4Stream(NamedTuple):
    form: S4StepForm
    state: Any  # [B, H, N] complex


class S4(nn.Module):
    """The S4 layer: per-channel SSM convolution + ``D`` skip, GELU, dropout tied over time, ``Linear(H -> 2H)`` + GLU.

    ``mode``: ``dplr`` (S4: HiPPO-LegS NPLR, Cauchy kernel, bilinear) or ``diag`` (S4D: Vandermonde kernel, ``zoh``
    or ``bilinear``). ``n_ssm`` copies of (Lambda, P, B) are shared over the channels (1 = all channels share one;
    0 = one per channel); the step size is always per channel. Bidirectional unless ``causal`` (two output vectors
    C~ sharing Lambda, P, B, dt). Parameters named ``ssm_*`` (Lambda, P, B, log dt) form the trainer's SSM group
    (own learning rate, no weight decay). The kernel is computed for the input's length L; S4's learned C~ is tied to
    the length it was trained at.
    """

    d_model: int
    causal: bool = False
    dtype: Any = jnp.float32
    d_state: int = 64
    mode: str = "dplr"  # dplr | diag
    measure: str = "legs"  # initial eigenvalues: legs | lin | inv  (lin and inv: diag only)
    disc: str = "bilinear"  # diag only: zoh | bilinear
    n_ssm: int = 1
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dropout: float = 0.0
    cauchy_chunk: int = 0  # nodes per chunk of the Cauchy / Vandermonde sums; 0 = automatic memory bound
    gelu_approximate: bool = False  # False: the exact (erf) GELU of the reference S4 layer (torch nn.GELU())

    def setup(self):
        H, N = self.d_model, self.d_state
        if N % 2:
            raise ValueError(f"S4 d_state must be even (conjugate pairs), got {N}")
        if self.mode not in ("dplr", "diag"):
            raise ValueError(f"unknown S4 mode {self.mode!r}; expected 'dplr' or 'diag'")
        if self.mode == "dplr" and self.measure != "legs":
            raise ValueError(f"S4 (dplr) initialises from HiPPO-LegS; measure {self.measure!r} is for S4D (mode 'diag')")
        G = self.n_ssm or H
        if H % G:
            raise ValueError(f"n_ssm={self.n_ssm} does not divide d_model={H}")
        if self.mode == "dplr":
            lam, p, b, _ = nplr_legs(N)
            self.ssm_P = self.param("ssm_P", _pair_init(p), (G, N // 2, 2))
        else:
            lam, b = init_lambda(N, self.measure), np.ones(N // 2, np.complex128)
        self.ssm_Lambda_log_re = self.param(
            "ssm_Lambda_log_re", lambda k, s: jnp.broadcast_to(jnp.log(-jnp.asarray(lam.real, jnp.float32)), s),
            (G, N // 2))
        self.ssm_Lambda_im = self.param(
            "ssm_Lambda_im", lambda k, s: jnp.broadcast_to(jnp.asarray(lam.imag, jnp.float32), s), (G, N // 2))
        self.ssm_B = self.param("ssm_B", _pair_init(b), (G, N // 2, 2))
        self.ssm_log_dt = self.param("ssm_log_dt", lambda k, s: log_dt_init(k, s[0], self.dt_min, self.dt_max),
                                     (H,))
        K = 1 if self.causal else 2
        # C (C~ for S4) complex normal, real and imaginary parts of variance 1/2.
        self.C = self.param("C", nn.initializers.normal(math.sqrt(0.5)), (K, H, N // 2, 2))
        self.D = self.param("D", nn.initializers.normal(1.0), (H,))
        # The GLU output projection initialised as the reference's Linear / Conv1d(H, 2H, kernel_size=1) (PyTorch:
        # weights and bias uniform in +-1/sqrt(H); state-spaces/s4, models/s4/s4.py, ``output_linear``).
        self.out = linear(2 * H, H, dtype=self.dtype, name="out")
        self.drop = nn.Dropout(self.dropout, broadcast_dims=(1,))

    def _lambda(self):
        return jax.lax.complex(-jnp.exp(self.ssm_Lambda_log_re), self.ssm_Lambda_im)

    def kernel(self, L: int):
        """The convolution kernel(s) ``[K, H, L]`` in float32, K = 1 (causal) or 2 (forward, backward)."""
        chunk = self.cauchy_chunk or None
        if self.mode == "dplr":
            return dplr_kernel(self._lambda(), _complex(self.ssm_P), _complex(self.ssm_B), _complex(self.C),
                               self.ssm_log_dt, L, chunk=chunk)
        return s4d_kernel(self._lambda(), _complex(self.ssm_B), _complex(self.C), self.ssm_log_dt, L, self.disc,
                          chunk=chunk)

    def _output(self, y, u, deterministic):
        """``y`` [B, L, H] convolution output, ``u`` the input: skip, GELU, dropout, GLU projection."""
        y = y + self.D * u
        y = self.drop(nn.gelu(y, approximate=self.gelu_approximate), deterministic=deterministic)
        a, g = jnp.split(self.out(y.astype(self.dtype)), 2, -1)
        return a * nn.sigmoid(g)

    def __call__(self, x, *, mask=None, deterministic=True):
        u = x.astype(jnp.float32)
        if mask is not None:
            u = jnp.where(mask[..., None], u, 0.0)
        L = u.shape[1]
        k = self.kernel(L)
        uh = jnp.swapaxes(u, 1, 2)  # [B, H, L]
        yh = fft_conv(uh, k[0]) if self.causal else fft_conv_bidirectional(uh, k[0], k[1])
        y = self._output(jnp.swapaxes(yh, 1, 2), u, deterministic)
        if mask is not None:
            y = jnp.where(mask[..., None], y, 0.0)
        return y.astype(x.dtype)

    # ---- recurrent (step) mode: causal layers only

    def step_form(self, length: int) -> S4StepForm:
        """The layer as a recurrence that reproduces its convolution mode on sequences of ``length`` (the length
        S4's C~ is tied to). State O(N) per channel."""
        if not self.causal:
            raise ValueError("the recurrent mode needs causal=True (the bidirectional kernel reads the future)")
        if self.mode == "dplr":
            Abar, Bbar, C = dplr_discretize(self._lambda(), _complex(self.ssm_P), _complex(self.ssm_B),
                                            _complex(self.C), self.ssm_log_dt, length)
            return S4StepForm(Abar, Bbar, C[0], self.D, 1.0)
        Abar, Bbar = discretize_diag(self._lambda(), _complex(self.ssm_B), self.ssm_log_dt, self.disc)
        return S4StepForm(Abar, Bbar, _complex(self.C)[0], self.D, 2.0)

    def init_stream(self, batch: int, length: int) -> S4Stream:
        form = self.step_form(length)
        return S4Stream(form, jnp.zeros((batch, self.d_model, form.Bbar.shape[-1]), form.Bbar.dtype))

    def stream(self, carry: S4Stream, x_t):
        """One token ``x_t`` [B, H] -> (carry, output [B, H]); equals the causal convolution mode token by token."""
        f = carry.form
        u = x_t.astype(jnp.float32)
        state, y = ssm_step(carry.state, u, f.Abar, f.Bbar, f.C, f.scale)
        return S4Stream(f, state), self._output(y[:, None], u[:, None], True)[:, 0].astype(x_t.dtype)


class S4D(S4):
    """S4D: the diagonal state-space layer (no low-rank term), Vandermonde kernel, zero-order hold, S4D-LegS init."""

    mode: str = "diag"
    disc: str = "zoh"
