"""A multi-node Ray cluster on this machine, for tests: `python -m tests.support.cluster`.

Starts a head and `--workers` worker nodes with `ray.cluster_utils.Cluster`, every node on
127.0.0.1 (each its own raylet, as separate machines would have), prints
`READY address=<gcs address> head=<node id> workers=<id,id,...>` and then obeys stdin:
`remove K` kills worker K's node (prints `REMOVED <node id>`), `quit` (or end of input)
shuts the whole cluster down. Worker nodes carry the custom resource `loadgen: 1`.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus", type=float, default=1)
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={
            "num_cpus": args.cpus,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
        },
    )
    workers = [
        cluster.add_node(num_cpus=args.cpus, node_ip_address="127.0.0.1", resources={"loadgen": 1})
        for _ in range(args.workers)
    ]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    head = cluster.head_node.node_id
    ray.shutdown()
    ids = ",".join(w.node_id for w in workers)
    print(f"READY address={cluster.address} head={head} workers={ids}", flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["remove"]:
                node = workers[int(words[1])]
                cluster.remove_node(node, allow_graceful=False)
                print(f"REMOVED {node.node_id}", flush=True)
            elif words[:1] == ["quit"]:
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
