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
    m.pooling = "mean"  # mean | first | last | cls (a learned token before position 0, LRA's Transformer)
    m.head_hidden = 256
    m.head_act = "gelu"  # classifier head hidden activation: gelu | gelu_exact (S4 retrieval) | relu (LRA)
    m.tie_dropout = False  # dropout masks shared across positions (S4's tie_dropout)
    m.dtype = "float32"  # activations and matmuls (bfloat16 on accelerators); params, softmax, scans, FFTs stay float32
    m.remat = False  # rematerialise every block in the backward pass (Path-X memory)
    m.update(overrides)
    return m


def transformer() -> ml_collections.ConfigDict:
    m = encoder_defaults("transformer", pos_emb="learned")
    m.mixer_kwargs = ml_collections.ConfigDict(
        {"num_heads": 8, "qkv_dim": 0, "attention_dropout": 0.0, "implementation": "auto"})  # qkv_dim 0 = d_model
    return m


def s4() -> ml_collections.ConfigDict:
    """S4 (DPLR, HiPPO-LegS, bilinear, bidirectional): the S4 block carries its own GELU + GLU output projection, so
    no channel MLP and no positional embedding; BatchNorm. Per-task published settings: configs/published.py."""
    m = encoder_defaults("s4", pos_emb="none", mlp="", norm="batch", dropout=0.0)
    m.mixer_kwargs = ml_collections.ConfigDict(
        {"d_state": 64, "n_ssm": 1, "dt_min": 1e-3, "dt_max": 1e-1, "dropout": 0.0, "measure": "legs",
         "gelu_approximate": False})
    return m


def s4d() -> ml_collections.ConfigDict:
    """S4D (diagonal, zero-order hold, S4D-LegS init); otherwise as S4."""
    m = s4()
    m.mixer = "s4d"
    m.mixer_kwargs.disc = "zoh"
    return m


def aaren() -> ml_collections.ConfigDict:
    """Aaren: causal by construction; classification reads the last real position (the learned query's attention
    over the whole sequence). Query init and score scale 0 = 1/sqrt(head_dim) (unverified choices: no official code)."""
    m = encoder_defaults("aaren", pos_emb="learned", pooling="last", causal=True)
    m.mixer_kwargs = ml_collections.ConfigDict({"num_heads": 8, "query_init_std": 0.0, "score_scale": 0.0})
    return m


def deltanet() -> ml_collections.ConfigDict:
    """DeltaNet (fla's layer and its defaults: no output gate, no conv bias): short convs give it local order, so
    no positional embedding; bidirectional for classification (causal=False, our two-direction form), causal=True
    for causal-LM pretraining."""
    m = encoder_defaults("deltanet", pos_emb="none")
    m.mixer_kwargs = ml_collections.ConfigDict(
        {"num_heads": 4, "chunk_size": 16, "conv_size": 4, "use_gate": False, "conv_bias": False, "norm_eps": 1e-5})
    return m


def hydra() -> ml_collections.ConfigDict:
    """Hydra (the official module's defaults): state 64, head dim 64, expand 2, centred conv 7; its conv gives local
    order, so no positional embedding. The paper's BERT keeps the MLP sublayer, and so do we. Chunk 64, not the
    official 256 (tuned for its fused GPU kernel): fewest flops and fastest on CPU (benchmarks/results/hydra.md).
    ``causal=True`` is Mamba-2 (forward pass, causal conv, no shift) for causal-LM pretraining."""
    m = encoder_defaults("hydra", pos_emb="none")
    m.mixer_kwargs = ml_collections.ConfigDict(
        {"d_state": 64, "head_dim": 64, "expand": 2, "d_conv": 7, "chunk_size": 64})
    return m


def routing() -> ml_collections.ConfigDict:
    """Routing Transformer attention (lucidrains/routing-transformer's defaults): half the heads content-routed
    (online k-means centroids in the ``routing`` collection, initialised by 10 k-means iterations on the first
    training batch; commitment loss 1e-4 on the feature-mean squared error), half blocked-local; window 64 tokens
    per cluster, C = 0 -> ceil(L / 64) clusters, local block 0 -> the routing window; shared_qk -1 -> shared exactly
    when causal. ``window=0`` with C = 0 is the earlier about-sqrt(L) rule. The head split and per-layer routing are
    unverified choices."""
    m = encoder_defaults("routing", pos_emb="learned")
    m.mixer_kwargs = ml_collections.ConfigDict(
        {"num_heads": 8, "num_routing_heads": -1, "num_clusters": 0, "window": 64, "local_window": 0, "qkv_dim": 0,
         "shared_qk": -1, "ema_decay": 0.999, "commitment_weight": 1e-4, "kmeans_init_iters": 10,
         "torch_init": True})
    return m


def combiner() -> ml_collections.ConfigDict:
    """Combiner-Fixed: segments of about sqrt(L) (segment_size 0), max-pooled summaries, one softmax over direct and
    indirect logits; variant "official" (the published code: the own segment also through its summary) or
    "partition" (own segment once)."""
    m = encoder_defaults("combiner", pos_emb="learned")
    m.mixer_kwargs = ml_collections.ConfigDict(
        {"num_heads": 8, "segment_size": 0, "qkv_dim": 0, "variant": "official"})
    return m


MODELS = {
    "transformer": transformer,
    "s4": s4,
    "s4d": s4d,
    "aaren": aaren,
    "deltanet": deltanet,
    "hydra": hydra,
    "routing": routing,
    "combiner": combiner,
}


def get(name: str) -> ml_collections.ConfigDict:
    """The ``config.model`` section of model ``name`` with its defaults (a task config then applies the published
    settings of the model on that task, or the budget rule: configs/published.py)."""
    try:
        return MODELS[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; configs/models.py defines {sorted(MODELS)}") from None
