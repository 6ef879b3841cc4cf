"""Exact evaluation of a split: every example once, padding weighted 0, metrics summed on the device."""
from __future__ import annotations

import jax
import numpy as np

from lra import objectives, sharding
from lra.data import pipeline
from lra.steps import Steps, TrainState


EVAL_MASK_SEED = 1234


def evaluate(steps: Steps, state: TrainState, arrays, batch_size: int) -> dict[str, float]:
    """Exact metrics over a whole split (every example once; padded examples weigh 0). Pretraining masks are drawn
    from a fixed key per batch index, so every evaluation of a run scores the same masked positions."""
    total = None
    key = jax.random.key(EVAL_MASK_SEED)
    for i, batch in enumerate(pipeline.eval_batches(arrays, batch_size, process_index=jax.process_index(),
                                                    process_count=jax.process_count())):
        sums = jax.device_get(steps.eval_step(state, sharding.shard_batch(batch, steps.mesh),
                                              jax.random.fold_in(key, i)))
        sums = {k: np.float64(v) for k, v in sums.items()}
        total = sums if total is None else {k: total[k] + sums[k] for k in total}
    return objectives.summarize(total)
