"""lra.results: the LRA table and the runs table from run directories, with the scale of every number."""
import json

import pytest

from configs import lra_listops, lra_pathfinder
from lra import results


def _run(root, name, config, test_accuracy, *, objective="classify", params=1234, seconds=90.0, step=None):
    d = root / name
    d.mkdir(parents=True)
    cfg = json.loads(config.to_json_best_effort())
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "final_eval.json").write_text(json.dumps({"step": step or cfg["num_train_steps"], "objective": objective,
                                                   "test_accuracy": test_accuracy, "val_accuracy": 0.5}))
    (d / "run_info.json").write_text(json.dumps({"num_params": params, "train_seconds": seconds,
                                                 "device": "1 x cpu (2 cores)"}))
    return d


def _modified(config, **fields):
    config.unlock()
    for k, v in fields.items():
        node = config
        *parents, last = k.split(".")
        for p in parents:
            node = node[p]
        node[last] = v
    return config


@pytest.fixture
def runs(tmp_path):
    _run(tmp_path, "lo_tr_small", _modified(lra_listops.get_config("transformer,small"),
                                            **{"data.data_dir": "/elsewhere", "eval_every": 7}), 0.332)
    _run(tmp_path, "lo_s4_full", lra_listops.get_config("s4"), 0.5912, params=599_434, seconds=7200.0)
    _run(tmp_path, "pf_s4_reduced", _modified(lra_pathfinder.get_config("s4"), **{"data.num_images": 20_000}), 0.871)
    _run(tmp_path, "pf_tr_modified", _modified(lra_pathfinder.get_config("transformer"), **{"model.d_model": 64}),
         0.5)
    spt = tmp_path / "spt"
    _run(spt, "pretrain", _modified(lra_listops.get_config("transformer,small"), objective="masked_lm"), 0.0,
         objective="masked_lm")
    _run(spt, "finetune", _modified(lra_listops.get_config("transformer,small"), init_from=str(spt / "pretrain")),
         0.366)
    return tmp_path


def test_scales_are_recognised(runs):
    read = {r["dir"].split("/")[-1]: r for r in map(results.read_run, results.find_runs([runs]))
            if r is not None}
    assert read["lo_tr_small"]["scale"] == "small preset"  # data_dir and eval_every do not change a run
    assert read["lo_s4_full"]["scale"] == "full" and read["lo_s4_full"]["published"] == 59.60
    assert read["pf_s4_reduced"]["scale"] == "reduced set"
    assert read["pf_s4_reduced"]["differs"] == ["data.num_images"]
    assert read["pf_tr_modified"]["scale"] == "modified" and read["pf_tr_modified"]["differs"] == ["model.d_model"]
    assert read["finetune"]["model"] == "transformer+SPT"
    assert "pretrain" not in read  # a pretraining phase has no accuracy to report


def test_the_tables(runs, tmp_path):
    md_path, json_path = tmp_path / "t.md", tmp_path / "t.json"
    assert results.main([str(runs / "lo_*"), str(runs / "pf_*"), str(runs / "spt"), "--md", str(md_path),
                         "--json", str(json_path)]) == 0
    md = md_path.read_text()
    assert md.startswith(f"Made by `python -m lra.results {runs}/lo_* {runs}/pf_* {runs}/spt`.")
    lines = md.splitlines()
    assert "| model | ListOps | Pathfinder | average |" in lines
    assert "| transformer | 33.20 [36.37] (small preset) | 50.00 [71.40] (modified) | 41.60 |" in lines
    assert "| s4 | 59.12 [59.60] (full) | 87.10 [94.20] (reduced set) | 73.11 |" in lines
    assert "| transformer+SPT | 36.60 [36.37] (small preset) | - | 36.60 |" in lines
    s4_row = [l for l in lines if l.startswith("| s4 | ListOps | full")][0]
    assert "| 599,434 | 76800 / 76800 | 2.0 h | 1 x cpu (2 cores) |" in s4_row and "best step / steps" in md
    data = json.loads(json_path.read_text())
    assert data["table"]["s4"]["pathfinder"]["scale"] == "reduced set"
    assert data["table"]["s4"]["average"] == pytest.approx((0.5912 + 0.871) / 2)


def test_a_missing_directory_is_named(tmp_path, capsys):
    assert results.main([str(tmp_path / "nope")]) == 2
    assert "nope: no such run directory" in capsys.readouterr().err
