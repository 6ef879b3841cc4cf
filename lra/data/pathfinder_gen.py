"""A fast reimplementation of the Pathfinder generator (Linsley, Kim et al. 2018; PF ``snakes2.py``) used by LRA.

The algorithm, per image:

1. ``label`` ~ {0, 1}; a margin ``m`` from the resolution's margin list.
2. **Dash**: a straight segment of ``L = paddle_length`` pixels drawn at ``aa = 2`` times the resolution as a line of
   width ``round(thickness * aa)`` and Lanczos-downsampled (``paint``); its occupancy (``mask``) is the same line
   dilated by a disc of radius ``m * aa``, downsampled. Every dash starts on an integer pixel, so a dash's stamps
   depend on its angle only: they are rendered once per angle and cached (:class:`Kit`).
3. **Seed test** (PF ``seed_snake``): a start is free iff the dash's fully occupied core, used as an OpenCV
   dilation kernel on the occupancy, finds only free pixels; pixels off the image do not count, except that
   OpenCV pads a dilation with the lowest value, so if some image pixel has *every* core offset off the image the
   dilation holds -DBL_MAX there and PF finds **no start for that heading at all** (:func:`seed_heading_valid`).
   At 32 x 32 only 30 of the 360 headings (-150 to -121 degrees) survive that, at 64 x 64 95, at 128 x 128 354
   (margin 2) or all; a seed with another heading fails, so most distractor seeds fail at 32 x 32.
   **Two targets** of ``contour_length`` dashes. Seed 1: heading = integer degrees in [-180, 180), start uniform
   over the free starts, with everything but the central box at least ``2 * seed_distance`` from every edge
   occupied; seed 2: ``seed_distance`` away from seed 1 at an integer-degree bearing, own heading, only checked to
   lie inside the image. The two then grow alternately, one dash each per round, against one occupancy map that
   holds every dash but both targets' newest (as PF's ``two_snakes``; the first target's last dash never enters
   it, so distractors do not see it either). **Growth**: the pivot is the
   previous dash end + ``m`` along the heading; candidates are the integer pixels on the circle of radius ``L + m``
   around it (1-pixel arc steps, off-canvas dropped), weighted by ``(1 - occupancy dilated by radius m) *
   max(cos(min(continuity * turn, pi / 2)), 0) ** 2`` (so a turn of 90 / continuity degrees or more is never drawn);
   the new dash runs from the candidate back towards the pivot, covering pivot + m*u .. pivot + (L+m)*u (a gap of
   about 2m between dashes). It is accepted if occupancy + its mask stays below 1.8 everywhere; up to 3 draws, and
   any failure restarts both targets.
4. **Distractors**: ``num_distractor_snakes`` snakes of ``distractor_length`` dashes, seeded uniformly over the free
   starts of a random heading (the seed test), grown by the same rule; up to 5 tries each, then skipped; no new
   snake once under 1% of the image is free.
5. **Markers**: discs of radius ``marker_radius`` (drawn at 2x, downsampled, intensity 1) at the start of target
   ``o`` and at the far end of target ``o`` (label 1) or of the other target (label 0).
6. Intensities: targets ``paddle_contrast * snake_contrast``, distractors ``snake_contrast``, each dash rounded to
   float32 as PF's canvases are; image = max of all; saved as PNG after the bytescale of ``scipy.misc.imsave``
   (min -> 0, max -> 255, rounded) (:func:`compose`).

Checked against PF itself (``benchmarks/pathfinder_faithfulness.py`` runs the 2018 code in a separate environment):
the seed cores and valid headings are identical at every resolution, and per-image statistics of a few hundred
images per set agree within sampling noise (benchmarks/results/pathfinder_faithfulness.md).
Differences from PF, all deliberate: (a) Randomness is NumPy's ``Generator``, seeded per image from ``(seed,
resolution, contour_length, index)``: an image depends on its index only, so the output is byte-identical whatever
the number of worker processes. (b) Pillow's current Lanczos and line drawing stand in for the 2018 scipy/PIL ones.
(c) Contrast lists are single values (as in every LRA setting). (d) Seed 2 must also have its start inside the image
(PF checks only the dash's end and pivot; with seed 1 in the central box that never binds).
Exact LRA images cannot be reproduced (unknown seeds, Python 2, old scipy): the goal is the same distribution.

Speed (PF: about 0.26 s of CPU per pf32 image, 4 s per Path-X image, hard): most of the time goes into failed
attempts at the two targets (tens to thousands per image, by resolution), so :meth:`_Renderer.two_targets` runs a
batch of independent attempts in lockstep with vectorised NumPy and keeps the first (in slot order) that succeeds,
which has the law of PF's first success. Dash stamps, seed cores, candidate offsets and turn weights are computed
once per process (:class:`Kit`); occupancy maps are uint8 (units of 1/255) with a zero margin so that stamps and
candidate gathers need no clipping; distractor starts are drawn by rejection sampling with an exact fallback.
:meth:`_Renderer.two_targets_plain` is the same algorithm as a plain loop, with the same random draws; tests check
that both give the same images.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

# Per-resolution settings: LRA ``data/pathfinder.py`` docstrings, PF ``snakes2_wrapper.py`` defaults where LRA says
# nothing. ``distractor_k``: num_distractor_snakes = distractor_k // distractor_length.
RESOLUTIONS = {
    32: dict(padding=1, seed_distance=7, margins=(1,), paddle_length=2, thickness=0.5, marker_radius=1.5,
             continuity=1.0, snake_contrast=2.0, paddle_contrast=0.75, distractor_k=20),
    64: dict(padding=1, seed_distance=12, margins=(1,), paddle_length=5, thickness=1, marker_radius=2.5,
             continuity=1.8, snake_contrast=0.8, paddle_contrast=1, distractor_k=22),
    128: dict(padding=1, seed_distance=20, margins=(2, 3), paddle_length=5, thickness=1.5, marker_radius=3,
              continuity=1.8, snake_contrast=0.9, paddle_contrast=1, distractor_k=35),
    256: dict(padding=22, seed_distance=27, margins=(3,), paddle_length=5, thickness=2, marker_radius=5,
              continuity=1.8, snake_contrast=1.0, paddle_contrast=1, distractor_k=30),
}
# difficulty -> (release directory name, contour_length, distractor_length)
DIFFICULTIES = {
    "easy": ("curv_baseline", 6, 2),
    "intermediate": ("curv_contour_length_9", 9, 3),
    "hard": ("curv_contour_length_14", 14, 4),
}
VERSION = "2"  # bump when the output for a given seed changes (2: PF's seed rule at the border, shared map, float32)
ANTIALIAS = 2
MAX_PIXEL = 255
ACCEPT_BELOW = 459  # PF accepts a dash while occupancy + its mask < 1.8, i.e. < 1.8 * 255 in our integer units
FREE_AT_MOST = 76  # PF counts a pixel free when ceil(occupancy - 0.3) == 0, i.e. occupancy <= 0.3 (76 / 255)


def difficulty_dir(difficulty: str) -> str:
    """``hard`` -> ``curv_contour_length_14``; a release directory name is returned unchanged."""
    if difficulty in DIFFICULTIES:
        return DIFFICULTIES[difficulty][0]
    for name, _, _ in DIFFICULTIES.values():
        if difficulty == name:
            return name
    raise ValueError(f"unknown Pathfinder difficulty {difficulty!r}; expected one of {sorted(DIFFICULTIES)} or "
                     f"{[d for d, _, _ in DIFFICULTIES.values()]}")


@dataclasses.dataclass(frozen=True)
class Params:
    resolution: int
    contour_length: int
    distractor_length: int
    num_distractor_snakes: int
    padding: int
    seed_distance: int
    margins: tuple
    paddle_length: int
    thickness: float
    marker_radius: float
    continuity: float
    snake_contrast: float
    paddle_contrast: float
    antialias: int = ANTIALIAS
    max_paddle_retrial: int = 2  # a dash: up to 3 draws
    max_distractor_retrial: int = 4  # a distractor snake: up to 5 tries
    stop_availability: float = 0.01  # no new distractor once under 1% of the image is free

    def metadata_fields(self, margin: int) -> list[str]:
        """Fields 5-11 of a metadata row (PF ``accumulate_meta``), formatted as PF's Python values print."""
        return [str(self.continuity), str(self.contour_length), str(self.distractor_length),
                str(self.paddle_length), str(self.thickness), str(margin), "1"]


def params_for(resolution: int, difficulty: str = "hard", num_distractor_snakes: int | None = None) -> Params:
    """The LRA settings of one resolution and difficulty.

    ``num_distractor_snakes`` defaults to ``distractor_k // 2``: PF's wrapper computes it once from the baseline
    distractor length before looping over contour lengths 9 and 14; pass a number to override.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown Pathfinder resolution {resolution}; expected one of {sorted(RESOLUTIONS)}")
    name = difficulty_dir(difficulty)
    _, cl, dl = next(v for v in DIFFICULTIES.values() if v[0] == name)
    r = dict(RESOLUTIONS[resolution])
    k = r.pop("distractor_k")
    n = k // DIFFICULTIES["easy"][2] if num_distractor_snakes is None or num_distractor_snakes < 0 \
        else int(num_distractor_snakes)
    return Params(resolution=resolution, contour_length=cl, distractor_length=dl, num_distractor_snakes=n, **r)


# ----------------------------------------------------------------------------------------------------- stamps

def _disc_offsets(radius: float) -> np.ndarray:
    r = int(math.floor(radius))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    keep = x * x + y * y <= radius * radius
    return np.stack([y[keep], x[keep]], 1)


def _dilate(binary: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by the disc of ``radius`` (PF ``generate_dilation_struct``), pixels off the array ignored."""
    out = np.zeros_like(binary)
    h, w = binary.shape
    for dy, dx in _disc_offsets(radius):
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[yd, xd] |= binary[ys, xs]
    return out


def _reverse(angle: float) -> float:
    return angle + math.pi if angle + math.pi < math.pi else angle - math.pi


def _flip(angle: float) -> float:
    return angle + math.pi if angle < 0 else angle - math.pi


class Kit:
    """Everything one (parameters, margin) needs, computed once per process.

    **Headings and stamps** share one index ``h``: ``h < 360`` is a seed dash with heading ``h - 180`` integer
    degrees, drawn from its start pixel along the heading; ``h = 360 + i`` is a dash grown to candidate ``i`` (the
    integer displacements on the circle of radius ``L + m`` around the pivot, in PF's order: ``np.unique`` sorts the
    absolute coordinates, and with an integer pivot that is the order of the displacements), drawn from the
    candidate back towards the pivot, heading = the candidate's direction. A stamp is a ``(2S+1)^2`` window centred
    on the dash's start pixel, ``S = L + ceil(thickness) + m``: ``paint`` and ``mask`` (uint8, 1/255 units).

    **Maps** are uint8 occupancy in 1/255 units, ``W x W`` with the image at ``[P, P + R)`` and zeros around it, so
    that stamps and candidate gathers never leave the array (PF ignores whatever falls off the image: writes are
    masked by ``interior``).
    """

    def __init__(self, p: Params, margin: int):
        self.p, self.m = p, margin
        self.L = L = p.paddle_length
        self.R = R = p.resolution
        self.S = S = L + int(math.ceil(p.thickness)) + margin
        self.P = P = max(S + 1, L + 2 * margin + 1)
        self.W = W = R + 2 * P
        width = int(round(p.thickness * p.antialias))
        if width != p.thickness * p.antialias:
            raise ValueError(f"paddle thickness {p.thickness} times antialias {p.antialias} is not an integer")
        radius = L + margin
        deg = np.arange(0, 360, 360.0 / (2 * radius * np.pi)) * np.pi / 180
        disp = np.floor(np.stack([radius * np.sin(deg), radius * np.cos(deg)], 1)).astype(np.int64)
        self.cand = np.unique(disp, axis=0)
        self.n = len(self.cand)
        self.cand_y, self.cand_x = self.cand[:, 0].copy(), self.cand[:, 1].copy()
        self.cand_angle = np.arctan2(self.cand_y, self.cand_x)
        self.reach = int(np.abs(self.cand).max())  # a pivot this far inside has every candidate in the image
        disc = _disc_offsets(margin)
        # flat offsets of the disc of radius m around every candidate, [disc, n] (the plain form's gather)
        self.gather = (disc[:, 0] * W + disc[:, 1])[:, None] + (self.cand_y * W + self.cand_x)[None]
        # the same through a patch of radius L + 2m around the pivot (flat offsets) and indices into the patch (the
        # vectorised form): gathering the patch, then the discs from it, is about twice as fast
        rr = L + 2 * margin
        py, px = np.mgrid[-rr:rr + 1, -rr:rr + 1]
        self.patch = (py * W + px).ravel()
        self.patch_disc = (self.cand_y[None] + disc[:, :1] + rr) * (2 * rr + 1) + self.cand_x[None] + disc[:, 1:] + rr
        wy, wx = np.mgrid[-S:S + 1, -S:S + 1]
        self.window = (wy * W + wx).ravel()  # flat offsets of a stamp window around its centre
        self.interior = np.zeros((W, W), np.uint8)
        self.interior[P:P + R, P:P + R] = 1
        self.interior = self.interior.ravel()

        self.angle = np.concatenate([np.arange(-180, 180) * np.pi / 180, self.cand_angle])  # heading of h
        self.sin, self.cos = np.sin(self.angle), np.cos(self.angle)
        rev = np.array([_reverse(a) for a in self.angle[:360].tolist()])
        self.rev_sin, self.rev_cos = np.sin(rev), np.cos(rev)
        step = L + 2 * margin  # pivot to pivot
        self.step_y, self.step_x = step * self.sin, step * self.cos
        turn = np.abs(self.cand_angle[None, :] - self.angle[:, None])
        turn = np.minimum(np.minimum(turn, 2 * np.pi - turn) * p.continuity, 0.5 * np.pi)
        self.weights = np.maximum(np.cos(turn), 0.0) ** 2  # [360 + n, n]: continuity weight of each candidate
        draw = [float(a) for a in self.angle[:360]] + [_flip(float(a)) for a in self.cand_angle]
        stamps = [self._render(a, width) for a in draw]
        self.paint = np.stack([s[0].ravel() for s in stamps])  # [360 + n, (2S+1)^2] uint8
        self.mask = np.stack([s[1].ravel() for s in stamps])  # uint8
        # PF's seed test (``seed_snake``): a start is free iff the dash's fully occupied mask pixels, placed in a
        # 2(L+m)+1 window with the start one pixel past the centre (PF's struct_head) and used as an OpenCV
        # dilation kernel (anchored at the centre), all fall on free pixels: offsets from the start are
        # (window position - centre), hence the crop and the +1 shift.
        half, c = L + margin, L + margin + 1
        lo, hi = max(0, c - S), min(2 * half + 1, c + S + 1)
        self.cores = []
        for h in range(360):
            window = np.zeros((2 * half + 1,) * 2, np.uint8)
            stamp = self.mask[h].reshape(2 * S + 1, 2 * S + 1)
            window[lo:hi, lo:hi] = stamp[lo - c + S:hi - c + S, lo - c + S:hi - c + S]
            ys, xs = np.nonzero(window == MAX_PIXEL)
            self.cores.append(np.stack([ys - half, xs - half], 1))
        self.core_flat = [o[:, 0] * W + o[:, 1] for o in self.cores]
        # OpenCV pads a dilation with the lowest value, so an image pixel whose core offsets all fall off the image
        # dilates to -DBL_MAX, and PF's ``find_available_coordinates`` (``if np.min(mask) < 0: return 0``) then finds
        # no start at all for that heading: the seed fails. ``valid[h]``: heading h can seed at this resolution.
        self.valid = np.array([seed_heading_valid(o, R) for o in self.cores])
        # the first target's seed: only the band of 2 * seed_distance is occupied. The free starts of a valid
        # heading h are the rectangle [y0, y1] x [x0, x1] where the whole core lies inside the box (empty if y0 > y1
        # or x0 > x1), plus, since the dilation ignores pixels off the image, starts near the edge whose core pixels
        # in the image all lie in the box (:meth:`seed_extras`); an invalid heading has none
        self.band = band = min(2 * p.seed_distance, R)
        self.box = np.array([[band - o[:, 0].min(), R - band - 1 - o[:, 0].max(),
                              band - o[:, 1].min(), R - band - 1 - o[:, 1].max()] for o in self.cores])
        self.box_size = np.maximum(self.box[:, 1] - self.box[:, 0] + 1, 0) * \
            np.maximum(self.box[:, 3] - self.box[:, 2] + 1, 0) * self.valid
        self._extras: list = [None] * 360

    def seed_extras(self, h: int) -> np.ndarray:
        """[n, 2] first-seed starts of heading h outside the rectangle: those within reach of the edge whose
        core pixels in the image all lie inside the box (the dilation ignores pixels off the image; a valid heading
        leaves no start with its whole core off the image). Empty for an invalid heading."""
        if self._extras[h] is None and not self.valid[h]:
            self._extras[h] = np.zeros((0, 2), np.int64)
        if self._extras[h] is None:
            R, b, off = self.R, self.band, self.cores[h]
            D = int(np.abs(off).max()) + 1
            if b >= 2 * D:  # then near the edge no core pixel is in the box: all must be off the image, o0 too
                o0 = off[np.argmin(np.abs(off).max(axis=1))]
                grid = np.ones((R, R), bool)
                grid[max(-o0[0], 0):R - max(o0[0], 0), max(-o0[1], 0):R - max(o0[1], 0)] = False
            else:  # every start within reach of the edge
                grid = np.pad(np.zeros((max(R - 2 * D, 0),) * 2, bool), min(D, R // 2), constant_values=True)
            ys, xs = np.nonzero(grid)
            yy, xx = ys[:, None] + off[None, :, 0], xs[:, None] + off[None, :, 1]
            inside = (yy >= 0) & (yy < R) & (xx >= 0) & (xx < R)
            boxed = (yy >= b) & (yy < R - b) & (xx >= b) & (xx < R - b)
            free = np.all(~inside | boxed, axis=1)
            y0, y1, x0, x1 = self.box[h]
            free &= ~((ys >= y0) & (ys <= y1) & (xs >= x0) & (xs <= x1))
            self._extras[h] = np.stack([ys[free], xs[free]], 1)
        return self._extras[h]

    def maps(self, count: int, border: np.ndarray) -> np.ndarray:
        """One flat buffer of ``count`` maps, each set to ``border`` (reused between calls: fresh multi-megabyte
        allocations cost more than the copy)."""
        ww = self.W * self.W
        if getattr(self, "_maps", None) is None or len(self._maps) < count * ww:
            self._maps = np.empty(count * ww, np.uint8)
        out = self._maps[:count * ww]
        out.reshape(count, ww)[:] = border
        return out

    def _render(self, angle: float, width: int) -> tuple[np.ndarray, np.ndarray]:
        """PF ``draw_line_n_mask``: the line drawn at ``aa`` times the size and Lanczos-downsampled; the mask is the
        big line dilated by a disc of ``m * aa``, downsampled."""
        aa, S, L = self.p.antialias, self.S, self.L
        cb = S * aa
        nb, ns = 2 * cb + 1, 2 * S + 1
        hy, hx = math.ceil(cb + L * aa * math.sin(angle)), math.ceil(cb + L * aa * math.cos(angle))
        big = Image.new("L", (nb, nb), 0)
        ImageDraw.Draw(big).line([(cb, cb), (hx, hy)], fill=MAX_PIXEL, width=width)
        paint = np.asarray(big.resize((ns, ns), Image.Resampling.LANCZOS), np.uint8)
        grown = _dilate(np.asarray(big) > 0, self.m * aa).astype(np.uint8) * MAX_PIXEL
        mask = np.asarray(Image.fromarray(grown).resize((ns, ns), Image.Resampling.LANCZOS), np.uint8)
        return paint, mask

    def ends(self, y, x, h):
        """(head, pivot) of seed dashes with heading ``h`` starting at (y, x): PF ``translate_coord`` (rounded up)."""
        L, m = self.L, self.m
        hy, hx = np.ceil(y + L * self.sin[h]), np.ceil(x + L * self.cos[h])
        return (hy, hx), (np.ceil(hy + (L + m) * self.rev_sin[h]), np.ceil(hx + (L + m) * self.rev_cos[h]))


_KITS: dict[tuple, Kit] = {}


def kit_for(p: Params, margin: int) -> Kit:
    if (p, margin) not in _KITS:
        _KITS[(p, margin)] = Kit(p, margin)
    return _KITS[(p, margin)]


# ----------------------------------------------------------------------------------------------------- one image

@dataclasses.dataclass
class Contour:
    """A contour's dashes: start pixel (y, x) and stamp/heading index h (see :class:`Kit`)."""
    ys: list
    xs: list
    hs: list

    def dashes(self, kit: Kit) -> list[tuple]:
        """(start_y, start_x, end_y, end_x, heading radians) per dash, in the order drawn; for a grown dash "start"
        is the drawn segment's end nearest the previous dash."""
        out = []
        for y, x, h in zip(self.ys, self.xs, self.hs):
            a = float(kit.angle[h])
            if h < 360:
                out.append((y, x, y + kit.L * math.sin(a), x + kit.L * math.cos(a), a))
            else:
                b = _flip(a)
                out.append((y + kit.L * math.sin(b), x + kit.L * math.cos(b), y, x, a))
        return out


@dataclasses.dataclass
class Sample:
    image: np.ndarray  # uint8 [R, R]
    label: int
    margin: int
    geometry: dict | None = None


def _in_image(R, *coords):
    ok = True
    for c in coords:
        ok = ok & (c >= 0) & (c < R)
    return ok


class _Renderer:
    """One image's growth. Occupancy maps are flat uint8 arrays of ``W * W``; batched code keeps one map per
    attempt in one buffer, map ``a`` at ``offset[a] = a * W * W``."""

    def __init__(self, p: Params, kit: Kit, rng: np.random.Generator):
        self.p, self.kit, self.rng = p, kit, rng

    def border(self) -> np.ndarray:
        k, band = self.kit, self.p.padding
        m = np.zeros((k.W, k.W), np.uint8)
        inner = m[k.P:k.P + k.R, k.P:k.P + k.R]
        inner[:band], inner[k.R - band:], inner[:, :band], inner[:, k.R - band:] = (MAX_PIXEL,) * 4
        return m.ravel()

    def stamp(self, flat: np.ndarray, offset, y, x, h) -> None:
        """For arrays of dashes (one per map): flat[map window at (y, x)] = max(itself, mask of h), clipped to the
        image (PF drops what falls off it; the maps' margins stay 0)."""
        k = self.kit
        local = ((y + k.P) * k.W + x + k.P)[:, None] + k.window[None]
        idx = np.asarray(offset)[:, None] + local
        vals = k.mask[h]
        near = (y < k.S) | (y >= k.R - k.S) | (x < k.S) | (x >= k.R - k.S)
        if near.any():
            vals = vals.copy()
            vals[near] *= k.interior[local[near]]
        old = flat[idx]
        np.maximum(old, vals, out=old)
        flat[idx] = old

    # -- the two targets, many attempts at once --------------------------------------------------------------
    def seed_pairs(self, batch: int):
        """The two target seeds of ``batch`` attempts (PF ``initialize_two_seeds``), drawn together. Returns the
        attempts that got both, and per snake (start y, start x, heading h, pivot y, pivot x) arrays over them."""
        k, p, rng = self.kit, self.p, self.rng
        R, B, T = k.R, batch, p.max_paddle_retrial + 1
        # seed 1: up to T headings; a heading without free starts fails the attempt, a dash or pivot off the image
        # tries the next heading
        h1 = rng.integers(-180, 180, size=(T, B)) + 180
        n_box = k.box_size[h1]
        n_extra = np.array([len(k.seed_extras(h)) for h in h1.ravel().tolist()]).reshape(T, B)
        empty = n_box + n_extra == 0
        u = np.floor(rng.random((T, B)) * (n_box + n_extra)).astype(np.int64)  # uniform over the free starts
        box = k.box[h1]  # [T, B, 4]
        width = np.maximum(box[..., 3] - box[..., 2] + 1, 1)
        y1, x1 = box[..., 0] + u // width, box[..., 2] + u % width
        for t, a in zip(*np.nonzero(~empty & (u >= n_box))):  # a start off the rectangle (rare)
            y1[t, a], x1[t, a] = k.seed_extras(int(h1[t, a]))[u[t, a] - n_box[t, a]]
        head, pivot = k.ends(y1, x1, h1)
        valid = ~empty & _in_image(R, *head, *pivot)
        decided = empty | valid
        first = np.argmax(decided, axis=0)  # the deciding trial
        cols = np.arange(B)
        ok = decided.any(axis=0) & valid[first, cols]
        s1 = (y1[first, cols], x1[first, cols], h1[first, cols], pivot[0][first, cols], pivot[1][first, cols])
        # seed 2: seed_distance away at an integer bearing, own heading; only checked to lie inside the image
        h2 = rng.integers(-180, 180, size=(T, B)) + 180
        bearing = rng.integers(0, 360, size=(T, B)) * np.pi / 180
        y2 = np.round(s1[0] + p.seed_distance * np.sin(bearing)).astype(int)
        x2 = np.round(s1[1] + p.seed_distance * np.cos(bearing)).astype(int)
        head, pivot = k.ends(y2, x2, h2)
        valid = _in_image(R, y2, x2, *head, *pivot)
        first = np.argmax(valid, axis=0)
        ok &= valid.any(axis=0)
        s2 = (y2[first, cols], x2[first, cols], h2[first, cols], pivot[0][first, cols], pivot[1][first, cols])
        slots = np.flatnonzero(ok)
        return slots, [tuple(v[slots].astype(np.int64) for v in s) for s in (s1, s2)]

    def two_targets(self, batch: int):
        """PF ``two_snakes`` restarted until it succeeds, ``batch`` independent attempts in lockstep: the first
        attempt (in slot order) to succeed is returned, which has the law of PF's first success. Returns the two
        :class:`Contour`, the occupancy map (flat, all dashes) and the successful attempt's slot, or None if every
        attempt failed."""
        WW = self.kit.W * self.kit.W
        slots, seeds = self.seed_pairs(batch)
        A = slots.size
        if A == 0:
            return None
        # per snake s and attempt a: pivot (py, px), heading hh, newest dash (ny, nx, nh)
        (y1, x1, h1, qy1, qx1), (y2, x2, h2, qy2, qx2) = seeds
        py, px, hh = np.stack([qy1, qy2]), np.stack([qx1, qx2]), np.stack([h1, h2])
        ny, nx, nh = np.stack([y1, y2]), np.stack([x1, x2]), hh.copy()
        L = self.p.contour_length
        hist = np.zeros((3, 2, A, L), np.int64)  # (y, x, h) of every dash
        hist[:, :, :, 0] = np.stack([ny, nx, nh])
        # A maps, as PF's one ``current_mask`` per attempt: map a holds every dash of attempt a but both snakes'
        # newest (both snakes grow against it; ``offset[s, a]`` is map a for either s)
        occ = self.kit.maps(A, self.border())
        offset = np.stack([np.arange(A) * WW] * 2)
        live = np.arange(A)  # attempts still alive
        for seg in range(1, L):
            for s in (0, 1):
                live = self._extend(s, live, py, px, hh, ny, nx, nh, occ, offset)
                if live.size == 0:
                    return None
                hist[:, s, live, seg] = ny[s, live], nx[s, live], nh[s, live]
        a = int(live[0])
        self.stamp(occ, offset[1, [a]], ny[1, [a]], nx[1, [a]], nh[1, [a]])  # PF adds the second target's last dash
        contours = [Contour(hist[0, s, a].tolist(), hist[1, s, a].tolist(), hist[2, s, a].tolist()) for s in (0, 1)]
        return contours, occ[offset[0, a]:offset[0, a] + WW].copy(), int(slots[a])

    def two_targets_plain(self, batch: int):
        """:meth:`two_targets` written plainly: a Python loop over attempts, one 2-D map each, scalar growth
        (:meth:`scores`, :meth:`pick`, :meth:`fits`, :meth:`accept`); the same random draws in the same order, so
        the same result. The reference the vectorised form is tested against."""
        slots, seeds = self.seed_pairs(batch)
        if slots.size == 0:
            return None
        border = self.border()
        snakes, occs, contours = [], [], []
        for a in range(slots.size):
            pair = [Snake(int(q[3][a]), int(q[4][a]), int(q[2][a]), int(q[0][a]), int(q[1][a]), int(q[2][a]))
                    for q in seeds]
            snakes.append(pair)
            contours.append([Contour([t.ny], [t.nx], [t.nh]) for t in pair])
            shared = border.copy()  # PF's one map per attempt: every dash but both snakes' newest
            occs.append([shared, shared])
        live = list(range(slots.size))
        for _ in range(1, self.p.contour_length):
            for s in (0, 1):
                scored = {a: self.scores(snakes[a][s], occs[a][s]) for a in live}
                todo, chosen = [a for a in live if scored[a] is not None], {}
                for _ in range(self.p.max_paddle_retrial + 1):
                    if not todo:
                        break
                    left = []
                    for a, r in zip(todo, self.rng.random(len(todo))):
                        cy, cx, cmf, inside = scored[a]
                        j = self.pick(cmf, inside, r)
                        (chosen.__setitem__(a, j) if self.fits(occs[a][s], cy, cx, j) else left.append(a))
                    todo = left
                live = [a for a in live if a in chosen]
                if not live:
                    return None
                for a in live:
                    cy, cx = scored[a][0], scored[a][1]
                    snake = snakes[a][s]
                    self.accept(snake, occs[a][s], cy, cx, chosen[a])
                    contours[a][s].ys.append(snake.ny), contours[a][s].xs.append(snake.nx)
                    contours[a][s].hs.append(snake.nh)
        a = live[0]
        self.stamp_one(occs[a][1], snakes[a][1].ny, snakes[a][1].nx, snakes[a][1].nh)  # the second's last dash
        return contours[a], occs[a][0], int(slots[a])

    def _extend(self, s, live, py, px, hh, ny, nx, nh, occ, offset):
        """PF ``extend_snake`` for snake ``s`` of every live attempt, against map ``offset[s]`` (every dash but both
        snakes' newest). On success the snake's previous dash joins the map. Returns the attempts still alive."""
        k, rng, R, W, P = self.kit, self.rng, self.kit.R, self.kit.W, self.kit.P
        h = hh[s, live]
        cy = np.ceil(py[s, live] + k.step_y[h]).astype(np.int64)  # the new pivot
        cx = np.ceil(px[s, live] + k.step_x[h]).astype(np.int64)
        ys, xs = cy[:, None] + k.cand_y[None], cx[:, None] + k.cand_x[None]
        inside = (ys >= 0) & (ys < R) & (xs >= 0) & (xs < R)
        mine = offset[s, live]
        base = mine + (np.clip(cy, 0, R - 1) + P) * W + np.clip(cx, 0, R - 1) + P
        patch = occ[base[:, None] + k.patch[None]]
        occupied = patch[:, k.patch_disc].max(axis=1)  # occupancy dilated by the disc of radius m, per candidate
        cmf = np.cumsum((MAX_PIXEL - occupied) * k.weights[h] * inside, axis=1)  # 255 x PF's pmf
        total = cmf[:, -1]
        going = total >= 1e-4 * MAX_PIXEL
        cmf /= np.where(going, total, 1.0)[:, None]
        chosen = np.full(len(live), -1)
        todo = np.flatnonzero(going)
        for _ in range(self.p.max_paddle_retrial + 1):
            if todo.size == 0:
                break
            j = (cmf[todo] <= rng.random(todo.size)[:, None]).sum(axis=1)  # PF: argmax(cmf - r > 0)
            j = np.where(j == k.n, np.argmax(inside[todo], axis=1), j)  # r above a rounded cmf[-1]: PF's index 0
            y, x = cy[todo] + k.cand_y[j], cx[todo] + k.cand_x[j]
            win = (mine[todo] + (y + P) * W + x + P)[:, None] + k.window[None]
            fits = np.add(occ[win], k.mask[360 + j], dtype=np.int16).max(axis=1) < ACCEPT_BELOW
            chosen[todo[fits]] = j[fits]
            todo = todo[~fits]
        keep = chosen >= 0
        live, chosen, cy, cx = live[keep], chosen[keep], cy[keep], cx[keep]
        y, x = cy + k.cand_y[chosen], cx + k.cand_x[chosen]
        self.stamp(occ, offset[s, live], ny[s, live], nx[s, live], nh[s, live])  # the previous dash joins the map
        ny[s, live], nx[s, live] = y, x
        nh[s, live] = hh[s, live] = 360 + chosen
        py[s, live], px[s, live] = cy, cx
        return live

    # -- distractors, one at a time (the plain, scalar form of the same growth) ----------------------------
    def distractor(self, occ: np.ndarray):
        """PF ``make_snake`` on a copy of ``occ`` (flat): (contour, new occupancy) or None."""
        k, p, rng, R, P, W = self.kit, self.p, self.rng, self.kit.R, self.kit.P, self.kit.W
        grid = occ.reshape(W, W)
        if np.count_nonzero(grid[P:P + R, P:P + R] <= FREE_AT_MOST) < p.stop_availability * R * R:
            return None
        blocked = occ > FREE_AT_MOST
        inner = blocked.reshape(W, W)[P:P + R, P:P + R]
        inner[0], inner[-1], inner[:, 0], inner[:, -1] = True, True, True, True
        for _ in range(p.max_paddle_retrial + 1):
            h = int(rng.integers(-180, 180)) + 180
            start = self._free_start(blocked, h)
            if start is None:
                return None
            (hy, hx), (qy, qx) = k.ends(start[0], start[1], h)
            if 0 <= hy < R and 0 <= hx < R and 0 <= qy < R and 0 <= qx < R:
                break
        else:
            return None
        snake = Snake(int(qy), int(qx), h, start[0], start[1], h)
        work = occ.copy()
        contour = Contour([start[0]], [start[1]], [h])
        for _ in range(p.distractor_length - 1):
            if not self.extend_one(snake, work):
                return None
            contour.ys.append(snake.ny), contour.xs.append(snake.nx), contour.hs.append(snake.nh)
        self.stamp_one(work, snake.ny, snake.nx, snake.nh)
        return contour, work

    def stamp_one(self, flat: np.ndarray, y: int, x: int, h: int) -> None:
        k = self.kit
        S, P, R, n = k.S, k.P, k.R, 2 * k.S + 1
        y0, y1, x0, x1 = max(y - S, 0), min(y + S + 1, R), max(x - S, 0), min(x + S + 1, R)
        win = flat.reshape(k.W, k.W)[P + y0:P + y1, P + x0:P + x1]
        np.maximum(win, k.mask[h].reshape(n, n)[y0 - y + S:y1 - y + S, x0 - x + S:x1 - x + S], out=win)

    def scores(self, snake: "Snake", occ: np.ndarray):
        """PF ``get_coords_cmf`` for one snake: (new pivot y, x, normalised cmf over the candidates, inside) or
        None at a dead end."""
        k, R, W, P = self.kit, self.kit.R, self.kit.W, self.kit.P
        h = snake.h
        cy, cx = int(np.ceil(snake.py + k.step_y[h])), int(np.ceil(snake.px + k.step_x[h]))
        ys, xs = cy + k.cand_y, cx + k.cand_x
        inside = (ys >= 0) & (ys < R) & (xs >= 0) & (xs < R)
        base = (min(max(cy, 0), R - 1) + P) * W + min(max(cx, 0), R - 1) + P
        occupied = occ[k.gather + base].max(axis=0)
        cmf = np.cumsum((MAX_PIXEL - occupied) * k.weights[h] * inside)
        total = cmf[-1]
        if not total >= 1e-4 * MAX_PIXEL:
            return None
        return cy, cx, cmf / total, inside

    def pick(self, cmf: np.ndarray, inside: np.ndarray, r: float) -> int:
        """PF's draw ``argmax(cmf - r > 0)`` (index 0 of PF's in-image list if rounding leaves cmf[-1] below r)."""
        j = int((cmf <= r).sum())
        return int(np.argmax(inside)) if j == self.kit.n else j

    def fits(self, occ: np.ndarray, cy: int, cx: int, j: int) -> bool:
        """PF's test of a drawn dash: occupancy + its mask below 1.8 everywhere."""
        k = self.kit
        S, P, n = k.S, k.P, 2 * k.S + 1
        y, x = cy + int(k.cand_y[j]), cx + int(k.cand_x[j])
        win = occ.reshape(k.W, k.W)[P + y - S:P + y + S + 1, P + x - S:P + x + S + 1]
        return bool(np.add(win, k.mask[360 + j].reshape(n, n), dtype=np.int16).max() < ACCEPT_BELOW)

    def accept(self, snake: "Snake", occ: np.ndarray, cy: int, cx: int, j: int) -> None:
        """The snake's previous dash joins its map; the new one (to candidate j of pivot (cy, cx)) is pending."""
        self.stamp_one(occ, snake.ny, snake.nx, snake.nh)
        snake.ny, snake.nx, snake.nh = cy + int(self.kit.cand_y[j]), cx + int(self.kit.cand_x[j]), 360 + j
        snake.py, snake.px, snake.h = cy, cx, 360 + j

    def extend_one(self, snake: "Snake", occ: np.ndarray) -> bool:
        """PF ``extend_snake`` for one snake against ``occ`` (flat map of every dash but the snake's newest)."""
        scored = self.scores(snake, occ)
        if scored is None:
            return False
        cy, cx, cmf, inside = scored
        for _ in range(self.p.max_paddle_retrial + 1):
            j = self.pick(cmf, inside, self.rng.random(1)[0])
            if self.fits(occ, cy, cx, j):
                self.accept(snake, occ, cy, cx, j)
                return True
        return False

    def _free_start(self, blocked: np.ndarray, h: int, draws: int = 64, rounds: int = 2):
        """A uniform draw from the starts whose seed core (heading h) avoids ``blocked``, or None: rejection
        sampling (the first free one of iid uniform draws is uniform over the free set), then exact enumeration."""
        k, R, P, W = self.kit, self.kit.R, self.kit.P, self.kit.W
        if not k.valid[h]:
            return None
        for _ in range(rounds):
            yx = self.rng.integers(0, R, size=(draws, 2))
            base = (yx[:, 0] + P) * W + yx[:, 1] + P
            ok = np.flatnonzero(~blocked[base[:, None] + k.core_flat[h][None, :]].any(axis=1))
            if ok.size:
                return int(yx[ok[0], 0]), int(yx[ok[0], 1])
        free = free_starts(k, blocked, h)
        if len(free) == 0:
            return None
        y, x = free[self.rng.integers(0, len(free))]
        return int(y), int(x)

    # -- markers and pixels ----------------------------------------------------------------------------------
    def markers(self, points) -> np.ndarray:
        """PF ``draw_circle`` at each point: a disc drawn at 2x, Lanczos-downsampled to the image; max of both."""
        aa, R, r = self.p.antialias, self.kit.R, self.p.marker_radius
        out = np.zeros((R, R), np.uint8)
        yy, xx = np.arange(R * aa)[:, None], np.arange(R * aa)[None, :]
        for y, x in points:
            disc = ((yy - y * aa) ** 2 + (xx - x * aa) ** 2 <= (r * aa) ** 2).astype(np.uint8) * MAX_PIXEL
            small = Image.fromarray(disc).resize((R, R), Image.Resampling.LANCZOS)
            np.maximum(out, np.asarray(small, np.uint8), out=out)
        return out

    def canvas(self, contours, stamps=None) -> np.ndarray:
        """The max of the contours' stamps (paint by default) over the image."""
        k = self.kit
        stamps = k.paint if stamps is None else stamps
        c = np.zeros(k.W * k.W, np.uint8)
        for t in contours:
            for y, x, h in zip(t.ys, t.xs, t.hs):
                idx = (y + k.P) * k.W + x + k.P + k.window
                c[idx] = np.maximum(c[idx], stamps[h])
        return c.reshape(k.W, k.W)[k.P:k.P + k.R, k.P:k.P + k.R]


@dataclasses.dataclass
class Snake:
    """A growing snake for the scalar path: pivot, heading and newest dash (not yet in its own occupancy)."""
    py: int
    px: int
    h: int
    ny: int
    nx: int
    nh: int


def seed_heading_valid(offsets: np.ndarray, R: int) -> bool:
    """Does PF's seed test give heading h any start at all on an R x R image? ``offsets`` [n, 2]: the core's
    (dy, dx) from the start (the dilation kernel's nonzero entries relative to its anchor). OpenCV's dilation reads
    ``src[y + dy, x + dx]`` and pads with the lowest value, so a pixel (y, x) with every ``(y + dy, x + dx)`` off the
    image comes out -DBL_MAX, and one such pixel makes PF's ``find_available_coordinates`` return no start for the
    heading. Valid iff every pixel has an offset landing inside (an empty core: never)."""
    hit = np.zeros((R, R), bool)
    for dy, dx in np.asarray(offsets).reshape(-1, 2).tolist():
        hit[max(0, -dy):min(R, R - dy), max(0, -dx):min(R, R - dx)] = True
    return bool(hit.all())


def free_starts(kit: Kit, blocked: np.ndarray, h: int) -> np.ndarray:
    """Exact PF seed test: every (y, x) whose seed core (heading h) avoids ``blocked`` (flat padded bool map; pixels
    off the image count as free), or none if heading h is not valid (:func:`seed_heading_valid`)."""
    P, R, W = kit.P, kit.R, kit.W
    if not kit.valid[h]:
        return np.zeros((0, 2), np.int64)
    grid = blocked.reshape(W, W)
    hit = np.zeros((R, R), bool)
    for dy, dx in kit.cores[h]:
        hit |= grid[P + dy:P + dy + R, P + dx:P + dx + R]
    return np.argwhere(~hit)


def compose(p: Params, target_paint, distractor_paint: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """The saved image from the uint8 paints: PF places each dash's paint (``uint8 / 255 * contrast``, float64) into
    a float32 image (``draw_line_n_mask``'s PIL mode 'F' canvas), takes the float64 max of the snakes' images and
    the markers (``uint8 / 255``), and ``imsave`` bytescales that in float64. The float32 step moves some pixels one
    grey level off a float64 composition (at pf32, 20 of the 256 target levels)."""
    def snake(paint, contrast):
        return (paint / MAX_PIXEL * contrast).astype(np.float32).astype(np.float64)

    contrast = p.paddle_contrast * p.snake_contrast
    image = np.maximum.reduce([snake(t, contrast) for t in target_paint]
                              + [snake(distractor_paint, p.snake_contrast), markers / MAX_PIXEL])
    return _bytescale(image)


def _bytescale(image: np.ndarray) -> np.ndarray:
    """``scipy.misc.bytescale`` as ``imsave`` applied it: min -> 0, max -> 255, rounded half up."""
    lo, hi = float(image.min()), float(image.max())
    scale = MAX_PIXEL / ((hi - lo) or 1.0)
    return (((image - lo) * scale).clip(0, MAX_PIXEL) + 0.5).astype(np.uint8)


# attempts at the two targets run in lockstep, this many per batch (fixed per resolution: the output must not depend
# on anything but the seed). Most attempts die at the first seed when few headings can seed (30 of 360 at 32, 95 at
# 64), which costs little in a batch. Mean attempts per image (benchmarks/results/pathfinder_gen.md): pf32 about 300,
# pf64 several thousand, Path-X about 500, pf256 about 9. Sizes: the fastest of 3-4 timed per resolution (CPU time
# per image: 32: 64/256/384/512/768/1024, 384-768 within noise; 64: 256/512/1024/2048; 128: 64/128/256; 256:
# 8/16/32, within noise of 16).
BATCH = {32: 512, 64: 512, 128: 128, 256: 16}


def image_rng(seed: int, p: Params, index: int) -> np.random.Generator:
    """The generator of image ``index``: a function of (seed, resolution, contour length, index) only."""
    return np.random.default_rng([seed, p.resolution, p.contour_length, index])


def render(p: Params, rng: np.random.Generator, *, geometry: bool = False, batch: int | None = None,
           plain: bool = False, max_batches: int = 10_000) -> Sample:
    """One Pathfinder image. ``geometry=True`` also returns, for tests and plots: per target its dashes
    ``(start_y, start_x, end_y, end_x, heading)`` and uint8 paint, the same for the distractors, the marker pixels,
    which target carries the first marker, every contour's dashes as (start y, start x, stamp index) in
    :class:`Kit` terms (``stamps``: the two targets, then the distractors in the order placed), the final occupancy
    (uint8, 1/255 units) and how many attempts at the two targets this image took (as PF would count its restarts).
    ``plain=True`` grows the targets with the loop form (:meth:`_Renderer.two_targets_plain`): the same image,
    slower."""
    label = int(rng.integers(0, 2))
    margin = int(p.margins[int(rng.integers(0, len(p.margins)))])
    kit = kit_for(p, margin)
    r = _Renderer(p, kit, rng)
    batch = batch or BATCH.get(p.resolution, 64)
    for failed in range(max_batches):
        pair = r.two_targets_plain(batch) if plain else r.two_targets(batch)
        if pair is not None:
            break
    else:
        raise RuntimeError(f"Pathfinder: no two targets after {max_batches * batch} attempts with {p}")
    targets, occ, slot = pair
    distractors = []
    for _ in range(p.num_distractor_snakes):
        for _ in range(p.max_distractor_retrial + 1):
            made = r.distractor(occ)
            if made is not None:
                contour, occ = made
                distractors.append(contour)
                break
    origin = int(rng.integers(0, 2))
    first = (targets[origin].ys[0], targets[origin].xs[0])
    end = targets[origin if label == 1 else 1 - origin]
    second = (end.ys[-1], end.xs[-1])
    markers = r.markers([first, second])
    target_paint = [r.canvas([t]) for t in targets]
    distractor_paint = r.canvas(distractors)
    out = Sample(compose(p, target_paint, distractor_paint, markers), label, margin)
    if geometry:
        P, R, W = kit.P, kit.R, kit.W
        out.geometry = dict(
            targets=[t.dashes(kit) for t in targets], target_paint=target_paint,
            target_mask=[r.canvas([t], kit.mask) for t in targets],
            distractors=[d.dashes(kit) for d in distractors], distractor_paint=distractor_paint,
            stamps=[list(zip(c.ys, c.xs, c.hs)) for c in targets + distractors],
            markers=(first, second), origin=origin, occupancy=occ.reshape(W, W)[P:P + R, P:P + R].copy(),
            attempts=failed * batch + slot + 1)  # PF's count: attempts at the two targets until one succeeded
    return out
