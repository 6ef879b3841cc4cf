"""Pathfinder generator vs the original (PF ``snakes2.py``): per-image statistics of both, side-by-side grids.

    python -m benchmarks.pathfinder_faithfulness --original=/path/to/pathfinder --reference_python=/path/to/python
    python -m benchmarks.pathfinder_faithfulness ... --before_rev=<git revision>   # also the generator at that rev

``--original`` is a checkout of the original generator (github.com/drewlinsley/pathfinder, the 2018 code at commit
ab9c130: ``snakes.py``, ``snakes2.py``); ``--reference_python`` a Python 3 interpreter with numpy, scipy, pillow and
opencv-python-headless (none of which this project needs). The original runs in a subprocess of that interpreter,
through :func:`_reference_worker` below, which restores what it needs from 2018-era libraries (``scipy.misc``'s
``imresize``/``imsave`` with their bytescale, ``np.float``, ``np.round_``, a stub for matplotlib, which it only uses
to display) and records what it draws (images, labels, marker positions, first target's heading, distractor snakes
placed) through wrappers around its functions; the original's code itself runs unchanged. Its images are cached
under ``--cache`` (keyed by settings, count and seed), since they cost about 0.4 s (32 x 32) to several seconds
(128 x 128) each.

Per set (resolution x difficulty, LRA's settings from :func:`lra.data.pathfinder_gen.params_for`), per image:
fraction of pixels > 0 and >= 128, mean intensity, connected components of the pixels >= 64 (8-neighbour), ink in
the outer ring (share of the image's total intensity within ``max(2, R // 16)`` pixels of the edge; max pixel
there), marker positions (the two markers' y, x, their distance, and distance from the centre), first target's
heading (degrees) and distractor snakes placed. Writes means, standard deviations and the z-score of each
difference of means, ``(mean_ours - mean_original) / sqrt(sd_ours^2 / n_ours + sd_original^2 / n_original)``, to
``benchmarks/results/pathfinder_faithfulness.md`` and a grid per resolution (ours left, original right) to
``benchmarks/results/pathfinder_faithfulness_<res>.png``.

This file is also the worker: ``python pathfinder_faithfulness.py --_worker ...`` under the reference interpreter,
so that its top level imports nothing but the standard library and numpy.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

WORKER_VERSION = "1"  # bump when _reference_worker's record changes (invalidates the cache)
RESULTS = Path(__file__).resolve().parent / "results"
# images per set, every resolution and difficulty, fewer where the original is slow (64 and 128 hard: 4-9 CPU s per
# image); the original's CPU for all of them: about 30 minutes
DEFAULT_SETS = {(32, "easy"): 300, (32, "intermediate"): 300, (32, "hard"): 300,
                (64, "easy"): 150, (64, "intermediate"): 100, (64, "hard"): 40,
                (128, "easy"): 300, (128, "intermediate"): 300, (128, "hard"): 80,
                (256, "easy"): 100, (256, "intermediate"): 100, (256, "hard"): 150}


# ------------------------------------------------------------------------------------ the worker (reference venv)

def _scipy_misc_shim():
    """``scipy.misc`` as of scipy 1.0 (bytescale, toimage, fromimage, imresize, imsave), for 2-D arrays."""
    from PIL import Image

    def bytescale(data, cmin=None, cmax=None, high=255, low=0):
        if data.dtype == np.uint8:
            return data
        cmin = data.min() if cmin is None else cmin
        cmax = data.max() if cmax is None else cmax
        cscale = cmax - cmin
        if cscale == 0:
            cscale = 1
        scale = float(high - low) / cscale
        bytedata = (data - cmin) * scale + low
        return (bytedata.clip(low, high) + 0.5).astype(np.uint8)

    def toimage(arr, mode=None):
        data = np.asarray(arr)
        if data.ndim != 2:
            raise ValueError("the shim handles 2-D arrays only")
        if mode == "F":
            return Image.frombytes("F", (data.shape[1], data.shape[0]), data.astype(np.float32).tobytes())
        return Image.frombytes("L", (data.shape[1], data.shape[0]), bytescale(data).tobytes())

    def imresize(arr, size, interp="bilinear", mode=None):
        im = toimage(arr, mode=mode)
        codes = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "cubic": 3}  # PIL's resample numbers
        return np.array(im.resize((size[1], size[0]), resample=codes[interp]))

    saved = []

    def imsave(name, arr, format=None):
        im = toimage(arr)
        saved.append(np.array(im))
        im.save(name)

    misc = types.ModuleType("scipy.misc")
    misc.bytescale, misc.toimage, misc.imresize, misc.imsave, misc.saved = bytescale, toimage, imresize, imsave, saved
    return misc


def _reference_worker(original: str, spec: dict, out: str) -> None:
    """Run the original ``snakes2.from_wrapper`` for ``spec['n']`` images; save what it drew to ``out`` (npz)."""
    import random

    import scipy
    source = Path(original, "snakes.py").read_text()
    if "scipy.misc.imresize(" not in source or "def _imresize" in source:
        raise SystemExit(f"{original}/snakes.py is not the original generator (it does not call scipy.misc.imresize): "
                         f"use github.com/drewlinsley/pathfinder at commit ab9c130 (later commits replace scipy.misc "
                         f"and change its arithmetic)")
    misc = _scipy_misc_shim()
    scipy.misc = misc
    sys.modules["scipy.misc"] = misc
    np.float = float  # removed NumPy aliases the 2018 code uses
    np.round_ = np.round
    mpl = types.ModuleType("matplotlib")
    mpl.pyplot = types.ModuleType("matplotlib.pyplot")
    sys.modules["matplotlib"], sys.modules["matplotlib.pyplot"] = mpl, mpl.pyplot
    sys.path.insert(0, original)
    import snakes
    import snakes2
    if spec.get("kind") == "headings":
        return _reference_headings(snakes, spec["params"], out)

    record = dict(labels=[], markers=[], heading=[], distractors=[], attempts=[], margin=[])
    if spec.get("touching"):
        record["paints"] = []  # the two targets' paint, uint8 (the image / target contrast * 255)
    state = dict(markers=[], heading=None, distractors=0, attempts=0)
    contrast = spec["params"]["paddle_contrast"] * spec["params"]["snake_contrast"]
    two_snakes, initialize, make_snake = snakes2.two_snakes, snakes2.initialize_two_seeds, snakes.make_snake
    draw_circle, accumulate = snakes2.draw_circle, snakes2.accumulate_meta

    def initialize_two_seeds(*a, **k):
        out = initialize(*a, **k)
        state["seed_heading"] = out[4][0]
        return out

    def two_snakes_(*a, **k):
        out = two_snakes(*a, **k)
        state["attempts"] += 1
        if out[-1]:
            state["heading"] = state["seed_heading"]
            state["distractors"] = 0
            state["paints"] = [np.round(np.asarray(t, np.float64) / contrast * 255).astype(np.uint8) for t in out[0]]
        return out

    def make_snake_(*a, **k):
        out = make_snake(*a, **k)
        state["distractors"] += bool(out[-1])
        return out

    def draw_circle_(window_size, coordinate, radius, aa_scale):
        state["markers"].append([int(coordinate[0]), int(coordinate[1])])
        return draw_circle(window_size, coordinate, radius, aa_scale)

    def accumulate_meta(array, label, subpath, filename, args, nimg, paddle_margin=None):
        record["labels"].append(int(label))
        record["margin"].append(int(paddle_margin))
        record["markers"].append(state["markers"][-2:])
        record["heading"].append(float(state["heading"]) * 180 / np.pi)
        record["distractors"].append(state["distractors"])
        record["attempts"].append(state["attempts"])
        if "paints" in record:
            record["paints"].append(np.stack(state["paints"]))
        state.update(markers=[], attempts=0)
        return accumulate(array, label, subpath, filename, args, nimg, paddle_margin)

    snakes2.initialize_two_seeds, snakes2.two_snakes, snakes.make_snake = initialize_two_seeds, two_snakes_, make_snake_
    snakes2.draw_circle, snakes2.accumulate_meta = draw_circle_, accumulate_meta

    class Args:  # snakes2_wrapper.py's Args with LRA's settings (as in lra.data.pathfinder_gen.params_for)
        pass

    a = Args()
    p = spec["params"]
    a.batch_id, a.n_images = 0, spec["n"]
    a.window_size, a.padding, a.antialias_scale = [p["resolution"]] * 2, p["padding"], p["antialias"]
    a.LABEL, a.seed_distance, a.marker_radius = 1, p["seed_distance"], p["marker_radius"]
    a.contour_length, a.distractor_length = p["contour_length"], p["distractor_length"]
    a.num_distractor_snakes = p["num_distractor_snakes"]
    a.snake_contrast_list, a.use_single_paddles = [p["snake_contrast"]], False
    a.max_target_contour_retrial, a.max_distractor_contour_retrial = 4, p["max_distractor_retrial"]
    a.max_paddle_retrial, a.continuity = p["max_paddle_retrial"], p["continuity"]
    a.paddle_length, a.paddle_thickness = p["paddle_length"], p["thickness"]
    a.paddle_margin_list, a.paddle_contrast_list = list(p["margins"]), [p["paddle_contrast"]]
    a.pause_display, a.save_images, a.save_metadata = False, True, True
    a.segmentation_task = a.segmentation_task_double_circle = False
    np.random.seed(spec["seed"])
    random.seed(spec["seed"])
    t0 = time.process_time()
    with tempfile.TemporaryDirectory() as d:
        a.contour_path = d
        real_stdout = sys.stdout
        sys.stdout = open(os.devnull, "w")  # it prints a line per image and per failed dash
        try:
            snakes2.from_wrapper(a)
        finally:
            sys.stdout.close()
            sys.stdout = real_stdout
    cpu = time.process_time() - t0
    np.savez_compressed(out, images=np.stack(misc.saved), cpu_seconds=cpu,
                        **{k: np.asarray(v) for k, v in record.items()})


def _reference_headings(snakes, p: dict, out: str) -> None:
    """The original's seed test per heading, margin by margin: its dilation kernel (the struct ``seed_snake``
    builds, as offsets from the anchor) and whether ``find_available_coordinates`` can return any start at all
    (dilating an empty map with the image border ring set, as ``seed_snake`` does, stays >= 0)."""
    R, L, aa = p["resolution"], p["paddle_length"], p["antialias"]
    found = {}
    for m in p["margins"]:
        large = snakes.generate_dilation_struct(m * aa)
        valid, offsets = [], []
        for degrees in range(-180, 180):
            _, struct = snakes.draw_line_n_mask(((L + m) * 2 + 1,) * 2, [L + m + 1] * 2, degrees * np.pi / 180, L,
                                                p["thickness"], m, large, aa)
            lined = np.zeros((R, R))
            lined[0], lined[-1], lined[:, 0], lined[:, -1] = 1, 1, 1, 1
            dilated = snakes.binary_dilate_custom(lined, struct)
            valid.append(snakes.find_available_coordinates(np.ceil(dilated - 0.3), margin=0)[1] > 0)
            offsets.append(sorted(map(tuple, (np.argwhere(struct.astype(np.uint8) > 0) - (L + m)).tolist())))
        found[m] = dict(valid=valid, offsets=offsets)
    Path(out).write_text(json.dumps({str(m): v for m, v in found.items()}))


# ------------------------------------------------------------------------------------------------------ main side

def reference_headings(params, original: str, python: str) -> dict:
    """The original's seed kernel and validity per heading for each margin of ``params`` (see the worker)."""
    import dataclasses
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "headings.json"
        spec = dict(kind="headings", params=dataclasses.asdict(params))
        done = subprocess.run([python, __file__, "--_worker", "--original", str(original), "--spec",
                               json.dumps(spec), "--out", str(out)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"pathfinder_faithfulness: the original's seed test failed:\n{done.stderr[-3000:]}")
        return {int(m): v for m, v in json.loads(out.read_text()).items()}

def reference(params, n: int, seed: int, original: str, python: str, cache: Path, jobs: int = 2,
              touching: bool = False) -> dict:
    """The original's output for ``n`` images of ``params`` (cached), run in ``jobs`` subprocesses of ``python``;
    ``touching``: also each target's paint."""
    import dataclasses
    original, python = str(original or ""), str(python or "")
    if not original or not Path(original, "snakes2.py").is_file() or not Path(original, "snakes.py").is_file():
        raise SystemExit(f"pathfinder_faithfulness: the original generator is not available: --original="
                         f"{original!r} must be a directory with snakes.py and snakes2.py (github.com/drewlinsley/"
                         f"pathfinder at commit ab9c130)")
    if not python or not Path(python).is_file():
        raise SystemExit(f"pathfinder_faithfulness: --reference_python={python!r} is not an interpreter; it needs "
                         f"numpy, scipy, pillow and opencv-python-headless")
    spec_params = dataclasses.asdict(params)
    settings = [spec_params, n, seed, jobs] + ([True] if touching else [])
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()
                         + Path(original, "snakes.py").read_bytes() + Path(original, "snakes2.py").read_bytes()
                         + WORKER_VERSION.encode()).hexdigest()[:16]
    path = cache / f"pf{params.resolution}_{params.contour_length}_{n}_{key}.npz"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        parts, procs = [], []
        counts = [n // jobs + (j < n % jobs) for j in range(jobs)]
        for j, count in enumerate(counts):
            part = cache / f"{path.stem}.part{j}.npz"
            spec = dict(params=spec_params, n=count, seed=seed * 1000 + j, touching=touching)
            procs.append(subprocess.Popen([python, __file__, "--_worker", "--original", original, "--spec",
                                           json.dumps(spec), "--out", str(part)], stderr=subprocess.PIPE, text=True))
            parts.append(part)
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"pathfinder_faithfulness: the original generator failed ({python} with "
                                 f"{original}):\n{err[-3000:]}")
        loaded = [dict(np.load(part)) for part in parts]
        merged = {k: np.concatenate([d[k] for d in loaded]) for k in loaded[0] if k != "cpu_seconds"}
        merged["cpu_seconds"] = np.array(sum(float(d["cpu_seconds"]) for d in loaded))
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **merged)
        os.replace(tmp, path)
        for part in parts:
            part.unlink()
    return dict(np.load(path))


def load_generator(rev: str | None):
    """lra.data.pathfinder_gen as it is now, or as it was at git revision ``rev`` (a standalone copy)."""
    from lra.data import pathfinder_gen
    if rev is None:
        return pathfinder_gen
    root = Path(__file__).resolve().parent.parent
    text = subprocess.run(["git", "show", f"{rev}:lra/data/pathfinder_gen.py"], cwd=root, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"pathfinder_gen_{rev}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"pathfinder_gen_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def ours(gen, resolution: int, difficulty: str, n: int, seed: int) -> dict:
    """The same record as the worker's, from a generator module."""
    p = gen.params_for(resolution, difficulty)
    out = dict(images=[], labels=[], markers=[], heading=[], distractors=[], attempts=[], margin=[], paints=[])
    t0 = time.process_time()
    for i in range(n):
        s = gen.render(p, gen.image_rng(seed, p, i), geometry=True)
        g = s.geometry
        out["images"].append(s.image)
        out["labels"].append(s.label)
        out["margin"].append(s.margin)
        out["markers"].append([list(map(int, m)) for m in g["markers"]])
        out["heading"].append(g["targets"][0][0][4] * 180 / np.pi)
        out["distractors"].append(len(g["distractors"]))
        out["attempts"].append(g["attempts"])
        out["paints"].append(np.stack(g["target_paint"]))
    out = {k: np.asarray(v) for k, v in out.items()}
    out["cpu_seconds"] = np.array(time.process_time() - t0)
    return out


def per_image(record: dict) -> dict[str, np.ndarray]:
    """Per-image statistics of a record (see the module docstring)."""
    from scipy import ndimage
    images = record["images"].astype(np.float64)
    n, R = images.shape[0], images.shape[1]
    ring = np.zeros((R, R), bool)
    b = max(2, R // 16)
    ring[:b], ring[-b:], ring[:, :b], ring[:, -b:] = True, True, True, True
    components = np.array([ndimage.label(im >= 64, structure=np.ones((3, 3)))[1] for im in images])
    markers = record["markers"].astype(np.float64)  # [n, 2 (first, second), 2 (y, x)]
    centre = (R - 1) / 2
    return {
        "pixels > 0": (images > 0).mean(axis=(1, 2)),
        "pixels >= 128": (images >= 128).mean(axis=(1, 2)),
        "mean intensity / 255": images.mean(axis=(1, 2)) / 255,
        "components (>= 64, 8-nbr)": components.astype(np.float64),
        f"ink share in outer {b}-px ring": images[:, ring].sum(axis=1) / np.maximum(images.sum(axis=(1, 2)), 1),
        f"max pixel in outer {b}-px ring": images[:, ring].max(axis=1),
        "distractor snakes placed": record["distractors"].astype(np.float64),
        "first marker y": markers[:, 0, 0], "first marker x": markers[:, 0, 1],
        "second marker y": markers[:, 1, 0], "second marker x": markers[:, 1, 1],
        "marker distance": np.hypot(*(markers[:, 0] - markers[:, 1]).T),
        "first marker from centre": np.hypot(markers[:, 0, 0] - centre, markers[:, 0, 1] - centre),
        "first target heading (deg)": record["heading"].astype(np.float64),
        "label": record["labels"].astype(np.float64),
    } | ({"targets touching (paint >= 128)": np.array([touching(*t) for t in record["paints"]], np.float64)}
         if "paints" in record else {})


def touching(a: np.ndarray, b: np.ndarray, level: int = 128) -> bool:
    """Do two targets' bright paint pixels (``>= level`` of 255) overlap or touch (8-neighbours)? Where they do, a
    label-0 image can look connected."""
    x, y = np.pad(a >= level, 1), b >= level
    near = np.zeros_like(y)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            near |= x[dy:dy + y.shape[0], dx:dx + y.shape[1]]
    return bool((near & y).any())


def zscore(a: np.ndarray, b: np.ndarray) -> float:
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    d = a.mean() - b.mean()
    return 0.0 if se == 0 and d == 0 else float(d / se) if se > 0 else float("inf") * np.sign(d)


def grid(left: np.ndarray, right: np.ndarray, title_left: str, title_right: str, per_side: int = 4,
         tile: int = 128):
    """Two blocks of per_side x per_side tiles (nearest-neighbour enlarged), left and right, with titles."""
    from PIL import Image, ImageDraw
    gap, head = 6, 22
    side = per_side * (tile + gap)
    canvas = Image.new("L", (2 * side + 4 * gap, head + side + gap), 255)
    draw = ImageDraw.Draw(canvas)
    for k, (images, title) in enumerate(((left, title_left), (right, title_right))):
        x0 = gap + k * (side + 3 * gap)
        draw.text((x0, 5), title, fill=0)
        for i, im in enumerate(images[:per_side * per_side]):
            r, c = divmod(i, per_side)
            canvas.paste(Image.fromarray(im).resize((tile, tile), Image.Resampling.NEAREST),
                         (x0 + c * (tile + gap), head + r * (tile + gap)))
    return canvas


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--original", default=os.environ.get("PATHFINDER_ORIGINAL"),
                    help="directory with the original snakes.py and snakes2.py (drewlinsley/pathfinder @ ab9c130)")
    ap.add_argument("--reference_python", default=os.environ.get("PATHFINDER_REFERENCE_PYTHON"),
                    help="python with numpy, scipy, pillow, opencv-python-headless")
    ap.add_argument("--before_rev", default=None, help="also compare lra/data/pathfinder_gen.py at this git revision")
    ap.add_argument("--sets", nargs="*", default=None, help="res:difficulty:n, e.g. 32:hard:300 (default: all)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--jobs", type=int, default=2, help="processes for the original generator")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "pathfinder_faithfulness_cache"))
    ap.add_argument("--out", default=str(RESULTS / "pathfinder_faithfulness.md"))
    ap.add_argument("--no_grids", action="store_true", help="write the statistics only (a follow-up run)")
    ap.add_argument("--touching", action="store_true", help="also record the original's target paints (a separate "
                    "run of the original) and compare how often the two targets touch")
    ap.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        return _reference_worker(args.original, json.loads(args.spec), args.out)

    import platform

    from lra.data.pathfinder import default_workers
    sets = DEFAULT_SETS if not args.sets else {(int(r), d): int(n) for r, d, n in (s.split(":") for s in args.sets)}
    now = load_generator(None)
    before = load_generator(args.before_rev) if args.before_rev else None
    rows, summary, grids = [], [], {}
    cpu = {}
    for (res, difficulty), n in sets.items():
        p = now.params_for(res, difficulty)
        ref = reference(p, n, args.seed, args.original, args.reference_python, Path(args.cache), args.jobs,
                        args.touching)
        mine = ours(now, res, difficulty, n, args.seed)
        old = ours(before, res, difficulty, n, args.seed) if before else None
        cpu[res, difficulty] = (float(ref["cpu_seconds"]), float(mine["cpu_seconds"]),
                                float(old["cpu_seconds"]) if old else None)
        s_ref, s_now = per_image(ref), per_image(mine)
        s_old = per_image(old) if old else None
        worst = worst_before = 0.0
        for name in s_ref:
            z = zscore(s_now[name], s_ref[name])
            worst = max(worst, abs(z)) if name != "label" else worst
            row = [f"{res}", difficulty, name, f"{s_ref[name].mean():.4g} ± {s_ref[name].std(ddof=1):.3g}"]
            if s_old is not None:
                z_old = zscore(s_old[name], s_ref[name])
                worst_before = max(worst_before, abs(z_old)) if name != "label" else worst_before
                row += [f"{s_old[name].mean():.4g} ± {s_old[name].std(ddof=1):.3g}", f"{z_old:+.1f}"]
            row += [f"{s_now[name].mean():.4g} ± {s_now[name].std(ddof=1):.3g}", f"{z:+.1f}"]
            rows.append(row)
        summary.append((res, difficulty, n, worst, worst_before))
        if (res, "hard") not in grids or difficulty == "hard":
            grids[res, "hard"] = (mine["images"], ref["images"], difficulty, old["images"] if old else None)
        print(f"{res} {difficulty}: n={n}, max |z| (after) {worst:.1f}; original {cpu[res, difficulty][0]:.0f} "
              f"CPU s, ours {cpu[res, difficulty][1]:.1f} CPU s", flush=True)

    heading_rows = []
    for res in sorted({r for r, _ in sets}):
        p = now.params_for(res, "hard")
        theirs = reference_headings(p, args.original, args.reference_python)
        for m in p.margins:
            kit, pf_valid = now.kit_for(p, m), np.array(theirs[m]["valid"])
            same = sum(sorted(map(tuple, kit.cores[h].tolist())) == [tuple(o) for o in theirs[m]["offsets"][h]]
                       for h in range(360))
            degrees = np.flatnonzero(pf_valid) - 180
            span = f"{degrees.min()} .. {degrees.max()}" if len(degrees) else "none"
            heading_rows.append(f"| {res} | {m} | {int(pf_valid.sum())} ({span}) | {int(kit.valid.sum())} | "
                                f"{int((pf_valid == kit.valid).sum())} / 360 | {same} / 360 |")

    for (res, _), (mine_images, ref_images, difficulty, old_images) in ({} if args.no_grids else grids).items():
        g = grid(mine_images, ref_images, f"ours ({res} x {res}, {difficulty})",
                 f"original snakes2.py ({res} x {res}, {difficulty})", tile=max(128, res))
        g.save(Path(args.out).parent / f"pathfinder_faithfulness_{res}.png", optimize=True)
        if old_images is not None and res == 32:
            g = grid(old_images, ref_images, f"ours before the fix ({args.before_rev}, {difficulty})",
                     f"original snakes2.py ({res} x {res}, {difficulty})")
            g.save(Path(args.out).parent / f"pathfinder_faithfulness_{res}_before.png", optimize=True)

    head = ["res", "difficulty", "statistic", "original: mean ± sd"]
    if before:
        head += [f"ours before ({args.before_rev}): mean ± sd", "z before"]
    head += ["ours: mean ± sd", "z"]
    lines = ["# Pathfinder generator vs the original (snakes2.py)", "",
             f"Machine: {platform.processor() or platform.machine()}, {default_workers()} cores, shared. Command: "
             f"`python -m benchmarks.pathfinder_faithfulness --original=<drewlinsley/pathfinder @ ab9c130> "
             f"--reference_python=<python with numpy, scipy, pillow, opencv-python-headless>"
             f"{' --before_rev=' + args.before_rev if before else ''}"
             f"{' --sets ' + ' '.join(args.sets) if args.sets else ''}"
             f"{' --seed %d' % args.seed if args.seed != 7 else ''}{' --touching' if args.touching else ''}"
             f"{' --no_grids' if args.no_grids else ''}` (seed {args.seed}).", "",
             "Per set, per image: the statistics below over n images of each generator; z = (mean ours - mean "
             "original) / sqrt(sd_ours^2 / n + sd_original^2 / n). With about 15 statistics per set, |z| up to "
             "about 2.5 is what chance gives; a real difference shows as |z| in the tens. CPU seconds per image: "
             "the original's from its subprocesses (one core each), ours from rendering in this process "
             "(`render(..., geometry=True)`, one thread; the machine was shared, so these are rough).", "",
             "## The seed test at the border", "",
             "Per heading (integer degrees), the original's seed kernel (the struct `seed_snake` builds) and whether "
             "its `find_available_coordinates` can return any start at all (OpenCV pads the dilation with -DBL_MAX, "
             "so a heading whose kernel leaves some image pixel with no offset inside gets none), from the original "
             "code run here; against the Kit's cores and `valid` flags. (Before the fix every heading could seed.)",
             "", "| res | margin | headings that can seed, original (range) | ours | same verdict | same kernel |",
             "|---|---|---|---|---|---|", *heading_rows, "",
             "## Summary (max |z| over the statistics, label excluded)", ""]
    lines.append("| res | difficulty | images per generator | max abs z, ours vs original |"
                 + (" max abs z before the fix |" if before else "") + " original CPU s per image | ours |"
                 + (" ours before the fix |" if before else ""))
    lines.append("|---|---|---|---|---|---|" + ("---|---|" if before else ""))
    for res, difficulty, n, worst, worst_before in summary:
        c = cpu[res, difficulty]
        lines.append(f"| {res} | {difficulty} | {n} | {worst:.1f} |" + (f" {worst_before:.1f} |" if before else "")
                     + f" {c[0] / n:.3f} | {c[1] / n:.4f} |" + (f" {c[2] / n:.4f} |" if before else ""))
    lines += ["", "## Every statistic", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if not args.no_grids:
        lines += ["", "Grids (ours left, original right, hard): " + ", ".join(
            f"`benchmarks/results/pathfinder_faithfulness_{res}.png`" for res, _ in grids) + "."
            + (" Before the fix, 32 x 32: `benchmarks/results/pathfinder_faithfulness_32_before.png`."
               if before and (32, "hard") in grids else ""), ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
