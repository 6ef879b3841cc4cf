"""Where a train step's time goes, per mixer, on the Pathfinder (L = 1,024) and Path-X (L = 16,384) configs.

    python -m benchmarks.step_profile --data_dir=/tmp/lra_profile_data             # small presets, measured
    python -m benchmarks.step_profile --full --tasks pathfinder                     # full size, XLA cost analysis

**Small presets (measured).** For each mixer, the task's ``small`` preset trains a few real steps on the generated
data (the batches come from the training pipeline, ``TrainIterator`` then ``shard_batch``, as in ``train.py``). The
steps are traced with ``jax.profiler``: on CPU the trace holds one event per executed XLA thunk, named by its HLO
instruction; each instruction is mapped to the source through the compiled module's ``op_name`` metadata (the Flax
module path, ``jvp(...)`` for the forward, ``transpose(jvp(...))`` for the backward) and its exclusive time is
summed into: **mixer kernel** (inside ``mixer/``, not in a projection), **projections** (the mixer's Dense layers:
``query``/``key``/``value``/``out``, ``in_proj``/``out_proj``, ``*_proj``, Hydra's ``fc_D``), **norms**, **MLP**
(the channel MLP), **embedding + head**, **optimizer** (everything outside the differentiated loss: the optax
update, gradient norm, clipping and the non-finite guard), **other** (residual adds, dropout, pooling, the loss).
The shares are of the summed op time of the traced steps; the wall-clock per step is the median of separate
untraced steps. **Host input** is the median time to make one batch from the real pipeline and place it
(``next(TrainIterator)`` + ``shard_batch``, blocked until on the device).

**Full size (XLA cost analysis, nothing run unless small).** The published / budget configs are compiled (not run)
at their own batch size B and the flops split by compiling parts of the step: the whole train step (T), the loss
gradient alone (G, so optimizer = T - G: the optax update, gradient norm, clipping, guard), and the same model with
every mixer replaced by the identity (I, so mixer = G - I). Inside the mixer, projections are the exact matmul flops
of its Dense kernels (6 x tokens x kernel size: forward, and the two backward matmuls) and the mixer kernel is the
rest; the channel MLP likewise, and norms + embedding + head + residual + loss = I - MLP. XLA's CPU cost model
counts FFTs and gathers poorly as flops (S4's convolution, routing's gathers), so those shares are lower bounds;
bytes accessed (XLA's count, an upper bound on a GPU's traffic) are given for the mixer / the rest / the optimizer. A
step at batch 1 is timed only where XLA's flops say it takes well under 30 s here (and its temporary memory is under
3 GB).

Writes ``benchmarks/results/step_profile.md`` (and ``.json`` with the figures, read by
``benchmarks.pipeline_throughput``).
"""
from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import re
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import models
from benchmarks import common
from lra import objectives, sharding, tasks
from lra.data import pipeline
from lra.optim import make_optimizer
from lra.steps import Steps

MIXERS = ("s4", "hydra", "aaren", "routing", "combiner", "deltanet", "transformer")
CATEGORIES = ("mixer kernel", "projections", "norms", "MLP", "embedding + head", "optimizer", "other")
# a Dense layer of a mixer, by its Flax module name
PROJECTION = re.compile(r"^(query|key|value|out|in_proj|out_proj|fc_D|[a-z]_proj)$")
NORM = re.compile(r"^(norm\d+|final_norm)$")
RESULTS = Path("benchmarks/results")


# ------------------------------------------------------------------------------------------------------ building

def get_config(task: str, mixer: str, small: bool, data_dir: str | None = None):
    config = importlib.import_module(f"configs.lra_{task}").get_config(f"{mixer},small" if small else mixer)
    config.unlock()
    if data_dir:
        config.data.data_dir = data_dir
        config.data.workers = 1
    return config


def make_steps(config, model_config=None):
    task = tasks.get_task(config)
    objective = objectives.get(config, task)
    model = models.build(model_config or config.model, objective.model_task, head=objective.head,
                         num_outputs=objective.num_outputs)
    steps = Steps(model, objective, make_optimizer(config.optimizer, config.num_train_steps),
                  sharding.make_mesh({"data": 1, "model": 1}))
    return steps, task


def random_batch(task, batch_size: int, rng) -> dict[str, np.ndarray]:
    if task.vocab_size is not None:
        x = rng.integers(1, task.vocab_size, size=(batch_size, task.seq_len)).astype(np.int32)
    else:
        x = rng.random((batch_size, task.seq_len, task.input_channels)).astype(np.float32)
    return {"inputs": x, "lengths": np.full(batch_size, task.seq_len, np.int32),
            "labels": rng.integers(0, task.num_classes, size=batch_size).astype(np.int32)}


# ------------------------------------------------------------------------------------------ HLO op -> category

def category(op_name: str) -> str:
    """The category of one HLO instruction from its ``op_name`` metadata (see the module docstring)."""
    if not op_name or not op_name.startswith("jit("):
        return "other"  # no source (copies, parameters)
    if "jvp(" not in op_name:
        return "optimizer"  # outside the differentiated loss: optax update, gradient norm, clipping, guard
    segs = op_name.split("/")
    if "mixer" in segs:
        inner = segs[segs.index("mixer") + 1:-1]  # module path below the mixer; the last segment is the primitive
        return "projections" if any(PROJECTION.match(s) for s in inner) else "mixer kernel"
    if any(NORM.match(s) for s in segs):
        return "norms"
    if "mlp" in segs:
        return "MLP"
    if "embedding" in segs or "head" in segs:
        return "embedding + head"
    return "other"


def hlo_categories(hlo_text: str) -> tuple[str, dict[str, str]]:
    """The module's name and {instruction name: category} from the compiled module's text; an instruction without
    metadata (a fusion whose root has none) takes the most common category of the computation it calls."""
    module = re.search(r"^HloModule (\S+?),", hlo_text, re.M).group(1)
    op_names, calls, comp_ops, comp = {}, {}, defaultdict(list), None
    for line in hlo_text.splitlines():
        m = re.match(r"^(?:ENTRY )?%?(\S+) .*\{$", line)
        if m and not line.startswith(" "):
            comp = m.group(1)
            continue
        m = re.match(r"^\s+(?:ROOT )?%?([^\s=]+) = ", line)
        if not m:
            continue
        name = m.group(1)
        md = re.search(r'op_name="([^"]*)"', line)
        op_names[name] = md.group(1) if md else ""
        if md and comp is not None:
            comp_ops[comp].append(category(md.group(1)))
        c = re.search(r"calls=%?([\w.\-]+)", line)
        if c:
            calls[name] = c.group(1)
    out = {}
    for name, op in op_names.items():
        if op:
            out[name] = category(op)
        elif calls.get(name) in comp_ops and comp_ops[calls[name]]:
            found = comp_ops[calls[name]]
            out[name] = max(set(found), key=found.count)
        else:
            out[name] = "other"
    return module, out


def trace_op_times(trace_dir: str, module: str) -> dict[str, float]:
    """{HLO instruction: summed exclusive seconds} of ``module``'s thunks in a jax.profiler trace (an event's
    children on the same thread, e.g. a while loop's body, are subtracted from it)."""
    from jax.profiler import ProfileData

    files = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    totals: dict[str, float] = defaultdict(float)
    for f in files:
        data = ProfileData.from_file(f)
        for plane in data.planes:
            for line in plane.lines:
                evs = []
                for e in line.events:
                    stats = dict(e.stats)
                    if stats.get("hlo_module") == module and "hlo_op" in stats:
                        evs.append((e.start_ns, e.duration_ns, stats["hlo_op"]))
                evs.sort(key=lambda t: (t[0], -t[1]))
                excl = [d for _, d, _ in evs]
                stack: list[int] = []
                for i, (s, d, _) in enumerate(evs):
                    while stack and s >= evs[stack[-1]][0] + evs[stack[-1]][1]:
                        stack.pop()
                    if stack:
                        excl[stack[-1]] -= d
                    stack.append(i)
                for (_, _, op), x in zip(evs, excl):
                    totals[op] += x * 1e-9
    return totals


# ------------------------------------------------------------------------------------------------ small presets

def profile_small(task_name: str, mixer: str, data_dir: str, n_trace: int, n_time: int) -> dict[str, Any]:
    config = get_config(task_name, mixer, small=True, data_dir=data_dir)
    steps, task = make_steps(config)
    train = task.load("train")
    it = pipeline.TrainIterator(train, config.batch_size, seed=0)
    mesh = steps.mesh

    def next_batch():
        return common.block(sharding.shard_batch(next(it), mesh))

    input_s = []
    for _ in range(max(n_time, 10)):
        t0 = time.perf_counter()
        next_batch()
        input_s.append(time.perf_counter() - t0)
    batches = [next_batch() for _ in range(n_trace + n_time + 1)]
    state = steps.init(jax.random.key(0))
    rng = jax.random.key(1)
    compiled = steps.train_step.lower(state, batches[0], rng).compile()
    module, cats = hlo_categories(compiled.as_text())
    state, _ = common.block(steps.train_step(state, batches[0], rng))  # warm-up
    step_s = []
    for b in batches[1:1 + n_time]:
        t0 = time.perf_counter()
        state, _ = common.block(steps.train_step(state, b, rng))
        step_s.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for b in batches[1 + n_time:]:
            state, _ = common.block(steps.train_step(state, b, rng))
        jax.profiler.stop_trace()
        ops = trace_op_times(d, module)
    by_cat = {c: 0.0 for c in CATEGORIES}
    for op, sec in ops.items():
        by_cat[cats.get(op, "other")] += sec / n_trace
    return {"task": task_name, "mixer": mixer, "batch": config.batch_size, "seq_len": task.seq_len,
            "d_model": config.model.d_model, "layers": config.model.num_layers,
            "step_ms": statistics.median(step_s) * 1e3, "op_ms": sum(by_cat.values()) * 1e3,
            "input_ms": statistics.median(input_s) * 1e3, "by_cat_ms": {k: v * 1e3 for k, v in by_cat.items()},
            "unmapped_ops": sum(1 for op in ops if op not in cats)}


# ---------------------------------------------------------------------------------------------------- full size

class IdentityMixer(nn.Module):
    """Stands in for a mixer: the encoder without it, to cost the rest of the model."""
    d_model: int
    causal: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None, deterministic=True):
        return x


def _abstract_batch(task, batch: int):
    x = (jax.ShapeDtypeStruct((batch, task.seq_len), jnp.int32) if task.vocab_size is not None
         else jax.ShapeDtypeStruct((batch, task.seq_len, task.input_channels), jnp.float32))
    n = jax.ShapeDtypeStruct((batch,), jnp.int32)
    return {"inputs": x, "lengths": n, "labels": n}


def _grad_fn(steps):
    def grads(params, model_state, batch, rng):
        model_batch, targets, weights = steps.objective.prepare(batch, rng)

        def loss_fn(p):
            out, new_state, aux = steps._apply(p, model_state, model_batch, train=True, rng=rng)
            _, sums = steps.objective.loss(out, targets, weights)
            return sums["loss"] + aux, new_state
        return jax.grad(loss_fn, has_aux=True)(params)
    return grads


def _cost(compiled) -> dict[str, float]:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0)),
            "temp_bytes": float(compiled.memory_analysis().temp_size_in_bytes)}


def _matmul_params(params, pattern: str) -> int:
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        p = sharding.path_str(path)
        if re.search(pattern, p):
            total += int(np.prod(leaf.shape))
    return total


def time_batch1(steps, task, state) -> dict[str, float]:
    """One real train step at batch 1, median of 3 (after a warm-up), if its temporary memory is under 3 GB."""
    key = jax.random.key(0)
    t_compiled = jax.jit(steps._train_step).lower(state, _abstract_batch(task, 1), key).compile()
    out = {"batch1_temp_bytes": _cost(t_compiled)["temp_bytes"]}
    if out["batch1_temp_bytes"] < 3e9:
        real_state = steps.init(key)
        b = sharding.shard_batch(random_batch(task, 1, np.random.default_rng(0)), steps.mesh)
        common.block(t_compiled(real_state, b, key))
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            common.block(t_compiled(real_state, b, key))
            times.append(time.perf_counter() - t0)
        out["batch1_step_s"] = statistics.median(times)
    return out


def cost_full(task_name: str, mixer: str, time_limit_flops: float) -> dict[str, Any]:
    config = get_config(task_name, mixer, small=False)
    steps, task = make_steps(config)
    key = jax.random.key(0)
    state = jax.eval_shape(steps._init_state, key)
    B = config.batch_size
    bB = _abstract_batch(task, B)
    T = _cost(jax.jit(steps._train_step).lower(state, bB, key).compile())
    G = _cost(jax.jit(_grad_fn(steps)).lower(state.params, state.model_state, bB, key).compile())
    ident = config.model.copy_and_resolve_references()
    ident.mixer, ident.mixer_kwargs = "_identity", {}
    models.MIXERS["_identity"] = IdentityMixer
    try:
        steps_i, _ = make_steps(config, ident)
        state_i = jax.eval_shape(steps_i._init_state, key)
        I_ = _cost(jax.jit(_grad_fn(steps_i)).lower(state_i.params, state_i.model_state, bB, key).compile())
    finally:
        models.MIXERS.pop("_identity", None)
    tokens = B * task.seq_len
    proj = 6 * tokens * _matmul_params(
        state.params, r"mixer/(.*/)?(query|key|value|out|in_proj|out_proj|fc_D|[a-z]_proj)/kernel$")
    mlp = 6 * tokens * _matmul_params(state.params, r"mlp/fc\d/kernel$")
    parts = {"mixer kernel": G["flops"] - I_["flops"] - proj, "projections": proj, "MLP": mlp,
             "norms, embedding, head, residual, loss": I_["flops"] - mlp, "optimizer": T["flops"] - G["flops"]}
    out = {"task": task_name, "mixer": mixer, "batch": B, "seq_len": task.seq_len,
           "d_model": config.model.d_model, "layers": config.model.num_layers, "settings": config.settings_rule,
           "params": int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(state.params))),
           "T": T, "G": G, "I": I_, "flops": parts,
           "mixer_bytes": G["bytes"] - I_["bytes"], "rest_bytes": I_["bytes"],
           "optimizer_bytes": T["bytes"] - G["bytes"]}
    if T["flops"] / B < time_limit_flops:  # about B times fewer flops at batch 1
        out.update(time_batch1(steps, task, state))
    return out


# ------------------------------------------------------------------------------------------------------- report

def small_table(rows) -> str:
    header = ["task", "mixer", "L", "B", "ms / step (wall)", "op ms / step (trace)", *[f"{c} %" for c in CATEGORIES],
              "host input ms / batch", "input / (input + step) %", "largest part"]
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["task"], r["mixer"], *["-"] * (len(header) - 3), f"not run: {r['error']}"])
            continue
        tot = max(r["op_ms"], 1e-9)
        out.append([r["task"], r["mixer"], r["seq_len"], r["batch"], f"{r['step_ms']:.1f}", f"{r['op_ms']:.1f}",
                    *[f"{100 * r['by_cat_ms'][c] / tot:.1f}" for c in CATEGORIES], f"{r['input_ms']:.2f}",
                    f"{100 * r['input_ms'] / (r['input_ms'] + r['step_ms']):.1f}",
                    max(CATEGORIES, key=lambda c: r["by_cat_ms"][c])])
    return common.markdown_table(header, out)


FULL_PARTS = ("mixer kernel", "projections", "MLP", "norms, embedding, head, residual, loss", "optimizer")


def full_table(rows) -> str:
    header = ["task", "mixer", "settings", "L", "B", "layers x width", "params", "GFLOP / step",
              *[f"{c} %" for c in FULL_PARTS], "mixer GB / step", "rest GB / step", "optimizer GB / step",
              "measured s / step at B=1", "largest part"]
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["task"], r["mixer"], *["-"] * (len(header) - 3), f"not run: {r['error']}"])
            continue
        parts, t = r["flops"], r.get("batch1_step_s")
        total = sum(parts.values())
        out.append([r["task"], r["mixer"], r["settings"], r["seq_len"], r["batch"], f"{r['layers']} x {r['d_model']}",
                    f"{r['params']:,}", f"{total / 1e9:.1f}", *[f"{100 * parts[k] / total:.2f}" for k in FULL_PARTS],
                    f"{r['mixer_bytes'] / 1e9:.1f}", f"{r['rest_bytes'] / 1e9:.1f}",
                    f"{r['optimizer_bytes'] / 1e9:.3f}", "-" if t is None else f"{t:.2f}",
                    max(FULL_PARTS, key=lambda k: parts[k])])
    return common.markdown_table(header, out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["pathfinder", "pathx"])
    ap.add_argument("--mixers", nargs="+", default=list(MIXERS))
    ap.add_argument("--full", action="store_true", help="full-size configs: XLA cost analysis (+ batch-1 timing)")
    ap.add_argument("--data_dir", default="./lra_data", help="small presets: where the generated sets are (or go)")
    ap.add_argument("--batch1_timing", action="store_true",
                    help="full size: only time the batch-1 steps of the cells already costed (a timing run: flock)")
    ap.add_argument("--trace_steps", type=int, default=3)
    ap.add_argument("--time_steps", type=int, default=5)
    ap.add_argument("--time_limit_gflop", type=float, default=150.0,
                    help="full size: time a batch-1 step only below this many XLA GFLOP")
    args = ap.parse_args()

    json_path = RESULTS / "step_profile.json"
    record = json.loads(json_path.read_text()) if json_path.exists() else {}
    kind = "full" if args.full else "small"
    cells = {(r["task"], r["mixer"]): r for r in record.get(kind, [])}
    if args.batch1_timing:
        for (task, mixer), r in cells.items():
            flops = r.get("T", {}).get("flops")
            small_enough = flops and flops / r["batch"] < args.time_limit_gflop * 1e9
            if task in args.tasks and mixer in args.mixers and small_enough:
                config = get_config(task, mixer, small=False)
                steps, t = make_steps(config)
                r.update(time_batch1(steps, t, jax.eval_shape(steps._init_state, jax.random.key(0))))
                print(task, mixer, r.get("batch1_step_s"), flush=True)
                json_path.write_text(json.dumps(record, indent=1) + "\n")
        write_markdown(record)
        return
    for task in args.tasks:
        for mixer in args.mixers:
            t0 = time.perf_counter()
            try:
                if args.full:
                    r = cost_full(task, mixer, args.time_limit_gflop * 1e9)
                else:
                    r = profile_small(task, mixer, args.data_dir, args.trace_steps, args.time_steps)
            except (ValueError, jax.errors.JaxRuntimeError) as e:  # a config the mixer refuses, or out of memory:
                r = {"task": task, "mixer": mixer, "error": str(e).splitlines()[0]}  # recorded, not skipped
            r["machine"], r["load_1min"] = common.machine(), round(os.getloadavg()[0], 1)
            cells[(task, mixer)] = r
            print(json.dumps(r), f"({time.perf_counter() - t0:.0f} s)", flush=True)
            record[kind] = sorted(cells.values(), key=lambda r: (args_order(r["task"]), MIXERS.index(r["mixer"])))
            json_path.write_text(json.dumps(record, indent=1) + "\n")
    write_markdown(record)


def args_order(task: str) -> int:
    return ["pathfinder", "pathx"].index(task) if task in ("pathfinder", "pathx") else 9


def write_markdown(record) -> None:
    doc = __doc__.split("\n\n")
    text = ["# Where a train step's time goes, per mixer: Pathfinder and Path-X", ""]
    if record.get("small"):
        machines = sorted({r["machine"] for r in record["small"]})
        loads = [r["load_1min"] for r in record["small"] if "load_1min" in r]
        if loads:
            machines[-1] += f" (shared: 1-minute load average {min(loads)} to {max(loads)} during the cells)"
        text += ["## Small presets: measured (jax.profiler trace of real steps on generated data)", "",
                 f"Machine: {'; '.join(machines)}. Command: `flock /tmp/bench.lock python -m benchmarks.step_profile "
                 f"--data_dir=/tmp/lra_profile_data --tasks pathfinder`, and `... --tasks pathx --trace_steps 2 "
                 f"--time_steps 3` (data: the presets' generated sets, 2,000 Pathfinder and 400 "
                 f"Path-X images). " + " ".join(doc[2].split()), "",
                 small_table(record["small"]), ""]
        text += [
            "Wall-clock and traced op time differ: XLA's CPU runtime runs independent thunks on several threads "
            "(their times add up past the wall-clock) and spends time between thunks (not in the trace).", ""]
    if record.get("full"):
        machines = sorted({r["machine"] for r in record["full"]})
        text += ["## Full size: XLA cost analysis (flops split by compiled parts); batch-1 time where measured", "",
                 f"Compiled on: {'; '.join(machines)}. Commands: `python -m benchmarks.step_profile --full --tasks "
                 f"pathfinder pathx --time_limit_gflop 0` (cost analysis only: exact, needs no quiet machine), then "
                 f"`flock /tmp/bench.lock python -m benchmarks.step_profile --full --batch1_timing` (the timed "
                 f"column). " + " ".join(doc[3].split()) +
                 " Every cell of this table except the last column is a cost-analysis figure; the last column is "
                 "a measured median of 3 steps ('-': not run, the step's flops put it past the limit).", "",
                 full_table(record["full"]), "",
                 "The optimizer's share is T - G, two programs compiled apart; where the update is negligible the "
                 "difference can come out slightly negative (XLA fuses and counts the two programs a little "
                 "differently): read it as 0.", ""]
        if record.get("notes"):
            text += [record["notes"], ""]
    (RESULTS / "step_profile.md").write_text("\n".join(text))
    print(f"wrote {RESULTS / 'step_profile.md'}")


if __name__ == "__main__":
    main()
