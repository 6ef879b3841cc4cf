"""The command line: an unknown config key or preset fails with a clear message before any work starts."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_train(*args, cwd=REPO):
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("override,named", [
    ("--config.model.bogus=1", "'model' has no field 'bogus'"),
    ("--config.optimizer.lrr=0.1", "'optimizer' has no field 'lrr'"),
    ("--config.modle.d_model=8", "'<top level>' has no field 'modle'"),
])
def test_unknown_config_key_fails_before_any_work(tmp_path, override, named):
    workdir = tmp_path / "wd"
    proc = run_train("--config=configs/lra_listops.py:transformer,small", override, f"--workdir={workdir}")
    assert proc.returncode != 0
    assert named in proc.stderr
    assert not workdir.exists()  # nothing was started


def test_unknown_model_and_preset_are_named(tmp_path):
    proc = run_train("--config=configs/lra_listops.py:transfomer", f"--workdir={tmp_path / 'a'}")
    assert proc.returncode != 0 and "unknown model 'transfomer'" in proc.stderr
    proc = run_train("--config=configs/lra_listops.py:transformer,tiny", f"--workdir={tmp_path / 'b'}")
    assert proc.returncode != 0 and "unknown preset 'tiny'" in proc.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_config_is_locked():
    from configs import lra_listops
    config = lra_listops.get_config("transformer,small")
    with pytest.raises(AttributeError):
        config.model.bogus = 1
