"""Routing attention: fast = plain = NumPy given the indices (float64), balanced clusters of exactly w, C = 1 is full
attention, tokens in no cluster output 0, shared QK against its definition, the exactly causal sliding-window form
against its plain form and a NumPy loop, online k-means (closed form, no gradient, convergence, eval leaves it),
k-means init on the first training batch (once, under jit), the reference defaults, local heads, causality,
padding, finite gradients."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import MultiHeadAttention, attention_dense
from models.routing import (TOKEN_SELF, RoutingAttention, argmax_clusters, balanced_assignment, causal_assignment,
                            causal_routing_attention, causal_routing_attention_dense, centroid_update,
                            commitment_loss, kmeans_init, l2_normalize, local_attention, local_attention_dense,
                            random_unit_centroids, routing_attention, routing_attention_dense, similarities)

TOL = dict(rtol=1e-10, atol=1e-10)


def inputs(seed=0, B=2, H=3, L=13, P=4, C=3, dtype=np.float64):
    r = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(r.normal(size=(B, H, L, P)), dtype) for _ in range(3))
    key_mask = jnp.asarray(np.arange(L)[None] < np.array([[L], [L - 5]]))
    mu = random_unit_centroids(jax.random.key(seed), H, C, P).astype(dtype)
    return q, k, v, key_mask, mu


@functools.partial(jax.jit, static_argnums=3)
def assign(q, k, mu, w, key_mask):
    return balanced_assignment(l2_normalize(q), l2_normalize(k), mu, w, key_mask)


def numpy_routing(q, k, v, idx_q, idx_k, key_mask, causal):
    """Independent float64 reference: per (batch, head, cluster) an explicit softmax over the cluster's allowed keys,
    outputs summed per token and divided by the number of clusters it sits in (0 if none)."""
    q, k, v, idx_q, idx_k, key_mask = map(np.asarray, (q, k, v, idx_q, idx_k, key_mask))
    B, H, L, P = q.shape
    total, count = np.zeros_like(v), np.zeros((B, H, L))
    for b, h in itertools.product(range(B), range(H)):
        for c in range(idx_q.shape[2]):
            for i in idx_q[b, h, c]:
                count[b, h, i] += 1
                keys = [j for j in idx_k[b, h, c] if key_mask[b, j] and (not causal or j <= i)]
                if not keys:
                    continue
                logits = np.array([q[b, h, i] @ k[b, h, j] / np.sqrt(P) for j in keys])
                w = np.exp(logits - logits.max())
                total[b, h, i] += (w[:, None] * v[b, h, keys]).sum(0) / w.sum()
    return np.where(count[..., None] > 0, total / np.maximum(count, 1)[..., None], 0.0)


kernels = functools.partial(jax.jit, static_argnames=("causal", "shared_qk"))
fast, plain = kernels(routing_attention), kernels(routing_attention_dense)


@pytest.mark.parametrize("causal", [False, True])
def test_fast_equals_plain_and_numpy_given_indices(x64, causal):
    q, k, v, key_mask, mu = inputs()
    idx_q, idx_k = assign(q, k, mu, 5, key_mask)  # 3 clusters of 5 over 13 tokens: some tokens in none or several
    got = fast(q, k, v, idx_q, idx_k, key_mask=key_mask, causal=causal)
    want = plain(q, k, v, idx_q, idx_k, key_mask=key_mask, causal=causal)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)
    np.testing.assert_allclose(np.asarray(want), numpy_routing(q, k, v, idx_q, idx_k, key_mask, causal), **TOL)
    # float32 fast path against the float64 plain form on the same indices
    got32 = fast(*(a.astype(jnp.float32) for a in (q, k, v)), idx_q, idx_k, key_mask=key_mask, causal=causal)
    np.testing.assert_allclose(np.asarray(got32), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_each_cluster_takes_exactly_w_best_tokens_real_before_padded(x64):
    q, k, v, key_mask, mu = inputs(1, L=17, C=4)
    w = 5
    for x, idx in zip((q, k), assign(q, k, mu, w, key_mask)):
        idx = np.asarray(idx)
        assert idx.shape == (2, 3, 4, w)
        assert np.all(np.diff(idx, axis=-1) > 0) and idx.min() >= 0 and idx.max() < 17  # w distinct, by position
        sim = np.asarray(jax.jit(lambda x: similarities(l2_normalize(x), mu))(x)).transpose(0, 1, 3, 2)  # [B,H,C,L]
        real = np.asarray(key_mask)
        for b, h, c in itertools.product(range(2), range(3), range(4)):
            members = set(idx[b, h, c])
            assert all(real[b, j] for j in members)  # 12 real tokens >= w: padded tokens never taken
            inside = [sim[b, h, c, j] for j in members]
            outside = [sim[b, h, c, j] for j in range(17) if j not in members and real[b, j]]
            assert min(inside) >= max(outside)  # the top w by cosine similarity
    # with fewer real tokens than w, every real token is taken first
    idx_q, _ = assign(q, k, mu, 15, key_mask)
    assert all(set(range(12)) <= set(np.asarray(idx_q)[1, h, c]) for h in range(3) for c in range(4))


@pytest.mark.parametrize("C", [1, 5, 16, 17, 40])
def test_argmax_clusters_is_argmax_with_the_first_maximum_on_ties(C):
    r = np.random.default_rng(C)
    sim = r.normal(size=(2, 3, C, 30)).astype(np.float32)
    sim[0, 0, :, 0] = 0.5  # all equal: cluster 0
    sim[1, 2, :, 1] = -1.0
    sim[1, 2, [C // 2, C - 1], 1] = 2.0  # a tie between two clusters (one in the last, padded group when C = 17)
    sim[0, 1, :, 2] = -np.arange(C)  # decreasing, and increasing below: the first and the last cluster win
    sim[0, 2, :, 2] = np.arange(C)
    got = np.asarray(argmax_clusters(jnp.asarray(sim)))
    np.testing.assert_array_equal(got, np.argmax(sim, axis=-2))
    assert got[0, 0, 0] == 0 and got[1, 2, 1] == C // 2 and got[0, 1, 2] == 0 and got[0, 2, 2] == C - 1


def test_bidirectional_routing_does_not_depend_on_the_order_within_a_cluster(x64):
    """The layer passes top_k's order (unsorted) to the bidirectional path: any order gives the same outputs."""
    q, k, v, key_mask, mu = inputs(3)
    idx_q, idx_k = assign(q, k, mu, 5, key_mask)
    perm = np.random.default_rng(0).permutation(5)
    for shared in (False, True):
        want = fast(q, k, v, idx_q, idx_k, key_mask=key_mask, shared_qk=shared)
        got = fast(q, k, v, idx_q[..., perm], idx_k[..., perm[::-1]], key_mask=key_mask, shared_qk=shared)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_one_cluster_of_the_whole_length_is_full_attention(x64, causal):
    q, k, v, key_mask, mu = inputs(2, C=1)
    idx_q, idx_k = assign(q, k, mu, 13, key_mask)
    got = fast(q, k, v, idx_q, idx_k, key_mask=key_mask, causal=causal)
    want = attention_dense(q, k, v, key_mask=key_mask, causal=causal)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)


@pytest.mark.slow
def test_module_with_one_cluster_and_only_routing_heads_is_multi_head_attention():
    x = jax.random.normal(jax.random.key(0), (2, 12, 16))
    mask = jnp.arange(12)[None] < jnp.array([[12], [7]])
    mha = MultiHeadAttention(d_model=16, num_heads=4, implementation="dense")
    params = jax.jit(lambda x: mha.init(jax.random.key(1), x))(x)
    want = jax.jit(lambda p, x: mha.apply(p, x, mask=mask))(params, x)
    mod = RoutingAttention(d_model=16, num_heads=4, num_routing_heads=4, num_clusters=1)
    variables = {**params, "routing": {"centroids": random_unit_centroids(jax.random.key(2), 4, 1, 4)}}
    got = jax.jit(lambda v, x: mod.apply(v, x, mask=mask))(variables, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_tokens_in_no_cluster_output_zero_and_members_an_exact_average(x64):
    q, k, v, _, _ = inputs(3, B=1, H=1, L=8)
    idx_q = jnp.asarray([[[[0, 2, 4], [2, 5, 6]]]], jnp.int32)  # token 2 in two clusters; 1, 3, 7 in none
    idx_k = jnp.asarray([[[[0, 1, 3], [3, 6, 7]]]], jnp.int32)
    out = np.asarray(fast(q, k, v, idx_q, idx_k))[0, 0]
    assert np.all(out[[1, 3, 7]] == 0.0)  # exactly zero, not a division by an epsilon

    def one(i, keys):
        logits = np.asarray(q)[0, 0, i] @ np.asarray(k)[0, 0, keys].T / 2.0
        w = np.exp(logits - logits.max())
        return w @ np.asarray(v)[0, 0, keys] / w.sum()

    np.testing.assert_allclose(out[0], one(0, [0, 1, 3]), **TOL)  # one cluster: its output, undivided
    np.testing.assert_allclose(out[2], (one(2, [0, 1, 3]) + one(2, [3, 6, 7])) / 2, **TOL)
    np.testing.assert_allclose(out, np.asarray(plain(q, k, v, idx_q, idx_k))[0, 0], **TOL)


# ----------------------------------------------------------------------------------------------------- k-means

def test_centroid_update_equals_its_closed_form_on_a_toy_batch(x64):
    mu = jnp.asarray([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # [H=1, C=3, P=2]
    s = np.sqrt(0.5)
    x = jnp.asarray([[[[1.0, 0.0], [s, s + 0.01], [0.6, 0.8]]],  # nearest centroids 0, 1, 1
                     [[[0.8, -0.6], [0.0, -1.0], [-0.6, 0.8]]]])  # 0, (padded), 1; [B=2, H=1, N=3, P=2]
    valid = jnp.asarray([[True, True, True], [True, False, True]])
    new = np.asarray(jax.jit(centroid_update, static_argnums=3)(mu, x, valid, 0.75))
    m0 = np.array([1.0, 0.0]) + np.array([0.8, -0.6])
    m1 = np.array([s, s + 0.01]) + np.array([0.6, 0.8]) + np.array([-0.6, 0.8])
    want = np.array([0.75 * np.array([1.0, 0.0]) + 0.25 * m0 / np.linalg.norm(m0),
                     0.75 * np.array([0.0, 1.0]) + 0.25 * m1 / np.linalg.norm(m1),
                     [-1.0, 0.0]])  # cluster 2 has no members: unchanged
    np.testing.assert_allclose(new[0], want, rtol=1e-6, atol=1e-6)  # rsqrt(|x|^2 + 1e-6) normalisation
    # commitment loss: mean squared distance of the real vectors to their (stop-gradient) centroids
    # (the reference's F.mse_loss: a mean over the feature dimension too, here P = 2)
    d = [np.mean((np.asarray(x)[b, 0, n] - np.asarray(mu)[0, c]) ** 2)
         for b, n, c in [(0, 0, 0), (0, 1, 1), (0, 2, 1), (1, 0, 0), (1, 2, 1)]]
    np.testing.assert_allclose(float(jax.jit(commitment_loss)(x, mu, valid)), np.mean(d), rtol=1e-12)


@functools.lru_cache(maxsize=None)
def _small_variables(causal=False):
    """Variables of the small module, initialised once per mode for all the tests, with the k-means init marked
    done (these tests follow the online updates; the first-batch init has its own tests)."""
    mod = RoutingAttention(d_model=16, causal=causal, num_heads=4, num_clusters=3)
    variables = jax.jit(lambda x: mod.init(jax.random.key(1), x))(jnp.zeros((1, 12, 16)))
    return {**variables, "routing": {**variables["routing"], "initialized": jnp.ones((), jnp.float32)}}


def small(causal=False):
    """4 heads of width 4 (2 routing, 2 local), 3 clusters, windows of 4, local blocks of 4; shared QK when
    causal (the reference default)."""
    mod = RoutingAttention(d_model=16, causal=causal, num_heads=4, num_clusters=3, window=4, local_window=4)
    return mod, _small_variables(causal), jax.random.normal(jax.random.key(0), (2, 12, 16))


def normalised_qk(variables, x):
    p = variables["params"]
    proj = lambda name, bias: jnp.einsum("bld,dhp->bhlp", x, p[name]["kernel"]) + (
        p[name]["bias"][None, :, None, :] if bias else 0.0)
    Hr = variables["routing"]["centroids"].shape[0]
    return l2_normalize(proj("query", True)[:, :Hr]), l2_normalize(proj("key", False)[:, :Hr])


def test_module_updates_centroids_in_training_only_by_the_closed_form():
    mod, variables, x = small()
    mask = jnp.arange(12)[None] < jnp.array([[12], [8]])
    train = jax.jit(lambda v, x: mod.apply(v, x, mask=mask, deterministic=False, mutable=["routing", "losses"]))
    _, state = train(variables, x)
    mu = variables["routing"]["centroids"]
    assert mu.shape == (2, 3, 4)  # half of 4 heads route, 3 clusters, head width 4

    @jax.jit
    def closed_form(variables, x):
        x_hat = jnp.concatenate(normalised_qk(variables, x), 2)
        valid = jnp.concatenate([mask, mask], 1)
        return centroid_update(mu, x_hat, valid, 0.999), commitment_loss(x_hat, mu, valid)

    want, want_loss = closed_form(variables, x)
    np.testing.assert_allclose(np.asarray(state["routing"]["centroids"]), np.asarray(want), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(want), np.asarray(mu))
    (loss,) = state["losses"]["commitment"]
    np.testing.assert_allclose(float(loss), 1e-4 * float(want_loss), rtol=1e-4)
    # evaluation never updates (even with the collection mutable) and sows no loss
    _, state = jax.jit(lambda v, x: mod.apply(v, x, mask=mask, mutable=["routing", "losses"]))(variables, x)
    np.testing.assert_array_equal(np.asarray(state["routing"]["centroids"]), np.asarray(mu))
    assert "losses" not in state


def test_centroids_receive_no_gradient_and_commitment_reaches_the_projections():
    mod, variables, x = small()

    def loss(variables, weight):
        y, sown = mod.apply(variables, x, deterministic=False, mutable=["losses"])
        return weight * jnp.sum(y ** 2) + sum(jnp.sum(a) for a in jax.tree_util.tree_leaves(sown))

    for weight in (1.0, 0.0):  # with the output, and the commitment loss alone
        grads = jax.jit(jax.grad(loss))(variables, weight)
        assert np.all(np.asarray(grads["routing"]["centroids"]) == 0.0)
        assert np.any(np.asarray(grads["params"]["query"]["kernel"]) != 0.0)
        assert np.any(np.asarray(grads["params"]["key"]["kernel"]) != 0.0)


def test_centroids_converge_to_the_cluster_directions():
    """300 online k-means steps on batches drawn around 4 directions move each centroid onto its direction."""
    P, K, N, steps, decay = 8, 4, 64, 300, 0.97
    r = np.random.default_rng(0)
    basis = np.linalg.qr(r.normal(size=(P, P)))[0].T
    directions = basis[:K]  # orthonormal cluster directions
    start = 0.6 * directions + 0.8 * basis[K:2 * K]  # unit vectors at cosine 0.6 to their own direction, 0 to others
    mu0 = jnp.asarray(start[None], jnp.float32)  # [H=1, C=K, P]

    def step(mu, key):
        k1, k2 = jax.random.split(key)
        labels = jax.random.randint(k1, (2, 1, N), 0, K)
        x = jnp.asarray(directions, jnp.float32)[labels] + 0.2 * jax.random.normal(k2, (2, 1, N, P)) / np.sqrt(P)
        return centroid_update(mu, l2_normalize(x), None, decay), None

    mu, _ = jax.jit(lambda mu: jax.lax.scan(step, mu, jax.random.split(jax.random.key(0), steps)))(mu0)
    cos = lambda m: np.sum(np.asarray(m)[0] * directions, axis=1) / np.linalg.norm(np.asarray(m)[0], axis=1)
    np.testing.assert_allclose(np.asarray(cos(mu0)), 0.6, rtol=1e-5)
    assert np.all(np.asarray(cos(mu)) > 0.99), np.asarray(cos(mu))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(mu)[0], axis=1), 1.0, atol=0.03)  # EMA of unit means


# ----------------------------------------------------------------------------------------------------- local heads

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [1, 5, 13])  # 5 does not divide 13
def test_local_attention_equals_band_masked_dense(x64, causal, block):
    q, k, v, key_mask, _ = inputs(4)
    got = jax.jit(local_attention, static_argnums=3, static_argnames="causal")(q, k, v, block, key_mask=key_mask,
                                                                                causal=causal)
    want = local_attention_dense(q, k, v, block, key_mask=key_mask, causal=causal)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)
    if block == 13:  # one block: full attention
        np.testing.assert_allclose(np.asarray(got), np.asarray(attention_dense(q, k, v, key_mask=key_mask,
                                                                               causal=causal)), **TOL)


# ----------------------------------------------------------------------------------------------------- module

def test_causal_module_has_no_leakage():
    mod, variables, x = small(causal=True)
    jac = jax.jit(jax.jacrev(lambda x: mod.apply(variables, x[None])[0]))(x[0])
    dep = np.abs(np.asarray(jac)).sum(axis=(1, 3))  # [t, s]
    assert np.all(dep[np.triu_indices(12, k=1)] == 0.0)
    assert np.all(np.diag(dep) > 0)  # the local heads always see the token itself


@pytest.mark.parametrize("causal", [False, True])
def test_padding_never_reaches_real_positions(causal):
    mod, variables, x = small(causal)
    mask = jnp.arange(12)[None] < jnp.array([[12], [7]])
    run = jax.jit(lambda v, x: mod.apply(v, x, mask=mask, deterministic=False, mutable=["routing", "losses"]))
    (y1, s1), (y2, s2) = run(variables, x), run(variables, jnp.where(mask[..., None], x, 100.0))
    np.testing.assert_allclose(np.asarray(y1[1, :7]), np.asarray(y2[1, :7]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y1[0]), np.asarray(y2[0]), rtol=1e-5, atol=1e-5)
    # padded tokens stay out of the centroid statistics and the commitment loss
    np.testing.assert_allclose(np.asarray(s1["routing"]["centroids"]), np.asarray(s2["routing"]["centroids"]),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(s1["losses"]["commitment"]), np.asarray(s2["losses"]["commitment"]),
                               rtol=1e-5)
    # and the padded sequence equals the short one on its own (fixed C, window and local block)
    y3 = jax.jit(lambda v, x: mod.apply(v, x))(variables, x[1:2, :7])
    np.testing.assert_allclose(np.asarray(y1[1, :7]), np.asarray(y3[0]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L", [1, 37, 130])
def test_finite_gradients_and_defaults(L, causal):
    mod = RoutingAttention(d_model=16, causal=causal)  # defaults: 8 heads, 4 routing, w = 64, C = ceil(L / 64)
    x = jax.random.normal(jax.random.key(0), (2, L, 16))
    mask = jnp.ones((2, L), bool).at[1, L // 2 + 1:].set(False)
    variables = jax.jit(lambda x: mod.init(jax.random.key(1), x, mask=mask))(x)
    assert variables["routing"]["centroids"].shape == (4, -(-L // 64), 2)
    assert float(variables["routing"]["initialized"]) == 0.0

    def loss(params):
        y, sown = mod.apply({**variables, "params": params}, x, mask=mask, deterministic=False,
                            mutable=["routing", "losses"], rngs={"dropout": jax.random.key(2)})
        return jnp.sum(y ** 2) + sum(jnp.sum(a) for a in jax.tree_util.tree_leaves(sown["losses"]))

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for p, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(np.asarray(g))), jax.tree_util.keystr(p)


@pytest.mark.slow
def test_encoder_threads_centroids_and_losses_through_every_block():
    from configs import models as model_configs
    from models import build_encoder
    c = model_configs.get("routing")
    c.d_model, c.num_layers = 16, 2
    enc = build_encoder(c, vocab_size=10, max_len=16)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 10, size=(2, 16)))
    variables = jax.jit(lambda t: enc.init(jax.random.key(0), t))(tokens)
    assert set(variables) == {"params", "routing"}
    assert variables["routing"]["block0"]["mixer"]["centroids"].shape == (4, 1, 2)  # C = ceil(16 / 64)
    _, state = jax.jit(lambda v, t: enc.apply(v, t, deterministic=False, mutable=["routing", "losses"],
                                              rngs={"dropout": jax.random.key(1)}))(variables, tokens)
    assert set(state["losses"]) == {"block0", "block1"}
    for b in ("block0", "block1"):
        assert not np.allclose(np.asarray(state["routing"][b]["mixer"]["centroids"]),
                               np.asarray(variables["routing"][b]["mixer"]["centroids"]))


# ----------------------------------------------------------------------------------------------------- shared QK

def numpy_shared_qk(q, v, idx, key_mask):
    """The shared-QK definition worked out directly: keys are the normalised queries, one index set per cluster for
    both, a token's logit with itself is TOKEN_SELF (-5e4), averaged over the clusters a token sits in."""
    q, v, idx, key_mask = map(np.asarray, (q, v, idx, key_mask))
    B, H, L, P = q.shape
    k = q / np.sqrt(np.sum(q * q, -1, keepdims=True) + 1e-6)
    total, count = np.zeros_like(v), np.zeros((B, H, L))
    for b, h in itertools.product(range(B), range(H)):
        for c in range(idx.shape[2]):
            for i in idx[b, h, c]:
                count[b, h, i] += 1
                keys = [j for j in idx[b, h, c] if key_mask[b, j]]
                if not keys:
                    continue
                logits = np.array([TOKEN_SELF if j == i else q[b, h, i] @ k[b, h, j] / np.sqrt(P) for j in keys])
                w = np.exp(logits - logits.max())
                total[b, h, i] += (w[:, None] * v[b, h, keys]).sum(0) / w.sum()
    return np.where(count[..., None] > 0, total / np.maximum(count, 1)[..., None], 0.0)


def test_shared_qk_against_its_definition(x64):
    q, _, v, key_mask, mu = inputs(7)
    q_hat = l2_normalize(q)
    idx, _ = balanced_assignment(q_hat, q_hat, mu, 5, key_mask)
    want = numpy_shared_qk(q, v, idx, key_mask)
    got = fast(q, q_hat, v, idx, idx, key_mask=key_mask, shared_qk=True)
    np.testing.assert_allclose(np.asarray(got), want, **TOL)
    np.testing.assert_allclose(np.asarray(plain(q, q_hat, v, idx, idx, key_mask=key_mask, shared_qk=True)), want,
                               **TOL)


def test_shared_qk_module_with_one_cluster_is_its_definition():
    """Only routing heads, one cluster over the whole sequence, shared QK: the module is dense attention over the
    keys k = q^ with the self logit at -5e4 (the reference's shared-QK layer), computed here from its parameters.
    There is no key projection (nothing else has one)."""
    L, D, H = 10, 16, 4
    mod = RoutingAttention(d_model=D, num_heads=H, num_routing_heads=H, shared_qk=1)
    x = jax.random.normal(jax.random.key(0), (2, L, D))
    variables = jax.jit(lambda x: mod.init(jax.random.key(1), x))(x)
    assert "key" not in variables["params"] and variables["routing"]["centroids"].shape == (H, 1, D // H)
    got = jax.jit(lambda v, x: mod.apply(v, x))(variables, x)
    p = {n: np.asarray(a, np.float64) for n, a in flax_flatten(variables["params"]).items()}
    xn = np.asarray(x, np.float64)
    q = np.einsum("bld,dhp->bhlp", xn, p["query/kernel"]) + p["query/bias"][None, :, None, :]
    v = np.einsum("bld,dhp->bhlp", xn, p["value/kernel"]) + p["value/bias"][None, :, None, :]
    o = numpy_shared_qk(q, v, np.broadcast_to(np.arange(L), (2, H, 1, L)), np.ones((2, L), bool))
    want = np.einsum("bhlp,hpd->bld", o, p["out/kernel"]) + p["out/bias"]
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-5)


def flax_flatten(tree):
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


# ----------------------------------------------------------------------------------------------------- causal routing

def numpy_causal_routing(q, k, v, a_q, a_k, w, key_mask, shared):
    """The causal definition worked out directly: query i attends to the last w keys j <= i of its cluster (then
    drops padded ones); shared QK puts its own logit at -5e4."""
    q, k, v, a_q, a_k, key_mask = map(np.asarray, (q, k, v, a_q, a_k, key_mask))
    B, H, L, P = q.shape
    out = np.zeros_like(v)
    for b, h, i in itertools.product(range(B), range(H), range(L)):
        keys = [j for j in range(i + 1) if a_k[b, h, j] == a_q[b, h, i]][-w:]
        keys = [j for j in keys if key_mask[b, j]]
        if not keys:
            continue
        logits = np.array([TOKEN_SELF if (shared and j == i) else q[b, h, i] @ k[b, h, j] / np.sqrt(P)
                           for j in keys])
        e = np.exp(logits - logits.max())
        out[b, h, i] = e @ v[b, h, keys] / e.sum()
    return out


causal_fast = jax.jit(causal_routing_attention, static_argnums=5, static_argnames="shared_qk")


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("w", [1, 3, 13])
def test_causal_routing_equals_plain_and_numpy(x64, shared, w):
    q, k, v, key_mask, mu = inputs(8)
    if shared:
        k = l2_normalize(q)
    a_q = causal_assignment(l2_normalize(q), mu, key_mask)
    a_k = a_q if shared else causal_assignment(l2_normalize(k), mu, key_mask)
    assert int(jnp.max(a_q)) == 3 and np.all(np.asarray(a_q)[1, :, 8:] == 3)  # padded tokens: a cluster of their own
    got = causal_fast(q, k, v, a_q, a_k, w, key_mask=key_mask, shared_qk=shared)
    want = causal_routing_attention_dense(q, k, v, a_q, a_k, w, key_mask=key_mask, shared_qk=shared)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)
    np.testing.assert_allclose(np.asarray(want), numpy_causal_routing(q, k, v, a_q, a_k, w, key_mask, shared), **TOL)
    assert np.all(np.asarray(got)[1, :, 8:] == 0.0)  # padded queries see no real key


def test_causal_routing_with_one_cluster_and_a_full_window_is_causal_attention(x64):
    q, k, v, key_mask, _ = inputs(9)
    a = jnp.zeros(q.shape[:3], jnp.int32)
    got = causal_fast(q, k, v, a, a, 13, key_mask=key_mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(attention_dense(q, k, v, key_mask=key_mask, causal=True)),
                               **TOL)


# ----------------------------------------------------------------------------------------------------- k-means init

def test_kmeans_init_finds_two_groups_and_skips_padding(x64):
    """Two orthogonal groups of vectors (and padded vectors pointing elsewhere): from any random start, 10 Lloyd
    iterations end on the normalised sums of the two groups; padded vectors are never picked or counted."""
    r = np.random.default_rng(0)
    a, b, pad = np.eye(4)[0], np.eye(4)[1], np.eye(4)[2]
    pts = np.stack([a + 0.05 * r.normal(size=4) for _ in range(5)] + [b + 0.05 * r.normal(size=4) for _ in range(5)]
                   + [pad] * 6)
    x = jnp.asarray(pts / np.linalg.norm(pts, axis=1, keepdims=True))[None, None]  # [1, 1, 16, 4]
    valid = jnp.asarray(np.arange(16) < 10)[None]
    xs = np.asarray(x)[0, 0]
    want = np.stack([s / np.linalg.norm(s) for s in (xs[:5].sum(0), xs[5:10].sum(0))])  # group a first
    for seed in range(6):
        mu = np.asarray(jax.jit(kmeans_init, static_argnums=(2, 4))(jax.random.key(seed), x, 2, valid, 10))
        assert mu.shape == (1, 2, 4)
        got = mu[0][np.argsort(-mu[0][:, 0])]  # the centroid near a first
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=str(seed))


def test_first_training_batch_runs_kmeans_once_under_jit():
    """The flag starts at 0; the first training step sets it and leaves k-means centroids (with ema_decay = 0 the
    state after the step is one more Lloyd step from them, so it is a k-means fixed point on that batch); the
    next step is the plain EMA update of the state, not a second init; evaluation changes nothing."""
    mod = RoutingAttention(d_model=16, num_heads=4, num_clusters=3, window=4, ema_decay=0.0)
    x1, x2 = jax.random.normal(jax.random.key(0), (2, 2, 12, 16))
    mask = jnp.arange(12)[None] < jnp.array([[12], [8]])
    variables = jax.jit(lambda x: mod.init(jax.random.key(1), x))(x1)
    assert float(variables["routing"]["initialized"]) == 0.0
    train = jax.jit(lambda v, x: mod.apply(v, x, mask=mask, deterministic=False, mutable=["routing", "losses"],
                                           rngs={"dropout": jax.random.key(3)}))
    _, s1 = train(variables, x1)
    assert float(s1["routing"]["initialized"]) == 1.0
    x_hat = lambda v, x: jnp.concatenate(normalised_qk({**variables, **v}, x), 2)
    valid = jnp.concatenate([mask, mask], 1)
    mu1 = s1["routing"]["centroids"]
    again = centroid_update(mu1, x_hat(variables, x1), valid, 0.0)
    np.testing.assert_allclose(np.asarray(again), np.asarray(mu1), atol=1e-6)
    random_start = variables["routing"]["centroids"]
    assert not np.allclose(np.asarray(centroid_update(random_start, x_hat(variables, x1), valid, 0.0)),
                           np.asarray(random_start), atol=1e-3)
    _, s2 = train({**variables, "routing": s1["routing"]}, x2)
    np.testing.assert_allclose(np.asarray(s2["routing"]["centroids"]),
                               np.asarray(centroid_update(mu1, x_hat(variables, x2), valid, 0.0)), atol=1e-6)
    _, s3 = jax.jit(lambda v, x: mod.apply(v, x, mutable=["routing"]))(variables, x1)
    assert float(s3["routing"]["initialized"]) == 0.0


def test_a_state_without_the_flag_keeps_its_centroids():
    mod, variables, x = small()
    old = {**variables, "routing": {"centroids": variables["routing"]["centroids"]}}
    _, state = jax.jit(lambda v, x: mod.apply(v, x, deterministic=False, mutable=["routing", "losses"]))(old, x)
    assert set(state["routing"]) == {"centroids"}
    x_hat = jnp.concatenate(normalised_qk(variables, x), 2)
    np.testing.assert_allclose(np.asarray(state["routing"]["centroids"]),
                               np.asarray(centroid_update(old["routing"]["centroids"], x_hat, None, 0.999)),
                               rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------- defaults

def test_reference_defaults():
    """lucidrains/routing-transformer: window 64 tokens per cluster (C = L / 64), shared QK exactly when causal,
    10 k-means init iterations, the local block = the window, PyTorch Linear init (|w| <= 1/sqrt(fan_in))."""
    f = RoutingAttention.__dataclass_fields__
    assert (f["window"].default, f["num_clusters"].default, f["shared_qk"].default, f["kmeans_init_iters"].default,
            f["local_window"].default, f["torch_init"].default) == (64, 0, -1, 10, 0, True)
    x = jnp.zeros((1, 256, 32))
    for causal, key_heads in ((False, 8), (True, 4)):
        v = jax.jit(lambda x: RoutingAttention(d_model=32, causal=causal).init(jax.random.key(0), x))(x)
        assert v["routing"]["centroids"].shape == (4, 4, 4)  # 256 / 64 clusters
        assert v["params"]["key"]["kernel"].shape == (32, key_heads, 4)  # causal: routing heads share q and k
        for name, fan_in in (("query", 32), ("value", 32), ("out", 32)):
            for leaf in v["params"][name].values():
                a = np.abs(np.asarray(leaf))
                assert a.max() <= 1 / np.sqrt(fan_in) and a.max() > 0.9 / np.sqrt(fan_in)
