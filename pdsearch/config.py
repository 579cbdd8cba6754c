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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pdsearch.catalog.objectives import CONSTRAINTS, OBJECTIVES
from pdsearch.catalog.precisions import PRECISIONS, RECIPES
from pdsearch.catalog.runtimes import RUNTIMES
from pdsearch.catalog.samplers import SAMPLERS
from pdsearch.catalog.schedulers import SCHEDULERS
from pdsearch.catalog.trackers import TRACKERS
from pdsearch.data import DATASETS
from pdsearch.errors import PdsearchError
from pdsearch.files import local_folder
from pdsearch.policy.allocators import ALLOCATORS, Settings, allocator_for, modes
from pdsearch.policy.criteria import CRITERIA
from pdsearch.policy.policy import PD_SHAPES, normalize_pd
from pdsearch.ranges import Range
from pdsearch.registry import did_you_mean, load_plugins, unknown


def registered(name: str, registry: Mapping[str, Any], what: str) -> str:
    """``name`` if the registry has it, else the error a user can act on (the names it has)."""
    if name not in registry:
        raise ValueError(unknown(what, name, registry))
    return name


def digest(spec: Any) -> str:
    """A short stable key of a JSON-able spec (cache file names)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)  # a key's docstring: the docs


class DataConfig(_Section):
    dataset: str = "digits"
    """The dataset: a name in the dataset registry (digits is embedded; cifar10, cifar100 and imagefolder read data.root)."""
    root: Optional[str] = None
    """Where the dataset's files are (CIFAR's python batches, or an ImageFolder's train/ and val/ class folders)."""
    download: bool = False
    """Download the dataset into data.root if it is missing (torchvision's downloader)."""
    input_size: int = Field(16, gt=0, le=1024)
    """Side of the square images the model sees (resized and centre-cropped)."""
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    """Share of the training images held out, seeded, for validation (the search's objective)."""
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    """Share held out for the test accuracy, where the dataset has no test split of its own."""
    seed: int = 0
    """Seeds the splits and the baseline's training."""
    batch_size: int = Field(128, gt=0)
    """Images per training and evaluation batch."""
    augment_crop: bool = True
    """Random crops (padded) while training."""
    augment_flip: Optional[bool] = None
    """Random horizontal flips while training; unset: on for natural images, off for digits."""
    workers: int = Field(2, ge=0)
    """DataLoader worker processes for datasets read from files."""
    in_memory_limit_mb: int = Field(2048, ge=0)
    """Datasets up to this size are held in memory as tensors (fast batches); larger ones stream from disk."""

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        return registered(value, DATASETS, "dataset")

    @model_validator(mode="after")
    def _root_needed(self) -> "DataConfig":
        if DATASETS[self.dataset].needs_root and not self.root:
            raise ValueError(f"data.root is required for dataset {self.dataset}")
        return self


class ModelConfig(_Section):
    name: str = "small_cnn"
    """The model: a pdsearch name, a torchvision name, timm/NAME, or package.module:factory."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the model's factory (width, pretrained, ...)."""


class TrainConfig(_Section):
    epochs: int = Field(3, ge=0)
    """Training epochs."""
    lr: float = Field(0.01, gt=0, le=10)
    """Peak learning rate of SGD with Nesterov momentum, cosine-annealed to 0."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD momentum."""
    weight_decay: float = Field(5e-4, ge=0)
    """L2 weight decay."""
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    """Label smoothing of the cross-entropy loss."""


class DistillConfig(_Section):
    """Logits distillation from the unpruned baseline while fine-tuning (weight 0: off, plain training)."""

    weight: float = Field(0.0, ge=0, le=1)
    """Weight of the distillation term; the labels' loss gets 1 - weight (0: plain training)."""
    temperature: float = Field(4.0, gt=0)
    """Softmax temperature of teacher and student logits."""


class FinetuneConfig(TrainConfig):
    bn_recalibration_batches: int = Field(20, ge=0)
    """Training batches on which BatchNorm statistics are re-estimated after pruning, before the screening accuracy (EagleEye's adaptive BN; 0: off)."""
    distill: DistillConfig = DistillConfig()
    """Logits distillation from the unpruned baseline while fine-tuning."""


class BaselineConfig(TrainConfig):
    checkpoint: Optional[str] = None
    """Trained weights to start from: a state_dict (.pt/.pth, loaded weights_only) or .safetensors; unset: trained here."""
    trust_checkpoint: bool = False
    """Allow full unpickling of the checkpoint, which RUNS CODE stored in the file: only for a file you trust."""
    allow_weak: bool = False
    """Search a baseline near chance anyway (otherwise the search stops before any trial)."""
    epochs: int = Field(15, ge=1)
    """Epochs of the baseline's training (or of a checkpoint's new classifier)."""
    lr: float = Field(0.05, gt=0, le=10)
    """Peak learning rate of the baseline's training."""


class ShapeConfig(_Section):
    slope: Range = Range(low=-1.0, high=1.0)
    """Range of the shape's slope: + prunes deep layers harder (bottom-up), - shallow ones (top-down)."""
    curvature: Range = Range(low=-1.0, high=1.0)
    """Range of the shape's curvature: - peaks mid-network (low-high-low), + dips there (high-low-high)."""


class BudgetConfig(_Section):
    """A FLOPs, params or latency reduction to meet (percent), instead of a GPR (ACRA's budget mode).

    A latency budget is met on the latency table's prediction (latency.table).
    """

    flops_reduction: Optional[Range] = None
    """Percent of the FLOPs to remove (a range to search)."""
    params_reduction: Optional[Range] = None
    """Percent of the parameters to remove (a range to search)."""
    latency_reduction: Optional[Range] = None
    """Percent of the latency to remove, predicted by latency.table and corrected by measurement."""

    @model_validator(mode="after")
    def _one(self) -> "BudgetConfig":
        given = [r for r in (self.flops_reduction, self.params_reduction, self.latency_reduction) if r is not None]
        if len(given) != 1:
            raise ValueError("give flops_reduction, params_reduction or latency_reduction (one of them)")
        if given[0].low <= 0 or given[0].high >= 100:
            raise ValueError(f"a budget must lie in (0, 100) percent, got [{given[0].low:g}, {given[0].high:g}]")
        return self

    @property
    def metric(self) -> str:
        return next(m for m in ("flops", "params", "latency") if getattr(self, f"{m}_reduction") is not None)

    @property
    def range(self) -> Range:
        return getattr(self, f"{self.metric}_reduction")


def _criteria(value: list[str], what: str) -> list[str]:
    if not value:
        raise ValueError(f"the {what} is empty")
    for c in value:
        registered(c, CRITERIA, "criterion")
    return value


class SpaceConfig(_Section):
    mode: str = "calibrated"
    """Who spreads PD1-PD5 over the layers: calibrated shapes, or flexiprune (FlexiPrune's published tables)."""
    gpr: Optional[Range] = None
    """Global pruning rates to search, percent; unset and no budget: 10-80 by 5."""
    budget: Optional[BudgetConfig] = None
    """A FLOPs, params or latency reduction to meet instead of a GPR."""
    pd: Optional[list[Union[int, str]]] = None
    """Pruning distributions to search: PD1-PD5 (or 1-5, bottom-up, ...) and data-driven allocators (sensitivity, loss_aware); unset: PD1-PD5."""
    shape: Optional[ShapeConfig] = None
    """Continuous distribution shapes (slope, curvature) instead of named PDs."""
    criteria: list[str] = ["l1"]
    """Filter criteria to search (l1, l2, fpgm, cosine, taylor, bn_scale, random)."""
    criteria_pool: list[str] = ["l1", "l2", "fpgm", "cosine"]
    """Criteria loss_aware picks one of per channel group."""
    allocators: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-allocator settings, by allocator name (space.allocators.sensitivity.blend, ...)."""
    target: Literal["flops", "params", "mean"] = "flops"
    """What a GPR's homogeneous equivalent is measured in when a calibrated shape is solved: flops, params or their mean."""
    max_rate: float = Field(0.9, gt=0, lt=1)
    """The highest pruning rate any one layer may get."""
    round_to: list[int] = [1]
    """Pruned groups keep a multiple of this many channels; a list is searched (runtimes favour multiples of 4, 8 or 16)."""
    repeats: int = Field(1, ge=1, le=20)
    """Seeds per policy; trials report means (the objective) and *_std."""
    seeds: list[int] = [0]
    """Pruning and fine-tuning seeds; more than one is searched."""
    distill: Optional[list[float]] = None
    """Distillation weights to search; unset: finetune.distill.weight."""
    precision: list[str] = ["fp32"]
    """Precisions a policy ships in (fp32, int8); [int8] quantizes every policy, [fp32, int8] searches it."""

    @field_validator("mode")
    @classmethod
    def _mode(cls, value):
        return registered(value, modes(), "mode")

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

    @field_validator("round_to", mode="before")
    @classmethod
    def _round_to(cls, value):
        values = [value] if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(values, list) or not values or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024 for v in values):
            raise ValueError(f"give a channel multiple in [1, 1024] or a list of them, got {value!r}")
        return list(dict.fromkeys(values))

    @field_validator("distill")
    @classmethod
    def _distill(cls, value):
        if value is not None and (not value or not all(0 <= w <= 1 for w in value)):
            raise ValueError(f"distillation weights lie in [0, 1] (0: off), got {value}")
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value):
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values:
            raise ValueError(f"give a precision or a list of them ({', '.join(PRECISIONS)}), got {value!r}")
        for name in values:
            registered(name, PRECISIONS, "precision")
            try:
                PRECISIONS[name].check_installed()
            except PdsearchError as exc:
                raise ValueError(str(exc)) from None
        return list(dict.fromkeys(values))

    @field_validator("allocators")
    @classmethod
    def _allocators(cls, value):
        for name in value:
            registered(name, ALLOCATORS, "allocator")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SpaceConfig":
        if self.pd is not None and self.shape is not None:
            raise ValueError("set either space.pd (named PDs) or space.shape (continuous shapes), not both")
        if self.pd is None and self.shape is None:
            object.__setattr__(self, "pd", list(PD_SHAPES))
        if self.shape is not None and not ALLOCATORS[self.mode].custom_shapes:
            raise ValueError(f"{self.mode} mode takes named PDs (space.pd), not space.shape")
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
        return list(dict.fromkeys(allocator_for(pd, self.mode).name for pd in (self.pd or [None])))

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


class Constraints(_Section):
    """One optional bound per objective (objectives.CONSTRAINTS), a plugin's as well as a built-in's.

    The keys are read from the table when a config is validated, after ``plugins:`` load,
    so an objective a plugin registers is constrained like a built-in one.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_bounds(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping of constraints, got {type(data).__name__}")
        fields = {c.field: c for c in CONSTRAINTS.values()}
        bounds = {}
        for key, value in data.items():
            if key not in fields:
                raise ValueError(f".{key}: unknown key{did_you_mean(key, fields)}: the constraints are {', '.join(fields)}")
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f".{key}: give a number, got {value!r}")
            if value < 0 or (fields[key].percent and value >= 100):
                raise ValueError(f".{key}: must lie in [0, {'100)' if fields[key].percent else 'inf)'}, got {value:g}")
            bounds[key] = float(value)
        return bounds

    def limit(self, field: str) -> float | None:
        """The bound set on ``field`` (``min_flops_reduction``, ...), None if it is not constrained."""
        return (self.model_extra or {}).get(field)

    def violations(self, metrics: Mapping[str, Any], fixed_only: bool = False) -> dict[str, float]:
        """By how much a trial misses each set constraint (Optuna's convention: met when <= 0), in points.

        ``fixed_only``: only constraints on what pruning fixes (cost), not on accuracy, which
        an unfinished fine-tune has not reached yet.
        """
        values = {}
        for c in CONSTRAINTS.values():
            if fixed_only and c.evolves:
                continue
            limit = self.limit(c.field)
            if limit is not None:
                value = float(metrics[c.metric])
                values[c.name] = value - limit if c.sense == "<=" else limit - value
        return values

    def describe(self) -> str:
        parts = [f"{c.label} {c.sense} {self.limit(c.field):g}{c.unit}"
                 for c in CONSTRAINTS.values() if self.limit(c.field) is not None]
        return ", ".join(parts) or "no constraints"

    def measures(self) -> set[str]:
        """What trials must measure for the constraints set (latency, energy)."""
        return {o.measures for o in OBJECTIVES.values() if o.measures and self.limit(o.constraint.field) is not None}


class LatencyConfig(_Section):
    """Where and how latency is known (when it is an objective, a constraint or a budget).

    ``measured``: trials time the pruned model and the baseline on ``runtime`` on their own
    node; ``table``: it is predicted from a latency table built on the deployment target
    (``pdsearch latency-table``), and trials still measure on their node when they can.
    """

    runtime: str = "torch"
    """Where latency is measured: torch (eager) or onnxruntime."""
    threads: Optional[int] = Field(None, ge=1)
    """Intra-op threads while timing; unset: the trial's (one per CPU it is given)."""
    input_size: Optional[int] = Field(None, gt=0, le=4096)
    """The deployment resolution latency is measured at; unset: data.input_size."""
    batch_sizes: list[int] = [1]
    """Batch sizes timed: the first is the objective's, a second is reported too."""
    warmup: int = Field(10, ge=0)
    """Untimed runs before timing."""
    runs: int = Field(50, ge=3)
    """Timed runs per round; the median counts."""
    rounds: int = Field(3, ge=1)
    """Alternating rounds, pruned against baseline: the round whose ratio is the median counts."""
    corrections: int = Field(3, ge=0)
    """Times a measured latency budget missed by more than budget_tolerance is planned again (NetAdapt's loop)."""
    budget_tolerance: float = Field(2.0, gt=0)
    """Points of latency reduction a measured budget may miss by."""
    table: Optional[str] = None
    """A latency table of the target (pdsearch latency-table): for latency budgets and predictions."""
    source: Literal["measured", "table"] = "measured"
    """What the latency objective and constraint read: measured in the trial, or predicted by the table."""
    target_resource: Optional[str] = None
    """The custom Ray resource of the deployment node: latency-table --address runs there."""

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        registered(value, RUNTIMES, "latency runtime")
        try:
            RUNTIMES[value].check_installed()
        except PdsearchError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _table_for_source(self) -> "LatencyConfig":
        if self.source == "table" and self.table is None:
            raise ValueError("source 'table' needs a table: set latency.table (build one with pdsearch latency-table)")
        return self

    @field_validator("batch_sizes")
    @classmethod
    def _sizes(cls, value):
        if not 1 <= len(value) <= 2 or min(value) < 1:
            raise ValueError("give one or two positive batch sizes")
        return value


class QuantizationConfig(_Section):
    """How a policy whose precision is quantized (space.precision: int8) becomes the model that ships."""

    recipe: str = "minmax"
    """How a quantized policy is made: a name in the recipe registry (minmax, percentile, per_tensor)."""
    calibration_batches: int = Field(8, ge=1, le=1000)
    """Training batches (never validation or test) whose activation ranges set the INT8 scales."""

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, value: str) -> str:
        return registered(value, RECIPES, "quantization recipe")


class FidelityConfig(_Section):
    """MO-ASHA's rungs: fine-tune epochs min_epochs·eta^k below finetune.epochs (0: the screening)."""

    min_epochs: int = Field(1, ge=0)
    """Fine-tune epochs at MO-ASHA's first rung (0: the screening accuracy)."""
    eta: float = Field(3.0, gt=1)
    """Rung spacing and the share kept: rungs at min_epochs * eta^k, the best 1/eta go on."""


class SearchSettings(_Section):
    sampler: str = "nsga2"
    """The Optuna sampler: nsga2, tpe, gp, random or grid."""
    scheduler: str = "fifo"
    """The Ray Tune scheduler: fifo (every trial to the end) or mo_asha (stop unpromising trials at rungs)."""
    fidelity: FidelityConfig = FidelityConfig()
    """MO-ASHA's rungs."""
    num_trials: int = Field(24, ge=1)
    """Trials to run (a grid runs every point instead)."""
    seed: int = 0
    """Seeds the sampler."""
    objectives: list[str] = ["accuracy", "flops", "params"]
    """What the front trades off: accuracy, flops, params, latency, energy (and plugins' objectives)."""
    constraints: Constraints = Constraints()
    """One optional bound per objective; samplers steer to feasible policies and the front holds feasible ones only."""
    storage: Optional[str] = None
    """An Optuna storage URL (postgresql+psycopg2://...); unset: SQLite in the run directory."""
    storage_timeout: float = Field(600.0, gt=0)
    """Seconds the study database may stay unreachable before the search stops cleanly."""
    tune_storage: Optional[str] = None
    """Ray Tune's storage_path: a shared folder or s3://, gs://, ... (opened with pyarrow); unset: RUN_DIR/tune."""
    study_name: str = "pdsearch"
    """The Optuna study's name in its storage."""
    population_size: int = Field(8, ge=2)
    """NSGA-II's generation size."""
    max_failures: int = Field(2, ge=0)
    """Retries of a trial whose worker or node died (never of a trial that failed by itself)."""
    trackers: list[str] = []
    """Experiment trackers to log to: mlflow, wandb."""
    tracking_uri: Optional[str] = None
    """MLflow's tracking URI; unset: MLFLOW_TRACKING_URI, else SQLite in the run directory."""

    @field_validator("trackers")
    @classmethod
    def _installed_trackers(cls, value: list[str]) -> list[str]:
        for name in value:
            registered(name, TRACKERS, "tracker")
            try:
                TRACKERS[name].check_installed(name)
            except PdsearchError as exc:
                raise ValueError(str(exc)) from None
        return list(dict.fromkeys(value))

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        return registered(value, SAMPLERS, "sampler")

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        return registered(value, SCHEDULERS, "scheduler")

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
    """CPUs per trial (and torch threads)."""
    gpu: float = Field(0, ge=0)
    """GPUs per trial; a fraction packs several trials on one GPU."""
    max_concurrent: Optional[int] = Field(None, ge=1)
    """Trials at once; unset: what the cluster can run."""


class SearchConfig(_Section):
    name: str = "pdsearch"
    """The search's name: Tune's experiment, the default run directory runs/NAME, the tracker's project."""
    plugins: list[str] = []
    """Modules that register allocators, objectives, samplers, ...: imported before validation and in every worker."""
    run_dir: Optional[str] = None
    """The run directory (a local or NFS path, never a URL); --run-dir overrides it; unset: runs/NAME."""
    data: DataConfig = DataConfig()
    """The dataset, its splits and batches."""
    model: ModelConfig = ModelConfig()
    """The network to prune."""
    baseline: BaselineConfig = BaselineConfig()
    """The unpruned model every trial starts from: a checkpoint, or trained once per run."""
    finetune: FinetuneConfig = FinetuneConfig()
    """Each trial's screening and fine-tuning of its pruned model."""
    space: SpaceConfig = SpaceConfig()
    """What a policy is drawn from: amount, distribution, criterion, channel multiple, precision."""
    search: SearchSettings = SearchSettings()
    """Sampler, scheduler, objectives, constraints, storage and trackers."""
    resources: Resources = Resources()
    """What one trial is given on the cluster."""
    latency: LatencyConfig = LatencyConfig()
    """Where and how latency is known, when it is an objective, a constraint or a budget."""
    quantization: QuantizationConfig = QuantizationConfig()
    """How a quantized policy (space.precision: int8) becomes the model that ships."""

    @field_validator("run_dir")
    @classmethod
    def _local_run_dir(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                local_folder(value)
            except PdsearchError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _gpu_objectives(self) -> "SearchConfig":
        needs_gpu = [o.name for o in OBJECTIVES.values() if o.needs_gpu and o.measures in self.search.measures()]
        if needs_gpu and not self.resources.gpu:
            raise ValueError(f"{needs_gpu[0]} is measured on the GPU (NVML), but trials get none: "
                             "set resources.gpu, or drop it from search.objectives and search.constraints")
        return self

    @model_validator(mode="after")
    def _latency_budget_has_a_table(self) -> "SearchConfig":
        if self.space.budget is not None and self.space.budget.metric == "latency" and self.latency.table is None:
            raise ValueError("space.budget.latency_reduction is met on a latency table's prediction: set latency.table "
                             "(build one on the target with pdsearch latency-table)")
        return self

    @model_validator(mode="after")
    def _precisions_run_where_latency_is_known(self) -> "SearchConfig":
        timed = OBJECTIVES["latency"].measures in self.search.measures() or self.latency.table is not None or (
            self.space.budget is not None and self.space.budget.metric == "latency")
        for name in self.space.precision if timed else ():
            try:
                PRECISIONS[name].check_runtime(self.latency.runtime)
            except PdsearchError as exc:
                raise ValueError(f"space.precision: {exc}") from None
        if self.latency.table is not None and len(self.space.precision) > 1:
            raise ValueError("a latency table is of one precision: give space.precision one (build a table for it "
                             "with pdsearch latency-table --precision)")
        return self

    @model_validator(mode="after")
    def _scheduler_can_serve(self) -> "SearchConfig":
        check = SCHEDULERS[self.search.scheduler].check
        if check is not None:
            check(self)
        return self

    def with_distill(self, weight: float) -> "SearchConfig":
        """This config with fine-tuning distilled at ``weight`` (0: off)."""
        distill = self.finetune.distill.model_copy(update={"weight": float(weight)})
        return self.model_copy(update={"finetune": self.finetune.model_copy(update={"distill": distill})})

    def baseline_key(self) -> str:
        """What the baseline depends on: model, data and its own training."""
        # how a file is read, and whether a weak result is accepted, are not what the baseline holds
        baseline = self.baseline.model_dump(exclude={"trust_checkpoint", "allow_weak"})
        return digest({"model": self.model.model_dump(), "data": self.data.model_dump(), "baseline": baseline})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", by_alias=True), sort_keys=False)


def _format_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    extra = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    if message.startswith("."):  # a section's validator naming the key within it (".min_flops_reduction: ...")
        return f"{where}{message}{extra}" if where else f"{message[1:]}{extra}"
    return f"{where}: {message}{extra}" if where else f"{message}{extra}"


def override_constraints(base: Constraints, **values: float | None) -> Constraints:
    """``base`` with the constraints given (None keeps base's), validated like the config."""
    try:
        return Constraints.model_validate({**base.model_dump(), **{k: v for k, v in values.items() if v is not None}})
    except ValidationError as exc:
        raise PdsearchError(f"constraint {_format_error(exc)}") from None


def parse_config(data: Any, source: str = "config") -> SearchConfig:
    if data is None:
        raise PdsearchError(f"{source}: the configuration is empty")
    if not isinstance(data, dict):
        raise PdsearchError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    plugins = data.get("plugins")
    if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
        load_plugins(plugins)  # before validation: they add the names the config may use
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
