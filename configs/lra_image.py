"""LRA Image: grayscale CIFAR-10 (10 classes) as a sequence of 1,024 pixels.

Reproduces: the LRA Image task (Tay et al. 2021, "Long Range Arena", table 1). Expected test accuracy of the
Transformer: 42.44 (LRA paper); S4: 88.65 (Gu et al. 2022, table 4). Data: the CIFAR-10 binary archive
(https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz) or the Python one, unpacked or not, in
``--config.data.data_dir`` (lra/data/image.py). Splits 45,000 / 5,000 / 10,000 as the official pipeline.

Settings (configs/published.py, sources pinned to a commit there): ``transformer`` is LRA's
``image/configs/cifar10/transformer_base.py`` (1 layer of width 128, 8 heads, qkv 64, MLP 128, CLS token, learned
positions, dropout 0.3 / attention 0.2, the 256 gray levels as tokens; 35,000 steps of batch 256, 5e-4 with 175
warmup steps and a cosine, no weight decay); ``s4`` is ``s4-lra-cifar.yaml`` (6 x 512, LayerNorm, post-norm,
dropout 0.1 tied over time, one normalised continuous channel; 180,000 steps of batch 50, cosine set for 200,000
after 1,000 warmup steps); every other mixer takes the Transformer's budget at a width within 10% of its parameter
count.

    python train.py --config=configs/lra_image.py:transformer --workdir=runs/image_transformer --config.data.data_dir=/data/cifar

The ``small`` preset (``:transformer,small``) keeps the full 1,024-pixel sequences and trains a 2-layer width-32
model for 300 steps of batch 32 with the project's own CPU recipe: a few minutes on a 2-core CPU, well above the 10%
chance rate but far below the full numbers.
"""
from configs import base, models, published


def get_config(arg: str = "transformer"):
    name, _, preset = arg.partition(",")
    c = base.get_config()
    c.task = "image"

    # data (lra/data/image.py)
    c.data.data_dir = "./lra_data"  # holds cifar-10-batches-bin/ (or -py/, or either .tar.gz)
    c.data.tokenize = True  # LRA: 256 tokens; S4: one channel (x / 255 - 0.481) / 0.239 (set by its settings)

    c.model = models.get(name)
    c.eval_batch_size = 256
    c.eval_every, c.checkpoint_every, c.log_every = 1750, 1750, 175
    c.settings_rule = published.apply(c, name, "image")

    if preset == "small":
        c.model = models.get(name)
        c.model.d_model, c.model.num_layers, c.model.mlp_ratio, c.model.head_hidden = 32, 2, 2, 32
        c.model.dropout = 0.0
        if "num_heads" in c.model.mixer_kwargs:
            c.model.mixer_kwargs.num_heads = 4
        c.optimizer = base.get_config().optimizer
        c.batch_size, c.eval_batch_size = 32, 100
        c.num_train_steps, c.eval_every, c.checkpoint_every, c.log_every = 300, 150, 150, 20
        c.optimizer.lr, c.optimizer.warmup_steps, c.optimizer.weight_decay = 3e-3, 30, 0.01
        c.settings_rule = "preset"
    elif preset:
        raise ValueError(f"unknown preset {preset!r} in config argument {arg!r}; expected 'small' or nothing")
    # masked self-pretraining regresses the normalised pixel values (SPT's image recipe); tokens predict the token.
    # Switching tokenize on the command line for a pretraining run needs --config.pretraining.target to match.
    c.pretraining.target = "auto" if c.data.tokenize else "l1"
    c.lock()
    return c
