"""Published LRA runs, field by field, with their sources pinned to a commit; and the one rule for mixers that have none.

``SETTINGS[(model, task)]`` holds every value of a published run that this project's config expresses, keyed by the
config field it sets; ``SOURCES[(model, task)]`` says where each comes from. Task configs call :func:`apply`, and
``tests/test_published.py`` checks every resolved config against these tables, so an edit that drifts from the
published run fails. ``RESULTS`` holds the published test accuracies that results tables print beside ours.

**S4** (Gu, Goel, Re, "Efficiently Modeling Long Sequences with Structured State Spaces", ICLR 2022; table 4 of the
updated arXiv version, August 2022): state-spaces/s4 at commit d589d982216485cce0a46bbe7605fe75c03d3223
("prepare V3 repository", 2022-08-02), ``configs/experiment/lra/s4-lra-{listops,imdb,aan,cifar,pathfinder,
pathx}.yaml`` with the defaults they pull in: ``configs/model/s4.yaml`` (tie_dropout true),
``configs/model/layer/s4.yaml`` (d_state 64, GELU then GLU), ``configs/optimizer/adamw.yaml`` (torch AdamW: betas
0.9 / 0.999, eps 1e-8), ``configs/scheduler/cosine_warmup.yaml`` (1,000 warmup steps unless set; per step),
``configs/trainer/default.yaml`` (gradient_clip_val 0), the pipelines' decoders, and ``src/models/sequence/ss/
kernel.py``'s ``OptimModule.register`` (A, B, dt: no weight decay; ``lr.dt: null`` = the base learning rate). No
parameter grouping is configured, so biases and norms are decayed. At the repository's head these files have moved
(``configs/experiment/lra/old/v3-s4-*.yaml``) and the Path-X warmup and learning rate changed; the values here are
the commit's. Training steps: ``max_epochs`` x steps per epoch where the epoch bound ends the run first (ListOps: 40 x
1,920 = 76,800, under the scheduler's 80,000 horizon; Image: 200 x 900 = 180,000 under 200,000), else the
scheduler's ``num_training_steps``.

**Transformer** (Tay et al., "Long Range Arena", ICLR 2021, table 1): google-research/long-range-arena at commit
cd31e5c6b8e5bceabd28de2d2afb23f7ae5d36d8, ``lra_benchmarks/{listops,text_classification,matching}/configs/
transformer_base.py`` (= their ``base_*_config.py``), ``lra_benchmarks/image/configs/{cifar10,pathfinder32,
pathfinder128}/transformer_base.py`` over their base configs, the task ``train.py`` files (flax.optim.Adam: beta1 0.9,
beta2 0.98, eps 1e-9, decoupled weight decay on every parameter; clipping only where ``grad_clip_norm`` is set) and
``lra_benchmarks/models/transformer/transformer.py`` (learned CLS token unless ``classifier_pool`` says otherwise,
dropout 0.1 and attention dropout 0.1 unless set, sinusoidal positions unless ``learn_pos_emb``; head Dense(mlp_dim),
ReLU, Dense(classes)). ``constant * linear_warmup * rsqrt_decay`` is the ``rsqrt`` schedule; LRA's
``cosine_decay`` with ``steps_per_cycle`` = the whole run is ``cosine`` with ``decay_steps`` = the run's length.
Not expressible here, and so left as they are: LRA's MEAN pooling averages padded positions too (ours averages real
tokens); the retrieval head has two hidden layers (mlp_dim, mlp_dim / 2; ours one of mlp_dim).

**Every other mixer** (Hydra, Aaren, DeltaNet, Routing, Combiner; S4D reuses S4's settings, as its paper did) has no
published LRA configuration. The rule, per task: LRA's own fairness rule, the LRA Transformer's training budget
(steps, batch, optimizer, schedule, dropout, pooling, depth) and a width chosen so that the parameter count is
within 10% of the LRA Transformer's on that task (``BUDGET_WIDTH``, found by ``python -m benchmarks.param_budget``,
which writes ``benchmarks/results/param_budget.md``; ``tests/test_published.py`` checks the 10%).
"""
from __future__ import annotations

S4_COMMIT = "state-spaces/s4@d589d982216485cce0a46bbe7605fe75c03d3223"
LRA_COMMIT = "google-research/long-range-arena@cd31e5c6b8e5bceabd28de2d2afb23f7ae5d36d8"
TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")

# Published test accuracies (%), with their source; None: the model failed the task (chance).
RESULTS = {
    "transformer": {"listops": 36.37, "text": 64.27, "retrieval": 57.46, "image": 42.44, "pathfinder": 71.40,
                    "pathx": None, "source": "Tay et al. 2021 (LRA), table 1; Path-X: FAIL"},
    "s4": {"listops": 59.60, "text": 86.82, "retrieval": 90.90, "image": 88.65, "pathfinder": 94.20, "pathx": 96.35,
           "source": "Gu et al. 2022 (S4), table 4 (arXiv v3)"},
}

# ----------------------------------------------------------------------------------------------------- S4

_S4_COMMON = {
    "model.prenorm": True, "model.norm": "batch", "model.dropout": 0.0, "model.tie_dropout": True,
    "model.mlp": "", "model.pos_emb": "none", "model.pooling": "mean", "model.head_hidden": 0,
    "model.mixer_kwargs.d_state": 64, "model.mixer_kwargs.n_ssm": 0, "model.mixer_kwargs.dt_min": 1e-3,
    "model.mixer_kwargs.dt_max": 1e-1, "model.mixer_kwargs.measure": "legs", "model.mixer_kwargs.dropout": 0.0,
    "model.mixer_kwargs.gelu_approximate": False,
    "optimizer.b1": 0.9, "optimizer.b2": 0.999, "optimizer.eps": 1e-8, "optimizer.grad_clip": 0.0,
    "optimizer.schedule": "cosine", "optimizer.final_lr_ratio": 0.0, "optimizer.decay_bias_and_norm": True,
    "optimizer.lr": 0.01, "optimizer.weight_decay": 0.05, "optimizer.ssm_lr": 0.001, "optimizer.dt_group": "base",
    "optimizer.warmup_steps": 1000, "data.tokenize": False,
}


def _s4(**fields):
    return {**_S4_COMMON, **fields}


_S4 = {
    # s4-lra-listops.yaml: 8 x 128, post-norm, pool; batch 50; cosine set for 80,000 steps, 40 epochs of 1,920
    "listops": _s4(**{"model.num_layers": 8, "model.d_model": 128, "model.prenorm": False, "data.seq_len": 2048,
                      "batch_size": 50, "num_train_steps": 76_800, "optimizer.decay_steps": 79_000}),
    # s4-lra-imdb.yaml: 6 x 256, l_max 4096, batch 16, 50,000 steps (32 epochs)
    "text": _s4(**{"model.num_layers": 6, "model.d_model": 256, "data.seq_len": 4096, "batch_size": 16,
                   "num_train_steps": 50_000, "optimizer.decay_steps": 49_000}),
    # s4-lra-aan.yaml: 6 x 256, retrieval decoder (NLI features, hidden d_model, GELU), batch 64, 50,000 steps,
    # 2,500 warmup
    "retrieval": _s4(**{"model.num_layers": 6, "model.d_model": 256, "model.head_hidden": 256,
                        "model.head_act": "gelu_exact", "data.seq_len": 4000, "batch_size": 64,
                        "num_train_steps": 50_000, "optimizer.warmup_steps": 2500, "optimizer.decay_steps": 47_500}),
    # s4-lra-cifar.yaml: 6 x 512, post-norm, LayerNorm, dropout 0.1 tied, n_ssm 2; batch 50; cosine set for 200,000
    # steps with the default 1,000 warmup, 200 epochs of 900
    "image": _s4(**{"model.num_layers": 6, "model.d_model": 512, "model.prenorm": False, "model.norm": "layer",
                    "model.dropout": 0.1, "model.mixer_kwargs.dropout": 0.1, "model.mixer_kwargs.n_ssm": 2,
                    "batch_size": 50, "num_train_steps": 180_000, "optimizer.decay_steps": 199_000}),
    # s4-lra-pathfinder.yaml: 6 x 256, decoder last; layer lr 0.001 for A, B and dt; lr 0.004, wd 0.03; batch 64,
    # 500,000 steps, 2,500 warmup
    "pathfinder": _s4(**{"model.num_layers": 6, "model.d_model": 256, "model.pooling": "last", "batch_size": 64,
                         "num_train_steps": 500_000, "optimizer.lr": 0.004, "optimizer.weight_decay": 0.03,
                         "optimizer.dt_group": "ssm", "optimizer.warmup_steps": 2500,
                         "optimizer.decay_steps": 497_500}),
    # s4-lra-pathx.yaml: 6 x 256, dt_min 1e-4; layer lr 5e-4 for A, B and dt; lr 5e-4; batch 16, 500,000 steps,
    # 10,000 warmup (1 epoch)
    "pathx": _s4(**{"model.num_layers": 6, "model.d_model": 256, "model.mixer_kwargs.dt_min": 1e-4,
                    "batch_size": 16, "num_train_steps": 500_000, "optimizer.lr": 5e-4, "optimizer.ssm_lr": 5e-4,
                    "optimizer.dt_group": "ssm", "optimizer.warmup_steps": 10_000,
                    "optimizer.decay_steps": 490_000}),
}

# ----------------------------------------------------------------------------------------------------- Transformer

_LRA_COMMON = {
    "model.prenorm": True, "model.norm": "layer", "model.mlp": "mlp", "model.head_act": "relu",
    "model.dropout": 0.1, "model.mixer_kwargs.attention_dropout": 0.1, "model.pos_emb": "sinusoidal",
    "model.pooling": "cls", "optimizer.b1": 0.9, "optimizer.b2": 0.98, "optimizer.eps": 1e-9,
    "optimizer.decay_bias_and_norm": True, "optimizer.grad_clip": 0.0, "optimizer.final_lr_ratio": 0.0,
}


def _lra(**fields):
    return {**_LRA_COMMON, **fields}


_RSQRT = {"optimizer.schedule": "rsqrt", "optimizer.lr": 0.05, "optimizer.weight_decay": 0.1,
          "optimizer.decay_steps": 0, "batch_size": 32}
_TRANSFORMER = {
    # listops/configs/base_listops_config.py: 4 layers, emb 512, 8 heads, qkv 512, mlp 1024, CLS, max_length 2000;
    # 5,000 steps of 32; 0.05 * warmup(1000) * rsqrt; wd 0.1
    "listops": _lra(**_RSQRT, **{"model.num_layers": 4, "model.d_model": 512, "model.mixer_kwargs.num_heads": 8,
                                 "model.mixer_kwargs.qkv_dim": 512, "model.mlp_ratio": 2, "model.head_hidden": 1024,
                                 "data.seq_len": 2000, "num_train_steps": 5000, "optimizer.warmup_steps": 1000}),
    # text_classification/configs/base_tc_config.py: 4 layers, emb 256, 4 heads, qkv 256, mlp 1024, CLS,
    # max_length 1000; 20,000 steps of 32; 0.05 * warmup(8000) * rsqrt; wd 0.1
    "text": _lra(**_RSQRT, **{"model.num_layers": 4, "model.d_model": 256, "model.mixer_kwargs.num_heads": 4,
                              "model.mixer_kwargs.qkv_dim": 256, "model.mlp_ratio": 4, "model.head_hidden": 1024,
                              "data.seq_len": 1000, "num_train_steps": 20_000, "optimizer.warmup_steps": 8000}),
    # matching/configs/base_match_config.py: 4 layers, emb 128, 4 heads, qkv 128, mlp 512, CLS, max_length 4000;
    # 5,000 steps of 32; 0.05 * warmup(8000) * rsqrt; wd 0.1
    "retrieval": _lra(**_RSQRT, **{"model.num_layers": 4, "model.d_model": 128, "model.mixer_kwargs.num_heads": 4,
                                   "model.mixer_kwargs.qkv_dim": 128, "model.mlp_ratio": 4, "model.head_hidden": 512,
                                   "data.seq_len": 4000, "num_train_steps": 5000, "optimizer.warmup_steps": 8000}),
    # image/configs/cifar10/transformer_base.py over base_cifar10_config.py: 1 layer, emb 128, 8 heads, qkv 64,
    # mlp 128, CLS, learned positions, dropout 0.3, attention dropout 0.2; 200 epochs of 45,000 at 256 = 35,000
    # steps; 5e-4 * warmup(175) * cosine over 35,000; no weight decay, no clipping
    "image": _lra(**{"model.num_layers": 1, "model.d_model": 128, "model.mixer_kwargs.num_heads": 8,
                     "model.mixer_kwargs.qkv_dim": 64, "model.mlp_ratio": 1, "model.head_hidden": 128,
                     "model.pos_emb": "learned", "model.dropout": 0.3, "model.mixer_kwargs.attention_dropout": 0.2,
                     "data.tokenize": True, "batch_size": 256, "num_train_steps": 35_000,
                     "optimizer.schedule": "cosine", "optimizer.lr": 5e-4, "optimizer.warmup_steps": 175,
                     "optimizer.decay_steps": 35_000, "optimizer.weight_decay": 0.0}),
    # image/configs/pathfinder32/transformer_base.py over base_pathfinder32_config.py: 4 layers, emb 32, 4 heads,
    # qkv 16, mlp 32, dropout 0.2, attention dropout 0.1, MEAN, fixed positions; 200 epochs of 160,000 at 512 =
    # 62,400 steps; 1e-3 * warmup(312) * cosine over 62,400; no weight decay, no clipping
    "pathfinder": _lra(**{"model.num_layers": 4, "model.d_model": 32, "model.mixer_kwargs.num_heads": 4,
                          "model.mixer_kwargs.qkv_dim": 16, "model.mlp_ratio": 1, "model.head_hidden": 32,
                          "model.pooling": "mean", "model.dropout": 0.2, "data.tokenize": True, "batch_size": 512,
                          "num_train_steps": 62_400, "optimizer.schedule": "cosine", "optimizer.lr": 1e-3,
                          "optimizer.warmup_steps": 312, "optimizer.decay_steps": 62_400,
                          "optimizer.weight_decay": 0.0}),
    # image/configs/pathfinder128/base_pathfinder128_config.py (transformer_base.py keeps it): 1 layer, emb 32, 2
    # heads, qkv 16, mlp 32, dropout 0.1, MEAN, learned positions; 200 epochs of 160,000 at 64 = 500,000 steps;
    # 1e-3 * warmup(2500) * cosine over 500,000; clipping at 1; no weight decay
    "pathx": _lra(**{"model.num_layers": 1, "model.d_model": 32, "model.mixer_kwargs.num_heads": 2,
                     "model.mixer_kwargs.qkv_dim": 16, "model.mlp_ratio": 1, "model.head_hidden": 32,
                     "model.pooling": "mean", "model.pos_emb": "learned", "data.tokenize": True, "batch_size": 64,
                     "num_train_steps": 500_000, "optimizer.schedule": "cosine", "optimizer.lr": 1e-3,
                     "optimizer.warmup_steps": 2500, "optimizer.decay_steps": 500_000,
                     "optimizer.weight_decay": 0.0, "optimizer.grad_clip": 1.0}),
}

SETTINGS = {**{("s4", t): v for t, v in _S4.items()}, **{("transformer", t): v for t, v in _TRANSFORMER.items()}}
_S4_FILES = {"listops": "listops", "text": "imdb", "retrieval": "aan", "image": "cifar", "pathfinder": "pathfinder",
             "pathx": "pathx"}
_LRA_FILES = {"listops": "listops/configs/base_listops_config.py",
              "text": "text_classification/configs/base_tc_config.py",
              "retrieval": "matching/configs/base_match_config.py",
              "image": "image/configs/cifar10/transformer_base.py",
              "pathfinder": "image/configs/pathfinder32/transformer_base.py",
              "pathx": "image/configs/pathfinder128/base_pathfinder128_config.py"}
SOURCES = {**{("s4", t): f"{S4_COMMIT}: configs/experiment/lra/s4-lra-{f}.yaml" for t, f in _S4_FILES.items()},
           **{("transformer", t): f"{LRA_COMMIT}: lra_benchmarks/{f}" for t, f in _LRA_FILES.items()}}
# S4D's paper trained LRA with S4's settings: the same table, marked as borrowed.
BORROWED = {"s4d": "s4"}

# The rule for mixers without published settings: the Transformer's run, at this width (parameters within 10% of the
# Transformer's on the task; benchmarks/param_budget.py). Heads stay the mixer's default unless the width needs fewer.
BUDGET_WIDTH: dict[tuple[str, str], int] = {
    ("aaren", "listops"): 512,
    ("combiner", "listops"): 480,
    ("deltanet", "listops"): 440,
    ("hydra", "listops"): 448,
    ("routing", "listops"): 480,
    ("aaren", "text"): 256,
    ("combiner", "text"): 248,
    ("deltanet", "text"): 232,
    ("hydra", "text"): 224,
    ("routing", "text"): 248,
    ("aaren", "retrieval"): 104,
    ("combiner", "retrieval"): 96,
    ("deltanet", "retrieval"): 112,
    ("hydra", "retrieval"): 96,
    ("routing", "retrieval"): 96,
    ("aaren", "image"): 120,
    ("combiner", "image"): 120,
    ("deltanet", "image"): 144,
    ("hydra", "image"): 128,
    ("routing", "image"): 120,
    ("aaren", "pathfinder"): 16,
    ("combiner", "pathfinder"): 16,
    ("deltanet", "pathfinder"): 24,
    ("hydra", "pathfinder"): 32,
    ("routing", "pathfinder"): 16,
    ("aaren", "pathx"): 32,
    ("combiner", "pathx"): 32,
    ("deltanet", "pathx"): 224,
    ("hydra", "pathx"): 224,
    ("routing", "pathx"): 32,
}
# (mixer, task) -> why no width brings it within 10% (reported in benchmarks/results/param_budget.md)
BUDGET_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("hydra", "retrieval"): "widths go by 32 (head dimension 64, expand 2): 96 has 0.79x, 128 has 1.26x",
    ("hydra", "image"): "widths go by 32 (head dimension 64, expand 2): 128 has 0.89x, 160 has 1.28x",
    ("hydra", "pathfinder"): "the smallest Hydra (width 32: one head of 64 channels, state 64) has 3.2x the "
                             "Transformer's 26,786 parameters",
    ("deltanet", "pathfinder"): "4 heads: width 20 has 0.87x, 24 has 1.18x",
}
BUDGET_COPIED = ("model.num_layers", "model.mlp_ratio", "model.dropout", "model.pooling", "model.head_hidden",
                 "model.head_act",
                 "model.prenorm", "model.norm", "data.seq_len", "batch_size", "num_train_steps", "optimizer.b1",
                 "optimizer.b2", "optimizer.eps", "optimizer.grad_clip", "optimizer.schedule", "optimizer.lr",
                 "optimizer.weight_decay", "optimizer.warmup_steps", "optimizer.decay_steps",
                 "optimizer.final_lr_ratio", "optimizer.decay_bias_and_norm", "data.tokenize")


def _set(config, field: str, value) -> None:
    node = config
    *parents, last = field.split(".")
    for p in parents:
        node = node[p]
    if last not in node:
        raise KeyError(f"published setting {field} has no field in this config")
    node[last] = value


def settings_for(name: str, task: str) -> dict | None:
    """The published settings of model ``name`` on ``task`` (S4D: S4's), or None."""
    return SETTINGS.get((BORROWED.get(name, name), task))


def apply(config, name: str, task: str) -> str:
    """Set ``config`` (unlocked) to the published run of ``name`` on ``task``, or to the budget rule; returns which:
    ``"published"``, ``"borrowed"`` (S4D), ``"budget"`` or ``"none"`` (no rule for this task yet)."""
    settings = settings_for(name, task)
    if settings is not None:
        for field, value in settings.items():
            if field.startswith("data.") and field[5:] not in config.data:
                continue  # a data field this task does not have
            _set(config, field, value)
        return "borrowed" if name in BORROWED else "published"
    reference = SETTINGS.get(("transformer", task))
    if reference is None:
        return "none"
    for field in BUDGET_COPIED:
        if field == "model.pooling" and config.model.causal:
            continue  # a causal mixer pools where it has seen everything (its own default, e.g. Aaren's last)
        if field == "model.mlp_ratio" and not config.model.mlp:
            continue  # no channel MLP in this mixer's blocks
        if field in reference and not (field.startswith("data.") and field[5:] not in config.data):
            _set(config, field, reference[field])
    if (name, task) in BUDGET_WIDTH:
        config.model.d_model = BUDGET_WIDTH[(name, task)]
    return "budget"
