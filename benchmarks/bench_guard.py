"""What the non-finite guard costs: train-step time with and without it, measured in one run.

    NPROC=1 python -m benchmarks.bench_guard          # ListOps small-preset shapes, Transformer and S4

Two levels, each timed round-robin (with, without, with, ...) and reported as medians:
- **step**: ``Steps(guard=True)`` (finiteness check + keep-or-apply select inside the compiled step) against
  ``Steps(guard=False)``, blocks of ``--block`` steps, nothing read back;
- **loop**: the guarded step as the training loop drives it, reading the pending finiteness flags back every
  ``max_nonfinite_steps`` (default 10) steps, against the unguarded step with nothing read back.
XLA's exact flops and temporary bytes of both compiled steps are reported too. Writes
``benchmarks/results/nonfinite_guard.md``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax
import numpy as np

import models
from benchmarks import common
from benchmarks.train_throughput import batch  # random ListOps-shaped batches
from configs import lra_listops
from lra import objectives, sharding, tasks
from lra.data import listops
from lra.optim import make_optimizer
from lra.steps import Steps


def make(mixer: str, guard: bool):
    config = lra_listops.get_config(f"{mixer},small")
    task = tasks.TaskSpec("listops", config.data.seq_len, 10, listops.VOCAB_SIZE, load=None)
    mesh = sharding.make_mesh(config.mesh)
    steps = Steps(models.build(config.model, task), objectives.Objective("classify", task),
                  make_optimizer(config.optimizer, config.num_train_steps), mesh, guard=guard)
    return steps, task, config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixers", nargs="+", default=["transformer", "s4"])
    ap.add_argument("--block", type=int, default=20, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--check_every", type=int, default=10, help="loop level: read the flags every this many steps")
    ap.add_argument("--out", default="benchmarks/results/nonfinite_guard.md")
    args = ap.parse_args()

    rows = []
    for mixer in args.mixers:
        built = {g: make(mixer, g) for g in (True, False)}
        steps_on, task, config = built[True]
        steps_off = built[False][0]
        b = sharding.shard_batch(batch(task, config.batch_size, np.random.default_rng(0)), steps_on.mesh)
        rng = jax.random.key(1)
        holder = {g: built[g][0].init(jax.random.key(0)) for g in (True, False)}

        def run_block(guard: bool, read_flags: bool):
            steps = steps_on if guard else steps_off
            state, pending = holder[guard], []
            for i in range(args.block):
                state, sums = steps.train_step(state, b, rng)
                if read_flags:
                    pending.append(sums["nonfinite"])
                    if len(pending) >= args.check_every:
                        jax.device_get(pending)
                        pending.clear()
            holder[guard] = state
            return state.step

        step_t = common.time_alternating({"with guard": lambda: run_block(True, False),
                                          "without": lambda: run_block(False, False)}, repeats=args.repeats)
        loop_t = common.time_alternating({"with guard": lambda: run_block(True, True),
                                          "without": lambda: run_block(False, False)}, repeats=args.repeats)
        cost = {g: common.xla_cost(lambda s, bb, r, st=st: st._train_step(s, bb, r), holder[g], b, rng)
                for g, st in ((True, steps_on), (False, steps_off))}
        n_params = sum(x.size for x in jax.tree_util.tree_leaves(holder[True].params))
        for level, t in (("step", step_t), ("loop", loop_t)):
            on, off = t["with guard"] / args.block * 1e3, t["without"] / args.block * 1e3
            rows.append([mixer, f"{n_params:,}", level, f"{on:.2f}", f"{off:.2f}", f"{on / off:.3f}",
                         f"{cost[True]['flops'] / cost[False]['flops']:.4f}",
                         f"{cost[True]['temp_bytes'] / max(cost[False]['temp_bytes'], 1):.4f}"])
        print(rows[-2], rows[-1], flush=True)

    text = [
        "# Cost of the non-finite guard",
        "",
        f"Machine: {common.machine()}. Command: `NPROC=1 python -m benchmarks.bench_guard`. ListOps small-preset "
        f"model and batch (length 128, batch 32); medians of {args.repeats} alternating blocks of {args.block} "
        f"steps. `step`: compiled step with vs without the guard; `loop`: the guarded step with its flags read back "
        f"every {args.check_every} steps (as the training loop does at most) vs the unguarded step. Flops and "
        f"temporary bytes are XLA's exact figures for the two compiled steps.",
        "",
        common.markdown_table(["mixer", "params", "level", "ms/step with guard", "ms/step without", "time ratio",
                               "flops ratio", "temp bytes ratio"], rows),
        "",
    ]
    Path(args.out).write_text("\n".join(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
