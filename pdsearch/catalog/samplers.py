"""Samplers (``search.sampler``): Optuna samplers by name, a light registry.

Each entry builds its sampler from the config and the space's grid, importing Optuna only
then, so validating a config stays light. Adding a sampler is one line here (or one
``SAMPLERS[name] = Sampler(...)`` in a plugin module).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import optuna

    from pdsearch.config import SearchConfig


@dataclass(frozen=True)
class Sampler:
    build: Callable[[SearchConfig, dict[str, list]], optuna.samplers.BaseSampler]  # (config, the space's grid)
    exhaustive: bool = False  # walks the grid: one trial per point, allocator options held at their low end


def _optuna(name: str, **fixed: Any) -> Callable[..., Any]:
    """An Optuna sampler class by name, seeded from search.seed; ``fixed`` are constructor arguments."""
    def build(cfg: SearchConfig, grid: dict[str, list]) -> optuna.samplers.BaseSampler:
        import optuna

        return getattr(optuna.samplers, name)(seed=cfg.search.seed, **fixed)

    return build


def _nsga2(cfg: SearchConfig, grid: dict[str, list]) -> optuna.samplers.BaseSampler:
    from pdsearch.registry import resolve  # by import path: the catalog imports no stage above it

    return resolve("pdsearch.searching.nsga2:NSGAIISampler")(population_size=cfg.search.population_size,
                                                             seed=cfg.search.seed)


def _grid(cfg: SearchConfig, grid: dict[str, list]) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.GridSampler(grid, seed=cfg.search.seed)


SAMPLERS: dict[str, Sampler] = {
    "nsga2": Sampler(_nsga2),
    "tpe": Sampler(_optuna("TPESampler", multivariate=True)),
    "gp": Sampler(_optuna("GPSampler")),
    "random": Sampler(_optuna("RandomSampler")),
    "grid": Sampler(_grid, exhaustive=True),
}
