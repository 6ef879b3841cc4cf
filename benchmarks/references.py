"""Side-by-side benchmarks against the reference PyTorch implementations: where they come from and how to load them.

The references are not part of this project and are never imported by it; a benchmark that compares against one
takes the path of a checkout of the reference repository (``--ref_dir``) at the commit pinned here, and needs
PyTorch in the same environment (``pip install torch einops`` plus the reference's own requirements, listed
below). Timings of both sides go through :func:`benchmarks.common.time_alternating` in one process, back to back,
with both libraries held to the same number of threads (:func:`set_threads`).

    git clone https://github.com/fla-org/flash-linear-attention /tmp/fla
    git -C /tmp/fla checkout bc3b101dcb713ddc5bd8924b66754eb68b5ccf89
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Reference:
    name: str
    url: str
    commit: str
    files: tuple[str, ...]  # the files the benchmark loads, relative to the checkout
    requirements: tuple[str, ...]  # pip packages beyond torch

    def describe(self) -> str:
        return f"{self.url} @ {self.commit[:10]}"


REFERENCES = {
    "fla": Reference("flash-linear-attention", "https://github.com/fla-org/flash-linear-attention",
                     "bc3b101dcb713ddc5bd8924b66754eb68b5ccf89", ("fla/ops/delta_rule/naive.py",), ("einops",)),
    "routing": Reference("routing-transformer", "https://github.com/lucidrains/routing-transformer",
                         "3f6c461a036e98dbae7e70c623d1c0e0616ef82a",
                         ("routing_transformer/routing_transformer.py",),
                         ("einops", "local-attention", "product-key-memory", "mixture-of-experts")),
    # the standalone S4Block (models/s4/s4.py); the commit the S4 configs follow keeps it under src/ with the
    # whole training framework's imports, and its layer math is the same
    "s4": Reference("s4", "https://github.com/state-spaces/s4", "e757cef57d89e448c413de7325ed5601aceaac13",
                    ("models/s4/s4.py",), ("einops", "scipy")),
}


def add_ref_dir(ap: argparse.ArgumentParser, key: str):
    ref = REFERENCES[key]
    ap.add_argument("--ref_dir", required=True,
                    help=f"a checkout of {ref.url} at commit {ref.commit} "
                         f"(needs torch and {', '.join(ref.requirements)})")
    ap.add_argument("--threads", type=int, default=2, help="threads for both PyTorch and XLA")


def check_checkout(key: str, ref_dir) -> Path:
    """The checkout's path, after checking that it holds the files the benchmark loads (a clear error if not)."""
    ref = REFERENCES[key]
    root = Path(ref_dir)
    missing = [f for f in ref.files if not (root / f).is_file()]
    if missing:
        raise SystemExit(f"--ref_dir={root}: not a checkout of {ref.url} (missing {', '.join(missing)}); clone it "
                         f"and check out {ref.commit}")
    return root


def load_module(root: Path, relpath: str, name: str, package_root: bool = False):
    """Import ``relpath`` of a reference checkout by path (``package_root``: put the checkout on ``sys.path`` first,
    for a file that imports its own package)."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise SystemExit("the side-by-side benchmarks need PyTorch in this environment: pip install torch") from e
    if package_root and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location(name, root / relpath)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        raise SystemExit(f"{root / relpath}: {e} (install the reference's requirements)") from e
    return module


def set_threads(n: int):
    """Hold PyTorch and XLA to ``n`` threads each. XLA's CPU pool follows ``NPROC``, read when the backend starts,
    so call this before the first JAX computation."""
    import torch
    torch.set_num_threads(n)
    os.environ["NPROC"] = str(n)


def header(ref_key: str, threads: int) -> str:
    import torch

    from benchmarks import common
    return (f"Machine: {common.machine()}; torch {torch.__version__}. Reference: {REFERENCES[ref_key].describe()}. "
            f"{threads} threads for each side (torch.set_num_threads, NPROC for XLA).")
