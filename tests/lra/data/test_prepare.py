"""``python -m lra.data.prepare``: every task prepared through its config into a manifest that records the source,
the generator's parameters and the splits' checksums; reruns are cheap, --verify catches changed data, a killed run
leaves no manifest, bad keys and missing data are named."""
import json
import shutil
from pathlib import Path

import pytest

from lra.data import pathfinder as pf
from lra.data import prepare
from tests.lra.data.helpers import pathfinder_copy

# task -> (fixture folders copied into data_dir, overrides)
CASES = {
    "listops": (["lra_release/listops-1000"], {"data.source": "release"}),
    "text": (["originals/aclImdb"], {}),
    "retrieval": (["lra_release/tsv_data"], {}),
    "image": (["originals/cifar-10-batches-bin"], {}),
    "pathfinder": ([], {"data.num_images": "30", "data.workers": "1"}),
    "pathx": ([], {"data.source": "release"}),  # the release fixture's 2 images topped up to 10 (below)
}


@pytest.fixture(autouse=True)
def fresh_memo():
    pf._MEMO.clear()
    yield
    pf._MEMO.clear()


def _config(task, data_dir, overrides=()):
    config = prepare.load_config(prepare.CONFIGS[task])
    prepare.apply_overrides(config, [("data.data_dir", str(data_dir)), *overrides], task)
    return config


def _copy(fixtures_dir, folders, data_dir):
    for folder in folders:
        shutil.copytree(fixtures_dir / folder, data_dir / folder.split("/")[-1])


@pytest.mark.parametrize("task", sorted(CASES))
def test_every_task_is_prepared_with_a_manifest(task, fixtures_dir, tmp_path):
    folders, overrides = CASES[task]
    _copy(fixtures_dir, folders, tmp_path)
    if task == "pathx":  # every split needs an image
        pathfinder_copy(fixtures_dir / "lra_release/pathfinder128/curv_contour_length_14",
                        tmp_path / "pathfinder128/curv_contour_length_14", 10)
    config = _config(task, tmp_path, overrides.items())
    path = prepare.prepare(config, progress=False)
    assert path.parent == tmp_path / "prepared" and path.name.startswith(f"{task}-")
    m = json.loads(path.read_text())
    assert m["task"] == task and m["data"]["data_dir"] == str(tmp_path)
    assert m["source"].startswith(str(tmp_path.resolve()))
    assert set(m["splits"]) == {"train", "val", "test"}
    for split, s in m["splits"].items():
        assert sum(s["label_counts"].values()) == s["examples"] and len(s["sha256"]) == 64
    if task == "pathfinder":  # generated: the generator's own manifest (parameters, seed, checksums) is embedded
        assert m["generator"]["params"]["seed"] == 0 and m["generator"]["params"]["num_images"] == 30
        assert m["generator"]["params"]["resolution"] == 32 and m["generator"]["sha256_of_image_sha256s"]
        assert sum(s["examples"] for s in m["splits"].values()) == 30
    # a rerun finds the manifest; --verify recomputes the same checksums
    assert prepare.prepare(config, progress=False) == path
    assert prepare.prepare(config, verify=True, progress=False) == path
    assert json.loads(path.read_text()) == m


def test_verify_names_the_split_whose_data_changed(fixtures_dir, tmp_path):
    _copy(fixtures_dir, ["lra_release/tsv_data"], tmp_path)
    config = _config("retrieval", tmp_path)
    prepare.prepare(config, progress=False)
    test_file = tmp_path / "tsv_data" / "new_aan_pairs.test.tsv"
    rows = test_file.read_bytes().split(b"\n")
    fields = rows[0].split(b"\t")
    fields[0] = b"1" if fields[0].startswith(b"0") else b"0"  # flip one label
    test_file.write_bytes(b"\n".join([b"\t".join(fields)] + rows[1:]))
    with pytest.raises(ValueError, match="split 'test' no longer matches"):
        prepare.prepare(config, verify=True, progress=False)


def test_a_killed_run_leaves_no_manifest_and_a_rerun_finishes(fixtures_dir, tmp_path, monkeypatch):
    config = _config("pathfinder", tmp_path, [("data.num_images", "20"), ("data.workers", "1")])
    real = prepare.split_summary
    calls = []

    def dies_on_test(arrays, **kw):
        calls.append(kw.get("desc"))
        if kw.get("desc", "").endswith("/test"):
            raise KeyboardInterrupt
        return real(arrays, **kw)

    monkeypatch.setattr(prepare, "split_summary", dies_on_test)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare(config, progress=False)
    assert not (tmp_path / "prepared").exists() or not list((tmp_path / "prepared").iterdir())
    monkeypatch.setattr(prepare, "split_summary", real)
    path = prepare.prepare(config, progress=False)
    assert json.loads(path.read_text())["splits"]["test"]["examples"] == 2


def test_cli_shorthand_overrides_and_errors(fixtures_dir, tmp_path, capsys):
    _copy(fixtures_dir, ["originals/aclImdb"], tmp_path)
    prepare.main(["--task=text", f"--data_dir={tmp_path}", "--config.data.seq_len=64", "--quiet"])
    out = capsys.readouterr().out
    assert "text: train 3, val 1, test 2 examples" in out
    manifest = json.loads(next((tmp_path / "prepared").glob("text-*.json")).read_text())
    assert manifest["data"]["seq_len"] == 64 and manifest["seq_len"] == 64
    with pytest.raises(SystemExit, match="unknown config key config.data.bogus"):
        prepare.main(["--task=text", f"--data_dir={tmp_path}", "--config.data.bogus=1"])
    with pytest.raises(SystemExit, match="config.data.seq_len is int"):
        prepare.main(["--task=text", f"--data_dir={tmp_path}", "--config.data.seq_len=long"])
    with pytest.raises(SystemExit, match="cifar-10-batches-bin"):
        prepare.main(["--task=image", f"--data_dir={tmp_path / 'nothing'}"])
    with pytest.raises(SystemExit, match="is a config for task 'text'"):
        prepare.main(["--task=image", "--config", "lra_text"])  # a config's name, as a file path below
    with pytest.raises(SystemExit, match="is a config for task 'text'"):
        prepare.main(["--task=image", "--config", str(Path(__file__).resolve().parents[3] / "configs" / "lra_text.py")])
    with pytest.raises(SystemExit, match="'lra_txt' not found"):
        prepare.main(["--config=lra_txt", f"--data_dir={tmp_path}"])
