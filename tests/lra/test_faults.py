"""Fault injection: the failures that would otherwise cost a researcher days or a wrong number.

Non-finite steps (never applied, never checkpointed, a streak stops the run naming the step), damaged checkpoints
(reported by name, moved aside, the run falls back to the previous one and ends as an uninterrupted run would), two
runs on one workdir (the second refused; a lock left by a killed run taken over), invalid config values (refused
before any work), and resume exactness for any logging/checkpoint intervals.
"""
import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lra import checkpoints, run_dir, steps as steps_mod, trainer
from tests.lra import toy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Interrupt(Exception):
    pass


def _records(workdir, drop_speed=True):
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"metrics.jsonl holds bare {c}"))
            for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    if drop_speed:  # wall-clock fields differ between any two runs
        for r in rows:
            for key in toy.WALL_CLOCK_FIELDS:
                r.pop(key, None)
    return rows


def _killed_after_save_at(monkeypatch, config, workdir, step):
    """Run ``config`` in ``workdir`` and kill it right after its step-``step`` checkpoint is saved."""
    real_save = trainer.save_checkpoint

    def save_then_die(manager, state, meta, score=None):
        real_save(manager, state, meta, score)
        if int(state.step) == step:
            raise Interrupt()

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupt):
        trainer.train_and_evaluate(config, workdir)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)


def _poison_from(monkeypatch, first, last=None):
    """Train steps ``first``..``last`` (1-based; last=None: every later step) produce a NaN model output."""
    real = steps_mod.Steps._train_step

    def poisoned(self, state, batch, base_rng):
        real_apply = self._apply

        def apply(params, model_state, b, *, train, rng=None):
            out, new_state, aux = real_apply(params, model_state, b, train=train, rng=rng)
            step = state.step + 1
            bad = (step >= first) & ((step <= last) if last is not None else True)
            return out * jnp.where(bad, jnp.nan, 1.0), new_state, aux

        self._apply = apply
        try:
            return real(self, state, batch, base_rng)
        finally:
            del self._apply

    monkeypatch.setattr(steps_mod.Steps, "_train_step", poisoned)


def _all_checkpoint_states(workdir, config):
    from lra import objectives, sharding, tasks
    import models
    task = tasks.get_task(config)
    steps = trainer.Steps(models.build(config.model, task), objectives.Objective("classify", task),
                          trainer.make_optimizer(config.optimizer, config.num_train_steps),
                          sharding.make_mesh(config.mesh))
    target = steps.init(jax.random.key(0))
    manager = checkpoints.make_manager(workdir / "checkpoints")
    return {s: checkpoints.restore_checkpoint(manager, target, s)[0] for s in manager.all_steps()}


# ----------------------------------------------------------------------------------------------- non-finite steps

def test_a_nonfinite_streak_stops_the_run_naming_the_step_and_nothing_nonfinite_is_saved(tmp_path, monkeypatch):
    toy.register(monkeypatch)
    _poison_from(monkeypatch, first=5)
    config = toy.config(num_train_steps=12, max_nonfinite_steps=3, log_every=1, eval_every=2, checkpoint_every=2)
    with pytest.raises(trainer.NonFiniteTraining) as err:
        trainer.train_and_evaluate(config, tmp_path)
    message = str(err.value)
    assert "stopped at step 7" in message and "3 consecutive steps from step 5" in message
    assert str(tmp_path / "checkpoints" / "6") in message  # the last checkpoint written: it holds step 4's weights
    assert "config.optimizer.lr" in message and "grad_clip" in message
    assert not (tmp_path / "final_eval.json").exists()
    states = _all_checkpoint_states(tmp_path, config)
    assert set(states) >= {4, 6}
    for state in states.values():
        for leaf in jax.tree_util.tree_leaves((state.params, state.opt_state)):
            assert np.all(np.isfinite(np.asarray(leaf, np.float64)))
    # the skipped steps changed nothing: the step-6 checkpoint has step 4's parameters
    for a, b in zip(jax.tree_util.tree_leaves(states[4].params), jax.tree_util.tree_leaves(states[6].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    train = [r for r in _records(tmp_path) if r["split"] == "train"]
    assert [r["nonfinite_steps"] for r in train] == [0, 0, 0, 0, 1, 1, 1]
    assert all(r["loss"] is None and r["nonfinite"] == ["loss", "accuracy", "grad_norm", "aux_loss"]
               for r in train[4:])


def test_a_transient_nonfinite_step_is_skipped_and_the_run_goes_on(tmp_path, monkeypatch):
    toy.register(monkeypatch)
    _poison_from(monkeypatch, first=3, last=3)
    result = trainer.train_and_evaluate(toy.config(max_nonfinite_steps=2), tmp_path)
    assert np.isfinite(result["test_loss"])
    train = [r for r in _records(tmp_path) if r["split"] == "train"]
    assert [r["nonfinite_steps"] for r in train] == [0, 1, 0]  # windows of 2 steps: step 3 skipped
    assert np.isfinite(train[1]["loss"])  # the window's other step


def test_guard_off_applies_the_nonfinite_step(monkeypatch):
    """The guard is what keeps the parameters finite: without it the same poisoned step writes NaN into them."""
    from lra import objectives, sharding, tasks
    import models
    toy.register(monkeypatch)
    _poison_from(monkeypatch, first=1)
    config = toy.config()
    task = tasks.get_task(config)
    data = {k: v[:8] for k, v in task.load("train").items()}
    for guard, finite in ((True, True), (False, False)):
        steps = trainer.Steps(models.build(config.model, task), objectives.Objective("classify", task),
                              trainer.make_optimizer(config.optimizer, 6), sharding.make_mesh(config.mesh),
                              guard=guard)
        state, sums = steps.train_step(steps.init(jax.random.key(0)), sharding.shard_batch(data, steps.mesh),
                                       jax.random.key(1))
        assert float(sums["nonfinite"]) == 1.0 and int(state.step) == 1
        leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]
        assert all(np.all(np.isfinite(x)) for x in leaves) == finite


def test_an_evaluation_with_a_nonfinite_loss_is_never_the_best(tmp_path, monkeypatch):
    toy.register(monkeypatch)
    real_evaluate = trainer.evaluate
    calls = []

    def evaluate(steps, state, arrays, batch_size):
        m = real_evaluate(steps, state, arrays, batch_size)
        calls.append(int(state.step))
        if int(state.step) == 4 and len(calls) == 2:  # the step-4 validation: NaN loss, perfect accuracy
            m = {**m, "loss": float("nan"), "accuracy": 1.0}
        return m

    monkeypatch.setattr(trainer, "evaluate", evaluate)
    result = trainer.train_and_evaluate(toy.config(), tmp_path)
    assert result["step"] != 4 and result["best_val_accuracy"] < 1.0
    manager = checkpoints.make_manager(tmp_path / "checkpoints")
    assert manager.metrics(4) is None  # saved as a latest checkpoint, without a score
    val4 = [r for r in _records(tmp_path) if r["split"] == "val" and r["step"] == 4][0]
    assert val4["loss"] is None and val4["nonfinite"] == ["loss"]  # valid JSON, the bad value named


# ----------------------------------------------------------------------------------------------- damaged checkpoints

def _flip_byte(d):
    target = max((p for p in (d / "state").rglob("*") if p.is_file() and "/d/" in str(p)), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    return target


def _truncate(d):
    target = max((p for p in (d / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
    return target


def _delete_metadata(d):
    target = d / "state" / "_METADATA"
    target.unlink()
    return target


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    yield from toy.finished_run(tmp_path_factory, "full")


@pytest.mark.parametrize("damage", [_flip_byte, _truncate, _delete_metadata], ids=["flipped", "truncated", "metadata"])
def test_a_damaged_latest_checkpoint_is_reported_and_the_run_falls_back(damage, uninterrupted, tmp_path, monkeypatch,
                                                                       capsys):
    full_dir, full = uninterrupted
    toy.register(monkeypatch)
    _killed_after_save_at(monkeypatch, toy.config(), tmp_path, 4)
    damaged = damage(tmp_path / "checkpoints" / "4")
    rel = str(damaged.relative_to(tmp_path / "checkpoints" / "4"))
    with pytest.warns(UserWarning, match="checkpoints/4 is damaged") as warned:
        resumed = trainer.train_and_evaluate(toy.config(), tmp_path)
    message = str(warned[0].message)
    assert rel in message and "falling back to step 2" in message and "config" not in message
    assert "Resumed from" in capsys.readouterr().out
    moved = list((tmp_path / "damaged_checkpoints").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("4-")  # kept for inspection, out of the way
    assert resumed == full
    assert _records(tmp_path) == _records(full_dir)


def test_every_checkpoint_damaged_starts_afresh_and_still_ends_as_uninterrupted(uninterrupted, tmp_path, monkeypatch):
    full_dir, full = uninterrupted
    toy.register(monkeypatch)
    _killed_after_save_at(monkeypatch, toy.config(), tmp_path, 4)
    for d in (tmp_path / "checkpoints").iterdir():
        _delete_metadata(d)
    with pytest.warns(UserWarning, match="no older checkpoint: starting afresh"):
        resumed = trainer.train_and_evaluate(toy.config(), tmp_path)
    assert resumed == full and _records(tmp_path) == _records(full_dir)


# ----------------------------------------------------------------------------------------------- one run per workdir

def _holder(workdir):
    """A separate process that takes the workdir's lock and waits."""
    code = ("import sys, time; sys.path.insert(0, %r); from lra.run_dir import WorkdirLock; "
            "WorkdirLock(%r, enabled=True).acquire(); print('held', flush=True); time.sleep(120)") % (REPO, str(workdir))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_workdir_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path, monkeypatch, capsys):
    toy.register(monkeypatch)
    tmp_path.mkdir(exist_ok=True)
    proc = _holder(tmp_path)
    try:
        with pytest.raises(run_dir.WorkdirLocked, match=rf"in use by another run \(process {proc.pid} on host"):
            trainer.train_and_evaluate(toy.config(num_train_steps=2), tmp_path)
        assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "config.json").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the killed holder left its lock file behind; nobody holds it any more
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == proc.pid
    result = trainer.train_and_evaluate(toy.config(num_train_steps=2), tmp_path)
    assert f"taking over a lock left by process {proc.pid}" in capsys.readouterr().out
    assert result["step"] >= 1 and not (tmp_path / "run.lock").exists()  # released at the end


# ----------------------------------------------------------------------------------------------- invalid configs

@pytest.mark.parametrize("field,value,allowed", [
    ("num_train_steps", 0, ">= 1"), ("num_train_steps", -5, ">= 1"), ("eval_every", 0, ">= 1"),
    ("log_every", 0, ">= 1"), ("checkpoint_every", 0, ">= 1"), ("batch_size", 0, ">= 1"),
    ("eval_batch_size", -1, ">= 1"), ("grad_accum_steps", 0, ">= 1"), ("keep_checkpoints", 1, ">= 2"),
    ("max_nonfinite_steps", 0, ">= 1"), ("optimizer.lr", 0.0, "> 0"), ("optimizer.lr", float("nan"), "finite"),
    ("optimizer.b1", 1.0, "in [0, 1)"), ("optimizer.b2", -0.1, "in [0, 1)"), ("optimizer.eps", 0.0, "> 0"),
    ("optimizer.warmup_steps", -1, ">= 0"), ("optimizer.weight_decay", -0.01, ">= 0"),
    ("optimizer.final_lr_ratio", 1.5, "in [0, 1]"), ("pretraining.mask_prob", 0.0, "in (0, 1)"),
    ("model.d_model", 0, ">= 1"), ("model.num_layers", 0, ">= 1"), ("model.dropout", 1.0, "in [0, 1)"),
    ("model.mixer_kwargs.attention_dropout", -0.5, "in [0, 1)"), ("data.num_train", 0, ">= 1"),
    ("mesh.data", 0, ">= 1, or -1"),
])
def test_an_invalid_config_value_is_refused_before_any_work(field, value, allowed, tmp_path, monkeypatch):
    toy.register(monkeypatch)
    workdir = tmp_path / "w"
    with pytest.raises(ValueError, match=rf"config\.{field}=") as err:
        trainer.run(toy.config(**{field: value}), workdir)
    assert allowed in str(err.value)
    assert not workdir.exists()


def test_every_shipped_config_passes_the_checks():
    import importlib
    from lra import config_checks
    for task in ("listops", "text", "retrieval", "image", "pathfinder", "pathx"):
        module = importlib.import_module(f"configs.lra_{task}")
        for model in ("transformer", "s4", "s4d", "hydra", "aaren", "routing", "combiner", "deltanet"):
            for preset in ("", ",small"):
                config = module.get_config(model + preset)
                assert config_checks.problems(config) == [], (task, model + preset)


# ----------------------------------------------------------------------------------------------- resume exactness

@pytest.fixture(scope="module")
def odd_intervals(tmp_path_factory):
    """An uninterrupted run whose log window (3) divides neither the checkpoint (2) nor the eval (5) interval."""
    config = toy.config(num_train_steps=10, log_every=3, checkpoint_every=2, eval_every=5)
    for workdir, result in toy.finished_run(tmp_path_factory, "odd", config):
        yield config, workdir, result


@pytest.mark.parametrize("kill_at", [2, 4, 5, 8])
def test_resume_anywhere_is_exact_when_log_every_does_not_divide_checkpoint_every(kill_at, odd_intervals, tmp_path,
                                                                                   monkeypatch):
    config, full_dir, full = odd_intervals
    toy.register(monkeypatch)
    _killed_after_save_at(monkeypatch, config, tmp_path, kill_at)
    resumed = trainer.train_and_evaluate(config, tmp_path)
    assert resumed == full
    assert _records(tmp_path) == _records(full_dir)


def test_rerunning_a_finished_run_adds_no_duplicate_and_a_progress_bar_change_may_resume(odd_intervals, tmp_path,
                                                                                       monkeypatch):
    config, full_dir, full = odd_intervals
    toy.register(monkeypatch)
    _killed_after_save_at(monkeypatch, config, tmp_path, 6)
    with_bar = toy.config(num_train_steps=10, log_every=3, checkpoint_every=2, eval_every=5, progress_bar=True,
                          max_nonfinite_steps=4)
    assert trainer.train_and_evaluate(with_bar, tmp_path) == full  # fields that do not change the run may change
    assert json.loads((tmp_path / "config.json").read_text())["progress_bar"] is True
    again = trainer.train_and_evaluate(config, tmp_path)
    assert again == full
    records = _records(tmp_path)
    assert [r["split"] for r in records].count("test") == 1
    assert records == _records(full_dir)
