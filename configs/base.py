"""Defaults every run shares: optimizer, schedule, logging, checkpointing, mesh, seed.

Task configs start from ``get_config()`` here, fill in ``task``, ``data`` and ``model``, and return the config
locked, so that an override of a key that does not exist (``--config.optimizer.lrr=1``) is an error.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = ""
    c.settings_rule = ""  # what model and training follow: published | borrowed (S4D: S4's) | budget | preset | ""
    c.objective = "classify"  # classify | causal_lm | masked_lm (lra/objectives.py)
    c.init_from = ""  # workdir of a pretraining run: its encoder initialises this run's, the head is new
    c.pretrain = ""  # "" | causal_lm | masked_lm: run pretraining (workdir/pretrain), then finetuning (workdir/finetune)
    c.pretraining = ml_collections.ConfigDict()
    c.pretraining.mask_prob = 0.5  # masked_lm: each real position masked with this probability (SPT's default)
    c.pretraining.target = "auto"  # continuous inputs: classes (256 levels) | l1 (value); auto = classes; tokens: id
    c.pretraining.num_train_steps = 0  # steps of the pretraining phase; 0 = config.num_train_steps
    c.pretraining.lr = 0.0  # learning rate of the pretraining phase; 0 = config.optimizer.lr

    c.data = ml_collections.ConfigDict()  # filled by the task config
    c.model = ml_collections.ConfigDict()  # filled from configs/models.py

    c.batch_size = 32  # global batch (all devices, all processes)
    c.grad_accum_steps = 1  # micro-batches per step: gradients accumulated, one update (memory of batch / steps)
    c.eval_batch_size = 64
    c.num_train_steps = 5000
    c.log_every = 50
    c.eval_every = 500
    c.checkpoint_every = 500
    c.keep_checkpoints = 2  # latest checkpoints kept (>= 2: a damaged newest one falls back to the one before)
    # training batches built and placed on the devices ahead of the step by a background thread (lra/data/prefetch.py),
    # so that the host's input work overlaps the step; 0 = each batch built when the step asks for it
    c.prefetch = 2
    c.max_nonfinite_steps = 10  # stop after this many consecutive steps with a non-finite loss or gradient
    c.progress_bar = True
    # (first step, number of steps) traced with jax.profiler into <workdir>/profile (TensorBoard's Profile tab);
    # (0, 0) = off
    c.profile_steps = (0, 0)

    # Weights & Biases (pip install lra-mixers[wandb]): off unless a project is named. The same records as
    # metrics.jsonl, under "<split>/<metric>"; a resumed run continues the same W&B run (its id is kept in the
    # workdir). mode: "" = the library's default (WANDB_MODE), "online", "offline" (synced later with `wandb sync`).
    c.wandb = ml_collections.ConfigDict()
    c.wandb.project = ""
    c.wandb.entity = ""
    c.wandb.name = ""  # "" = the workdir's name
    c.wandb.mode = ""

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-3
    c.optimizer.ssm_lr = 1e-3  # learning rate of the "ssm" parameter group (no weight decay); <= 0: use lr
    c.optimizer.dt_group = "ssm"  # S4's step size ssm_log_dt: "ssm" (with A, B) | "base" (lr, no weight decay)
    c.optimizer.decay_bias_and_norm = False  # True: biases and norm scales get weight decay too (S4's, LRA's runs)
    c.optimizer.weight_decay = 0.05
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.98
    c.optimizer.eps = 1e-8
    c.optimizer.grad_clip = 1.0  # global norm; <= 0 disables clipping
    c.optimizer.schedule = "cosine"  # cosine | linear | constant | rsqrt, after a linear warmup
    c.optimizer.warmup_steps = 500
    c.optimizer.decay_steps = 0  # length of the decay after warmup (its horizon may pass the run's end); 0 = to the end
    c.optimizer.final_lr_ratio = 0.0

    c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})  # -1: all remaining devices
    return c


def load_file(spec: str):
    """``FILE[:ARG]`` or ``NAME[:ARG]`` (as ``--config=`` takes it, :func:`configs.resolve`) -> the config its
    ``get_config(ARG)`` returns; FileNotFoundError naming the file if there is none."""
    import importlib.util

    import configs

    path, _, arg = configs.resolve(spec).partition(":")
    module_spec = importlib.util.spec_from_file_location("_config_file", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def check_overrides(argv) -> None:
    """Fail fast, with the key named, on a ``--config.<key>=...`` override the config does not have.

    ``config_flags`` refuses such keys too (the config is locked) but only with a bare ``AttributeError`` from deep
    inside flag parsing; this check runs first and says which key and which config.
    """
    import sys

    spec_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    overrides = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    if spec_arg is None or not overrides:
        return
    try:
        config = load_file(spec_arg)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    for key in overrides:
        node = config
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                where = ".".join(parts[:i]) or "<top level>"
                known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                sys.exit(f"error: unknown config key {key!r} in --config.{key} (config {spec_arg}): {where!r} has no "
                         f"field {part!r}; known fields there: {known}")
            node = node[part]
