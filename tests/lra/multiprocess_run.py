"""``train.py`` for the multi-process test: the same command line, but the run dies right after its step-``N``
checkpoint when ``LRA_TEST_DIE_AFTER=N`` is set (a preemption at a known point)."""
import os
import sys

from absl import app

import train
from configs import base
from lra import trainer

die_after = int(os.environ.get("LRA_TEST_DIE_AFTER", "0"))
real_save = trainer.save_checkpoint


def save_then_die(manager, state, meta, score=None):
    real_save(manager, state, meta, score)
    if die_after and int(state.step) == die_after:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("checkpoint written")  # every process has finished the save
        os._exit(17)  # the first to exit may take the other down (abort) before its own exit: both count


trainer.save_checkpoint = save_then_die

if __name__ == "__main__":
    base.check_overrides(sys.argv[1:])
    app.run(train.main)
