"""LRA Image (grayscale CIFAR-10): both original archives (folders and .tar.gz) give the same arrays, the
restricted unpickler refuses foreign pickles, TF's grayscale formula, the official splits, tokens or normalised
values, clear errors, and one short training run through train.py."""
import io
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import lra_image, models
from lra import tasks
from lra.data import image
from tests.lra.data.helpers import train_tiny

REPO = Path(__file__).resolve().parents[3]
ORIG = REPO / "tests" / "fixtures" / "originals"
BIN, PY = ORIG / "cifar-10-batches-bin", ORIG / "cifar-10-batches-py"



def py_only(tmp_path) -> Path:
    shutil.copytree(PY, tmp_path / "cifar-10-batches-py")
    return tmp_path


def test_binary_and_python_archives_give_identical_arrays(tmp_path):
    py_dir = py_only(tmp_path)
    assert image.find_source(ORIG) == ("bin", BIN)  # the binary archive is preferred
    assert image.find_source(py_dir) == ("py", py_dir / "cifar-10-batches-py")
    for names, n in ((image.TRAIN_BATCHES, 8), (image.TEST_BATCHES, 2)):  # 4 + 1 + 1 + 1 + 1 and 2 fixture images
        rgb_bin, labels_bin = image.read_batches(ORIG, names)
        rgb_py, labels_py = image.read_batches(py_dir, names)
        assert rgb_bin.shape == (n, 3072) and rgb_bin.dtype == np.uint8 and labels_bin.dtype == np.int32
        np.testing.assert_array_equal(rgb_bin, rgb_py)
        np.testing.assert_array_equal(labels_bin, labels_py)
    first = BIN.joinpath("data_batch_1.bin").read_bytes()[:image.RECORD]
    rgb, labels = image.read_batches(ORIG, ("data_batch_1",))
    assert labels[0] == first[0] and rgb[0].tobytes() == first[1:]  # label byte, then the R, G, B planes
    for split in image.SPLITS:
        for tokenize in (True, False):
            a, b = image.load_split(ORIG, split, tokenize=tokenize), image.load_split(py_dir, split, tokenize=tokenize)
            np.testing.assert_array_equal(a["inputs"], b["inputs"])


def test_tar_gz_archives_are_read_in_place(tmp_path):
    for kind, folder in (("bin", BIN), ("py", PY)):
        d = tmp_path / kind
        d.mkdir()
        with tarfile.open(d / image.ARCHIVES[kind], "w:gz") as tar:
            tar.add(folder, arcname=folder.name)
        assert image.find_source(d) == (kind, d / image.ARCHIVES[kind])
        for split in image.SPLITS:
            np.testing.assert_array_equal(image.load_split(d, split)["inputs"], image.load_split(ORIG, split)["inputs"])
        assert [p.name for p in d.iterdir()] == [image.ARCHIVES[kind]]  # nothing unpacked


def test_grayscale_is_tensorflows_formula_on_known_pixels():
    pixels = [(255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 200, 0), (1, 1, 1), (0, 0, 0)]
    rgb = np.zeros((1, 3072), np.uint8)
    for i, (r, g, b) in enumerate(pixels):
        rgb[0, i], rgb[0, 1024 + i], rgb[0, 2048 + i] = r, g, b
    gray = image.to_gray(rgb)[0, :len(pixels)]
    # trunc((0.2989 r + 0.5870 g + 0.1140 b) / 255 * 255.5): white 0.9999 * 255.5 = 255.47; red 76.37; green 149.97;
    # blue 29.13; green 200: 0.587 * 200 / 255 * 255.5 = 117.63; (1, 1, 1): 1.0019
    assert gray.tolist() == [255, 76, 149, 29, 117, 1, 0]
    pil = [int(np.asarray(Image.fromarray(np.array([[p]], np.uint8), "RGB").convert("L"))[0, 0]) for p in pixels]
    assert pil[2] == 150  # PIL rounds (299 R + 587 G + 114 B) / 1000: pure green differs by one level


def test_pil_and_tf_grays_differ_by_at_most_one_level():
    rgb = np.random.default_rng(0).integers(0, 256, (1, 3072), dtype=np.uint8)
    ours = image.to_gray(rgb)[0].astype(int)
    hwc = rgb.reshape(3, 32, 32).transpose(1, 2, 0)
    pil = np.asarray(Image.fromarray(hwc, "RGB").convert("L")).reshape(-1).astype(int)
    assert np.abs(ours - pil).max() == 1 and 0.1 < np.mean(ours != pil) < 0.5


def test_splits_follow_the_official_90_10_cut_in_file_order():
    rgb, labels = image.read_batches(ORIG, image.TRAIN_BATCHES)
    train, val, test = (image.load_split(ORIG, s) for s in image.SPLITS)
    assert (len(train["labels"]), len(val["labels"]), len(test["labels"])) == (7, 1, 2)  # round(90% of 8) = 7
    np.testing.assert_array_equal(train["inputs"], image.to_gray(rgb[:7]))
    np.testing.assert_array_equal(val["inputs"], image.to_gray(rgb[7:]))  # the last: data_batch_5's image
    np.testing.assert_array_equal(np.concatenate([train["labels"], val["labels"]]), labels)
    rgb_test, labels_test = image.read_batches(ORIG, image.TEST_BATCHES)
    np.testing.assert_array_equal(test["labels"], labels_test)
    assert round(50_000 * (1 - image.VAL_FRACTION)) == 45_000


def test_tokens_and_normalised_values():
    tok = image.load_split(ORIG, "train", tokenize=True)
    assert tok["inputs"].shape == (7, 1024) and tok["inputs"].dtype == np.int32
    assert 0 <= tok["inputs"].min() and tok["inputs"].max() <= 255 and (tok["lengths"] == 1024).all()
    cont = image.load_split(ORIG, "train", tokenize=False)
    assert cont["inputs"].shape == (7, 1024, 1) and cont["inputs"].dtype == np.float32
    np.testing.assert_allclose(cont["inputs"][..., 0], (tok["inputs"] / 255 - image.MEAN) / image.STD, rtol=1e-5)
    lo, hi = image.PIXEL_RANGE
    assert lo == pytest.approx((0 - 122.6 / 255) / (61.0 / 255)) and hi == pytest.approx((1 - 122.6 / 255) / (61.0 / 255))
    assert lo <= cont["inputs"].min() and cont["inputs"].max() <= hi + 1e-6


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _RunsShell(marker), b"labels": [0]}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (posix|nt|os)\.system"):
        image.RestrictedUnpickler(io.BytesIO(evil), encoding="bytes").load()
    assert not marker.exists()
    pickle.loads(evil)  # the same bytes through the plain unpickler really do run the command ...
    assert marker.exists()  # ... so the refusal above is what stopped it
    marker.unlink()
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(PY, folder)
    (folder / "test_batch").write_bytes(evil)
    with pytest.raises(pickle.UnpicklingError, match=r"test_batch: refused global (posix|nt|os)\.system"):
        image.load_split(tmp_path, "test")
    assert not marker.exists()
    # only the listed NumPy names are admitted, not all of numpy
    with pytest.raises(pickle.UnpicklingError, match=r"refused global numpy\.frombuffer"):
        image.RestrictedUnpickler(io.BytesIO(pickle.dumps(np.frombuffer, protocol=2))).load()
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (builtins|__builtin__)\.eval"):
        image.RestrictedUnpickler(io.BytesIO(pickle.dumps(eval, protocol=2))).load()


def test_restricted_unpickler_reads_a_batch_re_pickled_by_python_3():
    batch = {"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), "labels": [3, 9]}  # str keys
    raw = pickle.dumps(batch, protocol=2)
    assert b"_codecs" in raw and b"_reconstruct" in raw  # Python 3 writes the array's bytes via _codecs.encode
    data, labels = image.parse_py(raw, "mem")
    np.testing.assert_array_equal(data, batch["data"])
    assert labels.tolist() == [3, 9] and labels.dtype == np.int32


def test_bad_batches_and_missing_data_are_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    shutil.copytree(BIN, folder)
    path = folder / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"test_batch.bin: 6141 bytes is not a whole number of 3073-byte"):
        image.load_split(tmp_path, "test")
    raw = bytearray(BIN.joinpath("test_batch.bin").read_bytes())
    raw[image.RECORD] = 12  # the second record's label byte
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"test_batch.bin: record 1 has label 12"):
        image.load_split(tmp_path, "test")
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-bin/data_batch_3.bin is missing"):
        image.load_split(tmp_path, "train")
    with pytest.raises(FileNotFoundError) as e:
        image.load_split(tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere" / "cifar-10-batches-bin") in str(e.value) and image.URL in str(e.value)
    assert image.find_source(BIN) == ("bin", BIN)  # data_dir may be the folder itself


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_configs_build_for_every_model(model):
    from configs import published

    # the model's published settings, else the LRA Transformer's (the budget rule copies data.tokenize from them)
    settings = published.settings_for(model, "image") or published.settings_for("transformer", "image")
    tokenize = settings.get("data.tokenize", True)
    for arg in (model, f"{model},small"):
        c = lra_image.get_config(arg)
        assert c.task == "image" and c.data.tokenize == tokenize
        assert c.pretraining.target == ("auto" if tokenize else "l1")  # continuous pixels: predict the value
    lra = lra_image.get_config("transformer")  # LRA base_cifar10_config, as configs/published.py records it
    want = published.settings_for("transformer", "image")
    assert (lra.model.d_model, lra.model.num_layers, lra.batch_size) == (
        want["model.d_model"], want["model.num_layers"], want["batch_size"])


@pytest.mark.parametrize("tokenize", [True, False])
def test_task_spec_from_the_config(tokenize):
    c = lra_image.get_config("transformer,small")
    c.data.data_dir, c.data.tokenize = str(ORIG), tokenize
    task = tasks.get_task(c)
    assert (task.name, task.seq_len, task.num_classes, task.input_channels) == ("image", 1024, 10, 1)
    assert task.vocab_size == (256 if tokenize else None)
    assert task.pixel_range == (None if tokenize else image.PIXEL_RANGE)
    assert task.load("val")["inputs"].shape == ((1, 1024) if tokenize else (1, 1024, 1))


def test_train_cli_runs_on_the_fixture_with_continuous_pixels(tmp_path):
    shutil.copytree(BIN, tmp_path / "data" / BIN.name)
    final = train_tiny("lra_image.py:transformer,small", tmp_path / "wd", tmp_path / "data", data__tokenize=False)
    assert final["step"] == 2 and final["test_count"] == 2 and final["val_count"] == 1
