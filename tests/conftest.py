import pytest
import torch

from configs import tiny_config

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
    from pathlib import Path

    import ray

    tests = str(Path(__file__).parent)  # so trial workers can import tests/user_models.py
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": tests}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def baseline():
    """The tiny config's baseline, trained once per test session (on the CPU)."""
    from pdsearch.trial.baseline import build_baseline

    return build_baseline(tiny_config(), torch.device("cpu"))


@pytest.fixture(scope="session")
def nsga_run(ray_session, tmp_path_factory):
    """One real small search (8 trials, NSGA-II, acc-drop constraint), shared by the tests that read a run."""
    from pdsearch.searching.driver import run_search

    run_dir = tmp_path_factory.mktemp("nsga")
    cfg = tiny_config(search={"num_trials": 8, "population_size": 4, "constraints": {"max_acc_drop": 8.0}})
    return cfg, run_dir, run_search(cfg, run_dir)
