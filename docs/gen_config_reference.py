"""Write ``docs/config_reference.md`` from the configs themselves, so that the reference cannot drift from them.

    python docs/gen_config_reference.py          # rewrite docs/config_reference.md
    python docs/gen_config_reference.py --check  # exit 1 if the committed file is out of date

What it reads: the fields and defaults of ``configs/base.py``, of every task config ``configs/lra_*.py`` (with its
default model and its ``small`` preset), of every model in ``configs/models.py`` (encoder fields and
``mixer_kwargs``), and the dataclass fields of the mixer classes in ``models.MIXERS``. Descriptions come from the
``#`` comment that ends the statement assigning a field, or the comment block directly above it (parsed with ``ast``
and ``tokenize``), and from ``DESCRIPTIONS`` below (both when both exist, the table's text first). A field with neither is an error naming it, and so is an
entry of ``DESCRIPTIONS`` that matches no field: ``tests/test_docs.py`` runs :func:`render` and compares.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "config_reference.md"
REGENERATE = "python docs/gen_config_reference.py"

# Descriptions of fields whose assignment has no trailing comment. Keys: "<key>" for configs/base.py fields,
# "data.<field>" for task data fields, "model.<field>" for encoder fields, "<MixerClass>.<field>" for mixer fields.
# Where a field also has a comment, the two are joined (this text first).
DESCRIPTIONS = {
    # configs/base.py
    "seed": "seed of parameter init, dropout and data order",
    "task": "task name (listops | text | retrieval | image | pathfinder | pathx), set by the task config",
    "eval_batch_size": "global batch of evaluation",
    "num_train_steps": "optimizer steps of the run (of the finetuning phase when pretraining)",
    "log_every": "steps between training-metric records (metrics.jsonl, TensorBoard)",
    "eval_every": "steps between validation evaluations",
    "checkpoint_every": "steps between checkpoints",
    "progress_bar": "show a tqdm progress bar on the main process",
    "optimizer.name": "optimizer (adamw)",
    "optimizer.lr": "peak learning rate of every parameter outside the SSM group",
    "optimizer.weight_decay": "AdamW decoupled weight decay (not applied to the SSM group)",
    "optimizer.b1": "Adam first-moment decay",
    "optimizer.b2": "Adam second-moment decay",
    "optimizer.eps": "Adam epsilon",
    "optimizer.warmup_steps": "steps of linear warmup from 0 to the peak learning rate",
    "optimizer.final_lr_ratio": "learning rate at the end of the decay, as a fraction of the peak",
    "mesh.data": "size of the data-parallel mesh axis (docs/sharding.md); -1 = all remaining devices",
    "mesh.model": "size of the model-parallel mesh axis (docs/sharding.md); -1 = all remaining devices",
    "wandb.project": "Weights & Biases project; \"\" = no W&B logging",
    "wandb.entity": "Weights & Biases entity (user or team); \"\" = the library's default",
    "wandb.name": "Weights & Biases run name",
    "wandb.mode": "\"\" = the library's default (WANDB_MODE) | online | offline",
    # task data fields
    "data.data_dir": "folder of the downloaded or generated data",
    "data.generator_seed": "seed of the project's generator (source=generate)",
    "data.num_train": "generated training examples",
    "data.num_val": "generated validation examples",
    "data.num_test": "generated test examples",
    "data.max_depth": "generated trees: maximum nesting depth",
    "data.max_args": "generated trees: maximum arguments per operator",
    "data.min_length": "generated trees: shortest token length (exclusive)",
    "data.max_length": "generated trees: longest token length (exclusive)",
    "data.seq_len": "padded sequence length",
    "data.resolution": "image side in pixels",
    "data.tokenize": "True: pixels are 256 tokens (embedding); False: continuous values (linear input)",
    # encoder fields (configs/models.py encoder_defaults)
    "model.mixer": "mixer name, a key of models.MIXERS",
    "model.mixer_kwargs": "keyword arguments of the mixer class (tables below)",
    "model.d_model": "model width",
    "model.num_layers": "residual blocks",
    "model.causal": "causal (left-to-right) mixers; required by causal_lm pretraining",
    "model.prenorm": "True: x + f(norm(x)); False: norm(x + f(x)) (post-norm)",
    "model.dropout": "residual dropout after the mixer and after the channel MLP",
    "model.mlp_ratio": "hidden width of the channel MLP, in multiples of d_model",
    "model.head_hidden": "hidden width of the classification head (0: one linear layer)",
    # mixer fields without a comment in models/*.py
    "MultiHeadAttention.num_heads": "attention heads",
    "MultiHeadAttention.attention_dropout": "dropout on the attention probabilities (uses the dense path)",
    "S4.d_state": "state size N (complex, N/2 stored conjugate pairs)",
    "S4.n_ssm": "copies of (Lambda, P, B) shared over the channels; 0 = one per channel",
    "S4.dt_min": "smallest initial step size (log-uniform init of dt)",
    "S4.dt_max": "largest initial step size",
    "S4.dropout": "dropout after the GELU, one mask per channel (tied over time)",
    "S4.mode": "S4 (Cauchy kernel) or S4D (Vandermonde kernel)",
    "Aaren.num_heads": "heads, each with its own learned query",
    "Aaren.query_init_std": "standard deviation of the learned queries' init",
    "Aaren.score_scale": "scale of the query-key scores",
    "DeltaNet.num_heads": "heads; head width d_model / num_heads for keys and values",
    "DeltaNet.chunk_size": "rows per chunk of the chunkwise (WY/UT) form",
    "DeltaNet.conv_size": "kernel of the causal depthwise short convolutions on q, k, v",
    "DeltaNet.use_gate": "SiLU output gate after the per-head RMSNorm",
    "DeltaNet.conv_bias": "bias on the short convolutions",
    "DeltaNet.norm_eps": "epsilon of the per-head RMSNorm",
    "Hydra.d_state": "SSD state size N",
    "Hydra.head_dim": "head width P; heads = expand * d_model / head_dim",
    "Hydra.expand": "inner width = expand * d_model",
    "Hydra.d_conv": "kernel of the depthwise convolution (centred; causal when causal=True)",
    "Hydra.chunk_size": "chunk length T of the chunked SSD",
    "Hydra.dt_min": "smallest initial step size",
    "Hydra.dt_max": "largest initial step size",
    "Hydra.dt_init_floor": "floor of the initial step sizes",
    "Hydra.norm_eps": "epsilon of the RMSNorm before the gate",
    "RoutingAttention.num_heads": "heads (routing and local together)",
    "RoutingAttention.num_clusters": "clusters C; 0 = ceil(L / window) (or about sqrt(L) with window 0)",
    "RoutingAttention.window": "tokens per cluster w; 0 = ceil(L / C)",
    "RoutingAttention.local_window": "block of the local heads; 0 = the routing window",
    "RoutingAttention.shared_qk": "-1 = shared query/key projection exactly when causal; 0 = separate; 1 = shared",
    "RoutingAttention.ema_decay": "decay of the online k-means centroid update",
    "RoutingAttention.commitment_weight": "weight of the commitment loss added to the task loss",
    "RoutingAttention.kmeans_init_iters": "k-means iterations on the first training batch; 0 = random unit "
                                          "centroids",
    "Combiner.num_heads": "attention heads",
    "Combiner.segment_size": "segment length s; 0 = about sqrt(L)",
}

# Mixer dataclass fields that the encoder sets itself (not configurable through mixer_kwargs).
ENCODER_SET = ("d_model", "causal", "dtype", "parent", "name")


class MissingDescription(ValueError):
    pass


# ------------------------------------------------------------------------------------------------ source parsing

def _line_comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
    """(line number -> the ``#`` comment that ends a line of code, line number -> a comment line of its own)."""
    trailing, alone = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            (alone if not tok.line[:tok.start[1]].strip() else trailing)[tok.start[0]] = text
    return trailing, alone


def _comment_of(node, trailing: dict[int, str], alone: dict[int, str]) -> str | None:
    """The comment that describes a statement: the one ending its last line, else the block of comment lines
    directly above it (no blank line between)."""
    if node.end_lineno in trailing:
        return trailing[node.end_lineno]
    block, line = [], node.lineno - 1
    while line in alone:
        block.insert(0, alone[line])
        line -= 1
    return " ".join(block) or None


def _dotted(node, roots) -> str | None:
    """``c.optimizer.lr`` -> ``optimizer.lr`` when the chain starts at one of ``roots``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in roots and parts:
        return ".".join(reversed(parts))
    return None


def assigned_fields(path: Path, roots=("c",), prefix: str = "") -> tuple[dict[str, str], dict[str, int]]:
    """Fields assigned as ``<root>.a.b = ...`` in ``path``: (key -> trailing comment, key -> first line). A comment
    on the last line of a statement belongs to each of its targets (tuple targets included)."""
    source = path.read_text()
    trailing, alone = _line_comments(source)
    found, order = {}, {}
    statements = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Assign, ast.AnnAssign))]
    for node in sorted(statements, key=lambda n: (n.lineno, n.col_offset)):  # source order, nesting aside
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = []
        for t in targets:
            for elt in (t.elts if isinstance(t, ast.Tuple) else [t]):
                key = _dotted(elt, roots)
                if key:
                    names.append(prefix + key)
        comment = _comment_of(node, trailing, alone)
        for key in names:
            order.setdefault(key, node.lineno)
            if comment and key not in found:
                found[key] = comment
    return found, order


def class_field_comments(cls) -> dict[str, str]:
    """Trailing comments of the annotated fields of ``cls`` and its bases (nearest class first)."""
    out = {}
    for klass in cls.__mro__:
        try:
            path = Path(inspect.getsourcefile(klass))
        except TypeError:
            continue
        if ROOT not in path.resolve().parents:
            continue
        source = path.read_text()
        trailing, alone = _line_comments(source)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.name == klass.__name__:
                for stmt in node.body:
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                        comment = _comment_of(stmt, trailing, alone)
                        if comment:
                            out.setdefault(stmt.target.id, comment)
    return out


# ------------------------------------------------------------------------------------------------ config walking

def flatten(cd, prefix: str = "") -> dict:
    """A ConfigDict's leaves as ``{"a.b": value}``."""
    import ml_collections

    out = {}
    for key, value in cd.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def fmt(value) -> str:
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, dict):
        return "`{}`" if not value else "`" + ", ".join(f"{k}={v!r}" for k, v in value.items()) + "`"
    return f"`{value!r}`"


def _class_default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return fmt(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return fmt(field.default_factory())
    return "(required)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class _Describer:
    """Joins table descriptions with source comments and remembers which table entries were used."""

    def __init__(self):
        self.used = set()

    def __call__(self, table_key: str, comment: str | None, where: str) -> str:
        parts = []
        if table_key in DESCRIPTIONS:
            self.used.add(table_key)
            parts.append(DESCRIPTIONS[table_key])
        if comment:
            parts.append(comment)
        if not parts:
            raise MissingDescription(
                f"config field {where} has no description: add a trailing '# ...' comment where it is assigned, "
                f"or an entry {table_key!r} to DESCRIPTIONS in docs/gen_config_reference.py")
        return "; ".join(parts)


def _own_or_parent(comments: dict[str, str], key: str) -> str | None:
    """The comment of ``key``'s own assignment, else of the nearest enclosing section's (``c.mesh = {...}  # ...``)."""
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        text = comments.get(".".join(parts[:i]))
        if text:
            return text
    return None


def _is_section(config, key: str) -> bool:
    import ml_collections

    node = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, ml_collections.ConfigDict)


def _ordered(keys, order: dict[str, int]):
    return sorted(keys, key=lambda k: (order.get(k, 10**9), k))


TASK_ORDER = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")  # the LRA paper's order; others after


def _task_modules():
    out = []
    rank = lambda p: TASK_ORDER.index(p.stem[4:]) if p.stem[4:] in TASK_ORDER else len(TASK_ORDER)  # noqa: E731
    paths = sorted((ROOT / "configs").glob("lra_*.py"), key=lambda p: (rank(p), p.stem))
    for path in paths:
        module = importlib.import_module(f"configs.{path.stem}")
        default_model = inspect.signature(module.get_config).parameters["arg"].default
        out.append((path, module, default_model))
    return out


def _diff(new: dict, old: dict) -> list[str]:
    return [f"{k}={new[k]!r}" for k in new if k not in old or old[k] != new[k]] + \
           [f"{k} removed" for k in old if k not in new]


# ------------------------------------------------------------------------------------------------ rendering

def render() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import configs as configs_package
    from configs import base, models as model_configs
    import models

    describe = _Describer()
    lines = [
        "# Config reference",
        "",
        f"Generated by `{REGENERATE}` from `configs/*.py` and the mixer classes in `models/`; do not edit by hand.",
        "`tests/test_docs.py` fails when this file differs from what the script writes. Descriptions are the",
        "comments where the fields are assigned in the configs and the mixer classes, and a table in the script.",
        "",
        "A run is configured by one task config and a model name, `--config=configs/lra_<task>.py:<model>[,small]`"
        + (" (or by name, `--config=lra_<task>:<model>`)" if hasattr(configs_package, "resolve") else "") + ";",
        "every field below can be overridden on the command line, e.g. `--config.optimizer.lr=3e-4` or",
        "`--config.model.mixer_kwargs.num_heads=4`. Configs are locked: an override of a field that does not exist",
        "is an error naming it.",
        "",
        "Contents: [shared fields](#shared-fields-configsbasepy) · [task data fields](#task-data-fields) ·",
        "[what each task sets per model](#what-each-task-config-sets-per-model) ·",
        "[encoder fields](#encoder-fields-configsmodelspy) · [mixer fields](#mixer-fields-modelmixer_kwargs)",
        "",
    ]

    # shared fields
    base_config = base.get_config()
    base_cfg = flatten(base_config)
    comments, order = assigned_fields(ROOT / "configs" / "base.py")
    # sections (``c.wandb = ConfigDict()``) get a row of their own when their assignment has a comment
    sections = [k for k in comments if k not in base_cfg and _is_section(base_config, k)]
    lines += ["## Shared fields (`configs/base.py`)", "",
              "Every task config starts from these; `data` and `model` are filled by the task config.", "",
              "| field | default | description |", "|---|---|---|"]
    for key in _ordered(list(base_cfg) + sections, order):
        if key in sections:
            lines.append(f"| `{key}` | (section) | {_cell(comments[key])} |")
            continue
        comment = comments.get(key) or (None if key in DESCRIPTIONS else _own_or_parent(comments, key))
        text = describe(key, comment, f"'{key}' (configs/base.py)")
        lines.append(f"| `{key}` | {fmt(base_cfg[key])} | {_cell(text)} |")
    lines.append("")

    # task data fields
    tasks = _task_modules()
    lines += ["## Task data fields", "",
              "`config.data`, per task config. *default* is the config with its default model; *small* the `small`",
              "preset (a CPU-sized run), shown where it differs. Formats and generators: [data.md](data.md).", ""]
    for path, module, default_model in tasks:
        cfg = module.get_config(default_model)
        small = flatten(module.get_config(f"{default_model},small").data)
        data = flatten(cfg.data)
        own_comments, own_order = assigned_fields(path)
        # a field with no comment in this file (Path-X inherits Pathfinder's fields) and no entry in DESCRIPTIONS
        # takes the comment of another task config that has one
        others = {}
        for other_path, _, _ in tasks:
            if other_path != path:
                for k, v in assigned_fields(other_path)[0].items():
                    others.setdefault(k, v)
        lines += [f"### {cfg.task} (`configs/{path.name}`, default model `{default_model}`)", "",
                  "| field | default | small | description |", "|---|---|---|---|"]
        for key in _ordered(data, {k[len("data."):]: v for k, v in own_order.items()}):
            full = f"data.{key}"
            comment = own_comments.get(full) or (None if full in DESCRIPTIONS else others.get(full))
            text = describe(full, comment, f"'data.{key}' ({path.name})")
            small_value = fmt(small[key]) if key in small and small[key] != data[key] else ""
            lines.append(f"| `{key}` | {fmt(data[key])} | {small_value} | {_cell(text)} |")
        lines.append("")

    # per-task, per-model settings
    model_names = list(model_configs.MODELS)
    rule = " (`settings_rule` says what they follow)" if "settings_rule" in base_cfg else ""
    lines += ["## What each task config sets per model", "",
              "For each task and model (`--config=configs/lra_<task>.py:<model>`): the model fields that differ from",
              "the model's own defaults (the encoder and mixer tables below), the training fields that differ from",
              f"`configs/base.py`{rule}, and the data fields that differ from the task's default model.", ""]
    for path, module, default_model in tasks:
        default_data = flatten(module.get_config(default_model).data)
        lines += [f"### {module.get_config(default_model).task}", "",
                  "| model | model fields | training fields | data fields |", "|---|---|---|---|"]
        for name in model_names:
            cfg = module.get_config(name)
            flat = flatten(cfg)
            model_diff = _diff(flatten(cfg.model), flatten(model_configs.get(name)))
            train = {k: v for k, v in flat.items() if not k.startswith(("data.", "model.")) and k != "task"}
            train_diff = _diff(train, {k: v for k, v in base_cfg.items() if k != "task"})
            data_diff = _diff(flatten(cfg.data), default_data)
            cells = [", ".join(f"`{d}`" for d in diff) or "-" for diff in (model_diff, train_diff, data_diff)]
            lines.append(f"| `{name}` | " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")

    # encoder fields
    enc_comments, enc_order = assigned_fields(ROOT / "configs" / "models.py", roots=("m",), prefix="model.")
    per_model = {name: model_configs.get(name) for name in model_names}
    enc_keys = [k for k in flatten(per_model[model_names[0]]) if not k.startswith("mixer_kwargs.")]
    for name in model_names:
        for k in flatten(per_model[name]):
            if not k.startswith("mixer_kwargs.") and k not in enc_keys:
                enc_keys.append(k)
    if "mixer_kwargs" not in enc_keys:
        enc_keys.append("mixer_kwargs")
    lines += ["## Encoder fields (`configs/models.py`)", "",
              "`config.model`: the shared encoder (`models/encoder.py`) around the mixer, with each model's defaults",
              "(`configs/models.get(name)`, before a task config changes them).", "",
              "| field | description | " + " | ".join(f"`{n}`" for n in model_names) + " |",
              "|---|---|" + "---|" * len(model_names)]
    for key in _ordered(enc_keys, {k[len("model."):]: v for k, v in enc_order.items()}):
        comment = None if key == "mixer_kwargs" else enc_comments.get(f"model.{key}")  # that line is about its dict
        text = describe(f"model.{key}", comment, f"'model.{key}' (configs/models.py)")
        if key == "mixer_kwargs":
            values = ["(below)"] * len(model_names)
        else:
            flat_models = [flatten(per_model[n]) for n in model_names]
            values = [fmt(f[key]) if key in f else "-" for f in flat_models]
        lines.append(f"| `{key}` | {_cell(text)} | " + " | ".join(values) + " |")
    lines.append("")

    # mixer fields
    lines += ["## Mixer fields (`model.mixer_kwargs`)", "",
              "Per model: the `mixer_kwargs` its config sets (overridable) and the mixer class's other fields, which",
              "the config does not expose and which stay at the class default. `d_model`, `causal` and `dtype` are",
              "set by the encoder from `model.d_model`, `model.causal` and `model.dtype`. The math of each mixer:",
              "[mixers.md](mixers.md).", ""]
    for name in model_names:
        m = per_model[name]
        cls = models.MIXERS[m.mixer]
        field_comments = class_field_comments(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = dict(m.mixer_kwargs)
        kwargs = {k: kwargs[k] for k in sorted(kwargs, key=lambda k: (list(fields).index(k) if k in fields else -1))}
        for key in kwargs:
            if key not in fields:
                raise ValueError(f"configs/models.py: mixer_kwargs key {key!r} of model {name!r} is not a field of "
                                 f"{cls.__module__}.{cls.__name__}")
        lines += [f"### `{name}` (`{cls.__module__}.{cls.__name__}`)", "",
                  "| field | default | description |", "|---|---|---|"]

        def table_key(field):
            for klass in cls.__mro__:
                if f"{klass.__name__}.{field}" in DESCRIPTIONS:
                    return f"{klass.__name__}.{field}"
            return f"{cls.__name__}.{field}"

        for key, value in kwargs.items():
            text = describe(table_key(key), field_comments.get(key), f"'{key}' of mixer {cls.__name__} ({name})")
            lines.append(f"| `{key}` | {fmt(value)} | {_cell(text)} |")
        others = [f for f in fields if f not in kwargs and f not in ENCODER_SET]
        if others:
            lines += ["", "Not in the config (class defaults):", "",
                      "| field | class default | description |", "|---|---|---|"]
            for key in others:
                text = describe(table_key(key), field_comments.get(key), f"'{key}' of mixer {cls.__name__}")
                lines.append(f"| `{key}` | {_class_default(fields[key])} | {_cell(text)} |")
        lines.append("")

    unused = sorted(set(DESCRIPTIONS) - describe.used)
    if unused:
        raise MissingDescription(f"DESCRIPTIONS in docs/gen_config_reference.py has entries for fields that no "
                                 f"longer exist: {unused}; remove them")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date; run: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    tmp = OUTPUT.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(OUTPUT)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
