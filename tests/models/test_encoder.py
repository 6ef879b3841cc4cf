"""The shared encoder and heads: padding invariance, causality, pooling, norms, the registry and build()."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from configs import models as model_configs
from lra.tasks import TaskSpec
from models.encoder import Encoder, pool


def small_encoder(**kw):
    args = dict(mixer_cls=models.MIXERS["transformer"], mixer_kwargs={"num_heads": 2}, d_model=16, num_layers=2,
                vocab_size=None, pos_emb="sinusoidal", max_len=32, dropout=0.0)
    args.update(kw)
    return Encoder(**args)


@pytest.mark.parametrize("norm,prenorm", [("layer", True), ("layer", False), ("batch", True), ("batch", False)])
def test_padding_never_changes_real_positions(norm, prenorm):
    enc = small_encoder(vocab_size=11, pos_emb="learned", norm=norm, prenorm=prenorm)
    r = np.random.default_rng(0)
    tokens = jnp.asarray(r.integers(1, 11, size=(3, 12)))
    lengths = np.array([12, 7, 3])
    mask = jnp.arange(12)[None] < lengths[:, None]
    variables = jax.jit(lambda t, m: enc.init(jax.random.key(0), t, mask=m))(tokens, mask)
    apply = jax.jit(lambda t, m: enc.apply(variables, t, mask=m))
    y1 = apply(tokens, mask)
    other = jnp.where(mask, tokens, jnp.asarray(r.integers(1, 11, size=(3, 12))))  # garbage at padded positions
    y2 = apply(other, mask)
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y2), rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(y1)[~np.asarray(mask)] == 0.0)
    if norm == "layer":  # per-example computation: also equal to the unpadded sequence alone
        y3 = enc.apply(variables, tokens[1:2, :7])
        np.testing.assert_allclose(np.asarray(y1[1, :7]), np.asarray(y3[0]), rtol=1e-4, atol=1e-5)


def test_batchnorm_training_updates_statistics_from_real_tokens_only():
    enc = small_encoder(norm="batch")
    x = jax.random.normal(jax.random.key(1), (2, 8, 1))
    mask = jnp.arange(8)[None] < jnp.array([[8], [5]])
    variables = enc.init(jax.random.key(0), x, mask=mask)
    assert "batch_stats" in variables
    outs = []
    for fill in (0.0, 1e3):
        xf = jnp.where(mask[..., None], x, fill)
        _, new = enc.apply(variables, xf, mask=mask, deterministic=False, mutable=["batch_stats"])
        outs.append(jax.tree_util.tree_leaves(new))
    for a, b in zip(*outs):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_causal_encoder_has_no_leakage():
    enc = small_encoder(causal=True, norm="layer")
    x = jax.random.normal(jax.random.key(2), (1, 10, 1))
    variables = enc.init(jax.random.key(0), x)
    jac = jax.jit(jax.jacrev(lambda x: enc.apply(variables, x)[0]))(x)  # [t, d, 1, s, 1]
    dep = np.abs(np.asarray(jac)).sum(axis=(1, 2, 4))  # [t, s]
    assert np.all(dep[np.triu_indices(10, k=1)] == 0.0)
    assert np.all(np.diag(dep) > 0.0)


def test_pooling():
    x = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    mask = jnp.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
    np.testing.assert_allclose(pool(x, mask, "mean"), np.stack([x[0].mean(0), x[1, :2].mean(0)]))
    np.testing.assert_allclose(pool(x, mask, "first"), x[:, 0])
    np.testing.assert_allclose(pool(x, mask, "last"), np.stack([x[0, 3], x[1, 1]]))
    with pytest.raises(ValueError, match="pooling"):
        pool(x, mask, "max")


def _task(paired=False, vocab=13):
    return TaskSpec("toy", seq_len=16, num_classes=3, vocab_size=vocab, load=None, paired=paired)


def test_build_classifier_and_paired_classifier():
    cfg = model_configs.transformer()
    cfg.d_model, cfg.num_layers, cfg.head_hidden = 16, 1, 8
    cfg.mixer_kwargs.num_heads = 2
    tokens = jnp.ones((2, 16), jnp.int32)
    mask = jnp.ones((2, 16), bool)
    model = models.build(cfg, _task())
    params = model.init(jax.random.key(0), tokens, mask=mask)
    assert model.apply(params, tokens, mask=mask).shape == (2, 3)
    assert set(params["params"]) == {"encoder", "head"}

    paired = models.build(cfg, _task(paired=True))
    params = paired.init(jax.random.key(0), tokens, tokens, mask1=mask, mask2=mask)
    assert paired.apply(params, tokens, tokens, mask1=mask, mask2=mask).shape == (2, 3)
    assert params["params"]["head"]["hidden"]["kernel"].shape == (4 * 16, 8)  # [u, v, u*v, u-v]
    # one shared encoder for both documents
    assert set(params["params"]) == {"encoder", "head"}

    lm = models.build(cfg, _task(), head="lm", num_outputs=13)
    params = lm.init(jax.random.key(0), tokens, mask=mask)
    assert lm.apply(params, tokens, mask=mask).shape == (2, 16, 13)


def test_build_rejects_unknown_names():
    cfg = model_configs.transformer()
    cfg.mixer = "nope"
    with pytest.raises(ValueError, match="unknown mixer 'nope'"):
        models.build(cfg, _task())
    with pytest.raises(ValueError, match="unknown model"):
        model_configs.get("nope")


@pytest.mark.parametrize("name", sorted(models.MIXERS))
@pytest.mark.parametrize("causal", [False, True])
def test_registry_builds_every_mixer(name, causal):
    """MIXERS[name](d_model=..., causal=...) is a working mixer with its defaults (or a clear error for causal)."""
    x = jax.random.normal(jax.random.key(0), (2, 24, 32))
    mask = jnp.arange(24)[None] < jnp.array([[24], [17]])
    try:
        mixer = models.MIXERS[name](d_model=32, causal=causal)
        variables = jax.jit(lambda x, mask: mixer.init(jax.random.key(1), x, mask=mask))(x, mask)
    except ValueError as e:
        assert causal and "causal" in str(e)
        return
    y = jax.jit(lambda v, x, mask: mixer.apply(v, x, mask=mask))(variables, x, mask)
    assert y.shape == x.shape and np.all(np.isfinite(np.asarray(y)))
