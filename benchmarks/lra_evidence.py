"""Evidence that the mixers learn LRA tasks: reduced-scale runs through ``train.py``, one ladder per question.

    python -m benchmarks.lra_evidence --ladder pathfinder [--root runs/lra_evidence] [--rungs s4 transformer]
    python -m benchmarks.lra_evidence --ladder pathfinder --table_only      # tables and curves from finished runs
    python -m benchmarks.lra_evidence --list                                # the ladders, rungs and their settings

Every rung is a normal run: ``train.py --config=configs/lra_<task>.py:<model> --workdir=<root>/<ladder>/<rung>
--config.<key>=<value> ...`` (checkpoints, metrics, run info), one after another; a finished rung is skipped and an
interrupted one resumes, so a ladder can be spread over sessions (run it in the background, e.g. under ``nohup``).
Each finished run's record files are copied to ``benchmarks/results/runs/lra_evidence/<ladder>/<rung>/``; the table
(``lra.results``, which labels every row with its scale and the differing settings) and a learning-curve figure per
ladder (validation accuracy against steps and against wall-clock) go to ``benchmarks/results/lra_evidence.md`` and
``benchmarks/results/lra_evidence_<ladder>.png``.

The reduced scale, stated once here and in the results file:

* **Data**: the task's own generator and settings, fewer examples: Pathfinder-32 hard, 20,000 generated images
  (16,000 / 2,000 / 2,000 after the 80/10/10 split), full 1,024-pixel sequences; ListOps with LRA's generator
  settings (depth 10, up to 10 arguments, lengths 500-2,000), 20,000 / 1,000 / 1,000 trees.
* **Model and optimiser**: each model's task config (the published recipe: norm, pooling, learning rates, schedule,
  weight decay); the models whose published size is too big for a 2-core CPU are narrowed (named per rung).
* **Budget**: batch 32 and a fixed number of steps per rung, chosen for about an hour on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks import ladder
from benchmarks.ladder import REPO, Rung

MIXERS = ("s4", "transformer", "hydra", "aaren", "deltanet", "routing", "combiner")

_PATHFINDER = {"data.num_images": 20_000, "batch_size": 32, "num_train_steps": 3_000, "eval_every": 250,
               "checkpoint_every": 250, "log_every": 50, "eval_batch_size": 250}
# S4's published Pathfinder model is 6 x 256 (batch 64, 500k steps); on a 2-core CPU: 4 x 64, the recipe otherwise
_S4_PATHFINDER = {"model.d_model": 64, "model.num_layers": 4, "optimizer.warmup_steps": 200}

_LISTOPS = {"data.num_train": 20_000, "data.num_val": 1_000, "data.num_test": 1_000, "batch_size": 32,
            "num_train_steps": 1_500, "eval_every": 250, "checkpoint_every": 250, "log_every": 50,
            "eval_batch_size": 100}
# published: S4 8 x 128 (batch 50), LRA's Transformer 4 x 512 (batch 32); narrowed to what a 2-core CPU steps
_NARROW_LISTOPS = {"s4": {"model.d_model": 64, "model.num_layers": 4, "optimizer.warmup_steps": 150},
                   "transformer": {"model.d_model": 64, "model.mixer_kwargs.qkv_dim": 64, "model.head_hidden": 64,
                                   "optimizer.warmup_steps": 150}}


def _pathfinder(mixer: str, **extra) -> dict:
    return {**_PATHFINDER, **(_S4_PATHFINDER if mixer == "s4" else {}), **extra}


LADDERS: dict[str, dict] = {
    "pathfinder": {
        "title": "Pathfinder-32 (hard), 20,000 generated images, every mixer",
        "rungs": [Rung(m, f"configs/lra_pathfinder.py:{m}", _pathfinder(m)) for m in MIXERS],
    },
    "pathfinder_spt": {
        "title": "Pathfinder-32 with self-pretraining (masked denoising on the training images), then the same "
                 "finetuning budget",
        "rungs": [Rung(f"{m}_spt", f"configs/lra_pathfinder.py:{m}",
                       _pathfinder(m, **{"pretrain": "masked_lm", "pretraining.num_train_steps": 1_500}))
                  for m in ("s4", "transformer")],
    },
    "pathfinder_diagnostics": {
        "title": "Pathfinder-32 diagnostics for S4's plateau (1,500 steps each; s4_long: 10,000)",
        "rungs": [Rung("s4_easy", "configs/lra_pathfinder.py:s4",
                       _pathfinder("s4", **{"data.difficulty": "easy", "num_train_steps": 1_500})),
                  Rung("s4_lr_0.01", "configs/lra_pathfinder.py:s4",
                       _pathfinder("s4", **{"optimizer.lr": 0.01, "num_train_steps": 1_500})),
                  Rung("s4_layernorm", "configs/lra_pathfinder.py:s4",
                       _pathfinder("s4", **{"model.norm": "layer", "num_train_steps": 1_500})),
                  Rung("s4_mean_pool", "configs/lra_pathfinder.py:s4",
                       _pathfinder("s4", **{"model.pooling": "mean", "num_train_steps": 1_500})),
                  Rung("s4_lr_0.001", "configs/lra_pathfinder.py:s4",
                       _pathfinder("s4", **{"optimizer.lr": 0.001, "num_train_steps": 1_500})),
                  # dt range 10x smaller: every SSM's time scale 10x longer (published: 0.001-0.1)
                  Rung("s4_dt_slow", "configs/lra_pathfinder.py:s4",
                       _pathfinder("s4", **{"model.mixer_kwargs.dt_min": 0.0001, "model.mixer_kwargs.dt_max": 0.01,
                                            "num_train_steps": 1_500})),
                  # the published warmup is 2,500 steps of 500,000; the ladder's 200 of 3,000 is a larger share
                  Rung("s4_warmup_1000", "configs/lra_pathfinder.py:s4",
                       _pathfinder("s4", **{"optimizer.warmup_steps": 1_000, "num_train_steps": 1_500})),
                  # the budget itself: the hard set for 10,000 steps (3.3x the ladder's rung), spread over sessions
                  Rung("s4_long", "configs/lra_pathfinder.py:s4",
                       _pathfinder("s4", **{"num_train_steps": 10_000, "eval_every": 500,
                                            "checkpoint_every": 500}))],
    },
    "listops": {
        "title": "ListOps (LRA generator settings), 20,000 training trees",
        "rungs": [Rung(m, f"configs/lra_listops.py:{m}", {**_LISTOPS, **_NARROW_LISTOPS.get(m, {})})
                  for m in ("s4", "transformer")],
    },
}


def rungs_of(name: str, only=None) -> list[Rung]:
    if name not in LADDERS:
        raise SystemExit(f"unknown ladder {name!r}; ladders: {', '.join(LADDERS)}")
    rungs = LADDERS[name]["rungs"]
    if only:
        unknown = sorted(set(only) - {r.name for r in rungs})
        if unknown:
            raise SystemExit(f"unknown rung(s) {unknown} in ladder {name!r}; rungs: {[r.name for r in rungs]}")
        by_name = {r.name: r for r in rungs}
        rungs = [by_name[n] for n in dict.fromkeys(only)]  # in the order named: cheap rungs first, say
    return rungs


def section(name: str, root: Path, records: Path, figures: Path) -> str:
    """The Markdown section of one ladder: the command, the results table (lra.results) and the curves."""
    from lra import results

    rungs = rungs_of(name)
    ladder.keep_records(rungs, root / name, records / name)
    done = [r for r in rungs if (records / name / r.name / "final_eval.json").is_file()]
    missing = [r.name for r in rungs if r not in done]
    head = [f"## {LADDERS[name]['title']}", "",
            f"Command: `python -m benchmarks.lra_evidence --ladder {name}`. Rungs (config and overrides):", ""]
    head += [f"- `{r.name}`: `{r.config}` " + " ".join(f"`{k}={v}`" for k, v in r.overrides.items()) for r in rungs]
    head.append("")
    if not done:
        return "\n".join(head + ["No finished runs yet.", ""])
    rel = os.path.relpath(records / name, REPO)
    tmp = figures / f".lra_evidence_{name}.md.tmp"
    code = results.main([str(Path(rel) / r.name) for r in done] + ["--md", str(tmp)])
    if code:
        raise SystemExit(code)
    body = tmp.read_text()
    tmp.unlink()
    figure = figures / f"lra_evidence_{name}.png"
    ladder.plot_curves({r.name: ladder.read_curve(records / name / r.name) for r in done},
                       LADDERS[name]["title"], figure)
    tail = [body, f"![validation accuracy against steps and wall-clock]({figure.name})", ""]
    if missing:
        tail.append(f"Not finished yet: {', '.join(missing)}.\n")
    return "\n".join(head + tail)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ladder", action="append", help="ladder(s) to run; default with --table_only: all")
    ap.add_argument("--rungs", nargs="*", help="only these rungs of the ladder, in this order")
    ap.add_argument("--root", default="runs/lra_evidence", help="parent of the run directories")
    ap.add_argument("--table_only", action="store_true", help="tables and curves from finished runs, train nothing")
    ap.add_argument("--list", action="store_true", help="print the ladders and their rungs")
    ap.add_argument("--records", default=str(REPO / "benchmarks" / "results" / "runs" / "lra_evidence"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "lra_evidence.md"))
    args = ap.parse_args(argv)
    if args.list:
        for name, spec in LADDERS.items():
            print(f"{name}: {spec['title']}")
            for r in spec["rungs"]:
                print(f"  {r.name}: {' '.join(r.command(Path(args.root) / name / r.name)[1:])}")
        return
    names = args.ladder or (list(LADDERS) if args.table_only else None)
    if not names:
        raise SystemExit("name a ladder with --ladder (or --list them)")
    root, records, out = Path(args.root), Path(args.records), Path(args.out)
    for name in names:
        rungs = rungs_of(name, args.rungs)
        if not args.table_only:
            for rung in rungs:
                ladder.run_rung(rung, root / name)
                ladder.keep_records([rung], root / name, records / name)  # committed as they land
    write_results(root, records, out)


def write_results(root: Path, records: Path, out: Path) -> None:
    """Rewrite the results file from every ladder's finished runs (those in ``root`` and those already recorded)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = ["# Evidence that the mixers learn LRA: reduced-scale runs", "",
             "The reduced scale" + __doc__.split("The reduced scale")[1],
             "Each section's table comes from the runs' own record files through `python -m lra.results`, which "
             "labels every row with its scale and lists the settings that differ from the task config. Accuracies "
             "are test accuracies of the best-validation checkpoint.", ""]
    for name in LADDERS:
        parts.append(section(name, root, records, out.parent))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(parts))
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
