"""DeltaNet's chunked kernel against flash-linear-attention's PyTorch ``delta_rule_chunkwise``, side by side.

    python -m benchmarks.vs_fla_deltanet --ref_dir /path/to/flash-linear-attention \\
        [--lengths 1024 4096 16384] [--chunks 16 32 64] [--before 4bb4ab9]

One layer's kernel, B=2, H=4, d_k=d_v=64, float32, both sides held to the same threads: forward (the reference under
``torch.no_grad``) and forward + backward (loss = sum of squared outputs, gradients of q, k, v and beta on both
sides), at each chunk size on both sides and each side at its best chunk. Medians of alternating runs. The
reference scales q by d_k^-0.5 itself; ours gets q pre-scaled (outside the timed call). Also: XLA's flops per token
and head of ours and the rate it reaches, next to a plain 1024^3 matmul's rate on each side measured in the same
run; and our whole bidirectional layer (d_model 256, 4 heads) forward + backward split into the kernel and the rest
(``--before REV``: the same for ``models/deltanet.py`` at git revision REV). Writes
``benchmarks/results/vs_fla_deltanet.md``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from benchmarks import common, references

B, H, D = 2, 4, 64


def main():
    ap = argparse.ArgumentParser()
    references.add_ref_dir(ap, "fla")
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--chunks", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ref_bwd_max_len", type=int, default=4096,
                    help="longer lengths: the reference's forward + backward is timed once, at its best forward chunk")
    ap.add_argument("--layer_lengths", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--before", default=None, help="git revision of models/deltanet.py to time the layer against")
    ap.add_argument("--out", default="benchmarks/results/vs_fla_deltanet.md")
    args = ap.parse_args()
    load_start = os.getloadavg()
    root = references.check_checkout("fla", args.ref_dir)
    naive = references.load_module(root, "fla/ops/delta_rule/naive.py", "fla_delta_rule_naive")
    references.set_threads(args.threads)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from models.deltanet import DeltaNet, delta_rule_chunked

    def inputs(L, seed=0):
        r = np.random.default_rng(seed)
        q, k, v = (r.normal(size=(B, H, L, D)).astype(np.float32) for _ in range(3))
        k /= np.linalg.norm(k, axis=-1, keepdims=True)
        beta = r.uniform(0.05, 0.95, size=(B, H, L)).astype(np.float32)
        return q, k, v, beta

    def ours(C, grad):
        f = lambda q, k, v, b: delta_rule_chunked(q, k, v, b, C)[0]
        if grad:
            return jax.jit(jax.grad(lambda q, k, v, b: jnp.sum(f(q, k, v, b) ** 2), argnums=(0, 1, 2, 3)))
        return jax.jit(f)

    def theirs(C, grad, t):
        if not grad:
            def run():
                with torch.no_grad():
                    return naive.delta_rule_chunkwise(*t, C)[0]
            return run
        def run():
            ps = [a.detach().requires_grad_() for a in t]
            o, _ = naive.delta_rule_chunkwise(*ps, C)
            (o ** 2).sum().backward()
            return [p.grad for p in ps]
        return run

    def flops_per_token(C, grad):
        """XLA counts a while loop's body once: cost(L) = a L + b, so the true count is a L + b L / C."""
        lo, hi = 4 * C, 8 * C
        args_ = lambda L: [jnp.zeros((B, H, L, D))] * 3 + [jnp.zeros((B, H, L))]
        f = ours(C, grad)
        c1, c2 = (common.xla_cost(f, *args_(L))["flops"] for L in (lo, hi))
        a = (c2 - c1) / (hi - lo)
        b = c1 - a * lo
        return (a + b / C) / (B * H)

    # a plain matmul on each side, for the rates
    m = np.random.default_rng(1).normal(size=(1024, 1024)).astype(np.float32)
    jm, tm = jnp.asarray(m), torch.tensor(m)
    mm = jax.jit(lambda a: a @ a)
    t = common.time_alternating({"jax": lambda: mm(jm), "torch": lambda: tm @ tm}, repeats=max(args.repeats, 7))
    rate = {k: 2 * 1024 ** 3 / v / 1e9 for k, v in t.items()}
    print("matmul GFLOP/s", rate, flush=True)

    # agreement, once
    q, k, v, beta = inputs(1024, seed=3)
    want = naive.delta_rule_chunkwise(*map(torch.tensor, (q, k, v, beta)), 64)[0].numpy()
    got = np.asarray(ours(16, False)(jnp.asarray(q * D ** -0.5), *map(jnp.asarray, (k, v, beta))))
    agree = float(np.max(np.abs(got - want)))

    fpt = {(C, g): flops_per_token(C, g) for C in args.chunks for g in (False, True)}
    rows, best_rows, single = [], [], []
    for L in args.lengths:
        q, k, v, beta = inputs(L)
        jargs = (jnp.asarray(q * D ** -0.5), jnp.asarray(k), jnp.asarray(v), jnp.asarray(beta))
        targs = tuple(map(torch.tensor, (q, k, v, beta)))
        for grad in (False, True):
            mode = "fwd+bwd" if grad else "fwd"
            fns = {}
            for C in args.chunks:
                f = ours(C, grad)
                fns[("ours", C)] = lambda f=f: f(*jargs)
                if not grad or L <= args.ref_bwd_max_len:
                    fns[("fla", C)] = theirs(C, grad, targs)
            t = common.time_alternating(fns, repeats=args.repeats)
            if grad and L > args.ref_bwd_max_len:  # one call of the reference, at its best forward chunk
                Cb = min((c for c in args.chunks), key=lambda c: fwd_times[("fla", c)])
                run = theirs(Cb, True, targs)
                t0 = time.perf_counter()
                run()
                single.append((L, Cb, time.perf_counter() - t0))
            else:
                fwd_times = t
            for C in args.chunks:
                ours_t, ref_t = t[("ours", C)], t.get(("fla", C), float("nan"))
                gf = fpt[(C, grad)] * B * H * L / ours_t / 1e9
                rows.append([L, mode, C, ours_t * 1e3, ref_t * 1e3, ref_t / ours_t, fpt[(C, grad)] / 1e3, gf])
                print(rows[-1], flush=True)
            co = min(args.chunks, key=lambda c: t[("ours", c)])
            ref_chunks = [c for c in args.chunks if ("fla", c) in t]
            if ref_chunks:
                cr = min(ref_chunks, key=lambda c: t[("fla", c)])
                best_rows.append([L, mode, co, t[("ours", co)] * 1e3, cr, t[("fla", cr)] * 1e3,
                                  t[("fla", cr)] / t[("ours", co)]])
            else:
                best_rows.append([L, mode, co, t[("ours", co)] * 1e3, "-", float("nan"), float("nan")])

    # the whole bidirectional layer, forward + backward: kernel vs the rest
    def layer_fns(module_cls, kernel_fn, L):
        mod = module_cls(d_model=H * D, num_heads=H)
        x = jax.random.normal(jax.random.key(0), (B, L, H * D))
        params = jax.jit(mod.init)(jax.random.key(1), x)
        layer = jax.jit(jax.grad(lambda p, x: jnp.sum(mod.apply(p, x) ** 2), argnums=(0, 1)))
        kq = jnp.zeros((2 * B, H, L, D)) + 0.1  # both directions, as the layer's kernel work
        kb = jnp.full((2 * B, H, L), 0.5)
        kern = jax.jit(jax.grad(lambda q, k, v, b: jnp.sum(kernel_fn(q, k, v, b, mod.chunk_size)[0] ** 2),
                                argnums=(0, 1, 2, 3)))
        # XLA counts each while-loop body once in both, so the difference is the rest's flops exactly
        rest_flops = (common.xla_cost(layer, params, x)["flops"] - common.xla_cost(kern, kq, kq, kq, kb)["flops"])
        return (lambda: layer(params, x)), (lambda: kern(kq, kq, kq, kb)), rest_flops

    impls = {"now": (DeltaNet, delta_rule_chunked)}
    if args.before:
        before = common.load_revision("models/deltanet.py", args.before, "deltanet_before")
        impls[f"before ({args.before})"] = (before.DeltaNet, before.delta_rule_chunked)
    layer_rows = []
    for L in args.layer_lengths:
        fns, rest_flops = {}, {}
        for name, (cls, kfn) in impls.items():
            fns[(name, "layer")], fns[(name, "kernel")], rest_flops[name] = layer_fns(cls, kfn, L)
        t = common.time_alternating(fns, repeats=args.repeats)
        for name in impls:
            lt, kt = t[(name, "layer")], t[(name, "kernel")]
            layer_rows.append([L, name, lt * 1e3, kt * 1e3, (lt - kt) * 1e3, (lt - kt) / lt,
                               rest_flops[name] / (B * L) / 1e3, rest_flops[name] / max(lt - kt, 1e-9) / 1e9])
            print(layer_rows[-1], flush=True)

    cmd = "python -m benchmarks.vs_fla_deltanet " + " ".join(sys.argv[1:])
    text = [
        f"## DeltaNet chunked kernel vs fla's `delta_rule_chunkwise` (B={B}, H={H}, d_k=d_v={D}, float32)", "",
        references.header("fla", args.threads), "", f"Command: `{cmd}` (with /tmp/refvenv/bin/python). Medians of "
        f"{args.repeats} alternating runs. Ratio = reference time / ours. Forward: the reference under "
        "`torch.no_grad`; forward + backward: loss = sum of squared outputs, gradients of q, k, v, beta on both "
        f"sides. Outputs agree to {agree:.2g} (max abs, L=1024, ours C=16 vs reference C=64). Load average "
        f"(1, 5, 15 min) at the start {load_start[0]:.1f}, {load_start[1]:.1f}, {load_start[2]:.1f}; at the end "
        f"{os.getloadavg()[0]:.1f}, {os.getloadavg()[1]:.1f}, {os.getloadavg()[2]:.1f} (the machine is shared).", "",
        f"Plain 1024^3 float32 matmul in the same run: XLA {rate['jax']:.0f} GFLOP/s, torch {rate['torch']:.0f} "
        "GFLOP/s. `flops/token` = XLA's count for ours per token and head (its cost analysis counts a while loop's "
        "body once; the loop's share is scaled up by the number of chunks), `GFLOP/s` = what ours reaches.", "",
        common.markdown_table(["L", "pass", "chunk", "ours ms", "fla ms", "ratio", "ours kFLOP/token", "ours GFLOP/s"],
                              rows), "",
        "### Each side at its best chunk", "",
        common.markdown_table(["L", "pass", "ours chunk", "ours ms", "fla chunk", "fla ms", "ratio"], best_rows), "",
    ]
    if single:
        text += ["Reference forward + backward above " + str(args.ref_bwd_max_len) + " tokens: one call each "
                 "(not a median; five alternating runs would take minutes): " + "; ".join(
                     f"L={L}, C={C}: {s * 1e3:.0f} ms" for L, C, s in single) + ".", ""]
    text += [f"### Our bidirectional layer (d_model {H * D}, {H} heads, B={B}), forward + backward", "",
             "`kernel` = the chunked kernel alone, forward + backward, on the layer's kernel shapes (both "
             f"directions: batch {2 * B}); `rest` = layer - kernel (projections, short convolutions, norms, "
             "reversal, output projection); `rest kFLOP/token` = XLA's flops of the layer minus the kernel's, per "
             "token (the projections alone are 2 x 2 x 256 x (3 x 256 + 4) + 2 x 256^2 flops per token forward).",
             "", common.markdown_table(["L", "code", "layer ms", "kernel ms", "rest ms", "rest share",
                                        "rest kFLOP/token", "rest GFLOP/s"], layer_rows), ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
