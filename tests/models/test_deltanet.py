"""DeltaNet: chunked (WY) = recurrent = dense (float64), gradients, delta-rule properties, causality, padding,
streaming = parallel, finite gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.deltanet import (DeltaNet, delta_rule_chunked, delta_rule_dense, delta_rule_recurrent,
                             reverse_within_length)

TOL = dict(rtol=1e-9, atol=1e-9)


def inputs(seed=0, B=2, H=2, L=13, dk=4, dv=3, dtype=np.float64):
    r = np.random.default_rng(seed)
    q = r.normal(size=(B, H, L, dk))
    k = r.normal(size=(B, H, L, dk))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    v = r.normal(size=(B, H, L, dv))
    beta = r.uniform(0.05, 0.95, size=(B, H, L))
    s0 = r.normal(size=(B, H, dv, dk))
    return [jnp.asarray(a, dtype) for a in (q, k, v, beta, s0)]


@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_equals_dense(x64, with_state):
    q, k, v, beta, s0 = inputs(L=6)
    init = s0 if with_state else None
    o1, s1 = delta_rule_recurrent(q, k, v, beta, init)
    o2, s2 = delta_rule_dense(q, k, v, beta, init)
    np.testing.assert_allclose(np.asarray(o1), np.asarray(o2), **TOL)
    np.testing.assert_allclose(np.asarray(s1), np.asarray(s2), **TOL)


@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_equals_recurrent(x64, chunk, with_state):
    q, k, v, beta, s0 = inputs(L=37)  # 37 is not a multiple of 4 or 16; 64 >= L
    init = s0 if with_state else None
    o1, s1 = jax.jit(delta_rule_recurrent)(q, k, v, beta, init)
    o2, s2 = jax.jit(delta_rule_chunked, static_argnums=4)(q, k, v, beta, chunk, init)
    np.testing.assert_allclose(np.asarray(o2), np.asarray(o1), **TOL)
    np.testing.assert_allclose(np.asarray(s2), np.asarray(s1), **TOL)


def test_gradients_of_chunked_equal_gradients_of_recurrent(x64):
    q, k, v, beta, s0 = inputs(1, L=21)

    def loss(f):
        def g(q, k, v, beta, s0):
            o, s = f(q, k, v, beta, s0)
            return jnp.sum(jnp.sin(o)) + jnp.sum(s ** 2)
        return jax.jit(jax.grad(g, argnums=(0, 1, 2, 3, 4)))(q, k, v, beta, s0)

    for a, b in zip(loss(lambda *a: delta_rule_chunked(*a[:4], 8, a[4])), loss(delta_rule_recurrent)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-8)


def test_float32_chunked_matches_float64_reference(x64):
    q, k, v, beta, s0 = inputs(2, L=50)
    want, _ = delta_rule_recurrent(q, k, v, beta, s0)
    got, _ = delta_rule_chunked(*(a.astype(jnp.float32) for a in (q, k, v, beta)), 16, s0.astype(jnp.float32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_beta_one_with_orthonormal_keys_stores_and_returns_values(x64):
    dk = 6
    keys = np.linalg.qr(np.random.default_rng(0).normal(size=(dk, dk)))[0].T  # rows orthonormal
    L = 4
    k = jnp.asarray(keys[:L])[None, None]
    v = jnp.asarray(np.random.default_rng(1).normal(size=(1, 1, L, 3)))
    beta = jnp.ones((1, 1, L))
    _, state = delta_rule_chunked(k, k, v, beta, 2)
    for i in range(L):  # querying a written key returns its value exactly
        np.testing.assert_allclose(np.asarray(state[0, 0] @ keys[i]), np.asarray(v[0, 0, i]), rtol=1e-12, atol=1e-12)
    # overwriting a key replaces its value (the delta rule, not accumulation)
    v2 = v.at[:, :, 0].set(5.0)
    _, s2 = delta_rule_recurrent(jnp.concatenate([k, k[:, :, :1]], 2), jnp.concatenate([k, k[:, :, :1]], 2),
                                 jnp.concatenate([v, v2[:, :, :1]], 2), jnp.ones((1, 1, L + 1)))
    np.testing.assert_allclose(np.asarray(s2[0, 0] @ keys[0]), 5.0 * np.ones(3), rtol=1e-12)


def test_transitions_are_contractions_for_unit_keys():
    r = np.random.default_rng(3)
    for _ in range(50):
        k = r.normal(size=5)
        k /= np.linalg.norm(k)
        beta = r.uniform(0, 1)
        transition = np.eye(5) - beta * np.outer(k, k)
        assert np.linalg.norm(transition, 2) <= 1 + 1e-12


def small(causal, d=16, heads=2, chunk=4):
    mod = DeltaNet(d_model=d, causal=causal, num_heads=heads, chunk_size=chunk)
    x = jax.random.normal(jax.random.key(0), (2, 11, d))
    params = jax.jit(lambda x: mod.init(jax.random.key(1), x))(x)
    return mod, params, x


def test_causal_module_has_no_leakage():
    mod, params, x = small(causal=True)
    jac = jax.jit(jax.jacrev(lambda x: mod.apply(params, x[None])[0]))(x[0])
    dep = np.abs(np.asarray(jac)).sum(axis=(1, 3))
    assert np.all(dep[np.triu_indices(11, k=1)] == 0.0) and np.all(np.diag(dep) > 0)


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


def test_bidirectional_sees_both_sides_and_reverse_helper():
    mod, params, x = small(causal=False)
    jac = jax.jit(jax.jacrev(lambda x: mod.apply(params, x[None])[0]))(x[0])
    dep = np.abs(np.asarray(jac)).sum(axis=(1, 3))
    assert np.all(dep > 0)
    a = jnp.arange(10).reshape(2, 5)
    np.testing.assert_array_equal(np.asarray(reverse_within_length(a, jnp.array([5, 3]))),
                                  [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]])


def test_streaming_equals_parallel():
    mod, params, x = small(causal=True)
    full = jax.jit(lambda x: mod.apply(params, x))(x)
    carry = mod.apply(params, 2, method=DeltaNet.init_stream)
    stream = jax.jit(lambda c, xt: mod.apply(params, c, xt, method=DeltaNet.stream))
    sizes = set()
    for t in range(x.shape[1]):
        carry, y = stream(carry, x[:, t])
        sizes.add(sum(a.size for a in jax.tree_util.tree_leaves(carry)))
        np.testing.assert_allclose(np.asarray(y), np.asarray(full[:, t]), rtol=1e-4, atol=1e-5)
    assert len(sizes) == 1  # constant memory
    with pytest.raises(ValueError, match="causal=True"):
        DeltaNet(d_model=16, num_heads=2).apply(params, 2, method=DeltaNet.init_stream)


@pytest.mark.parametrize("L", [1, 37])
def test_finite_gradients_and_defaults(L):
    mod = DeltaNet(d_model=16)
    x = jax.random.normal(jax.random.key(0), (2, L, 16))
    mask = jnp.ones((2, L), bool).at[1, L // 2 + 1:].set(False)
    params = jax.jit(lambda x: mod.init(jax.random.key(1), x, mask=mask))(x)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(mod.apply(p, x, mask=mask, deterministic=False) ** 2)))(params)
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert {jax.tree_util.keystr(p).split("'")[1] for p, _ in leaves} == {"params"}
    for p, g in leaves:
        assert np.all(np.isfinite(np.asarray(g))), jax.tree_util.keystr(p)
