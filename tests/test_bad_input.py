"""Bad input, as a table: one line naming the problem, exit code 2, no traceback, nothing launched.

Every case runs the real CLI with Ray's entry point replaced by a tripwire: an error
the driver can find before starting Ray must be found before it. (The unreachable
--address case is the one error that needs a connection attempt; it runs in a fresh
process.)
"""
import subprocess
import sys

import pytest
import ray
import torch
import yaml

import pdsearch.searching.driver
from pdsearch.cli import main

from configs import near_chance_checkpoint, tiny_config, tiny_table


def config(tmp_path, text: str | None = None, **sections) -> str:
    """A config file: ``text`` as is, or the tiny search with ``sections`` merged in."""
    path = tmp_path / "search.yaml"
    if text is None:
        data = tiny_config().model_dump(mode="json", by_alias=True)
        for section, values in sections.items():
            data[section] = {**data[section], **values} if isinstance(values, dict) else values
        text = yaml.safe_dump(data)
    path.write_text(text)
    return str(path)


def search(tmp_path, text=None, **sections) -> list[str]:
    return ["search", config(tmp_path, text, **sections), "--run-dir", str(tmp_path / "run")]


def other_architecture_checkpoint(tmp_path) -> list[str]:
    from pdsearch.models import build_model

    path = tmp_path / "resnet20.pt"
    torch.save(build_model("resnet20", num_classes=10).state_dict(), path)
    return search(tmp_path, baseline={"checkpoint": str(path)})


def checkpoint_that_runs_code(tmp_path) -> list[str]:
    from pdsearch.models import build_model

    path = tmp_path / "module.pt"
    torch.save(build_model("small_cnn", num_classes=10, in_channels=1, width=8), path)  # a pickled nn.Module
    return search(tmp_path, baseline={"checkpoint": str(path)})


def unwritable_run_dir(tmp_path) -> list[str]:
    (tmp_path / "a_file").write_text("")  # root can write anywhere, but not below a file
    return ["search", config(tmp_path), "--run-dir", str(tmp_path / "a_file" / "run")]


def run_without_baseline(tmp_path) -> list[str]:
    run = tmp_path / "norun"
    run.mkdir()
    (run / "config.yaml").write_text(tiny_config().to_yaml())
    (run / "model.json").write_text('{"name": "small_cnn", "layers": []}')
    return ["sensitivity", str(run)]


FLOPS_BUDGET = {"flops_reduction": {"low": 30, "high": 70}}
LATENCY_BUDGET = {"gpr": None, "budget": {"latency_reduction": {"low": 20, "high": 40}}}


def search_with_table(tmp_path, table: dict | None = None, **latency) -> list[str]:
    """A search with a latency table of the tiny model (``table``: how it was built, where it differs)."""
    path = tiny_table(tmp_path / "table.json", **(table or {}))
    return search(tmp_path, latency={"table": str(path), **latency}, space=LATENCY_BUDGET)


def int8_search_with_table(tmp_path, table_precision: str, search_precision: str) -> list[str]:
    """A latency budget searched in ``search_precision`` on a table timed in ``table_precision``."""
    path = tiny_table(tmp_path / "table.json", runtime="onnxruntime", precision=table_precision)
    return search(tmp_path, latency={"table": str(path), "runtime": "onnxruntime"},
                  space={**LATENCY_BUDGET, "precision": [search_precision]})


def plan_with_table(tmp_path, *flags: str) -> list[str]:
    path = tiny_table(tmp_path / "table.json", model="resnet20", input_size=32, in_channels=3)
    return ["plan", "--model", "resnet20", "--input-size", "32", "--latency-table", str(path), *flags]

CASES = {
    # the YAML itself
    "empty YAML": (lambda t: search(t, ""), "the configuration is empty"),
    "malformed YAML": (lambda t: search(t, "name: [unclosed"), "malformed YAML at line"),
    "YAML list, not a mapping": (lambda t: search(t, "- a\n- b"), "expected a mapping"),
    "missing config file": (lambda t: ["search", str(t / "nope.yaml")], "config file not found"),
    "unknown top-level key": (lambda t: search(t, "colour: blue"), "colour: unknown key"),
    "unknown key in a section": (lambda t: search(t, data={"size": 3}), "data.size: unknown key"),
    # types and ranges
    "wrong type": (lambda t: search(t, data={"input_size": "big"}), "data.input_size: Input should be a valid integer"),
    "non-integer epochs": (lambda t: search(t, finetune={"epochs": 2.5}), "finetune.epochs"),
    "GPR above 100": (lambda t: search(t, space={"gpr": {"low": 10, "high": 100}}), "GPR range must lie in [0, 100)"),
    "GPR range reversed": (lambda t: search(t, space={"gpr": {"low": 50, "high": 10}}), "must not exceed high"),
    "empty PD list": (lambda t: search(t, space={"pd": []}), "the PD list is empty"),
    "zero trials": (lambda t: search(t, search={"num_trials": 0}), "search.num_trials"),
    "--num-trials not a number": (lambda t: search(t) + ["--num-trials", "many"], "invalid int value"),
    "negative GPU request": (lambda t: search(t, resources={"gpu": -1}), "resources.gpu"),
    # unknown names
    "unknown PD": (lambda t: search(t, space={"pd": [1, 7]}), "unknown pruning distribution"),
    "unknown criterion": (lambda t: search(t, space={"criteria": ["l1", "magic"]}), "unknown criterion 'magic'"),
    "unknown sampler": (lambda t: search(t, search={"sampler": "annealing"}), "search.sampler: unknown sampler 'annealing'"),
    "unknown scheduler": (lambda t: search(t, search={"scheduler": "hyperband"}),
                          "search.scheduler: unknown scheduler 'hyperband'"),
    "plugin that cannot be imported": (lambda t: search(t, plugins=["no_such_plugin"]),
                                       "plugins: cannot import 'no_such_plugin'"),
    "unknown objective": (lambda t: search(t, search={"objectives": ["accuracy", "speed"]}),
                          "search.objectives: unknown objective 'speed'"),
    "energy without a GPU": (lambda t: search(t, search={"objectives": ["accuracy", "energy"]}),
                             "energy is measured on the GPU (NVML), but trials get none"),
    "unknown dataset": (lambda t: search(t, data={"dataset": "mnist"}), "data.dataset: unknown dataset 'mnist'"),
    "unknown model": (lambda t: search(t, model={"name": "resnet999", "kwargs": {}}), "unknown model 'resnet999'"),
    "unknown timm model": (lambda t: search(t, model={"name": "timm/resnt26d", "kwargs": {}}),
                           "unknown timm model 'resnt26d' (did you mean resnet26d"),
    "unknown criterion in the pool": (lambda t: search(t, space={"pd": ["loss_aware"], "criteria_pool": ["l1", "magic"]}),
                                      "space.criteria_pool: unknown criterion 'magic'"),
    "unknown allocator setting": (lambda t: search(t, space={"pd": ["sensitivity"], "allocators": {"sensitivity": {"speed": 1}}}),
                                  "allocators.sensitivity.speed: unknown key"),
    # budgets and allocators
    "budget together with gpr": (lambda t: search(t, space={"budget": FLOPS_BUDGET}), "set either space.gpr or space.budget"),
    "budget outside (0, 100)": (lambda t: search(t, space={"gpr": None, "budget": {"params_reduction": {"low": 0, "high": 50}}}),
                                "a budget must lie in (0, 100)"),
    "budget naming no metric": (lambda t: search(t, space={"gpr": None, "budget": {}}), "give flops_reduction, params_reduction or latency_reduction"),
    "unreachable budget": (lambda t: search(t, space={"gpr": None, "budget": {"flops_reduction": {"low": 90, "high": 99.9}}}),
                           "the most this model allows is"),
    "loss_aware with an empty pool": (lambda t: search(t, space={"pd": ["loss_aware"], "criteria_pool": []}),
                                      "needs a non-empty criteria pool"),
    "sensitivity on a run with no baseline": (run_without_baseline, "has no trained baseline yet"),
    "plan with a GPR and a budget": (lambda t: ["plan", "--model", "resnet20", "--gpr", "30", "--flops-reduction", "50"],
                                     "not both"),
    "plan of a data-driven PD": (lambda t: ["plan", "--model", "resnet20", "--flops-reduction", "50", "--pd", "loss_aware"],
                                 "measured on trained weights and data"),
    # distillation
    "distillation weight above 1": (lambda t: search(t, finetune={"distill": {"weight": 1.5}}),
                                    "finetune.distill.weight: Input should be less than or equal to 1"),
    "non-positive distillation temperature": (lambda t: search(t, finetune={"distill": {"weight": 0.5, "temperature": 0}}),
                                              "finetune.distill.temperature: Input should be greater than 0"),
    "searched distillation weight outside [0, 1]": (lambda t: search(t, space={"distill": [0, 2]}),
                                                    "space.distill: distillation weights lie in [0, 1]"),
    "distillation from a missing checkpoint": (
        lambda t: search(t, baseline={"checkpoint": str(t / "gone.pt")}, finetune={"distill": {"weight": 0.5}}),
        "finetune.distill distils from the baseline, and baseline.checkpoint"),
    # impossible requests
    "impossible constraint": (lambda t: search(t, search={"constraints": {"min_flops_reduction": 120}}),
                              "search.constraints.min_flops_reduction"),
    "grid over a continuous GPR": (lambda t: search(t, space={"gpr": {"low": 10, "high": 50}}, search={"sampler": "grid"}),
                                   "grid needs a step for gpr"),
    "rate reaching 100% in FlexiPrune mode": (
        lambda t: search(t, model={"name": "vgg16", "kwargs": {}}, data={"input_size": 32},
                         space={"mode": "flexiprune", "gpr": {"values": [90]}, "pd": [3]}), "use a GPR below"),
    # latency on the target
    "unknown latency runtime": (lambda t: search(t, latency={"runtime": "tensorrt"}),
                                "latency.runtime: unknown latency runtime 'tensorrt'"),
    "unknown tracker": (lambda t: search(t, search={"trackers": ["mlfow"]}),
                        "search.trackers: unknown tracker 'mlfow' (did you mean mlflow?)"),
    "tracker not installed": (lambda t: search(t, plugins=["registry_plugin"], search={"trackers": ["neptune"]}),
                              'search.trackers: neptune needs neptune, which is not installed: pip install -e ".[neptune]"'),
    "latency runtime not installed": (lambda t: search(t, plugins=["registry_plugin"], latency={"runtime": "edge_npu"}),
                                      "needs edge_npu_sdk, which is not installed"),
    "latency source table without a table": (lambda t: search(t, latency={"source": "table"}),
                                             "source 'table' needs a table"),
    "latency budget without a table": (lambda t: search(t, space=LATENCY_BUDGET),
                                       "space.budget.latency_reduction is met on a latency table's prediction"),
    "plan of a latency budget without a table": (
        lambda t: ["plan", "--model", "resnet20", "--latency-reduction", "30"], "latency budget is predicted from"),
    "missing latency table": (lambda t: search(t, latency={"table": str(t / "gone.json")}, space=LATENCY_BUDGET),
                              "gone.json' does not exist"),
    "latency table of another model": (lambda t: search_with_table(t, {"model": "resnet20", "in_channels": 1}),
                                       "does not fit this model: layer"),
    "latency table at another input size": (lambda t: search_with_table(t, {"input_size": 16}),
                                            "was built for input_size 16, this search's is 8"),
    "latency table of another runtime": (lambda t: search_with_table(t, runtime="onnxruntime"),
                                         "was built for runtime 'torch', this search's is 'onnxruntime'"),
    "latency table of another thread count": (lambda t: search_with_table(t, threads=2),
                                              "was built for threads None, this search's is 2"),
    "unreachable latency budget": (lambda t: plan_with_table(t, "--latency-reduction", "99"),
                                   "the most this model allows is"),
    "a model ONNX cannot export": (lambda t: ["latency-table", "--model", "user_models:spectral_net", "--input-size",
                                              "8", "--out", str(t / "t.json")],
                                   "ONNX cannot export this model (operator aten::fft_fft2)"),
    "latency table out where no file can be": (
        lambda t: (t / "a-file").write_text("") or ["latency-table", "--model", "resnet20", "--input-size", "8",
                                                     "--out", str(t / "a-file" / "t.json")],
        "cannot write"),
    "export to an unknown format": (lambda t: ["select", *run_without_baseline(t)[1:], "--export", str(t / "m.tflite")],
                                    "the format follows the suffix, one of .pt2, .onnx"),
    "round_to of zero": (lambda t: search(t, space={"round_to": [8, 0]}), "space.round_to: give a channel multiple"),
    # precision
    "unknown precision": (lambda t: search(t, space={"precision": ["fp32", "int4"]}),
                          "space.precision: unknown precision 'int4'"),
    "precision not installed": (lambda t: search(t, plugins=["registry_plugin"], space={"precision": ["npu_int4"]}),
                                'precision \'npu_int4\' needs edge_npu_sdk, which is not installed: pip install -e ".[edge]"'),
    "zero calibration batches": (lambda t: search(t, space={"precision": ["int8"]}, quantization={"calibration_batches": 0}),
                                 "quantization.calibration_batches: Input should be greater than or equal to 1"),
    "unknown quantization recipe": (lambda t: search(t, quantization={"recipe": "entropic"}),
                                    "quantization.recipe: unknown quantization recipe 'entropic'"),
    "int8 timed on a runtime that cannot run it": (
        lambda t: search(t, space={"precision": ["int8"]}, search={"objectives": ["accuracy", "latency"]}),
        "space.precision: precision 'int8' runs on onnxruntime, not on latency runtime 'torch'"),
    "a model ONNX Runtime cannot quantize": (
        lambda t: search(t, model={"name": "user_models:double_net", "kwargs": {}}, space={"precision": ["int8"]}),
        "ONNX Runtime cannot quantize this model (operator Conv, node /mix/Conv)"),
    "FP32 latency table for an INT8 search": (lambda t: int8_search_with_table(t, "fp32", "int8"),
                                              "was built for precision 'fp32', this search's is 'int8'"),
    "INT8 latency table for an FP32 search": (lambda t: int8_search_with_table(t, "int8", "fp32"),
                                              "was built for precision 'int8', this search's is 'fp32'"),
    "one latency table for two precisions": (
        lambda t: search(t, latency={"table": "t.json", "runtime": "onnxruntime"}, space={"precision": ["fp32", "int8"]}),
        "a latency table is of one precision: give space.precision one"),
    # the study database
    "study database refusing connections": (
        lambda t: search(t, search={"storage": "postgresql+psycopg2://ann:s3cret@127.0.0.1:1/studies"}),
        "cannot open the study database postgresql+psycopg2://ann:***@127.0.0.1:1/studies: "),
    "study database URL of no known kind": (lambda t: search(t, search={"storage": "nosuchdb://host/studies"}),
                                            "cannot open the study database nosuchdb://host/studies"),
    "non-positive storage timeout": (lambda t: search(t, search={"storage_timeout": 0}), "search.storage_timeout"),
    # addresses
    "run_dir that is a URL": (lambda t: search(t, run_dir="s3://my-bucket/pdsearch/x")[:2],
                              "run_dir: run directory 's3://my-bucket/pdsearch/x' is a URL: it holds the lock"),
    "--run-dir that is a URL": (lambda t: ["search", config(t), "--run-dir", "gs://bucket/run"],
                                "run directory 'gs://bucket/run' is a URL"),
    "Tune storage no filesystem opens": (lambda t: search(t, search={"tune_storage": "hdfs://127.0.0.1:1/pdsearch"}),
                                         "search.tune_storage 'hdfs://127.0.0.1:1/pdsearch' cannot be opened (Unable "
                                         "to load libjvm)"),
    "Tune storage of no known scheme": (lambda t: search(t, search={"tune_storage": "nosuchfs://bucket/x"}),
                                        "search.tune_storage 'nosuchfs://bucket/x' cannot be opened (Unrecognized "
                                        "filesystem type in URI"),
    "MLflow file store": (lambda t: search(t, search={"trackers": ["mlflow"], "tracking_uri": f"file:{t}/mlruns"}),
                          "(search.tracking_uri) is refused by MLflow 3"),
    "MLflow server that does not answer": (
        lambda t: search(t, search={"trackers": ["mlflow"], "tracking_uri": "http://127.0.0.1:1"}),
        "MLflow tracking server 'http://127.0.0.1:1' (search.tracking_uri) cannot be reached (Connection refused)"),
    # files and folders
    "missing data directory": (lambda t: search(t, data={"dataset": "imagefolder", "root": str(t / "nowhere")}),
                               "image folder not found"),
    "missing CIFAR folder": (lambda t: search(t, data={"dataset": "cifar10", "root": str(t / "nowhere")}),
                             "cifar10 not found under"),
    "missing checkpoint": (lambda t: search(t, baseline={"checkpoint": str(t / "nope.pt")}), "baseline checkpoint not found"),
    "checkpoint of another architecture": (other_architecture_checkpoint, "does not fit model"),
    "checkpoint that needs unpickling": (checkpoint_that_runs_code, "needs full unpickling, which runs code"),
    "unprunable model": (lambda t: search(t, model={"name": "shufflenet_v2_x0_5", "kwargs": {}}, data={"input_size": 32}),
                         "cannot be pruned structurally"),
    "model that breaks once pruned": (lambda t: search(t, model={"name": "timm/ghostnet_050", "kwargs": {}},
                                                       data={"input_size": 32}), "pruned model fails to run"),
    "unwritable run directory": (unwritable_run_dir, "is not writable"),
    # verbs on something that is not a run
    "resume of a non-run": (lambda t: ["resume", str(t)], "not a pdsearch run directory"),
    "report of a non-run": (lambda t: ["report", str(t)], "not a pdsearch run directory"),
    "select of a non-run": (lambda t: ["select", str(t)], "not a pdsearch run directory"),
    "dashboard of a non-run": (lambda t: ["dashboard", str(t)], "not a pdsearch run directory"),
    "dashboard of a run with no study": (lambda t: ["dashboard", *run_without_baseline(t)[1:]], "has no study.db"),
    "--quiet with --verbose": (lambda t: search(t) + ["--quiet", "--verbose"], "not allowed with argument"),
    "unknown subcommand": (lambda t: ["prune", str(t)], "invalid choice"),
}


@pytest.fixture
def ray_tripwire(monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("Ray was started although the error could be found before")

    monkeypatch.setattr(pdsearch.searching.driver, "connect", started)
    monkeypatch.setattr(ray, "init", started)
    monkeypatch.setattr("pdsearch.reporting.dashboard.make_server", started)  # the dashboard's server


def tree(*folders) -> dict[str, int]:
    """Every file and folder below ``folders``, with its size: what a command may not change."""
    return {str(p): (p.stat().st_size if p.is_file() else -1) for folder in folders for p in folder.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_before_ray(case, tmp_path, capsys, ray_tripwire, monkeypatch):
    make_argv, message = CASES[case]
    argv = make_argv(tmp_path)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # where a default run directory (runs/NAME) would be written
    before = tree(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (case, err)
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert out == "" and "Traceback" not in err and "s3cret" not in err
    assert tree(tmp_path) == before  # nothing written, nothing to clean up


def test_int8_without_the_onnx_extra_is_one_line_naming_the_extra(tmp_path, capsys, ray_tripwire, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    argv = search(tmp_path, space={"precision": ["int8"]})
    before = tree(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'precision \'int8\' needs onnxruntime, which is not installed: ' \
        'pip install -e ".[onnx]"' in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("tracker, env, message", [
    ("mlflow", {"MLFLOW_TRACKING_URI": "file:/some/mlruns"},
     "MLflow tracking URI 'file:/some/mlruns' (MLFLOW_TRACKING_URI) is refused by MLflow 3"),
    ("wandb", {"WANDB_MODE": None, "WANDB_API_KEY": None},
     "W&B logs online (WANDB_MODE is unset) and has no credentials for api.wandb.ai"),
])
def test_a_tracker_address_from_the_environment_is_checked_before_anything_is_written(
        tracker, env, message, tmp_path, capsys, ray_tripwire, monkeypatch):
    for name, value in env.items():
        monkeypatch.delenv(name, raising=False) if value is None else monkeypatch.setenv(name, value)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no `wandb login` on this machine either
    argv = search(tmp_path, search={"trackers": [tracker]})
    before = tree(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and message in err and out == "", err
    assert "sqlite:///" in err or "WANDB_MODE=offline" in err  # what works instead
    assert tree(tmp_path) == before and not (tmp_path / "some").exists()


def weak_baseline(tmp_path) -> list[str]:
    return search(tmp_path, baseline={"checkpoint": str(near_chance_checkpoint(tmp_path))})


# found once the baseline is measured (a Ray task): before any trial, with nothing of a trial written
AFTER_BASELINE = {
    "baseline near chance": (weak_baseline, ("the baseline learnt almost nothing", "against 10.0% for chance (10 classes; "
                                             "below chance + 5 points is not searched)", "baseline.allow_weak: true")),
}


@pytest.mark.parametrize("case", list(AFTER_BASELINE))
def test_bad_input_found_on_the_baseline_is_one_line_exit_2_before_any_trial(case, ray_session, tmp_path, capsys):
    make_argv, said = AFTER_BASELINE[case]
    assert main(make_argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and all(part in err for part in said) and "Traceback" not in err, err
    assert not (tmp_path / "run" / "trials.csv").exists()


@pytest.mark.slow  # (13 s, a fresh process: the default run stays under 5 minutes)
def test_unreachable_address_is_one_line_exit_2(tmp_path):
    """The only error found by trying: connecting to a cluster that is not there."""
    argv = [sys.executable, "-m", "pdsearch", *search(tmp_path), "--address", "127.0.0.1:1"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert out.returncode == 2, out.stderr[-2000:]
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "cannot connect to Ray at '127.0.0.1:1'" in err[0]
    assert not (tmp_path / "run").exists()


def test_address_auto_with_no_cluster_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, ray_tripwire,
                                                                          monkeypatch):
    """'auto' finds a running Ray by its processes and address file; on a machine with neither, nothing is written."""
    import ray._private.services as services

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])  # no Ray process on this machine
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)  # no ray start either
    argv = [*search(tmp_path), "--address", "auto"]
    before = tree(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "no Ray cluster runs on this machine" in err and out == ""
    assert tree(tmp_path) == before
