"""Combiner-Fixed, both variants: segment blocks = implied dense matrix = NumPy loops (float64), rows sum to 1 with
every entry positive; the official variant (the default) against small cases worked out from its definition
(s = 1: softmax attention with log 2 added to the own-token logit; s = L: the segment plus its own summary), the
partition variant's s = 1 and s = L are softmax attention; causality, padding, finite gradients."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import MultiHeadAttention, attention_dense
from models.combiner import Combiner, combiner_attention, combiner_dense, combiner_matrix

TOL = dict(rtol=1e-10, atol=1e-10)


def inputs(seed=0, B=2, H=2, L=13, P=4, dtype=np.float64):
    r = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(r.normal(size=(B, H, L, P)), dtype) for _ in range(3))
    key_mask = jnp.asarray(np.arange(L)[None] < np.array([[L], [L - 5]]))
    return q, k, v, key_mask


def numpy_combiner_matrix(q, k, s, key_mask, causal, variant="official"):
    """Independent float64 reference: the implied A_ij entry by entry with explicit loops over segments; the
    official variant (not causal) also reaches the own segment through its summary."""
    q, k, key_mask = np.asarray(q), np.asarray(k), np.asarray(key_mask)
    B, H, L, P = q.shape
    q = q / np.sqrt(P)
    n = -(-L // s)
    A = np.zeros((B, H, L, L))
    for b, h in itertools.product(range(B), range(H)):
        segs = [[j for j in range(r * s, min(L, r * s + s)) if key_mask[b, j]] for r in range(n)]
        q_bar = {r: q[b, h, S].max(0) for r, S in enumerate(segs) if S}
        k_bar = {r: k[b, h, S].max(0) for r, S in enumerate(segs) if S}
        pi = {}
        for r, S in enumerate(segs):
            if S:
                e = np.exp([q_bar[r] @ k[b, h, j] for j in S])
                pi.update({j: ej / e.sum() for j, ej in zip(S, e)})
        for i in range(L):
            g = i // s
            direct = [j for j in segs[g] if not causal or j <= i]
            own = variant == "official" and not causal
            others = [r for r in k_bar if (r < g if causal else (own or r != g))]
            logits = [q[b, h, i] @ k[b, h, j] for j in direct] + [q[b, h, i] @ k_bar[r] for r in others]
            if not logits:
                continue
            w = np.exp(np.array(logits) - max(logits))
            w /= w.sum()
            for j, wj in zip(direct, w):
                A[b, h, i, j] = wj
            for r, wr in zip(others, w[len(direct):]):
                for j in segs[r]:
                    A[b, h, i, j] += wr * pi[j]
    return A


kernel = functools.partial(jax.jit, static_argnums=3, static_argnames=("causal", "variant"))
fast, plain = kernel(combiner_attention), kernel(combiner_dense)
matrix = jax.jit(combiner_matrix, static_argnums=2, static_argnames=("causal", "variant"))


@functools.partial(jax.jit, static_argnums=3, static_argnames=("causal", "variant"))
def all_forms(q, k, v, segment, *, key_mask, causal, variant):
    kw = dict(key_mask=key_mask, causal=causal, variant=variant)
    return (combiner_attention(q, k, v, segment, **kw), combiner_dense(q, k, v, segment, **kw),
            combiner_matrix(q, k, segment, **kw))


@pytest.mark.parametrize("variant", ["official", "partition"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("segment", [1, 4, 5, 13])  # 4, 5 do not divide 13: a padded last segment (all pad in row 1)
def test_fast_equals_plain_and_numpy(x64, causal, segment, variant):
    q, k, v, key_mask = inputs()
    got, want, a = all_forms(q, k, v, segment, key_mask=key_mask, causal=causal, variant=variant)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)
    A = numpy_combiner_matrix(q, k, segment, key_mask, causal, variant)
    np.testing.assert_allclose(np.asarray(a), A, **TOL)
    np.testing.assert_allclose(np.asarray(want), A @ np.asarray(v), **TOL)


def test_official_is_the_default_and_counts_the_own_segment_twice(x64):
    """s = 1 worked out from the official definition: token i's direct logit <q_i, k_i> and its own summary's
    logit (max-pool of one key: the same <q_i, k_i>, summary value v_i) both enter one softmax with every other
    token's summary: softmax attention whose own-token logit gains log 2."""
    q, k, v, key_mask = inputs(5)
    assert combiner_attention.__kwdefaults__["variant"] == "official" and Combiner.variant == "official"
    P = q.shape[-1]
    L = q.shape[2]
    logits = np.einsum("bhip,bhjp->bhij", np.asarray(q), np.asarray(k)) / np.sqrt(P) + np.log(2.0) * np.eye(L)
    logits = np.where(np.asarray(key_mask)[:, None, None, :], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    want = (w / w.sum(-1, keepdims=True)) @ np.asarray(v)
    np.testing.assert_allclose(np.asarray(fast(q, k, v, 1, key_mask=key_mask)), want, **TOL)
    # and the partition variant is plain softmax attention there
    np.testing.assert_allclose(np.asarray(fast(q, k, v, 1, key_mask=key_mask, variant="partition")),
                               np.asarray(attention_dense(q, k, v, key_mask=key_mask)), **TOL)


def test_official_with_one_segment_adds_its_summary_to_full_attention(x64):
    """s = L worked out from the official definition: one softmax over the L direct logits and the one summary
    logit <q_i, kbar> (kbar, qbar: max-pools over the real tokens), whose value is vbar = softmax_j(<qbar, k_j>) v."""
    q, k, v, key_mask = inputs(6)
    qn, kn, vn, m = (np.asarray(a) for a in (q, k, v, key_mask))
    P, L = qn.shape[-1], qn.shape[2]
    qn = qn / np.sqrt(P)
    want = np.zeros_like(vn)
    for b, h in itertools.product(range(qn.shape[0]), range(qn.shape[1])):
        real = np.flatnonzero(m[b])
        q_bar, k_bar = qn[b, h, real].max(0), kn[b, h, real].max(0)
        e = np.exp(kn[b, h, real] @ q_bar - (kn[b, h, real] @ q_bar).max())
        v_bar = (e / e.sum()) @ vn[b, h, real]
        for i in range(L):
            logits = np.concatenate([kn[b, h, real] @ qn[b, h, i], [k_bar @ qn[b, h, i]]])
            w = np.exp(logits - logits.max())
            w /= w.sum()
            want[b, h, i] = w[:-1] @ vn[b, h, real] + w[-1] * v_bar
    np.testing.assert_allclose(np.asarray(fast(q, k, v, L, key_mask=key_mask)), want, **TOL)


def test_causal_layer_is_the_same_in_both_variants(x64):
    q, k, v, key_mask = inputs(7)
    a, b = (fast(q, k, v, 4, key_mask=key_mask, causal=True, variant=x) for x in ("official", "partition"))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unknown_variant_is_an_error(x64):
    q, k, v, _ = inputs()
    with pytest.raises(ValueError, match="variant 'twice'"):
        combiner_attention(q, k, v, 4, variant="twice")


@pytest.mark.parametrize("variant", ["official", "partition"])
@pytest.mark.parametrize("causal", [False, True])
def test_float32_fast_matches_float64_plain(x64, causal, variant):
    q, k, v, key_mask = inputs(1, L=50, P=8)
    want = plain(q, k, v, 7, key_mask=key_mask, causal=causal, variant=variant)
    got = fast(*(a.astype(jnp.float32) for a in (q, k, v)), 7, key_mask=key_mask, causal=causal, variant=variant)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["official", "partition"])
def test_implied_rows_sum_to_one_and_every_entry_is_positive(x64, variant):
    q, k, _, _ = inputs(2, L=15)
    key_mask = jnp.asarray(np.arange(15)[None] < np.array([[15], [10]]))
    A, A_pad, A_causal = (np.asarray(matrix(q, k, 4, key_mask=m, causal=c, variant=variant))  # 4 does not divide 15
                          for m, c in ((None, False), (key_mask, False), (None, True)))
    np.testing.assert_allclose(A.sum(-1), 1.0, rtol=1e-12)
    assert np.all(A > 0)  # every token reaches every token, directly or through its segment's summary
    # with padding: rows still sum to 1, over the real keys, which are all reached
    np.testing.assert_allclose(A_pad.sum(-1), 1.0, rtol=1e-12)
    assert np.all(A_pad[1][..., 10:] == 0.0) and np.all(A_pad[1][..., :10] > 0) and np.all(A_pad[0] > 0)
    # causal: rows sum to 1, every entry on or below the diagonal is positive, none above
    np.testing.assert_allclose(A_causal.sum(-1), 1.0, rtol=1e-12)
    low = np.tril(np.ones((15, 15), bool))
    assert np.all(A_causal[..., low] > 0) and np.all(A_causal[..., ~low] == 0.0)


@pytest.mark.parametrize("causal", [False, True])
def test_partition_segment_one_and_segment_length_are_softmax_attention(x64, causal):
    q, k, v, key_mask = inputs(3)
    want = np.asarray(attention_dense(q, k, v, key_mask=key_mask, causal=causal))
    for s in (1, 13):
        got = fast(q, k, v, s, key_mask=key_mask, causal=causal, variant="partition")
        np.testing.assert_allclose(np.asarray(got), want, **TOL)


def test_module_with_one_segment_is_multi_head_attention():
    x = jax.random.normal(jax.random.key(0), (2, 12, 16))
    mask = jnp.arange(12)[None] < jnp.array([[12], [7]])
    mod = Combiner(d_model=16, num_heads=4, segment_size=12, variant="partition")
    params = jax.jit(lambda x: mod.init(jax.random.key(1), x))(x)
    got = jax.jit(lambda p, x: mod.apply(p, x, mask=mask))(params, x)
    mha = MultiHeadAttention(d_model=16, num_heads=4, implementation="dense")
    want = jax.jit(lambda p, x: mha.apply(p, x, mask=mask))(params, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def small(causal, L=12, d=16, segment=5):
    mod = Combiner(d_model=d, causal=causal, num_heads=2, segment_size=segment)
    x = jax.random.normal(jax.random.key(0), (2, L, d))
    params = jax.jit(lambda x: mod.init(jax.random.key(1), x))(x)
    return mod, params, x


def test_causal_module_has_no_leakage():
    mod, params, x = small(causal=True)
    jac = jax.jit(jax.jacrev(lambda x: mod.apply(params, x[None])[0]))(x[0])
    dep = np.abs(np.asarray(jac)).sum(axis=(1, 3))  # [t, s]
    assert np.all(dep[np.triu_indices(12, k=1)] == 0.0)
    assert np.all(dep[np.tril_indices(12)] > 0)  # and every past token is reached


def test_bidirectional_module_sees_every_token():
    mod, params, x = small(causal=False)
    jac = jax.jit(jax.jacrev(lambda x: mod.apply(params, x[None])[0]))(x[0])
    assert np.all(np.abs(np.asarray(jac)).sum(axis=(1, 3)) > 0)


@pytest.mark.parametrize("causal", [False, True])
def test_padding_never_reaches_real_positions(causal):
    mod, params, x = small(causal)
    mask = jnp.arange(12)[None] < jnp.array([[12], [7]])
    run = jax.jit(lambda x: mod.apply(params, x, mask=mask))
    y1, y2 = run(x), run(jnp.where(mask[..., None], x, 100.0))
    np.testing.assert_allclose(np.asarray(y1[1, :7]), np.asarray(y2[1, :7]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y1[0]), np.asarray(y2[0]), rtol=1e-5, atol=1e-5)
    y3 = jax.jit(lambda x: mod.apply(params, x))(x[1:2, :7])  # = the short sequence on its own (same segments)
    np.testing.assert_allclose(np.asarray(y1[1, :7]), np.asarray(y3[0]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("L", [1, 37])
def test_finite_gradients_and_defaults(L):
    mod = Combiner(d_model=16)  # defaults: 8 heads, segment about sqrt(L) (37 -> 6: a padded last segment)
    x = jax.random.normal(jax.random.key(0), (2, L, 16))
    mask = jnp.ones((2, L), bool).at[1, L // 2 + 1:].set(False)
    params = jax.jit(lambda x: mod.init(jax.random.key(1), x, mask=mask))(x)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(mod.apply(p, x, mask=mask, deterministic=False) ** 2)))(params)
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert {jax.tree_util.keystr(p).split("'")[1] for p, _ in leaves} == {"params"}
    for p, g in leaves:
        assert np.all(np.isfinite(np.asarray(g))), jax.tree_util.keystr(p)
    assert any(np.any(np.asarray(g) != 0) for _, g in leaves)
