"""The Ray connection: fail fast on an address nobody listens at, start or join Ray, size concurrency."""
from __future__ import annotations

import os
import socket

import ray

from pdsearch.config import SearchConfig
from pdsearch.errors import PdsearchError
from pdsearch.files import native_output_silenced


def probe_address(address: str | None) -> None:
    """Fail in a second, not after Ray's minute of retries, when no cluster is at ``address``."""
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address_or_die

        try:
            canonicalize_bootstrap_address_or_die(address)
        except ConnectionError:
            raise PdsearchError("cannot connect to Ray at 'auto': no Ray cluster runs on this machine "
                                "(start one with ray start --head, or leave --address out to run locally)") from None
        return
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # None, 'auto', 'local', ray://: Ray resolves these itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise PdsearchError(f"cannot connect to Ray at {address!r}: {exc.strerror or exc}") from None


def tune_environment() -> None:
    """What Ray Tune reads from the environment when a search runs, set by the search (never at import).

    Tune's ProgressReporter interface (progress.py): its newer output ignores custom reporters.
    SIGINT is handled by the driver (with SIGTERM), then handed to Tune's graceful stop (SIGUSR1).
    Tune saves its experiment state at its own pace ("auto"); the study, not that state, says what ran.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"


def connect(address: str | None) -> bool:
    """Start or join Ray; True if this call started it (and so should stop it)."""
    tune_environment()
    if ray.is_initialized():
        return False
    try:
        with native_output_silenced():  # Ray's C++ client prints a warning per failed retry
            ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                     configure_logging=True, runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore"}})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        message = f"cannot connect to Ray at {address!r}: {str(exc).splitlines()[0]}"
        if "token" in f"{exc} {exc.__cause__}".lower():
            message += ("; the cluster uses token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
                        "(or put the token in ~/.ray/auth_token)")
        raise PdsearchError(message) from None
    return True


def concurrency(cfg: SearchConfig) -> int:
    """Trials the cluster can run at once for the per-trial request (unless the config caps it)."""
    if cfg.resources.max_concurrent:
        return cfg.resources.max_concurrent
    available = ray.cluster_resources()
    fits = [available.get("CPU", 1) / cfg.resources.cpu]
    if cfg.resources.gpu:
        fits.append(available.get("GPU", 0) / cfg.resources.gpu)
    n = int(min(fits) + 1e-9)
    if n < 1:
        raise PdsearchError(
            f"the cluster cannot run one trial: it has {available.get('CPU', 0):g} CPUs and {available.get('GPU', 0):g} GPUs, "
            f"a trial asks for {cfg.resources.cpu:g} CPUs and {cfg.resources.gpu:g} GPUs"
        )
    return n


def reuse_actors() -> bool:
    """Reuse trial actors on one machine (no process start per trial), never across nodes.

    Ray Tune hands a cached actor to the next trial with a ``reset`` call made while the
    trial is still pending; when that actor's node has died the failure is not retried
    (the trial ends in ERROR: measured with a node removed mid-search, tests/test_cluster.py).
    A node that can die is a node of a multi-node cluster.
    """
    return sum(1 for node in ray.nodes() if node["Alive"]) <= 1
