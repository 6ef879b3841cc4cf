"""The command lines: ``lra-train`` / ``python train.py``, ``lra-prepare`` / ``python -m lra.data.prepare``.

``--config`` takes a config file (``configs/lra_pathx.py:s4``) or, with the package installed anywhere, a config's
name (``lra_pathx:s4``; :func:`configs.resolve`). The name is turned into the installed file before absl reads the
flags, so ``config_flags`` loads a file either way and overrides (``--config.model.d_model=256``) work the same.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS


def define_train_flags() -> None:
    """The training flags (idempotent: ``train.py`` and the console script share one definition)."""
    if "workdir" in FLAGS:
        return
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Task config: a file (configs/lra_listops.py:transformer) or a "
                                    "name (lra_listops:transformer)", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for the config, checkpoints, metrics and final evaluation: a "
                        "local path or a URL epath knows (gs://bucket/run).")
    flags.DEFINE_bool("distributed", False, "Multi-process run on a cluster JAX detects itself (TPU pod slice, SLURM).")
    flags.DEFINE_string("coordinator_address", "", "Multi-process run: host:port of process 0's coordinator.")
    flags.DEFINE_integer("num_processes", 0, "Multi-process run: number of processes.")
    flags.DEFINE_integer("process_id", -1, "Multi-process run: this process's index.")
    flags.mark_flags_as_required(["config", "workdir"])


def resolve_config_args(argv: list[str]) -> list[str]:
    """``--config=NAME[:ARG]`` (or ``--config NAME[:ARG]``) -> ``--config=FILE[:ARG]``; exits naming a config that
    is neither a file nor an installed name. Other arguments are returned unchanged."""
    import configs

    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        spec = None
        if a.startswith("--config="):
            spec = a[len("--config="):]
        elif a == "--config" and i + 1 < len(argv):
            spec, i = argv[i + 1], i + 1
        if spec is None:
            out.append(a)
        else:
            try:
                out.append("--config=" + configs.resolve(spec))
            except FileNotFoundError as e:
                sys.exit(f"error: {e}")
        i += 1
    return out


def train_main(argv) -> None:
    """absl main of a training run (the flags of :func:`define_train_flags`)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # keep library INFO logs (Orbax's per-save lines) out of the way
        logging.set_verbosity(logging.WARNING)
    from lra import sharding, trainer

    sharding.init_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed)
    trainer.run(FLAGS.config, FLAGS.workdir)


def train(argv: list[str] | None = None) -> None:
    """``lra-train``: config names resolved, unknown override keys named before any work, then the run."""
    from configs import base

    argv = resolve_config_args(list(sys.argv if argv is None else argv))
    base.check_overrides(argv[1:])
    define_train_flags()
    app.run(train_main, argv=argv)


def prepare(argv: list[str] | None = None) -> None:
    """``lra-prepare``: :func:`lra.data.prepare.main`."""
    from lra.data import prepare as prepare_module

    prepare_module.main(argv)


# ----------------------------------------------------------------------------------------------------- evaluate

def define_evaluate_flags() -> None:
    """The flags of ``evaluate.py`` / ``lra-evaluate`` (defined only by that entry point)."""
    flags.DEFINE_string("workdir", None, "The run directory (what train.py was given as --workdir).")
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint: best by validation score, or latest.")
    flags.DEFINE_enum("split", "test", ["train", "val", "test"], "Which split to evaluate.")
    flags.mark_flags_as_required(["workdir"])


def split_overrides(argv: list[str]) -> tuple[dict, list[str]]:
    """``--config.a.b=v`` arguments -> (``{"a.b": "v"}``, the remaining argv)."""
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


def evaluate_main(argv, overrides: dict) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from lra import runs
    try:
        result = runs.evaluate_run(FLAGS.workdir, FLAGS.checkpoint, FLAGS.split, overrides)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    split = FLAGS.split
    print(f"{FLAGS.workdir}: {FLAGS.checkpoint} checkpoint (step {result['step']}), {split}: accuracy "
          f"{result[split + '_accuracy']:.4f}, loss {result[split + '_loss']:.4f} over "
          f"{result[split + '_count']:.0f} examples -> eval_{FLAGS.checkpoint}_{split}.json")


def evaluate(argv: list[str] | None = None) -> None:
    """``evaluate.py`` / ``lra-evaluate``: ``--config.*`` overrides are taken out before absl parses the flags, and
    checked by :func:`lra.runs.apply_overrides` (only fields that cannot change the model)."""
    overrides, rest = split_overrides(list(sys.argv if argv is None else argv))
    define_evaluate_flags()
    app.run(lambda a: evaluate_main(a, overrides), argv=rest)
