"""Sequence mixers and the shared encoder.

``MIXERS`` is the one table of mixers: ``MIXERS[name](d_model=..., causal=...)`` builds a working mixer with its
defaults. Adding a mixer is one file in this package plus one line here. ``build(model_config, task)`` turns a
config into the Flax model the trainer runs.
"""
from __future__ import annotations

import jax.numpy as jnp

from models.aaren import Aaren
from models.attention import MultiHeadAttention
from models.combiner import Combiner
from models.deltanet import DeltaNet
from models.encoder import Classifier, Encoder, LanguageModel, PairedClassifier
from models.hydra import Hydra
from models.routing import RoutingAttention
from models.s4 import S4, S4D

MIXERS = {
    "transformer": MultiHeadAttention,
    "s4": S4,
    "s4d": S4D,
    "aaren": Aaren,
    "deltanet": DeltaNet,
    "hydra": Hydra,
    "routing": RoutingAttention,
    "combiner": Combiner,
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def get_mixer(name: str):
    try:
        return MIXERS[name]
    except KeyError:
        raise ValueError(f"unknown mixer {name!r}; registered mixers: {sorted(MIXERS)}") from None


def build_encoder(model_config, *, vocab_size: int | None, max_len: int, cls_token: bool = False) -> Encoder:
    """The shared encoder for ``model_config`` (the ``config.model`` section) on a task's input spec."""
    c = model_config
    if c.dtype not in DTYPES:
        raise ValueError(f"unknown config.model.dtype {c.dtype!r}; expected one of {sorted(DTYPES)}")
    return Encoder(
        mixer_cls=get_mixer(c.mixer),
        mixer_kwargs=dict(c.mixer_kwargs),
        d_model=c.d_model,
        num_layers=c.num_layers,
        vocab_size=vocab_size,
        causal=c.causal,
        pos_emb=c.pos_emb,
        max_len=max_len,
        norm=c.norm,
        prenorm=c.prenorm,
        dropout=c.dropout,
        mlp=c.mlp or None,
        mlp_ratio=c.mlp_ratio,
        dtype=DTYPES[c.dtype],
        remat=c.get("remat", False),
        cls_token=cls_token,
        tie_dropout=c.get("tie_dropout", False),
    )


def build(model_config, task, *, head: str = "classifier", num_outputs: int | None = None):
    """Build the model for ``task`` (an ``lra.tasks.TaskSpec``).

    ``head``: ``classifier`` (the task's classes; the paired classifier for two-document tasks) or ``lm`` (a
    per-position head with ``num_outputs`` outputs, for pretraining).
    """
    cls_token = head == "classifier" and model_config.pooling == "cls"
    encoder = build_encoder(model_config, vocab_size=task.vocab_size, max_len=task.seq_len, cls_token=cls_token)
    if head == "lm":
        return LanguageModel(encoder, num_outputs)
    if head != "classifier":
        raise ValueError(f"unknown head {head!r}; expected 'classifier' or 'lm'")
    cls = PairedClassifier if task.paired else Classifier
    return cls(encoder, task.num_classes, model_config.pooling, model_config.head_hidden,
               model_config.get("head_act", "gelu"))
