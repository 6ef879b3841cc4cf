"""The mixers' reference defaults, each against a small case worked out from the reference's definition.

* PyTorch initialisation (``models/init.py``) of the own projections and convolutions of S4, Hydra, DeltaNet and
  routing: weights and biases uniform in +-1/sqrt(fan_in); the encoder and the other mixers keep Flax's defaults.
* DeltaNet: fla's layer defaults (no output gate, no conv bias): the module equals the layer computed in NumPy from
  its parameters, with and without the gate option.
(Routing's window, shared QK, k-means init and commitment mean are tested in test_routing.py; Combiner's official
variant in test_combiner.py.)
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import MIXERS, build_encoder
from models.init import linear, torch_uniform


def flat(tree):
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def assert_torch_uniform(a, fan_in, what):
    """Drawn from U(-b, b), b = 1/sqrt(fan_in): inside the bound, reaching near it, with the uniform's spread."""
    b = 1.0 / math.sqrt(fan_in)
    assert np.all(np.abs(a) <= b * (1 + 1e-6)), (what, np.abs(a).max(), b)
    assert np.abs(a).max() > 0.9 * b, (what, np.abs(a).max(), b)
    if a.size >= 500:
        np.testing.assert_allclose(a.std(), b / math.sqrt(3), rtol=0.1, err_msg=what)
        assert abs(a.mean()) < 0.1 * b, what


def test_shared_initialiser():
    a = np.asarray(torch_uniform(50)(jax.random.key(0), (200, 100)))
    assert_torch_uniform(a, 50, "torch_uniform")
    with pytest.raises(ValueError, match="fan_in"):
        torch_uniform(0)
    x = jnp.ones((2, 7))
    dense = linear(5, 7, name="d")
    p = dense.init(jax.random.key(1), x)["params"]
    assert p["kernel"].shape == (7, 5) and p["bias"].shape == (5,)
    assert np.all(np.abs(np.asarray(p["bias"])) > 0)  # biases too, not zeros
    general = linear((3, 4), 7)
    assert general.init(jax.random.key(1), x)["params"]["kernel"].shape == (7, 3, 4)


D = 64
# mixer -> (constructor kwargs, {parameter path: fan_in}) for every projection / convolution of its own
EXPECTED = {
    "s4": (dict(d_state=8), {"out/kernel": D, "out/bias": D}),
    "hydra": (dict(head_dim=16, d_state=8), {"in_proj/kernel": D, "conv/kernel": 7, "conv/bias": 7,
                                             "fc_D/kernel": 2 * D, "out_proj/kernel": 2 * D}),
    "deltanet": (dict(use_gate=True), {f"{d}/{n}_proj/kernel": D for d in ("fwd", "bwd") for n in "qkvbg"}
                 | {f"{d}/{n}_conv/kernel": 4 for d in ("fwd", "bwd") for n in "qkv"} | {"out/kernel": D}),
    "routing": (dict(), {"query/kernel": D, "query/bias": D, "key/kernel": D, "value/kernel": D, "value/bias": D,
                         "out/kernel": D, "out/bias": D}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pytorch_init_of_the_mixers_own_layers(name):
    kwargs, fans = EXPECTED[name]
    mod = MIXERS[name](d_model=D, **kwargs)
    params = flat(jax.jit(lambda x: mod.init(jax.random.key(0), x))(jnp.zeros((1, 16, D)))["params"])
    for path, fan_in in fans.items():
        assert path in params, (name, path, sorted(params))
        assert_torch_uniform(params[path], fan_in, f"{name}:{path}")


def test_encoder_and_the_other_mixers_keep_flax_defaults():
    """LeCun normal (truncated at 2 sigma, sigma = 1/sqrt(fan_in)/0.88) reaches well past PyTorch's bound; biases
    start at zero."""
    from configs import models as model_configs
    c = model_configs.get("hydra")
    c.d_model, c.num_layers, c.mixer_kwargs.head_dim, c.mixer_kwargs.d_state = D, 1, 16, 8
    enc = build_encoder(c, vocab_size=10, max_len=16)
    p = flat(jax.jit(lambda t: enc.init(jax.random.key(0), t))(jnp.zeros((1, 16), jnp.int32))["params"])
    fc1 = p["block0/mlp/fc1/kernel"]
    assert np.abs(fc1).max() > 1.5 / math.sqrt(D) and np.all(p["block0/mlp/fc1/bias"] == 0)
    assert_torch_uniform(p["block0/mixer/in_proj/kernel"], D, "the mixer inside the encoder")
    for name in ("transformer", "combiner"):
        q = flat(MIXERS[name](d_model=D).init(jax.random.key(0), jnp.zeros((1, 16, D)))["params"])
        assert np.abs(q["query/kernel"]).max() > 1.5 / math.sqrt(D) and np.all(q["query/bias"] == 0), name


# ----------------------------------------------------------------------------------------------------- DeltaNet

def numpy_deltanet_layer(x, p, heads, gate, eps=1e-5):
    """fla's DeltaNet layer (one direction, causal) worked out in float64 from its definition: bias-free
    projections, causal depthwise conv (kernel K, left padding K-1) + SiLU on q, k, v, L2-normalised q (times
    d^-1/2) and k, beta = sigmoid(x W_b), S_t = S_{t-1} + beta_t (v_t - S_{t-1} k_t) k_t^T, o_t = S_t q_t, per-head
    RMSNorm (times SiLU(x W_g) with the gate), output projection."""
    B, L, Dm = x.shape
    d = Dm // heads
    silu = lambda a: a / (1 + np.exp(-a))
    norm = lambda a: a / np.sqrt(np.sum(a * a, -1, keepdims=True) + 1e-6)

    def conv(u, w):  # u [B, L, C], w [K, C]
        K = w.shape[0]
        up = np.concatenate([np.zeros((B, K - 1, u.shape[2])), u], 1)
        return silu(sum(up[:, i:i + L] * w[i] for i in range(K)))

    q, k, v = (conv(x @ p[f"fwd/{n}_proj/kernel"], p[f"fwd/{n}_conv/kernel"]) for n in "qkv")
    split = lambda a: a.reshape(B, L, heads, d)
    q, k, v = norm(split(q)) * d ** -0.5, norm(split(k)), split(v)
    beta = 1 / (1 + np.exp(-(x @ p["fwd/b_proj/kernel"])))  # [B, L, H]
    o = np.zeros((B, L, heads, d))
    for b in range(B):
        for h in range(heads):
            S = np.zeros((d, d))
            for t in range(L):
                S = S + beta[b, t, h] * np.outer(v[b, t, h] - S @ k[b, t, h], k[b, t, h])
                o[b, t, h] = S @ q[b, t, h]
    o = o / np.sqrt(np.mean(o * o, -1, keepdims=True) + eps) * p["fwd/scale"]
    o = o.reshape(B, L, Dm)
    if gate:
        o = o * silu(x @ p["fwd/g_proj/kernel"])
    return o @ p["out/kernel"]


@pytest.mark.parametrize("gate", [False, True])
def test_deltanet_defaults_are_fla_layer(gate):
    f = MIXERS["deltanet"].__dataclass_fields__
    assert (f["use_gate"].default, f["conv_bias"].default) == (False, False)
    mod = MIXERS["deltanet"](d_model=8, causal=True, num_heads=2, chunk_size=4, **({"use_gate": True} if gate else {}))
    x = jax.random.normal(jax.random.key(0), (2, 9, 8))
    variables = jax.jit(lambda x: mod.init(jax.random.key(1), x))(x)
    p = {k: v.astype(np.float64) for k, v in flat(variables["params"]).items()}
    assert ("fwd/g_proj/kernel" in p) == gate and not any(k.endswith("conv/bias") for k in p)
    got = np.asarray(jax.jit(lambda v, x: mod.apply(v, x))(variables, x))
    want = numpy_deltanet_layer(np.asarray(x, np.float64), p, 2, gate)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_deltanet_conv_bias_option():
    mod = MIXERS["deltanet"](d_model=16, causal=True, conv_bias=True)
    p = flat(mod.init(jax.random.key(0), jnp.zeros((1, 5, 16)))["params"])
    for n in "qkv":
        assert_torch_uniform(p[f"fwd/{n}_conv/bias"], 4, n)
