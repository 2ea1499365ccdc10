"""Fixtures shared by the integration tests (the session's Ray is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import fake_server


@pytest.fixture(scope="module")
def fake_target() -> Iterator[str]:
    """A fake V2 server answering every call after 1 ms, one per module: where the model
    is not the point."""
    child, address = fake_server("--delay-ms", "1")
    yield address
    child.stop()
