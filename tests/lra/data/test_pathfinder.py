"""Pathfinder: the release layout read exactly (text and np.save metadata), clear errors, the split, the inputs; the
generator reproducible across worker counts, faithful (curvature limit, labels, parameters) and read back."""
import math
import shutil
import warnings
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lra.data import pathfinder as pf
from lra.data import pathfinder_gen as gen
from tests.lra.data.helpers import train_tiny

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def release(fixtures_dir):
    return fixtures_dir / "lra_release"


@pytest.fixture(autouse=True)
def fresh_memo():
    pf._MEMO.clear()
    yield
    pf._MEMO.clear()


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path), np.uint8)


# ----------------------------------------------------------------------------------------------------- reader

def test_reads_text_metadata_in_integer_file_order(release, tmp_path):
    d = pf.find_dir(release, 32, "hard")
    assert d == release / "pathfinder32" / "curv_contour_length_14"
    images, labels = pf.load_examples(d, 32, workers=1, cache_dir=tmp_path, progress=False)
    # metadata/0.npy rows (imgs/0, labels 0 0 1) then metadata/1.npy rows (imgs/1, labels 1 0 0)
    assert labels.tolist() == [0, 0, 1, 1, 0, 0] and labels.dtype == np.int32
    assert images.dtype == np.uint8 and images.shape == (6, 32, 32)
    expected = [d / f"imgs/{k}/sample_{i}.png" for k in (0, 1) for i in range(3)]
    assert all(np.array_equal(images[n], png(p)) for n, p in enumerate(expected))
    # the tarball's extra lra_release/ level, and the directory itself, are accepted too
    assert pf.find_dir(release.parent, 32, "hard") == d
    assert pf.find_dir(d, 32, "hard") == d and pf.find_dir(d.parent, 32, "hard") == d
    with pytest.raises(FileNotFoundError):  # another difficulty's directory is not taken for this one
        pf.find_dir(release / "pathfinder32" / "curv_baseline", 32, "hard")


def test_reads_np_save_metadata(fixtures_dir, tmp_path):
    d = pf.find_dir(fixtures_dir / "pathfinder_generator_native", 32, "hard")
    assert np.load(d / "metadata" / "0.npy").shape == (4, 11)  # a real np.save array, not text
    images, labels = pf.load_examples(d, 32, workers=1, cache_dir=tmp_path, progress=False)
    assert labels.tolist() == [0, 0, 1, 1]
    assert all(np.array_equal(images[i], png(d / f"imgs/0/sample_{i}.png")) for i in range(4))


def test_empty_png_is_skipped_and_counted_in_one_warning(release, tmp_path):
    d = pf.find_dir(release, 32, "easy")
    assert (d / "imgs/0/sample_172.png").stat().st_size == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, labels = pf.load_examples(d, 32, workers=1, cache_dir=tmp_path, progress=False)
    messages = [str(w.message) for w in caught if "Pathfinder" in str(w.message)]
    assert len(messages) == 1 and "skipped 1 empty PNG" in messages[0] and "sample_172.png" in messages[0]
    assert images.shape == (4, 32, 32) and labels.tolist() == [0, 1, 1, 0]
    pf._MEMO.clear()
    with pytest.warns(UserWarning, match=r"skipped 1 empty PNG .*sample_172\.png"):  # from the cache too
        assert len(pf.load_examples(d, 32, workers=1, cache_dir=tmp_path, progress=False)[1]) == 4


@pytest.mark.parametrize("resolution,margins", [(64, [1, 1]), (128, [2, 3]), (256, [3, 3])])
def test_other_resolutions(release, tmp_path, resolution, margins):
    d = pf.find_dir(release, resolution, "hard")
    images, labels = pf.load_examples(d, resolution, workers=1, cache_dir=tmp_path, progress=False)
    assert images.shape == (2, resolution, resolution)
    rows = (d / "metadata" / "0.npy").read_text().splitlines()
    assert [int(r.split()[9]) for r in rows] == margins


def test_metadata_files_sort_by_integer_stem(release, tmp_path):
    src = release / "pathfinder32" / "curv_contour_length_14"
    d = tmp_path / "pathfinder32" / "curv_contour_length_14"
    (d / "metadata").mkdir(parents=True)
    for k, (meta, imgs) in {10: ("0.npy", "0"), 2: ("1.npy", "1")}.items():
        shutil.copytree(src / "imgs" / imgs, d / "imgs" / str(k))
        text = (src / "metadata" / meta).read_text().replace(f"imgs/{imgs} ", f"imgs/{k} ")
        (d / "metadata" / f"{k}.npy").write_text(text)
    _, labels = pf.load_examples(d, 32, workers=1, progress=False)
    assert labels.tolist() == [1, 0, 0, 0, 0, 1]  # 2.npy (old 1.npy) before 10.npy (old 0.npy)


@pytest.mark.parametrize("row,what", [
    ("imgs/0 sample_0.png 0 0 1.0 14 4 2 0.5 1", "expected 11 space-separated fields"),
    ("imgs/0 sample_0.png 0 2 1.0 14 4 2 0.5 1 1", "label (field 4) must be 0 or 1"),
    ("imgs/0 sample_0.png x 1 1.0 14 4 2 0.5 1 1", "image index (field 3) must be an integer"),
    ("../imgs sample_0.png 0 1 1.0 14 4 2 0.5 1 1", "relative image path"),
])
def test_malformed_row_names_file_and_line(tmp_path, row, what):
    meta = tmp_path / "metadata"
    meta.mkdir()
    (meta / "0.npy").write_text("imgs/0 sample_1.png 1 1 1.0 14 4 2 0.5 1 1\n" + row + "\n")
    with pytest.raises(ValueError) as e:
        pf.read_metadata(tmp_path)
    assert f"{meta / '0.npy'}:2:" in str(e.value) and what in str(e.value)


def test_bad_np_save_array_and_file_names(tmp_path):
    meta = tmp_path / "metadata"
    meta.mkdir()
    np.save(meta / "0.npy", np.array([["imgs/0", "sample_0.png", "0", "1"]]))
    with pytest.raises(ValueError, match=r"0\.npy: expected an \(N, 11\) array"):
        pf.read_metadata(tmp_path)
    (meta / "0.npy").unlink()
    (meta / "extra.npy").write_text("")
    with pytest.raises(ValueError, match=r"extra\.npy: metadata files are named <integer>\.npy"):
        pf.read_metadata(tmp_path)


def test_missing_data_and_missing_png_say_what_to_do(release, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        pf.find_dir(tmp_path / "nowhere", 128, "hard")
    msg = str(e.value)
    assert "pathfinder128/curv_contour_length_14/metadata" in msg and pf.URL in msg
    assert "python -m lra.data.pathfinder --generate --resolution 128" in msg
    d = tmp_path / "pathfinder32" / "curv_baseline"
    shutil.copytree(release / "pathfinder32" / "curv_baseline", d)
    (d / "imgs/0/sample_2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"sample_2\.png: listed in .*0\.npy:3 but missing"):
        pf.load_examples(d, 32, workers=1, progress=False)


def test_split_is_seeded_80_10_10():
    s = pf.split_indices(1000)
    assert [len(s[k]) for k in pf.SPLITS] == [800, 100, 100]
    assert np.array_equal(np.sort(np.concatenate(list(s.values()))), np.arange(1000))
    again = pf.split_indices(1000, seed=pf.SPLIT_SEED)
    assert all(np.array_equal(s[k], again[k]) for k in pf.SPLITS)
    assert not np.array_equal(pf.split_indices(1000, seed=1)["val"], s["val"])
    assert [len(v) for v in pf.split_indices(6).values()] == [6, 0, 0]


def test_continuous_and_token_inputs(release, tmp_path):
    d = pf.find_dir(release, 32, "hard")
    images, _ = pf.load_examples(d, 32, workers=1, cache_dir=tmp_path, progress=False)
    split = pf.load_split(d, "train", 32, cache_dir=tmp_path, progress=False)  # 6 images: all in train
    x = split["inputs"]
    assert x.shape == (6, 1024, 1) and x.dtype == np.float32 and len(x) == 6
    assert np.array_equal(x[-1], x[np.array([5])][0]) and x[2:4].shape == (2, 1024, 1)
    batch = x[np.array([4, 1])]
    assert batch.dtype == np.float32 and batch.shape == (2, 1024, 1)
    assert np.allclose(batch[:, :, 0], images[[4, 1]].reshape(2, -1) / 255.0) and batch.max() == 1.0
    assert split["lengths"].tolist() == [1024] * 6 and split["labels"].tolist() == [0, 0, 1, 1, 0, 0]
    centred = pf.load_split(d, "train", 32, center=True, cache_dir=tmp_path, progress=False)["inputs"]
    assert np.allclose(centred[np.arange(6)], 2 * np.asarray(x) - 1) and centred[0].min() == -1.0
    tokens = pf.load_split(d, "train", 32, tokenize=True, cache_dir=tmp_path, progress=False)["inputs"]
    assert tokens.dtype == np.int32 and tokens.shape == (6, 1024)
    assert np.array_equal(tokens[np.arange(6)], images.reshape(6, -1).astype(np.int32))
    with pytest.raises(ValueError, match="unknown Pathfinder split"):
        pf.load_split(d, "dev", 32, cache_dir=tmp_path, progress=False)


def test_decoded_cache_is_atomic_and_reused(release, tmp_path, monkeypatch):
    d = pf.find_dir(release, 32, "hard")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pf, "_decode_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pf.load_examples(d, 32, workers=1, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    monkeypatch.undo()
    first, _ = pf.load_examples(d, 32, workers=1, cache_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert len(list(tmp_path.glob("decoded-*.npy"))) == 2  # images and kept indices
    pf._MEMO.clear()
    monkeypatch.setattr(pf, "_decode_chunk", interrupted)  # a cache hit decodes nothing
    again, labels = pf.load_examples(d, 32, workers=1, cache_dir=tmp_path, progress=False)
    assert np.array_equal(first, again) and labels.tolist() == [0, 0, 1, 1, 0, 0]


# ----------------------------------------------------------------------------------------------------- generator

def test_parameters_match_lra_and_the_release_rows(release):
    p = gen.params_for(128, "hard")
    assert (p.seed_distance, p.margins, p.paddle_length, p.thickness, p.marker_radius, p.continuity) == \
        (20, (2, 3), 5, 1.5, 3, 1.8)
    assert [gen.params_for(r, "hard").num_distractor_snakes for r in (32, 64, 128, 256)] == [10, 11, 17, 15]
    assert gen.params_for(32, "easy").contour_length == 6 and gen.params_for(32, "intermediate").distractor_length == 3
    assert gen.params_for(32, "hard", num_distractor_snakes=5).num_distractor_snakes == 5
    for r in (32, 64, 128, 256):  # fields 5-11 of our rows are those of the release's rows
        row = (release / f"pathfinder{r}/curv_contour_length_14/metadata/0.npy").read_text().split("\n")[0].split()
        assert gen.params_for(r, "hard").metadata_fields(int(row[9])) == row[4:]
    with pytest.raises(ValueError, match="unknown Pathfinder difficulty"):
        gen.params_for(32, "medium")
    with pytest.raises(ValueError, match="resolution"):
        gen.params_for(48)


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_images_are_8bit_gray_with_full_range(resolution):
    p = gen.params_for(resolution, "hard")
    s = gen.render(p, gen.image_rng(0, p, 1))
    assert s.image.dtype == np.uint8 and s.image.shape == (resolution, resolution)
    assert s.image.max() == 255 and s.image.min() == 0 and s.label in (0, 1) and s.margin in p.margins


def test_vectorised_targets_equal_the_plain_loop():
    for r, batch in ((32, 8), (128, 16)):
        p = gen.params_for(r, "hard")
        for i in range(3):
            a = gen.render(p, gen.image_rng(5, p, i), geometry=True, batch=batch)
            b = gen.render(p, gen.image_rng(5, p, i), geometry=True, batch=batch, plain=True)
            assert np.array_equal(a.image, b.image) and a.geometry["targets"] == b.geometry["targets"]


def test_first_seed_starts_are_pfs_exact_seed_test():
    """The sampler's free starts for the first target (a rectangle plus the edge starts whose core pixels in the
    image all lie in the box) equal PF's test computed by brute force: dilate the occupancy with the core."""
    for r in (32, 128):
        p = gen.params_for(r, "hard")
        for m in p.margins:
            kit = gen.kit_for(p, m)
            band = np.zeros((kit.W, kit.W), np.uint8)  # occupancy: PF's band of 2 * seed_distance
            b = min(2 * p.seed_distance, r)
            inner = band[kit.P:kit.P + r, kit.P:kit.P + r]
            inner[:b], inner[r - b:], inner[:, :b], inner[:, r - b:] = 255, 255, 255, 255
            for h in range(0, 360, 7):
                exact = {tuple(map(int, v)) for v in gen.free_starts(kit, band.ravel() > gen.FREE_AT_MOST, h)}
                if not kit.valid[h]:  # OpenCV's border leaves this heading no start (test_pathfinder_gen.py)
                    assert exact == set() and kit.box_size[h] == 0 and len(kit.seed_extras(h)) == 0
                    continue
                y0, y1, x0, x1 = kit.box[h]
                rect = {(y, x) for y in range(y0, y1 + 1) for x in range(x0, x1 + 1)}
                assert len(rect) == kit.box_size[h]
                assert exact == rect | {tuple(map(int, v)) for v in kit.seed_extras(h)}


def _reach(mask: np.ndarray, start) -> np.ndarray:
    """Pixels of ``mask`` 8-connected to ``start`` (a plain breadth-first flood fill)."""
    seen = np.zeros_like(mask, bool)
    if not mask[start]:
        return seen
    seen[start] = True
    todo = deque([start])
    while todo:
        y, x = todo.popleft()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                v, u = y + dy, x + dx
                if 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1] and mask[v, u] and not seen[v, u]:
                    seen[v, u] = True
                    todo.append((v, u))
    return seen


@pytest.mark.parametrize("resolution,count", [(32, 16), (128, 8)])
def test_label_says_whether_the_markers_share_a_contour(resolution, count):
    """The second marker sits on the end of the first marker's target iff the label is 1 (flood fill from the first
    marker over that target's occupancy, mask >= 1/8, reaches it), else on the other target's end; each target is
    one connected piece from its start to its end. (Not "reached iff label 1": as in PF, a target grows without
    seeing the other's newest dash, so the two may touch.)"""
    p = gen.params_for(resolution, "hard")
    labels = []
    for i in range(count):
        s = gen.render(p, gen.image_rng(0, p, i), geometry=True)
        g = s.geometry
        first, second = g["markers"]
        on = [g["target_mask"][t][first] >= 32 for t in (0, 1)]
        assert on[g["origin"]] and s.image[first] >= 200 and s.image[second] >= 200
        ends = [tuple(map(int, dashes[-1][:2])) for dashes in g["stamps"][:2]]
        assert tuple(map(int, second)) == ends[g["origin"] if s.label == 1 else 1 - g["origin"]]
        if s.label == 1:
            assert _reach(g["target_mask"][g["origin"]] >= 32, first)[second]
        for mask, dashes in zip(g["target_mask"], g["targets"]):
            start, end = (int(dashes[0][0]), int(dashes[0][1])), (int(dashes[-1][2]), int(dashes[-1][3]))
            assert _reach(mask >= 32, start)[end]
        labels.append(s.label)
    assert 0 < sum(labels) < count


@pytest.mark.parametrize("resolution", [32, 128])
def test_turns_stay_below_90_over_continuity_and_dashes_keep_their_spacing(resolution):
    p = gen.params_for(resolution, "hard")
    limit = math.radians(90 / p.continuity)
    worst, gaps = 0.0, []
    for i in range(6):
        s = gen.render(p, gen.image_rng(3, p, i), geometry=True)
        contours = s.geometry["targets"] + s.geometry["distractors"]
        assert [len(c) for c in s.geometry["targets"]] == [p.contour_length] * 2
        assert all(len(c) == p.distractor_length for c in s.geometry["distractors"])
        for dashes in contours:
            for a, b in zip(dashes, dashes[1:]):
                turn = abs(a[4] - b[4])
                worst = max(worst, min(turn, 2 * math.pi - turn))
                # end of one dash to the start of the next: 2m, up to three roundings (pivot, candidate, seed
                # head) of at most a pixel per axis
                gaps.append(math.hypot(b[0] - a[2], b[1] - a[3]) - 2 * s.margin)
    assert worst < limit and worst > 0.5 * limit  # the limit binds: turns come close to it, never past it
    assert max(map(abs, gaps)) <= 3 * math.sqrt(2) and abs(np.mean(gaps)) < 1.0


LIMIT = 459  # PF's 1.8 in 1/255 units (1.8 * 255 = 459)


def _unseen(c, j, contour_length):
    """The dashes placed before dash j of contour c that PF's map lacks when it tests that dash: its predecessor;
    for a target also the other target's newest dash; for a distractor the first target's last dash (PF never adds
    it to the map)."""
    return {(c, j - 1), (1, j - 1) if c == 0 else (0, j) if c == 1 else (0, contour_length - 1)}


def _placement_order(stamps, contour_length):
    """(contour, dash) in the order the generator placed them: both target seeds, the targets' dashes
    alternately, then each distractor's dashes."""
    order = [(0, 0), (1, 0)] + [(t, i) for i in range(1, contour_length) for t in (0, 1)]
    return order + [(c, i) for c in range(2, len(stamps)) for i in range(len(stamps[c]))]


@pytest.mark.parametrize("resolution,count", [(32, 6), (128, 2)])
def test_every_grown_dash_obeys_the_margin_rule(resolution, count):
    """PF's margin rule, checked from the geometry: a grown dash was accepted only if its mask (the dash dilated
    by the margin) plus the occupancy (the image border band, and the mask of every dash placed before it except
    those PF's map lacks, :func:`_unseen`) stays below 1.8 (459 / 255) at every pixel. Checked pair by pair in
    exact uint8 units (exact for PF's float32 masks too: no two masks summing to 459 / 255 fall below 1.8)."""
    p = gen.params_for(resolution, "hard")
    closest = []
    for i in range(count):
        s = gen.render(p, gen.image_rng(21, p, i), geometry=True)
        kit = gen.kit_for(p, s.margin)
        r = gen._Renderer(p, kit, None)
        stamps = s.geometry["stamps"]
        mask = {}
        for c, dashes in enumerate(stamps):
            for j, (y, x, h) in enumerate(dashes):
                mask[c, j] = r.canvas([gen.Contour([y], [x], [h])], kit.mask).astype(np.int32)
        border = r.border().reshape(kit.W, kit.W)[kit.P:kit.P + kit.R, kit.P:kit.P + kit.R].astype(np.int32)
        order = _placement_order(stamps, p.contour_length)
        assert sorted(order) == sorted(mask)
        for n, (c, j) in enumerate(order):
            if j == 0:
                continue  # seeds follow the seed test (test_first_seed_starts_are_pfs_exact_seed_test)
            assert (mask[c, j] + border).max() < LIMIT
            for other in order[:n]:
                if other not in _unseen(c, j, p.contour_length):
                    peak = (mask[c, j] + mask[other]).max()
                    assert peak < LIMIT, (i, (c, j), other, peak)
                    closest.append(peak)
    assert max(closest) > 255  # the rule binds: masks do overlap, up to the limit and never past it


def test_labels_are_balanced():
    p = gen.params_for(32, "hard")
    labels = [gen.render(p, gen.image_rng(11, p, i)).label for i in range(48)]
    assert 14 <= sum(labels) <= 34


def test_same_seed_same_bytes_with_one_or_two_workers_and_after_a_resume(tmp_path, monkeypatch):
    p = gen.params_for(32, "hard")
    one = pf.write_set(tmp_path / "one", p, 10, seed=7, workers=1, images_per_dir=4, progress=False)
    two = pf.write_set(tmp_path / "two", p, 10, seed=7, workers=2, images_per_dir=4, progress=False)
    assert one == two and list(one) == ["0.npy", "1.npy", "2.npy"]

    def files(d):
        return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}

    assert files(tmp_path / "one") == files(tmp_path / "two")
    assert (tmp_path / "one/metadata/2.npy").read_text().splitlines()[0].startswith("imgs/2 sample_0.png 0 ")
    # a run killed once its first directory is complete resumes to the same bytes
    real = pf._generate_chunk

    def dies_in_the_second_directory(out_dir, p, seed, start, stop, per_dir):
        if start >= per_dir:
            raise KeyboardInterrupt
        return real(out_dir, p, seed, start, stop, per_dir)

    monkeypatch.setattr(pf, "_generate_chunk", dies_in_the_second_directory)
    with pytest.raises(KeyboardInterrupt):
        pf.write_set(tmp_path / "three", p, 10, seed=7, workers=1, images_per_dir=4, progress=False)
    assert sorted(f.name for f in (tmp_path / "three/metadata").iterdir()) == ["0.npy"]
    monkeypatch.undo()
    assert pf.write_set(tmp_path / "three", p, 10, seed=7, workers=1, images_per_dir=4, progress=False) == one
    assert files(tmp_path / "three") == files(tmp_path / "one")


def test_reader_loads_what_ensure_generated_wrote(tmp_path):
    d = pf.ensure_generated(tmp_path, resolution=32, difficulty="easy", num_images=30, seed=2, workers=1,
                            progress=False)
    assert d == tmp_path / "pathfinder_generated/seed2_n30/pathfinder32/curv_baseline"
    assert pf.find_dir(tmp_path / "pathfinder_generated/seed2_n30", 32, "easy") == d
    images, labels = pf.load_examples(d, 32, workers=1, progress=False)
    p = gen.params_for(32, "easy")
    for i in (0, 29):
        s = gen.render(p, gen.image_rng(2, p, i))
        assert np.array_equal(images[i], s.image) and labels[i] == s.label
    mtime = (d / "manifest.json").stat().st_mtime_ns
    assert pf.ensure_generated(tmp_path, resolution=32, difficulty="easy", num_images=30, seed=2, workers=1,
                               progress=False) == d
    assert (d / "manifest.json").stat().st_mtime_ns == mtime  # reused
    assert [p.name for p in d.parent.iterdir()] == ["curv_baseline"]  # no temporary directory left


def test_cli_generates(tmp_path, capsys):
    pf.main(["--generate", "--resolution", "32", "--difficulty", "intermediate", "--num", "3", "--out",
             str(tmp_path), "--workers", "1"])
    out = Path(capsys.readouterr().out.strip())
    assert out == tmp_path / "pathfinder_generated/seed0_n3/pathfinder32/curv_contour_length_9"
    assert (out / "metadata/0.npy").read_text().count("\n") == 3


# ----------------------------------------------------------------------------------------------------- task

def test_tasks_registry_and_release_error(tmp_path):
    from configs import lra_pathfinder, lra_pathx
    from lra import tasks

    c = lra_pathx.get_config("s4")
    c.unlock()
    c.data.source, c.data.data_dir = "release", str(tmp_path)
    task = tasks.get_task(c)
    assert (task.name, task.seq_len, task.vocab_size, task.pixel_range) == ("pathx", 16384, None, (0.0, 1.0))
    with pytest.raises(FileNotFoundError, match="pathfinder128/curv_contour_length_14"):
        task.load("train")
    c = lra_pathfinder.get_config("transformer")
    assert (tasks.get_task(c).seq_len, tasks.get_task(c).vocab_size) == (1024, 256)


@pytest.mark.parametrize("config,images", [("lra_pathfinder.py:transformer,small", 40), ("lra_pathx.py:s4,small", 20)])
def test_train_cli_end_to_end_on_a_tiny_generated_set(tmp_path, config, images):
    """Pathfinder (1,024 pixel tokens) and Path-X (16,384 continuous pixels through S4): generate, train, evaluate."""
    final = train_tiny(config, tmp_path / "wd", tmp_path / "data", data__num_images=images, data__workers=1,
                       batch_size=4, eval_batch_size=4)
    assert final["test_count"] == images // 10 and 0.0 <= final["test_accuracy"] <= 1.0


def test_sample_grid_picture(release, tmp_path):
    """benchmarks/pathfinder_samples.py: one captioned row per resolution, generated or read from a directory."""
    from benchmarks import pathfinder_samples as ps

    out = ps.main(["--resolutions", "32", "128", "--per_row", "3", "--tile", "64", "--out", str(tmp_path / "g.png")])
    with Image.open(out) as im:
        width, height = ps.HEADER + 3 * (64 + ps.GAP) + ps.GAP, 2 * (64 + ps.CAPTION + ps.GAP) + ps.GAP
        assert im.mode == "L" and im.size == (width, height)
        tile = np.asarray(im)[ps.GAP:ps.GAP + 64, ps.HEADER + ps.GAP:ps.HEADER + ps.GAP + 64]
    p = gen.params_for(32, "hard")
    first = gen.render(p, gen.image_rng(0, p, 0)).image
    assert np.array_equal(tile[::2, ::2], first)  # the first tile is sample 0, enlarged 2x
    shutil.copytree(release / "pathfinder32", tmp_path / "pathfinder32")  # the reader caches beside the data
    from_dir = ps.samples(32, 2, from_dir=tmp_path)
    assert len(from_dir) == 2 and from_dir[0][0].shape == (32, 32)
