"""A real multi-process run: two local processes (jax.distributed on 127.0.0.1, gloo CPU collectives), each with
one CPU device and its own shard of every batch, are preempted after a checkpoint, resume, finish and evaluate;
the results equal one process driving two devices on the same global batches."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--config=configs/lra_listops.py:transformer,small", "--config.data.num_train=160",
        "--config.data.num_val=37", "--config.data.num_test=29",  # not multiples of the batch: exact evaluation
        "--config.batch_size=16", "--config.eval_batch_size=16", "--config.num_train_steps=6",
        "--config.eval_every=3", "--config.checkpoint_every=3", "--config.log_every=3", "--config.model.d_model=16",
        "--config.model.num_layers=1", "--config.progress_bar=False"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), **extra)


def _two_processes(workdir, data_dir, die_after=0):
    port = _free_port()
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=1", LRA_TEST_DIE_AFTER=str(die_after))
    procs = [subprocess.Popen([sys.executable, "-m", "tests.lra.multiprocess_run", *ARGS,
                               f"--config.data.data_dir={data_dir}", f"--workdir={workdir}",
                               f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    return [p.returncode for p in procs], outs


def _records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_preempted_and_resumed_equal_one_process(tmp_path):
    data_dir = tmp_path / "data"
    single = subprocess.run([sys.executable, "train.py", *ARGS, f"--config.data.data_dir={data_dir}",
                             f"--workdir={tmp_path / 'single'}"], cwd=REPO, capture_output=True, text=True,
                            env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"), timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "mesh={'data': 2, 'model': 1}" in single.stdout

    codes, outs = _two_processes(tmp_path / "multi", data_dir, die_after=3)
    # both died right after the step-3 checkpoint (a process whose peer vanished first is aborted: code -6)
    assert all(c != 0 for c in codes) and 17 in codes, (codes, outs)
    saved = tmp_path / "multi" / "checkpoints"
    assert max(int(p.name) for p in saved.iterdir() if p.name.isdigit()) == 3
    assert not (tmp_path / "multi" / "final_eval.json").exists()
    codes, outs = _two_processes(tmp_path / "multi", data_dir)
    assert codes == [0, 0], [o[-3000:] for o in outs]
    assert "Resumed from" in outs[0] and "mesh={'data': 2, 'model': 1}" in outs[0]
    assert "task=" not in outs[1]  # logs and metrics come from process 0 only

    want = json.loads((tmp_path / "single" / "final_eval.json").read_text())
    got = json.loads((tmp_path / "multi" / "final_eval.json").read_text())
    assert got["val_count"] == 37 and got["test_count"] == 29  # every example once, none dropped
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == (v if isinstance(v, str) else pytest.approx(v, rel=1e-5, abs=1e-6)), k
    single_records, multi_records = _records(tmp_path / "single"), _records(tmp_path / "multi")
    assert [(r["step"], r["split"]) for r in multi_records] == [(r["step"], r["split"]) for r in single_records]
    for a, b in zip(single_records, multi_records):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, b)
