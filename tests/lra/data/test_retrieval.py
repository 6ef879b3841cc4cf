"""LRA Retrieval (AAN pairs): the release's TSV format read exactly, bytes literals decoded without eval, labels,
errors naming file and line, release layouts, the cache, and one short training run through train.py."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from configs import lra_retrieval, models
from lra import tasks
from lra.data import retrieval
from tests.lra.data.helpers import train_tiny

REPO = Path(__file__).resolve().parents[3]
FIX = REPO / "tests" / "fixtures"
RELEASE = FIX / "lra_release"  # mirrors the tarball's inner lra_release/ folder

BLEU = (b"BLEU-style evaluation revisited\nAbstract\nWe describe an automatic metric for machine translation that "
        b"counts n-gram overlap \xe2\x80\x93 a cheap proxy.")
ALIGN = b"Statistical alignment models\nAbstract\nThis paper compares word alignment models trained with EM."
TREEBANK = b"A corpus of parsed sentences\nAbstract\nThe treebank's annotation guidelines are summarised here."
CRF = b"Conditional random fields for tagging\nAbstract\nA CRF tagger is compared with \\ escaped paths."



@pytest.fixture
def release(tmp_path):
    """A writable copy of the release's tsv_data/, laid out as the tarball unpacks (two lra_release/ levels)."""
    inner = tmp_path / "lra_release" / "lra_release"
    shutil.copytree(RELEASE / "tsv_data", inner / "tsv_data")
    return inner


def ids(b: bytes) -> list[int]:
    return [x + 1 for x in b]


def test_fixture_texts_decode_to_their_bytes():
    docs1, docs2, labels = retrieval.read_tsv(RELEASE / "tsv_data" / "new_aan_pairs.train.tsv")
    assert labels.tolist() == [1, 0, 1, 0] and labels.dtype == np.int32
    assert docs1[0] == BLEU  # \n -> newline byte, \xe2\x80\x93 -> the en dash's three UTF-8 bytes
    assert docs2[0] == ALIGN
    assert docs2[1] == TREEBANK  # a b"..." literal holding a '
    _, docs2, _ = retrieval.read_tsv(RELEASE / "tsv_data" / "new_aan_pairs.eval.tsv")
    assert docs2[0] == BLEU
    docs1, _, _ = retrieval.read_tsv(RELEASE / "tsv_data" / "new_aan_pairs.test.tsv")
    assert docs1[0] == CRF and CRF.count(b"\\") == 1  # the literal's \\ is one backslash
    raw1, _, _ = retrieval.read_tsv(RELEASE / "tsv_data" / "new_aan_pairs.train.tsv", decode_literals=False)
    assert raw1[0] == b"b'" + BLEU.replace(b"\n", b"\\n").replace(b"\xe2\x80\x93", b"\\xe2\\x80\\x93") + b"'"


def test_literal_decoding_only_parses_a_single_bytes_literal(tmp_path):
    d = retrieval.decode_text
    assert d(b"b'a\\tb\\x00'") == b"a\tb\x00"
    assert d(b'b"it\'s"') == b"it's" and d(b"b'it\\'s'") == b"it's"
    assert d(b"plain text, not a literal") == b"plain text, not a literal"
    assert d("caf\u00e9 \u2013 raw UTF-8".encode()) == "caf\u00e9 \u2013 raw UTF-8".encode()
    for kept in (b"b'a' + b'b'", b"b'a' b'b'", b"b'unterminated", b"b'x'y'", b"'not bytes'", b"b'\\x4'",
                 "b'caf\u00e9'".encode(), b"b'''triple'''"):
        assert d(kept) == kept, kept  # not exactly one valid bytes literal: kept as written
    marker = tmp_path / "ran"
    for payload in (f"__import__('os').system('touch {marker}')", f"b'' if __import__('os').system('touch {marker}') else b''"):
        assert d(payload.encode()) == payload.encode()
    assert not marker.exists()  # nothing was evaluated
    assert d(b"b'a\\nb'", decode_literals=False) == b"b'a\\nb'"


def test_splits_pairs_ids_and_truncation():
    val = retrieval.load_split(RELEASE, "val", seq_len=16, cache=False)
    assert set(val) == {"inputs1", "lengths1", "inputs2", "lengths2", "labels"}
    assert val["labels"].tolist() == [1, 0]
    in2 = np.asarray(val["inputs2"])
    assert in2.shape == (2, 16) and in2.dtype == np.int32
    assert in2[0].tolist() == ids(BLEU[:16]) and val["lengths2"].tolist() == [16, 16]
    test = retrieval.load_split(RELEASE, "test", seq_len=200, cache=False)
    assert test["lengths1"][0] == len(CRF) < 200
    row = np.asarray(test["inputs1"])[0]
    assert row[:len(CRF)].tolist() == ids(CRF) and not row[len(CRF):].any()
    assert row[CRF.index(b"\n")] == ord("\n") + 1 == 11
    sizes = {s: len(retrieval.load_split(RELEASE, s, seq_len=8, cache=False)["labels"]) for s in retrieval.SPLITS}
    assert sizes == {"train": 4, "val": 2, "test": 2}  # val is the eval file


def test_release_layouts_and_missing_files(release, tmp_path):
    for data_dir in (RELEASE, FIX, RELEASE / "tsv_data"):  # inner folder, one level above, tsv_data itself
        assert retrieval.find_release_dir(data_dir) == RELEASE
    for data_dir in (release, release.parent, release.parent.parent):  # ... and where the tarball was unpacked
        assert retrieval.find_release_dir(data_dir) == release
    with pytest.raises(FileNotFoundError) as e:
        retrieval.load_split(tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere" / "tsv_data") in str(e.value) and retrieval.URL in str(e.value)
    (release / "tsv_data" / "new_aan_pairs.test.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"tsv_data/new_aan_pairs.test.tsv is missing"):
        retrieval.load_split(release, "test")


@pytest.mark.parametrize("rows,error", [
    (["1\tA\tB\tb'x'\tb'y'", "0\tA\tB\tb'x'"], r"new_aan_pairs.train.tsv:2: expected 5 tab-separated fields .* got 4"),
    (["1\tA\tB\tb'x'\tb'y'\textra"], r"new_aan_pairs.train.tsv:1: expected 5 .* got 6"),
    (["1.0\tA\tB\tb'x'\tb'y'", "0.0\tA\tB\tb'x'\tb'y'", "2\tA\tB\tb'x'\tb'y'"],
     r"new_aan_pairs.train.tsv:3: label '2' is not one of 1, 0, 1.0, 0.0"),
    (["yes\tA\tB\tb'x'\tb'y'"], r"new_aan_pairs.train.tsv:1: label 'yes'"),
    ([], r"new_aan_pairs.train.tsv: no pairs"),
])
def test_malformed_rows_name_file_and_line(release, rows, error):
    (release / "tsv_data" / "new_aan_pairs.train.tsv").write_bytes(b"".join(r.encode() + b"\n" for r in rows))
    with pytest.raises(ValueError, match=error):
        retrieval.load_split(release, "train", cache=False)


def test_label_spellings_crlf_and_blank_lines(release):
    rows = [b"1.0\tA\tB\tb'one'\tb'two'\r\n", b"\n", b"0.0\tA\tB\traw one\traw two\r\n", b"1\tA\tB\tb'x'\tb'y'"]
    (release / "tsv_data" / "new_aan_pairs.train.tsv").write_bytes(b"".join(rows))
    split = retrieval.load_split(release, "train", seq_len=8, cache=False)
    assert split["labels"].tolist() == [1, 0, 1]
    assert np.asarray(split["inputs2"])[1].tolist() == ids(b"raw two") + [0]  # no \r left on the last field


def test_cache_is_written_reused_and_keyed_by_settings(release, monkeypatch):
    first = retrieval.load_split(release, "val", seq_len=16)
    folder = release / "tsv_data"
    assert len(list(folder.glob("aan-val-*.npz"))) == 1 and not list(folder.glob(".aan-*"))
    monkeypatch.setattr(retrieval, "read_tsv", lambda *a, **k: pytest.fail("the cache was not used"))
    again = retrieval.load_split(release, "val", seq_len=16)
    for k in ("inputs1", "inputs2"):
        np.testing.assert_array_equal(np.asarray(again[k]), np.asarray(first[k]))
    monkeypatch.undo()
    retrieval.load_split(release, "val", seq_len=32)  # another length, another cache
    retrieval.load_split(release, "val", seq_len=16, decode_literals=False)
    assert len(list(folder.glob("aan-val-*.npz"))) == 3


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_configs_build_for_every_model(model):
    for arg in (model, f"{model},small"):
        c = lra_retrieval.get_config(arg)
        assert c.task == "retrieval" and c.data.seq_len == (256 if "small" in arg else 4000)
    assert lra_retrieval.get_config("transformer").model.d_model == 128  # LRA base_match_config
    assert lra_retrieval.get_config("s4").batch_size == 64  # S4's published batch


def test_task_spec_is_paired(release):
    c = lra_retrieval.get_config("transformer,small")
    c.data.data_dir = str(release.parent)
    task = tasks.get_task(c)
    assert (task.name, task.seq_len, task.vocab_size, task.paired, task.input_keys) == (
        "retrieval", 256, 257, True, ("inputs1", "inputs2"))
    train = task.load("train")
    assert np.asarray(train["inputs1"]).shape == np.asarray(train["inputs2"]).shape == (4, 256)


def test_train_cli_runs_on_the_fixture(release):
    wd = release.parent.parent / "wd"
    final = train_tiny("lra_retrieval.py:transformer,small", wd, release.parent, data__seq_len=64)
    assert final["step"] == 2 and final["test_count"] == 2 and final["val_count"] == 2
