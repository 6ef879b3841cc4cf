"""A tiny ``train.py`` run on a task's data, for the data tests."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TINY_RUN = {"batch_size": 2, "eval_batch_size": 2, "num_train_steps": 2, "eval_every": 2, "checkpoint_every": 2,
            "log_every": 1, "model.d_model": 16, "model.num_layers": 1, "progress_bar": False}


def train_tiny(config: str, workdir: Path, data_dir: Path, **overrides) -> dict:
    """``train.py --config=configs/<config>`` for 2 steps of a 1-layer width-16 model (``TINY_RUN``, then
    ``overrides``: ``model__d_model=32`` for ``--config.model.d_model=32``); returns its ``final_eval.json``."""
    settings = {**TINY_RUN, **{k.replace("__", "."): v for k, v in overrides.items()}}
    args = [f"--config=configs/{config}", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"]
    args += [f"--config.{k}={v}" for k, v in settings.items()]
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((Path(workdir) / "final_eval.json").read_text())


def pathfinder_copy(src: Path, dst: Path, num_images: int) -> Path:
    """A copy of the release-format directory ``src`` (``metadata/``, ``imgs/``) at ``dst``, topped up to
    ``num_images`` listed images with copies of its non-empty PNGs (as ``imgs/99/sample_<k>.png``, listed in
    ``metadata/99.npy``), so that every 80/10/10 split has an image."""
    import shutil

    shutil.copytree(src, dst)
    rows = [line.split() for f in sorted((dst / "metadata").glob("*.npy")) for line in f.read_text().splitlines()
            if line.strip()]
    full = [r for r in rows if (dst / r[0] / r[1]).stat().st_size]
    extra = []
    (dst / "imgs" / "99").mkdir()
    for k in range(max(0, num_images - len(rows))):
        r = full[k % len(full)]
        shutil.copyfile(dst / r[0] / r[1], dst / "imgs" / "99" / f"sample_{k}.png")
        extra.append(" ".join(["imgs/99", f"sample_{k}.png", str(k)] + r[3:]))
    if extra:
        (dst / "metadata" / "99.npy").write_text("\n".join(extra) + "\n")
    return dst
