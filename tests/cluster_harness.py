"""A search on a simulated multi-node cluster (ray.cluster_utils.Cluster), run as its own process.

    python cluster_harness.py RUN_DIR spread   # 3 nodes, 2 with a declared GPU
    python cluster_harness.py RUN_DIR kill     # same, and a GPU worker node dies mid-search

Prints one JSON line: the trials' nodes and statuses.
"""
import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

from pdsearch.searching.driver import run_search  # noqa: E402

from configs import tiny_config  # noqa: E402


def kill_a_worker_mid_search(cluster: Cluster, victim, heartbeats: Path, run_dir: Path, killed: dict) -> None:
    """Once a trial has finished and another is early in its training on the victim (steps 2-10 of ~22),
    remove that GPU node hard: the trial is lost mid-run, and must run again elsewhere."""
    beat = heartbeats / victim.node_id
    deadline = time.time() + 240
    while time.time() < deadline:
        csv = run_dir / "trials.csv"
        finished = csv.exists() and len(csv.read_text().splitlines()) >= 2
        training = beat.exists() and time.time() - beat.stat().st_mtime < 0.3 and 2 <= int(beat.read_text() or 0) <= 10
        if finished and training:
            killed["node_id"] = victim.node_id
            cluster.remove_node(victim, allow_graceful=False)
            return
        time.sleep(0.05)


def main() -> None:
    run_dir, mode = Path(sys.argv[1]), sys.argv[2]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    heartbeats = run_dir.parent / "heartbeats"  # SlowNet touches heartbeats/NODE_ID while it trains
    heartbeats.mkdir(parents=True, exist_ok=True)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(TESTS), "PDSEARCH_TEST_HEARTBEATS": str(heartbeats)}})
    # Each trial asks for a GPU, so trials can only run on the two GPU worker nodes. They last
    # ~4 s (slow_net sleeps in training) so a node whose actor starts late still gets trials.
    cfg = tiny_config(search={"num_trials": 6, "population_size": 4, "max_failures": 3},
                      model={"name": "user_models:slow_net", "kwargs": {}}, resources={"cpu": 1, "gpu": 1})
    killed: dict = {}
    if mode == "kill":
        threading.Thread(target=kill_a_worker_mid_search, args=(cluster, workers[0], heartbeats, run_dir, killed), daemon=True).start()
    result = run_search(cfg, run_dir)
    trials = result.trials
    print(json.dumps({
        "trials": len(trials), "statuses": sorted(trials["status"].unique()), "ids_unique": bool(trials["trial_id"].is_unique),
        "nodes": sorted(trials["node_id"].unique()), "gpu_nodes": [w.node_id for w in workers],
        "head": cluster.head_node.node_id, "killed": killed.get("node_id"), "front": len(result.front),
        "retries": int(trials["retries"].sum()),
        "failures": sorted({str(row.get("failure_reason")) for _, row in trials[trials["status"] != "ok"].iterrows()}),
    }))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
