"""LRA Text: IMDB sentiment (2 classes) from raw bytes, reviews truncated to 4,096 bytes.

Reproduces: the LRA Text task (Tay et al. 2021, "Long Range Arena", table 1). Expected test accuracy of the
Transformer: 64.27 (LRA paper); S4: 86.82 (Gu et al. 2022, table 4). Data: the original IMDB archive
(https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz, or its unpacked aclImdb/) in
``--config.data.data_dir``; parsed once and cached beside it (lra/data/text.py).

    python train.py --config=configs/lra_text.py:transformer --workdir=runs/text_transformer --config.data.data_dir=/data/imdb

The ``small`` preset (``:transformer,small``) reads the first 256 bytes of each review and trains a 2-layer width-64
model for 600 steps of batch 32 on the 22,500 training reviews: a few minutes on a 2-core CPU (not timed on the real
data; the fixtures run in seconds), clearly above chance but far below the full-length numbers.
Full size: 20,000 steps of batch 32 at 4,096 bytes (S4: 50,000 steps of batch 16); hours on a GPU (not measured here).
"""
from configs import base, models


def get_config(arg: str = "transformer"):
    name, _, preset = arg.partition(",")
    c = base.get_config()
    c.task = "text"

    # data (lra/data/text.py)
    c.data.data_dir = "./lra_data"  # holds aclImdb/ or aclImdb_v1.tar.gz
    c.data.cache_dir = ""  # where the parsed reviews are cached; "" = beside the data
    c.data.seq_len = 4096  # bytes per review: S4 4,096; LRA's tlb config 4,000 ("4K"); LRA's base config 1,000
    c.data.official_protocol = False  # True: the LRA code's protocol, the test split also validates
    c.data.val_fraction = 0.1  # otherwise: 10% of the training reviews validate (2,500) ...
    c.data.val_seed = 0  # ... chosen by np.random.default_rng(val_seed).permutation

    # model (configs/models.py): a model's own published Text settings where it has them (S4: 6 layers of width 256,
    # BatchNorm, prenorm); otherwise LRA text_classification/configs/base_tc_config.py: 4 layers, width 256
    # (emb_dim = qkv_dim), 4 heads, mlp_dim 1024, classifier MLP of width mlp_dim.
    c.model = models.get(name, "text")
    if not models.published(name, "text"):
        c.model.d_model, c.model.num_layers, c.model.mlp_ratio, c.model.head_hidden = 256, 4, 4, 1024
        if "num_heads" in c.model.mixer_kwargs:
            c.model.mixer_kwargs.num_heads = 4

    # optimisation: LRA's base config trains 20,000 steps of batch 32, Adam with weight decay 0.1 and lr
    # 0.05 x linear warmup (8,000 steps) x rsqrt decay, i.e. a peak of 0.05 / sqrt(8000) = 5.6e-4 at step 8,000. We
    # keep steps, batch, warmup and weight decay, with AdamW peaking at 5e-4 and a cosine decay. S4 takes its
    # published rates, weight decay and batch (16), and its 50,000 steps with 1,000 warmup steps
    # (state-spaces/s4 configs/experiment/lra/s4-lra-imdb.yaml: 32 epochs; configs/scheduler/cosine_warmup.yaml).
    c.batch_size, c.eval_batch_size = 32, 64
    c.num_train_steps, c.eval_every, c.checkpoint_every, c.log_every = 20_000, 1000, 1000, 100
    c.optimizer.lr, c.optimizer.warmup_steps, c.optimizer.weight_decay = 5e-4, 8000, 0.1
    if models.apply_published_training(c, name, "text"):
        c.num_train_steps, c.optimizer.warmup_steps = 50_000, 1000

    if preset == "small":
        c.data.seq_len = 256
        c.model.d_model, c.model.num_layers, c.model.mlp_ratio, c.model.head_hidden = 64, 2, 2, 64
        c.model.dropout = 0.1
        if "num_heads" in c.model.mixer_kwargs:
            c.model.mixer_kwargs.num_heads = 4
        c.batch_size, c.eval_batch_size = 32, 100
        c.num_train_steps, c.eval_every, c.checkpoint_every, c.log_every = 600, 200, 200, 20
        c.optimizer.lr, c.optimizer.warmup_steps, c.optimizer.weight_decay = 3e-3, 50, 0.01
    elif preset:
        raise ValueError(f"unknown preset {preset!r} in config argument {arg!r}; expected 'small' or nothing")
    c.lock()
    return c
