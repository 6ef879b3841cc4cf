"""One small function per model: the encoder settings and mixer defaults it runs with.

``get(name)`` returns the ``config.model`` section for mixer ``name``; task configs override what their anchors
published (sizes, dropout, norm). Every key of ``mixer_kwargs`` is a field of the mixer class in ``models.MIXERS``.
"""
import ml_collections


def encoder_defaults(mixer: str, **overrides) -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.mixer = mixer
    m.mixer_kwargs = ml_collections.ConfigDict()
    m.d_model = 128
    m.num_layers = 4
    m.causal = False
    m.pos_emb = "none"  # none | learned | sinusoidal
    m.norm = "layer"  # layer | batch
    m.prenorm = True
    m.dropout = 0.1
    m.mlp = "mlp"  # mlp | glu | "" (no channel mixer: the mixer carries its own)
    m.mlp_ratio = 4
    m.pooling = "mean"  # mean | first | last
    m.head_hidden = 256
    m.dtype = "float32"
    m.update(overrides)
    return m


def transformer() -> ml_collections.ConfigDict:
    m = encoder_defaults("transformer", pos_emb="learned")
    m.mixer_kwargs = ml_collections.ConfigDict(
        {"num_heads": 8, "qkv_dim": 0, "attention_dropout": 0.0, "implementation": "auto"})  # qkv_dim 0 = d_model
    return m


def aaren() -> ml_collections.ConfigDict:
    """Aaren: causal by construction; classification reads the last real position (the learned query's attention
    over the whole sequence). Query init and score scale 0 = 1/sqrt(head_dim) (unverified choices, models.md 3(d))."""
    m = encoder_defaults("aaren", pos_emb="learned", pooling="last", causal=True)
    m.mixer_kwargs = ml_collections.ConfigDict({"num_heads": 8, "query_init_std": 0.0, "score_scale": 0.0})
    return m


def deltanet() -> ml_collections.ConfigDict:
    """DeltaNet (fla's layer): short convs give it local order, so no positional embedding; bidirectional for
    classification (causal=False, our two-direction form), causal=True for causal-LM pretraining."""
    m = encoder_defaults("deltanet", pos_emb="none")
    m.mixer_kwargs = ml_collections.ConfigDict(
        {"num_heads": 4, "chunk_size": 16, "conv_size": 4, "use_gate": True, "norm_eps": 1e-5})
    return m


MODELS = {
    "transformer": transformer,
    "aaren": aaren,
    "deltanet": deltanet,
}


def get(name: str) -> ml_collections.ConfigDict:
    try:
        return MODELS[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; configs/models.py defines {sorted(MODELS)}") from None
