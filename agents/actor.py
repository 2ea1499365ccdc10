"""The Ray actor that runs one agent's load loop and streams its interval reports.

`Agent.run` is an async generator: Ray streams each yielded report to the coordinator as
soon as it is produced (a streaming generator), so the coordinator sees the run live and
keeps every interval received even if this agent dies later.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import ray

from agents.engine import LoadEngine
from agents.payload import build_payloads
from agents.spec import AgentSpec
from agents.target import Target
from model_server.data import load_sample


class AgentActor:
    def __init__(self, index: int) -> None:
        self.index = index
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s agent-%(levelname)s %(message)s"
        )

    def where(self) -> dict[str, Any]:
        """Where this agent runs: Ray node id and address, actor id, process id."""
        ctx = ray.get_runtime_context()
        return {
            "index": self.index,
            "actor_id": ctx.get_actor_id(),
            "node_id": ctx.get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
        }

    async def run(self, spec: dict[str, Any]) -> AsyncIterator[bytes]:
        """Run the load described by `spec` (an AgentSpec as a dict); yield serialized reports."""
        s = AgentSpec.from_dict(spec)
        where = self.where()
        target = Target(s.target, tls=s.tls, metadata=s.metadata)
        try:
            tensors = await target.describe(
                s.model_name,
                s.model_version,
                s.connect_timeout_s,
                input_name=s.input_name,
                output_name=s.output_name,
                datatype=s.datatype,
            )
            payloads = build_payloads(
                load_sample(),
                tensors,
                batch_size=s.batch_size,
                seed=s.seed,
                order=s.digits,
                contents=s.contents,
            )
            engine = LoadEngine(
                s,
                target.infer,
                payloads,
                tensors,
                agent_id=where["actor_id"],
                node_id=where["node_id"],
            )
            async for report in engine.run():
                yield report.SerializeToString()
        finally:
            await target.close()


Agent = ray.remote(max_restarts=0, max_task_retries=0)(AgentActor)
