"""Device prefetching of training batches (lra/data/prefetch.py, ``config.prefetch``): same batches in the same
order, the iterator position of the last batch handed out, errors and the end of the data reach the consumer, the
thread stops, and a run is bit-identical with and without it (one device and eight)."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import jax
import numpy as np
import pytest

from lra import sharding, trainer
from lra.data import pipeline
from lra.data.prefetch import DevicePrefetcher
from tests.lra import toy

REPO = Path(__file__).resolve().parents[2]


def _arrays(n=40):
    return {"inputs": np.arange(n * 3, dtype=np.int32).reshape(n, 3), "labels": np.arange(n, dtype=np.int32)}


def _threads():
    return [t for t in threading.enumerate() if t.name == "lra-prefetch"]


@pytest.mark.parametrize("size", [0, 1, 3])
def test_same_batches_and_states_as_the_iterator(size):
    plain = pipeline.TrainIterator(_arrays(), 4, seed=3)
    pre = DevicePrefetcher(pipeline.TrainIterator(_arrays(), 4, seed=3), lambda b: b, size)
    assert pre.get_state() == plain.get_state()
    for _ in range(25):  # 10 batches per epoch: crosses two epoch boundaries
        a, b = next(plain), next(pre)
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
        assert pre.get_state() == plain.get_state()  # where the training is, not where the thread is
    pre.close()
    assert not _threads()


def test_set_state_restarts_from_there():
    ref = pipeline.TrainIterator(_arrays(), 4, seed=1)
    expected = [next(ref)["labels"] for _ in range(12)]
    pre = DevicePrefetcher(pipeline.TrainIterator(_arrays(), 4, seed=1), lambda b: b, 3)
    for i in range(5):
        next(pre)
    state = pre.get_state()
    next(pre), next(pre)
    pre.set_state(state)  # drops the batches made ahead
    for i in range(5, 12):
        np.testing.assert_array_equal(next(pre)["labels"], expected[i])
    pre.close()


def test_places_with_the_mesh_sharding():
    mesh = sharding.make_mesh({"data": -1, "model": 1})
    pre = DevicePrefetcher(pipeline.TrainIterator(_arrays(), 8, seed=0), lambda b: sharding.shard_batch(b, mesh), 2)
    plain = pipeline.TrainIterator(_arrays(), 8, seed=0)
    for _ in range(3):
        batch = next(pre)
        assert isinstance(batch["inputs"], jax.Array)
        assert batch["inputs"].sharding == sharding.data_sharding(mesh)
        np.testing.assert_array_equal(np.asarray(batch["inputs"]), next(plain)["inputs"])
    pre.close()


class _Failing:
    """Batches 0, 1, ... then an error at batch ``fail_at`` (or the end of the data there)."""

    def __init__(self, fail_at, end=False):
        self.i, self.fail_at, self.end = 0, fail_at, end

    def __iter__(self):
        return self

    def __next__(self):
        if self.i == self.fail_at:
            if self.end:
                raise StopIteration
            raise OSError(f"disk gone at batch {self.i}")
        self.i += 1
        return self.i - 1


@pytest.mark.parametrize("size", [0, 2])
def test_error_in_the_iterator_reaches_the_consumer(size):
    pre = DevicePrefetcher(_Failing(3), lambda b: b, size)
    assert [next(pre) for _ in range(3)] == [0, 1, 2]  # the batches made before the error come first
    with pytest.raises(OSError, match="disk gone at batch 3"):
        next(pre)
    pre.close()
    assert not _threads()


def test_error_in_placing_reaches_the_consumer():
    def place(b):
        if b == 2:
            raise ValueError("cannot place batch 2")
        return b

    pre = DevicePrefetcher(_Failing(100), place, 4)
    assert next(pre) == 0 and next(pre) == 1
    with pytest.raises(ValueError, match="cannot place batch 2"):
        next(pre)
    with pytest.raises(ValueError, match="cannot place batch 2"):  # and stays failed
        next(pre)
    assert not _threads()


@pytest.mark.parametrize("size", [0, 2])
def test_end_of_the_data(size):
    pre = DevicePrefetcher(_Failing(4, end=True), lambda b: b, size)
    assert list(pre) == [0, 1, 2, 3]
    with pytest.raises(StopIteration):
        next(pre)
    assert not _threads()


def test_close_with_a_full_queue_stops_the_thread():
    pre = DevicePrefetcher(_Failing(10**9), lambda b: b, 2)
    assert next(pre) == 0
    assert len(_threads()) == 1  # now blocked on the full queue
    pre.close()
    pre.close()  # twice is fine
    assert not _threads()


def _run(tmp_path, name, **overrides):
    workdir = tmp_path / name
    result = trainer.train_and_evaluate(toy.config(**overrides), workdir)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    for r in records:  # wall-clock fields differ between any two runs
        for k in ("examples_per_s", "train_seconds"):
            r.pop(k, None)
    return result, records


def test_run_is_bit_identical_with_and_without_prefetch(tmp_path, monkeypatch):
    toy.register(monkeypatch)
    off = _run(tmp_path, "off", prefetch=0, **{"model.dropout": 0.1})
    on = _run(tmp_path, "on", prefetch=3, **{"model.dropout": 0.1})
    assert on == off  # exact: final metrics and every logged record
    assert not _threads()


def test_input_error_reaches_the_trainer(tmp_path, monkeypatch):
    toy.register(monkeypatch)
    original = pipeline.TrainIterator.__next__

    def failing(self):
        if self.batch == 3:
            raise OSError("the training data went away")
        return original(self)

    monkeypatch.setattr(pipeline.TrainIterator, "__next__", failing)
    with pytest.raises(OSError, match="the training data went away"):
        trainer.train_and_evaluate(toy.config(prefetch=2), tmp_path / "run")
    assert not _threads()


def test_prefetch_must_be_a_count():
    from lra import config_checks
    assert any("config.prefetch=-1" in p for p in config_checks.problems(toy.config(prefetch=-1)))
    assert not config_checks.problems(toy.config(prefetch=0))


EIGHT_DEVICES = r"""
import json, jax, numpy as np
import models
from lra import sharding, tasks, trainer
from lra.data import pipeline
from lra.data.prefetch import DevicePrefetcher
from tests.lra import toy

assert jax.device_count() == 8
tasks.TASKS["toy"] = toy._toy
config = toy.config(batch_size=16)
task = tasks.get_task(config)
train = task.load("train")
mesh = sharding.make_mesh({"data": 8, "model": 1})
steps = trainer.Steps(models.build(config.model, task), trainer.objectives.Objective("classify", task),
                      trainer.make_optimizer(config.optimizer, 10), mesh)
out = {}
for size in (0, 3):
    state = steps.init(jax.random.key(0))
    it = DevicePrefetcher(pipeline.TrainIterator(train, 16, seed=0), lambda b: sharding.shard_batch(b, mesh), size)
    losses = []
    for _ in range(6):
        batch = next(it)
        assert batch["inputs"].sharding == sharding.data_sharding(mesh)
        assert len(batch["inputs"].sharding.device_set) == 8
        state, sums = steps.train_step(state, batch, jax.random.key(1))
        losses.append(float(sums["loss"]))
    it.close()
    out[size] = {"losses": losses, "params": [np.asarray(x).tolist() for x in jax.tree_util.tree_leaves(state.params)]}
print(json.dumps({"same": out[0] == out[3], "losses": out[3]["losses"]}))
"""


def test_eight_devices_bit_identical():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same"], out
