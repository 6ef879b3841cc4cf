"""Encoder options that published runs use: LRA's learned CLS token, S4's tied dropout, LRA's ReLU head."""
import jax
import jax.numpy as jnp
import numpy as np

import models
from models.encoder import Classifier, Encoder


def _encoder(**kw):
    return Encoder(mixer_cls=models.MIXERS["transformer"], mixer_kwargs={"num_heads": 2}, d_model=8, num_layers=1,
                   vocab_size=11, pos_emb="learned", max_len=6, **kw)


def test_cls_token_sits_before_position_0_and_padding_does_not_reach_it():
    model = Classifier(_encoder(cls_token=True), num_classes=3, pooling="cls", head_hidden=4)
    x = jnp.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    mask = x > 0
    variables = model.init(jax.random.key(0), x, mask=mask)
    emb = variables["params"]["encoder"]["embedding"]
    np.testing.assert_array_equal(emb["cls"], 0.0)  # LRA initialises it with zeros
    assert emb["pos_embedding"].shape == (7, 8)  # max_len + 1: the CLS token has a position too
    features = model.encoder.apply({"params": variables["params"]["encoder"]}, x, mask=mask)
    assert features.shape == (2, 7, 8)
    logits = model.apply(variables, x, mask=mask)
    other_padding = x.at[0, 3:].set(9)
    np.testing.assert_allclose(model.apply(variables, other_padding, mask=mask), logits, atol=1e-6)
    # pooling "cls" reads position 0 of the encoder output
    head = variables["params"]["head"]
    h = jnp.maximum(features[:, 0] @ head["hidden"]["kernel"] + head["hidden"]["bias"], 0)
    gelu = jax.nn.gelu(features[:, 0] @ head["hidden"]["kernel"] + head["hidden"]["bias"])
    np.testing.assert_allclose(logits, gelu @ head["out"]["kernel"] + head["out"]["bias"], atol=1e-6)
    relu_model = Classifier(_encoder(cls_token=True), num_classes=3, pooling="cls", head_hidden=4, head_act="relu")
    np.testing.assert_allclose(relu_model.apply(variables, x, mask=mask), h @ head["out"]["kernel"] + head["out"]["bias"],
                               atol=1e-6)


def test_tied_dropout_drops_a_channel_at_every_position_alike():
    enc = Encoder(mixer_cls=models.MIXERS["transformer"], mixer_kwargs={"num_heads": 2}, d_model=16, num_layers=0,
                  vocab_size=11, prenorm=False, dropout=0.5, tie_dropout=True)
    x = jnp.ones((3, 10), jnp.int32)  # the same token everywhere: equal embeddings at every position
    variables = enc.init(jax.random.key(0), x)
    kept = enc.apply(variables, x, deterministic=True)
    dropped = enc.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    keep = np.asarray(dropped != 0)
    assert keep.any() and not keep.all()
    assert (keep == keep[:, :1]).all()  # one mask per (example, channel), shared over the 10 positions
    np.testing.assert_allclose(np.asarray(dropped)[keep], 2 * np.asarray(kept)[keep], rtol=1e-6)
    import dataclasses
    untied = dataclasses.replace(enc, tie_dropout=False).apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert not (np.asarray(untied != 0) == np.asarray(untied != 0)[:, :1]).all()


def test_a_pretrained_encoder_without_cls_loads_into_a_cls_classifier():
    """Pretraining has no CLS token: finetuning keeps it fresh and shifts the learned positions behind it."""
    from lra.pretrained import transfer_encoder
    x = jnp.array([[3, 4, 5, 0, 0, 0]])
    plain = Classifier(_encoder(), num_classes=3, pooling="mean", head_hidden=4)
    with_cls = Classifier(_encoder(cls_token=True), num_classes=3, pooling="cls", head_hidden=4)
    src = plain.init(jax.random.key(0), x, mask=x > 0)["params"]
    tgt = with_cls.init(jax.random.key(1), x, mask=x > 0)["params"]
    out = transfer_encoder(tgt, src, "parameters")
    np.testing.assert_array_equal(out["encoder"]["embedding"]["pos_embedding"][1:],
                                  src["encoder"]["embedding"]["pos_embedding"])
    np.testing.assert_array_equal(out["encoder"]["embedding"]["cls"], tgt["encoder"]["embedding"]["cls"])
    flat_out = jax.tree_util.tree_leaves_with_path(out["encoder"]["block0"])
    flat_src = dict(jax.tree_util.tree_leaves_with_path(src["encoder"]["block0"]))
    for path, leaf in flat_out:  # every block weight is the pretrained one
        np.testing.assert_array_equal(leaf, flat_src[path])


def test_s4_uses_the_exact_gelu_of_its_reference_by_default():
    """state-spaces/s4's S4 block applies torch's nn.GELU() (erf form); the tanh form differs by up to ~5e-4."""
    s4 = models.MIXERS["s4"](d_model=4, d_state=4)
    x = jnp.linspace(-3, 3, 2 * 8 * 4).reshape(2, 8, 4)
    variables = s4.init(jax.random.key(0), x)
    approx = models.MIXERS["s4"](d_model=4, d_state=4, gelu_approximate=True)
    exact_out, approx_out = s4.apply(variables, x), approx.apply(variables, x)
    assert float(jnp.max(jnp.abs(exact_out - approx_out))) > 1e-6
    # the exact form is x * Phi(x): check the layer against that definition through its own pieces
    from jax.scipy.stats import norm
    z = jnp.linspace(-3, 3, 13)
    np.testing.assert_allclose(jax.nn.gelu(z, approximate=False), z * norm.cdf(z), atol=1e-6)
