"""A real multi-node Ray cluster on this one machine, for the fleet tests.

Three nodes on 127.0.0.2, .3 and .4 (Ray rewrites 127.0.0.1 to the host's network address, so
other loopback addresses keep every node distinct and all traffic on loopback). Stopped by its own
processes (ray.cluster_utils.Cluster.shutdown), never `ray stop`, which would kill every Ray
process of the machine, other users' included.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

NODE_ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
# Small nodes: a replica holds 0.5 CPU, so a node fits 4 and no node prestarts many workers.
NODE_ARGS: dict[str, Any] = {"num_cpus": 2, "object_store_memory": 80 * 2**20, "include_dashboard": False}


@contextlib.contextmanager
def ray_cluster() -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    head, *others = NODE_ADDRESSES
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**NODE_ARGS, "node_ip_address": head, "labels": {"gymwire-test": "head"}},
        shutdown_at_exit=True,
    )
    try:
        # The last node offers a custom resource and a label: placement tests use them.
        cluster.add_node(**NODE_ARGS, node_ip_address=others[0], labels={"gymwire-test": "worker"})
        cluster.add_node(**NODE_ARGS, node_ip_address=others[1], resources={"browser": 2}, labels={"gymwire-test": "browser"})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
