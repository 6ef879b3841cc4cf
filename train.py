"""Train and evaluate one LRA run: ``python train.py --config=configs/lra_listops.py:transformer --workdir=DIR``.

``--config`` takes a config file, or a config's name (``--config=lra_listops:transformer``); installed, the same
command is ``lra-train``. Overrides: ``--config.model.d_model=256`` etc. (the config is locked: an unknown key is an
error). Rerunning the same command on the same workdir resumes. ``--config.pretrain=masked_lm`` (or ``causal_lm``)
self-pretrains on the task's own training inputs first, then finetunes: ``DIR/pretrain`` and ``DIR/finetune``.
"""
from lra import cli

cli.define_train_flags()
FLAGS = cli.FLAGS
main = cli.train_main

if __name__ == "__main__":
    cli.train()
