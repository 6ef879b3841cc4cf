"""A tiny in-memory task for trainer tests (registered on the fly; no files, no generation)."""
import ml_collections
import numpy as np

from configs import base, models as model_configs
from lra import tasks


def _toy(data) -> tasks.TaskSpec:
    def load(split):
        n = {"train": data.num_train, "val": 24, "test": 20}[split]
        r = np.random.default_rng({"train": 0, "val": 1, "test": 2}[split])
        lengths = r.integers(4, data.seq_len + 1, size=n).astype(np.int32)
        inputs = r.integers(1, 9, size=(n, data.seq_len)).astype(np.int32)
        inputs[np.arange(data.seq_len)[None] >= lengths[:, None]] = 0
        labels = (inputs[:, 0] % 3).astype(np.int32)  # learnable from the first token
        return {"inputs": inputs, "lengths": lengths, "labels": labels}

    return tasks.TaskSpec("toy", data.seq_len, 3, 9, load)


def register(monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "toy", _toy)


def config(**overrides) -> ml_collections.ConfigDict:
    c = base.get_config()
    c.task = "toy"
    c.data = ml_collections.ConfigDict({"seq_len": 16, "num_train": 64})
    c.model = model_configs.transformer()
    c.model.d_model, c.model.num_layers, c.model.mlp_ratio, c.model.head_hidden = 16, 1, 2, 16
    c.model.mixer_kwargs.num_heads = 2
    c.batch_size, c.eval_batch_size = 8, 16
    c.num_train_steps, c.log_every, c.eval_every, c.checkpoint_every = 6, 2, 2, 2
    c.optimizer.warmup_steps = 2
    c.progress_bar = False
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    c.lock()
    return c


# metric-record fields that measure wall-clock (throughput, elapsed time): they differ between any two runs
WALL_CLOCK_FIELDS = ("examples_per_s", "train_seconds")


def finished_run(tmp_path_factory, name: str, run_config=None):
    """For a module-scoped fixture (``yield from``): the toy task registered, ``run_config`` (default
    :func:`config`) trained to the end in a fresh directory; yields ``(workdir, final result)``."""
    import pytest

    from lra import trainer

    mp = pytest.MonkeyPatch()
    register(mp)
    try:
        workdir = tmp_path_factory.mktemp(name)
        yield workdir, trainer.train_and_evaluate(run_config if run_config is not None else config(), workdir)
    finally:
        mp.undo()
