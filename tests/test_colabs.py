"""Every notebook in colabs/ runs top to bottom on tiny settings and writes its figures.

The tiny settings go into a cell inserted right after the notebook's one cell tagged ``parameters`` (every key
must already be a setting there); outputs go to a temporary directory. The kernel runs this interpreter, through a
kernelspec written to a temporary directory, so a fresh virtual environment needs no Jupyter set-up of its own.
Any cell error fails the test (nbclient raises ``CellExecutionError`` naming the cell); the notebooks assert their
own results too (restored checkpoint = ``final_eval.json``, every mixer's matrix = its fast form, ...). The set-up
cell's Colab branch (clone ``repo_url``, install with ``constraints.txt``) is run against a local clone.
"""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

REPO = Path(__file__).resolve().parents[1]
# notebook: (tiny settings, settings that name a directory (set to a temporary one), the figures it must write)
NOTEBOOKS = {
    "quickstart": ({"num_train": 200, "num_eval": 100, "steps": 12, "eval_every": 6, "d_model": 16},
                   ("figures", "workdir", "data_dir"), ["quickstart_curves.png"]),
    "mixers": ({"length": 32, "kernel_length": 64}, ("figures",),
               ["mixers_matrices.png", "s4_kernels.png", "cost_vs_length.png"]),
    "pretraining": ({"num_train": 200, "num_eval": 100, "pretrain_steps": 8, "finetune_steps": 8, "eval_every": 4,
                     "d_model": 16}, ("figures", "workdir", "data_dir"), ["denoising.png", "pretraining_vs_scratch.png"]),
}


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec for this interpreter (``sys.executable``) in a temporary kernels directory."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / "lra-test-python"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "lra test python", "language": "python"}))
    return root


def test_every_notebook_is_tested():
    assert sorted(p.stem for p in (REPO / "colabs").glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(name, tmp_path, kernel_dir):
    tiny, directories, figures = NOTEBOOKS[name]
    nb = nbformat.read(REPO / "colabs" / f"{name}.ipynb", as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), \
        "commit notebooks without outputs"
    where = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(where) == 1 and where[0] == min(i for i, c in enumerate(nb.cells) if c.cell_type == "code"), \
        "the first code cell, and only it, is tagged 'parameters'"
    settings = {**tiny, **{k: str(tmp_path / k) for k in directories}}
    nb.cells.insert(where[0] + 1, nbformat.v4.new_code_cell(
        f"_tiny = {settings!r}\n"
        "assert set(_tiny) <= set(SETTINGS), f'not settings of this notebook: {sorted(set(_tiny) - set(SETTINGS))}'\n"
        "SETTINGS.update(_tiny)"))
    km = KernelManager(kernel_name="lra-test-python", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = nbclient.NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(REPO / "colabs")}})
    client.execute()  # raises CellExecutionError on the first failing cell

    for fig in figures:
        png = tmp_path / "figures" / fig
        assert png.is_file() and png.stat().st_size > 10_000, f"{fig} missing or nearly empty"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
    shown = sum("image/png" in out.get("data", {}) for c in nb.cells if c.cell_type == "code" for out in c.outputs)
    assert shown >= len(figures), f"{shown} figures displayed, {len(figures)} expected"


# ------------------------------------------------------------------------------------------- the Colab set-up cell

def setup_cell() -> str:
    """The set-up cell (the one after ``parameters``), the same in every notebook."""
    sources = set()
    for name in NOTEBOOKS:
        nb = nbformat.read(REPO / "colabs" / f"{name}.ipynb", as_version=4)
        i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        sources.add(nb.cells[i + 1].source)
    assert len(sources) == 1, "the notebooks' set-up cells differ"
    return sources.pop()


def run_setup(python, cwd, repo_url, figures, env=None):
    script = f"SETTINGS = {{'repo_url': {repo_url!r}, 'figures': {str(figures)!r}}}\n{setup_cell()}\nprint('ROOT=' + str(ROOT))"
    return subprocess.run([str(python), "-c", script], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_setup_outside_a_checkout_without_repo_url_says_what_to_set(tmp_path):
    proc = run_setup(sys.executable, tmp_path, "", tmp_path / "figures")
    assert proc.returncode != 0 and "SETTINGS['repo_url'] is empty" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing cloned, nothing installed


@pytest.mark.slow
def test_setup_clones_and_installs_the_pinned_versions(tmp_path):
    """The Colab branch against a local clone: a fresh environment whose dependencies (pip and setuptools included)
    come from this one's site-packages (so nothing is downloaded), the cell clones the repository and installs it with -c
    constraints.txt; afterwards the environment imports the project from the clone."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    colab = tmp_path / "content"  # Colab's working directory: no checkout above it
    colab.mkdir()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0")  # offline: build with this environment's setuptools
    proc = run_setup(python, colab, f"file://{REPO}", colab / "figures", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    clone = colab / "lra-mixers"
    assert f"ROOT={clone}" in proc.stdout and (clone / "constraints.txt").is_file()
    where = subprocess.run([str(python), "-c", "import lra, configs; print(lra.__file__); print(configs.__file__)"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert all(Path(p).is_relative_to(clone) for p in where), where  # the editable install points at the clone
    shown = subprocess.run([str(python), "-m", "pip", "show", "lra-mixers"], cwd=tmp_path, env=env,
                           capture_output=True, text=True).stdout
    assert "Version: 0.1.0" in shown
