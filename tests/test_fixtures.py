"""The committed fixtures are exactly what tests/fixtures/make_fixtures.py writes, and they are whole."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SCRIPT = FIXTURES / "make_fixtures.py"


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p != root / SCRIPT.name}


def test_make_fixtures_rewrites_the_committed_files_byte_identically(tmp_path):
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], check=True, cwd=tmp_path)
    made, committed = _files(tmp_path), _files(FIXTURES)
    assert sorted(made) == sorted(committed), sorted(set(made) ^ set(committed))
    changed = [name for name in made if made[name] != committed[name]]
    assert not changed, f"fixtures differ from make_fixtures.py's output: {changed}"
    assert len(made) > 50 and b"" in made.values()  # the release's empty PNG is there, and everything else
