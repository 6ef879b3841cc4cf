"""What the published LRA runs would cost on an accelerator, from XLA's exact cost analysis of each full-size train
step (nothing is run; the steps are only compiled here).

    python -m benchmarks.accelerator_plan [--mixers transformer s4] [--util 0.3] [--bw_util 0.5]

For each task's full-size config (``configs/lra_<task>.py:<mixer>``, the published settings or the budget rule) the
train step is compiled with activations in bfloat16 (``model.dtype``) for a batch of 1 and of 2 examples; the
difference is the cost per example (flops and bytes accessed), the rest is the per-step fixed cost (optimizer
update). The time per step on an H100 SXM (989 TFLOP/s dense bfloat16, 3.35 TB/s HBM) is the compute time at
``--util`` of peak (the bytes-bound time at ``--bw_util`` of the bandwidth is shown beside it); an epoch and the whole published
run follow from the task's training-set size, the batch and the number of steps. XLA's CPU cost model counts the
algebra of the program, not a GPU's kernels (FFTs and gathers are under-counted as flops and show up as bytes):
this is a plan to be checked against a measured run, which ``run`` on the device tool can do when one is lent.
Writes ``benchmarks/results/accelerator_plan.md``.
"""
from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import models
from benchmarks import common
from configs import published
from lra import objectives, sharding, tasks
from lra.optim import make_optimizer
from lra.steps import Steps

TRAIN_EXAMPLES = {"listops": 96_000, "text": 22_500, "retrieval": 147_086, "image": 45_000, "pathfinder": 160_000,
                  "pathx": 160_000}
H100 = {"flops": 989e12, "bandwidth": 3.35e12, "name": "H100 SXM (989 TFLOP/s bf16 dense, 3.35 TB/s)"}


def step_cost(config, batch: int) -> dict[str, float]:
    task = tasks.get_task(config)
    objective = objectives.get(config, task)
    model = models.build(config.model, objective.model_task, head=objective.head, num_outputs=objective.num_outputs)
    steps = Steps(model, objective, make_optimizer(config.optimizer, config.num_train_steps),
                  sharding.make_mesh({"data": 1, "model": 1}))
    state = jax.eval_shape(steps._init_state, jax.random.key(0))
    L = task.seq_len
    x = (jax.ShapeDtypeStruct((batch, L), jnp.int32) if task.vocab_size is not None
         else jax.ShapeDtypeStruct((batch, L, task.input_channels), jnp.float32))
    lengths = jax.ShapeDtypeStruct((batch,), jnp.int32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    b = ({"inputs1": x, "lengths1": lengths, "inputs2": x, "lengths2": lengths, "labels": labels} if task.paired
         else {"inputs": x, "lengths": lengths, "labels": labels})
    compiled = jax.jit(steps._train_step).lower(state, b, jax.random.key(1)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixers", nargs="+", default=["transformer", "s4"])
    ap.add_argument("--tasks", nargs="+", default=list(published.TASKS))
    ap.add_argument("--util", type=float, default=0.3, help="fraction of peak flops reached")
    ap.add_argument("--bw_util", type=float, default=0.5, help="fraction of peak memory bandwidth reached")
    ap.add_argument("--out", default="benchmarks/results/accelerator_plan.md")
    args = ap.parse_args()

    rows, totals = [], {}
    for mixer in args.mixers:
        for task in args.tasks:
            t0 = time.perf_counter()
            config = importlib.import_module(f"configs.lra_{task}").get_config(mixer)
            config.unlock()
            config.model.dtype = "bfloat16"
            c1, c2 = step_cost(config, 1), step_cost(config, 2)
            per_ex = {k: c2[k] - c1[k] for k in c1}
            fixed = {k: c1[k] - per_ex[k] for k in c1}
            B = config.batch_size
            step_flops, step_bytes = fixed["flops"] + B * per_ex["flops"], fixed["bytes"] + B * per_ex["bytes"]
            step_s = step_flops / (H100["flops"] * args.util)
            bytes_s = step_bytes / (H100["bandwidth"] * args.bw_util)
            epoch_h = step_s * TRAIN_EXAMPLES[task] / B / 3600
            run_h = step_s * config.num_train_steps / 3600
            run_bytes_h = bytes_s * config.num_train_steps / 3600
            lo, hi = totals.get(mixer, (0.0, 0.0))
            totals[mixer] = (lo + run_h, hi + run_bytes_h)
            rows.append([mixer, task, config.settings_rule, tasks.get_task(config).seq_len, B, config.num_train_steps, f"{per_ex['flops'] / 1e9:.2f}",
                         f"{per_ex['bytes'] / 1e6:.1f}", f"{step_s * 1e3:.1f}", f"{bytes_s * 1e3:.1f}", f"{epoch_h:.3f}",
                         f"{run_h:.2f}", f"{run_bytes_h:.1f}"])
            print(rows[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    header = ["model", "task", "settings", "length", "batch", "steps", "GFLOP / example", "MB accessed / example",
              "ms / step", "ms / step if bytes-bound", "h / epoch", "GPU-h, whole run", "GPU-h if bytes-bound"]
    text = ["# Accelerator plan: the published LRA runs on one H100, from XLA's cost analysis", "",
            f"Command: `python -m benchmarks.accelerator_plan`; compiled (not run) on {common.machine()}. Activations "
            f"in bfloat16. Time per step = flops / ({args.util:.0%} of {H100['flops'] / 1e12:.0f} TFLOP/s) on an "
            f"{H100['name']}; beside it the time if the step were bound by XLA's bytes accessed at {args.bw_util:.0%} "
            "of the bandwidth (an upper bound: the CPU compiler fuses less than a GPU's, so it counts more traffic). "
            "Hours per epoch and per run use the flops time. Per-example "
            "figures are the slope between batches of 1 and 2; the per-step optimizer cost is included in ms/step. "
            "XLA's CPU cost model under-counts FFTs and gathers as flops (they appear as bytes): a plan, to be "
            "checked against measured steps/s when a GPU is lent.", "",
            common.markdown_table(header, rows), "",
            "Whole LRA table per model (sum over the tasks above): " +
            "; ".join(f"{m}: {lo:.1f} GPU-hours at the flops rate, {hi:.0f} if bound by XLA's bytes" for m, (lo, hi)
                      in totals.items()) + ".", ""]
    Path(args.out).write_text("\n".join(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
