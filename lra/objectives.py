"""Losses and metrics. Each returns the scalar loss to differentiate and a dict of SUMS (``loss``, ``correct``,
``count``) so that metrics aggregate exactly over batches and devices; divide by ``count`` at the end."""
from __future__ import annotations

import jax.numpy as jnp
import optax


def classification(logits, labels, weights=None):
    """Softmax cross-entropy and accuracy. ``weights`` [B] (0 for padding examples in evaluation)."""
    logits = logits.astype(jnp.float32)
    if weights is None:
        weights = jnp.ones(labels.shape, jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    count = jnp.sum(weights)
    sums = {"loss": jnp.sum(losses * weights), "correct": jnp.sum(correct * weights), "count": count}
    return sums["loss"] / jnp.maximum(count, 1.0), sums


def summarize(sums) -> dict[str, float]:
    """Sums -> means: ``{"loss", "accuracy", "count"}``."""
    count = float(sums["count"])
    return {"loss": float(sums["loss"]) / max(count, 1.0), "accuracy": float(sums["correct"]) / max(count, 1.0),
            "count": count}


OBJECTIVES = {"classify": classification}
