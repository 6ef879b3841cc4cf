"""Batch pipeline: deterministic epochs, exact resume, per-process slices, exact padded evaluation."""
import numpy as np
import pytest

from lra.data.pipeline import TrainIterator, eval_batches, num_examples


def arrays(n=23):
    return {"inputs": np.arange(n * 3).reshape(n, 3), "labels": np.arange(n)}


def test_epochs_are_permutations_and_seeded():
    it = TrainIterator(arrays(), 5, seed=1)
    epoch0 = np.concatenate([next(it)["labels"] for _ in range(4)])  # 23 // 5 = 4 batches per epoch
    assert it.get_state() == {"epoch": 1, "batch": 0}
    assert len(set(epoch0)) == 20 and set(epoch0) <= set(range(23))
    epoch1 = np.concatenate([next(it)["labels"] for _ in range(4)])
    assert not np.array_equal(epoch0, epoch1)
    again = TrainIterator(arrays(), 5, seed=1)
    np.testing.assert_array_equal(np.concatenate([next(again)["labels"] for _ in range(4)]), epoch0)
    other = TrainIterator(arrays(), 5, seed=2)
    assert not np.array_equal(np.concatenate([next(other)["labels"] for _ in range(4)]), epoch0)


def test_resume_from_state_gives_the_same_batches():
    full = TrainIterator(arrays(), 5, seed=3)
    seq = [next(full)["labels"] for _ in range(11)]
    first = TrainIterator(arrays(), 5, seed=3)
    for _ in range(6):
        next(first)
    resumed = TrainIterator(arrays(), 5, seed=3)
    resumed.set_state(first.get_state())
    for want in seq[6:]:
        np.testing.assert_array_equal(next(resumed)["labels"], want)


def test_process_slices_partition_the_global_batch():
    glob = TrainIterator(arrays(), 6, seed=4)
    parts = [TrainIterator(arrays(), 6, seed=4, process_index=p, process_count=3) for p in range(3)]
    for _ in range(5):
        want = next(glob)["labels"]
        got = np.concatenate([next(p)["labels"] for p in parts])
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="not divisible"):
        TrainIterator(arrays(), 5, seed=0, process_count=2)


@pytest.mark.parametrize("batch,procs", [(4, 1), (5, 1), (23, 1), (64, 1), (6, 2), (8, 4)])
def test_eval_counts_every_example_once(batch, procs):
    data = arrays()
    seen = []
    for p in range(procs):
        for b in eval_batches(data, batch, process_index=p, process_count=procs):
            assert len(b["labels"]) == batch // procs
            seen.append(b["labels"][b["weights"] > 0])
    seen = np.sort(np.concatenate(seen))
    np.testing.assert_array_equal(seen, np.arange(23))


def test_mismatched_arrays_and_oversized_batch_are_errors():
    with pytest.raises(ValueError, match="different lengths"):
        num_examples({"a": np.zeros(3), "b": np.zeros(4)})
    with pytest.raises(ValueError, match="larger than the training set"):
        TrainIterator(arrays(4), 8, seed=0)
