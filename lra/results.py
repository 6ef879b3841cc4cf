"""Results tables from run directories: ``python -m lra.results RUN_DIR_OR_GLOB... [--md FILE] [--json FILE]``.

Every number comes from a run directory (``config.json``, ``final_eval.json``, ``run_info.json``), never typed:

- **The LRA table**: one row per model, one column per task (test accuracy in %, the published figure in brackets
  where there is one, configs/published.py), the average over the tasks present, and the scale of each cell.
- **The runs**: one row per run: model, task, scale, test accuracy, published, parameters, steps, training
  wall-clock, the device it ran on, and its directory.

**Scale** says what a number is worth: ``full`` (the task config's full settings for that model), ``small preset``
(its ``,small`` preset), ``reduced set`` (full or preset settings on fewer examples), ``reduced scale`` (the same
recipe with less of it: fewer examples, a smaller batch, fewer steps or warmup steps, a narrower or shallower model),
or ``modified`` (anything else); below the runs table each such run's differing settings are listed with its values.
Fields that cannot change what a run computes (where the data live, evaluation and logging intervals, the mesh, the
progress bar) are not compared. A two-phase run (``config.pretrain``) is reported
by its finetuning phase, its model marked ``+SPT``; a pretraining phase alone is skipped.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import json
import sys
from pathlib import Path

from configs import published
from lra.run_dir import flatten

IGNORED = ("data.data_dir", "data.cache_dir", "data.workers", "progress_bar", "max_nonfinite_steps", "prefetch",
           "keep_checkpoints", "settings_rule", "init_from", "pretrain", "eval_every", "checkpoint_every",
           "log_every", "eval_batch_size", "mesh.data", "mesh.model", "grad_accum_steps", "model.remat")
IGNORED_PREFIXES = ("wandb.", "profile")
DATA_SIZE = ("data.num_train", "data.num_val", "data.num_test", "data.num_images")
# "reduced scale": the recipe unchanged, only less of it (data, batch, steps, warmup, width, depth)
REDUCED = DATA_SIZE + ("batch_size", "num_train_steps", "optimizer.warmup_steps", "optimizer.decay_steps",
                       "pretraining.num_train_steps", "model.d_model", "model.num_layers", "model.head_hidden",
                       "model.mixer_kwargs.qkv_dim")
TASK_NAMES = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval", "image": "Image",
              "pathfinder": "Pathfinder", "pathx": "Path-X"}


def find_runs(patterns) -> list[Path]:
    """Run directories (holding config.json and final_eval.json) under or matching each pattern."""
    found = []
    for pattern in patterns:
        matches = [Path(p) for p in sorted(glob.glob(str(pattern))) if Path(p).is_dir()] or [Path(pattern)]
        for m in matches:
            if not m.is_dir():
                raise FileNotFoundError(f"{pattern}: no such run directory")
            candidates = [m] if (m / "final_eval.json").is_file() else sorted(
                p.parent for p in m.rglob("final_eval.json"))
            for c in candidates:
                if (c / "config.json").is_file() and c not in found:
                    found.append(c)
    return found


def _reference(task: str, mixer: str, preset: str):
    try:
        module = importlib.import_module(f"configs.lra_{task}")
        return flatten(json.loads(module.get_config(mixer + preset).to_json_best_effort()))
    except Exception:  # noqa: BLE001 - a task or model this version does not have
        return None


def scale_of(config: dict) -> tuple[str, list[str]]:
    """``(scale, fields that differ from that scale's settings)`` of a run's resolved config."""
    flat = flatten(config)
    task, mixer = flat.get("task"), flat.get("model.mixer")

    def differing(ref):
        return sorted(k for k in set(flat) & set(ref)
                      if k not in IGNORED and not k.startswith(IGNORED_PREFIXES) and flat[k] != ref[k])

    best = None
    for scale, preset in (("full", ""), ("small preset", ",small")):
        ref = _reference(task, mixer, preset)
        if ref is None:
            continue
        diff = differing(ref)
        if not diff:
            return scale, []
        if all(k in DATA_SIZE for k in diff):
            smaller = all(flat[k] <= ref[k] for k in diff)
            label = ("reduced set" if scale == "full" else "small preset, reduced set") if smaller else \
                f"{scale}, other data size"
            return label, diff
        if all(k in REDUCED for k in diff) and all(flat[k] <= ref[k] for k in diff):
            return ("reduced scale" if scale == "full" else "small preset, reduced scale"), diff
        if best is None or len(diff) < len(best[1]):
            best = ("modified", diff)
    return best or ("modified", [])


def read_run(workdir: Path) -> dict | None:
    config = json.loads((workdir / "config.json").read_text())
    final = json.loads((workdir / "final_eval.json").read_text())
    if final.get("objective", "classify") != "classify":
        return None  # a pretraining phase: no accuracy to report
    info = {}
    if (workdir / "run_info.json").is_file():
        info = json.loads((workdir / "run_info.json").read_text())
    scale, diff = scale_of(config)
    model = config["model"]["mixer"] + ("+SPT" if config.get("init_from") else "")
    task = config["task"]
    pub = published.RESULTS.get(config["model"]["mixer"], {})
    flat = flatten(config)
    return {"dir": str(workdir), "model": model, "task": task, "scale": scale, "differs": diff,
            "differing_values": {k: flat[k] for k in diff},
            "test_accuracy": final["test_accuracy"], "val_accuracy": final.get("val_accuracy"),
            "published": pub.get(task), "published_source": pub.get("source"), "step": final["step"],
            "num_train_steps": config["num_train_steps"], "params": info.get("num_params"),
            "train_seconds": info.get("train_seconds"), "device": info.get("device", "not recorded")}


def _pct(x):
    return "-" if x is None else f"{100 * x:.2f}"


def _duration(s):
    if s is None:
        return "-"
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


def tables(runs: list[dict]) -> tuple[str, dict]:
    tasks = [t for t in published.TASKS if any(r["task"] == t for r in runs)]
    models = list(dict.fromkeys(r["model"] for r in runs))
    chosen = {}
    for r in runs:  # one run per cell: full over reduced over preset, then the latest step count
        key = (r["model"], r["task"])
        rank = (r["scale"] == "full", r["scale"] == "reduced set", r["scale"] == "reduced scale", r["num_train_steps"])
        if key not in chosen or rank > chosen[key][0]:
            chosen[key] = (rank, r)
    lines = ["| model | " + " | ".join(TASK_NAMES[t] for t in tasks) + " | average |",
             "|---|" + "---|" * (len(tasks) + 1)]
    table = {}
    for m in models:
        cells, accs = [], []
        for t in tasks:
            if (m, t) not in chosen:
                cells.append("-")
                continue
            r = chosen[(m, t)][1]
            accs.append(r["test_accuracy"])
            pub = r["published"]
            pub_text = f" [{pub:.2f}]" if isinstance(pub, float) else (" [FAIL]" if (m == "transformer" and t == "pathx")
                                                                      else "")
            cells.append(f"{_pct(r['test_accuracy'])}{pub_text} ({r['scale']})")
            table.setdefault(m, {})[t] = {"test_accuracy": r["test_accuracy"], "scale": r["scale"],
                                          "published": pub, "dir": r["dir"]}
        avg = sum(accs) / len(accs) if accs else None
        table.setdefault(m, {})["average"] = avg
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {_pct(avg)} |")
    runs_lines = ["| model | task | scale | test accuracy | published | parameters | best step / steps | wall-clock | device | run |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        pub = f"{r['published']:.2f}" if isinstance(r["published"], float) else "-"
        params = f"{r['params']:,}" if r["params"] else "-"
        runs_lines.append(f"| {r['model']} | {TASK_NAMES.get(r['task'], r['task'])} | {r['scale']} | "
                          f"{_pct(r['test_accuracy'])} | {pub} | {params} | {r['step']} / {r['num_train_steps']} | "
                          f"{_duration(r['train_seconds'])} | {r['device']} | `{r['dir']}` |")
    notes = [f"- `{r['dir']}` ({r['scale']}): " + ", ".join(f"`{k}={v}`" for k, v in r["differing_values"].items())
             for r in runs if r["differing_values"]]
    if notes:
        runs_lines += ["", "Settings that differ from the task config:", ""] + notes
    sources = sorted({r["published_source"] for r in runs if r["published_source"]})
    md = "\n".join(lines) + "\n\nTest accuracy (%) of the best-validation checkpoint; [published]; (scale)." + \
        (" Published: " + "; ".join(sources) + "." if sources else "") + "\n\n" + "\n".join(runs_lines) + "\n"
    return md, {"table": table, "runs": runs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lra.results", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories, folders holding runs, or glob patterns")
    ap.add_argument("--md", default="", help="write the Markdown here (default: print it)")
    ap.add_argument("--json", default="", help="write the JSON here")
    args = ap.parse_args(argv)
    try:
        dirs = find_runs(args.runs)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs = [r for r in (read_run(d) for d in dirs) if r is not None]
    if not runs:
        print(f"error: no finished classification run (config.json + final_eval.json) under {args.runs}",
              file=sys.stderr)
        return 2
    md, data = tables(runs)
    command = "python -m lra.results " + " ".join(args.runs)
    md = f"Made by `{command}`.\n\n" + md
    if args.md:
        Path(args.md).write_text(md)
    else:
        print(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, **data}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
