"""Evaluate a trained run without training: ``python evaluate.py --workdir=DIR [--checkpoint=best|latest]
[--split=val|test] [--config.data.data_dir=...]``.

Reads the run's own ``config.json``; only settings that cannot change the model may be overridden with
``--config.<field>=<value>`` (``data.data_dir``, ``data.source``, ``data.cache_dir``, ``data.workers``,
``eval_batch_size``, ``mesh.*``); anything else is refused, naming the field. Writes ``eval_<checkpoint>_<split>.json``
into the run directory and prints the accuracy. On the run's own data it equals the run's ``final_eval.json``.
"""
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The run directory (what train.py was given as --workdir).")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint: best by validation score, or latest.")
flags.DEFINE_enum("split", "test", ["train", "val", "test"], "Which split to evaluate.")
flags.mark_flags_as_required(["workdir"])


def split_overrides(argv):
    """``--config.a.b=v`` arguments -> ({"a.b": "v"}, the remaining argv)."""
    overrides, rest = {}, []
    for a in argv:
        if a.startswith("--config."):
            key, sep, value = a[len("--config."):].partition("=")
            if not sep:
                sys.exit(f"error: {a}: expected --config.<field>=<value>")
            overrides[key] = value
        else:
            rest.append(a)
    return overrides, rest


OVERRIDES: dict = {}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from lra import runs
    try:
        result = runs.evaluate_run(FLAGS.workdir, FLAGS.checkpoint, FLAGS.split, OVERRIDES)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    split = FLAGS.split
    print(f"{FLAGS.workdir}: {FLAGS.checkpoint} checkpoint (step {result['step']}), {split}: accuracy "
          f"{result[split + '_accuracy']:.4f}, loss {result[split + '_loss']:.4f} over "
          f"{result[split + '_count']:.0f} examples -> eval_{FLAGS.checkpoint}_{split}.json")


def run(argv=None):
    """Entry point (also for a console script): ``--config.*`` overrides are taken out before absl parses flags."""
    global OVERRIDES
    OVERRIDES, rest = split_overrides(list(sys.argv if argv is None else argv))
    app.run(main, argv=rest)


if __name__ == "__main__":
    run()
