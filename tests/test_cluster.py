"""Cluster scale: cluster.yaml against Ray's schema, simulated and real multi-node searches, a node dying."""
import copy
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from configs import tiny_config

ROOT = Path(__file__).parent.parent
TESTS = Path(__file__).parent
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def launcher_checks(config: dict) -> dict:
    """What `ray up` checks before it launches anything: the JSON schema, then defaults and node types."""
    jsonschema.validate(config, SCHEMA)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def onprem_variant() -> dict:
    text = (ROOT / "cluster.yaml").read_text().split("# --- on-prem variant")[1]
    lines = [line[2:] if line.startswith("# ") else line[1:] for line in text.splitlines() if line.startswith("#")]
    return yaml.safe_load("\n".join(lines[lines.index("cluster_name: pdsearch-onprem"):]))


def test_cluster_yaml_passes_rays_launcher_checks():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    prepared = launcher_checks(config)
    head, worker = prepared["available_node_types"]["head"], prepared["available_node_types"]["gpu_worker"]
    assert head["resources"] == {"CPU": 0}  # the head drives, GPU workers run trials
    assert worker["node_config"]["InstanceType"].startswith("g5.") and worker["max_workers"] >= 1
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert all("RAY_AUTH_MODE=token" in " ".join(config[k]) for k in ("head_start_ray_commands", "worker_start_ray_commands"))
    assert any("pip install" in c and "~/pdsearch" in c for c in config["setup_commands"])
    assert any("/mnt/pdsearch" in c for c in config["setup_commands"])  # the shared run directory


def test_onprem_variant_passes_rays_launcher_checks():
    config = onprem_variant()
    assert config["provider"]["type"] == "local" and config["provider"]["worker_ips"]
    launcher_checks(config)


def test_launcher_checks_reject_a_broken_config():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["min_wrokers"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_wrokers"):
        launcher_checks(config)


def harness(tmp_path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, str(TESTS / "cluster_harness.py"), str(tmp_path / "run"), mode],
                         capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(next(line for line in reversed(out.stdout.splitlines()) if line.startswith("{")))


@pytest.mark.slow
def test_simulated_multi_node_cluster_spreads_trials_over_gpu_nodes(tmp_path):
    result = harness(tmp_path, "spread")
    assert result["trials"] == 6 and result["statuses"] == ["ok"] and result["ids_unique"]
    assert set(result["nodes"]) == set(result["gpu_nodes"])  # both GPU nodes ran trials, the GPU-less head none


@pytest.mark.slow
def test_worker_node_killed_mid_search_its_trial_is_retried(tmp_path):
    result = harness(tmp_path, "kill")
    assert result["killed"] in result["gpu_nodes"]
    assert result["trials"] == 6 and result["statuses"] == ["ok"] and result["ids_unique"], result["failures"]
    assert result["retries"] >= 1  # the trial on the dead node ran again elsewhere


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NODE_IDS = "import sys, ray; ray.init(address=sys.argv[1]); print(*[n['NodeID'] for n in ray.nodes() if n['Alive']])"


@pytest.mark.slow
def test_real_loopback_cluster_with_token_auth_through_address(tmp_path):
    """`ray start --head` + a second `ray start --address` (token auth on), pdsearch joins with --address."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    port = free_port()
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env = {**os.environ, **token, "PYTHONPATH": str(TESTS)}
    groups = []
    temp_dir = tempfile.mkdtemp(prefix="pdsr-")  # short: Ray's socket paths must fit in 107 bytes

    def start(*args: str) -> None:
        proc = subprocess.Popen([ray_cli, "start", *args, "--disable-usage-stats"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        groups.append(proc.pid)  # its daemons stay in this process group: killed below, not by `ray stop`
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]

    try:
        # own temp dir: later ray.init() calls on this machine must not find this cluster
        start("--head", f"--port={port}", "--num-cpus=1", "--num-gpus=0", "--include-dashboard=false",
              f"--temp-dir={temp_dir}")
        start(f"--address=127.0.0.1:{port}", "--num-cpus=1")
        config = tmp_path / "search.yaml"
        config.write_text(tiny_config(search={"num_trials": 4, "population_size": 4}).to_yaml())
        search = [sys.executable, "-m", "pdsearch", "search", str(config), "--address", f"127.0.0.1:{port}"]

        out = subprocess.run([*search, "--run-dir", str(tmp_path / "run")], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        trials = pd.read_csv(tmp_path / "run" / "trials.csv")
        assert len(trials) == 4 and (trials["status"] == "ok").all()
        nodes = subprocess.run([sys.executable, "-c", NODE_IDS, f"127.0.0.1:{port}"], env=env, capture_output=True,
                               text=True, timeout=120).stdout.split()
        assert len(nodes) == 2 and set(trials["node_id"]) <= set(nodes)  # ran on this two-node cluster

        no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
        out = subprocess.run([*search, "--run-dir", str(tmp_path / "other")], env=no_token, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
        assert "cannot connect to Ray" in out.stderr and "RAY_AUTH_TOKEN" in out.stderr
    finally:
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)
