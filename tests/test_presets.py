"""Every task's ``small`` preset builds a model for every mixer (shapes only): a preset that only fails when someone
runs it is a defect (Hydra's Path-X preset once asked for heads wider than its inner width)."""
import importlib

import pytest

from configs import models as model_configs
from lra.runs import count_params

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")


@pytest.mark.parametrize("task", TASKS)
def test_small_preset_builds_for_every_mixer(task):
    module = importlib.import_module(f"configs.lra_{task}")
    for mixer in model_configs.MODELS:
        config = module.get_config(f"{mixer},small")
        assert count_params(config) > 0, (task, mixer)
