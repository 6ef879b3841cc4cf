"""LRA Retrieval: does one ACL Anthology paper cite the other? 2 classes, byte level, 4,000 bytes per paper.

Reproduces: the LRA Retrieval task (Tay et al. 2021, "Long Range Arena", table 1). Expected test accuracy of the
Transformer: 57.46 (LRA paper); S4: 90.90 (Gu et al. 2022, table 4). Data: ``tsv_data/new_aan_pairs.*.tsv`` of the
LRA release (https://storage.googleapis.com/long-range-arena/lra_release.gz, unpacked) under
``--config.data.data_dir``; parsed once and cached beside the files (lra/data/retrieval.py). Both papers go through
one shared encoder; the head reads [u, v, u*v, u-v] (LRA's "NLI" interaction).

Settings (configs/published.py, sources pinned to a commit there): ``transformer`` is LRA's
``matching/configs/base_match_config.py`` (4 layers of width 128, 4 heads, MLP 512, CLS token, 5,000 steps of batch
32, 0.05 x linear warmup (8,000) x rsqrt decay, weight decay 0.1); ``s4`` is ``s4-lra-aan.yaml`` (6 x 256,
BatchNorm, 50,000 steps of batch 64, cosine after 2,500 warmup steps, a GELU head of width 256); every other mixer
takes the Transformer's budget at a width within 10% of its parameter count.

    python train.py --config=configs/lra_retrieval.py:transformer --workdir=runs/aan_transformer --config.data.data_dir=/data/lra_release

The ``small`` preset (``:transformer,small``) reads 256 bytes per paper and trains a 2-layer width-64 model for 600
steps of batch 32 with the project's own CPU recipe: a few minutes on a 2-core CPU once the TSVs are parsed.
"""
from configs import base, models, published


def get_config(arg: str = "transformer"):
    name, _, preset = arg.partition(",")
    c = base.get_config()
    c.task = "retrieval"

    # data (lra/data/retrieval.py)
    c.data.data_dir = "./lra_data"  # the release's lra_release/ folder (or the folder above it)
    c.data.cache_dir = ""  # where the parsed pairs are cached; "" = beside the TSV files
    c.data.seq_len = 4000  # bytes per paper (LRA base_match_config max_length; S4 l_max 4000)
    c.data.decode_literals = True  # fields written as b'...' literals are decoded; False = as written (official)

    c.model = models.get(name)
    c.eval_batch_size = 64
    c.eval_every, c.checkpoint_every, c.log_every = 500, 500, 50
    c.settings_rule = published.apply(c, name, "retrieval")

    if preset == "small":
        c.data.seq_len = 256
        c.model = models.get(name)
        c.model.d_model, c.model.num_layers, c.model.mlp_ratio, c.model.head_hidden = 64, 2, 2, 64
        c.model.dropout = 0.1
        if "num_heads" in c.model.mixer_kwargs:
            c.model.mixer_kwargs.num_heads = 4
        c.optimizer = base.get_config().optimizer
        c.batch_size, c.eval_batch_size = 32, 100
        c.num_train_steps, c.eval_every, c.checkpoint_every, c.log_every = 600, 300, 300, 20
        c.optimizer.lr, c.optimizer.warmup_steps, c.optimizer.weight_decay = 3e-3, 50, 0.01
        c.settings_rule = "preset"
    elif preset:
        raise ValueError(f"unknown preset {preset!r} in config argument {arg!r}; expected 'small' or nothing")
    c.lock()
    return c
