"""The Pathfinder generator's seed test at the image border and its image composition, against cases worked out by
hand and against a plain OpenCV-style dilation written here (no OpenCV, no original code needed).

PF's seed test: ``cv2.dilate(occupancy, kernel)`` with the dash's core as kernel (anchored at its centre) reads
``src[y + dy, x + dx]`` for every kernel offset (dy, dx) and pads the image with the lowest value (-DBL_MAX for
float64); ``find_available_coordinates`` then returns no start at all if anything is negative, else the pixels where
``ceil(dilated - 0.3) == 0``.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from lra.data import pathfinder_gen as gen

LOWEST = -np.finfo(np.float64).max


def opencv_style_dilate(src: np.ndarray, offsets) -> np.ndarray:
    """max over the offsets of src[y + dy, x + dx], with -DBL_MAX outside the image (OpenCV's default border for
    dilation); an empty kernel gives -DBL_MAX everywhere. Plain loops."""
    h, w = src.shape
    out = np.full((h, w), LOWEST)
    for y in range(h):
        for x in range(w):
            for dy, dx in offsets:
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    out[y, x] = max(out[y, x], src[y + dy, x + dx])
    return out


def shifted_dilate(src: np.ndarray, offsets) -> np.ndarray:
    """The same, vectorised: the image padded with -DBL_MAX, one shifted view per offset (checked against the loops
    in test_shifted_dilation_equals_the_loops)."""
    h, w = src.shape
    d = max([abs(v) for o in offsets for v in o] + [0])
    big = np.pad(src.astype(np.float64), d, constant_values=LOWEST)
    out = np.full((h, w), LOWEST)
    for dy, dx in offsets:
        np.maximum(out, big[d + dy:d + dy + h, d + dx:d + dx + w], out=out)
    return out


def pf_free_mask(occupancy: np.ndarray, offsets, dilate=opencv_style_dilate) -> np.ndarray:
    """PF's seed_snake + find_available_coordinates: the free starts (bool map), none when the dilation went
    negative."""
    dilated = dilate(occupancy, offsets)
    if dilated.min() < 0:
        return np.zeros(occupancy.shape, bool)
    return np.ceil(dilated - 0.3) == 0


def pf_free_starts(occupancy: np.ndarray, offsets) -> set:
    return {(int(y), int(x)) for y, x in zip(*np.nonzero(pf_free_mask(occupancy, offsets)))}


def toy_kit(R: int, cores: list) -> types.SimpleNamespace:
    """The fields of a Kit that free_starts reads, for hand-made cores on an R x R image."""
    P = 3
    cores = [np.asarray(c, np.int64).reshape(-1, 2) for c in cores]
    return types.SimpleNamespace(P=P, R=R, W=R + 2 * P, cores=cores,
                                 valid=np.array([gen.seed_heading_valid(c, R) for c in cores]))


def padded(blocked: np.ndarray, P: int = 3) -> np.ndarray:
    return np.pad(blocked, P).ravel()


def test_dilation_at_the_border_by_hand():
    """3 x 3 image, only the centre occupied. Kernel = right neighbour only, offsets {(0, +1)}: column 2 reads off
    the image, so it is -DBL_MAX there and the heading gets no start at all. Kernel = both neighbours, {(0, -1),
    (0, +1)}: every pixel reads one neighbour inside; dilated row 1 = [1, 0, 1] (the centre's two neighbours read
    the centre, the centre reads its free neighbours), rows 0 and 2 all 0: 7 free starts, all but (1, 0) and (1, 2)."""
    occupancy = np.zeros((3, 3))
    occupancy[1, 1] = 1.0
    right = [(0, 1)]
    both = [(0, -1), (0, 1)]
    d = opencv_style_dilate(occupancy, right)
    assert (d[:, 2] == LOWEST).all() and (d[:, :2] >= 0).all()
    assert pf_free_starts(occupancy, right) == set()
    assert opencv_style_dilate(occupancy, both)[1].tolist() == [1.0, 0.0, 1.0]
    expected = {(y, x) for y in range(3) for x in range(3)} - {(1, 0), (1, 2)}
    assert pf_free_starts(occupancy, both) == expected

    kit = toy_kit(3, [right, both])
    blocked = padded(occupancy > 0.3)
    assert kit.valid.tolist() == [False, True]
    assert len(gen.free_starts(kit, blocked, 0)) == 0  # all offsets outside for column 2: no start for heading 0
    assert {tuple(map(int, v)) for v in gen.free_starts(kit, blocked, 1)} == expected


@pytest.mark.parametrize("offsets,R,valid", [
    ([(0, 0)], 4, True),  # the anchor itself: every pixel reads itself
    ([(1, 1)], 4, False),  # the last row and column read off the image
    ([(-1, -1), (1, 1)], 4, False),  # corner (0, 3) reads (-1, 2) and (1, 4): both off
    ([(-1, -1), (1, 1), (-1, 1), (1, -1)], 4, True),  # every corner has a diagonal inside
    ([(-1, -1), (1, 1), (-1, 1), (1, -1)], 1, False),  # a 1-pixel image: every offset is off it
    ([(3, 0), (-3, 0), (0, 3), (0, -3)], 4, False),  # (1, 1): (4, 1), (-2, 1), (1, 4), (1, -2), all off
    ([(3, 0), (-3, 0), (0, 3), (0, -3)], 7, True),
    ([], 4, False),  # an empty kernel: -DBL_MAX everywhere
])
def test_heading_validity_by_hand(offsets, R, valid):
    assert gen.seed_heading_valid(np.asarray(offsets, np.int64).reshape(-1, 2), R) == valid
    assert (opencv_style_dilate(np.zeros((R, R)), offsets).min() >= 0) == valid


def test_shifted_dilation_equals_the_loops():
    rng = np.random.default_rng(0)
    for trial in range(20):
        R = int(rng.integers(1, 7))
        src = rng.random((R, R)) * (rng.random((R, R)) < 0.4)
        offsets = [tuple(map(int, o)) for o in rng.integers(-3, 4, size=(int(rng.integers(0, 5)), 2))]
        assert np.array_equal(shifted_dilate(src, offsets), opencv_style_dilate(src, offsets))


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_kit_seed_rule_equals_the_opencv_style_rule_on_a_random_map(resolution):
    """Every heading (every 7th at 128/256) of every margin: the Kit's valid flag equals 'the dilation of an empty
    map stays >= 0', and free_starts equals PF's rule on a random occupancy (border ring occupied as in
    seed_snake). Valid headings: 30 of 360 at 32 (-150 to -121 degrees), 95 at 64, all or nearly all at 128, 256."""
    p = gen.params_for(resolution, "hard")
    rng = np.random.default_rng(resolution)
    expected_valid = {32: {1: 30}, 64: {1: 95}, 128: {2: 354, 3: 360}, 256: {3: 360}}[resolution]
    for m in p.margins:
        kit = gen.kit_for(p, m)
        assert int(kit.valid.sum()) == expected_valid[m]
        occupancy = (rng.random((resolution, resolution)) < 0.02).astype(np.float64)
        occupancy[0], occupancy[-1], occupancy[:, 0], occupancy[:, -1] = 1, 1, 1, 1
        blocked = np.zeros((kit.W, kit.W), bool)
        blocked[kit.P:kit.P + resolution, kit.P:kit.P + resolution] = occupancy > 0.3
        for h in range(360) if resolution <= 64 else range(0, 360, 7):
            offsets = kit.cores[h].tolist()
            assert kit.valid[h] == (shifted_dilate(np.zeros((resolution,) * 2), offsets).min() >= 0), h
            ours = np.zeros((resolution, resolution), bool)
            starts = gen.free_starts(kit, blocked.ravel(), h)
            ours[starts[:, 0], starts[:, 1]] = True
            assert np.array_equal(ours, pf_free_mask(occupancy, offsets, shifted_dilate)), h
    if resolution == 32:
        assert (np.flatnonzero(kit.valid) - 180).tolist() == list(range(-150, -120))


def test_generated_seeds_use_valid_headings_only():
    """At 32 x 32 every seed (the first target's and each distractor's) has a valid heading, and every contour
    starts with a core pixel inside the image (before the fix a seed could have its whole core off the image)."""
    p = gen.params_for(32, "hard")
    distractors = []
    for i in range(12):
        s = gen.render(p, gen.image_rng(4, p, i), geometry=True)
        kit = gen.kit_for(p, s.margin)
        stamps = s.geometry["stamps"]
        for c in [stamps[0]] + stamps[2:]:
            y, x, h = c[0]
            assert kit.valid[h]
            cy, cx = kit.cores[h][:, 0] + y, kit.cores[h][:, 1] + x
            assert ((cy >= 0) & (cy < 32) & (cx >= 0) & (cx < 32)).any()
        assert -150 <= np.degrees(s.geometry["targets"][0][0][4]) <= -121
        distractors.append(len(stamps) - 2)
    assert np.mean(distractors) < 5  # PF places about 2 of the 10 asked for at 32 x 32 (hard)


def test_composition_rounds_each_dash_to_float32_like_pf():
    """Every paint level u of a pf32 target (contrast 0.75 * 2.0) next to a full distractor dash (2.0, the image
    max): PF's pixel is bytescale(float64(float32(u / 255 * 1.5))) = floor(f * 255 / 2.0 + 0.5); 20 of the 256
    levels come out one grey level off the float64 value (both ways), so the test tells the two apart."""
    p = gen.params_for(32, "hard")
    u = np.zeros((17, 16), np.uint8)  # rows 0-15: every level; row 16: zeros (the bytescale's min)
    u[:16] = np.arange(256).reshape(16, 16)
    full = np.zeros_like(u)
    full[16, 0] = 255  # one distractor pixel at 2.0 sets the bytescale's max
    zero = np.zeros_like(u)
    image = gen.compose(p, [u, zero], full, zero)
    f32 = (u / 255 * 1.5).astype(np.float32).astype(np.float64)
    pf = np.floor(f32 * (255 / 2.0) + 0.5).astype(np.uint8)
    pf[16, 0] = 255
    assert np.array_equal(image, pf)
    f64 = np.floor(u / 255 * 1.5 * (255 / 2.0) + 0.5).astype(np.uint8)
    f64[16, 0] = 255
    assert (image != f64).any() and (np.abs(image.astype(int) - f64) <= 1).all()


def test_per_image_seeding_is_unchanged_by_batching_order():
    """An image is a function of (seed, settings, index) only: rendering indices out of order gives the same bytes."""
    p = gen.params_for(32, "hard")
    forward = [gen.render(p, gen.image_rng(9, p, i)).image for i in range(4)]
    backward = [gen.render(p, gen.image_rng(9, p, i)).image for i in reversed(range(4))][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(forward, backward))
