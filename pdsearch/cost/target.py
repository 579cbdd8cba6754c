"""The ``latency-table`` verb: build a model's latency table on the deployment target and write it.

On this machine, or as a Ray task on the cluster node that carries ``latency.target_resource``
(the device the model will run on). The table itself, its sampling and its predictions, are
latency_table.py.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

from torch import nn

from pdsearch.catalog.precisions import check_target
from pdsearch.cost.latency_table import LatencyTable
from pdsearch.cost.table_build import Progress, build_table
from pdsearch.errors import PdsearchError
from pdsearch.files import writable
from pdsearch.models import accepts_in_channels, build_model


def latency_table(
    out: str | Path,
    model: str | None = None,
    *,
    config: str | Path | None = None,
    input_size: int | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
    runtime: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    points: int = 6,
    address: str | None = None,
    report: Progress | None = None,
) -> LatencyTable:
    """Build the latency table of a model on this machine (or, with ``address``, on the cluster node
    carrying ``latency.target_resource``) and write it to ``out``.

    From ``config``: its model, the latency section's runtime, threads, batch size and input
    size, the space's precision where it has one (the data's classes and channels are read from
    the data); flags given override it.
    """
    kwargs: dict[str, Any] = {}
    if config is not None:
        from pdsearch.config import load_config
        from pdsearch.data import load_data

        cfg = load_config(config)
        if model is not None:
            raise PdsearchError("give --config or --model, not both")
        data = load_data(cfg.data)
        in_channels = data.in_channels if accepts_in_channels(cfg.model.name) else 3  # as the trials feed it
        model, kwargs, num_classes = cfg.model.name, cfg.model.kwargs, data.num_classes
        lat = cfg.latency
        input_size = input_size or lat.input_size or cfg.data.input_size
        runtime, threads = runtime or lat.runtime, threads or lat.threads
        batch_size, resource = batch_size or lat.batch_sizes[0], lat.target_resource
        if precision is None and len(cfg.space.precision) == 1:
            precision = cfg.space.precision[0]
    else:
        resource = None
        if model is None or input_size is None:
            raise PdsearchError("latency-table needs --config, or --model and --input-size")
    runtime, batch_size, precision = runtime or "onnxruntime", batch_size or 1, precision or "fp32"
    check_target(runtime, precision)
    if input_size <= 0 or batch_size <= 0 or points < 2 or (threads is not None and threads <= 0):
        raise PdsearchError("input size, batch size and threads must be positive, points at least 2")
    writable(Path(out))  # before minutes of measurement, not after
    build = functools.partial(build_table, model_name=model, input_size=input_size, in_channels=in_channels,
                              runtime=runtime, threads=threads, batch_size=batch_size, points=points,
                              precision=precision)
    net = build_model(model, num_classes=num_classes, in_channels=in_channels, **kwargs)
    if address is not None:
        table = _on_target(build, net, address, resource)
    else:
        table = build(net, report=report)
    table.save(out)
    return table


def _on_target(build: Callable[..., LatencyTable], net: nn.Module, address: str, resource: str | None) -> LatencyTable:
    """The build as a Ray task on the node that carries ``resource`` (the deployment target)."""
    import ray

    if resource is None:
        raise PdsearchError("--address builds the table on the cluster node that carries latency.target_resource: "
                            "set it in the config (a node started with ray start --resources '{\"NAME\": 1}')")
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        if not any(resource in node["Resources"] for node in ray.nodes() if node["Alive"]):
            raise PdsearchError(f"no node of the cluster at {address!r} carries the resource {resource!r}")
        task = ray.remote(num_cpus=0, resources={resource: 1})(lambda: build(net))
        return ray.get(task.remote())
    finally:
        if started:
            ray.shutdown()
