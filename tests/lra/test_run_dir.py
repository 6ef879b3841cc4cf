"""The run directory: config.json (another run's config refused, run-independent fields allowed), the lock."""
import json
import os
import socket

import pytest

from lra import run_dir
from tests.lra import toy


def _checkpointed(workdir):
    (workdir / "checkpoints" / "4").mkdir(parents=True)


def test_another_config_is_refused_naming_the_fields_but_run_independent_fields_may_change(tmp_path):
    run_dir.write_config(toy.config(), tmp_path)
    _checkpointed(tmp_path)
    with pytest.raises(ValueError, match=r"model.d_model: 16 -> 32, optimizer.lr: 0.001 -> 0.002"):
        run_dir.write_config(toy.config(**{"model.d_model": 32, "optimizer.lr": 0.002}), tmp_path)
    run_dir.write_config(toy.config(progress_bar=True, max_nonfinite_steps=3), tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["progress_bar"] is True and saved["max_nonfinite_steps"] == 3


def test_a_workdir_without_a_checkpoint_takes_the_new_config(tmp_path):
    run_dir.write_config(toy.config(), tmp_path)
    run_dir.write_config(toy.config(**{"model.d_model": 32}), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model"]["d_model"] == 32


def test_the_lock_is_exclusive_and_released(tmp_path):
    with run_dir.WorkdirLock(tmp_path, enabled=True):
        holder = json.loads((tmp_path / "run.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(run_dir.WorkdirLocked, match=f"process {os.getpid()}"):
            run_dir.WorkdirLock(tmp_path, enabled=True).acquire()
    assert not (tmp_path / "run.lock").exists()
    with run_dir.WorkdirLock(tmp_path, enabled=True) as lock:
        assert lock.took_over is None


def test_a_lock_file_nobody_holds_is_taken_over(tmp_path, capsys):
    (tmp_path / "run.lock").write_text(json.dumps({"state": "held", "pid": 999999, "host": "gone",
                                                   "started": "2026-01-01T00:00:00"}))
    with run_dir.WorkdirLock(tmp_path, enabled=True) as lock:
        assert lock.took_over["pid"] == 999999
    assert "taking over a lock left by process 999999 on host gone" in capsys.readouterr().out


def test_only_process_0_takes_the_lock(tmp_path):
    with run_dir.WorkdirLock(tmp_path, enabled=False):
        assert not (tmp_path / "run.lock").exists()
