"""The compiled train and eval steps of a run, and the state they carry.

``Steps(model, objective, tx, mesh)`` jits one train step and one eval step with explicit shardings over the mesh.
The train step guards against non-finite values: it reports whether the loss and the gradients were finite, and a
step whose loss or gradients are not finite is not applied (parameters, optimizer moments and model state stay as
they were; only the step counter moves on). The check is computed inside the compiled step, so it costs no extra
round trip to the device; the loop (:mod:`lra.trainer`) reads the flags when it reads the metrics anyway.
"""
from __future__ import annotations

import contextlib
import io
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lra import objectives, sharding, tasks


# Collections a forward pass writes for the step that ran it, never kept in the state: ``losses`` (auxiliary losses
# sown by mixers, added to the task loss) and ``intermediates`` (sown for inspection).
TRANSIENT_COLLECTIONS = ("losses", "intermediates")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any  # non-parameter collections (e.g. batch_stats, routing centroids)


def model_inputs(batch) -> tuple[tuple, dict]:
    """Positional and keyword arguments of the model for a model batch (masks from lengths); a batch with
    ``inputs1``/``inputs2`` goes to the paired classifier."""
    def mask(inputs, lengths):
        return jnp.arange(inputs.shape[1])[None, :] < lengths[:, None]

    if "inputs1" in batch:
        return ((batch["inputs1"], batch["inputs2"]),
                {"mask1": mask(batch["inputs1"], batch["lengths1"]), "mask2": mask(batch["inputs2"], batch["lengths2"])})
    return (batch["inputs"],), {"mask": mask(batch["inputs"], batch["lengths"])}


def dummy_batch(task: tasks.TaskSpec, batch_size: int = 1) -> dict[str, np.ndarray]:
    if task.vocab_size is not None:
        x = np.zeros((batch_size, task.seq_len), np.int32)
    else:
        x = np.zeros((batch_size, task.seq_len, task.input_channels), np.float32)
    lengths = np.full((batch_size,), task.seq_len, np.int32)
    if task.paired:
        return {"inputs1": x, "lengths1": lengths, "inputs2": x, "lengths2": lengths}
    return {"inputs": x, "lengths": lengths}


class Steps:
    """The compiled train and eval steps of one run, with explicit shardings over the mesh. ``objective``
    (:class:`lra.objectives.Objective`) makes the model batch, targets and weights from a data batch.

    State placement: parameters by the partition rules of :mod:`lra.sharding` (split over ``model`` where the rules
    say so), optimizer moments like their parameters, everything else replicated. ``grad_accum_steps`` > 1 splits
    each batch into that many micro-batches (each spread over the ``data`` devices), accumulates their gradients
    and applies one update: the same update as the whole batch, up to summation order, for models without
    batch-dependent state (BatchNorm statistics and routing centroids update once per micro-batch).

    The train step returns the new state and the step's metric sums, among them ``nonfinite`` (1.0 when the loss or
    the gradients were not finite). With ``guard`` (the default) such a step is not applied and its metric sums are
    zero; ``guard=False`` applies every step as it comes (for measuring the guard's cost)."""

    def __init__(self, model, objective: objectives.Objective, tx, mesh, grad_accum_steps: int = 1,
                 guard: bool = True):
        self.model, self.objective, self.tx, self.mesh = model, objective, tx, mesh
        self.guard = guard
        if grad_accum_steps < 1:
            raise ValueError(f"config.grad_accum_steps must be >= 1, got {grad_accum_steps}")
        self.accum = grad_accum_steps
        rep, data = sharding.replicated(mesh), sharding.data_sharding(mesh)
        abstract = jax.eval_shape(self._init_state, jax.random.key(0))
        params_sharding, self.unsplit = sharding.param_shardings(abstract.params, mesh)
        self.state_sharding = TrainState(
            step=rep, params=params_sharding,
            opt_state=sharding.follow_params(abstract.opt_state, params_sharding, mesh),
            model_state=jax.tree_util.tree_map(lambda _: rep, abstract.model_state))
        self.train_step = jax.jit(self._train_step, in_shardings=(self.state_sharding, data, rep),
                                  out_shardings=(self.state_sharding, rep), donate_argnums=(0,))
        self.eval_step = jax.jit(self._eval_step, in_shardings=(self.state_sharding, data, rep), out_shardings=rep)

    def _init_state(self, rng) -> TrainState:
        args, kwargs = model_inputs(dummy_batch(self.objective.model_task))
        variables = self.model.init({"params": rng, "dropout": rng}, *args, **kwargs)
        variables = {k: v for k, v in flax.core.unfreeze(variables).items() if k not in TRANSIENT_COLLECTIONS}
        params = variables.pop("params")
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                          model_state=variables)

    def init(self, rng) -> TrainState:
        return jax.jit(self._init_state, out_shardings=self.state_sharding)(rng)

    def _apply(self, params, model_state, batch, *, train: bool, rng=None):
        """Returns (outputs, new model state, auxiliary loss). In training every state collection is mutable and
        the values sown into ``losses`` (already weighted, e.g. routing's commitment loss) sum to the aux loss."""
        args, kwargs = model_inputs(batch)
        variables = {"params": params, **model_state}
        if not train:
            return self.model.apply(variables, *args, **kwargs, deterministic=True), model_state, 0.0
        out, new_state = self.model.apply(variables, *args, **kwargs, deterministic=False, rngs={"dropout": rng},
                                          mutable=[*model_state, "losses"])
        new_state = dict(new_state)
        aux = sum((jnp.sum(v) for v in jax.tree_util.tree_leaves(new_state.pop("losses", {}))), jnp.float32(0.0))
        return out, new_state, aux

    def _micro_batches(self, tree):
        """[B, ...] leaves -> [A, B/A, ...]: micro-batch i takes the i-th slice of every data device's rows, so each
        micro-batch stays spread over all devices (no data movement)."""
        n, A = self.mesh.shape["data"], self.accum

        def split(x):
            B = x.shape[0]
            if B % (n * A):
                raise ValueError(f"batch size {B} is not divisible by data devices ({n}) x grad_accum_steps ({A})")
            x = x.reshape(n, A, B // (n * A), *x.shape[1:]).swapaxes(0, 1).reshape(A, B // A, *x.shape[1:])
            return jax.lax.with_sharding_constraint(
                x, jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(None, "data")))

        return jax.tree_util.tree_map(split, tree)

    def _train_step(self, state: TrainState, batch, base_rng):
        rng = jax.random.fold_in(base_rng, state.step)
        dropout_rng, mask_rng = jax.random.split(rng)
        model_batch, targets, weights = sharding.constrain_batch(self.objective.prepare(batch, mask_rng), self.mesh)
        # the whole batch's mean loss = sum over micro-batches of (their loss sums / the whole batch's count)
        total = jnp.maximum(jnp.sum(weights), 1.0)

        def grads_of(model_state, mb, t, w, rng):
            def loss_fn(params):
                out, new_model_state, aux = self._apply(params, model_state, mb, train=True, rng=rng)
                _, sums = self.objective.loss(out, t, w)
                sums["aux_loss"] = aux / self.accum
                return sums["loss"] / total + aux / self.accum, (sums, flax.core.unfreeze(new_model_state))
            (_, (sums, new_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
            return grads, sums, new_state

        if self.accum == 1:
            grads, sums, model_state = grads_of(state.model_state, model_batch, targets, weights, dropout_rng)
        else:
            def body(carry, inp):
                g_acc, s_acc, ms = carry
                (mb, t, w), i = inp
                g, sums, ms = grads_of(ms, mb, t, w, jax.random.fold_in(dropout_rng, i))
                return (jax.tree_util.tree_map(jnp.add, g_acc, g), jax.tree_util.tree_map(jnp.add, s_acc, sums),
                        ms), None

            zeros_g = jax.tree_util.tree_map(jnp.zeros_like, state.params)
            zeros_s = {k: jnp.zeros((), jnp.float32) for k in ("loss", "correct", "count", "aux_loss")}
            micro = self._micro_batches((model_batch, targets, weights))
            (grads, sums, model_state), _ = jax.lax.scan(
                body, (zeros_g, zeros_s, flax.core.unfreeze(state.model_state)), (micro, jnp.arange(self.accum)))
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        sums["grad_norm"] = optax.tree.norm(grads)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state)
        # A non-finite gradient norm means a non-finite gradient somewhere (or one so large its square overflows).
        finite = jnp.isfinite(sums["loss"]) & jnp.isfinite(sums["aux_loss"]) & jnp.isfinite(sums["grad_norm"])
        if self.guard:
            kept = state.replace(step=state.step + 1)
            new = jax.tree_util.tree_map(lambda n, k: jnp.where(finite, n, k), new, kept)
            # the metrics of a skipped step are left out of the window (its count too)
            sums = {k: jnp.where(finite, v, jnp.zeros_like(v)) for k, v in sums.items()}
        sums["nonfinite"] = 1.0 - finite.astype(jnp.float32)
        return new, sums

    def _eval_step(self, state: TrainState, batch, rng):
        model_batch, targets, weights = self.objective.prepare(batch, rng)
        out, _, _ = self._apply(state.params, state.model_state, model_batch, train=False)
        _, sums = self.objective.loss(out, targets, weights)
        return sums


def residual_bytes(steps: Steps, state: TrainState, batch) -> int:
    """Bytes of the activations a training forward pass saves for its backward pass (JAX's exact list of residuals,
    parameters excluded): what rematerialisation (``config.model.remat``) shrinks, on any backend."""
    model_batch, _, _ = steps.objective.prepare(batch, jax.random.key(0))
    args, kwargs = model_inputs(model_batch)

    def forward(params):
        out, _ = steps.model.apply({"params": params, **state.model_state}, *args, **kwargs, deterministic=False,
                                   rngs={"dropout": jax.random.key(0)}, mutable=[*state.model_state, "losses"])
        return jnp.sum(out)

    from jax.ad_checkpoint import print_saved_residuals  # the public form of JAX's residual list: one line each

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        print_saved_residuals(forward, state.params)
    itemsize = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "bool": 1,
                "c64": 8, "c128": 16}
    total = 0
    for line in text.getvalue().splitlines():
        m = re.match(r"(\w+)\[([\d,]*)\] (.*)", line)
        if m and not m.group(3).startswith("from the argument"):
            dims = [int(d) for d in m.group(2).split(",") if d]
            total += int(np.prod(dims)) * itemsize.get(m.group(1), 4)
    return total
