"""Cloud storage paths: a ``gs://`` workdir stays a URL (never the local ``gs:/bucket/run``), and what the run
writes there keeps its guarantees through the object-store code path.

The store is fsspec's in-memory file system put behind epath's ``gs://`` backend: every read and write goes through
``epath``'s fsspec code path exactly as with a real bucket (no ``os.replace``, no ``flock``), without a network."""
import json
import os
import time

import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem

from lra import checkpoints, metrics, run_dir
from lra.data import files

RUN = "gs://bucket/run"


@pytest.fixture
def bucket(monkeypatch, tmp_path):
    """``gs://`` served from memory; the test runs in an empty directory so that a local ``gs:`` would show."""
    fs = MemoryFileSystem()
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    monkeypatch.setattr(epath.backend.fsspec_backend, "fs", lambda path: fs)
    monkeypatch.chdir(tmp_path)
    yield fs
    assert not os.path.exists(tmp_path / "gs:"), "a gs:// path was written to the local disk"
    fs.store.clear()


def test_urls_stay_urls_and_local_paths_stay_pathlib(bucket, tmp_path):
    p = files.as_path(RUN) / "config.json"
    assert str(p) == "gs://bucket/run/config.json" and not files.is_local(p)
    assert type(files.as_path(tmp_path)).__module__ == "pathlib" and files.is_local(tmp_path)
    files.write_text_atomic(p, "{}\n")
    assert "gs://bucket/run/config.json" in bucket.store and files.file_size(p) == 3


def test_an_object_is_written_whole_or_not_at_all(bucket):
    p = files.as_path(RUN) / "final_eval.json"
    files.write_text_atomic(p, "old\n")

    def fails_halfway(f):
        f.write("new, but only ha")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        files.atomic_write(p, fails_halfway, binary=False)
    assert p.read_text() == "old\n"  # nothing of the failed write was uploaded
    files.atomic_write(p, lambda f: f.write(b"\x00new"))
    assert p.read_bytes() == b"\x00new"
    assert sorted(bucket.store) == ["gs://bucket/run/final_eval.json"]  # no temporary objects


def test_data_paths_on_an_object_store_are_refused_naming_the_setting(bucket, tmp_path):
    with pytest.raises(ValueError, match=r"config\.data\.data_dir='gs://bucket/data' is not a local path"):
        files.require_local("gs://bucket/data", "config.data.data_dir")
    with pytest.raises(ValueError, match="gs://bucket/sets/listops is not|is not a local path"):
        files.publish_dir(tmp_path / "work", "gs://bucket/sets/listops")
    assert files.require_local(tmp_path, "x") == tmp_path


def test_config_and_run_info_on_a_bucket(bucket):
    import ml_collections
    config = ml_collections.ConfigDict({"seed": 1, "progress_bar": True})
    run_dir.write_config(config, RUN)
    assert json.loads(epath.Path(RUN, "config.json").read_text()) == {"seed": 1, "progress_bar": True}
    assert not run_dir.has_checkpoint(RUN)
    epath.Path(RUN, "checkpoints", "10").mkdir(parents=True)
    epath.Path(RUN, "checkpoints", "10", "x").write_text("x")
    assert run_dir.has_checkpoint(RUN)
    with pytest.raises(ValueError, match="seed: 1 -> 2"):
        run_dir.write_config(ml_collections.ConfigDict({"seed": 2, "progress_bar": True}), RUN)
    run_dir.write_run_info(RUN, {"device": "cpu"})
    assert run_dir.read_run_info(RUN) == {"device": "cpu"}


def test_lock_object_holds_refuses_refreshes_and_is_taken_over_when_stale(bucket, monkeypatch):
    monkeypatch.setattr(run_dir, "SETTLE_S", 0.0)
    monkeypatch.setattr(run_dir, "HEARTBEAT_S", 0.05)
    lock_path = epath.Path(RUN, "run.lock")
    first = run_dir.WorkdirLock(RUN, enabled=True).acquire()
    held = json.loads(lock_path.read_text())
    assert held["state"] == "held" and held["pid"] == os.getpid() and held["token"] == first.token
    with pytest.raises(run_dir.WorkdirLocked, match=rf"in use by another run \(process {os.getpid()} on host"):
        run_dir.WorkdirLock(RUN, enabled=True).acquire()
    time.sleep(0.3)
    assert json.loads(lock_path.read_text())["heartbeat"] > held["heartbeat"]  # the holder keeps it fresh
    first.release()
    assert not lock_path.exists()

    # a lock left by a run on another host: refused while fresh, taken over once stale
    left = {"state": "held", "pid": 1, "host": "elsewhere", "started": "then", "token": "t", "heartbeat": time.time()}
    files.write_text_atomic(lock_path, json.dumps(left))
    with pytest.raises(run_dir.WorkdirLocked, match="host elsewhere"):
        run_dir.WorkdirLock(RUN, enabled=True).acquire()
    files.write_text_atomic(lock_path, json.dumps({**left, "heartbeat": time.time() - run_dir.STALE_S - 1}))
    second = run_dir.WorkdirLock(RUN, enabled=True).acquire()
    assert second.took_over["host"] == "elsewhere" and json.loads(lock_path.read_text())["token"] == second.token
    second.release()

    # a lock whose writer on this host is dead is taken over at once
    files.write_text_atomic(lock_path, json.dumps({**left, "host": __import__("socket").gethostname(),
                                                   "pid": 2 ** 22 + 12345}))
    third = run_dir.WorkdirLock(RUN, enabled=True).acquire()
    assert third.took_over is not None
    third.release()


def test_lock_lost_to_a_simultaneous_run_is_refused(bucket, monkeypatch):
    other = {"state": "held", "pid": 7, "host": "rival", "token": "theirs", "heartbeat": time.time()}

    def settle(_):  # the rival's lock lands between our write and our read-back
        files.write_text_atomic(epath.Path(RUN, "run.lock"), json.dumps(other))

    monkeypatch.setattr(run_dir.time, "sleep", settle)
    with pytest.raises(run_dir.WorkdirLocked, match="another run starting at the same time .*host rival"):
        run_dir.WorkdirLock(RUN, enabled=True).acquire()


def test_metrics_on_a_bucket_are_rewritten_whole(bucket, monkeypatch):
    import tensorboardX

    scalars = []

    class Events:  # TensorBoard's own gs:// writer needs google-cloud-storage; its part is not under test here
        def __init__(self, logdir):
            assert logdir == RUN + "/tb"

        def add_scalar(self, *a):
            scalars.append(a)

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(tensorboardX, "SummaryWriter", Events)
    w = metrics.MetricWriter(RUN, enabled=True)
    for step in (1, 2, 3):
        w.write(step, "train", {"loss": 1.0 / step})
    w.write(3, "test", {"accuracy": float("nan")})
    rows = metrics.read(RUN + "/metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 3] and rows[-1]["nonfinite"] == ["accuracy"]
    resumed = metrics.MetricWriter(RUN, enabled=True)  # a resumed run: keeps what is there, forgets later steps
    resumed.truncate_after(2)
    resumed.write(3, "train", {"loss": 0.25})
    assert [(r["step"], r["loss"]) for r in metrics.read(RUN + "/metrics.jsonl")] == [(1, 1.0), (2, 0.5), (3, 0.25)]
    assert len(scalars) == 5


def test_checkpoint_checksums_and_verification_on_a_bucket(bucket):
    d = epath.Path(RUN, "checkpoints", "4")
    (d / "state").mkdir(parents=True)
    (d / "state" / "array").write_bytes(b"\x01" * 100)
    (d / "meta").mkdir()
    (d / "meta" / "meta.json").write_text("{}")
    checkpoints.write_checksums(d)
    assert checkpoints.verify(d) == []
    recorded = json.loads((d / checkpoints.CHECKSUMS).read_text())["files"]
    assert sorted(recorded) == ["meta/meta.json", "state/array"] and recorded["state/array"]["size"] == 100
    (d / "state" / "array").write_bytes(b"\x01" * 99 + b"\x02")
    assert checkpoints.verify(d) == ["state/array: SHA-256 differs from the one recorded when saved"]
    (d / "state" / "array").unlink()
    assert checkpoints.verify(d) == ["state/array: missing"]


@pytest.mark.parametrize("task", ["listops", "text", "retrieval", "image", "pathfinder"])
def test_every_task_refuses_a_bucket_data_dir_naming_the_setting(bucket, task):
    from lra import tasks
    from lra.data import prepare

    config = prepare.load_config(prepare.CONFIGS[task])
    config.data.data_dir = "gs://bucket/lra_data"
    if "source" in config.data:
        config.data.source = "release"
    with pytest.raises(ValueError, match=r"config\.data\.data_dir='gs://bucket/lra_data' is not a local path"):
        tasks.get_task(config).load("train")
