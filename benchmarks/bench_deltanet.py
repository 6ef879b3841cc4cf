"""DeltaNet: the chunked WY form against the token-by-token recurrence and dense softmax attention.

    python -m benchmarks.bench_deltanet [--lengths 512 1024 4096 16384] [--chunks 16 32 64 128]

Forward + backward of the kernels in ``models/deltanet.py`` (B=1, H=4, d_k=d_v=32): wall time as medians of
alternating runs where XLA's temporary memory is under 2 GiB, XLA's exact flops and temporary bytes at every length
(compiled, not run), fitted growth exponents, and the chunk-size sweep at the largest length that runs.
Writes ``benchmarks/results/deltanet.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks import common
from models.attention import attention_dense
from models.deltanet import delta_rule_chunked, delta_rule_recurrent, l2_normalize

B, H, D = 1, 4, 32
RUN_LIMIT = 2 * 2**30


def grad_of(f):
    return jax.grad(lambda q, k, v, b: jnp.sum(f(q, k, v, b) ** 2), argnums=(0, 1, 2, 3))


def forms(chunk):
    return {
        "chunked": lambda q, k, v, b: delta_rule_chunked(q, k, v, b, chunk)[0],
        "recurrent": lambda q, k, v, b: delta_rule_recurrent(q, k, v, b)[0],
        "attention": lambda q, k, v, b: attention_dense(q, k, v, causal=True),
    }


def data(L):
    ks = jax.random.split(jax.random.key(L), 4)
    q, k, v = (jax.random.normal(kk, (B, H, L, D)) for kk in ks[:3])
    return l2_normalize(q), l2_normalize(k), v, jax.nn.sigmoid(jax.random.normal(ks[3], (B, H, L)))


def measure(fns: dict, args, repeats):
    return common.measure({name: grad_of(f) for name, f in fns.items()}, args, repeats, RUN_LIMIT)


def chunked_flops(chunk, L):
    """XLA counts a while loop's body once: its count is ``a L + b`` (b: the loop bodies), the work ``a L + b L / C``.
    a and b from the counts at L / 2 and L (compiled, not run)."""
    f = grad_of(lambda q, k, v, b: delta_rule_chunked(q, k, v, b, chunk)[0])
    c1, c2 = (common.xla_cost(f, *data(n))["flops"] for n in (L // 2, L))
    a = (c2 - c1) / (L - L // 2)
    return a * L + (c1 - a * (L // 2)) * L / chunk


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 4096, 16384])
    ap.add_argument("--chunks", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/deltanet.md")
    args = ap.parse_args()

    names = list(forms(args.chunk))
    rows, all_costs = [], {n: [] for n in names}
    for L in args.lengths:
        costs, t = measure(forms(args.chunk), data(L), args.repeats)
        row = [L]
        for n in names:
            all_costs[n].append(costs[n])
            row += [t.get(n, float("nan")) * 1e3, costs[n]["flops"] / 1e6, costs[n]["temp_bytes"] / 2**20]
        row += [chunked_flops(args.chunk, L) / 1e6, t["recurrent"] / t["chunked"],
                t.get("attention", float("nan")) / t["chunked"]]
        rows.append(row)
        print(row, flush=True)
    header = ["L"] + [f"{n} {u}" for n in names for u in ("ms", "MFLOP", "temp MiB")] + [
        "chunked MFLOP (loop counted per chunk)", "recurrent/chunked", "attention/chunked"]
    exps = {n: (common.growth_exponent(args.lengths, [c["flops"] for c in all_costs[n]]),
                common.growth_exponent(args.lengths, [c["temp_bytes"] for c in all_costs[n]])) for n in names}

    L = args.lengths[-1]
    sweep_fns = {f"C={c}": (lambda c: lambda q, k, v, b: delta_rule_chunked(q, k, v, b, c)[0])(c)
                 for c in args.chunks}
    sweep_costs, sweep_t = measure(sweep_fns, data(L), args.repeats)
    sweep = [[name, sweep_t.get(name, float("nan")) * 1e3, sweep_costs[name]["flops"] / 1e6,
              chunked_flops(c, L) / 1e6, sweep_costs[name]["temp_bytes"] / 2**20]
             for c, name in zip(args.chunks, sweep_fns)]

    text = [f"## DeltaNet kernels, forward + backward (B={B}, H={H}, d_k=d_v={D}, chunk {args.chunk})", "",
            f"Machine: {common.machine()}. Medians of {args.repeats} alternating runs; 'nan' ms = not run (XLA "
            f"temporary memory over {RUN_LIMIT // 2**30} GiB).", "", common.markdown_table(header, rows), "",
            "XLA counts a while-loop body once, so the `recurrent` flops leave out the per-token work (compare "
            "its time) and the `chunked` MFLOP column leaves out all but one chunk's loop work; `chunked MFLOP (loop "
            "counted per chunk)` scales the loop's share up by the number of chunks (from XLA's counts at L / 2 and "
            "L). Command: `python -m benchmarks.bench_deltanet " + " ".join(sys.argv[1:]) + "`.", "",
            "Fitted growth exponents in L (flops, temp bytes): " + "; ".join(
                f"{n} {e[0]:.2f}, {e[1]:.2f}" for n, e in exps.items()) + ".", "",
            f"### Chunk size at L = {L}", "",
            common.markdown_table(["chunk", "ms", "MFLOP (XLA)", "MFLOP (loop per chunk)", "temp MiB"], sweep), ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
