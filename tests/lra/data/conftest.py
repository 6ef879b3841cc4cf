"""Every data test leaves the fixtures (tests/fixtures) untouched."""
from pathlib import Path

import pytest


def _files(root: Path) -> list:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())


@pytest.fixture(autouse=True)
def _fixtures_untouched(fixtures_dir):
    """No data test may write (a cache, a manifest, a run) into the fixtures: a reader that caches beside its data
    must be given a copy."""
    before = _files(fixtures_dir)
    yield
    after = _files(fixtures_dir)
    assert after == before, f"a test changed tests/fixtures: {sorted(set(after) ^ set(before))[:5]}"
