"""Shared test helpers: float64 switch, the fixtures directory, a small task spec."""
from __future__ import annotations

from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"  # written by tests/fixtures/make_fixtures.py


def pytest_configure(config):
    # Tests compile the same small functions many times (each run builds its own jitted steps): a persistent
    # compilation cache, private to this test session, makes the repeats cheap.
    import tempfile
    cache = Path(tempfile.mkdtemp(prefix="lra-test-jax-cache-"))
    config._lra_jax_cache = cache
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    import shutil
    cache = getattr(config, "_lra_jax_cache", None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def x64():
    """Run a test with float64 enabled, restoring the previous setting afterwards."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"LRA fixtures not found at {FIXTURES}: rebuild them with python tests/fixtures/make_fixtures.py")
    return FIXTURES
