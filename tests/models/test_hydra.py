"""Hydra: chunked SSD = recurrence = dense matrix (float64), the quasiseparable mixer = dense Q @ x = its entrywise
formula, quasiseparable rank, reversal symmetry, causal variant (no leakage, streaming = parallel), padding, finite
gradients."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import MIXERS
from models.hydra import (Hydra, quasiseparable, quasiseparable_dense, quasiseparable_matrix, shift_down, ssd_chunked,
                          ssd_dense, ssd_matrix, ssd_recurrent)

TOL = dict(rtol=1e-10, atol=1e-10)  # float64 forms against each other


def ssd_inputs(seed=0, B=2, H=4, G=2, L=13, P=3, N=5, dtype=np.float64):
    r = np.random.default_rng(seed)
    x = r.normal(size=(B, H, L, P))
    dt = r.uniform(0.01, 0.6, size=(B, H, L))
    a = -r.uniform(0.3, 2.0, size=H)
    b, c = r.normal(size=(2, B, G, L, N))
    s0 = r.normal(size=(B, H, P, N))
    return [jnp.asarray(t, dtype) for t in (x, dt, a, b, c, s0)]


def qs_inputs(seed=0, B=2, H=2, L=9, P=3, N=2):
    """x, dt_fwd, dt_bwd, a, b_fwd, c_fwd, b_bwd, c_bwd, delta (one group)."""
    r = np.random.default_rng(seed)
    x = r.normal(size=(B, H, L, P))
    dt_f, dt_b = r.uniform(0.05, 0.8, size=(2, B, H, L))
    a = -r.uniform(0.3, 1.5, size=H)
    b_f, c_f, b_b, c_b = r.normal(size=(4, B, 1, L, N))
    delta = r.normal(size=(B, H, L))
    return [jnp.asarray(t, np.float64) for t in (x, dt_f, dt_b, a, b_f, c_f, b_b, c_b, delta)]


# ----------------------------------------------------------------------------------------------------- SSD

@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_equals_dense(x64, with_state):
    x, dt, a, b, c, s0 = ssd_inputs()
    init = s0 if with_state else None
    y1, s1 = jax.jit(ssd_recurrent)(x, dt, a, b, c, init)
    y2, s2 = jax.jit(ssd_dense)(x, dt, a, b, c, init)
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y2), **TOL)
    np.testing.assert_allclose(np.asarray(s1), np.asarray(s2), **TOL)


def test_matrix_matches_its_entrywise_formula(x64):
    x, dt, a, b, c, _ = ssd_inputs(1, B=1, H=2, G=1, L=6)
    m = np.asarray(ssd_matrix(dt, a, b, c))
    dt, a, b, c = map(np.asarray, (dt, a, b, c))
    for h, t, s in itertools.product(range(2), range(6), range(6)):
        want = c[0, 0, t] @ b[0, 0, s] * np.exp(a[h] * dt[0, h, s + 1:t + 1].sum()) * dt[0, h, s] if s <= t else 0.0
        np.testing.assert_allclose(m[0, h, t, s], want, **TOL)


@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_equals_recurrent(x64, chunk, with_state):
    x, dt, a, b, c, s0 = ssd_inputs(L=37)  # 37 is not a multiple of 4 or 16; 64 >= L
    init = s0 if with_state else None
    y1, s1 = jax.jit(ssd_recurrent)(x, dt, a, b, c, init)
    y2, s2 = jax.jit(ssd_chunked, static_argnums=5)(x, dt, a, b, c, chunk, init)
    np.testing.assert_allclose(np.asarray(y2), np.asarray(y1), **TOL)
    np.testing.assert_allclose(np.asarray(s2), np.asarray(s1), **TOL)


def test_chunked_state_carries_across_calls(x64):
    """Splitting a sequence in two and passing the final state on gives the whole sequence's outputs."""
    x, dt, a, b, c, s0 = ssd_inputs(2, L=26)
    y, s = ssd_recurrent(x, dt, a, b, c, s0)
    run = jax.jit(ssd_chunked, static_argnums=5)
    part = lambda i: slice(13 * i, 13 * (i + 1))
    half = lambda i: [x[:, :, part(i)], dt[:, :, part(i)], a, b[:, :, part(i)], c[:, :, part(i)]]
    y1, s1 = run(*half(0), 4, s0)  # 13 = 3 chunks of 4 and a padded one
    y2, s2 = run(*half(1), 4, s1)
    np.testing.assert_allclose(np.asarray(jnp.concatenate([y1, y2], 2)), np.asarray(y), **TOL)
    np.testing.assert_allclose(np.asarray(s2), np.asarray(s), **TOL)


@pytest.mark.slow
def test_gradients_of_chunked_equal_gradients_of_recurrent(x64):
    x, dt, a, b, c, s0 = ssd_inputs(3, L=21)

    def grads(f):
        def loss(*args):
            y, s = f(*args)
            return jnp.sum(jnp.sin(y)) + jnp.sum(s ** 2)
        return jax.jit(jax.grad(loss, argnums=tuple(range(6))))(x, dt, a, b, c, s0)

    for g1, g2 in zip(grads(lambda *t: ssd_chunked(*t[:5], 8, t[5])), grads(ssd_recurrent)):
        np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-8, atol=1e-8)


def test_float32_chunked_matches_float64_reference_with_long_decays(x64):
    """Strong decays (total log-decay about -400 over the sequence) stay finite and accurate in float32."""
    x, dt, a, b, c, s0 = ssd_inputs(4, L=200)
    dt = dt * 3
    want, want_s = ssd_recurrent(x, dt, a, b, c, s0)
    f32 = lambda t: t.astype(jnp.float32)
    got, got_s = jax.jit(ssd_chunked, static_argnums=5)(*map(f32, (x, dt, a, b, c)), 64, f32(s0))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got_s), np.asarray(want_s), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------- quasiseparable

def entrywise_q(dt_f, dt_b, a, b_f, c_f, b_b, c_b, delta):
    """The quasiseparable matrix Q, entry by entry, in NumPy (batch 0, every head)."""
    dt_f, dt_b, a, b_f, c_f, b_b, c_b, delta = (np.asarray(t) for t in (dt_f, dt_b, a, b_f, c_f, b_b, c_b, delta))
    H, L = dt_f.shape[1:]
    q = np.zeros((H, L, L))
    for h, t, s in itertools.product(range(H), range(L), range(L)):
        if t > s:
            q[h, t, s] = c_f[0, 0, t - 1] @ b_f[0, 0, s] * np.exp(a[h] * dt_f[0, h, s + 1:t].sum()) * dt_f[0, h, s]
        elif t < s:
            q[h, t, s] = c_b[0, 0, t + 1] @ b_b[0, 0, s] * np.exp(a[h] * dt_b[0, h, t + 1:s].sum()) * dt_b[0, h, s]
        else:
            q[h, t, s] = delta[0, h, t]
    return q


def test_quasiseparable_matrix_matches_entrywise_formula(x64):
    x, *params = qs_inputs(L=7)
    np.testing.assert_allclose(np.asarray(jax.jit(quasiseparable_matrix)(*params))[0], entrywise_q(*params), **TOL)


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_quasiseparable_equals_dense_q_times_x(x64, chunk):
    args = qs_inputs(L=23)  # 23 is not a multiple of 4; 64 >= L
    want = jax.jit(quasiseparable_dense)(*args)
    got = jax.jit(quasiseparable, static_argnums=9)(*args, chunk)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)


def test_strictly_triangular_blocks_have_rank_at_most_n(x64):
    N, L = 2, 12
    _, *params = qs_inputs(5, B=1, H=3, L=L, N=N)
    q = np.asarray(quasiseparable_matrix(*params))[0]
    for h, i in itertools.product(range(3), range(1, L)):
        for block in (q[h, i:, :i], q[h, :i, i:]):
            sv = np.linalg.svd(block, compute_uv=False)
            assert np.sum(sv > 1e-10 * sv[0]) <= N, (h, i, sv)
    # a generic quasiseparable matrix: the largest blocks do reach rank N, and the diagonal is delta alone
    assert np.linalg.matrix_rank(q[0, L // 2:, :L // 2], tol=1e-10) == N
    np.testing.assert_allclose(np.diagonal(q, axis1=1, axis2=2), np.asarray(params[-1])[0], **TOL)


def test_shifted_forward_pass_is_strictly_causal(x64):
    x, dt, _, a, b, c, *_ = qs_inputs(6, L=10)
    f = jax.jit(lambda x: shift_down(ssd_chunked(x, dt, a, b, c, 4)[0]))
    jac = np.abs(np.asarray(jax.jacrev(f)(x))).sum(axis=(0, 1, 3, 4, 5, 7))  # [t, s]
    assert np.all(jac[np.triu_indices(10)] == 0.0)
    assert np.all(jac[np.tril_indices(10, -1)] > 0.0)


def test_reversing_input_and_swapping_directions_reverses_output(x64):
    x, dt_f, dt_b, a, b_f, c_f, b_b, c_b, delta = qs_inputs(7, L=19)
    J = lambda t: jnp.flip(t, axis=2)
    run = jax.jit(quasiseparable, static_argnums=9)
    y = run(x, dt_f, dt_b, a, b_f, c_f, b_b, c_b, delta, 8)
    y_rev = run(J(x), J(dt_b), J(dt_f), a, J(b_b), J(c_b), J(b_f), J(c_f), J(delta), 8)
    np.testing.assert_allclose(np.asarray(y_rev), np.asarray(J(y)), **TOL)


# ----------------------------------------------------------------------------------------------------- module

def small(causal, d=16, L=11, chunk=4):
    mod = Hydra(d_model=d, causal=causal, d_state=4, head_dim=8, chunk_size=chunk)  # 4 heads of 8
    x = jax.random.normal(jax.random.key(0), (2, L, d))
    params = jax.jit(lambda x: mod.init(jax.random.key(1), x))(x[:, :1])  # parameters do not depend on L
    return mod, params, x


def test_module_reversal_symmetry():
    """The whole bidirectional layer: reversing the input and swapping the directions' parameters (b, c, dt
    projections; their conv channels) and time-flipping the centred conv kernel reverses the output."""
    mod, params, x = small(causal=False)
    E, N, H = 32, 4, 4
    p = jax.tree_util.tree_map(lambda t: t, params["params"])
    # in_proj columns: [z E | x E | b_f N | c_f N | b_b N | c_b N | dt_f H | dt_b H];
    # conv channels: [x E | b_f c_f | b_b c_b]
    cols = np.arange(p["in_proj"]["kernel"].shape[1])
    fwd, bwd = cols[2 * E:2 * E + 2 * N], cols[2 * E + 2 * N:2 * E + 4 * N]
    dt_f, dt_b = cols[2 * E + 4 * N:2 * E + 4 * N + H], cols[2 * E + 4 * N + H:]
    perm = np.concatenate([cols[:2 * E], bwd, fwd, dt_b, dt_f])
    p["in_proj"]["kernel"] = p["in_proj"]["kernel"][:, perm]
    ch = np.arange(E + 4 * N)
    ch_perm = np.concatenate([ch[:E], ch[E + 2 * N:], ch[E:E + 2 * N]])
    p["conv"]["kernel"] = p["conv"]["kernel"][::-1][:, ch_perm]
    p["conv"]["bias"] = p["conv"]["bias"][ch_perm]
    run = jax.jit(lambda v, x: mod.apply(v, x))
    y = run(params, x)
    y_rev = run({"params": p}, x[:, ::-1])
    np.testing.assert_allclose(np.asarray(y_rev), np.asarray(y[:, ::-1]), rtol=1e-5, atol=1e-5)


def module_dependence(causal):
    """``[t, s]``: summed |d y_t / d x_s| of the small module (jit(jacrev))."""
    mod, params, x = small(causal)
    jac = jax.jit(jax.jacrev(lambda x: mod.apply(params, x[None])[0]))(x[0])
    return np.abs(np.asarray(jac)).sum(axis=(1, 3))


def test_causal_module_has_no_leakage():
    dep = module_dependence(causal=True)
    assert np.all(dep[np.triu_indices(11, k=1)] == 0.0) and np.all(np.diag(dep) > 0)


@pytest.mark.slow
def test_bidirectional_module_sees_both_sides():
    """Also a regression test: an earlier [B, G, H/G, ...] layout of ssd_chunked made XLA's CPU backend segfault
    running exactly this jit(jacrev)."""
    assert np.all(module_dependence(causal=False) > 0)


@pytest.mark.parametrize("causal", [True, False])
def test_padding_never_reaches_real_positions(causal):
    mod, params, x = small(causal)
    lengths = jnp.array([11, 6])
    mask = jnp.arange(11)[None] < lengths[:, None]
    run = jax.jit(lambda x, m: mod.apply(params, x, mask=m))
    y1 = run(x, mask)
    y2 = run(jnp.where(mask[..., None], x, 100.0), mask)
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y2), rtol=1e-5, atol=1e-5)
    y3 = jax.jit(lambda x: mod.apply(params, x))(x[1:2, :6])  # = the short sequence on its own
    np.testing.assert_allclose(np.asarray(y1[1, :6]), np.asarray(y3[0]), rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(y1)[1, 6:] == 0.0)


def test_streaming_equals_parallel():
    mod, params, x = small(causal=True)
    full = jax.jit(lambda x: mod.apply(params, x))(x)
    carry = mod.apply(params, 2, method=Hydra.init_stream)
    stream = jax.jit(lambda c, xt: mod.apply(params, c, xt, method=Hydra.stream))
    sizes = set()
    for t in range(x.shape[1]):
        carry, y = stream(carry, x[:, t])
        sizes.add(sum(a.size for a in jax.tree_util.tree_leaves(carry)))
        np.testing.assert_allclose(np.asarray(y), np.asarray(full[:, t]), rtol=1e-4, atol=1e-5)
    assert len(sizes) == 1  # constant memory
    with pytest.raises(ValueError, match="causal=True"):
        small(causal=False)[0].apply(params, 2, method=Hydra.init_stream)


def test_init_and_parameter_groups():
    from lra.trainer import label_params
    mod = MIXERS["hydra"](d_model=64)  # the small ListOps width: inner 128 = 2 heads of 64
    params = jax.jit(lambda x: mod.init(jax.random.key(0), x))(jnp.zeros((1, 1, 64)))["params"]
    np.testing.assert_array_equal(np.asarray(params["nd_A_log"]), 0.0)  # a = -1
    np.testing.assert_array_equal(np.asarray(params["nd_D"]), 1.0)
    dt = np.asarray(jax.nn.softplus(params["nd_dt_bias"]))
    assert dt.shape == (2,) and np.all((dt >= 1e-3 * (1 - 1e-5)) & (dt <= 0.1 * (1 + 1e-5)))
    labels = label_params(params)
    assert {k for k, v in labels.items() if v == "no_decay"} == {"nd_A_log", "nd_D", "nd_dt_bias", "scale"}
    assert labels["conv"]["bias"] == "no_decay" and labels["in_proj"]["kernel"] == "default"
    with pytest.raises(ValueError, match="head_dim=64 does not divide"):
        MIXERS["hydra"](d_model=16).init(jax.random.key(0), jnp.zeros((1, 5, 16)))


@pytest.mark.parametrize("causal, L", [(False, 1), (False, 37)] + [pytest.param(True, L, marks=pytest.mark.slow)
                                                                    for L in (1, 37)])
def test_finite_gradients(causal, L):
    mod = Hydra(d_model=16, causal=causal, d_state=8, head_dim=8, chunk_size=16)  # 37 is not a multiple of 16
    x = jax.random.normal(jax.random.key(0), (2, L, 16))
    mask = jnp.ones((2, L), bool).at[1, L // 2 + 1:].set(False)
    params = jax.jit(lambda x: mod.init(jax.random.key(1), x))(x[:, :1])
    grads = jax.jit(jax.grad(lambda p: jnp.sum(mod.apply(p, x, mask=mask) ** 2)))(params)
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert {jax.tree_util.keystr(p).split("'")[1] for p, _ in leaves} == {"params"}
    for p, g in leaves:
        assert np.all(np.isfinite(np.asarray(g))), jax.tree_util.keystr(p)


def test_bfloat16_module_keeps_float32_decays():
    mod = Hydra(d_model=16, d_state=4, head_dim=8, chunk_size=4, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(0), (2, 11, 16))
    params = jax.jit(lambda x: mod.init(jax.random.key(1), x))(x[:, :1])
    y = jax.jit(lambda p, x: mod.apply(p, x))(params, x)
    ref = jax.jit(lambda p, x: mod.clone(dtype=jnp.float32).apply(p, x))(params, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref), rtol=0.1, atol=0.1)
