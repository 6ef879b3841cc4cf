"""The metric record of a run: ``metrics.jsonl`` (one JSON object per line) and TensorBoard events, process 0 only.

Every line is valid JSON: a value that is not finite (a diverged loss) is written as ``null``, with the names of
such values listed under ``"nonfinite"``, never as the bare ``NaN``/``Infinity`` that JSON does not allow.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


def json_safe(metrics: dict) -> dict:
    """``metrics`` with non-finite floats replaced by None and their keys listed under ``"nonfinite"``."""
    out, bad = {}, []
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
            bad.append(k)
        else:
            out[k] = v
    if bad:
        out["nonfinite"] = bad
    return out


def read(path) -> list[dict]:
    """The records of a ``metrics.jsonl``; a torn last line (a write cut by a kill) is dropped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricWriter:
    """JSON lines + TensorBoard, written by process 0 only."""

    def __init__(self, workdir: Path, enabled: bool):
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(str(Path(workdir) / "tb"))

    def truncate_after(self, step: int) -> None:
        """On resume: forget the records of steps the restored checkpoint has not seen (they will be redone) and the
        final test record of an earlier finish (it is written again at the end)."""
        if not (self.enabled and self.path.exists()):
            return
        keep = [r for r in read(self.path) if r["step"] <= step and r.get("split") != "test"]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in keep))
        os.replace(tmp, self.path)

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled or self.tb is None:
            return
        record = json_safe({"step": step, "split": split, **metrics})
        with self.path.open("a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.tb.add_scalar(f"{split}/{k}", v, step)
        self.tb.flush()

    def close(self):
        if self.tb is not None:
            self.tb.close()
            self.tb = None
