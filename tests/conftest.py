import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def planners():
    """Planner per (model, input size), analysed once per test session."""
    from pdsearch.planning import Planner

    cache = {}

    def get(model: str, input_size: int = 32, num_classes: int = 10) -> Planner:
        key = (model, input_size, num_classes)
        if key not in cache:
            cache[key] = Planner(model, num_classes=num_classes, input_size=input_size)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (searches join it)."""
    import ray

    from pathlib import Path

    tests = str(Path(__file__).parent)  # so trial workers can import tests/user_models.py
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": tests}})
    yield ray
    ray.shutdown()


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
        merged = {**data.get(section, {}), **values}
        data[section] = {k: v for k, v in merged.items() if v is not None}
    return parse_config(data)


@pytest.fixture(scope="session")
def nsga_run(ray_session, tmp_path_factory):
    """One real small search (8 trials, NSGA-II, acc-drop constraint), shared by the tests that read a run."""
    from pdsearch.searching import run_search

    run_dir = tmp_path_factory.mktemp("nsga")
    cfg = tiny_config(search={"num_trials": 8, "population_size": 4, "constraints": {"max_acc_drop": 8.0}})
    return cfg, run_dir, run_search(cfg, run_dir)
