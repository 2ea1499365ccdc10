"""Every plan in examples/ is valid, so the README's examples run as written."""

from pathlib import Path

import pytest

from coordinator.plan import load_plan_file

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


def test_there_are_example_plans():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_plan_is_valid(path):
    plan = load_plan_file(path).validate()
    assert plan.name and plan.thresholds
