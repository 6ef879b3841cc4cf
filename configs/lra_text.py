"""LRA Text: IMDB sentiment (2 classes) from raw bytes.

Reproduces: the LRA Text task (Tay et al. 2021, "Long Range Arena", table 1). Expected test accuracy of the
Transformer: 64.27 (LRA paper); S4: 86.82 (Gu et al. 2022, table 4). Data: the original IMDB archive
(https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz, or its unpacked aclImdb/) in
``--config.data.data_dir``; parsed once and cached beside it (lra/data/text.py).

Settings (configs/published.py, sources pinned to a commit there): ``transformer`` is LRA's
``text_classification/configs/base_tc_config.py`` (4 layers of width 256, 4 heads, MLP 1024, CLS token, reviews cut
to 1,000 bytes as that config does, 20,000 steps of batch 32, 0.05 x linear warmup (8,000) x rsqrt decay, weight
decay 0.1); ``s4`` is ``s4-lra-imdb.yaml`` (6 x 256, BatchNorm, 4,096 bytes, 50,000 steps of batch 16, cosine after
1,000 warmup steps); every other mixer takes the Transformer's budget at a width within 10% of its parameter count.

    python train.py --config=configs/lra_text.py:transformer --workdir=runs/text_transformer --config.data.data_dir=/data/imdb

The ``small`` preset (``:transformer,small``) reads the first 256 bytes of each review and trains a 2-layer width-64
model for 600 steps of batch 32 on the 22,500 training reviews with the project's own CPU recipe: a few minutes on
a 2-core CPU, clearly above chance but far below the full-length numbers. Full size: hours on a GPU.
"""
from configs import base, models, published


def get_config(arg: str = "transformer"):
    name, _, preset = arg.partition(",")
    c = base.get_config()
    c.task = "text"

    # data (lra/data/text.py)
    c.data.data_dir = "./lra_data"  # holds aclImdb/ or aclImdb_v1.tar.gz
    c.data.cache_dir = ""  # where the parsed reviews are cached; "" = beside the data
    c.data.seq_len = 4096  # bytes per review (S4: 4,096; LRA's base config: 1,000); set per model by the settings
    c.data.official_protocol = False  # True: the LRA code's protocol, the test split also validates
    c.data.val_fraction = 0.1  # otherwise: 10% of the training reviews validate (2,500) ...
    c.data.val_seed = 0  # ... chosen by np.random.default_rng(val_seed).permutation

    c.model = models.get(name)
    c.eval_batch_size = 64
    c.eval_every, c.checkpoint_every, c.log_every = 1000, 1000, 100
    c.settings_rule = published.apply(c, name, "text")

    if preset == "small":
        c.data.seq_len = 256
        c.model = models.get(name)
        c.model.d_model, c.model.num_layers, c.model.mlp_ratio, c.model.head_hidden = 64, 2, 2, 64
        c.model.dropout = 0.1
        if "num_heads" in c.model.mixer_kwargs:
            c.model.mixer_kwargs.num_heads = 4
        c.optimizer = base.get_config().optimizer
        c.batch_size, c.eval_batch_size = 32, 100
        c.num_train_steps, c.eval_every, c.checkpoint_every, c.log_every = 600, 200, 200, 20
        c.optimizer.lr, c.optimizer.warmup_steps, c.optimizer.weight_decay = 3e-3, 50, 0.01
        c.settings_rule = "preset"
    elif preset:
        raise ValueError(f"unknown preset {preset!r} in config argument {arg!r}; expected 'small' or nothing")
    c.lock()
    return c
