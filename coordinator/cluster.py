"""Ray: start the embedded local instance or join a cluster, and place the agents.

The embedded instance stays on loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the
environment of every Ray process, set here before Ray starts) and keeps Ray's token
authentication on. Agents are placed with one placement-group bundle each, SPREAD over
the nodes, so a multi-node cluster gets them on distinct machines.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from coordinator.errors import ClusterError

log = logging.getLogger(__name__)

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast with a clear error when nothing listens at a Ray address (ray.init would
    retry for minutes)."""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return  # "auto", "ray://..." and the like: let Ray interpret them
    try:
        socket.create_connection(
            (host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s
        ).close()
    except OSError as error:
        raise ClusterError(
            f"no Ray cluster answers at {address}: {error.strerror or error}"
        ) from error


def connect(address: str | None, *, agents: int, agent_cpus: float) -> tuple[str, bool]:
    """Join `address` or start an embedded local Ray.

    Returns a description for the log and whether this call started Ray (so that only
    the one who started it shuts it down); an already connected Ray is reused.
    """
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)
    if not address:  # token authentication on, whatever a future Ray's default
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if ray.is_initialized():
        return "the Ray this process is already connected to", False
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, log_to_driver=False)
            return f"the Ray cluster at {address}", True
        if os.environ["RAY_AUTH_MODE"] != "token":
            log.warning(
                "RAY_AUTH_MODE=%s: the embedded Ray accepts calls from anyone on this machine",
                os.environ["RAY_AUTH_MODE"],
            )
        # Logical CPUs: enough for the fleet even when it outnumbers the cores.
        cpus = max(os.cpu_count() or 1, int(agents * agent_cpus + 0.999))
        # address='local': always a new instance, never a cluster found on the machine.
        ray.init(address="local", include_dashboard=False, num_cpus=cpus, log_to_driver=False)
        return f"an embedded local Ray ({cpus} CPUs)", True
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = address or "a local instance"
        raise ClusterError(f"could not start or join Ray ({where}): {error}") from error


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


@dataclass
class Fleet:
    actors: list[Any]
    placement_group: Any
    where: list[dict[str, Any]]
    agent_cpus: float = 1.0

    def release(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        remove_placement_group(self.placement_group)


def head_node_id() -> str | None:
    import ray

    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return node["NodeID"]
    return None


def bundles_for(
    n: int, *, agent_cpus: float, node_resource: str | None, avoid_head: bool
) -> tuple[list[dict[str, float]], list[dict[str, str]] | None]:
    """One bundle per agent (and a label selector per bundle to keep off the head node)."""
    bundle = {"CPU": agent_cpus}
    if node_resource:
        bundle[node_resource] = 1.0  # each agent takes one unit of the nodes' custom resource
    selectors = None
    if avoid_head and (head := head_node_id()):
        selectors = [{"ray.io/node-id": f"!{head}"} for _ in range(n)]
    return [dict(bundle) for _ in range(n)], selectors


async def place_agents(
    n: int,
    *,
    agent_cpus: float,
    strategy: str = "SPREAD",
    node_resource: str | None = None,
    avoid_head: bool = False,
    timeout_s: float = 60.0,
) -> Fleet:
    """One bundle per agent, one actor per bundle; returns when every actor is up."""
    import asyncio

    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from agents.actor import Agent

    bundles, selectors = bundles_for(
        n, agent_cpus=agent_cpus, node_resource=node_resource, avoid_head=avoid_head
    )
    pg = placement_group(bundles, strategy=strategy, bundle_label_selector=selectors)
    try:
        await asyncio.wait_for(pg.ready(), timeout_s)
    except TimeoutError:
        remove_placement_group(pg)
        resources = ray.cluster_resources()
        have = f"{resources.get('CPU', 0):g} CPUs"
        if node_resource:
            have += f" and {resources.get(node_resource, 0):g} {node_resource!r}"
        where = " off the head node" if avoid_head else ""
        raise ClusterError(
            f"could not place {n} agents ({bundles[0]} each, {strategy}{where}) "
            f"within {timeout_s:.0f} s; the cluster has {have} in {len(ray.nodes())} nodes"
        ) from None
    actors = [
        Agent.options(
            num_cpus=agent_cpus,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=pg, placement_group_bundle_index=i
            ),
        ).remote(i)
        for i in range(n)
    ]
    try:
        where = await asyncio.wait_for(
            asyncio.gather(*(a.where.remote() for a in actors)), timeout_s
        )
    except (TimeoutError, ray.exceptions.RayError) as error:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        remove_placement_group(pg)
        raise ClusterError(f"agents did not start: {error}") from error
    return Fleet(actors=actors, placement_group=pg, where=list(where), agent_cpus=agent_cpus)


async def replace_agent(
    fleet: Fleet, index: int, *, agent_cpus: float, timeout_s: float = 60.0
) -> Any:
    """A new actor for agent `index` in its placement-group bundle (Ray reschedules a bundle
    whose node died onto a live node when one has room)."""
    import asyncio

    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from agents.actor import Agent

    actor = Agent.options(
        num_cpus=agent_cpus,
        scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=fleet.placement_group, placement_group_bundle_index=index
        ),
    ).remote(index)
    fleet.where[index] = await asyncio.wait_for(actor.where.remote(), timeout_s)
    fleet.actors[index] = actor
    return actor
