"""The ListOps small-preset ladder: every registered mixer trained with ``configs/lra_listops.py:<mixer>,small``, then
one Markdown table of their results.

    python -m benchmarks.listops_small [--root runs/listops_small] [--mixers transformer s4 ...] [--table_only]

Each mixer runs ``train.py --config=configs/lra_listops.py:<mixer>,small --workdir=<root>/<mixer>
--config.progress_bar=False`` one after another (stdout and stderr to ``<root>/<mixer>.log``); a mixer whose
workdir already holds ``final_eval.json`` is not run again (rerunning an interrupted one resumes it, as train.py
does). The table (test accuracy of the best-validation checkpoint, parameters, steps, wall-clock, device) is written to ``benchmarks/results/listops_small.md`` by ``lra.results`` from the runs' record files
(config, final evaluation, run info, metrics), which are copied to ``benchmarks/results/runs/listops_small/<mixer>/``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


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


RECORD_FILES = ("config.json", "final_eval.json", "run_info.json", "metrics.jsonl")


def keep_records(mixers: list[str], root: Path, records: Path) -> list[str]:
    """Copy each finished run's record files (not its checkpoints) to ``records/<mixer>/``: what ``lra.results``
    reads, small enough to commit. Returns the mixers without a finished run."""
    missing = []
    for m in mixers:
        src = root / m
        if not (src / "final_eval.json").is_file():
            missing.append(m)
            continue
        dst = records / m
        dst.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, dst / name)
    return missing


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="runs/listops_small", help="parent of the run directories")
    ap.add_argument("--mixers", nargs="*", default=None, help="default: every registered mixer")
    ap.add_argument("--table_only", action="store_true", help="build the table from finished runs, train nothing")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "listops_small.md"))
    ap.add_argument("--records", default=str(REPO / "benchmarks" / "results" / "runs" / "listops_small"),
                    help="where each run's record files (not checkpoints) are kept for lra.results")
    args = ap.parse_args(argv)
    mixers = args.mixers or registered_mixers()
    unknown = sorted(set(mixers) - set(registered_mixers()))
    if unknown:
        raise SystemExit(f"unknown mixer(s) {unknown}; registered: {registered_mixers()}")
    root = Path(args.root)
    if not args.table_only:
        for m in mixers:
            run_one(m, root)
    records = Path(args.records)
    missing = keep_records(mixers, root, records)
    from lra import results
    rel = os.path.relpath(records, REPO)
    code = results.main([str(Path(rel) / m) for m in mixers if m not in missing] + ["--md", args.out + ".tmp"])
    if code:
        raise SystemExit(code)
    body = Path(args.out + ".tmp").read_text()
    text = (f"# {TITLE}\n\nRuns: `python -m benchmarks.listops_small --root {args.root}` (each mixer trained with "
            "`train.py --config=configs/lra_listops.py:<mixer>,small`: 600 steps of batch 32, 2 layers of width 64, "
            "2,000 training / 500 validation / 500 test trees), one after another on a machine shared with other jobs "
            f"(wall-clock figures are rough); their records are kept in `{rel}/`. "
            + body + ("" if not missing else f"\nNot run (no `final_eval.json`): {', '.join(missing)}.\n"))
    os.replace(args.out + ".tmp", args.out)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
