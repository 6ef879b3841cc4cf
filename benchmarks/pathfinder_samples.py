"""A picture of Pathfinder samples: a grid of images with their labels, one row per resolution, to look at.

    python -m benchmarks.pathfinder_samples                        # generate 6 per resolution (32, 64, 128, 256)
    python -m benchmarks.pathfinder_samples --resolutions 128 --per_row 8 --out pathx.png
    python -m benchmarks.pathfinder_samples --from_dir ./lra_data/lra_release --resolutions 32

Images come from :mod:`lra.data.pathfinder_gen` (seeded: the same picture every time), or with ``--from_dir`` from a
release or generated directory through the reader (its first images in file order). Each tile is the image enlarged
with nearest-neighbour sampling to ``--tile`` pixels, captioned with its label: "1 connected" (the two markers lie on
one contour) or "0 apart". Only Pillow is needed. Writes ``benchmarks/results/pathfinder_samples.png`` by default.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lra.data import pathfinder as pf
from lra.data import pathfinder_gen as gen

OUT = Path(__file__).resolve().parent / "results" / "pathfinder_samples.png"
CAPTION = 18  # pixels of caption under each tile
GAP = 6
HEADER = 110  # pixels left of each row for its title


def samples(resolution: int, count: int, *, difficulty: str = "hard", seed: int = 0, from_dir=None):
    """``count`` (uint8 image, label) pairs: generated from ``seed``, or the first ones of a directory."""
    if from_dir is not None:
        directory = pf.find_dir(from_dir, resolution, difficulty)
        images, labels = pf.load_examples(directory, resolution, workers=1, progress=False)
        return [(np.asarray(images[i]), int(labels[i])) for i in range(min(count, len(labels)))]
    p = gen.params_for(resolution, difficulty)
    out = []
    for i in range(count):
        s = gen.render(p, gen.image_rng(seed, p, i))
        out.append((s.image, s.label))
    return out


def grid(rows: dict[str, list[tuple[np.ndarray, int]]], tile: int = 160) -> Image.Image:
    """One picture: per row (title -> samples) the tiles left to right, each captioned with its label."""
    width = HEADER + max(len(s) for s in rows.values()) * (tile + GAP) + GAP
    height = len(rows) * (tile + CAPTION + GAP) + GAP
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, (title, items) in enumerate(rows.items()):
        top = GAP + r * (tile + CAPTION + GAP)
        for line, text in enumerate(title.split("\n")):
            draw.text((GAP, top + tile // 2 - 12 + 14 * line), text, fill=0, font=font)
        for c, (image, label) in enumerate(items):
            left = HEADER + GAP + c * (tile + GAP)
            canvas.paste(Image.fromarray(image).resize((tile, tile), Image.Resampling.NEAREST), (left, top))
            draw.text((left + 2, top + tile + 3), f"label {label}: {'connected' if label else 'apart'}", fill=0,
                      font=font)
    return canvas


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128, 256], choices=pf.RESOLUTIONS)
    ap.add_argument("--difficulty", default="hard", help="easy | intermediate | hard")
    ap.add_argument("--per_row", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tile", type=int, default=160, help="pixels per tile")
    ap.add_argument("--from_dir", default=None, help="read a release or generated set instead of generating")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    rows = {}
    for r in args.resolutions:
        name = "Path-X" if r == 128 else f"Pathfinder-{r}"
        rows[f"{name}\n{r} x {r}, {args.difficulty}"] = samples(r, args.per_row, difficulty=args.difficulty,
                                                                  seed=args.seed, from_dir=args.from_dir)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid(rows, args.tile).save(out, optimize=True)
    print(out)
    return out


if __name__ == "__main__":
    main()
