"""Self-pretraining then finetuning through the trainer, on the tiny in-memory toy task."""
import json

import jax
import numpy as np
import pytest

import models
from lra import objectives, sharding, tasks, trainer
from tests.lra import toy


class Interrupt(Exception):
    pass


def _records(workdir, split):
    return [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


BATCHNORM = {"model.norm": "batch"}  # a state collection (batch_stats) that must carry over


def _pretrain_config(**kw):
    return toy.config(objective="masked_lm", num_train_steps=12, log_every=2, eval_every=4, checkpoint_every=4,
                      **{"optimizer.lr": 3e-3, **BATCHNORM, **kw})


def _finetune_state(config):
    """A freshly initialised finetuning state, as train_and_evaluate builds it."""
    task = tasks.get_task(config)
    obj = objectives.get(config, task)
    steps = trainer.Steps(models.build(config.model, obj.model_task), obj, trainer.make_optimizer(config.optimizer, 6),
                          sharding.make_mesh(config.mesh))
    return steps.init(jax.random.key(config.seed))


def _best_pretrained(workdir):
    from lra import checkpoints
    return checkpoints.restore_raw(workdir / "checkpoints")[0]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    toy.register(mp)
    workdir = tmp_path_factory.mktemp("pre")
    result = trainer.train_and_evaluate(_pretrain_config(), workdir)
    yield workdir, result
    mp.undo()


def test_masked_pretraining_loss_decreases_and_checkpoints_by_validation_loss(pretrained):
    workdir, result = pretrained
    train = _records(workdir, "train")
    assert train[-1]["loss"] < train[0]["loss"] - 0.2, (train[0]["loss"], train[-1]["loss"])
    val = _records(workdir, "val")
    assert result["objective"] == "masked_lm"
    assert result["best_val_loss"] == pytest.approx(min(v["loss"] for v in val))
    assert val[-1]["count"] > 0 and 0 < val[-1]["count"] < 24 * 16  # only masked real positions are scored


def test_finetuning_starts_from_exactly_the_pretrained_encoder_with_a_fresh_head(pretrained, monkeypatch):
    workdir, _ = pretrained
    toy.register(monkeypatch)
    config = toy.config(init_from=str(workdir), **BATCHNORM)
    fresh = _finetune_state(config)
    loaded = trainer.init_from_pretrained(fresh, workdir)
    pre = _best_pretrained(workdir)["params"]
    from lra import pretrained
    flat = pretrained._flat
    for path, leaf in flat(loaded.params).items():
        if path[0] == "encoder":
            want = np.asarray(flat(pre)[path])
            if path[-2:] == ("embed", "embedding"):
                assert want.shape[0] == leaf.shape[0] + 1  # the <mask> row is dropped
                want = want[:-1]
            np.testing.assert_array_equal(np.asarray(leaf), want)
        else:  # the classification head: as freshly initialised
            assert path[0] == "head"
            np.testing.assert_array_equal(np.asarray(leaf), np.asarray(flat(fresh.params)[path]))
    assert flat(pre)[("head", "kernel")].shape == (16, 9)  # the pretraining head (9 token ids) is not carried over
    stats = _best_pretrained(workdir)["model_state"]["batch_stats"]
    assert set(loaded.model_state) == {"batch_stats"}
    for path, leaf in flat(loaded.model_state["batch_stats"]).items():
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(flat(stats)[path]))
    assert any(np.any(np.asarray(v) != 0) for p, v in flat(stats).items() if p[-1] == "mean")  # really trained
    # and the full run with init_from trains from there
    result = trainer.train_and_evaluate(toy.config(init_from=str(workdir), num_train_steps=2, eval_every=2,
                                                   checkpoint_every=2, **BATCHNORM), workdir.parent / "fine")
    assert result["objective"] == "classify" and np.isfinite(result["test_loss"])


def test_a_mismatched_pretraining_checkpoint_fails_naming_the_parameters(pretrained, monkeypatch, tmp_path):
    workdir, _ = pretrained
    toy.register(monkeypatch)
    config = toy.config(init_from=str(workdir), **{"model.d_model": 8, "model.num_layers": 2, **BATCHNORM})
    with pytest.raises(ValueError) as err:
        trainer.train_and_evaluate(config, tmp_path / "bad")
    msg = str(err.value)
    assert "do not match this model's encoder" in msg
    assert "missing in the checkpoint: encoder/block1" in msg
    assert "shape differs: encoder/embedding/embed/embedding: pretrained (10, 16), this model (9, 8)" in msg
    with pytest.raises(ValueError, match="config.json not found"):
        trainer.train_and_evaluate(toy.config(init_from=str(tmp_path / "nowhere")), tmp_path / "bad2")


def test_causal_lm_needs_a_causal_model(monkeypatch, tmp_path):
    toy.register(monkeypatch)
    with pytest.raises(ValueError, match="needs a causal model"):
        trainer.train_and_evaluate(toy.config(objective="causal_lm"), tmp_path / "x")
    result = trainer.train_and_evaluate(toy.config(objective="causal_lm", **{"model.causal": True}), tmp_path / "c")
    assert result["objective"] == "causal_lm" and np.isfinite(result["best_val_loss"])


def test_interrupted_two_phase_run_resumes_in_the_right_phase(monkeypatch, tmp_path):
    toy.register(monkeypatch)
    config = toy.config(pretrain="masked_lm", num_train_steps=6, **{"pretraining.num_train_steps": 4})
    full = trainer.run(config, tmp_path / "full")

    real_save = trainer.save_checkpoint
    phases = []
    real_train = trainer.train_and_evaluate

    def tracking_train(cfg, wd):
        phases.append(wd.name)
        return real_train(cfg, wd)

    def save_then_die(manager, state, meta, score=None):  # die in the finetuning phase, after its step-4 checkpoint
        real_save(manager, state, meta, score)
        if "finetune" in str(manager.directory) and int(state.step) == 4:
            raise Interrupt()

    monkeypatch.setattr(trainer, "train_and_evaluate", tracking_train)
    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupt):
        trainer.run(config, tmp_path / "resumed")
    assert phases == ["pretrain", "finetune"]
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    phases.clear()
    resumed = trainer.run(config, tmp_path / "resumed")
    assert phases == ["finetune"]  # the finished pretraining phase is not redone
    assert resumed == full
    assert json.loads((tmp_path / "resumed" / "pretrain" / "final_eval.json").read_text())["objective"] == "masked_lm"
    pre_cfg = json.loads((tmp_path / "full" / "pretrain" / "config.json").read_text())
    assert pre_cfg["objective"] == "masked_lm" and pre_cfg["num_train_steps"] == 4
    fine_cfg = json.loads((tmp_path / "full" / "finetune" / "config.json").read_text())
    assert fine_cfg["init_from"] == str(tmp_path / "full" / "pretrain") and fine_cfg["objective"] == "classify"


SMALL_MIXER_KWARGS = {"s4": {"d_state": 8}, "s4d": {"d_state": 8}, "hydra": {"d_state": 8, "head_dim": 8},
                      "aaren": {"num_heads": 2}, "transformer": {"num_heads": 2}, "routing": {"num_heads": 2},
                      "combiner": {"num_heads": 2}, "deltanet": {"num_heads": 2}}


@pytest.mark.parametrize("mixer", sorted(models.MIXERS))
def test_every_mixer_pretrains_with_masked_lm_and_its_causal_mode_with_causal_lm(mixer, monkeypatch):
    from configs import models as model_configs
    toy.register(monkeypatch)
    m = model_configs.get(mixer)
    m.d_model, m.num_layers, m.mlp_ratio, m.head_hidden = 16, 1, 2, 16
    m.mixer_kwargs.update(SMALL_MIXER_KWARGS[mixer])
    kinds = [("causal_lm", True)] + ([] if m.causal else [("masked_lm", False)])  # aaren is causal only
    for objective, causal in kinds:
        config = toy.config(objective=objective)
        config.unlock()
        config.model = m.copy_and_resolve_references()
        config.model.causal = causal
        config.lock()
        task = tasks.get_task(config)
        obj = objectives.get(config, task)
        steps = trainer.Steps(models.build(config.model, obj.model_task, head=obj.head, num_outputs=obj.num_outputs),
                              obj, trainer.make_optimizer(config.optimizer, 4), sharding.make_mesh(config.mesh))
        state = steps.init(jax.random.key(0))
        batch = {k: v[:8] for k, v in task.load("train").items()}
        state, sums = steps.train_step(state, sharding.shard_batch(batch, steps.mesh), jax.random.key(1))
        assert np.isfinite(float(sums["loss"])) and float(sums["count"]) > 0, (mixer, objective)
        assert np.isfinite(float(sums["grad_norm"])) and float(sums["grad_norm"]) > 0, (mixer, objective)
