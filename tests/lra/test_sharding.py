"""Sharding over a data axis: 8 simulated CPU devices give the same training and evaluation as 1 device."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lra import sharding

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("norm", ["batch", pytest.param("layer", marks=pytest.mark.slow)])
def test_eight_devices_match_one(norm):
    """BatchNorm is the demanding case: its statistics must span the whole batch across devices."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "tests.lra.sharding_check", norm], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for a, b in zip(out["loss_1"], out["loss_8"]):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    assert out["param_diff"] < 1e-6  # after 3 AdamW steps at lr 1e-3
    evals = out["eval"]
    for batch in ("8", "16"):
        ref = evals["1"][batch]
        assert ref["count"] == 24.0
        for n in ("2", "8"):
            assert evals[n][batch]["count"] == 24.0
            assert evals[n][batch]["accuracy"] == ref["accuracy"]
            assert evals[n][batch]["loss"] == pytest.approx(ref["loss"], rel=1e-6)


def test_mesh_from_config():
    import jax
    mesh = sharding.make_mesh({"data": -1, "model": 1})
    assert mesh.shape == {"data": jax.device_count(), "model": 1}
    with pytest.raises(ValueError, match="unknown mesh axes"):
        sharding.make_mesh({"data": -1, "pipeline": 1})
    with pytest.raises(ValueError, match="needs 2 devices"):
        sharding.make_mesh({"data": 2, "model": 1}, devices=jax.devices()[:1])
