"""Aaren: prefix scan = dense single-query causal softmax = step loop (float64), stable combine, causality,
permutation invariance of the last output, padding, gradients, streaming = parallel."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.aaren import (Aaren, Carry, FLOOR, combine, init_carry, prefix_attention, prefix_attention_dense,
                          prefix_attention_loop)

TOL = dict(rtol=1e-10, atol=1e-10)  # float64 forms against each other


def inputs(seed=0, B=2, H=3, L=11, P=4, dtype=np.float64):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.normal(size=(H, P)), dtype)
    k = jnp.asarray(r.normal(size=(B, H, L, P)) * 2, dtype)
    v = jnp.asarray(r.normal(size=(B, H, L, P)), dtype)
    mask = jnp.asarray(np.arange(L)[None] < np.array([[L], [L - 4]]))
    return q, k, v, mask


def numpy_reference(q, k, v, mask, scale):
    q, k, v, mask = map(np.asarray, (q, k, v, mask))
    B, H, L, P = k.shape
    out = np.zeros_like(v)
    for b, h, t in itertools.product(range(B), range(H), range(L)):
        s = [j for j in range(t + 1) if mask[b, j]]
        if s:
            logits = np.array([q[h] @ k[b, h, j] * scale for j in s])
            w = np.exp(logits - logits.max())
            out[b, h, t] = (w[:, None] * v[b, h, s]).sum(0) / w.sum()
    return out


def test_scan_dense_loop_and_numpy_agree(x64):
    q, k, v, mask = inputs()
    want = numpy_reference(q, k, v, mask, 0.5)
    for f in (prefix_attention, prefix_attention_dense, prefix_attention_loop):
        np.testing.assert_allclose(np.asarray(f(q, k, v, mask, 0.5)), want, **TOL)
    np.testing.assert_allclose(np.asarray(prefix_attention(q, k, v)),
                               np.asarray(prefix_attention_dense(q, k, v)), **TOL)


def random_state(r, extreme):
    m = r.choice([-1e4, 1e4, FLOOR]) if extreme else r.normal()
    u = 0.0 if m == FLOOR else abs(r.normal()) + 0.1
    return Carry(jnp.asarray([m]), jnp.asarray([u]), jnp.asarray([[0.0, 0.0] if u == 0 else r.normal(size=2)]))


@pytest.mark.parametrize("extreme", [False, True])
def test_combine_is_associative_and_stable(x64, extreme):
    r = np.random.default_rng(1)
    for _ in range(30):
        a, b, c = (random_state(r, extreme) for _ in range(3))
        left, right = combine(combine(a, b), c), combine(a, combine(b, c))
        for x, y in zip(left, right):
            assert np.all(np.isfinite(np.asarray(x)))
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(combine(a, b).w), np.asarray(combine(b, a).w), rtol=1e-12)


def test_huge_scores_give_finite_values_and_gradients(x64):
    q, k, v, mask = inputs(2)
    k = k * 1e4  # scores of order +-1e4

    def loss(k, v):
        return jnp.sum(prefix_attention(q, k, v, mask, 1.0) ** 2)

    val, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(k, v)
    assert np.isfinite(float(val)) and all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    np.testing.assert_allclose(np.asarray(prefix_attention(q, k, v, mask, 1.0)),
                               np.asarray(prefix_attention_dense(q, k, v, mask, 1.0)), rtol=1e-9, atol=1e-9)


def test_gradients_of_scan_equal_gradients_of_dense(x64):
    q, k, v, mask = inputs(3)
    g = lambda f: jax.jit(jax.grad(lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v, mask, 0.7))), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(g(prefix_attention), g(prefix_attention_dense)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


def module(d=16, heads=4):
    mod = Aaren(d_model=d, num_heads=heads)
    x = jax.random.normal(jax.random.key(0), (2, 9, d))
    return mod, jax.jit(lambda x: mod.init(jax.random.key(1), x))(x), x


def test_module_is_causal():
    mod, params, x = module()
    jac = jax.jit(jax.jacrev(lambda x: mod.apply(params, x[None])[0]))(x[0])  # [t, d, s, d]
    dep = np.abs(np.asarray(jac)).sum(axis=(1, 3))
    assert np.all(dep[np.triu_indices(9, k=1)] == 0.0) and np.all(np.diag(dep) > 0)


def test_last_output_is_invariant_to_permuting_the_tokens():
    mod, params, x = module()
    perm = np.random.default_rng(0).permutation(9)
    a = mod.apply(params, x)[:, -1]
    b = mod.apply(params, x[:, perm])[:, -1]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_padding_never_reaches_real_positions():
    mod, params, x = module()
    mask = jnp.arange(9)[None] < jnp.array([[9], [5]])
    y1 = mod.apply(params, x, mask=mask)
    y2 = mod.apply(params, jnp.where(mask[..., None], x, 1e3), mask=mask)
    np.testing.assert_allclose(np.asarray(y1)[np.asarray(mask)], np.asarray(y2)[np.asarray(mask)], rtol=1e-5,
                               atol=1e-6)
    assert np.all(np.asarray(y1)[~np.asarray(mask)] == 0)  # padded outputs are zero
    # left padding too
    left = jnp.arange(9)[None] >= 3
    y3 = mod.apply(params, x, mask=left)
    y4 = mod.apply(params, x[:, 3:])
    np.testing.assert_allclose(np.asarray(y3[:, 3:]), np.asarray(y4), rtol=1e-5, atol=1e-6)


def test_finite_gradients_for_every_parameter_also_at_length_one():
    for L in (1, 9):
        mod = Aaren(d_model=16, num_heads=4)
        x = jax.random.normal(jax.random.key(0), (2, L, 16))
        params = mod.init(jax.random.key(1), x)
        mask = jnp.ones((2, L), bool).at[1, 1:].set(False)
        grads = jax.jit(jax.grad(lambda p: jnp.sum(mod.apply(p, x, mask=mask) ** 2)))(params)
        for g in jax.tree_util.tree_leaves(grads):
            assert np.all(np.isfinite(np.asarray(g)))
        if L > 1:  # with one token the softmax is constant 1 and the query rightly gets no gradient
            assert float(jnp.abs(grads["params"]["query"]).sum()) > 0


def test_streaming_equals_parallel_with_constant_memory():
    mod, params, x = module()
    full = mod.apply(params, x)
    out, carry = mod.apply(params, x[:, :4], method=Aaren.prefill)
    np.testing.assert_allclose(np.asarray(out), np.asarray(full[:, :4]), rtol=1e-5, atol=1e-6)
    sizes = {sum(a.size for a in jax.tree_util.tree_leaves(carry))}
    for t in range(4, 9):
        carry, y = mod.apply(params, carry, x[:, t], method=Aaren.stream)
        sizes.add(sum(a.size for a in jax.tree_util.tree_leaves(carry)))
        np.testing.assert_allclose(np.asarray(y), np.asarray(full[:, t]), rtol=1e-5, atol=1e-6)
    assert sizes == {2 * 4 * (1 + 1 + 4)}  # [B, H] m and u, [B, H, P] w: independent of length
    # starting from an empty carry is the same as prefill
    carry = mod.apply(params, 2, method=Aaren.init_stream)
    for t in range(9):
        carry, y = mod.apply(params, carry, x[:, t], method=Aaren.stream)
    np.testing.assert_allclose(np.asarray(y), np.asarray(full[:, -1]), rtol=1e-5, atol=1e-6)


def test_module_defaults_and_dropout_flag():
    mod = Aaren(d_model=16)
    x = jax.random.normal(jax.random.key(0), (2, 37, 16))
    mask = jnp.arange(37)[None] < jnp.array([[37], [20]])
    params = jax.jit(lambda x, m: mod.init(jax.random.key(1), x, mask=m))(x, mask)
    run = jax.jit(lambda m, det, causal: Aaren(d_model=16, causal=causal).apply(
        params, x, mask=m, deterministic=det, rngs={"dropout": jax.random.key(0)}), static_argnums=(1, 2))
    a = run(mask, True, True)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(run(mask, False, True)))  # no dropout inside
    np.testing.assert_array_equal(np.asarray(a), np.asarray(run(mask, True, False)))  # causal either way
    with pytest.raises(ValueError, match="divisible"):
        Aaren(d_model=10, num_heads=4).init(jax.random.key(1), x[..., :10])
