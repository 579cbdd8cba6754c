"""The tiny search config the tests build on (a plain helper: fixtures live in conftest.py)."""


def tiny_config(**sections):
    """A fast digits search: 8x8 input, short training; sections override keys per section (None removes one)."""
    from pdsearch.config import parse_config

    data = {
        "name": "tiny",
        "data": {"dataset": "digits", "input_size": 8, "batch_size": 64},
        "model": {"name": "small_cnn", "kwargs": {"width": 8}},
        "baseline": {"epochs": 6, "lr": 0.05},
        "finetune": {"epochs": 1, "lr": 0.02},
        "space": {"gpr": {"low": 10, "high": 70, "step": 10}, "pd": [1, 2, 3, 4, 5]},
        "search": {"num_trials": 6, "population_size": 4},
    }
    for section, values in sections.items():
        if not isinstance(values, dict):  # a top-level key (plugins)
            data[section] = values
            continue
        merged = {**data.get(section, {}), **values}
        data[section] = {k: v for k, v in merged.items() if v is not None}
    return parse_config(data)


_TABLES: dict = {}


def tiny_table(path, model: str = "small_cnn", input_size: int = 8, in_channels: int = 1, runtime: str = "torch",
               threads=None, precision: str = "fp32", **kwargs):
    """A latency table of the tiny config's model (few samples, few runs: for its key and structure), written to
    ``path``; built once per set of arguments in a test session."""
    import copy

    from pdsearch.cost.table_build import build_table
    from pdsearch.models import build_model

    key = (model, input_size, in_channels, runtime, threads, precision, tuple(sorted(kwargs.items())))
    if key not in _TABLES:
        net = build_model(model, num_classes=10, in_channels=in_channels, **(kwargs if kwargs or model != "small_cnn" else {"width": 8}))
        _TABLES[key] = build_table(net, model, input_size, in_channels, runtime=runtime, threads=threads, points=2,
                                   warmup=1, runs=3, anchor_runs=3, precision=precision)
    return copy.deepcopy(_TABLES[key]).save(path)


def near_chance_checkpoint(tmp_path):
    """A small_cnn checkpoint of the tiny config that learnt nothing: all zeros, it predicts one class."""
    import torch

    from pdsearch.models import build_model

    model = build_model("small_cnn", num_classes=10, in_channels=1, width=8)
    path = tmp_path / "zeros.pt"
    torch.save({k: torch.zeros_like(v) for k, v in model.state_dict().items()}, path)
    return path
