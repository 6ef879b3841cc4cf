"""Pathfinder generator: throughput per resolution with 1 and 2 worker processes, the projected time of a 200k
Path-X set, and distribution statistics of the generated images. Writes benchmarks/results/pathfinder_gen.md.

    python -m benchmarks.bench_pathfinder_gen            # about 5 minutes on 2 cores
    python -m benchmarks.bench_pathfinder_gen --quick    # fewer images

Throughput is measured end to end through :func:`lra.data.pathfinder.write_set` (render, PNG encode, write,
metadata), process start-up included, on ``curv_contour_length_14`` (hard). The original generator (PF
``snakes2.py``) is timed by ``benchmarks/pathfinder_faithfulness.py`` (CPU seconds per image, one core, hard), whose
figures ``PF_SECONDS`` holds; it is not run here.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import markdown_table
from lra.data import pathfinder as pf
from lra.data import pathfinder_gen as gen

# CPU seconds per image of the original, hard (benchmarks/results/pathfinder_faithfulness.md)
PF_SECONDS = {32: 0.26, 64: 8.6, 128: 4.1, 256: 0.40}


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the pool's workers, once write_set has joined them)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def throughput(resolution: int, n: int, workers: int) -> tuple[float, float, float]:
    """(end-to-end images/s for 3n images, steady images/s = 2n / (time(3n) - time(n)): start-up removed, and the
    same steady figure in images per CPU-second of all processes: what a shared machine's load does not change)."""
    p = gen.params_for(resolution, "hard")
    if workers == 1:  # write_set runs in this process: build its per-process tables before timing, as the
        for m in p.margins:  # 2-worker runs rebuild theirs in both timings (and the difference removes them)
            kit = gen.kit_for(p, m)
            for h in range(360):
                kit.seed_extras(h)
    times, cpu = {}, {}
    for count in (n, 3 * n):
        with tempfile.TemporaryDirectory() as d:
            t0, c0 = time.perf_counter(), _cpu_seconds()
            pf.write_set(Path(d) / "set", p, count, seed=123, workers=workers, progress=False)
            times[count], cpu[count] = time.perf_counter() - t0, _cpu_seconds() - c0
    return 3 * n / times[3 * n], 2 * n / (times[3 * n] - times[n]), 2 * n / (cpu[3 * n] - cpu[n])


def touching(a: np.ndarray, b: np.ndarray, level: int = 128) -> bool:
    """Do two paint maps' bright pixels (``>= level``) overlap or touch (8-neighbours)?"""
    x, y = np.pad(a >= level, 1), b >= level
    near = np.zeros_like(y)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            near |= x[dy:dy + y.shape[0], dx:dx + y.shape[1]]
    return bool((near & y).any())


def statistics(resolution: int, n: int) -> dict:
    p = gen.params_for(resolution, "hard")
    rows = dict(labels=[], lit=[], bright=[], distractors=[], attempts=[], target_peak=[], distractor_peak=[],
                marker=[], touching=[])
    for i in range(n):
        s = gen.render(p, gen.image_rng(999, p, i), geometry=True)
        g = s.geometry
        rows["labels"].append(s.label)
        rows["lit"].append(float((s.image > 0).mean()))
        rows["bright"].append(float((s.image >= 128).mean()))
        rows["distractors"].append(len(g["distractors"]))
        rows["attempts"].append(g["attempts"])
        # peak intensities before the bytescale (PF's float image)
        rows["target_peak"].append(max(t.max() for t in g["target_paint"]) / 255 * p.paddle_contrast * p.snake_contrast)
        if g["distractors"]:
            rows["distractor_peak"].append(g["distractor_paint"].max() / 255 * p.snake_contrast)
        rows["marker"].append(min(int(s.image[m]) for m in g["markers"]))
        rows["touching"].append(touching(*g["target_paint"]))
    return {k: np.asarray(v, float) for k, v in rows.items()} | {"params": p}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/pathfinder_gen.md")
    args = ap.parse_args(argv)
    counts = {32: 1000, 64: 60, 128: 300, 256: 300}  # n: timed at n and 3n images
    stat_counts = {32: 400, 64: 60, 128: 300, 256: 300}
    if args.quick:
        counts = {k: max(4, v // 8) for k, v in counts.items()}
        stat_counts = {k: max(8, v // 8) for k, v in stat_counts.items()}
    rates, ends, cpu_rates, loads = {}, {}, {}, [os.getloadavg()[0]]
    for r in (32, 64, 128, 256):
        for w in (1, 2):
            ends[r, w], rates[r, w], cpu_rates[r, w] = throughput(r, counts[r], w)
            loads.append(os.getloadavg()[0])
            print(f"{r}x{r} workers={w}: {rates[r, w]:.1f} images/s steady, {ends[r, w]:.1f} end to end", flush=True)
    stats = {r: statistics(r, stat_counts[r]) for r in (32, 64, 128, 256)}

    lines = ["# Pathfinder generator: speed and distribution", "",
             f"Machine: {platform.processor() or platform.machine()}, {pf.default_workers()} cores, shared with "
             f"other jobs while measured (1-minute load average {min(loads):.1f} to {max(loads):.1f}, so the "
             f"2-worker figures are pessimistic). Figures go through `write_set`: render, PNG, write, metadata. "
             f"Steady = 2n / (time of 3n images - time of n images), which removes process start-up and the "
             f"per-process stamp tables; end to end = 3n / time of 3n images. Difficulty: hard "
             f"(curv_contour_length_14). Command: `python -m benchmarks.bench_pathfinder_gen"
             f"{' --quick' if args.quick else ''}`.", "",
             "## Throughput", ""]
    table = []
    for r in (32, 64, 128, 256):
        one, two = rates[r, 1], rates[r, 2]
        pf_rate = f"{1 / PF_SECONDS[r]:.2f} ({cpu_rates[r, 1] * PF_SECONDS[r]:.0f}x)" if PF_SECONDS.get(r) \
            else "not measured"
        table.append([f"{r}x{r}", f"{counts[r]} + {3 * counts[r]}", f"{one:.1f}", f"{two:.1f}", f"{two / one:.2f}",
                      f"{ends[r, 1]:.1f} / {ends[r, 2]:.1f}",
                      f"{cpu_rates[r, 1]:.1f} / {cpu_rates[r, 2]:.1f}", pf_rate])
    lines.append(markdown_table(["resolution", "images timed", "images/s, 1 worker (steady)",
                                 "images/s, 2 workers (steady)", "2 vs 1", "end to end, 1 / 2 workers",
                                 "images per CPU-second, 1 / 2 workers (steady)",
                                 "PF images per CPU-second (ours per CPU-second, 1 worker, vs PF)"], table))
    px = rates[128, 2]
    lines += ["", f"Projected 200,000 Path-X (128x128) images with 2 workers: {200_000 / px / 3600:.1f} hours "
              f"({px:.1f} images/s); with 1 worker {200_000 / rates[128, 1] / 3600:.1f} hours. PF at "
              f"{PF_SECONDS[128]} s per image would take {200_000 * PF_SECONDS[128] / 3600:.0f} core-hours "
              f"({200_000 * PF_SECONDS[128] / 3600 / 2:.0f} hours on 2 cores). "
              f"200,000 pf32 images: {200_000 / rates[32, 2] / 3600:.1f} hours with 2 workers.", "",
              "Where the time goes: most attempts at the two targets fail (a target runs off the image or into a dead "
              "end) and PF restarts both; the mean number of attempts per image is in the next table. 64x64 needs "
              "by far the most (14 dashes of 7 pixels are a long way in 64 pixels with turns limited to 50 degrees), "
              "hence its low rate. The 2-worker speed-up is below 2 when the machine's two cores are shared, and "
              "Path-X gains least from the second worker (not investigated).", "",
              "## Distribution of the generated images", ""]
    table = []
    for r in (32, 64, 128, 256):
        s, p = stats[r], stats[r]["params"]
        table.append([f"{r}x{r}", len(s["labels"]), f"{s['labels'].mean():.3f}", f"{s['lit'].mean():.3f}",
                      f"{s['bright'].mean():.4f}",
                      f"{s['distractors'].mean():.2f} / {p.num_distractor_snakes}",
                      f"{s['attempts'].mean():.0f} (median {np.median(s['attempts']):.0f})",
                      f"{s['target_peak'].mean():.2f}",
                      f"{s['distractor_peak'].mean():.2f}" if len(s["distractor_peak"]) else "-",
                      int(s["marker"].min()), f"{s['touching'].mean():.3f}"])
    lines.append(markdown_table(
        ["resolution", "images", "label-1 fraction", "pixels > 0", "pixels >= 128", "distractor snakes placed / asked",
         "target-pair attempts per image", "target dash peak (before rescale)", "distractor dash peak",
         "min marker pixel", "targets touching"], table))
    s32 = stats[32]
    lines += ["", "Every image has two targets of exactly 14 dashes and distractors of exactly 4 (tests check this, "
              "the 90/continuity turn limit, the dash spacing, PF's margin rule dash by dash and the labels by flood "
              "fill). \"Targets touching\": images where a bright pixel (>= 128 of 255 in its paint) of one target "
              "overlaps or neighbours one of the other's: where that happens a label-0 image can look connected. "
              "As in PF, the two targets grow against one map that lacks both targets' newest dashes, so a target "
              "does not see the dash the other has just drawn, and the first target's last dash never enters the "
              "map (distractors can touch it); PF's margin rule (masks may not sum to 1.8) holds against every "
              "dash in the map (tested), and with margin 1 and thin dashes two masks can stay below 1.8 where the "
              "dashes pass within a pixel of each other.",
              "", "Samples (`python -m benchmarks.pathfinder_samples`): benchmarks/results/pathfinder_samples.png.", "",
              "## Faithfulness", "",
              "Compared with the original generator itself (its 2018 code run here in a separate environment), "
              "statistics of a few hundred images per set, seed kernels and valid headings: "
              "`python -m benchmarks.pathfinder_faithfulness`, benchmarks/results/pathfinder_faithfulness.md. "
              f"Dash peaks before rescaling at 32x32 (targets 1.5, distractors 2.0 contrast): "
              f"{s32['target_peak'].mean():.2f} and {s32['distractor_peak'].mean():.2f}.",
              "- Known deliberate differences (lra/data/pathfinder_gen.py docstring): NumPy Generator seeding per "
              "image; current Pillow's Lanczos and line drawing (the comparison runs both on the same Pillow); "
              "single contrasts.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
