"""LRA Text (IMDB bytes): the original archive read exactly (folder or tar.gz), byte ids, splits, the cache, clear
errors, and one short training run through train.py on the fixture."""
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from configs import lra_text, models
from lra import tasks
from lra.data import text
from tests.lra.data.helpers import train_tiny

REPO = Path(__file__).resolve().parents[3]
ORIG = REPO / "tests" / "fixtures" / "originals"

# the fixture reviews in corpus order (neg by id, then pos by id), stripped, written out independently of the files
NEG_2 = b"Dull from start to finish.<br /><br />The plot holes were large enough to drive a truck through."
NEG_3 = b'Not terrible, but the second half drags and the ending is "meh".'
POS_0 = (b"A small fixture review. The pacing was gentle and the cast clearly enjoyed themselves.<br /><br />"
         b"I would happily watch it again, 9/10.")
POS_1 = b"Warm, funny and a little odd. The caf\xc3\xa9 scenes are the best part \xe2\x80\x93 go see it."
TEST_NEG_1 = b"I wanted to like it, but it's a mess."
TEST_POS_0 = b"Brilliant. Every frame is composed with care; the score is lovely."



@pytest.fixture
def imdb(tmp_path):
    """A writable copy of the fixture archive folder, and an empty in-process memo."""
    shutil.copytree(ORIG / "aclImdb", tmp_path / "aclImdb")
    text._MEMO.clear()
    return tmp_path


def ids(b: bytes) -> list[int]:
    return [x + 1 for x in b]


def test_reviews_are_stripped_bytes_in_corpus_order_and_unsup_is_ignored():
    corpus = text.load_reviews(ORIG, cache=False)
    docs, labels = corpus["train"]
    assert [docs[i] for i in range(len(docs))] == [NEG_2, NEG_3, POS_0, POS_1]  # train/unsup/4_0.txt not read
    assert labels.tolist() == [0, 0, 1, 1] and labels.dtype == np.int32
    docs, labels = corpus["test"]
    assert [docs[i] for i in range(len(docs))] == [TEST_NEG_1, TEST_POS_0] and labels.tolist() == [0, 1]
    raw = (ORIG / "aclImdb" / "train" / "neg" / "3_4.txt").read_bytes()
    assert raw.startswith(b"  ") and raw.endswith(b"  ")  # the fixture really has whitespace to strip


def test_exact_ids_of_a_review_with_html_and_utf8():
    split = text.load_split(ORIG, "train", seq_len=200, official_protocol=True, cache=False)
    inputs = np.asarray(split["inputs"])
    assert inputs.shape == (4, 200) and inputs.dtype == np.int32
    row = inputs[3]
    assert split["lengths"][3] == len(POS_1) == 79
    assert row[:79].tolist() == ids(POS_1) and not row[79:].any()  # byte + 1, then 0-padding
    start = POS_1.index(b"caf") + 3
    assert row[start:start + 2].tolist() == [0xC3 + 1, 0xA9 + 1]  # é: two UTF-8 bytes
    dash = POS_1.index(b"\xe2")
    assert row[dash:dash + 3].tolist() == [0xE2 + 1, 0x80 + 1, 0x93 + 1]  # the en dash: three bytes
    html = NEG_2.index(b"<br />")
    assert inputs[0, html:html + 6].tolist() == ids(b"<br />")  # HTML kept, as TFDS and the official pipeline
    assert inputs[1, 0] == ord("N") + 1  # leading spaces stripped
    assert inputs.max() <= 256 and text.VOCAB_SIZE == 257


def test_truncation_padding_and_lengths():
    split = text.load_split(ORIG, "test", seq_len=10, cache=False)
    assert np.asarray(split["inputs"]).tolist() == [ids(TEST_NEG_1[:10]), ids(TEST_POS_0[:10])]
    assert split["lengths"].tolist() == [10, 10]
    split = text.load_split(ORIG, "test", seq_len=64, cache=False)
    assert split["lengths"].tolist() == [len(TEST_NEG_1), 64]
    assert not np.asarray(split["inputs"])[0, len(TEST_NEG_1):].any()


def test_byte_sequences_index_like_an_array():
    docs = text.Documents.pack([b"ab", b"", b"xyz" * 5])
    seqs = text.ByteSequences(docs, 4, indices=np.array([2, 0, 1]))
    full = np.asarray(seqs)
    assert full.tolist() == [ids(b"xyzx"), ids(b"ab") + [0, 0], [0, 0, 0, 0]]
    assert seqs.lengths.tolist() == [4, 2, 0] and seqs.shape == (3, 4) and len(seqs) == 3
    np.testing.assert_array_equal(seqs[np.array([1, 1, 2])], full[[1, 1, 2]])
    np.testing.assert_array_equal(seqs[1:], full[1:])
    np.testing.assert_array_equal(seqs[0], full[0])
    assert np.asarray(text.ByteSequences(text.Documents.pack([b"", b""]), 3)).tolist() == [[0] * 3] * 2


def test_seeded_validation_hold_out_and_official_protocol():
    train = text.load_split(ORIG, "train", seq_len=128, cache=False)
    val = text.load_split(ORIG, "val", seq_len=128, cache=False)
    assert len(train["labels"]) == 3 and len(val["labels"]) == 1  # max(1, round(10% of 4))
    rows = {tuple(r) for r in np.asarray(train["inputs"])} | {tuple(r) for r in np.asarray(val["inputs"])}
    every = np.asarray(text.load_split(ORIG, "train", seq_len=128, official_protocol=True, cache=False)["inputs"])
    assert rows == {tuple(r) for r in every}  # train and val partition the training reviews
    np.testing.assert_array_equal(np.asarray(text.load_split(ORIG, "val", seq_len=128, cache=False)["inputs"]),
                                  np.asarray(val["inputs"]))  # same seed, same hold-out
    held = {seed: int(text.validation_indices(4, 0.1, seed)[1][0]) for seed in range(8)}
    assert len(set(held.values())) > 1  # the seed decides which review is held out
    big_train, big_val = text.validation_indices(25_000, 0.1, 0)
    assert len(big_val) == 2500 and len(big_train) == 22_500 and not set(big_val) & set(big_train)
    # official protocol: the test split validates, all training reviews train
    official_val = text.load_split(ORIG, "val", seq_len=128, official_protocol=True, cache=False)
    test = text.load_split(ORIG, "test", seq_len=128, cache=False)
    np.testing.assert_array_equal(np.asarray(official_val["inputs"]), np.asarray(test["inputs"]))
    np.testing.assert_array_equal(official_val["labels"], test["labels"])
    with pytest.raises(ValueError, match="val_fraction"):
        text.load_split(ORIG, "val", val_fraction=1.5, cache=False)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        text.load_split(ORIG, "dev", cache=False)


def test_tar_gz_archive_gives_the_same_arrays_as_the_folder(tmp_path):
    with tarfile.open(tmp_path / text.ARCHIVE, "w:gz") as tar:
        tar.add(ORIG / "aclImdb", arcname="aclImdb")  # includes train/unsup, which must be skipped
    text._MEMO.clear()
    for data_dir in (tmp_path, tmp_path / text.ARCHIVE):  # the folder holding it, or its own path
        assert text.find_source(data_dir) == tmp_path / text.ARCHIVE
        for split in ("train", "test"):
            a = text.load_split(data_dir, split, seq_len=96, official_protocol=True, cache=False)
            b = text.load_split(ORIG, split, seq_len=96, official_protocol=True, cache=False)
            np.testing.assert_array_equal(np.asarray(a["inputs"]), np.asarray(b["inputs"]))
            np.testing.assert_array_equal(a["labels"], b["labels"])
    assert not (tmp_path / "aclImdb").exists()  # read in place, nothing unpacked


def test_cache_is_written_atomically_reused_and_invalidated(imdb, monkeypatch):
    first = text.load_split(imdb, "train", seq_len=32, official_protocol=True)
    caches = list(imdb.glob("imdb-*.npz"))
    assert len(caches) == 1 and not list(imdb.glob(".imdb-*"))  # one cache, no temporary left
    text._MEMO.clear()
    monkeypatch.setattr(text, "_read_folder", lambda folder: pytest.fail("the cache was not used"))
    again = text.load_split(imdb, "train", seq_len=2000, official_protocol=True)  # any seq_len: same cache
    np.testing.assert_array_equal(np.asarray(again["inputs"])[:, :32], np.asarray(first["inputs"]))
    monkeypatch.undo()

    review = imdb / "aclImdb" / "train" / "pos" / "1_7.txt"
    review.write_bytes(b"  Edited.\n")  # a changed file changes the key: re-read, new cache
    text._MEMO.clear()
    edited = text.load_split(imdb, "train", seq_len=32, official_protocol=True)
    assert np.asarray(edited["inputs"])[3, :8].tolist() == ids(b"Edited.") + [0]
    assert len(list(imdb.glob("imdb-*.npz"))) == 2

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    review.write_bytes(b"Edited again.")
    text._MEMO.clear()
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        text.load_split(imdb, "train", seq_len=32)
    assert len(list(imdb.glob("imdb-*.npz"))) == 2 and not list(imdb.glob(".imdb-*"))  # nothing half-written


def test_missing_data_names_the_path_and_the_download(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        text.load_split(tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere" / "aclImdb") in str(e.value) and text.URL in str(e.value)
    shutil.copytree(ORIG / "aclImdb", tmp_path / "aclImdb", ignore=shutil.ignore_patterns("neg"))
    text._MEMO.clear()
    with pytest.raises(FileNotFoundError, match=r"aclImdb/train/neg is missing"):
        text.load_split(tmp_path, "train", cache=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / text.ARCHIVE).write_bytes(b"not a tar archive")
    with pytest.raises(ValueError, match="not a readable tar archive"):
        text.load_split(tmp_path / "bad", "train", cache=False)


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_configs_build_for_every_model(model):
    from configs import published

    # the model's published settings, else the LRA Transformer's (the budget rule copies its data settings)
    settings = published.settings_for(model, "text") or published.settings_for("transformer", "text")
    for arg in (model, f"{model},small"):
        c = lra_text.get_config(arg)
        assert c.task == "text" and c.data.seq_len == (256 if "small" in arg else settings["data.seq_len"])
        with pytest.raises(AttributeError):
            c.data.seq_lenn = 1  # locked
    assert lra_text.get_config("transformer").model.mixer_kwargs.num_heads == 4  # LRA base_tc_config
    assert lra_text.get_config("s4").batch_size == 16  # S4's published batch


def test_task_spec_from_the_config(imdb):
    c = lra_text.get_config("transformer,small")
    c.data.data_dir = str(imdb)
    task = tasks.get_task(c)
    assert (task.name, task.seq_len, task.num_classes, task.vocab_size, task.paired) == ("text", 256, 2, 257, False)
    assert np.asarray(task.load("train")["inputs"]).shape == (3, 256)


def test_train_cli_runs_on_the_fixture(imdb):
    final = train_tiny("lra_text.py:transformer,small", imdb / "wd", imdb)
    assert final["step"] == 2 and final["test_count"] == 2 and final["val_count"] == 1
    assert list(imdb.glob("imdb-*.npz"))  # the run cached the parsed reviews beside the data
