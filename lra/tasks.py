"""One spec per LRA task: sequence length, vocabulary or channels, classes, single or paired input.

``get_task(config)`` reads ``config.task`` and ``config.data`` and returns a :class:`TaskSpec` whose ``load(split)``
gives that split as NumPy arrays:

* single input: ``inputs`` ``[N, seq_len]`` (int32 token ids, 0 = pad) or ``[N, seq_len, channels]`` (float32),
  ``lengths`` ``[N]`` (number of real tokens), ``labels`` ``[N]``;
* paired input: ``inputs1``, ``lengths1``, ``inputs2``, ``lengths2``, ``labels``.

Adding a task is one data module under ``lra/data/`` plus one entry in ``TASKS``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    seq_len: int
    num_classes: int
    vocab_size: int | None  # None: continuous inputs through a linear input projection
    load: Callable[[str], dict[str, np.ndarray]]
    input_channels: int = 1
    paired: bool = False
    # continuous pixel inputs: the input values of intensities 0 and 255 (pretraining's 256-class targets)
    pixel_range: tuple[float, float] | None = None
    # where the data come from: the folder or archive the loader reads (generating the set first if the config says
    # so); ``python -m lra.data.prepare`` records it in its manifest
    source: Callable[[], object] | None = None

    @property
    def input_keys(self) -> tuple[str, ...]:
        return ("inputs1", "inputs2") if self.paired else ("inputs",)


def _listops(data) -> TaskSpec:
    from lra.data import listops

    def directory():
        if data.source == "generate":
            return listops.ensure_generated(
                data.data_dir, seed=data.generator_seed, num_train=data.num_train, num_val=data.num_val,
                num_test=data.num_test, max_depth=data.max_depth, max_args=data.max_args,
                min_length=data.min_length, max_length=data.max_length)
        if data.source == "release":
            return listops.find_release_dir(data.data_dir)
        raise ValueError(f"config.data.source must be 'generate' or 'release', got {data.source!r}")

    def load(split):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return listops.load_split(directory(), split, data.seq_len)

    return TaskSpec("listops", data.seq_len, 10, listops.VOCAB_SIZE, load, source=directory)


def _split_checked(load):
    def checked(split):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return load(split)
    return checked


def _text(data) -> TaskSpec:
    """IMDB bytes (lra/data/text.py): the aclImdb archive or folder under ``data.data_dir``."""
    from lra.data import text
    return TaskSpec("text", data.seq_len, text.NUM_CLASSES, text.VOCAB_SIZE, _split_checked(
        lambda split: text.load_split(data.data_dir, split, seq_len=data.seq_len,
                                      official_protocol=data.official_protocol, val_fraction=data.val_fraction,
                                      val_seed=data.val_seed, cache_dir=data.cache_dir or None)),
        source=lambda: text.find_source(data.data_dir))


def _retrieval(data) -> TaskSpec:
    """AAN pairs (lra/data/retrieval.py): the LRA release's tsv_data/ under ``data.data_dir``."""
    from lra.data import retrieval
    return TaskSpec("retrieval", data.seq_len, retrieval.NUM_CLASSES, retrieval.VOCAB_SIZE, _split_checked(
        lambda split: retrieval.load_split(data.data_dir, split, seq_len=data.seq_len,
                                           decode_literals=data.decode_literals, cache_dir=data.cache_dir or None)),
        paired=True, source=lambda: retrieval.find_release_dir(data.data_dir))


def _image(data) -> TaskSpec:
    """Grayscale CIFAR-10 (lra/data/image.py): 256 tokens or one normalised channel (``data.tokenize``)."""
    from lra.data import image
    load = _split_checked(lambda split: image.load_split(data.data_dir, split, tokenize=data.tokenize))
    source = lambda: image.find_source(data.data_dir)[1]  # noqa: E731
    if data.tokenize:
        return TaskSpec("image", image.SEQ_LEN, image.NUM_CLASSES, image.VOCAB_SIZE, load, source=source)
    return TaskSpec("image", image.SEQ_LEN, image.NUM_CLASSES, None, load, pixel_range=image.PIXEL_RANGE,
                    source=source)


def _pathfinder(data, name: str = "pathfinder") -> TaskSpec:
    """Pathfinder (pathfinder32 by default) and Path-X (pathfinder128): one builder, ``data.resolution`` decides."""
    from lra.data import pathfinder

    def directory():
        if data.source == "generate":
            return pathfinder.ensure_generated(
                data.data_dir, resolution=data.resolution, difficulty=data.difficulty, num_images=data.num_images,
                seed=data.generator_seed, workers=data.workers,
                num_distractor_snakes=None if data.num_distractor_snakes < 0 else data.num_distractor_snakes)
        if data.source == "release":
            return pathfinder.find_dir(data.data_dir, data.resolution, data.difficulty)
        raise ValueError(f"config.data.source must be 'generate' or 'release', got {data.source!r}")

    load = _split_checked(lambda split: pathfinder.load_split(
        directory(), split, data.resolution, tokenize=data.tokenize, center=data.center, split_seed=data.split_seed,
        workers=data.workers, cache_dir=data.cache_dir or None))
    seq_len = data.resolution ** 2
    if data.tokenize:
        return TaskSpec(name, seq_len, pathfinder.NUM_CLASSES, pathfinder.VOCAB_SIZE, load, source=directory)
    return TaskSpec(name, seq_len, pathfinder.NUM_CLASSES, None, load, pixel_range=pathfinder.pixel_range(data.center),
                    source=directory)


TASKS: dict[str, Callable] = {
    "listops": _listops,
    "text": _text,
    "retrieval": _retrieval,
    "image": _image,
    "pathfinder": _pathfinder,
    "pathx": lambda data: _pathfinder(data, "pathx"),
}


def get_task(config) -> TaskSpec:
    try:
        make = TASKS[config.task]
    except KeyError:
        raise ValueError(f"unknown config.task {config.task!r}; known tasks: {sorted(TASKS)}") from None
    return make(config.data)
