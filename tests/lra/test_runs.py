"""Reading a run back: one-call loader, evaluation without training equal to final_eval.json, refused overrides."""
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from lra import runs, trainer
from tests.lra import toy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    yield from toy.finished_run(tmp_path_factory, "run")


def test_evaluate_equals_final_eval_exactly(finished, monkeypatch):
    workdir, final = finished
    toy.register(monkeypatch)
    for split in ("val", "test"):
        got = runs.evaluate_run(workdir, "best", split)
        assert got["step"] == final["step"]
        for k in ("loss", "accuracy", "count"):
            assert got[f"{split}_{k}"] == final[f"{split}_{k}"], (split, k)
        assert json.loads((workdir / f"eval_best_{split}.json").read_text()) == got
    latest = runs.evaluate_run(workdir, "latest", "val")
    assert latest["step"] == 6


def test_load_run_gives_the_model_its_variables_and_config(finished, monkeypatch):
    workdir, final = finished
    toy.register(monkeypatch)
    run = runs.load_run(workdir)
    assert run.step == final["step"] and run.config.model.d_model == 16
    test = run.task.load("test")
    mask = np.arange(test["inputs"].shape[1])[None] < test["lengths"][:, None]
    logits = run.model.apply(run.variables, test["inputs"], mask=mask, deterministic=True)
    accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == test["labels"]))
    assert accuracy == pytest.approx(final["test_accuracy"], abs=1e-9)


def test_overrides_that_could_change_the_model_are_refused(finished, monkeypatch):
    workdir, final = finished
    toy.register(monkeypatch)
    with pytest.raises(ValueError, match=r"config.model.d_model cannot be overridden"):
        runs.evaluate_run(workdir, overrides={"model.d_model": "32"})
    with pytest.raises(ValueError, match=r"config.data.seq_len cannot be overridden"):
        runs.evaluate_run(workdir, overrides={"data.seq_len": "8"})
    other_batch = runs.evaluate_run(workdir, split="test", overrides={"eval_batch_size": "8"})
    assert other_batch["test_accuracy"] == pytest.approx(final["test_accuracy"], abs=1e-12)
    assert other_batch["overrides"] == {"eval_batch_size": "8"}


def test_a_directory_that_is_not_a_run_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a run directory"):
        runs.load_run(tmp_path)


@pytest.mark.slow
def test_the_evaluate_command_reproduces_a_small_runs_final_eval(tmp_path):
    """train.py then evaluate.py, as a user runs them (a shortened ListOps small preset)."""
    common = [f"--config.data.data_dir={tmp_path / 'data'}"]
    train = [sys.executable, "train.py", "--config=configs/lra_listops.py:transformer,small", f"--workdir={tmp_path / 'run'}",
             "--config.num_train_steps=20", "--config.eval_every=10", "--config.checkpoint_every=10",
             "--config.data.num_train=200", "--config.data.num_val=50", "--config.data.num_test=50",
             "--config.progress_bar=False", *common]
    done = subprocess.run(train, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    evaluate = [sys.executable, "evaluate.py", f"--workdir={tmp_path / 'run'}", "--split=test"]
    out = subprocess.run(evaluate, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    final = json.loads((tmp_path / "run" / "final_eval.json").read_text())
    got = json.loads((tmp_path / "run" / "eval_best_test.json").read_text())
    assert got["test_accuracy"] == final["test_accuracy"] and got["test_loss"] == final["test_loss"]
    assert f"accuracy {final['test_accuracy']:.4f}" in out.stdout
    refused = subprocess.run([*evaluate, "--config.model.num_layers=3"], cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode != 0 and "config.model.num_layers cannot be overridden" in refused.stderr
