"""The metric record: valid JSON always (non-finite values as null, named), resume truncation."""
import json

import pytest

from lra import metrics


def _strict(line):
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in {line}"))


def test_nonfinite_values_are_null_and_named(tmp_path):
    writer = metrics.MetricWriter(tmp_path, enabled=True)
    writer.write(3, "train", {"loss": float("nan"), "accuracy": 0.5, "grad_norm": float("inf")})
    writer.close()
    (row,) = [_strict(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert row == {"step": 3, "split": "train", "loss": None, "accuracy": 0.5, "grad_norm": None,
                   "nonfinite": ["loss", "grad_norm"]}


def test_truncate_forgets_later_steps_the_old_test_record_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 2, "split": "train", "loss": 1.0}, {"step": 4, "split": "val", "loss": 0.9},
            {"step": 2, "split": "test", "loss": 0.8}, {"step": 6, "split": "train", "loss": 0.7}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 8, "spl')
    writer = metrics.MetricWriter(tmp_path, enabled=True)
    writer.truncate_after(4)
    writer.close()
    assert [_strict(line) for line in path.read_text().splitlines()] == rows[:2]


def test_a_disabled_writer_writes_nothing(tmp_path):
    writer = metrics.MetricWriter(tmp_path, enabled=False)
    writer.write(1, "train", {"loss": 1.0})
    writer.truncate_after(0)
    writer.close()
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "tb").exists()
