"""The shared residual encoder, its input embedding, pooling and heads (docs/mixers.md, "The shared encoder").

    inputs -> InputEmbedding (tokens: Embed; continuous values: Dense) [+ learned/sinusoidal positions]
           -> num_layers x EncoderBlock (norm, mixer, dropout, residual; norm, channel MLP/GLU, dropout, residual)
           -> final norm -> pooling over real tokens -> head

Padding: positions where ``mask`` is False are zeroed after the embedding and after every block, mixers mask them
as keys, BatchNorm excludes them from its statistics and pooling ignores them, so the outputs at real positions (and
the pooled features) never depend on what padded positions hold.

Submodule names are part of the checkpoint format: the encoder is always ``encoder`` and heads are ``head``,
so pretrained encoder weights load into a finetuning model whose head is new.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """The fixed sin/cos table of Vaswani et al. (2017), ``[length, dim]``."""
    pos = np.arange(length)[:, None]
    inv_freq = np.exp(-np.log(10000.0) * np.arange(0, dim, 2) / dim)
    table = np.zeros((length, dim), np.float32)
    table[:, 0::2] = np.sin(pos * inv_freq)
    table[:, 1::2] = np.cos(pos * inv_freq[: dim // 2])
    return table


class InputEmbedding(nn.Module):
    """Token embedding (``vocab_size`` set) or a linear map of continuous inputs, plus optional positions."""

    d_model: int
    vocab_size: int | None = None
    pos_emb: str = "none"  # "none" | "learned" | "sinusoidal"
    max_len: int = 2048
    dtype: Any = jnp.float32
    cls_token: bool = False  # prepend a learned token (zero init) before the positions are added (LRA's CLS)

    @nn.compact
    def __call__(self, inputs):
        if self.vocab_size is not None:
            x = nn.Embed(self.vocab_size, self.d_model, embedding_init=nn.initializers.normal(1.0), name="embed")(
                inputs.astype(jnp.int32))
        else:
            if inputs.ndim == 2:  # [B, L] of values -> one channel
                inputs = inputs[..., None]
            x = nn.Dense(self.d_model, dtype=self.dtype, name="input_proj")(inputs.astype(self.dtype))
        max_len = self.max_len
        if self.cls_token:
            cls = self.param("cls", nn.initializers.zeros, (1, 1, self.d_model))
            x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.d_model)).astype(x.dtype), x], axis=1)
            max_len += 1
        length = x.shape[1]
        if self.pos_emb == "learned":
            if length > max_len:
                raise ValueError(f"input length {length} exceeds the learned position table (max_len={self.max_len})")
            table = self.param("pos_embedding", nn.initializers.normal(0.02), (max_len, self.d_model))
            x = x + table[None, :length]
        elif self.pos_emb == "sinusoidal":
            x = x + jnp.asarray(sinusoidal_positions(length, self.d_model))[None]
        elif self.pos_emb != "none":
            raise ValueError(f"unknown pos_emb {self.pos_emb!r}; expected 'none', 'learned' or 'sinusoidal'")
        return x.astype(self.dtype)


def make_norm(kind: str, deterministic: bool, name: str, dtype=jnp.float32) -> Callable:
    """A norm callable ``f(x, mask)``. BatchNorm keeps running statistics in the ``batch_stats`` collection and
    computes batch statistics over real tokens only."""
    if kind == "layer":
        norm = nn.LayerNorm(dtype=dtype, name=name)
        return lambda x, mask: norm(x)
    if kind == "batch":
        norm = nn.BatchNorm(use_running_average=deterministic, momentum=0.9, dtype=dtype, name=name)
        return lambda x, mask: norm(x, mask=None if mask is None else mask[..., None])
    raise ValueError(f"unknown norm {kind!r}; expected 'layer' or 'batch'")


class ChannelMLP(nn.Module):
    """Position-wise channel mixer: ``Dense(D->rD), GELU, Dense(rD->D)`` or a GLU ``(W1 x * sigmoid(W2 x)) W3``."""

    d_model: int
    kind: str = "mlp"  # "mlp" | "glu"
    ratio: int = 4
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, deterministic=True):
        hidden = self.ratio * self.d_model
        if self.kind == "mlp":
            h = nn.gelu(nn.Dense(hidden, dtype=self.dtype, name="fc1")(x))
        elif self.kind == "glu":
            h = nn.Dense(2 * hidden, dtype=self.dtype, name="fc1")(x)
            h = nn.glu(h, axis=-1)
        else:
            raise ValueError(f"unknown channel mixer {self.kind!r}; expected 'mlp', 'glu' or None")
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        return nn.Dense(self.d_model, dtype=self.dtype, name="fc2")(h)


class EncoderBlock(nn.Module):
    """One residual block: mixer sublayer then (optionally) a channel-MLP sublayer, pre- or post-norm."""

    mixer_cls: Callable[..., nn.Module]
    mixer_kwargs: dict
    d_model: int
    causal: bool = False
    norm: str = "layer"
    prenorm: bool = True
    dropout: float = 0.0
    mlp: str | None = "mlp"
    mlp_ratio: int = 4
    dtype: Any = jnp.float32
    tie_dropout: bool = False  # residual dropout drops whole channels for every position alike (S4's tie_dropout)

    @nn.compact
    def __call__(self, x, mask=None, deterministic=True):
        def sublayer(x, fn, idx):
            norm = make_norm(self.norm, deterministic, f"norm{idx}")
            h = norm(x, mask) if self.prenorm else x
            h = fn(h)
            h = nn.Dropout(self.dropout, broadcast_dims=(1,) if self.tie_dropout else ())(
                h, deterministic=deterministic)
            x = x + h
            return x if self.prenorm else norm(x, mask)

        mixer = self.mixer_cls(d_model=self.d_model, causal=self.causal, dtype=self.dtype, name="mixer",
                               **self.mixer_kwargs)
        x = sublayer(x, lambda h: mixer(h, mask=mask, deterministic=deterministic), 0)
        if self.mlp is not None:
            mlp = ChannelMLP(self.d_model, self.mlp, self.mlp_ratio, self.dropout, self.dtype, name="mlp")
            x = sublayer(x, lambda h: mlp(h, deterministic=deterministic), 1)
        return x


def zero_padding(x, mask):
    return x if mask is None else jnp.where(mask[..., None], x, 0.0).astype(x.dtype)


class Encoder(nn.Module):
    """Embedding + residual blocks + final norm. Returns per-position features ``[batch, length, d_model]``."""

    mixer_cls: Callable[..., nn.Module]
    mixer_kwargs: dict
    d_model: int
    num_layers: int
    vocab_size: int | None = None
    causal: bool = False
    pos_emb: str = "none"
    max_len: int = 2048
    norm: str = "layer"
    prenorm: bool = True
    dropout: float = 0.0
    mlp: str | None = "mlp"
    mlp_ratio: int = 4
    dtype: Any = jnp.float32
    remat: bool = False  # rematerialise each block in the backward pass: activation memory of one block, not all
    cls_token: bool = False  # a learned token at position 0 (the output then has length L + 1; pooling "cls")
    tie_dropout: bool = False  # dropout masks shared by all positions (per example and channel)

    @nn.compact
    def __call__(self, inputs, *, mask=None, deterministic=True):
        # positional (mask, deterministic) so that remat can treat ``deterministic`` as static (argnum 3 with self)
        block_cls = nn.remat(EncoderBlock, static_argnums=(3,)) if self.remat else EncoderBlock
        x = InputEmbedding(self.d_model, self.vocab_size, self.pos_emb, self.max_len, self.dtype, name="embedding",
                           cls_token=self.cls_token)(inputs)
        if self.cls_token and mask is not None:
            mask = jnp.concatenate([jnp.ones((mask.shape[0], 1), bool), mask.astype(bool)], axis=1)
        x = nn.Dropout(self.dropout, broadcast_dims=(1,) if self.tie_dropout else ())(x, deterministic=deterministic)
        x = zero_padding(x, mask)
        for i in range(self.num_layers):
            x = block_cls(self.mixer_cls, dict(self.mixer_kwargs), self.d_model, self.causal, self.norm,
                          self.prenorm, self.dropout, self.mlp, self.mlp_ratio, self.dtype, self.tie_dropout,
                          name=f"block{i}")(x, mask, deterministic)
            x = zero_padding(x, mask)
        if self.prenorm:  # post-norm blocks already end in a norm
            x = make_norm(self.norm, deterministic, "final_norm")(x, mask)
        return zero_padding(x.astype(jnp.float32), mask)


def pool(x, mask, kind: str = "mean"):
    """Pool ``[B, L, D]`` features over real tokens: ``mean``, ``first`` (token 0) or ``last`` (last real token);
    ``cls``: the learned token the encoder put before position 0 (``Encoder(cls_token=True)``)."""
    if kind == "cls":
        return x[:, 0]
    if mask is None:
        mask = jnp.ones(x.shape[:2], bool)
    if kind == "mean":
        m = mask[..., None].astype(x.dtype)
        return jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    if kind == "first":
        return x[:, 0]
    if kind == "last":
        last = jnp.maximum(jnp.sum(mask, axis=1).astype(jnp.int32) - 1, 0)
        return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
    raise ValueError(f"unknown pooling {kind!r}; expected 'mean', 'first', 'last' or 'cls'")


class MLPHead(nn.Module):
    """``Dense(hidden), GELU (or ReLU, LRA's), Dense(num_outputs)`` (hidden=0: a single linear layer)."""

    num_outputs: int
    hidden: int = 0
    act: str = "gelu"  # gelu (tanh form) | gelu_exact (erf form, torch's nn.GELU) | relu

    @nn.compact
    def __call__(self, x):
        acts = {"gelu": nn.gelu, "gelu_exact": lambda h: nn.gelu(h, approximate=False), "relu": nn.relu}
        if self.act not in acts:
            raise ValueError(f"unknown head activation {self.act!r}; expected one of {sorted(acts)}")
        if self.hidden:
            x = acts[self.act](nn.Dense(self.hidden, name="hidden")(x))
        return nn.Dense(self.num_outputs, name="out")(x)


class Classifier(nn.Module):
    """Encoder -> pooling -> MLP head. ``inputs``: [B, L] token ids or [B, L(, C)] values; ``mask``: [B, L] bool."""

    encoder: Encoder
    num_classes: int
    pooling: str = "mean"
    head_hidden: int = 0
    head_act: str = "gelu"

    @nn.compact
    def __call__(self, inputs, *, mask=None, deterministic=True):
        x = self.encoder(inputs, mask=mask, deterministic=deterministic)
        return MLPHead(self.num_classes, self.head_hidden, self.head_act, name="head")(pool(x, mask, self.pooling))


class PairedClassifier(nn.Module):
    """Dual tower for retrieval: one shared encoder on both documents, ``[u, v, u*v, u-v]`` -> MLP -> classes."""

    encoder: Encoder
    num_classes: int
    pooling: str = "mean"
    head_hidden: int = 0
    head_act: str = "gelu"

    @nn.compact
    def __call__(self, inputs1, inputs2, *, mask1=None, mask2=None, deterministic=True):
        u = pool(self.encoder(inputs1, mask=mask1, deterministic=deterministic), mask1, self.pooling)
        v = pool(self.encoder(inputs2, mask=mask2, deterministic=deterministic), mask2, self.pooling)
        features = jnp.concatenate([u, v, u * v, u - v], axis=-1)
        return MLPHead(self.num_classes, self.head_hidden or self.encoder.d_model, self.head_act, name="head")(features)


class LanguageModel(nn.Module):
    """Encoder -> per-position ``Dense(num_outputs)``: the head of the pretraining objectives."""

    encoder: Encoder
    num_outputs: int

    @nn.compact
    def __call__(self, inputs, *, mask=None, deterministic=True):
        x = self.encoder(inputs, mask=mask, deterministic=deterministic)
        return nn.Dense(self.num_outputs, name="head")(x)
