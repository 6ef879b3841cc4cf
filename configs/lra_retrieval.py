"""LRA Retrieval: does one ACL Anthology paper cite the other? 2 classes, byte level, 4,000 bytes per paper.

Reproduces: the LRA Retrieval task (Tay et al. 2021, "Long Range Arena", table 1). Expected test accuracy of the
Transformer: 57.46 (LRA paper); S4: 90.90 (Gu et al. 2022, table 4). Data: ``tsv_data/new_aan_pairs.*.tsv`` of the
LRA release (https://storage.googleapis.com/long-range-arena/lra_release.gz, unpacked) under
``--config.data.data_dir``; parsed once and cached beside the files (lra/data/retrieval.py). Both papers go through
one shared encoder; the head reads [u, v, u*v, u-v] (LRA's "NLI" interaction).

    python train.py --config=configs/lra_retrieval.py:transformer --workdir=runs/aan_transformer --config.data.data_dir=/data/lra_release

The ``small`` preset (``:transformer,small``) reads 256 bytes per paper and trains a 2-layer width-64 model for 600
steps of batch 32: a few minutes on a 2-core CPU once the TSVs are parsed (not timed on the real data; the first run
parses about 180,000 pairs and each evaluation reads about 18,000). Full size: 5,000 steps of batch 32 at 4,000 bytes
per paper (S4: 50,000 steps of batch 64); hours on a GPU (not measured here).
"""
from configs import base, models


def get_config(arg: str = "transformer"):
    name, _, preset = arg.partition(",")
    c = base.get_config()
    c.task = "retrieval"

    # data (lra/data/retrieval.py)
    c.data.data_dir = "./lra_data"  # the release's lra_release/ folder (or the folder above it)
    c.data.cache_dir = ""  # where the parsed pairs are cached; "" = beside the TSV files
    c.data.seq_len = 4000  # bytes per paper (LRA base_match_config max_length; S4 l_max 4000)
    c.data.decode_literals = True  # fields written as b'...' literals are decoded; False = as written (official)

    # model (configs/models.py): a model's own published Retrieval settings where it has them (S4: 6 layers of width
    # 256, BatchNorm, prenorm); otherwise LRA matching/configs/base_match_config.py: 4 layers, width 128
    # (emb_dim = qkv_dim), 4 heads, mlp_dim 512, classifier MLP of width mlp_dim (LRA's has a second layer of
    # mlp_dim / 2; ours has one).
    c.model = models.get(name, "retrieval")
    if not models.published(name, "retrieval"):
        c.model.d_model, c.model.num_layers, c.model.mlp_ratio, c.model.head_hidden = 128, 4, 4, 512
        if "num_heads" in c.model.mixer_kwargs:
            c.model.mixer_kwargs.num_heads = 4

    # optimisation: LRA's base config trains 5,000 steps of batch 32, Adam with weight decay 0.1 and lr 0.05 x
    # linear warmup (8,000 steps: longer than the run) x rsqrt decay, so its rate climbs to 3.5e-4 at the last step.
    # We use AdamW peaking at 5e-4 after 500 warmup steps with a cosine decay, weight decay 0.1. S4 takes its
    # published rates, weight decay and batch (64), and its 50,000 steps with 2,500 warmup steps
    # (state-spaces/s4 configs/experiment/lra/s4-lra-aan.yaml: 20 epochs).
    c.batch_size, c.eval_batch_size = 32, 64
    c.num_train_steps, c.eval_every, c.checkpoint_every, c.log_every = 5000, 500, 500, 50
    c.optimizer.lr, c.optimizer.warmup_steps, c.optimizer.weight_decay = 5e-4, 500, 0.1
    if models.apply_published_training(c, name, "retrieval"):
        c.num_train_steps, c.optimizer.warmup_steps = 50_000, 2500

    if preset == "small":
        c.data.seq_len = 256
        c.model.d_model, c.model.num_layers, c.model.mlp_ratio, c.model.head_hidden = 64, 2, 2, 64
        c.model.dropout = 0.1
        if "num_heads" in c.model.mixer_kwargs:
            c.model.mixer_kwargs.num_heads = 4
        c.batch_size, c.eval_batch_size = 32, 100
        c.num_train_steps, c.eval_every, c.checkpoint_every, c.log_every = 600, 300, 300, 20
        c.optimizer.lr, c.optimizer.warmup_steps, c.optimizer.weight_decay = 3e-3, 50, 0.01
    elif preset:
        raise ValueError(f"unknown preset {preset!r} in config argument {arg!r}; expected 'small' or nothing")
    c.lock()
    return c
