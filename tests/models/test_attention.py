"""Softmax attention: fused kernel = dense plain form = NumPy float64 reference; causality; padding; equivariance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import MultiHeadAttention, attention_dense, attention_fused


def numpy_attention(q, k, v, key_mask, causal):
    """Independent float64 reference: loop over batch/head, explicit softmax over allowed keys, 0 if none."""
    B, H, L, P = q.shape
    out = np.zeros_like(v)
    for b in range(B):
        for h in range(H):
            for t in range(L):
                allowed = [s for s in range(L) if (key_mask is None or key_mask[b, s]) and (not causal or s <= t)]
                if not allowed:
                    continue
                logits = np.array([q[b, h, t] @ k[b, h, s] / np.sqrt(P) for s in allowed])
                w = np.exp(logits - logits.max())
                w /= w.sum()
                out[b, h, t] = sum(wi * v[b, h, s] for wi, s in zip(w, allowed))
    return out


def random_qkv(seed, B=2, H=3, L=9, P=4, dtype=np.float64):
    r = np.random.default_rng(seed)
    return [r.normal(size=(B, H, L, P)).astype(dtype) for _ in range(3)]


@pytest.mark.parametrize("causal", [False, True])
def test_dense_matches_numpy_reference_float64(x64, causal):
    q, k, v = random_qkv(0)
    key_mask = np.array([[True] * 9, [True] * 5 + [False] * 4])
    got = attention_dense(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), key_mask=jnp.asarray(key_mask), causal=causal)
    want = numpy_attention(q, k, v, key_mask, causal)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_matches_dense(causal):
    q, k, v = (jnp.asarray(a) for a in random_qkv(1, L=17, P=8, dtype=np.float32))
    key_mask = jnp.asarray(np.arange(17)[None, :] < np.array([[17], [11]]))
    dense = attention_dense(q, k, v, key_mask=key_mask, causal=causal)
    fused = attention_fused(q, k, v, key_mask=key_mask, causal=causal)
    np.testing.assert_allclose(np.asarray(fused), np.asarray(dense), rtol=1e-5, atol=1e-5)


def test_fully_masked_rows_output_zero():
    q, k, v = (jnp.asarray(a) for a in random_qkv(2, dtype=np.float32))
    key_mask = jnp.zeros((2, 9), bool).at[0].set(True)
    for fn in (attention_dense, attention_fused):
        out = np.asarray(fn(q, k, v, key_mask=key_mask))
        assert np.all(out[1] == 0.0) and np.all(np.isfinite(out))


def _module_fn(causal, implementation="fused", d=16, L=10):
    mod = MultiHeadAttention(d_model=d, causal=causal, num_heads=4, implementation=implementation)
    x = jax.random.normal(jax.random.key(0), (1, L, d))
    params = mod.init(jax.random.key(1), x)
    return mod, params, x


@pytest.mark.parametrize("implementation", ["fused", "dense"])
def test_causal_module_has_no_leakage(implementation):
    mod, params, x = _module_fn(causal=True, implementation=implementation)
    jac = jax.jit(jax.jacrev(lambda x: mod.apply(params, x)[0]))(x)[:, :, 0]  # [t, d, s, d']
    jac = np.abs(np.asarray(jac)).sum(axis=(1, 3))  # [t, s]
    assert np.all(jac[np.triu_indices(10, k=1)] == 0.0)
    assert np.all(jac[np.tril_indices(10)] > 0.0)  # and it does look at the past


def test_bidirectional_module_sees_the_future():
    mod, params, x = _module_fn(causal=False)
    jac = np.abs(np.asarray(jax.jit(jax.jacrev(lambda x: mod.apply(params, x)[0]))(x)[:, :, 0])).sum(axis=(1, 3))
    assert np.all(jac > 0.0)


def test_padding_does_not_change_real_positions():
    mod, params, x = _module_fn(causal=False)
    mask = jnp.arange(10)[None] < 6
    y1 = mod.apply(params, x, mask=mask)
    x2 = x.at[:, 6:].set(100.0 * jax.random.normal(jax.random.key(5), (1, 4, 16)))
    y2 = mod.apply(params, x2, mask=mask)
    np.testing.assert_allclose(np.asarray(y1[:, :6]), np.asarray(y2[:, :6]), rtol=1e-6, atol=1e-6)
    y3 = mod.apply(params, x[:, :6])  # and equals running on the unpadded sequence
    np.testing.assert_allclose(np.asarray(y1[:, :6]), np.asarray(y3), rtol=1e-5, atol=1e-5)


def test_permutation_equivariance_without_positions():
    mod, params, x = _module_fn(causal=False)
    perm = np.random.default_rng(0).permutation(10)
    y = mod.apply(params, x)
    yp = mod.apply(params, x[:, perm])
    np.testing.assert_allclose(np.asarray(yp), np.asarray(y[:, perm]), rtol=1e-5, atol=1e-5)


def test_attention_dropout_only_when_training():
    mod = MultiHeadAttention(d_model=16, num_heads=4, attention_dropout=0.5)
    x = jax.random.normal(jax.random.key(0), (2, 8, 16))
    params = mod.init(jax.random.key(1), x)
    a = mod.apply(params, x, deterministic=True)
    b = mod.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
    c = mod.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(a, b) and not np.allclose(b, c)
    np.testing.assert_allclose(np.asarray(a), np.asarray(MultiHeadAttention(
        d_model=16, num_heads=4).apply(params, x)), rtol=1e-5, atol=1e-6)


def test_module_paths_agree_and_unknown_implementation_is_an_error():
    x = jax.random.normal(jax.random.key(0), (2, 12, 16))
    mask = jnp.arange(12)[None] < jnp.array([[12], [7]])
    outs = {}
    for impl in ("fused", "dense", "auto"):
        mod = MultiHeadAttention(d_model=16, num_heads=4, implementation=impl)
        params = mod.init(jax.random.key(1), x, mask=mask)
        outs[impl] = np.asarray(mod.apply(params, x, mask=mask))
    np.testing.assert_allclose(outs["fused"], outs["dense"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs["auto"], outs["dense"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown attention implementation"):
        MultiHeadAttention(d_model=16, num_heads=4, implementation="flash").init(jax.random.key(1), x)
