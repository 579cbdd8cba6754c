"""The search configuration (YAML), validated once at the edge.

Every key is declared here with its type and range; unknown keys, wrong types and
impossible ranges become one-line errors naming the key (``search.num_trials: ...``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from pdsearch.errors import PdsearchError
from pdsearch.objectives import CONSTRAINTS, OBJECTIVES
from pdsearch.policy import ALLOCATORS
from pdsearch.policy.allocators import Settings
from pdsearch.policy.policy import CRITERIA, PD_SHAPES, modes, normalize_pd
from pdsearch.ranges import Range


def registered(name: str, registry: Mapping[str, Any], what: str) -> str:
    """``name`` if the registry has it, else the error a user can act on (the names it has)."""
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}: use one of {', '.join(registry)}")
    return name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    dataset: str = "digits"  # a name in data.DATASETS
    root: Optional[str] = None
    download: bool = False
    input_size: int = Field(16, gt=0, le=1024)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    seed: int = 0
    batch_size: int = Field(128, gt=0)
    augment_crop: bool = True
    augment_flip: Optional[bool] = None  # None: on for natural images, off for digits
    workers: int = Field(2, ge=0)
    in_memory_limit_mb: int = Field(2048, ge=0)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from pdsearch.data import DATASETS  # the registry's loaders take this section

        return registered(value, DATASETS, "dataset")

    @model_validator(mode="after")
    def _root_needed(self) -> "DataConfig":
        from pdsearch.data import DATASETS

        if DATASETS[self.dataset].needs_root and not self.root:
            raise ValueError(f"data.root is required for dataset {self.dataset}")
        return self


class ModelConfig(_Section):
    name: str = "small_cnn"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Section):
    epochs: int = Field(3, ge=0)
    lr: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)


class FinetuneConfig(TrainConfig):
    # Adaptive BatchNorm (EagleEye): statistics re-estimated on this many training batches after
    # pruning, before the screening accuracy (accuracy_before_finetune) is measured; 0 turns it off.
    bn_recalibration_batches: int = Field(20, ge=0)


class BaselineConfig(TrainConfig):
    checkpoint: Optional[str] = None  # a state_dict (.pt/.pth, loaded weights_only) or .safetensors
    trust_checkpoint: bool = False  # allow full unpickling, which RUNS CODE stored in the checkpoint
    epochs: int = Field(15, ge=1)
    lr: float = Field(0.05, gt=0, le=10)


class ShapeConfig(_Section):
    slope: Range = Range(low=-1.0, high=1.0)
    curvature: Range = Range(low=-1.0, high=1.0)


class BudgetConfig(_Section):
    """A FLOPs or params reduction to meet (percent), instead of a GPR (ACRA's budget mode)."""

    flops_reduction: Optional[Range] = None
    params_reduction: Optional[Range] = None

    @model_validator(mode="after")
    def _one(self) -> "BudgetConfig":
        given = [r for r in (self.flops_reduction, self.params_reduction) if r is not None]
        if len(given) != 1:
            raise ValueError("give flops_reduction or params_reduction (one of them)")
        if given[0].low <= 0 or given[0].high >= 100:
            raise ValueError(f"a budget must lie in (0, 100) percent, got [{given[0].low:g}, {given[0].high:g}]")
        return self

    @property
    def metric(self) -> str:
        return "flops" if self.flops_reduction is not None else "params"

    @property
    def range(self) -> Range:
        return self.flops_reduction or self.params_reduction


def _criteria(value: list[str], what: str) -> list[str]:
    if not value:
        raise ValueError(f"the {what} is empty")
    for c in value:
        if c not in CRITERIA:
            raise ValueError(f"unknown criterion {c!r}: use one of {', '.join(CRITERIA)}")
    return value


class SpaceConfig(_Section):
    mode: str = "calibrated"  # who spreads PD1-PD5: calibrated shapes or flexiprune tables
    gpr: Optional[Range] = None  # default 10-80 by 5 unless a budget is given
    budget: Optional[BudgetConfig] = None  # instead of gpr
    pd: Optional[list[Union[int, str]]] = None  # default: PD1-PD5; also data-driven allocators (sensitivity, ...)
    shape: Optional[ShapeConfig] = None  # continuous shapes instead of named PDs
    criteria: list[str] = ["l1"]
    criteria_pool: list[str] = ["l1", "l2", "fpgm", "cosine"]  # loss_aware picks one per group from these
    allocators: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-allocator settings
    target: Literal["flops", "params", "mean"] = "flops"
    max_rate: float = Field(0.9, gt=0, lt=1)
    round_to: int = Field(1, ge=1, le=1024)  # pruned groups keep a multiple of this many channels
    repeats: int = Field(1, ge=1, le=20)
    seeds: list[int] = [0]

    @field_validator("mode")
    @classmethod
    def _mode(cls, value):
        if value not in modes():
            raise ValueError(f"unknown mode {value!r}: use one of {', '.join(modes())}")
        return value

    @field_validator("pd")
    @classmethod
    def _pds(cls, value):
        if value is None:
            return None
        if not value:
            raise ValueError("the PD list is empty")
        try:
            return list(dict.fromkeys(normalize_pd(v) for v in value))
        except PdsearchError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, value):
        return _criteria(value, "criteria list")

    @field_validator("criteria_pool")
    @classmethod
    def _pool(cls, value):
        return _criteria(value, "criteria pool") if value else value

    @field_validator("gpr")
    @classmethod
    def _gpr(cls, value: Range | None):
        if value is not None and (value.low < 0 or value.high >= 100):
            raise ValueError(f"GPR range must lie in [0, 100), got [{value.low}, {value.high}]")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value):
        if not value:
            raise ValueError("the seeds list is empty")
        return value

    @field_validator("allocators")
    @classmethod
    def _allocators(cls, value):
        for name in value:
            if name not in ALLOCATORS:
                raise ValueError(f"unknown allocator {name!r}: use one of {', '.join(ALLOCATORS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SpaceConfig":
        if self.pd is not None and self.shape is not None:
            raise ValueError("set either space.pd (named PDs) or space.shape (continuous shapes), not both")
        if self.pd is None and self.shape is None:
            object.__setattr__(self, "pd", list(PD_SHAPES))
        if self.mode == "flexiprune" and self.shape is not None:
            raise ValueError("flexiprune mode takes named PDs (space.pd), not space.shape")
        if self.budget is not None and self.gpr is not None:
            raise ValueError("set either space.gpr or space.budget, not both")
        if self.budget is None and self.gpr is None:
            object.__setattr__(self, "gpr", Range(low=10, high=80, step=5))
        self.settings()  # each allocator in the space checks its own settings
        return self

    @property
    def amount(self) -> tuple[str, Range]:
        """The searched amount: ('gpr', range) or ('budget', range)."""
        return ("budget", self.budget.range) if self.budget is not None else ("gpr", self.gpr)

    def allocators_used(self) -> list[str]:
        """Registry names of the allocators this space can pick."""
        return list(dict.fromkeys(ALLOCATORS[p].name if p in ALLOCATORS else self.mode for p in (self.pd or [None])))

    def settings(self) -> dict[str, Settings]:
        """Each allocator's validated settings, with the space-level keys it reads (criteria_pool)."""
        return {name: self.settings_for(name) for name in self.allocators_used()}

    def settings_for(self, name: str) -> Settings:
        settings = ALLOCATORS[name].settings
        given = {field: getattr(self, key) for field, key in settings.from_space.items()}
        try:
            return settings.model_validate({**given, **(self.allocators.get(name) or {})})
        except ValidationError as exc:
            raise ValueError(f"allocators.{name}.{_format_error(exc)}") from None


class _ConstraintsBase(_Section):
    """One optional bound per objective (objectives.CONSTRAINTS): the fields are made from that table."""

    def violations(self, metrics: Mapping[str, Any], fixed_only: bool = False) -> dict[str, float]:
        """By how much a trial misses each set constraint (Optuna's convention: met when <= 0), in points.

        ``fixed_only``: only constraints on what pruning fixes (cost), not on accuracy, which
        an unfinished fine-tune has not reached yet.
        """
        values = {}
        for c in CONSTRAINTS.values():
            if fixed_only and c.evolves:
                continue
            limit = getattr(self, c.field)
            if limit is not None:
                value = float(metrics[c.metric])
                values[c.name] = value - limit if c.sense == "<=" else limit - value
        return values

    def describe(self) -> str:
        parts = [f"{c.label} {c.sense} {getattr(self, c.field):g}{c.unit}"
                 for c in CONSTRAINTS.values() if getattr(self, c.field) is not None]
        return ", ".join(parts) or "no constraints"

    def measures(self) -> set[str]:
        """What trials must measure for the constraints set (latency, energy)."""
        return {o.measures for o in OBJECTIVES.values() if o.measures and getattr(self, o.constraint.field) is not None}


Constraints = create_model(
    "Constraints", __base__=_ConstraintsBase,
    **{c.field: (Optional[float], Field(None, ge=0, lt=100 if c.percent else None)) for c in CONSTRAINTS.values()},
)


class LatencyConfig(_Section):
    """How trials time the pruned model and the baseline (when latency is an objective or constraint)."""

    batch_sizes: list[int] = [1]  # the first is the objective's; a second is reported too
    warmup: int = Field(10, ge=0)
    runs: int = Field(50, ge=3)

    @field_validator("batch_sizes")
    @classmethod
    def _sizes(cls, value):
        if not 1 <= len(value) <= 2 or min(value) < 1:
            raise ValueError("give one or two positive batch sizes")
        return value


class FidelityConfig(_Section):
    """MO-ASHA's rungs: fine-tune epochs min_epochs·eta^k below finetune.epochs (0: the screening)."""

    min_epochs: int = Field(1, ge=0)
    eta: float = Field(3.0, gt=1)


class SearchSettings(_Section):
    sampler: str = "nsga2"  # a name in space.SAMPLERS
    scheduler: Literal["fifo", "mo_asha"] = "fifo"  # mo_asha: stop unpromising trials at rungs
    fidelity: FidelityConfig = FidelityConfig()
    num_trials: int = Field(24, ge=1)
    seed: int = 0
    objectives: list[str] = ["accuracy", "flops", "params"]
    constraints: Constraints = Constraints()
    storage: Optional[str] = None  # an Optuna storage URL; default: SQLite in the run directory
    tune_storage: Optional[str] = None  # Ray Tune's storage_path (a shared folder or s3://...); default RUN_DIR/tune
    study_name: str = "pdsearch"
    population_size: int = Field(8, ge=2)  # NSGA-II generation size
    max_failures: int = Field(2, ge=0)  # retries of a trial whose worker died

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        from pdsearch.space import SAMPLERS  # the registry builds samplers from this config

        return registered(value, SAMPLERS, "sampler")

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value):
        if len(value) < 1 or len(set(value)) != len(value):
            raise ValueError("objectives must be a non-empty list without repeats")
        return [registered(name, OBJECTIVES, "objective") for name in value]

    def measures(self) -> set[str]:
        """What trials measure beyond accuracy and cost: for the objectives and the constraints set."""
        return {OBJECTIVES[o].measures for o in self.objectives if OBJECTIVES[o].measures} | self.constraints.measures()


class Resources(_Section):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)
    max_concurrent: Optional[int] = Field(None, ge=1)


class SearchConfig(_Section):
    name: str = "pdsearch"
    run_dir: Optional[str] = None
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    baseline: BaselineConfig = BaselineConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    space: SpaceConfig = SpaceConfig()
    search: SearchSettings = SearchSettings()
    resources: Resources = Resources()
    latency: LatencyConfig = LatencyConfig()

    @model_validator(mode="after")
    def _gpu_objectives(self) -> "SearchConfig":
        needs_gpu = [o.name for o in OBJECTIVES.values() if o.needs_gpu and o.measures in self.search.measures()]
        if needs_gpu and not self.resources.gpu:
            raise ValueError(f"{needs_gpu[0]} is measured on the GPU (NVML), but trials get none: "
                             "set resources.gpu, or drop it from search.objectives and search.constraints")
        return self

    @model_validator(mode="after")
    def _rungs(self) -> "SearchConfig":
        if self.search.scheduler == "mo_asha" and self.search.fidelity.min_epochs >= self.finetune.epochs:
            raise ValueError(f"search.fidelity.min_epochs ({self.search.fidelity.min_epochs}) leaves no rung below "
                             f"finetune.epochs ({self.finetune.epochs}): mo_asha has nothing to stop early")
        return self

    def baseline_key(self) -> str:
        """What the baseline depends on: model, data and its own training."""
        baseline = self.baseline.model_dump(exclude={"trust_checkpoint"})  # how a file is read is not what it holds
        spec = {"model": self.model.model_dump(), "data": self.data.model_dump(), "baseline": baseline}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", by_alias=True), sort_keys=False)


def _format_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    extra = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {message}{extra}" if where else f"{message}{extra}"


def override_constraints(base: Constraints, **values: float | None) -> Constraints:
    """``base`` with the constraints given (None keeps base's), validated like the config."""
    unknown = set(values) - {c.field for c in CONSTRAINTS.values()}
    if unknown:
        raise PdsearchError(f"unknown constraint {sorted(unknown)[0]!r}: use one of "
                            f"{', '.join(c.field for c in CONSTRAINTS.values())}")
    try:
        return Constraints.model_validate({**base.model_dump(), **{k: v for k, v in values.items() if v is not None}})
    except ValidationError as exc:
        raise PdsearchError(f"constraint {_format_error(exc)}") from None


def parse_config(data: Any, source: str = "config") -> SearchConfig:
    if data is None:
        raise PdsearchError(f"{source}: the configuration is empty")
    if not isinstance(data, dict):
        raise PdsearchError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return SearchConfig.model_validate(data)
    except ValidationError as exc:
        raise PdsearchError(f"{source}: {_format_error(exc)}") from None


def with_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``data`` with dotted keys ('search.num_trials') set; None values are skipped."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if not key:
            data[section] = value
        elif isinstance(data.setdefault(section, {}), dict):
            data[section][key] = value
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """Read and validate a YAML config, with ``overrides`` (see with_overrides) applied first."""
    path = Path(path)
    if not path.is_file():
        raise PdsearchError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PdsearchError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if isinstance(data, dict):
        data = with_overrides(data, overrides)
    return parse_config(data, str(path))
