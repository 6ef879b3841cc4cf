"""LRA Image: grayscale CIFAR-10 (10 classes) as a sequence of 1,024 pixels.

Reproduces: the LRA Image task (Tay et al. 2021, "Long Range Arena", table 1). Expected test accuracy of the
Transformer: 42.44 (LRA paper); S4: 88.65 (Gu et al. 2022, table 4). Data: the CIFAR-10 binary archive
(https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz) or the Python one, unpacked or not, in
``--config.data.data_dir`` (lra/data/image.py). Splits 45,000 / 5,000 / 10,000 as the official pipeline.

Inputs (``--config.data.tokenize``): models without published settings read the 256 gray levels as tokens through an
embedding, as LRA's Transformers did (vocabulary 256, learned positions); S4/S4D read one continuous channel
normalised with S4's mean and std through a linear encoder (S4's ``encoder: linear``).

    python train.py --config=configs/lra_image.py:transformer --workdir=runs/image_transformer --config.data.data_dir=/data/cifar

The ``small`` preset (``:transformer,small``) keeps the full 1,024-pixel sequences (no downsampling, so the task is
the real one) and trains a 2-layer width-32 model for 300 steps of batch 32: a few minutes on a 2-core CPU for the
Transformer (not timed on the real data; each evaluation reads 5,000 images), well above the 10% chance rate but far
below the full numbers. Full size: 35,000 steps of batch 256 (S4: 180,000 steps of batch 50); hours on a GPU (not
measured here).
"""
from configs import base, models


def get_config(arg: str = "transformer"):
    name, _, preset = arg.partition(",")
    c = base.get_config()
    c.task = "image"

    # data (lra/data/image.py)
    c.data.data_dir = "./lra_data"  # holds cifar-10-batches-bin/ (or -py/, or either .tar.gz)
    c.data.tokenize = not models.published(name, "image")  # LRA: 256 tokens; S4: (x / 255 - 0.481) / 0.239
    # masked self-pretraining regresses the normalised pixel values (SPT's image recipe); tokens predict the token.
    # Switching tokenize on the command line for a pretraining run needs --config.pretraining.target to match.
    c.pretraining.target = "auto" if c.data.tokenize else "l1"

    # model (configs/models.py): a model's own published Image settings where it has them (S4: 6 layers of width 512,
    # LayerNorm, postnorm, dropout 0.1); otherwise LRA image/configs/cifar10/base_cifar10_config.py: 1 layer, width 32
    # (emb_dim = qkv_dim), 1 head, mlp_dim 64, dropout 0.3, attention dropout 0.2, learned positions, classifier MLP
    # of width mlp_dim.
    c.model = models.get(name, "image")
    if not models.published(name, "image"):
        c.model.d_model, c.model.num_layers, c.model.mlp_ratio, c.model.head_hidden = 32, 1, 2, 64
        c.model.dropout = 0.3
        if "num_heads" in c.model.mixer_kwargs:
            c.model.mixer_kwargs.num_heads = 1
        if "attention_dropout" in c.model.mixer_kwargs:
            c.model.mixer_kwargs.attention_dropout = 0.2

    # optimisation: LRA's base config trains 200 epochs of batch 256 (35,000 steps), lr 5e-4 with one epoch of
    # linear warmup (175 steps) and a cosine decay, no weight decay, no gradient clipping; we keep all of that
    # (AdamW with weight decay 0 = Adam). S4 takes its published rates, weight decay and batch (50), and its 200
    # epochs = 180,000 steps (state-spaces/s4 configs/experiment/lra/s4-lra-cifar.yaml, whose cosine is set for
    # 200,000) with 1,000 warmup steps (configs/scheduler/cosine_warmup.yaml).
    c.batch_size, c.eval_batch_size = 256, 256
    c.num_train_steps, c.eval_every, c.checkpoint_every, c.log_every = 35_000, 1750, 1750, 175
    c.optimizer.lr, c.optimizer.warmup_steps, c.optimizer.weight_decay = 5e-4, 175, 0.0
    if models.apply_published_training(c, name, "image"):
        c.num_train_steps, c.optimizer.warmup_steps = 180_000, 1000
    else:
        c.optimizer.grad_clip = 0.0

    if preset == "small":
        c.model.d_model, c.model.num_layers, c.model.mlp_ratio, c.model.head_hidden = 32, 2, 2, 32
        c.model.dropout = 0.0
        if "num_heads" in c.model.mixer_kwargs:
            c.model.mixer_kwargs.num_heads = 4
        if "attention_dropout" in c.model.mixer_kwargs:
            c.model.mixer_kwargs.attention_dropout = 0.0
        c.batch_size, c.eval_batch_size = 32, 100
        c.num_train_steps, c.eval_every, c.checkpoint_every, c.log_every = 300, 150, 150, 20
        c.optimizer.lr, c.optimizer.warmup_steps, c.optimizer.weight_decay = 3e-3, 30, 0.01
        c.optimizer.grad_clip = 1.0
    elif preset:
        raise ValueError(f"unknown preset {preset!r} in config argument {arg!r}; expected 'small' or nothing")
    c.lock()
    return c
