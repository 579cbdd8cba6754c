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
