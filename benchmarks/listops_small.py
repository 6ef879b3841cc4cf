"""The ListOps small-preset ladder: every registered mixer trained with ``configs/lra_listops.py:<mixer>,small``, then
one Markdown table of their results.

    python -m benchmarks.listops_small [--root /tmp/lo_small] [--mixers transformer s4 ...] [--table_only]

Each mixer runs ``train.py --config=configs/lra_listops.py:<mixer>,small --workdir=<root>/<mixer>
--config.progress_bar=False`` one after another (stdout and stderr to ``<root>/<mixer>.log``); a mixer whose
workdir already holds ``final_eval.json`` is not run again (rerunning an interrupted one resumes it, as train.py
does). The table is built from each run directory's ``final_eval.json`` and ``config.json`` (test and best
validation accuracy, the step of the best checkpoint, the number of training steps), the parameter count the
trainer prints at start and the wall time of the run, and written to ``benchmarks/results/listops_small.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common

REPO = Path(__file__).resolve().parent.parent
TITLE = "ListOps small preset (2,000 generated examples), 2-core CPU"


def registered_mixers() -> list[str]:
    from models import MIXERS
    return list(MIXERS)


def run_one(mixer: str, root: Path) -> None:
    workdir = root / mixer
    if (workdir / "final_eval.json").is_file():
        print(f"{mixer}: finished already ({workdir / 'final_eval.json'})", flush=True)
        return
    root.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "train.py", f"--config=configs/lra_listops.py:{mixer},small", f"--workdir={workdir}",
           "--config.progress_bar=False"]
    print(f"{mixer}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    with open(root / f"{mixer}.log", "a") as log:
        rc = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{mixer}: train.py exited with status {rc}; see {root / f'{mixer}.log'}")
    (root / f"{mixer}.time.json").write_text(json.dumps({"wall_s": wall}) + "\n")
    print(f"{mixer}: done in {wall / 60:.1f} min", flush=True)


def read_run(mixer: str, root: Path) -> dict | None:
    workdir = root / mixer
    if not (workdir / "final_eval.json").is_file():
        return None
    final = json.loads((workdir / "final_eval.json").read_text())
    config = json.loads((workdir / "config.json").read_text())
    row = {"mixer": mixer, "test": final.get("test_accuracy"), "val": final.get("best_val_accuracy"),
           "step": final.get("step"), "steps": config.get("num_train_steps"), "params": None, "wall_s": None}
    log = root / f"{mixer}.log"
    if log.is_file():
        found = re.findall(r"params=([\d,]+)", log.read_text())
        if found:
            row["params"] = int(found[-1].replace(",", ""))
    timing = root / f"{mixer}.time.json"
    if timing.is_file():
        row["wall_s"] = json.loads(timing.read_text())["wall_s"]
    return row


def table(rows: list[dict], missing: list[str], root: Path) -> str:
    fmt = lambda v, f: "n/a" if v is None else f.format(v)
    lines = [f"# {TITLE}", "",
             f"Made by `python -m benchmarks.listops_small --root {root}`: each mixer trained with "
             "`train.py --config=configs/lra_listops.py:<mixer>,small` (600 steps of batch 32, 2 layers of width 64, "
             "the generated 2,000 training / 500 validation / 500 test trees), each in its own process on the same "
             f"machine ({common.machine()}), shared with other jobs, so wall times are rough. Accuracy: the test split "
             "at the best-validation checkpoint (`final_eval.json`); parameters: the count the trainer prints.", "",
             "| mixer | test accuracy | best val accuracy | best step | train steps | parameters | wall time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['mixer']}` | {fmt(r['test'], '{:.3f}')} | {fmt(r['val'], '{:.3f}')} | "
                     f"{fmt(r['step'], '{}')} | {fmt(r['steps'], '{}')} | {fmt(r['params'], '{:,}')} | "
                     f"{fmt(None if r['wall_s'] is None else r['wall_s'] / 60, '{:.1f} min')} |")
    if missing:
        lines += ["", f"Not run (no `final_eval.json`): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/lo_small", help="parent of the run directories")
    ap.add_argument("--mixers", nargs="*", default=None, help="default: every registered mixer")
    ap.add_argument("--table_only", action="store_true", help="build the table from finished runs, train nothing")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "listops_small.md"))
    args = ap.parse_args(argv)
    mixers = args.mixers or registered_mixers()
    unknown = sorted(set(mixers) - set(registered_mixers()))
    if unknown:
        raise SystemExit(f"unknown mixer(s) {unknown}; registered: {registered_mixers()}")
    root = Path(args.root)
    if not args.table_only:
        for m in mixers:
            run_one(m, root)
    rows, missing = [], []
    for m in mixers:
        r = read_run(m, root)
        (rows.append(r) if r else missing.append(m))
    text = table(rows, missing, root)
    tmp = Path(args.out + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, args.out)
    print(text)


if __name__ == "__main__":
    main()
