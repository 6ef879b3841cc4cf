"""Installed from a wheel, the project trains from any directory: console scripts, configs by name, nothing read
from a checkout. And from a checkout, ``--config`` takes a file path or a name."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import configs
from configs import base

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["configs", "lra", "models", "setup.cfg", "pyproject.toml", "README.md", "evaluate.py"]
TINY = ["--config.data.num_train=16", "--config.data.num_val=4", "--config.data.num_test=4", "--config.batch_size=4",
        "--config.eval_batch_size=4", "--config.num_train_steps=2", "--config.eval_every=2",
        "--config.checkpoint_every=2", "--config.log_every=1", "--config.model.d_model=16",
        "--config.model.num_layers=1", "--config.progress_bar=false"]


def test_config_names_resolve_to_the_package_files_and_paths_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: names are looked up in the package
    assert "lra_pathx" in configs.names() and "base" not in configs.names()
    pathx = str(REPO / "configs" / "lra_pathx.py")
    for spec in ("lra_pathx:s4", "lra_pathx.py:s4", "configs/lra_pathx.py:s4"):
        assert configs.resolve(spec) == pathx + ":s4"
    assert configs.resolve("lra_pathx") == pathx
    own = tmp_path / "lra_pathx.py"  # a user's own file of the same name is taken as given
    own.write_text((REPO / "configs" / "lra_pathx.py").read_text())
    assert configs.resolve(f"{own}:s4") == f"{own}:s4"
    with pytest.raises(FileNotFoundError, match=r"'lra_pathy' not found.*lra_pathx"):
        configs.resolve("lra_pathy:s4")
    by_name = base.load_file("lra_listops:transformer,small")
    by_file = base.load_file(str(REPO / "configs" / "lra_listops.py") + ":transformer,small")
    assert by_name.to_dict() == by_file.to_dict() and by_name.model.d_model == 64


def test_unknown_config_name_and_key_are_named_by_the_cli(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, str(REPO / "train.py"), *a, f"--workdir={tmp_path / 'w'}"],
                                    cwd=tmp_path, capture_output=True, text=True, timeout=300)
    proc = run("--config=lra_listopz:transformer")
    assert proc.returncode != 0 and "'lra_listopz' not found" in proc.stderr
    proc = run("--config=lra_listops:transformer,small", "--config.model.bogus=1")
    assert proc.returncode != 0 and "'model' has no field 'bogus'" in proc.stderr
    assert not (tmp_path / "w").exists()


def _project_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


@pytest.mark.slow
def test_wheel_installs_and_trains_from_another_directory(tmp_path):
    src = tmp_path / "src"
    for name in SOURCES:  # a clean copy: no build/ or egg-info left by earlier builds can leak into the wheel
        s = REPO / name
        if s.is_dir():
            shutil.copytree(s, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(s, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, cwd=tmp_path, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("lra_mixers-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    new_site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig."
                                    "get_paths()['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies come from this environment's site-packages (appended after the new one: nothing is
    # downloaded); its .pth files are not processed, so this project's own editable install stays invisible
    (new_site / "zz_dependencies.pth").write_text(_project_site_packages() + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, timeout=300)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import lra, configs, lra.cli; "
                            "print(lra.__file__, configs.__file__, lra.cli.__file__)"],
                           cwd=elsewhere, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert all(Path(p).is_relative_to(new_site) for p in where), where  # the wheel's copies, not the checkout's

    workdir = tmp_path / "run"
    proc = subprocess.run([str(venv / "bin" / "lra-train"), "--config=lra_listops:transformer,small",
                           f"--workdir={workdir}", f"--config.data.data_dir={tmp_path / 'data'}", *TINY],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads((workdir / "final_eval.json").read_text())
    assert 0.0 <= final["test_accuracy"] <= 1.0
    proc = subprocess.run([str(venv / "bin" / "lra-evaluate"), f"--workdir={workdir}", "--split=test"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((workdir / "eval_best_test.json").read_text())
    assert again["test_accuracy"] == pytest.approx(final["test_accuracy"])
    proc = subprocess.run([str(venv / "bin" / "lra-prepare"), "--help"], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "lra-prepare" in proc.stdout, proc.stderr[-2000:]
    assert not list(elsewhere.iterdir())  # nothing written into the directory it ran from
