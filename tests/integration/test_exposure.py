"""Nothing opens a door off this machine: during a run (session Ray, agents, the bundled
MNIST server, the coordinator's /metrics) every listening socket of this process and its
descendants is on loopback, and Ray refuses calls that lack its authentication token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from pathlib import Path

import grpc
import pytest

from coordinator.plan import FleetPlan, LoadPlan, OutputPlan, Plan
from coordinator.run import Run, RunOptions

pytestmark = pytest.mark.integration

LISTEN = "0A"  # TCP state in /proc/net/tcp


def descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue  # gone meanwhile
            parents[int(entry.name)] = int(fields[1])
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in found]
        found.update(children)
        frontier.extend(children)
    return found


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))  # 4 little-endian words
    return ipaddress.IPv6Address(words)


def listening(pids: set[int]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket in LISTEN state owned by `pids`."""
    by_inode: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                hex_address, hex_port = fields[1].split(":")
                by_inode[fields[9]] = (str(_address(hex_address)), int(hex_port, 16))
    found = []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for link in links:
            inode = link[len("socket:[") : -1] if link.startswith("socket:[") else None
            if inode in by_inode:
                found.append((name, *by_inode[inode]))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_address_parsing() -> None:
    assert str(_address("0100007F")) == "127.0.0.1"
    assert is_loopback(str(_address("0000000000000000FFFF00000100007F")))  # ::ffff:127.0.0.1
    assert not is_loopback(str(_address("00000000")))  # 0.0.0.0: every interface
    assert not is_loopback("::")


def test_every_socket_a_run_listens_on_is_on_loopback(ray_address: str, tmp_path: Path) -> None:
    plan = Plan(
        load=LoadPlan(rate=20, duration_s=30, max_send_lag_s=5.0),
        fleet=FleetPlan(agents=1, agent_cpus=0.5),
        outputs=OutputPlan(dir=str(tmp_path / "run"), metrics_port=0),
    )

    async def scenario() -> list[tuple[str, str, int]]:
        run = Run(plan, RunOptions())
        task = asyncio.ensure_future(run.execute())
        try:
            while run.fleet is None or run.state.requests == 0:
                assert not task.done(), task.result()
                await asyncio.sleep(0.05)  # polling period
            return listening(descendants(os.getpid()))
        finally:
            run.stop()
            await task

    sockets = asyncio.run(scenario())
    names = {name for name, _, _ in sockets}
    # Ray's own servers, an agent, the bundled model server and this process's /metrics.
    assert {"gcs_server", "raylet"} <= names, sockets
    assert any(name.startswith("ray::Agent") for name in names), sockets
    assert len(sockets) >= 6, sockets
    exposed = [s for s in sockets if not is_loopback(s[1])]
    assert not exposed, exposed


def test_ray_refuses_calls_without_its_token(ray_address: str) -> None:
    """The session's Ray (started as the embedded one is) checks `authorization: Bearer`."""
    token = Path(
        os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token")
    ).read_text()
    method = "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo"  # harmless: lists the nodes
    with grpc.insecure_channel(ray_address) as channel:
        call = channel.unary_unary(method)
        for metadata in ((), (("authorization", "Bearer not-the-token"),)):
            with pytest.raises(grpc.RpcError) as refused:
                call(b"", timeout=10, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert call(b"", timeout=10, metadata=(("authorization", f"Bearer {token.strip()}"),))
