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
import os
from pathlib import Path

from benchmarks.ladder import REPO, Rung, keep_records, run_rung

TITLE = "ListOps small preset (2,000 generated examples), 2-core CPU"


def registered_mixers() -> list[str]:
    from models import MIXERS
    return list(MIXERS)


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
    rungs = [Rung(m, f"configs/lra_listops.py:{m},small") for m in mixers]
    if not args.table_only:
        for rung in rungs:
            run_rung(rung, root)
    records = Path(args.records)
    missing = keep_records(rungs, root, records)
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
