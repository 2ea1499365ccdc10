"""`model-server serve --workers 2`: two processes on one port, one READY line, one
/metrics endpoint adding up both, SIGTERM passed on, and a dead worker stopping it all.

One two-worker server for the module, on the session's model cache; the other starts
here fail or are stopped before TensorFlow is loaded, so they cost little.
"""

from __future__ import annotations

import os
import re
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.api import grpc_predict_v2_pb2_grpc as pb_grpc
from model_server.data import load_sample, split_sample
from tests.support.processes import Child, python

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

READY = r"^READY port=(\d+) accuracy=(\d\.\d{4})$"
METRICS = r"metrics on http://127\.0\.0\.1:(\d+)/metrics"
TIMEOUT = 30
CONNECTIONS = 8


@dataclass
class Workers:
    child: Child
    port: int
    metrics_port: int


def workers_argv(*flags: str) -> list[str]:
    return python("-m", "model_server", "serve", "--workers", "2", *flags)


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def workers(model_cache: str) -> Iterator[Workers]:
    child = Child(workers_argv("--port", "0", "--cache-dir", model_cache))
    try:
        match = child.wait_for_line(READY, timeout_s=150)
        metrics = child.wait_for_line(METRICS, stream="stderr", timeout_s=10)
        yield Workers(child, int(match.group(1)), int(metrics.group(1)))
        pids = children_of(child.process.pid)
    finally:
        code = child.stop(signal.SIGTERM)
    assert code == 0, child.text("stderr")[-4000:]
    assert len(child.stdout) == 1, child.stdout  # READY once, from the parent
    assert len(pids) == 2
    assert not any(alive(pid) for pid in pids)
    log = child.text("stderr")
    for index in (0, 1):
        assert f"worker-{index} model_server.server: stopped" in log


def request_for(images: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="input", datatype="UINT8", shape=[len(images), 784])
    request.raw_input_contents.append(images.reshape(len(images), 784).tobytes())
    return request


def requests_ok(metrics_port: int) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == "model_server_requests_total" and found.labels == {
                "method": "ModelInfer",
                "code": "OK",
            }:
                return found.value
    return 0.0


def test_both_workers_serve_one_port_and_metrics_add_up(workers: Workers) -> None:
    for index in (0, 1):
        # A worker logs "serving" just after it tells the parent it is ready, so the line
        # may come a moment after READY: wait for it (with a deadline) rather than race it.
        workers.child.wait_for_line(
            rf"worker-{index} model_server\.server: serving model 'mnist'",
            stream="stderr",
            timeout_s=60,
        )
    assert len(children_of(workers.child.process.pid)) == 2
    digits = split_sample(load_sample()).test
    before = requests_ok(workers.metrics_port)
    calls = 0
    for connection in range(CONNECTIONS):
        # Each channel its own connection, which the kernel gives to one of the workers.
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(f"127.0.0.1:{workers.port}", options=options) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            images = digits.images[connection * 20 : (connection + 1) * 20]
            reply = stub.ModelInfer(request_for(images), timeout=TIMEOUT)
            probabilities = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(-1, 10)
            labels = digits.labels[connection * 20 : (connection + 1) * 20]
            assert (probabilities.argmax(axis=1) == labels).mean() >= 0.8
            metadata = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=TIMEOUT)
            assert "workers=2" in metadata.extensions
            calls += 1
    assert requests_ok(workers.metrics_port) - before == calls


def test_a_taken_port_is_a_clear_error_and_exit_1(workers: Workers) -> None:
    child = Child(workers_argv("--port", str(workers.port), "--no-metrics"))
    assert child.wait(timeout_s=60) == 1
    assert f"cannot listen on 127.0.0.1:{workers.port}" in child.text("stderr")
    assert child.stdout == []


def test_sigterm_while_the_workers_start_is_passed_on_and_exits_0(tmp_path: Path) -> None:
    child = Child(workers_argv("--port", "0", "--no-metrics", "--cache-dir", str(tmp_path)))
    try:
        for index in (0, 1):
            child.wait_for_line(rf"worker-{index} .*listening on", stream="stderr", timeout_s=60)
    finally:
        code = child.stop(signal.SIGTERM)
    assert code == 0, child.text("stderr")[-4000:]
    assert child.stdout == []


def test_a_worker_that_dies_stops_the_others_and_exits_1(tmp_path: Path) -> None:
    child = Child(workers_argv("--port", "0", "--no-metrics", "--cache-dir", str(tmp_path)))
    try:
        for index in (0, 1):
            child.wait_for_line(rf"worker-{index} .*listening on", stream="stderr", timeout_s=60)
        pids = children_of(child.process.pid)
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        code = child.wait(timeout_s=60)
    finally:
        child.stop(signal.SIGKILL)
    assert code == 1
    assert re.search(r"worker \d exited with code -9 before it was ready", child.text("stderr"))
    assert not alive(pids[1])  # the other one was stopped too
    assert child.stdout == []
