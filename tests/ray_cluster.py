"""A Ray cluster on loopback for the tests (ray.cluster_utils.Cluster): every node on
127.0.0.1, its own temp folder (and so its own ``ray_current_cluster`` file: a stale one makes a
bare ``ray.init()`` join a dead cluster), the environment put back afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STORE = 80 << 20
"""Object store per node."""


@contextmanager
def loopback_cluster(workers: int = 0, env: dict[str, str] | None = None) -> Iterator[tuple[Any, list[Any]]]:
    """A head node (2 CPUs) and ``workers`` more; ``env`` is added to the environment the nodes
    start with. Yields the cluster and its worker nodes."""
    base = tempfile.mkdtemp(prefix="asrhub-ray-", dir="/tmp")  # short: Ray's socket paths
    temp = os.path.join(base, "ray")
    os.makedirs(temp)
    saved = dict(os.environ)
    os.environ.update(
        {
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every node on 127.0.0.1 (read at import)
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TMPDIR": base,  # this run's own temp folder and ray_current_cluster file
            **(env or {}),
        }
    )
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "object_store_memory": STORE,
            "include_dashboard": False,
            "temp_dir": temp,
        },
    )
    nodes = [c.add_node(num_cpus=2, object_store_memory=STORE) for _ in range(workers)]
    c.wait_for_nodes()
    assert c.address.startswith("127.0.0.1:"), c.address  # nothing leaves loopback
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(base, ignore_errors=True)
        os.environ.clear()
        os.environ.update(saved)
