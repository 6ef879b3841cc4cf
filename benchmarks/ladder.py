"""Ladders of training runs through ``train.py``: one run directory per rung, resumable, records kept for
``lra.results``.

A rung is a config argument (``configs/<file>.py:<model>[,preset]``) and ``--config.<key>=<value>`` overrides. Each
runs as ``train.py --config=... --workdir=<root>/<rung> --config.progress_bar=False ...`` with stdout and stderr
appended to ``<root>/<rung>.log``. A rung whose run has a final evaluation is not run again; an interrupted one
resumes from its checkpoint when rerun (as train.py does), so a ladder can be spread over several sessions. After
each rung its record files (config, final evaluation, run info, metrics; not the checkpoints) are copied to
``<records>/<rung>/``: small enough to commit, and what ``lra.results`` and the learning curves read.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECORD_FILES = ("config.json", "final_eval.json", "run_info.json", "metrics.jsonl")


@dataclass(frozen=True)
class Rung:
    name: str  # the run directory's name
    config: str  # e.g. "configs/lra_pathfinder.py:s4"
    overrides: dict = field(default_factory=dict)  # config key -> value, passed as --config.<key>=<value>

    @property
    def pretrains(self) -> bool:
        return bool(self.overrides.get("pretrain"))

    def command(self, workdir: Path) -> list[str]:
        return [sys.executable, "train.py", f"--config={self.config}", f"--workdir={workdir}",
                "--config.progress_bar=False"] + [f"--config.{k}={v}" for k, v in self.overrides.items()]

    def classify_dir(self, workdir: Path) -> Path:
        """Where the run's classification result lives: the finetuning phase of a pretraining run."""
        return workdir / "finetune" if self.pretrains else workdir


def finished(rung: Rung, root: Path) -> bool:
    return (rung.classify_dir(root / rung.name) / "final_eval.json").is_file()


def run_rung(rung: Rung, root: Path) -> float | None:
    """Train one rung unless it has finished; returns the wall-clock seconds of this call (None when skipped)."""
    workdir = root / rung.name
    if finished(rung, root):
        print(f"{rung.name}: finished already ({rung.classify_dir(workdir) / 'final_eval.json'})", flush=True)
        return None
    root.mkdir(parents=True, exist_ok=True)
    cmd = rung.command(workdir)
    print(f"{rung.name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    with open(root / f"{rung.name}.log", "a") as log:
        rc = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{rung.name}: train.py exited with status {rc}; see {root / f'{rung.name}.log'}")
    print(f"{rung.name}: done in {wall / 60:.1f} min", flush=True)
    return wall


def keep_records(rungs, root: Path, records: Path) -> list[str]:
    """Copy each finished rung's record files to ``records/<rung>/`` (and a pretraining phase's to
    ``records/<rung>/pretrain/``). Returns the names of the rungs without a finished run."""
    missing = []
    for rung in rungs:
        src = rung.classify_dir(root / rung.name)
        if not (src / "final_eval.json").is_file():
            missing.append(rung.name)
            continue
        pairs = [(src, records / rung.name)]
        if rung.pretrains:
            pairs.append((root / rung.name / "pretrain", records / rung.name / "pretrain"))
        for s, d in pairs:
            d.mkdir(parents=True, exist_ok=True)
            for name in RECORD_FILES:
                if (s / name).is_file():
                    shutil.copyfile(s / name, d / name)
    return missing


def read_curve(record_dir: Path) -> dict[str, list[float]]:
    """Validation accuracy of a run against steps and against its wall-clock (``train_seconds`` of each validation
    record, where the run wrote one)."""
    steps, acc, seconds = [], [], []
    path = Path(record_dir) / "metrics.jsonl"
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        if r.get("split") == "val" and r.get("accuracy") is not None:
            steps.append(r["step"])
            acc.append(r["accuracy"])
            seconds.append(r.get("train_seconds"))
    return {"step": steps, "accuracy": acc, "seconds": seconds}


def plot_curves(curves: dict[str, dict], title: str, out: Path) -> None:
    """One figure, two panels: validation accuracy against steps and against wall-clock, one line per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, c in curves.items():
        a.plot(c["step"], c["accuracy"], marker=".", label=name)
        timed = [(s / 60, y) for s, y in zip(c["seconds"], c["accuracy"]) if s is not None]
        if timed:
            b.plot(*zip(*timed), marker=".", label=name)
    a.set_xlabel("training step")
    b.set_xlabel("wall-clock (minutes, training + validation)")
    a.set_ylabel("validation accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
