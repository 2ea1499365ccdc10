"""Shared fixtures: one Ray instance per test session, loopback only, no usage stats.

Every Ray process inherits RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (so a local instance stays
on 127.0.0.1) and RAY_USAGE_STATS_ENABLED=0 from here. Ray's token authentication stays
on: children that join the session's Ray read the same token file.
"""

from __future__ import annotations

import os

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_AUTH_MODE"] = "token"  # what the embedded Ray uses; tested in test_exposure


@pytest.fixture(scope="session", autouse=True)
def stop_leftover_children():
    """Stop children a failed test left running (SIGTERM first: a coordinator then stops
    its own Ray and model server)."""
    yield
    from tests.support.processes import STARTED

    for child in STARTED:
        if child.process.poll() is None:
            try:
                child.stop(timeout_s=30)
            except Exception:  # a child that will not die must not hide the test results
                child.process.kill()


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> str:
    """One model cache for the session, so the bundled server trains at most once."""
    path = str(tmp_path_factory.mktemp("model-cache"))
    os.environ["RAYSIEGE_CACHE_DIR"] = path
    return path


@pytest.fixture(scope="session")
def ray_address() -> str:
    """The session's Ray: started once in this process; children join it with --address."""
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
