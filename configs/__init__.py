"""Configs as Python: ``base.py`` (shared defaults), ``models.py`` (one function per model), one file per task.

The task configs are installed with the package, so a config can be named instead of given as a file:
``--config=lra_pathx:s4`` is the installed ``configs/lra_pathx.py`` with argument ``s4``. :func:`resolve` turns either
form into the file to load; a path to an existing file always wins, so a checkout's own (or a user's edited copy of a)
config file is taken as given.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_TASKS = ("__init__", "base", "models", "published")  # modules here that are not task configs


def names() -> list[str]:
    """The task configs that can be named: ``lra_listops``, ``lra_pathx``, ..."""
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in NOT_TASKS)


def resolve(spec: str) -> str:
    """``FILE[:ARG]`` or ``NAME[:ARG]`` -> ``FILE[:ARG]`` with FILE an existing config file.

    FILE is taken as it is when it exists; otherwise a name (``lra_pathx``, ``lra_pathx.py`` or
    ``configs/lra_pathx.py``, the last so that a checkout's command lines work from any directory) is looked up among
    the installed configs. FileNotFoundError names the spec and the configs there are.
    """
    path, sep, arg = spec.partition(":")
    if Path(path).is_file():
        return spec
    stem = path[len("configs/"):] if path.startswith("configs/") else path
    stem = stem[:-3] if stem.endswith(".py") else stem
    if "/" not in stem and stem in names():
        return str(HERE / f"{stem}.py") + sep + arg
    raise FileNotFoundError(f"config {path!r} not found: neither a file nor one of the configs {names()} "
                            f"(e.g. --config=lra_listops:transformer)")
