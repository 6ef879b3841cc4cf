"""ListOps: the official format read exactly, the generator reproducible and faithful, clear errors."""
import json
import os

import numpy as np
import pytest

from lra.data import listops

SMALL = dict(max_depth=4, max_args=5, min_length=10, max_length=60)


@pytest.fixture(scope="module")
def release(fixtures_dir):
    return fixtures_dir / "lra_release"


def test_reads_the_official_fixture_exactly(release):
    d = listops.find_release_dir(release)
    assert d == release / "listops-1000"
    rows = {s: listops.read_tsv(d / f"basic_{s}.tsv") for s in listops.SPLITS}
    assert [len(rows[s]) for s in listops.SPLITS] == [4, 2, 2]
    assert rows["train"][0] == ("( ( ( ( [MAX 2 ) 9 ) 4 ) ] )", 9)
    assert rows["val"][0] == ("( ( ( ( ( [SM 5 ) 5 ) 5 ) 5 ) ] )", 0)
    for split_rows in rows.values():
        for source, target in split_rows:
            assert listops.evaluate(source) == target  # labels recomputed independently
    enc = listops.load_split(release, "train", 16)
    assert enc["inputs"][0, :6].tolist() == [12, 3, 10, 5, 15, 0]  # [MAX 2 9 4 ] <pad>
    assert enc["lengths"][0] == 5 and enc["labels"].tolist() == [t for _, t in rows["train"]]
    # the extra lra_release/ level of the tarball is accepted too
    assert listops.find_release_dir(release.parent) == d


def test_writer_reproduces_the_official_byte_layout(release, tmp_path):
    src = release / "listops-1000" / "basic_train.tsv"
    listops.write_tsv(tmp_path / "x.tsv", listops.read_tsv(src))
    assert (tmp_path / "x.tsv").read_bytes() == src.read_bytes()  # header, tabs, CRLF


def test_values_med_truncates_and_sm_wraps():
    assert listops.evaluate("( ( ( ( ( [MED 1 ) 5 ) 6 ) 2 ) ] )") == 3  # median 3.5 -> 3
    assert listops.evaluate("( ( ( [SM 9 ) 8 ) ] )") == 7
    assert listops.evaluate("7") == 7


def test_generator_is_seeded_and_within_bounds():
    a = listops.generate(150, seed=3, progress=False, **SMALL)
    assert a == listops.generate(150, seed=3, progress=False, **SMALL)
    assert a != listops.generate(150, seed=4, progress=False, **SMALL)
    assert len({s for s, _ in a}) == 150  # unique
    for source, target in a:
        assert 10 < len(listops.tokenize(source)) < 60
        assert listops.evaluate(source) == target
    labels = np.bincount([t for _, t in listops.generate(400, seed=5, progress=False, **SMALL)], minlength=10)
    assert np.all(labels > 0)


def test_default_generator_respects_the_lra_bounds():
    rows = listops.generate(20, seed=0, progress=False)
    lengths = [len(listops.tokenize(s)) for s, _ in rows]
    assert min(lengths) > 500 and max(lengths) < 2000
    depth = max(max(np.cumsum([1 if t.startswith("[") else -1 if t == "]" else 0 for t in s.split()])) for s, _ in rows)
    assert depth <= 10


def test_ensure_generated_is_byte_identical_cached_and_atomic(tmp_path):
    params = dict(seed=1, num_train=30, num_val=5, num_test=5, **SMALL)
    d1 = listops.ensure_generated(tmp_path / "a", progress=False, **params)
    d2 = listops.ensure_generated(tmp_path / "b", progress=False, **params)
    for s in listops.SPLITS:
        assert (d1 / f"basic_{s}.tsv").read_bytes() == (d2 / f"basic_{s}.tsv").read_bytes()
    manifest = json.loads((d1 / "manifest.json").read_text())
    assert manifest["params"]["seed"] == 1 and set(manifest["sha256"]) == {f"basic_{s}.tsv" for s in listops.SPLITS}
    assert [len(listops.read_tsv(d1 / f"basic_{s}.tsv")) for s in listops.SPLITS] == [30, 5, 5]
    mtime = (d1 / "basic_train.tsv").stat().st_mtime_ns
    assert listops.ensure_generated(tmp_path / "a", progress=False, **params) == d1
    assert (d1 / "basic_train.tsv").stat().st_mtime_ns == mtime  # reused, not regenerated

    # a killed run leaves only a hidden temporary directory, never one that looks complete
    killed = tmp_path / "c" / "listops_generated"
    killed.mkdir(parents=True)
    (killed / f".{d1.name}.incomplete-x").mkdir()
    d3 = listops.ensure_generated(tmp_path / "c", progress=False, **params)
    assert (d3 / "basic_train.tsv").read_bytes() == (d1 / "basic_train.tsv").read_bytes()


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(listops, "write_tsv", boom)
    with pytest.raises(KeyboardInterrupt):
        listops.ensure_generated(tmp_path, progress=False, seed=0, num_train=5, num_val=1, num_test=1, **SMALL)
    assert list((tmp_path / "listops_generated").iterdir()) == []


@pytest.mark.parametrize("content,line,what", [
    ("Source\tTarget\r\n( ( [MAX 1 ) ] )\t1\r\n( ( [MAX 1 ) ] )\r\n", 3, "2 tab-separated fields"),
    ("Source\tTarget\r\n( ( [MAX 1 ) ] )\t12\r\n", 2, "one digit"),
    ("Source\tTarget\r\n( ( [MAX 1 ) ] )\tx\r\n", 2, "one digit"),
    ("Source\tTarget\r\n( ( [MAXX 1 ) ] )\t1\r\n", 2, "unknown ListOps token '[MAXX'"),
    ("source,target\r\n", 1, "header"),
])
def test_malformed_rows_name_file_and_line(tmp_path, content, line, what):
    path = tmp_path / "basic_train.tsv"
    path.write_bytes(content.encode())
    with pytest.raises(ValueError) as e:
        listops.read_tsv(path)
    assert f"{path}:{line}:" in str(e.value) and what in str(e.value)


def test_missing_directory_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        listops.load_split(tmp_path / "nowhere", "train", 16)
    msg = str(e.value)
    assert "listops-1000" in msg and "basic_{train,val,test}.tsv" in msg and "python -m lra.data.listops" in msg
    with pytest.raises(ValueError, match="unknown ListOps split"):
        listops.load_split(tmp_path, "dev", 16)


def test_encode_pads_and_truncates():
    rows = [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( [SM 1 ) ] )", 1)]
    enc = listops.encode(rows, 3)
    assert enc["inputs"].dtype == np.int32 and enc["inputs"].shape == (2, 3)
    assert enc["inputs"].tolist() == [[12, 3, 10], [14, 2, 15]]
    assert enc["lengths"].tolist() == [3, 3] and enc["labels"].tolist() == [9, 1]
    assert listops.encode(rows, 6)["inputs"][1].tolist() == [14, 2, 15, 0, 0, 0]
    assert listops.VOCAB[listops.PAD_ID] == "<pad>" and listops.VOCAB_SIZE == 17


def test_cli_generates(tmp_path, capsys):
    listops.main([f"--data_dir={tmp_path}", "--num_train=4", "--num_val=1", "--num_test=1", "--max_depth=3",
                  "--max_args=3", "--min_length=3", "--max_length=30"])
    out = capsys.readouterr().out.strip()
    assert os.path.isdir(out) and (tmp_path / "listops_generated") in __import__("pathlib").Path(out).parents
