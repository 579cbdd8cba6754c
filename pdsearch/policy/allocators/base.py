"""The allocator interface: a policy and a model's cost space in, per-group rates (and criteria) out."""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from pdsearch.errors import PdsearchError
from pdsearch.policy.solve import CostSpace, Goal
from pdsearch.ranges import Range

if TYPE_CHECKING:
    from pdsearch.policy.policy import Policy


class Needs(str, enum.Enum):
    """What an allocation reads, and so where it runs."""

    STRUCTURE = "structure"  # the model's shapes: planned on the driver
    SENSITIVITY = "sensitivity"  # the trained baseline's sensitivity profile, measured once per run
    TRAINING = "training"  # the baseline and training data: inside the trial
    # the baseline and training data along one path per run, measured before the first trial (Allocator.path),
    # whose prefixes the trials read: the allocation at a budget is where the path to a larger one passes it
    PATH = "path"


class Settings(BaseModel):
    """An allocator's settings in the config (``space.allocators.NAME``); Range fields are searched."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)  # docstrings: the docs
    from_space: ClassVar[dict[str, str]] = {}  # setting -> the space-level config key that sets it

    def searched(self) -> dict[str, Range]:
        return {name: value for name, value in self if isinstance(value, Range)}


class LossProbe(Protocol):
    """What loss-aware allocation asks of a model (pdsearch.trial.loss_probe implements it with torch)."""

    def loss(self) -> float: ...
    def loss_with(self, group: int, criterion: str, removed: int) -> float: ...
    def commit(self, group: int, criterion: str, removed: int) -> None: ...
    def retrain(self) -> None: ...


@dataclass
class Problem:
    """Everything an allocator may read: the cost space, the groups, and what was measured."""

    space: CostSpace
    positions: np.ndarray
    kinds: list[str]  # "conv" / "linear" per group
    channels: np.ndarray  # channels per group
    channel_groups: np.ndarray  # conv groups per group (removal happens in multiples of these)
    settings: dict[str, Settings] = field(default_factory=dict)  # per allocator name
    profile: Any = None  # a SensitivityProfile of the baseline, where measured
    probe: Callable[[Settings], LossProbe] | None = None  # builds a loss probe on the baseline and data
    paths: dict[str, dict[str, Any]] | None = None  # paths measured once per run: allocator -> path_key -> path

    def goal(self, policy: Policy) -> Goal:
        return goal_of(policy, self.space)


def goal_of(policy: Policy, space: CostSpace) -> Goal:
    """The cost reduction a policy asks for: its budget, or homogeneous pruning's at its GPR."""
    if policy.budget is not None:
        return Goal(policy.budget_metric, policy.budget / 100.0)
    return Goal(policy.target, space.homogeneous(policy.gpr / 100.0, policy.target))


@dataclass
class Allocation:
    rates: np.ndarray  # per group, fractions
    criteria: list[str] | None = None  # per group; None: the policy's criterion everywhere
    seconds: float = 0.0


class Allocator:
    """Base class: subclasses set ``name`` and implement ``rates``; register with ``@register``.

    ``needs`` says what allocation reads (``Needs``). A *mode* (``allocates_named_shapes``)
    spreads PD1-PD5 its own way and is chosen by ``space.mode``; any other allocator is a
    pruning distribution of its own (``pd: sensitivity``).
    """

    name: ClassVar[str]
    needs: ClassVar[Needs] = Needs.STRUCTURE
    allocates_named_shapes: ClassVar[bool] = False  # a mode (PD1-PD5 spread its way), not a PD of its own
    custom_shapes: ClassVar[bool] = False  # a mode that also spreads continuous shapes (space.shape)
    published_rates: ClassVar[bool] = False  # rates kept as stated (FlexiPrune's lists), not snapped to channels
    chooses_criteria: ClassVar[bool] = False  # picks a criterion per group (the policy's is only a fallback)
    settings: ClassVar[type[Settings]] = Settings

    def describe(self, policy: Policy) -> str:
        """How this allocator spreads ``policy``, for the plan's header line."""
        return f"allocator {self.name}"

    def validate(self, policy: Policy) -> None:
        unknown = set(policy.options) - set(self.settings.model_fields)
        if unknown:
            raise PdsearchError(f"{policy.label} takes no option(s) {', '.join(sorted(unknown))}")

    def settings_of(self, problem: Problem) -> Settings:
        return problem.settings.get(self.name) or self.settings()

    def allocate(self, policy: Policy, problem: Problem) -> Allocation:
        start = time.perf_counter()
        allocation = self.rates(policy, problem)
        if not isinstance(allocation, Allocation):
            allocation = Allocation(np.asarray(allocation, dtype=float))
        allocation.seconds = time.perf_counter() - start
        return allocation

    def rates(self, policy: Policy, problem: Problem) -> Allocation | np.ndarray:
        raise NotImplementedError

    # An allocator that needs Needs.PATH implements these three: the search measures the path once per run
    # (trial.loss_path), and ``rates`` reads the prefix its policy needs from ``problem.paths[name]``.
    def path(self, policy: Policy, problem: Problem, until: float, report: Callable[[float], None] | None = None
             ) -> Any:
        """The allocation's steps until ``until`` of the policy's cost is removed (a JSON-able ``to_dict()``)."""
        raise NotImplementedError

    def path_key(self, policy: Policy, problem: Problem) -> str:
        """What the path depends on besides the baseline: one path serves every budget that shares it."""
        raise NotImplementedError

    def read_path(self, data: dict[str, Any]) -> Any:
        """A path from its ``to_dict()``."""
        raise NotImplementedError


ALLOCATORS: dict[str, Allocator] = {}


def register(cls: type[Allocator]) -> type[Allocator]:
    ALLOCATORS[cls.name] = cls()
    return cls


def allocator_for(pd: str | None, mode: str) -> Allocator:
    """The one rule: a PD that names an allocator is allocated by it, anything else by the mode."""
    return ALLOCATORS[pd] if pd in ALLOCATORS else ALLOCATORS[mode]


def modes() -> list[str]:
    """Allocators that spread the named shapes PD1-PD5 (``space.mode``)."""
    return [name for name, a in ALLOCATORS.items() if a.allocates_named_shapes]


def distribution_allocators() -> list[str]:
    """Allocators that are pruning distributions of their own (``pd: sensitivity``)."""
    return [name for name, a in ALLOCATORS.items() if not a.allocates_named_shapes]
