"""Our S4 layer against state-spaces/s4's PyTorch ``S4Block``, side by side.

    /tmp/refvenv/bin/python -m benchmarks.vs_s4_reference --ref_dir /path/to/s4 [--lengths 1024 4096 16384]

One bidirectional S4 layer as the LRA configs use it: d_model 256, state 64 (DPLR, HiPPO-LegS, bilinear), one SSM
shared over the channels (``n_ssm=1``), exact GELU, then ``Linear(H -> 2H)`` + GLU; batch 4, float32, no dropout.
Forward (the reference under ``torch.no_grad``) and forward + backward (loss = sum of squared outputs, gradients of
the input and every parameter on both sides), medians of alternating runs, both sides held to the same threads.
The reference's Cauchy kernel without pykeops or its CUDA extension is ``cauchy_naive``, which builds the whole
``[channels, H, N/2, L]`` array of terms; above ``--ref_max_len`` it is not run (its size is reported instead), as a
24 GiB machine would run out of memory. Writes ``benchmarks/results/vs_s4_reference.md``.
"""
from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

from benchmarks import common, references

B, H, N = 4, 256, 64


def _stub_lightning():
    """The reference imports ``rank_zero_only`` from pytorch_lightning only to wrap its loggers; without the package
    (a whole training framework) a pass-through decorator stands in."""
    if "pytorch_lightning" in sys.modules:
        return
    try:
        import pytorch_lightning  # noqa: F401
        return
    except ImportError:
        pass
    pl = types.ModuleType("pytorch_lightning")
    pl.utilities = types.ModuleType("pytorch_lightning.utilities")
    pl.utilities.rank_zero_only = lambda f: f
    sys.modules["pytorch_lightning"], sys.modules["pytorch_lightning.utilities"] = pl, pl.utilities


def main():
    ap = argparse.ArgumentParser()
    references.add_ref_dir(ap, "s4")
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--ref_max_len", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/vs_s4_reference.md")
    args = ap.parse_args()
    load_start = os.getloadavg()
    root = references.check_checkout("s4", args.ref_dir)
    _stub_lightning()
    ref = references.load_module(root, "models/s4/s4.py", "s4_reference")
    references.set_threads(args.threads)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from models.s4 import S4

    torch.manual_seed(0)
    block = ref.S4Block(H, transposed=False, bidirectional=True, d_state=N, n_ssm=1, mode="dplr", final_act="glu",
                        dropout=0.0)
    block.train()
    ours = S4(d_model=H, d_state=N, n_ssm=1)

    rows = []
    for L in args.lengths:
        x = np.random.default_rng(L).normal(size=(B, L, H)).astype(np.float32)
        jx, tx = jnp.asarray(x), torch.tensor(x)
        params = ours.init(jax.random.key(0), jx[:1])
        fwd = jax.jit(lambda p, x: ours.apply(p, x))
        fb = jax.jit(jax.grad(lambda p, x: jnp.sum(ours.apply(p, x) ** 2), argnums=(0, 1)))

        def ref_fwd():
            with torch.no_grad():
                return block(tx)[0]

        def ref_fb():
            block.zero_grad(set_to_none=True)
            xi = tx.clone().requires_grad_()
            (block(xi)[0] ** 2).sum().backward()
            return xi.grad

        run_ref = L <= args.ref_max_len
        for mode, mine, theirs in (("fwd", lambda: fwd(params, jx), ref_fwd), ("fwd+bwd", lambda: fb(params, jx),
                                                                                ref_fb)):
            fns = {"ours": mine, **({"ref": theirs} if run_ref else {})}
            t = common.time_alternating(fns, repeats=args.repeats)
            r = t.get("ref", float("nan"))
            rows.append([L, mode, t["ours"] * 1e3, r * 1e3, r / t["ours"]])
            print(rows[-1], flush=True)
    terms_gib = lambda L: 2 * H * (N // 2) * L * 8 / 2**30  # two directions' C~, complex64, per array
    load_end = os.getloadavg()
    text = [
        f"## S4 layer vs state-spaces/s4 `S4Block` (B={B}, d_model {H}, state {N}, bidirectional, float32)", "",
        references.header("s4", args.threads), "",
        f"Command: `python -m benchmarks.vs_s4_reference --ref_dir <s4 checkout> "
        f"--lengths {' '.join(map(str, args.lengths))}` (with a Python environment holding torch). Medians of "
        f"{args.repeats} alternating runs; ratio = reference time / ours. Load average (1, 5, 15 min) at the start "
        f"{', '.join(f'{v:.1f}' for v in load_start)}; at the end {', '.join(f'{v:.1f}' for v in load_end)}.", "",
        "Both layers: DPLR kernel (HiPPO-LegS, rank 1, bilinear), one SSM shared over the channels, per-channel "
        "step sizes, `D` skip, exact GELU, `Linear(H, 2H)` + GLU, no dropout; the reference in training mode. "
        "The reference computes its Cauchy kernel with `cauchy_naive` (no pykeops, no CUDA extension on a CPU); "
        "ours with the chunked Cauchy sum of `models/s4.py`.", "",
        common.markdown_table(["L", "pass", "ours ms", "reference ms", "ratio"], rows), "",
    ]
    skipped = [L for L in args.lengths if L > args.ref_max_len]
    if skipped:
        text.append("Reference not run at L = " + ", ".join(map(str, skipped)) + ": its naive Cauchy kernel "
                    "materialises the terms, " + ", ".join(f"{terms_gib(L):.1f} GiB per array at L = {L}"
                                                            for L in skipped) +
                    ", and its backward keeps several such arrays (more than this 24 GiB machine holds).")
        text.append("")
    Path(args.out).write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
