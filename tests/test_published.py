"""The task configs reproduce the published runs, field by field.

The tables below are written in each source's own terms (the YAML / Python config keys of the published code, at the
pinned commits named in configs/published.py) and mapped onto this project's fields here, independently of
configs/published.py: an edit of a config or of that module that drifts from a published run fails.
"""
import importlib
import math

import pytest

from configs import published

# state-spaces/s4 @ d589d982216485cce0a46bbe7605fe75c03d3223, configs/experiment/lra/s4-lra-<file>.yaml, plus
# model/s4.yaml (tie_dropout: true), layer/s4.yaml (d_state 64), optimizer/adamw.yaml (torch AdamW defaults),
# scheduler/cosine_warmup.yaml (num_warmup_steps 1000 unless set), trainer/default.yaml (gradient_clip_val 0.0).
S4_YAML = {
    #             file      n_layers d_model prenorm norm   dropout n_ssm lr    wd    layer lr: A/B, dt    batch
    "listops": dict(file="listops", n_layers=8, d_model=128, prenorm=False, norm="batch", dropout=0.0, n_ssm="H",
                    lr=0.01, weight_decay=0.05, lr_ab=0.001, lr_dt=None, batch_size=50, decoder="pool",
                    warmup=1000, num_training_steps=80_000, max_epochs=40, train_examples=96_000, dt_min=0.001),
    "text": dict(file="imdb", n_layers=6, d_model=256, prenorm=True, norm="batch", dropout=0.0, n_ssm="H",
                 lr=0.01, weight_decay=0.05, lr_ab=0.001, lr_dt=None, batch_size=16, decoder="pool", warmup=1000,
                 num_training_steps=50_000, max_epochs=32, train_examples=25_000, dt_min=0.001, l_max=4096),
    "retrieval": dict(file="aan", n_layers=6, d_model=256, prenorm=True, norm="batch", dropout=0.0, n_ssm=256,
                      lr=0.01, weight_decay=0.05, lr_ab=0.001, lr_dt=None, batch_size=64, decoder="retrieval",
                      warmup=2500, num_training_steps=50_000, max_epochs=20, train_examples=None, dt_min=0.001),
    "image": dict(file="cifar", n_layers=6, d_model=512, prenorm=False, norm="layer", dropout=0.1, n_ssm=2,
                  lr=0.01, weight_decay=0.05, lr_ab=0.001, lr_dt=None, batch_size=50, decoder="pool", warmup=1000,
                  num_training_steps=200_000, max_epochs=200, train_examples=45_000, dt_min=0.001),
    "pathfinder": dict(file="pathfinder", n_layers=6, d_model=256, prenorm=True, norm="batch", dropout=0.0,
                       n_ssm=256, lr=0.004, weight_decay=0.03, lr_ab=0.001, lr_dt=0.001, batch_size=64,
                       decoder="last", warmup=2500, num_training_steps=500_000, max_epochs=200,
                       train_examples=160_000, dt_min=0.001),
    "pathx": dict(file="pathx", n_layers=6, d_model=256, prenorm=True, norm="batch", dropout=0.0, n_ssm=256,
                  lr=0.0005, weight_decay=0.05, lr_ab=0.0005, lr_dt=0.0005, batch_size=16, decoder="pool",
                  warmup=10_000, num_training_steps=500_000, max_epochs=50, train_examples=160_000, dt_min=0.0001),
}

# google-research/long-range-arena @ cd31e5c6b8e5bceabd28de2d2afb23f7ae5d36d8, lra_benchmarks/...: the task's
# transformer config over its base config; models/transformer/transformer.py defaults (dropout 0.1, attention
# dropout 0.1, classifier_pool CLS, learn_pos_emb False); train.py: Adam(beta1 0.9, beta2 0.98, eps 1e-9).
LRA_CONFIG = {
    "listops": dict(emb_dim=512, num_heads=8, qkv_dim=512, mlp_dim=1024, num_layers=4, max_length=2000,
                    batch_size=32, num_train_steps=5000, learning_rate=0.05, warmup=1000, weight_decay=0.1,
                    factors="constant * linear_warmup * rsqrt_decay", pool="CLS", learn_pos_emb=False,
                    dropout_rate=0.1, attention_dropout_rate=0.1, grad_clip_norm=None),
    "text": dict(emb_dim=256, num_heads=4, qkv_dim=256, mlp_dim=1024, num_layers=4, max_length=1000, batch_size=32,
                 num_train_steps=20_000, learning_rate=0.05, warmup=8000, weight_decay=0.1,
                 factors="constant * linear_warmup * rsqrt_decay", pool="CLS", learn_pos_emb=False,
                 dropout_rate=0.1, attention_dropout_rate=0.1, grad_clip_norm=None),
    "retrieval": dict(emb_dim=128, num_heads=4, qkv_dim=128, mlp_dim=512, num_layers=4, max_length=4000,
                      batch_size=32, num_train_steps=5000, learning_rate=0.05, warmup=8000, weight_decay=0.1,
                      factors="constant * linear_warmup * rsqrt_decay", pool="CLS", learn_pos_emb=False,
                      dropout_rate=0.1, attention_dropout_rate=0.1, grad_clip_norm=None),
    "image": dict(emb_dim=128, num_heads=8, qkv_dim=64, mlp_dim=128, num_layers=1, max_length=None, batch_size=256,
                  num_train_steps=(45_000 // 256) * 200, learning_rate=0.0005, warmup=45_000 // 256,
                  weight_decay=0.0, factors="constant * linear_warmup * cosine_decay", pool="CLS", learn_pos_emb=True,
                  dropout_rate=0.3, attention_dropout_rate=0.2, grad_clip_norm=None),
    "pathfinder": dict(emb_dim=32, num_heads=4, qkv_dim=16, mlp_dim=32, num_layers=4, max_length=None,
                       batch_size=512, num_train_steps=(160_000 // 512) * 200, learning_rate=0.001,
                       warmup=160_000 // 512, weight_decay=0.0, factors="constant * linear_warmup * cosine_decay",
                       pool="MEAN", learn_pos_emb=False, dropout_rate=0.2, attention_dropout_rate=0.1,
                       grad_clip_norm=None),
    "pathx": dict(emb_dim=32, num_heads=2, qkv_dim=16, mlp_dim=32, num_layers=1, max_length=None, batch_size=64,
                  num_train_steps=(160_000 // 64) * 200, learning_rate=0.001, warmup=160_000 // 64,
                  weight_decay=0.0, factors="constant * linear_warmup * cosine_decay", pool="MEAN",
                  learn_pos_emb=True, dropout_rate=0.1, attention_dropout_rate=0.1, grad_clip_norm=1.0),
}

TASKS = tuple(S4_YAML)


def _config(task, model):
    return importlib.import_module(f"configs.lra_{task}").get_config(model)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", ["s4", "s4d"])
def test_s4_configs_are_the_published_runs(task, model):
    y, c = S4_YAML[task], _config(task, model)
    assert c.settings_rule == ("published" if model == "s4" else "borrowed")
    m, k, o = c.model, c.model.mixer_kwargs, c.optimizer
    assert (m.num_layers, m.d_model, m.prenorm, m.norm) == (y["n_layers"], y["d_model"], y["prenorm"], y["norm"])
    assert m.dropout == y["dropout"] and k.dropout == y["dropout"] and m.tie_dropout is True
    assert (m.mlp, m.pos_emb) == ("", "none")  # an S4 block is the S4 layer alone; no positional encoding
    assert k.d_state == 64 and k.dt_min == y["dt_min"] and k.dt_max == 0.1 and k.gelu_approximate is False
    assert k.n_ssm == (0 if y["n_ssm"] in ("H", y["d_model"]) else y["n_ssm"])  # 0 = one copy per channel
    if y["decoder"] == "retrieval":  # RetrievalHead(nli=True, activation gelu, d_model = d_input)
        assert (m.pooling, m.head_hidden, m.head_act) == ("mean", y["d_model"], "gelu_exact")
    else:  # SequenceDecoder: pool / last, then one Linear
        assert (m.pooling, m.head_hidden) == ({"pool": "mean", "last": "last"}[y["decoder"]], 0)
    # optimizer: torch AdamW defaults, no clipping, no parameter grouping (biases and norms decayed)
    assert (o.name, o.b1, o.b2, o.eps, o.grad_clip) == ("adamw", 0.9, 0.999, 1e-8, 0.0)
    assert o.decay_bias_and_norm is True
    assert (o.lr, o.weight_decay, o.ssm_lr) == (y["lr"], y["weight_decay"], y["lr_ab"])
    assert o.dt_group == ("base" if y["lr_dt"] is None else "ssm")
    if y["lr_dt"] is not None:
        assert y["lr_dt"] == y["lr_ab"]
    # transformers' cosine schedule with warmup, stepped per step; the run ends at max_epochs or the horizon
    assert (o.schedule, o.final_lr_ratio, o.warmup_steps) == ("cosine", 0.0, y["warmup"])
    assert o.warmup_steps + o.decay_steps == y["num_training_steps"]
    assert c.batch_size == y["batch_size"]
    if y["train_examples"] is not None:
        epoch_bound = y["max_epochs"] * math.ceil(y["train_examples"] / y["batch_size"])
        assert c.num_train_steps == min(epoch_bound, y["num_training_steps"])
    else:  # AAN: the yaml's own "20 epochs" = its 50,000 scheduler steps
        assert c.num_train_steps == y["num_training_steps"]
    if "l_max" in y:
        assert c.data.seq_len == y["l_max"]
    if "tokenize" in c.data:
        assert c.data.tokenize is False  # S4 reads pixels as one continuous channel (encoder: linear)


@pytest.mark.parametrize("task", TASKS)
def test_transformer_configs_are_the_lra_runs(task):
    y, c = LRA_CONFIG[task], _config(task, "transformer")
    assert c.settings_rule == "published"
    m, k, o = c.model, c.model.mixer_kwargs, c.optimizer
    assert (m.d_model, k.num_heads, k.qkv_dim, m.num_layers) == (y["emb_dim"], y["num_heads"], y["qkv_dim"],
                                                                 y["num_layers"])
    assert m.d_model * m.mlp_ratio == y["mlp_dim"] and m.head_hidden == y["mlp_dim"] and m.head_act == "relu"
    assert m.pooling == {"CLS": "cls", "MEAN": "mean"}[y["pool"]]
    assert m.pos_emb == ("learned" if y["learn_pos_emb"] else "sinusoidal")
    assert (m.dropout, k.attention_dropout) == (y["dropout_rate"], y["attention_dropout_rate"])
    assert (m.prenorm, m.norm, m.mlp) == (True, "layer", "mlp")
    if y["max_length"] is not None:
        assert c.data.seq_len == y["max_length"]
    else:
        assert c.data.tokenize is True  # pixels as 256 tokens
    assert (o.b1, o.b2, o.eps) == (0.9, 0.98, 1e-9) and o.decay_bias_and_norm is True
    assert o.grad_clip == (y["grad_clip_norm"] or 0.0)
    assert (c.batch_size, c.num_train_steps, o.lr, o.warmup_steps, o.weight_decay) == (
        y["batch_size"], y["num_train_steps"], y["learning_rate"], y["warmup"], y["weight_decay"])
    if y["factors"].endswith("rsqrt_decay"):
        assert o.schedule == "rsqrt"
    else:  # cosine_decay with steps_per_cycle = the whole run, counted from the end of the warmup
        assert (o.schedule, o.decay_steps, o.final_lr_ratio) == ("cosine", y["num_train_steps"], 0.0)


def test_every_published_setting_names_its_source():
    for key in published.SETTINGS:
        source = published.SOURCES[key]
        assert ("@d589d982216485cce0a46bbe7605fe75c03d3223" in source if key[0] == "s4" else
                "@cd31e5c6b8e5bceabd28de2d2afb23f7ae5d36d8" in source)
    for task in TASKS:
        doc = importlib.import_module(f"configs.lra_{task}").__doc__
        assert "configs/published.py" in doc and "pinned" in doc


BUDGET_MIXERS = ("hydra", "aaren", "deltanet", "routing", "combiner")


@pytest.mark.parametrize("task", TASKS)
def test_mixers_without_published_settings_take_the_transformers_budget(task):
    reference = _config(task, "transformer")
    for mixer in BUDGET_MIXERS:
        c = _config(task, mixer)
        assert c.settings_rule == "budget"
        for field in ("num_train_steps", "batch_size"):
            assert c[field] == reference[field], (mixer, field)
        for field in ("lr", "schedule", "warmup_steps", "decay_steps", "weight_decay", "b2", "eps", "grad_clip"):
            assert c.optimizer[field] == reference.optimizer[field], (mixer, field)
        assert (c.model.num_layers, c.model.dropout) == (reference.model.num_layers, reference.model.dropout)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_budget_widths_keep_parameters_within_10_percent_of_the_transformer(task):
    from lra.runs import count_params
    target = count_params(_config(task, "transformer"))
    for mixer in BUDGET_MIXERS:
        n = count_params(_config(task, mixer))
        exception = published.BUDGET_EXCEPTIONS.get((mixer, task))  # a reason, where no width gets within 10%
        if exception:  # documented: no width of this mixer's head layout lands within 10%
            assert abs(n / target - 1) > 0.10 and len(exception) > 20, (mixer, task, n / target, exception)
        else:
            assert abs(n / target - 1) <= 0.10, (mixer, task, n, target)
