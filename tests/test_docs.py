"""The docs inside the repository: the config reference is current, and nothing points outside the repository."""
from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GENERATOR = REPO / "docs" / "gen_config_reference.py"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------ config reference

def test_config_reference_is_current():
    gen = _generator()
    expected = gen.render()
    committed = gen.OUTPUT.read_text() if gen.OUTPUT.is_file() else ""
    if committed != expected:
        old, new = committed.splitlines(), expected.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        pytest.fail(f"docs/config_reference.md is out of date (first difference at line {first + 1}: "
                    f"file {old[first] if first < len(old) else '<end>'!r}, configs "
                    f"{new[first] if first < len(new) else '<end>'!r}); regenerate it with: {gen.REGENERATE}")


def test_reference_lists_every_field_with_its_default():
    """Every leaf of the base config, of each task's data section and of each model's section appears in the
    reference with its default (independently of how the generator lays the tables out)."""
    from configs import base, models as model_configs

    gen = _generator()
    text = gen.render()
    for key, value in gen.flatten(base.get_config()).items():
        assert f"| `{key}` | {gen.fmt(value)} |" in text, key
    for path, module, default_model in gen._task_modules():
        for key, value in gen.flatten(module.get_config(default_model).data).items():
            assert f"| `{key}` | {gen.fmt(value)} |" in text, (path.name, key)
    for name in model_configs.MODELS:
        m = model_configs.get(name)
        for key, value in m.mixer_kwargs.items():
            assert f"| `{key}` | {gen.fmt(value)} |" in text, (name, key)
        assert f"### `{name}` (" in text


def test_a_new_config_field_is_picked_up_and_must_be_described(monkeypatch):
    """A field added to configs/base.py appears without touching the generator, and one without a description is
    an error naming it (so the reference cannot silently lack a field)."""
    from configs import base

    gen = _generator()
    original = base.get_config

    def with_new_field():
        c = original()
        c.unlock()
        c.brand_new_field = 7
        return c

    monkeypatch.setattr(base, "get_config", with_new_field)
    with pytest.raises(gen.MissingDescription, match="brand_new_field"):
        gen.render()
    monkeypatch.setitem(gen.DESCRIPTIONS, "brand_new_field", "a field added by this test")
    assert "| `brand_new_field` | `7` | a field added by this test |" in gen.render()


def test_stale_description_entries_are_refused(monkeypatch):
    gen = _generator()
    monkeypatch.setitem(gen.DESCRIPTIONS, "optimizer.no_such_field", "describes nothing")
    with pytest.raises(gen.MissingDescription, match="optimizer.no_such_field"):
        gen.render()


def test_comments_are_read_from_the_config_source(tmp_path):
    gen = _generator()
    src = tmp_path / "cfg.py"
    src.write_text("def get_config():\n"
                   "    c = make()\n"
                   "    c.alpha = 1  # the alpha\n"
                   "    c.sub.beta = dict(\n"
                   "        x=1)  # a multi-line value\n"
                   "    c.a, c.b = 1, 2  # both\n"
                   "    c.plain = 3\n"
                   "    # a comment block\n"
                   "    # above it\n"
                   "    c.led = 4\n"
                   "    # a stray comment\n"
                   "\n"
                   "    c.after_blank = 5\n"
                   "    if True:\n"
                   "        c.nested = 6  # nested\n")
    comments, order = gen.assigned_fields(src)
    assert comments == {"alpha": "the alpha", "sub.beta": "a multi-line value", "a": "both", "b": "both",
                        "led": "a comment block above it", "nested": "nested"}
    assert list(order) == ["alpha", "sub.beta", "a", "b", "plain", "led", "after_blank", "nested"]


# ------------------------------------------------------------------------------------------------ references

# Paths of material that lives beside the checkout (design notes, fixtures) and absolute paths of one machine.
OUTSIDE = [
    (re.compile(r"\.\./shared\b"), "a path beside the checkout"),
    (re.compile(r"\bshared/(design|fixtures)\b"), "the shared design notes or fixtures"),
    (re.compile(r"""["']shared["']\s*/\s*["'](design|fixtures)["']"""), "a path built to the shared folder"),
    (re.compile(r"(?<![\w.~-])/wor[k]/"), "an absolute path of one machine"),
]
# Design-note names: a mention must resolve to a file of the repository (beside the mentioning file or from the root).
NOTE_NAMES = re.compile(r"(?<![\w-])((?:[\w.-]+/)*(?:models|architecture|data)\.md)\b")
TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".cfg", ".toml", ".txt", ".yaml", ".yml", ".sh", ".json", ".ini", ""}


def _repository_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files (git), or a walk without .git/.venv when git is unavailable."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout.decode()
        names = sorted({n for n in out.split("\0") if n})
        return [REPO / n for n in names if (REPO / n).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", "build", "dist", "lra_data", "runs"}
        return sorted(p for p in REPO.rglob("*")
                      if p.is_file() and not skip.intersection(p.relative_to(REPO).parts))


def outside_references(files, root: Path = REPO) -> list[str]:
    """``file:line: what: text`` for every reference outside the repository ``root`` in ``files``."""
    found = []
    for path in files:
        if path.suffix not in TEXT_SUFFIXES or path.stat().st_size > 5_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        rel = path.relative_to(root).as_posix()
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, what in OUTSIDE:
                if pattern.search(line):
                    found.append(f"{rel}:{number}: {what}: {line.strip()[:160]}")
            for match in NOTE_NAMES.finditer(line):
                name = match.group(1)
                if not ((path.parent / name).is_file() or (root / name).is_file()):
                    found.append(f"{rel}:{number}: {name} is not a file of the repository (a design note outside "
                                 f"it?): {line.strip()[:160]}")
    return found


def test_no_reference_outside_the_repository():
    files = _repository_files()
    assert any(p.name == "README.md" for p in files) and any(p.suffix == ".py" for p in files)
    found = outside_references(files)
    assert not found, "references to files outside the repository (point to docs/ instead):\n" + "\n".join(found)


def test_reference_scan_finds_what_it_looks_for(tmp_path):
    """The scan is not vacuous: each kind of outside reference in a planted file is reported with file:line, and
    references to files of the (planted) repository are not."""
    # written with placeholders, so that this file itself holds none of what it plants
    plant = lambda text: text.replace("<SH>", "shared").replace("<W>", "work").replace("<M>", "models").replace(
        "<D>", "data")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / plant("<D>.md")).write_text("# data\n")
    (tmp_path / "docs" / "mixers.md").write_text("# mixers\n")
    planted = tmp_path / "docs" / "notes.md"
    planted.write_text(plant("fine line\n"
                             "see ../<SH>/design/<M>.md section 2\n"
                             "FIXTURES = REPO.parent / '<SH>' / 'fixtures'\n"
                             "cd /<W>/main\n"
                             "as in <M>.md 6(f)\n"
                             "see [<D>](<D>.md), docs/mixers.md and docs/<D>.md\n"
                             "--workdir=/mnt/<SH>/run\n"))
    elsewhere = tmp_path / "benchmarks" / "results.md"
    elsewhere.parent.mkdir()
    elsewhere.write_text(plant("Compared with (<D>.md section 7)\nsee docs/<D>.md\n"))
    found = outside_references([planted, elsewhere], root=tmp_path)
    where = sorted({":".join(f.split(":")[:2]) for f in found})
    assert where == ["benchmarks/results.md:1", "docs/notes.md:2", "docs/notes.md:3", "docs/notes.md:4",
                     "docs/notes.md:5"], found


# ------------------------------------------------------------------------------------------------ links

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(files, root: Path = REPO) -> list[str]:
    """``file:line: target`` for every relative Markdown link whose file, or whose #anchor in it, does not exist."""
    found = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for target in LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                name, _, anchor = target.partition("#")
                dest = (path.parent / name).resolve() if name else path
                ok = dest.is_file()
                if ok and anchor and dest.suffix == ".md":
                    headings = [l.lstrip("#") for l in dest.read_text(encoding="utf-8").splitlines()
                                if l.startswith("#")]
                    ok = anchor in {_anchor(h) for h in headings}
                if not ok:
                    found.append(f"{path.relative_to(root).as_posix()}:{number}: {target}")
    return found


def test_links_in_the_docs_and_readme_resolve():
    files = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
    assert len(files) >= 6
    found = broken_links(files)
    assert not found, "links to files or headings that do not exist:\n" + "\n".join(found)


def test_link_check_finds_broken_links(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n## Some section (`x.py`)\n")
    doc = tmp_path / "b.md"
    doc.write_text("[ok](a.md) [ok](a.md#some-section-xpy) [web](https://example.org/x)\n"
                   "[missing](nope.md)\n[bad anchor](a.md#nothing)\n[own](#title-of-b)\n# Title of b\n")
    assert broken_links([doc], root=tmp_path) == ["b.md:2: nope.md", "b.md:3: a.md#nothing"]
