"""The trainer: resume is exact, config mismatch is refused, optimizer groups, final evaluation written."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lra import trainer
from tests.lra import toy


def _metrics(workdir):
    rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        for key in toy.WALL_CLOCK_FIELDS:
            r.pop(key, None)
    return rows


def _latest_params(workdir, config):
    from lra import sharding, tasks
    import models
    task = tasks.get_task(config)
    mesh = sharding.make_mesh(config.mesh)
    steps = trainer.Steps(models.build(config.model, task), trainer.objectives.Objective("classify", task),
                          trainer.make_optimizer(config.optimizer, 6), mesh)
    state, meta = trainer.restore_checkpoint(trainer.make_manager(workdir / "checkpoints"),
                                             steps.init(jax.random.key(0)))
    return state, meta


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_identical_result(tmp_path, monkeypatch):
    toy.register(monkeypatch)
    config = toy.config()
    full = trainer.train_and_evaluate(config, tmp_path / "full")

    # Interrupt right after the `latest` checkpoint of step 4.
    real_save = trainer.save_checkpoint

    def save_then_die(manager, state, meta, score=None):
        real_save(manager, state, meta, score)
        if int(state.step) == 4:
            raise Interrupt()

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupt):
        trainer.train_and_evaluate(config, tmp_path / "resumed")
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    resumed = trainer.train_and_evaluate(config, tmp_path / "resumed")

    assert resumed == full
    assert _metrics(tmp_path / "resumed") == _metrics(tmp_path / "full")
    s_full, meta_full = _latest_params(tmp_path / "full", config)
    s_res, meta_res = _latest_params(tmp_path / "resumed", config)
    assert meta_full == meta_res
    for a, b in zip(jax.tree_util.tree_leaves(s_full), jax.tree_util.tree_leaves(s_res)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    final = json.loads((tmp_path / "full" / "final_eval.json").read_text())
    assert final["test_count"] == 20 and final["val_count"] == 24
    assert json.loads((tmp_path / "full" / "config.json").read_text())["model"]["d_model"] == 16


def test_metrics_past_the_checkpoint_are_redone_not_duplicated(tmp_path, monkeypatch):
    toy.register(monkeypatch)
    """Interrupted in step 6: after the best checkpoint of step 5, two steps past the `latest` checkpoint (4)."""
    config = toy.config(num_train_steps=6, checkpoint_every=4, log_every=1, eval_every=1)
    full = trainer.train_and_evaluate(config, tmp_path / "full")
    calls = {}

    def writer_write(self, step, split, metrics, _real=trainer.MetricWriter.write):
        _real(self, step, split, metrics)
        if split == "train" and step == 6 and not calls.get("died"):
            calls["died"] = True
            raise Interrupt()

    monkeypatch.setattr(trainer.MetricWriter, "write", writer_write)
    with pytest.raises(Interrupt):
        trainer.train_and_evaluate(config, tmp_path / "w")
    resumed = trainer.train_and_evaluate(config, tmp_path / "w")
    train_steps = [r["step"] for r in _metrics(tmp_path / "w") if r["split"] == "train"]
    assert train_steps == [1, 2, 3, 4, 5, 6]
    assert _metrics(tmp_path / "w") == _metrics(tmp_path / "full")
    assert resumed == full


def test_rerun_with_another_config_is_refused(tmp_path, monkeypatch):
    toy.register(monkeypatch)
    trainer.train_and_evaluate(toy.config(num_train_steps=2), tmp_path)
    with pytest.raises(ValueError, match=r"model.d_model: 16 -> 32"):
        trainer.train_and_evaluate(toy.config(num_train_steps=2, **{"model.d_model": 32}), tmp_path)


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path, monkeypatch):
    toy.register(monkeypatch)
    trainer.train_and_evaluate(toy.config(num_train_steps=2), tmp_path)
    (tmp_path / "config.json").unlink()  # bypass the config check: the checkpoint itself must be refused
    with pytest.raises(ValueError, match="does not match the model"):
        trainer.train_and_evaluate(toy.config(num_train_steps=4, **{"model.d_model": 32}), tmp_path)


def test_a_run_that_failed_before_its_first_checkpoint_can_be_rerun_with_a_fixed_config(tmp_path, monkeypatch):
    toy.register(monkeypatch)
    from lra import tasks
    broken = toy.config(num_train_steps=2, **{"data.num_train": 4})  # batch 8 > 4 examples: fails at start
    with pytest.raises(ValueError, match="larger than the training set"):
        trainer.train_and_evaluate(broken, tmp_path)
    result = trainer.train_and_evaluate(toy.config(num_train_steps=2), tmp_path)
    assert result["step"] == 2



class _SowingMixer(nn.Module):
    """A toy mixer with a non-parameter state collection (counts its training calls) and a sown auxiliary loss."""
    d_model: int
    causal: bool = False
    dtype: object = None

    @nn.compact
    def __call__(self, x, *, mask=None, deterministic=True):
        calls = self.variable("counter", "calls", lambda: jnp.zeros((), jnp.int32))
        if not deterministic and self.is_mutable_collection("counter"):
            calls.value += 1
        w = self.param("w", lambda *_: jnp.full((), 0.5))
        self.sow("losses", "penalty", 3.0 * w ** 2)
        return x * w


def test_state_collections_update_and_sown_losses_join_the_loss(monkeypatch):
    import models
    from lra import sharding, tasks
    toy.register(monkeypatch)
    monkeypatch.setitem(models.MIXERS, "sowing", _SowingMixer)
    config = toy.config(**{"model.mixer": "sowing", "model.num_layers": 2})
    config.unlock()
    config.model.mixer_kwargs = {}
    config.lock()
    task = tasks.get_task(config)
    steps = trainer.Steps(models.build(config.model, task), trainer.objectives.Objective("classify", task),
                          trainer.make_optimizer(config.optimizer, 6), sharding.make_mesh(config.mesh))
    state = steps.init(jax.random.key(0))
    assert set(state.model_state) == {"counter"}  # sown losses are not state
    data = {k: v[:8] for k, v in task.load("train").items()}
    new_state, sums = steps.train_step(state, sharding.shard_batch(data, steps.mesh), jax.random.key(1))
    np.testing.assert_allclose(float(sums["aux_loss"]), 2 * 3.0 * 0.5 ** 2, rtol=1e-6)  # two layers
    assert [int(c) for c in jax.tree_util.tree_leaves(new_state.model_state)] == [1, 1]
    eval_sums = steps.eval_step(new_state, sharding.shard_batch({**data, "weights": np.ones(8, np.float32)},
                                                                steps.mesh), jax.random.key(2))
    assert "aux_loss" not in eval_sums and np.isfinite(float(eval_sums["loss"]))
