"""Checkpoints: latest N + best kept by one manager, checksums written at save and checked at restore, fallback."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lra import checkpoints
from lra.steps import TrainState


def _state(step, value):
    return TrainState(step=jnp.asarray(step, jnp.int32), params={"w": jnp.full((4, 3), value, jnp.float32)},
                      opt_state={"mu": jnp.full((4, 3), -value, jnp.float32)}, model_state={})


def _save_all(directory, scores):
    manager = checkpoints.make_manager(directory, keep=2)
    for step in range(1, len(scores) + 1):
        checkpoints.save_checkpoint(manager, _state(step, float(step)), {"step": step}, score=scores[step - 1])
    return manager


def test_keeps_the_latest_two_and_the_best(tmp_path):
    manager = _save_all(tmp_path, [None, 0.9, None, 0.5, None, None])
    assert manager.all_steps() == [2, 5, 6]
    assert checkpoints.best_step(manager) == 2
    state, meta = checkpoints.restore_best(tmp_path, _state(0, 0.0))
    assert int(state.step) == 2 and meta == {"step": 2}
    np.testing.assert_array_equal(np.asarray(state.params["w"]), 2.0)


def test_checksums_cover_every_file_and_verify_names_what_is_wrong(tmp_path):
    manager = _save_all(tmp_path, [None])
    d = checkpoints.step_dir(manager, 1)
    recorded = json.loads((d / checkpoints.CHECKSUMS).read_text())["files"]
    on_disk = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and p.name != checkpoints.CHECKSUMS}
    assert set(recorded) == on_disk and "state/_METADATA" in recorded
    assert checkpoints.verify(d) == []
    (d / "stray").write_text("x")
    assert checkpoints.verify(d) == ["stray: not part of the checkpoint when saved"]
    (d / "stray").unlink()
    meta_file = d / "meta" / "metadata"
    meta_file.write_text(meta_file.read_text().replace("1", "7"))
    assert checkpoints.verify(d) == ["meta/metadata: SHA-256 differs from the one recorded when saved"]
    (d / checkpoints.CHECKSUMS).unlink()
    assert "lra_checksums.json is missing" in checkpoints.verify(d)[0]


def test_restore_refuses_a_damaged_checkpoint_and_the_newest_good_one_is_taken(tmp_path):
    manager = _save_all(tmp_path, [None, None, None])
    (checkpoints.step_dir(manager, 3) / "state" / "_METADATA").unlink()
    with pytest.raises(checkpoints.DamagedCheckpoint, match=r"checkpoints?.*3 is damaged: state/_METADATA: missing"):
        checkpoints.restore_checkpoint(manager, _state(0, 0.0), 3)
    with pytest.warns(UserWarning, match="falling back to step 2"):
        state, meta = checkpoints.restore_newest_good(manager, _state(0, 0.0), tmp_path / "damaged")
    assert int(state.step) == 2 and meta == {"step": 2}
    assert manager.all_steps() == [2] and [p.name.split("-")[0] for p in (tmp_path / "damaged").iterdir()] == ["3"]


def test_restore_raw_reads_another_runs_best_checkpoint_without_a_target(tmp_path):
    _save_all(tmp_path, [0.1, 0.7, 0.3])
    tree, meta, step = checkpoints.restore_raw(tmp_path)
    assert step == 2 and meta == {"step": 2}
    np.testing.assert_array_equal(np.asarray(tree["params"]["w"]), 2.0)
