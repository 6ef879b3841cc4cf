"""The metric record of a run: ``metrics.jsonl`` (one JSON object per line) and TensorBoard events, process 0 only.

Every line is valid JSON: a value that is not finite (a diverged loss) is written as ``null``, with the names of
such values listed under ``"nonfinite"``, never as the bare ``NaN``/``Infinity`` that JSON does not allow.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path

from lra.data.files import as_path, is_local, write_text_atomic


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
    for line in as_path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricWriter:
    """JSON lines + TensorBoard, written by process 0 only.

    On a local disk each record is appended to ``metrics.jsonl``. An object store cannot append: there the records
    are kept in memory and the whole file is uploaded again after each record (one object, published whole; a few
    hundred lines per run)."""

    def __init__(self, workdir, enabled: bool, config=None):
        self.path = as_path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self.wandb = start_wandb(config, workdir) if enabled and config is not None else None
        self.local = is_local(self.path)
        self.lines: list[str] = []  # object store: the file's content
        self.tb = None
        if enabled:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(os.fspath(as_path(workdir) / "tb"))
            if not self.local and self.path.exists():
                self.lines = [json.dumps(r, allow_nan=False) + "\n" for r in read(self.path)]

    def truncate_after(self, step: int) -> None:
        """On resume: forget the records of steps the restored checkpoint has not seen (they will be redone) and the
        final test record of an earlier finish (it is written again at the end)."""
        if not (self.enabled and self.path.exists()):
            return
        keep = [r for r in read(self.path) if r["step"] <= step and r.get("split") != "test"]
        self.lines = [json.dumps(r, allow_nan=False) + "\n" for r in keep]
        write_text_atomic(self.path, "".join(self.lines))

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled or self.tb is None:
            return
        record = json_safe({"step": step, "split": split, **metrics})
        line = json.dumps(record, allow_nan=False) + "\n"
        if self.local:
            with open(self.path, "a") as f:
                f.write(line)
        else:
            self.lines.append(line)
            write_text_atomic(self.path, "".join(self.lines))
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.tb.add_scalar(f"{split}/{k}", v, step)
        self.tb.flush()
        if self.wandb is not None:  # the same record; non-finite values as JSON null, as in metrics.jsonl
            self.wandb.log({f"{split}/{k}": v for k, v in record.items() if k not in ("step", "split", "nonfinite")},
                           step=step)

    def close(self):
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


WANDB_ID = "wandb_run_id"  # in the workdir: a resumed run logs into the same W&B run


def start_wandb(config, workdir):
    """A W&B run for this workdir when ``config.wandb.project`` is set (else None): the resolved config attached,
    its local files under ``<workdir>/wandb`` (a temporary folder when the workdir is not local), its id kept in
    ``<workdir>/wandb_run_id`` so that a resumed run continues it."""
    settings = config.get("wandb")
    if settings is None or not settings.project:
        return None
    try:
        import wandb
    except ImportError:
        raise ImportError("config.wandb.project is set but wandb is not installed: pip install "
                          "'lra-mixers[wandb]' (or unset config.wandb.project)") from None
    workdir = as_path(workdir)
    id_file = workdir / WANDB_ID
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
    if not id_file.exists():
        write_text_atomic(id_file, run_id + "\n")
    if is_local(workdir):
        files_dir = str(workdir)
    else:
        import tempfile
        files_dir = tempfile.mkdtemp(prefix="lra-wandb-")
    return wandb.init(project=settings.project, entity=settings.entity or None, name=settings.name or workdir.name,
                      mode=settings.mode or None, id=run_id, resume="allow", dir=files_dir,
                      config=json.loads(config.to_json_best_effort()))


class StepProfiler:
    """``config.profile_steps = (first, count)``: a ``jax.profiler`` trace of steps ``first`` .. ``first+count-1``
    into ``<workdir>/profile`` (open it with TensorBoard's Profile tab, ``tensorboard --logdir <workdir>/profile``).
    The trace starts before step ``first`` is dispatched and stops once step ``first+count-1`` has finished on the
    device. A workdir on an object store gets the trace copied there from a local temporary folder."""

    def __init__(self, profile_steps, workdir):
        first, count = tuple(profile_steps or (0, 0))
        self.first, self.last = first, first + count - 1
        self.workdir = as_path(workdir)
        self.dir = None

    def before(self, step: int) -> None:
        if self.first and step == self.first and self.dir is None:
            import jax
            import tempfile
            target = self.workdir / "profile"
            self.dir = str(target) if is_local(target) else tempfile.mkdtemp(prefix="lra-profile-")
            jax.profiler.start_trace(self.dir)

    def after(self, step: int, state) -> None:
        if self.dir is not None and step >= self.last:
            self.stop(state)

    def stop(self, state=None) -> None:
        if self.dir is None:
            return
        import jax
        if state is not None:
            jax.block_until_ready(state)
        jax.profiler.stop_trace()
        if not is_local(self.workdir):
            local = Path(self.dir)
            for f in local.rglob("*"):
                if f.is_file():
                    dst = self.workdir / "profile" / f.relative_to(local).as_posix()
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_bytes(f.read_bytes())
        self.dir, self.first = None, 0
