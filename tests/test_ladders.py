"""The run ladders (benchmarks/ladder.py, benchmarks/lra_evidence.py): every rung is a real train.py run, a finished
rung is skipped, records are kept for lra.results, and the results file has the table and the learning curves."""
import json
from pathlib import Path

import pytest

from benchmarks import ladder, lra_evidence
from benchmarks.ladder import Rung

TINY = {"data.num_train": 64, "data.num_val": 32, "data.num_test": 32, "num_train_steps": 4, "eval_every": 2,
        "checkpoint_every": 2, "log_every": 2, "batch_size": 8, "eval_batch_size": 32}


@pytest.fixture(scope="module")
def tiny_ladder(tmp_path_factory, monkeypatch_module):
    """A one-rung ladder (ListOps small preset, 4 steps) run through train.py, and its records."""
    root = tmp_path_factory.mktemp("ladder")
    rung = Rung("s4", "configs/lra_listops.py:s4,small", {**TINY, "data.data_dir": str(root / "data")})
    monkeypatch_module.setitem(lra_evidence.LADDERS, "tiny", {"title": "tiny", "rungs": [rung]})
    wall = ladder.run_rung(rung, root / "tiny")
    return root, rung, wall


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_a_rung_runs_train_py_once_and_is_skipped_when_finished(tiny_ladder, capsys):
    root, rung, wall = tiny_ladder
    assert wall is not None and ladder.finished(rung, root / "tiny")
    final = json.loads((root / "tiny" / "s4" / "final_eval.json").read_text())
    assert final["step"] in (2, 4)
    assert ladder.run_rung(rung, root / "tiny") is None  # not trained again
    assert "finished already" in capsys.readouterr().out


def test_validation_records_carry_the_wall_clock_and_curves_read_them(tiny_ladder):
    root, rung, _ = tiny_ladder
    curve = ladder.read_curve(root / "tiny" / "s4")
    assert curve["step"] == [2, 4]
    assert all(s is not None and s > 0 for s in curve["seconds"]) and curve["seconds"][0] <= curve["seconds"][1]
    assert all(0.0 <= a <= 1.0 for a in curve["accuracy"])


def test_results_file_has_the_table_the_figure_and_what_is_missing(tiny_ladder, tmp_path, monkeypatch):
    root, rung, _ = tiny_ladder
    pending = Rung("transformer", "configs/lra_listops.py:transformer,small", TINY)
    monkeypatch.setitem(lra_evidence.LADDERS, "tiny", {"title": "tiny", "rungs": [rung, pending]})
    monkeypatch.setattr(lra_evidence, "LADDERS", {"tiny": lra_evidence.LADDERS["tiny"]})
    out = tmp_path / "results" / "evidence.md"
    lra_evidence.write_results(root, tmp_path / "records", out)
    text = out.read_text()
    assert "| s4 | ListOps |" in text  # the lra.results table of the finished rung
    # its scale and differing settings, from the run's own config
    assert "small preset, reduced scale" in text and "`num_train_steps=4`" in text
    assert "Not finished yet: transformer" in text
    assert (out.parent / "lra_evidence_tiny.png").stat().st_size > 1000
    kept = tmp_path / "records" / "tiny" / "s4"
    assert sorted(p.name for p in kept.iterdir()) == sorted(ladder.RECORD_FILES)


def test_pretraining_rungs_are_judged_by_their_finetuning_phase(tmp_path):
    rung = Rung("s4_spt", "configs/lra_pathfinder.py:s4", {"pretrain": "masked_lm"})
    (tmp_path / "s4_spt" / "pretrain").mkdir(parents=True)
    (tmp_path / "s4_spt" / "pretrain" / "final_eval.json").write_text("{}")
    assert not ladder.finished(rung, tmp_path)  # the pretraining phase alone is not a finished rung
    (tmp_path / "s4_spt" / "finetune").mkdir()
    (tmp_path / "s4_spt" / "finetune" / "final_eval.json").write_text("{}")
    assert ladder.finished(rung, tmp_path)
    assert ladder.keep_records([rung], tmp_path, tmp_path / "rec") == []
    assert (tmp_path / "rec" / "s4_spt" / "final_eval.json").is_file()
    assert (tmp_path / "rec" / "s4_spt" / "pretrain" / "final_eval.json").is_file()


def test_every_evidence_rung_is_a_valid_config(tmp_path):
    """Each rung's config argument and overrides pass train.py's own config checks (no typo waits for its turn)."""
    from configs.base import load_file
    from lra import config_checks

    for name, spec in lra_evidence.LADDERS.items():
        for rung in spec["rungs"]:
            config = load_file(str(Path(ladder.REPO) / rung.config))
            config.unlock()
            for key, value in rung.overrides.items():
                node = config
                *parents, leaf = key.split(".")
                for p in parents:
                    node = node[p]
                assert leaf in node, f"{name}/{rung.name}: unknown key {key}"
                node[leaf] = type(node[leaf])(value)
            config_checks.validate(config)


def test_unknown_ladders_and_rungs_are_named():
    with pytest.raises(SystemExit, match="unknown ladder 'nope'"):
        lra_evidence.rungs_of("nope")
    with pytest.raises(SystemExit, match=r"unknown rung\(s\) \['s5'\]"):
        lra_evidence.rungs_of("pathfinder", ["s5"])


def test_rungs_run_in_the_order_named():
    names = [r.name for r in lra_evidence.rungs_of("pathfinder", ["aaren", "s4", "aaren", "combiner"])]
    assert names == ["aaren", "s4", "combiner"]
