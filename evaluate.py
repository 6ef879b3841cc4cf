"""Evaluate a trained run without training: ``python evaluate.py --workdir=DIR [--checkpoint=best|latest]
[--split=val|test] [--config.data.data_dir=...]``.

Reads the run's own ``config.json``; only settings that cannot change the model may be overridden with
``--config.<field>=<value>`` (``data.data_dir``, ``data.source``, ``data.cache_dir``, ``data.workers``,
``eval_batch_size``, ``mesh.*``); anything else is refused, naming the field. Writes ``eval_<checkpoint>_<split>.json``
into the run directory and prints the accuracy. On the run's own data it equals the run's ``final_eval.json``.
"""
from lra import cli

if __name__ == "__main__":
    cli.evaluate()
