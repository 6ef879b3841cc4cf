"""Routing attention (Roy et al. 2021, "Efficient Content-Based Sparse Attention with Routing Transformers").

Reference layer: the paper and its widely used PyTorch implementation, lucidrains/routing-transformer
(``routing_transformer/routing_transformer.py`` at commit 3f6c461a036e98dbae7e70c623d1c0e0616ef82a: ``Kmeans``,
``KmeansAttention``, ``SelfAttention``, ``RoutingTransformer``). Per routing head, with ``q_t, k_t, v_t`` in R^P,
normalised copies ``x^ = x/|x|`` and centroids ``mu`` in R^{C x P} (state, not parameters):

* **Bidirectional (balanced) routing.** Cluster c takes the ``w`` queries with the largest ``<q^_t, mu_c>`` and,
  separately, the ``w`` keys with the largest ``<k^_t, mu_c>`` (padded tokens never before a real one), each index
  set sorted by position; a token can sit in several clusters or in none. Attention inside each cluster as one
  batch of ``w x w`` dense blocks with raw q and k (the PyTorch port; the TF original attends with the normalised
  ones): ``o^(c)_i = sum_{j in I^K_c} softmax_j(<q_i, k_j>/sqrt(P) + mask) v_j``; scattered back as
  ``o_i = sum_{c: i in I^Q_c} o^(c)_i / n_i`` (``o_i = 0`` when ``n_i = 0``; a ``where``, no epsilon).
* **Causal routing, exactly causal.** Balanced top-w ranks the whole sequence, so whether token t gets a slot
  depends on later tokens (a causal mask on positions does not stop that). The causal mode instead assigns every
  query and key to its nearest centroid, ``a(x) = argmax_c <x^, mu_c>`` (mu is state), and query i attends to the
  ``w`` most recent keys ``j <= i`` of its own cluster: a sliding window over the keys sorted by (cluster,
  position), masked to the query's cluster. The set a token sees depends only on tokens up to it, and the cost is
  ``O(L w P)`` (:func:`causal_routing_attention`, plain form :func:`causal_routing_attention_dense`).
* **Shared QK** (``shared_qk``): keys are the queries' projection, L2-normalised (``k = q^``), queries and keys route
  together (one assignment), and a token does not attend to itself: its own logit is -5e4 (lucidrains'
  ``TOKEN_SELF_ATTN_VALUE``), so it only matters when it is the only key allowed.
* **Online k-means** (training only, no gradient): over the normalised real queries and keys (the queries alone
  with shared QK) of the global batch, for each cluster with members ``m_c = normalize(sum_{a(x)=c} x^)`` and
  ``mu_c <- lambda mu_c + (1 - lambda) m_c``; empty clusters keep their value. Commitment loss
  ``beta * mean_{x, features} (x^ - sg(mu_{a(x)}))^2`` (``F.mse_loss``: a mean over the feature dimension too).
* **Centroid init**: ``kmeans_init_iters`` (10) spherical k-means iterations on the first training batch, started
  from randomly chosen real vectors of that batch (lucidrains ``Kmeans.init``, ``KMEAN_INIT_ITERS = 10``); until
  then the centroids are random unit vectors (the TF original's init, and the whole story with
  ``kmeans_init_iters=0``). A flag ``routing/initialized`` in the state marks it, so it runs once, under ``jit``
  (``lax.cond``). The bidirectional layer routes the initialising batch with the new centroids (as the
  reference); the causal layer routes it with the previous ones, so that its output at t never depends on later
  tokens, not even through the first batch's centroids.
* **Local heads**: blocked local attention, each query attending to its own block and the neighbouring block on
  each side; with ``causal`` the previous block only, with a causal mask (lucidrains ``LocalAttention(causal=True,
  look_forward=0)``).

Defaults and their sources (the project's earlier choices stay available as fields):

* ``window=64`` tokens per cluster and ``num_clusters = ceil(L / 64)`` (lucidrains ``window_size = 64``,
  ``num_clusters = max_seq_len // window_size``); earlier: about sqrt(L) clusters (``window=0, num_clusters=0``).
* ``shared_qk=-1``: shared QK exactly when causal (lucidrains ``shared_qk = default(shared_qk, causal)``);
  0 / 1 force separate / shared projections.
* ``kmeans_init_iters=10`` (lucidrains); earlier: random unit vectors (``kmeans_init_iters=0``).
* commitment loss averaged over the feature dimension (lucidrains ``F.mse_loss``); earlier: summed over it (the
  same as ``commitment_weight`` times the head width).
* local block = the routing window (lucidrains ``RoutingTransformerLM``: ``local_attn_window_size`` defaults to
  ``window_size``; its bare ``RoutingTransformer`` class defaults to 256).
* projections initialised as PyTorch's ``nn.Linear`` (:mod:`models.init`).

Kernel functions over ``[batch, heads, length, dim]``: :func:`balanced_assignment` (the index sets),
:func:`routing_attention` (gathered blocks, ``O(C w^2 P)``) next to its plain form :func:`routing_attention_dense`
(one masked ``L x L`` softmax per cluster, summed and averaged, given the same index sets),
:func:`causal_routing_attention` next to :func:`causal_routing_attention_dense`, :func:`centroid_update` /
:func:`kmeans_init` / :func:`commitment_loss`, and :func:`local_attention` next to :func:`local_attention_dense`.

The Flax mixer :class:`RoutingAttention` mixes ``num_routing_heads`` routing heads with local heads. Its centroids
live in the ``routing`` variable collection: the trainer makes it mutable in the train step (the updates run when
``deterministic=False`` and the collection is mutable) and checkpoints it with the model; the weighted commitment
loss is sown into ``losses``, which the trainer adds to the task loss. Per step it computes one similarity matrix
(cluster-major, ``[B, H, C, N]``, N = L or 2L with separate keys) and its nearest centroids, which the routing, the
commitment loss and the k-means update share; the update's cluster sums are a segment sum (``O(N P)``, where a
one-hot matmul costs ``O(N C P)``). Timings against the reference: ``benchmarks/vs_lucidrains_routing.py``.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import NEG_INF, attention_mask, head_dim_of, project_out, project_qkv


def _acc(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def l2_normalize(x, eps=1e-6):
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


DEFAULT_WINDOW = 64  # lucidrains/routing-transformer: window_size = 64 tokens per cluster
TOKEN_SELF = -5e4  # shared QK: a token's logit with itself (lucidrains TOKEN_SELF_ATTN_VALUE)


def default_num_clusters(length: int) -> int:
    """About sqrt(L) clusters (the project's earlier default; ``window=0, num_clusters=0``)."""
    return max(1, round(math.sqrt(length)))


def default_window(length: int, num_clusters: int) -> int:
    """``w = ceil(L / C)``: C clusters of w tokens have a slot for every token (``C w >= L``)."""
    return max(1, min(length, -(-length // num_clusters)))


def clusters_for_window(length: int, window: int) -> int:
    """``C = ceil(L / w)`` clusters for a window of w tokens per cluster (the reference's ``L // w`` where w divides
    L; at least 1)."""
    return max(1, -(-length // window))


# ----------------------------------------------------------------------------------------------------- routing

def similarities(x_hat, centroids):
    """``<x^_t, mu_c>``: x_hat [B, H, L, P], centroids [H, C, P] -> [B, H, L, C] (in float32 at least)."""
    acc = _acc(x_hat.dtype)
    return jnp.einsum("bhlp,hcp->bhlc", x_hat.astype(acc), centroids.astype(acc))


def _similarities_cl(x_hat, centroids):
    """:func:`similarities` laid out cluster-major, [B, H, C, L]: the rows :func:`top_w` ranks. The centroids are
    broadcast over the batch: a batched matmul, which XLA's CPU dot ran about twice as fast as the same product with
    an unbatched operand (L = 4096, C = 64)."""
    acc = _acc(x_hat.dtype)
    mu = jnp.broadcast_to(centroids.astype(acc), (x_hat.shape[0],) + centroids.shape)
    return jnp.einsum("bhcp,bhlp->bhcl", mu, x_hat.astype(acc))


def _top_w_cl(sim, window: int, key_mask=None, sort: bool = True):
    """:func:`top_w` of cluster-major similarities [B, H, C, L]. ``sort=False`` leaves each cluster's indices in
    top_k's order (by similarity): the bidirectional layer's attention and scatter-back do not depend on the order
    (up to float rounding), and the sort is a measurable share of the selection on a CPU."""
    if key_mask is not None:
        sim = jnp.where(key_mask[:, None, None, :], sim, -jnp.inf)
    idx = jax.lax.top_k(sim, window)[1]
    return (jnp.sort(idx, axis=-1) if sort else idx).astype(jnp.int32)


def top_w(sim, window: int, key_mask=None):
    """Each cluster's ``window`` best tokens, sorted by position: sim [B, H, L, C] -> indices [B, H, C, w] (int32).
    Padded tokens (key_mask False) rank below every real token."""
    return _top_w_cl(jnp.swapaxes(sim, -1, -2), window, key_mask)


def balanced_assignment(q_hat, k_hat, centroids, window: int, key_mask=None):
    """Index sets ``(I^Q, I^K)``, each [B, H, C, w]: per cluster the top-w normalised queries and keys by cosine
    similarity to its centroid. Discrete: no gradient flows through it."""
    q_hat, k_hat, centroids = (jax.lax.stop_gradient(a) for a in (q_hat, k_hat, centroids))
    return (_top_w_cl(_similarities_cl(q_hat, centroids), window, key_mask),
            _top_w_cl(_similarities_cl(k_hat, centroids), window, key_mask))


def _gather(x, idx):
    """x [B, H, L, P], idx [B, H, C, w] -> [B, H, C, w, P]."""
    B, H, C, w = idx.shape
    out = jnp.take_along_axis(x, idx.reshape(B, H, C * w, 1), axis=2)
    return out.reshape(B, H, C, w, x.shape[-1])


def _scatter_add(values, idx, length):
    """Sum ``values`` [B, H, C, w, ...] into ``length`` positions by ``idx`` [B, H, C, w] -> [B, H, length, ...]."""
    def one(val, ix):  # [C, w, ...], [C, w]
        flat = val.reshape((-1,) + val.shape[2:])
        return jnp.zeros((length,) + val.shape[2:], val.dtype).at[ix.reshape(-1)].add(flat)
    return jax.vmap(jax.vmap(one))(values, idx)


def _average(total, count):
    """``total / count`` where ``count > 0``, else 0: a token in no cluster outputs 0, no epsilon anywhere."""
    has = (count > 0)[..., None]
    return jnp.where(has, total / jnp.where(has, count[..., None], 1).astype(total.dtype), 0.0)


def _softmax_combine(logits, values):
    """``softmax(concat(logits)) @ concat(values)`` over parts: logits [..., i, j_s], values [..., j_s, Pv], with the
    softmax normalised after the values' product, ``(sum_s e_s v_s) / sum_s rowsum(e_s)``, ``e_s = exp(l_s - m)`` and
    m the row maximum held constant under differentiation (the softmax does not depend on it). The division touches
    the ``i x Pv`` outputs instead of the ``i x sum_s j_s`` probabilities, and no part is concatenated."""
    m = jax.lax.stop_gradient(functools.reduce(jnp.maximum, [jnp.max(lg, axis=-1, keepdims=True) for lg in logits]))
    e = [jnp.exp(lg - m) for lg in logits]
    total = sum(jnp.sum(x, axis=-1, keepdims=True) for x in e)
    return sum(x @ val for x, val in zip(e, values)) / total


def routing_attention(q, k, v, idx_q, idx_k, *, key_mask=None, causal=False, shared_qk=False):
    """Attention inside each cluster as batched ``w x w`` dense blocks, scattered back and averaged.

    q, k: [B, H, L, P]; v: [B, H, L, Pv]; idx_q, idx_k: [B, H, C, w] (from :func:`balanced_assignment`);
    key_mask: [B, L] bool. ``causal`` masks keys after the query by original position (given the index sets; the
    balanced sets themselves are not causal, see the module docstring). ``shared_qk``: a token's logit with itself
    is ``TOKEN_SELF``. Returns [B, H, L, Pv]."""
    B, H, L, P = q.shape
    acc = _acc(q.dtype)
    qc, kc, vc = _gather(q, idx_q), _gather(k, idx_k), _gather(v, idx_k)
    logits = jnp.einsum("bhcip,bhcjp->bhcij", qc, kc, preferred_element_type=acc).astype(acc) * P ** -0.5
    allowed = None
    if key_mask is not None:
        km = jnp.take_along_axis(jnp.broadcast_to(key_mask[:, None, :], (B, H, L)).astype(bool),
                                 idx_k.reshape(B, H, -1), axis=2).reshape(idx_k.shape)
        allowed = km[:, :, :, None, :]
    if causal:
        before = idx_k[:, :, :, None, :] <= idx_q[:, :, :, :, None]  # original positions
        allowed = before if allowed is None else allowed & before
    if shared_qk:
        logits = jnp.where(idx_k[:, :, :, None, :] == idx_q[:, :, :, :, None], TOKEN_SELF, logits)
    if allowed is not None:
        logits = jnp.where(allowed, logits, NEG_INF)
    oc = _softmax_combine([logits], [vc.astype(acc)])
    if allowed is not None:
        oc = jnp.where(jnp.any(allowed, axis=-1, keepdims=True), oc, 0.0)
    total = _scatter_add(oc, idx_q, L)
    count = _scatter_add(jnp.ones(idx_q.shape, jnp.int32), idx_q, L)
    return _average(total, count).astype(v.dtype)


def membership(idx, length: int):
    """One-hot membership [B, H, C, L] (bool) of index sets [B, H, C, w]."""
    return jnp.any(idx[..., :, None] == jnp.arange(length), axis=-2)


def routing_attention_dense(q, k, v, idx_q, idx_k, *, key_mask=None, causal=False, shared_qk=False):
    """Plain form: for each cluster c the ``L x L`` mask ``M_c = 1[i in I^Q_c, j in I^K_c]`` (and key/causal masks),
    a masked dense softmax per cluster (rows with no allowed key -> 0), summed over c and divided by ``n_i``; with
    ``shared_qk`` the diagonal logits are ``TOKEN_SELF``."""
    B, H, L, P = q.shape
    acc = _acc(q.dtype)
    mq, mk = membership(idx_q, L), membership(idx_k, L)  # [B, H, C, L]
    allowed = mq[..., :, None] & mk[..., None, :]  # [B, H, C, L, L]
    base = attention_mask(key_mask, L, L, causal)  # [B|1, 1, L, L]
    if base is not None:
        allowed = allowed & base[:, :, None]
    logits = jnp.einsum("bhip,bhjp->bhij", q.astype(acc), k.astype(acc)) * P ** -0.5
    if shared_qk:
        logits = jnp.where(jnp.eye(L, dtype=bool), TOKEN_SELF, logits)
    logits = jnp.where(allowed, logits[:, :, None], NEG_INF)
    probs = jnp.where(jnp.any(allowed, -1, keepdims=True), jax.nn.softmax(logits, axis=-1), 0.0)
    total = jnp.einsum("bhcij,bhjp->bhip", probs, v.astype(acc))
    return _average(total, jnp.sum(mq, axis=2)).astype(v.dtype)


# ----------------------------------------------------------------------------------------------------- causal routing

def causal_assignment(x_hat, centroids, valid=None):
    """Nearest centroid of every token, ``a(x) = argmax_c <x^, mu_c>``: [B, H, L, P], [H, C, P] -> [B, H, L] int32;
    padded tokens (valid False) go to a cluster ``C`` of their own, which no real token shares."""
    a = nearest_centroid(jax.lax.stop_gradient(x_hat), jax.lax.stop_gradient(centroids))
    return _padding_cluster(a, valid, centroids.shape[1])


def _padding_cluster(a, valid, num_clusters: int):
    """Assignments ``a`` [B, H, L] with padded tokens (valid [B, L] False) moved to cluster ``num_clusters``."""
    return a if valid is None else jnp.where(valid[:, None, :], a, num_clusters)


def causal_routing_attention(q, k, v, a_q, a_k, window: int, *, key_mask=None, shared_qk=False):
    """Exactly causal routing: query i attends to the ``window`` most recent keys ``j <= i`` with ``a_k[j] = a_q[i]``.

    The keys are sorted by (cluster, position); query i's candidates are the ``window`` keys just before its own
    place ``e_i`` in that order (``searchsorted`` of (a_q[i], i)), kept when they are in its cluster. Cost
    ``O(L w P)`` plus an ``O(L log L)`` sort. q, k: [B, H, L, P]; v: [B, H, L, Pv]; a_q, a_k: [B, H, L] int
    (:func:`causal_assignment`); key_mask: [B, L] bool. A query with no allowed key outputs 0. Returns [B, H, L, Pv].
    """
    B, H, L, P = q.shape
    acc = _acc(q.dtype)
    w = max(1, min(window, L))
    pos = jnp.arange(L, dtype=jnp.int32)
    a_q, a_k = a_q.astype(jnp.int32), a_k.astype(jnp.int32)
    key_order = jnp.argsort(a_k * L + pos, axis=-1).astype(jnp.int32)  # [B, H, L]: keys sorted by (cluster, pos)
    sorted_keys = jnp.take_along_axis(a_k * L + pos, key_order, axis=-1)
    end = jax.vmap(jax.vmap(lambda s, x: jnp.searchsorted(s, x, side="right")))(sorted_keys, a_q * L + pos)
    slot = end[..., None] - w + jnp.arange(w, dtype=jnp.int32)  # [B, H, L, w] places in the sorted order
    in_range = slot >= 0
    idx = jnp.take_along_axis(key_order, jnp.clip(slot, 0, L - 1).reshape(B, H, L * w), axis=-1).reshape(B, H, L, w)
    gather = lambda x: jnp.take_along_axis(x, idx.reshape(B, H, L * w, 1), axis=2).reshape(B, H, L, w, -1)
    kc, vc = gather(k), gather(v)
    same = jnp.take_along_axis(a_k, idx.reshape(B, H, L * w), axis=-1).reshape(B, H, L, w) == a_q[..., None]
    allowed = in_range & same  # same cluster and before in the sorted order => j <= i
    if key_mask is not None:
        km = jnp.take_along_axis(jnp.broadcast_to(key_mask[:, None, :].astype(bool), (B, H, L)),
                                 idx.reshape(B, H, L * w), axis=-1).reshape(B, H, L, w)
        allowed = allowed & km
    logits = jnp.einsum("bhlp,bhlwp->bhlw", q, kc, preferred_element_type=acc).astype(acc) * P ** -0.5
    if shared_qk:
        logits = jnp.where(idx == pos[:, None], TOKEN_SELF, logits)
    logits = jnp.where(allowed, logits, NEG_INF)
    probs = jnp.where(jnp.any(allowed, -1, keepdims=True), jax.nn.softmax(logits, axis=-1), 0.0)
    return jnp.einsum("bhlw,bhlwp->bhlp", probs, vc.astype(acc)).astype(v.dtype)


def causal_routing_attention_dense(q, k, v, a_q, a_k, window: int, *, key_mask=None, shared_qk=False):
    """Plain form: one masked ``L x L`` softmax with ``allowed[i, j] = a_k[j] = a_q[i]``, ``j <= i`` and
    ``#{s in [j, i] : a_k[s] = a_q[i]} <= w`` (j is among the w most recent keys of i's cluster), the count a
    reversed cumulative sum over ``s``; no sort, no gather."""
    B, H, L, P = q.shape
    acc = _acc(q.dtype)
    w = max(1, min(window, L))
    before = jnp.arange(L)[None, :] <= jnp.arange(L)[:, None]  # [i, j]: j <= i
    same = (a_k[:, :, None, :] == a_q[:, :, :, None]) & before  # [B, H, i, s]: s <= i in i's cluster
    count = jnp.flip(jnp.cumsum(jnp.flip(same.astype(jnp.int32), -1), -1), -1)  # [i, j]: #{s >= j} of those
    allowed = same & (count <= w)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :].astype(bool)
    logits = jnp.einsum("bhip,bhjp->bhij", q.astype(acc), k.astype(acc)) * P ** -0.5
    if shared_qk:
        logits = jnp.where(jnp.eye(L, dtype=bool), TOKEN_SELF, logits)
    logits = jnp.where(allowed, logits, NEG_INF)
    probs = jnp.where(jnp.any(allowed, -1, keepdims=True), jax.nn.softmax(logits, axis=-1), 0.0)
    return jnp.einsum("bhij,bhjp->bhip", probs, v.astype(acc)).astype(v.dtype)


# ----------------------------------------------------------------------------------------------------- k-means

def nearest_centroid(x_hat, centroids):
    """``a(x) = argmax_c <x^, mu_c>``: [B, H, N, P], [H, C, P] -> [B, H, N] int32 (the first on ties)."""
    return argmax_clusters(_similarities_cl(x_hat, centroids))


def argmax_clusters(sim, group: int = 16):
    """``argmax(sim, axis=-2)`` (the first maximum on ties) of finite cluster-major similarities [..., C, N], as
    running comparisons: within groups of ``group`` clusters, then across the groups' winners. Same result as
    ``jnp.argmax``; XLA's CPU argmax (a variadic reduce over a non-minor axis) ran 10-15x slower at L = 4096
    (C = 64) and 7x slower at L = 16384 (C = 256); each group's comparisons fuse into one pass over its rows."""
    C = sim.shape[-2]
    g = min(group, C)
    G = -(-C // g)
    if G * g > C:  # padding clusters that never win
        sim = jnp.concatenate([sim, jnp.full(sim.shape[:-2] + (G * g - C,) + sim.shape[-1:], -jnp.inf, sim.dtype)],
                              axis=-2)
    sim = sim.reshape(sim.shape[:-2] + (G, g) + sim.shape[-1:])

    def running(values, index_of):  # values [..., n, N] -> (max, index_of(position of the first max))
        best, idx = values[..., 0, :], index_of(0)
        for i in range(1, values.shape[-2]):
            better = values[..., i, :] > best  # strict: the earlier one stays on ties
            best, idx = jnp.where(better, values[..., i, :], best), jnp.where(better, index_of(i), idx)
        return best, idx

    best, idx = running(sim, lambda i: jnp.int32(i))  # [..., G, N]
    idx = jnp.broadcast_to(idx, best.shape).astype(jnp.int32) + (jnp.arange(G, dtype=jnp.int32) * g)[:, None]
    return running(best, lambda j: idx[..., j, :])[1]


def _cluster_sums(x_hat, assignment, num_clusters: int, weight=None):
    """Per head and cluster the sum of the member vectors and their number: x_hat [B, H, N, P], assignment
    [B, H, N] -> ([H, C, P], [H, C]); weight [B, N] scales each vector (0 drops it). A segment sum (O(N P)), where a
    one-hot matmul costs O(N C P)."""
    B, H, N, P = x_hat.shape
    ids = (assignment + num_clusters * jnp.arange(H, dtype=assignment.dtype)[:, None]).reshape(-1)
    ones = jnp.ones((B, H, N), x_hat.dtype)
    if weight is not None:
        ones = ones * weight[:, None, :].astype(x_hat.dtype)
        x_hat = x_hat * ones[..., None]
    sums = jax.ops.segment_sum(x_hat.reshape(-1, P), ids, num_segments=H * num_clusters)
    counts = jax.ops.segment_sum(ones.reshape(-1), ids, num_segments=H * num_clusters)
    return sums.reshape(H, num_clusters, P), counts.reshape(H, num_clusters)


def centroid_update(centroids, x_hat, valid=None, decay: float = 0.999, assignment=None):
    """One online k-means step (no gradient): ``mu_c <- decay mu_c + (1 - decay) normalize(sum_{a(x)=c} x^)`` for
    every cluster with members, summed over the whole batch; empty clusters keep their value.

    centroids [H, C, P]; x_hat [B, H, N, P] normalised vectors (queries and keys together); valid [B, N] bool;
    assignment [B, H, N]: ``nearest_centroid(x_hat, centroids)`` when the caller has it already."""
    centroids = jax.lax.stop_gradient(centroids)
    x_hat = jax.lax.stop_gradient(x_hat)
    acc = _acc(centroids.dtype)
    C = centroids.shape[1]
    if assignment is None:
        assignment = nearest_centroid(x_hat, centroids)
    sums, counts = _cluster_sums(x_hat.astype(acc), jax.lax.stop_gradient(assignment), C, valid)
    means = l2_normalize(sums)
    new = decay * centroids.astype(acc) + (1.0 - decay) * means
    return jnp.where(counts[..., None] > 0, new, centroids.astype(acc)).astype(centroids.dtype)


def kmeans_init(key, x_hat, num_clusters: int, valid=None, iters: int = 10):
    """Centroids [H, C, P] from ``iters`` spherical k-means (Lloyd) iterations on one batch (no gradient).

    Start: C vectors of the batch per head, chosen at random among the real ones (padded ones only when there are
    fewer than C real ones); then ``iters`` times: assign every real vector to its nearest centroid and replace each
    cluster with members by the normalised sum of its members (:func:`centroid_update` with ``decay = 0``).
    x_hat: [B, H, N, P] normalised vectors; valid: [B, N] bool."""
    x_hat = jax.lax.stop_gradient(x_hat)
    B, H, N, P = x_hat.shape
    flat = x_hat.transpose(1, 0, 2, 3).reshape(H, B * N, P)
    score = jax.random.uniform(key, (H, B * N))
    if valid is not None:
        score = score + valid.reshape(1, B * N).astype(score.dtype)  # real vectors first
    _, pick = jax.lax.top_k(score, min(num_clusters, B * N))
    if num_clusters > B * N:
        pick = jnp.tile(pick, (1, -(-num_clusters // (B * N))))[:, :num_clusters]
    mu = l2_normalize(jnp.take_along_axis(flat, pick[..., None], axis=1).astype(jnp.float32))
    for _ in range(iters):
        mu = centroid_update(mu, x_hat, valid, decay=0.0)
    return mu


def commitment_loss(x_hat, centroids, valid=None, assignment=None):
    """``mean (x^ - sg(mu_{a(x)}))^2`` over real vectors, heads and features (lucidrains: ``F.mse_loss``), i.e. the
    squared distance divided by the head width; unweighted; gradient reaches x^ only. ``assignment``: the
    caller's ``nearest_centroid(x_hat, centroids)``, if it has it."""
    centroids = jax.lax.stop_gradient(centroids)
    acc = _acc(x_hat.dtype)
    a = (nearest_centroid(jax.lax.stop_gradient(x_hat), centroids) if assignment is None
         else jax.lax.stop_gradient(assignment))  # [B, H, N]
    mu = jax.vmap(lambda c, i: c[i], in_axes=(0, 1), out_axes=1)(centroids.astype(acc), a)  # [B, H, N, P]
    err = jnp.mean((x_hat.astype(acc) - mu) ** 2, axis=-1)  # [B, H, N]
    if valid is None:
        return jnp.mean(err)
    w = jnp.broadcast_to(valid[:, None, :].astype(acc), err.shape)
    return jnp.sum(err * w) / jnp.maximum(jnp.sum(w), 1.0)


# ----------------------------------------------------------------------------------------------------- local heads

def local_attention(q, k, v, block: int, *, key_mask=None, causal=False):
    """Blocked local attention: the query in block b attends to blocks b-1, b, b+1 (b-1, b with a causal mask when
    causal). Lengths are padded to a multiple of ``block`` with masked keys. Cost ``O(L * 3 block * P)``.

    Each neighbour block is one ``[block x block]`` product against a padded copy of k (no concatenated copy of the
    three neighbours), combined by :func:`_softmax_combine`; forward + backward ran about 1.2x faster (forward 1.7x)
    than the concatenated form with a plain softmax on this CPU."""
    B, H, L, P = q.shape
    acc = _acc(q.dtype)
    b = max(1, min(block, L))
    n = -(-L // b)
    pad = n * b - L
    valid = jnp.ones((B, L), bool) if key_mask is None else key_mask.astype(bool)
    if pad:
        q, k, v = (jnp.pad(a, ((0, 0), (0, 0), (0, pad), (0, 0))) for a in (q, k, v))
        valid = jnp.pad(valid, ((0, 0), (0, pad)))
    blocks = lambda a: a.reshape(a.shape[:2] + (n, b) + a.shape[3:])  # [B, H, n, b, ...]
    qb = blocks(q.astype(acc)) * P ** -0.5
    kp, vp = (jnp.pad(blocks(a), ((0, 0), (0, 0), (1, 1), (0, 0), (0, 0))) for a in (k, v))  # zero block each side
    vmp = jnp.pad(valid.reshape(B, n, b), ((0, 0), (1, 1), (0, 0)))  # [B, n + 2, b]: outside the sequence masked
    shifts = (-1, 0) if causal else (-1, 0, 1)
    logits, allowed = [], []
    for s in shifts:
        ok = vmp[:, None, 1 + s:1 + s + n, None, :]  # [B, 1, n, 1, b]
        if causal and s == 0:
            ok = ok & (jnp.arange(b)[None, :] <= jnp.arange(b)[:, None])
        lg = jnp.einsum("bhnip,bhnjp->bhnij", qb, kp[:, :, 1 + s:1 + s + n], preferred_element_type=acc)
        logits.append(jnp.where(ok, lg.astype(acc), NEG_INF))
        allowed.append(ok)
    o = _softmax_combine(logits, [vp[:, :, 1 + s:1 + s + n].astype(acc) for s in shifts])
    if key_mask is not None:  # a query without an allowed key outputs 0 (without one it keeps its own block)
        anywhere = functools.reduce(jnp.logical_or, [jnp.any(ok, axis=-1, keepdims=True) for ok in allowed])
        o = jnp.where(anywhere, o, 0.0)
    return o.reshape(B, H, n * b, -1)[:, :, :L].astype(v.dtype)


def local_attention_dense(q, k, v, block: int, *, key_mask=None, causal=False):
    """Plain form: dense softmax attention under the band mask ``|i // block - j // block| <= 1``."""
    B, H, L, P = q.shape
    acc = _acc(q.dtype)
    b = max(1, min(block, L))
    g = jnp.arange(L) // b
    allowed = (jnp.abs(g[:, None] - g[None, :]) <= 1)[None, None]
    base = attention_mask(key_mask, L, L, causal)
    if base is not None:
        allowed = allowed & base
    logits = jnp.einsum("bhip,bhjp->bhij", q.astype(acc), k.astype(acc)) * P ** -0.5
    logits = jnp.where(allowed, logits, NEG_INF)
    probs = jnp.where(jnp.any(allowed, -1, keepdims=True), jax.nn.softmax(logits, axis=-1), 0.0)
    return jnp.einsum("bhij,bhjp->bhip", probs, v.astype(acc)).astype(v.dtype)


# ----------------------------------------------------------------------------------------------------- module

def random_unit_centroids(key, num_heads: int, num_clusters: int, head_dim: int):
    """The TF original's init: random unit vectors, [H, C, P]."""
    return l2_normalize(jax.random.normal(key, (num_heads, num_clusters, head_dim), jnp.float32))


class RoutingAttention(nn.Module):
    """Routing Transformer attention layer: ``num_routing_heads`` content-routed heads and ``num_heads -
    num_routing_heads`` local heads, concatenated before the output projection.

    ``window`` tokens per cluster (64) and ``num_clusters`` 0 = ``ceil(L / window)`` at init (the centroids' shape
    then fixes C); ``window=0`` = ``ceil(L / C)`` with ``num_clusters`` 0 = about sqrt(L) (the earlier default);
    ``local_window`` 0 = the routing window. ``shared_qk``: -1 = when causal, 0 = no, 1 = yes.
    ``kmeans_init_iters``: k-means iterations on the first training batch (0 = keep the random unit init).
    State: ``routing/centroids`` [num_routing_heads, C, head_dim] and, with k-means init, ``routing/initialized``."""

    d_model: int
    causal: bool = False
    num_heads: int = 8
    num_routing_heads: int = -1  # -1 = half of the heads (rounded up); the rest are local heads
    num_clusters: int = 0
    window: int = DEFAULT_WINDOW
    local_window: int = 0
    qkv_dim: int = 0  # total q/k/v width over all heads; 0 = d_model
    shared_qk: int = -1
    ema_decay: float = 0.999
    commitment_weight: float = 1e-4
    kmeans_init_iters: int = 10
    torch_init: bool = True  # PyTorch nn.Linear init of the projections (models/init.py); False: Flax defaults
    dtype: Any = jnp.float32

    def _sizes(self, L: int):
        """(C at init, window) for length L."""
        if self.window < 0 or self.num_clusters < 0:
            raise ValueError(f"RoutingAttention: window={self.window} and num_clusters={self.num_clusters} must be "
                             ">= 0 (0 = automatic)")
        if self.window:
            return self.num_clusters or clusters_for_window(L, self.window), min(self.window, L)
        C = self.num_clusters or default_num_clusters(L)
        return C, None

    @nn.compact
    def __call__(self, x, *, mask=None, deterministic=True):
        B, L, _ = x.shape
        P = head_dim_of(self.d_model, self.num_heads, self.qkv_dim)
        Hr = (self.num_heads + 1) // 2 if self.num_routing_heads < 0 else self.num_routing_heads
        if not 0 <= Hr <= self.num_heads:
            raise ValueError(f"num_routing_heads={self.num_routing_heads} must lie in [0, num_heads={self.num_heads}]")
        if self.shared_qk not in (-1, 0, 1):
            raise ValueError(f"RoutingAttention: shared_qk={self.shared_qk!r}; expected -1 (when causal), 0 or 1")
        if self.kmeans_init_iters < 0:
            raise ValueError(f"RoutingAttention: kmeans_init_iters={self.kmeans_init_iters} must be >= 0")
        shared = bool(self.causal) if self.shared_qk == -1 else bool(self.shared_qk)
        C0, w = self._sizes(L)
        # Shared QK: the routing heads' keys are their queries' projection (no "key" projection for them); the
        # local heads keep their own keys.
        q, v = project_qkv(x, self.num_heads, P, self.dtype, torch_init=self.torch_init, names=("query", "value"))
        Hk = self.num_heads - Hr if shared else self.num_heads  # heads with a key projection of their own
        k = project_qkv(x, Hk, P, self.dtype, torch_init=self.torch_init, names=("key",))[0] if Hk else None
        k_local = None if k is None else k[:, k.shape[1] - (self.num_heads - Hr):]
        valid = None if mask is None else mask.astype(bool)

        outs = []
        if Hr:
            mu_var = self.variable("routing", "centroids", lambda: random_unit_centroids(
                self.make_rng("params"), Hr, C0, P))
            # The flag exists from init on; a state without it (made before it existed, or by hand) counts as
            # initialised: its centroids are used as they are.
            has_flag = self.is_initializing() or self.has_variable("routing", "initialized")
            init_var = (self.variable("routing", "initialized", lambda: jnp.zeros((), jnp.float32))
                        if self.kmeans_init_iters and has_flag else None)
            mu = jax.lax.stop_gradient(mu_var.value)
            C = mu.shape[1]
            w = min(w or default_window(L, C), L)
            qr, vr = q[:, :Hr], v[:, :Hr]
            q_hat = l2_normalize(qr.astype(jnp.float32))
            if shared:
                kr = l2_normalize(qr.astype(jnp.float32)).astype(qr.dtype)  # k = q^, as lucidrains' shared QK
                x_hat, x_valid = q_hat, valid
            else:
                kr = k[:, :Hr]
                k_hat = l2_normalize(kr.astype(jnp.float32))
                x_hat = jnp.concatenate([q_hat, k_hat], axis=2)  # [B, Hr, 2L, P]
                x_valid = None if valid is None else jnp.concatenate([valid, valid], axis=1)
            training = not deterministic
            update = training and self.is_mutable_collection("routing") and not self.is_initializing()

            mu_route = mu
            if init_var is not None and update:
                rng = self.make_rng("dropout") if self.has_rng("dropout") else jax.random.key(0)
                fresh = jax.lax.cond(init_var.value > 0, lambda: mu,
                                     lambda: kmeans_init(rng, x_hat, C, x_valid, self.kmeans_init_iters))
                if not self.causal:  # the reference routes the initialising batch with the new centroids
                    mu_route = fresh
                mu = fresh
                init_var.value = jnp.ones((), jnp.float32)

            # One similarity matrix per step: the routing, the commitment loss and (when the update starts from
            # the routing centroids) the k-means update share the nearest centroids.
            sim = _similarities_cl(jax.lax.stop_gradient(x_hat), jax.lax.stop_gradient(mu_route))  # [B, Hr, C, N]
            a_x = argmax_clusters(sim)  # nearest_centroid(x_hat, mu_route)
            if self.causal:
                a_q = a_x[:, :, :L]
                a_k = a_q if shared else a_x[:, :, L:]
                a_q, a_k = (_padding_cluster(a, valid, C) for a in (a_q, a_k))
                outs.append(causal_routing_attention(qr, kr, vr, a_q, a_k, w, key_mask=mask, shared_qk=shared))
            else:
                idx_q = _top_w_cl(sim[..., :L], w, mask, sort=False)
                idx_k = idx_q if shared else _top_w_cl(sim[..., L:], w, mask, sort=False)
                outs.append(routing_attention(qr, kr, vr, idx_q, idx_k, key_mask=mask, shared_qk=shared))

            if training:
                self.sow("losses", "commitment", self.commitment_weight * commitment_loss(
                    x_hat, mu_route, x_valid, assignment=a_x))
                if update:
                    mu_var.value = centroid_update(mu, x_hat, x_valid, self.ema_decay,
                                                   assignment=a_x if mu is mu_route else None)
        if Hr < self.num_heads:
            ql, kl, vl = q[:, Hr:], k_local, v[:, Hr:]
            if Hr:
                block = self.local_window or w
            else:
                block = self.local_window or w or default_window(L, C0)
            outs.append(local_attention(ql, kl, vl, block, key_mask=mask, causal=self.causal))
        return project_out(jnp.concatenate(outs, axis=1), self.d_model, self.dtype, torch_init=self.torch_init)
