"""Exact causality of every mixer with a causal mode: perturbing the inputs after position t leaves every output at
positions <= t unchanged, at several lengths and cut points, for every mixer in ``models.MIXERS``.

A Jacobian test only sees first-order paths; a perturbation test also catches discrete choices that depend on later
tokens (routing's balanced top-w assignment did: outputs moved by about 1 at width 32). The perturbation is large
(standard deviation 3, the inputs' is 1) so that any path from the future shows. Mixers whose causal mode is a
product of masked matrices, scans or gathers must be exactly causal (bitwise equal outputs). S4 and S4D convolve
through an FFT of length 2L, which mixes every position in floating point: theirs is checked to float32 rounding of
the output's scale (a real leak, e.g. an acausal kernel, moves outputs by orders of magnitude more).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import MIXERS

D = 16
LENGTHS = (5, 33, 70)  # 70: two routing clusters of 64, several DeltaNet (16) and Hydra (64) chunks
FFT_MIXERS = {"s4", "s4d"}

# Small widths where a default does not fit D = 16; every other field at its default.
KWARGS = {
    "transformer": dict(num_heads=4),
    "hydra": dict(head_dim=8, d_state=8, chunk_size=16),
    "s4": dict(d_state=8),
    "s4d": dict(d_state=8),
    "routing": dict(num_heads=4),
    "routing_small_windows": dict(num_heads=4, num_clusters=3, window=4, local_window=4),
    "routing_separate_qk": dict(num_heads=4, num_clusters=3, window=4, shared_qk=0),
    "combiner": dict(num_heads=4, segment_size=4),
}
CASES = sorted(MIXERS) + ["routing_small_windows", "routing_separate_qk"]


def build(case):
    name = "routing" if case.startswith("routing") else case
    return MIXERS[name](d_model=D, causal=True, **KWARGS.get(case, {}))


def test_every_mixer_has_a_causal_mode():
    for name, cls in MIXERS.items():
        assert "causal" in cls.__dataclass_fields__, name


def _max_leak(apply, x, t, key):
    x2 = x.at[:, t + 1:].add(3.0 * jax.random.normal(key, x[:, t + 1:].shape))
    y1, y2 = apply(x), apply(x2)
    return float(jnp.max(jnp.abs(y1[:, :t + 1] - y2[:, :t + 1]))), float(jnp.max(jnp.abs(y1)))


@pytest.mark.parametrize("case", CASES)
def test_perturbing_the_future_leaves_the_past_unchanged(case):
    mod = build(case)
    for L in LENGTHS:
        x = jax.random.normal(jax.random.key(L), (2, L, D))
        variables = jax.jit(lambda x: mod.init(jax.random.key(1), x))(x)
        apply = jax.jit(lambda x: mod.apply(variables, x))
        for i, t in enumerate(sorted({0, L // 2, L - 2})):
            leak, scale = _max_leak(apply, x, t, jax.random.key(100 + i))
            if case in FFT_MIXERS:
                assert leak <= 1e-5 * max(scale, 1.0), (case, L, t, leak)
            else:
                assert leak == 0.0, (case, L, t, leak)


@pytest.mark.parametrize("case", ["routing", "routing_small_windows", "routing_separate_qk"])
def test_routing_training_pass_is_causal_too(case):
    """The training forward pass (centroid updates, and the first batch's k-means init) is causal as well: the
    batch that initialises the centroids is routed with the ones it started with."""
    mod = build(case)
    for L in LENGTHS:
        x = jax.random.normal(jax.random.key(L), (2, L, D))
        variables = jax.jit(lambda x: mod.init(jax.random.key(1), x))(x)
        assert float(variables["routing"]["initialized"]) == 0.0  # the first training pass runs k-means

        @jax.jit
        def apply(x):
            y, _ = mod.apply(variables, x, deterministic=False, mutable=["routing", "losses"],
                             rngs={"dropout": jax.random.key(2)})
            return y

        for i, t in enumerate(sorted({0, L // 2, L - 2})):
            leak, _ = _max_leak(apply, x, t, jax.random.key(200 + i))
            assert leak == 0.0, (case, L, t, leak)


def test_the_balanced_assignment_would_leak():
    """The check has teeth: routing's bidirectional (balanced top-w) assignment with a causal position mask on
    top, the earlier causal mode, changes outputs before the cut when later tokens change."""
    from models.routing import balanced_assignment, l2_normalize, random_unit_centroids, routing_attention
    B, H, L, P = 2, 2, 40, 8
    q, k, v = jax.random.normal(jax.random.key(0), (3, B, H, L, P))
    mu = random_unit_centroids(jax.random.key(1), H, 4, P)

    @jax.jit
    def f(q, k, v):
        idx_q, idx_k = balanced_assignment(l2_normalize(q), l2_normalize(k), mu, 10)
        return routing_attention(q, k, v, idx_q, idx_k, causal=True)

    t = 20
    noise = 3.0 * jax.random.normal(jax.random.key(2), (3, B, H, L - t - 1, P))
    q2, k2, v2 = (a.at[:, :, t + 1:].add(n) for a, n in zip((q, k, v), noise))
    assert float(jnp.max(jnp.abs(f(q, k, v)[:, :, :t + 1] - f(q2, k2, v2)[:, :, :t + 1]))) > 1e-2
