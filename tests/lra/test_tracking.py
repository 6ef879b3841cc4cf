"""Experiment tracking and profiling: the optional Weights & Biases run carries exactly the records of
metrics.jsonl (checked offline, WANDB_MODE=offline), and ``profile_steps`` leaves a jax.profiler trace of a tiny run
in the workdir. Both are off by default and neither changes what a run computes."""
import json

import pytest

from lra import config_checks, metrics, run_dir, trainer
from tests.lra import toy


@pytest.fixture(autouse=True)
def _toy_task(monkeypatch):
    toy.register(monkeypatch)


def test_off_by_default_and_run_independent():
    c = toy.config()
    assert c.wandb.project == "" and tuple(c.profile_steps) == (0, 0)
    assert {"profile_steps", "wandb.project", "wandb.mode"} <= set(run_dir.RUN_INDEPENDENT)
    assert config_checks.problems(c) == []


@pytest.mark.parametrize("field,value,named", [
    ("profile_steps", (3, 0), "config.profile_steps=(3, 0)"),
    ("profile_steps", (-1, 2), "config.profile_steps=(-1, 2)"),
    ("profile_steps", (0, 2), "config.profile_steps=(0, 2)"),
    ("wandb.mode", "offlien", "config.wandb.mode='offlien'"),
])
def test_bad_tracking_settings_are_named(field, value, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        config_checks.validate(toy.config(**{field: value}))


@pytest.mark.slow
def test_profile_trace_of_a_tiny_run_is_written_into_the_workdir_and_changes_nothing(tmp_path):
    import chex

    from lra import checkpoints

    traced = trainer.train_and_evaluate(toy.config(profile_steps=(2, 2), num_train_steps=4), tmp_path / "traced")
    traces = list((tmp_path / "traced" / "profile" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0, list((tmp_path / "traced").rglob("*"))
    plain = trainer.train_and_evaluate(toy.config(num_train_steps=4), tmp_path / "plain")
    assert traced == plain and not (tmp_path / "plain" / "profile").exists()
    a, _, step_a = checkpoints.restore_raw(tmp_path / "traced" / "checkpoints", step=4)
    b, _, step_b = checkpoints.restore_raw(tmp_path / "plain" / "checkpoints", step=4)
    assert step_a == step_b == 4
    chex.assert_trees_all_equal(a, b)  # every parameter and optimizer moment bit for bit


@pytest.mark.slow
def test_wandb_offline_run_holds_the_same_metrics_as_metrics_jsonl(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")  # in the test extra: CI has it
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged = []
    real_init = wandb.init

    def init(**kw):
        run = real_init(**kw)
        real_log = run.log

        def log(data, step=None, **more):
            logged.append((step, dict(data)))
            return real_log(data, step=step, **more)

        run.log = log
        return run

    monkeypatch.setattr(wandb, "init", init)
    workdir = tmp_path / "run"
    trainer.train_and_evaluate(toy.config(**{"wandb.project": "lra-test"}), workdir)
    records = metrics.read(workdir / "metrics.jsonl")
    want = [(r["step"], {f"{r['split']}/{k}": v for k, v in r.items() if k not in ("step", "split", "nonfinite")})
            for r in records]
    assert logged == want and len(want) >= 4
    run_id = (workdir / metrics.WANDB_ID).read_text().strip()
    offline = list((workdir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb")), list((workdir / "wandb").iterdir())
    config = json.loads((workdir / "config.json").read_text())
    assert config["wandb"]["project"] == "lra-test"
