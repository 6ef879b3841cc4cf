"""Every bad data file a clear error naming it, and nothing stale: each case breaks a copy of a fixture in tmp_path.
ListOps rows that are not UTF-8, empty and header-only files; truncated Text / Retrieval parse caches (rebuilt with
a warning) and archives with a damaged gzip trailer (refused); Pathfinder PNGs changed under a decoded cache, a
decode killed outright, and ``prepare --verify`` telling a damaged cache from changed images."""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lra import tasks
from lra.data import image, listops, prepare, retrieval, text
from lra.data import pathfinder as pf
from tests.lra.data.helpers import pathfinder_copy

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def fresh_memos():
    pf._MEMO.clear()
    text._MEMO.clear()
    yield
    pf._MEMO.clear()
    text._MEMO.clear()


@contextlib.contextmanager
def no_warnings():
    """Any warning inside is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ----------------------------------------------------------------------------------------------------- ListOps

@pytest.fixture
def listops_copy(fixtures_dir, tmp_path) -> Path:
    shutil.copytree(fixtures_dir / "lra_release" / "listops-1000", tmp_path / "listops-1000")
    return tmp_path / "listops-1000"


def test_listops_row_that_is_not_utf8_names_file_and_line(listops_copy):
    path = listops_copy / "basic_train.tsv"
    lines = path.read_bytes().split(b"\r\n")
    lines[2] = lines[2].replace(b"[MAX", b"[M\xe9X", 1) if b"[MAX" in lines[2] else lines[2] + b"\xff"
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(ValueError, match=rf"^{path}:3: not UTF-8 text \(byte b'\\x(e9|ff)'"):
        listops.load_split(listops_copy, "train", 2000)


def test_listops_empty_file_names_the_file(listops_copy):
    path = listops_copy / "basic_test.tsv"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"^{path}: empty file \(0 bytes\)"):
        listops.load_split(listops_copy, "test", 2000)


def test_listops_header_only_validation_file_fails_when_loaded_not_at_the_first_evaluation(listops_copy, tmp_path):
    path = listops_copy / "basic_val.tsv"
    path.write_bytes(b"Source\tTarget\r\n")
    with pytest.raises(ValueError, match=rf"^{path}: no examples, only the header"):
        listops.load_split(listops_copy, "val", 2000)
    # through prepare (and the trainer, which loads every split before its first step): the same error, up front
    config = prepare.load_config(str(REPO / "configs" / "lra_listops.py"))
    prepare.apply_overrides(config, [("data.data_dir", str(tmp_path)), ("data.source", "release")], "test")
    with pytest.raises(ValueError, match=rf"{path}: no examples"):
        prepare.prepare(config, progress=False)
    assert not (tmp_path / "prepared").exists()


# ----------------------------------------------------------------------------------------------------- Text, Retrieval

def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_truncated_imdb_cache_is_rebuilt_with_a_warning_naming_it(fixtures_dir, tmp_path):
    shutil.copytree(fixtures_dir / "originals" / "aclImdb", tmp_path / "aclImdb")
    first = text.load_split(tmp_path, "test", seq_len=64)
    (cache,) = tmp_path.glob("imdb-*.npz")
    truncate(cache)
    text._MEMO.clear()
    with pytest.warns(UserWarning, match=rf"IMDB: the cache {cache} does not match its source \(unreadable: "
                                         rf"BadZipFile"):
        again = text.load_split(tmp_path, "test", seq_len=64)
    np.testing.assert_array_equal(np.asarray(again["inputs"]), np.asarray(first["inputs"]))
    text._MEMO.clear()
    with no_warnings():  # rewritten whole: the next run reads it without a word
        np.testing.assert_array_equal(np.asarray(text.load_split(tmp_path, "test", seq_len=64)["inputs"]),
                                      np.asarray(first["inputs"]))


def test_imdb_cache_with_inconsistent_arrays_is_rebuilt(fixtures_dir, tmp_path):
    shutil.copytree(fixtures_dir / "originals" / "aclImdb", tmp_path / "aclImdb")
    first = text.load_split(tmp_path, "train", seq_len=64, official_protocol=True)
    (cache,) = tmp_path.glob("imdb-*.npz")
    with np.load(cache) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["train_offsets"] = arrays["train_offsets"][:-1]  # a valid .npz whose arrays do not fit together
    with open(cache, "wb") as f:
        np.savez(f, **arrays)
    text._MEMO.clear()
    with pytest.warns(UserWarning, match=rf"{cache} does not match its source \(the offsets 'train_offsets'"):
        again = text.load_split(tmp_path, "train", seq_len=64, official_protocol=True)
    np.testing.assert_array_equal(np.asarray(again["inputs"]), np.asarray(first["inputs"]))


def test_truncated_aan_cache_is_rebuilt_with_a_warning_naming_it(fixtures_dir, tmp_path):
    shutil.copytree(fixtures_dir / "lra_release" / "tsv_data", tmp_path / "tsv_data")
    first = retrieval.load_split(tmp_path, "train", seq_len=100)
    (cache,) = (tmp_path / "tsv_data").glob("aan-train-*.npz")
    truncate(cache)
    with pytest.warns(UserWarning, match=rf"AAN: the cache {cache} does not match its source \(unreadable"):
        again = retrieval.load_split(tmp_path, "train", seq_len=100)
    for key in ("inputs1", "inputs2"):
        np.testing.assert_array_equal(np.asarray(again[key]), np.asarray(first[key]))
    np.testing.assert_array_equal(again["labels"], first["labels"])
    with np.load(cache) as z:  # rewritten whole
        assert set(z.files) == {"data1", "offsets1", "data2", "offsets2", "labels"}


def tar_gz_of(folder: Path, arcname: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()


def damage_trailer(raw: bytes) -> bytes:
    """Flip the gzip trailer's CRC-32 (the last 8 bytes are CRC-32 and length): every member still reads."""
    assert raw[:2] == b"\x1f\x8b"
    return raw[:-8] + bytes(b ^ 0xFF for b in raw[-8:-4]) + raw[-4:]


def test_imdb_archive_with_a_damaged_gzip_trailer_is_refused(fixtures_dir, tmp_path):
    good = tar_gz_of(fixtures_dir / "originals" / "aclImdb", "aclImdb")
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / text.ARCHIVE).write_bytes(good)
    assert len(text.load_reviews(tmp_path / "good", cache=False)["test"][0]) == 2  # the intact archive reads
    bad = tmp_path / "bad" / text.ARCHIVE
    bad.parent.mkdir()
    bad.write_bytes(damage_trailer(good))
    with tarfile.open(bad) as tar:  # what was accepted before: tarfile alone never reaches the trailer
        assert any(m.name.endswith("0_9.txt") for m in tar)
    with pytest.raises(ValueError, match=rf"^{bad}: not a readable tar archive, damaged or truncated "
                                         rf"\(BadGzipFile: CRC check failed"):
        text.load_reviews(bad.parent, cache=False)
    cut = tmp_path / "cut" / text.ARCHIVE  # and one cut short
    cut.parent.mkdir()
    cut.write_bytes(good[: len(good) - 20])
    with pytest.raises(ValueError, match=rf"^{cut}: not a readable tar archive, damaged or truncated"):
        text.load_reviews(cut.parent, cache=False)
    with pytest.raises(gzip.BadGzipFile):  # (the damage is real: gzip itself refuses the stream)
        gzip.decompress(bad.read_bytes())


def test_cifar_archive_with_a_damaged_gzip_trailer_is_refused(fixtures_dir, tmp_path):
    bad = tmp_path / image.ARCHIVES["bin"]
    bad.write_bytes(damage_trailer(tar_gz_of(fixtures_dir / "originals" / "cifar-10-batches-bin",
                                             "cifar-10-batches-bin")))
    with pytest.raises(ValueError, match=rf"^{bad}: not a readable tar archive, damaged or truncated "
                                         rf"\(BadGzipFile: CRC check failed"):
        image.load_split(tmp_path, "test")


# ----------------------------------------------------------------------------------------------------- Pathfinder

@pytest.fixture
def pf_copy(fixtures_dir, tmp_path) -> Path:
    """The release fixture's 6 images topped up to 10, so that val and test have one each."""
    return pathfinder_copy(fixtures_dir / "lra_release" / "pathfinder32" / "curv_contour_length_14",
                           tmp_path / "lra_release" / "pathfinder32" / "curv_contour_length_14", 10)


def test_a_pathfinder_set_too_small_for_a_split_is_an_error_naming_it(fixtures_dir, tmp_path):
    d = tmp_path / "curv_contour_length_14"
    shutil.copytree(fixtures_dir / "lra_release" / "pathfinder32" / "curv_contour_length_14", d)
    assert len(pf.load_split(d, "train", 32, workers=1, progress=False)["labels"]) == 6
    with pytest.raises(ValueError, match=rf"^{d}: the val split is empty: 6 image\(s\) give train / val / test "
                                         rf"6, 0, 0"):
        pf.load_split(d, "val", 32, workers=1, progress=False)


def test_a_cifar_set_too_small_for_a_validation_split_is_an_error_naming_it(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name in image.TRAIN_BATCHES + image.TEST_BATCHES:  # one training image in all: train 1, val none
        n = 1 if name in ("data_batch_1", "test_batch") else 0
        batch = {b"data": np.zeros((n, 3072), np.uint8), b"labels": [3] * n}
        (d / name).write_bytes(pickle.dumps(batch, protocol=4))
    assert image.load_split(tmp_path, "train")["labels"].tolist() == [3]
    with pytest.raises(ValueError, match=rf"^{d}: the val split is empty \(1 training image\(s\), 1 for train"):
        image.load_split(tmp_path, "val")


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_png_changed_after_the_decoded_cache_exists_is_noticed(pf_copy):
    images, labels = pf.load_examples(pf_copy, 32, workers=1, progress=False)
    first = np.array(images)
    (cache,) = pf_copy.glob("decoded-*[0-9a-f].npy")
    # touched (or copied without its times), bytes unchanged: accepted without a rebuild or a warning
    png = pf_copy / "imgs" / "0" / "sample_1.png"
    os.utime(png, ns=(png.stat().st_atime_ns, png.stat().st_mtime_ns + 10**9))
    pf._MEMO.clear()
    with no_warnings():
        np.testing.assert_array_equal(pf.load_examples(pf_copy, 32, workers=1, progress=False)[0], first)
    # a new picture under the same name
    changed = 255 - first[1]
    png.write_bytes(png_bytes(changed))
    pf._MEMO.clear()
    with pytest.warns(UserWarning, match=rf"the decoded cache {cache} does not match the images under {pf_copy} "
                                         rf"\(1 image\(s\) changed since it was made: {png}\); rebuilding it"):
        again, labels_again = pf.load_examples(pf_copy, 32, workers=1, progress=False)
    np.testing.assert_array_equal(again[1], changed)
    np.testing.assert_array_equal(np.delete(np.asarray(again), 1, 0), np.delete(first, 1, 0))
    assert labels_again.tolist() == labels.tolist()


KILLED_DECODE = """
import os, signal, sys
from lra.data import pathfinder as pf
from tests.lra.data.helpers import pathfinder_copy
real = pf._decode_chunk
def dies(directory, paths, resolution, target, start):
    real(directory, paths[:1], resolution, target, start)  # the temporary file exists and is being filled
    os.kill(os.getpid(), signal.SIGKILL)
pf._decode_chunk = dies
pf.load_examples(sys.argv[1], 32, workers=1, progress=False)
"""


def test_a_decode_killed_outright_leaves_a_temporary_file_the_next_run_removes(pf_copy):
    proc = subprocess.run([sys.executable, "-c", KILLED_DECODE, str(pf_copy)], cwd=REPO, capture_output=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    (left,) = [p for p in pf_copy.iterdir() if p.name.endswith(".tmp")]
    assert left.name.startswith(".decoded-") and left.stat().st_size > 10 * 32 * 32  # full size, as in a real run
    assert not list(pf_copy.glob("decoded-*"))  # nothing that looks complete
    with pytest.warns(UserWarning, match=rf"removed {left} \([0-9,]+ bytes\), a temporary file left by an "
                                         rf"interrupted run"):
        images, _ = pf.load_examples(pf_copy, 32, workers=1, progress=False)
    assert not left.exists() and images.shape == (10, 32, 32)
    assert not [p for p in pf_copy.iterdir() if p.name.endswith(".tmp")]


def test_a_live_runs_temporary_file_is_left_alone(pf_copy):
    from lra.data.files import make_temp, remove_stale_temps

    mine = Path(make_temp(pf_copy / "decoded-x.npy"))  # this process is alive
    assert remove_stale_temps(pf_copy / "decoded-x.npy") == [] and mine.exists()


def pf_config(data_dir: Path):
    config = prepare.load_config(str(REPO / "configs" / "lra_pathfinder.py"))
    prepare.apply_overrides(config, [("data.data_dir", str(data_dir)), ("data.source", "release"),
                                     ("data.workers", "1")], "test")
    return config


def test_verify_rebuilds_a_damaged_cache_instead_of_blaming_the_images(pf_copy, tmp_path):
    config = pf_config(tmp_path)
    manifest = prepare.prepare(config, progress=False)
    (cache,) = pf_copy.glob("decoded-*[0-9a-f].npy")
    mm = np.load(cache, mmap_mode="r+")
    mm[2, 5, 5] ^= 0x55  # one decoded pixel changes; the PNGs do not
    mm.flush()
    del mm
    pf._MEMO.clear()
    with pytest.warns(UserWarning, match=rf"decoded cache {cache} does not match .*\(it is damaged: 1 decoded "
                                         rf"image\(s\) differ from what was decoded from their PNGs, which are "
                                         rf"unchanged\); discarded, it is rebuilt now"):
        assert prepare.prepare(config, verify=True, progress=False) == manifest
    recorded = json.loads(manifest.read_text())["splits"]
    pf._MEMO.clear()
    assert prepare.split_summary(tasks.get_task(config).load("train")) == recorded["train"]  # rebuilt, whole again
    assert len(list(pf_copy.glob("decoded-*"))) == 2


def test_verify_names_the_png_that_changed_and_advises_no_cache_acceptance(pf_copy, tmp_path):
    config = pf_config(tmp_path)
    manifest = prepare.prepare(config, progress=False)
    png = pf_copy / "imgs" / "0" / "sample_0.png"
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("L")).copy()
    st = png.stat()
    png.write_bytes(png_bytes(255 - pixels))
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with its old time
    pf._MEMO.clear()
    with pytest.warns(UserWarning, match="PNG"), pytest.raises(ValueError) as e:
        prepare.prepare(config, verify=True, progress=False)
    message = str(e.value)
    assert f"{manifest}: split 'train' no longer matches" in message
    assert f"{png} changed since the cache was made" in message and "the source data under" in message


def test_an_older_versions_leftover_temporary_file_is_removed_once_a_day_old(pf_copy):
    key = pf._cache_key(pf_copy, 32)
    old, recent = pf_copy / f".decoded-{key}.k2j4h6.npy.tmp", pf_copy / f".decoded-{key}.q8w7e6.npy.tmp"
    for tmp in (old, recent):
        tmp.write_bytes(b"\0" * 4096)
    two_days_ago = old.stat().st_mtime_ns - 2 * 86400 * 10**9
    os.utime(old, ns=(two_days_ago, two_days_ago))
    with pytest.warns(UserWarning, match=rf"removed {old} \(4,096 bytes\)"):
        pf.load_examples(pf_copy, 32, workers=1, progress=False)
    assert not old.exists() and recent.exists()  # a recent one may belong to a run still going


def test_touching_the_empty_png_of_the_release_keeps_the_cache(fixtures_dir, tmp_path):
    d = tmp_path / "curv_baseline"
    shutil.copytree(fixtures_dir / "lra_release" / "pathfinder32" / "curv_baseline", d)
    with pytest.warns(UserWarning, match="skipped 1 empty PNG"):
        first = np.array(pf.load_examples(d, 32, workers=1, progress=False)[0])
    empty = d / "imgs" / "0" / "sample_172.png"
    os.utime(empty, ns=(empty.stat().st_atime_ns, empty.stat().st_mtime_ns + 10**9))
    pf._MEMO.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = pf.load_examples(d, 32, workers=1, progress=False)[0]
    assert [str(w.message) for w in caught if "does not match" in str(w.message)] == []
    np.testing.assert_array_equal(again, first)
