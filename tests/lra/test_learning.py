"""Training learns: tiny models on a small generated ListOps set beat the majority class clearly."""
import json

import numpy as np
import pytest

from configs import lra_listops
from lra import trainer
from lra.data import listops


@pytest.mark.parametrize("model", ["transformer", "aaren"])
def test_tiny_model_learns_listops(tmp_path, model):
    config = lra_listops.get_config(f"{model},small")
    config.unlock()
    config.data.data_dir = str(tmp_path / "data")
    config.num_train_steps, config.eval_every, config.checkpoint_every = 250, 125, 250
    config.progress_bar = False
    config.lock()
    result = trainer.train_and_evaluate(config, tmp_path / "run")

    d = config.data
    directory = listops.ensure_generated(d.data_dir, seed=d.generator_seed, num_train=d.num_train, num_val=d.num_val,
                                         num_test=d.num_test, max_depth=d.max_depth, max_args=d.max_args,
                                         min_length=d.min_length, max_length=d.max_length)
    labels = [t for _, t in listops.read_tsv(directory / "basic_test.tsv")]
    majority = np.bincount(labels).max() / len(labels)
    assert majority < 0.15  # the small set is close to balanced over 10 classes
    assert result["test_count"] == 500
    assert result["test_accuracy"] > majority + 0.1, (result, majority)
    assert json.loads((tmp_path / "run" / "final_eval.json").read_text()) == result
