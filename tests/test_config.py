"""Configuration is validated before anything starts: one line naming the key, exit 2."""
import pytest

from pdsearch.cli import main
from pdsearch.config import load_config

GOOD = """
name: t
data: {dataset: digits, input_size: 8}
space: {gpr: {low: 10, high: 50, step: 10}, pd: [1, 3]}
search: {num_trials: 2}
"""

BAD = [
    ("", "the configuration is empty"),
    ("name: [unclosed", "malformed YAML"),
    ("- just\n- a list", "expected a mapping"),
    ("colour: blue", "colour: unknown key"),
    ("data: {dataset: digits, size: 3}", "data.size: unknown key"),
    ("data: {input_size: big}", "data.input_size: Input should be a valid integer"),
    ("data: {input_size: -4}", "data.input_size: Input should be greater than 0"),
    ("data: {dataset: mnist}", "data.dataset: Input should be"),
    ("data: {dataset: cifar10}", "data.root is required"),
    ("space: {gpr: {low: 10, high: 100}}", "GPR range must lie in [0, 100)"),
    ("space: {gpr: {low: 50, high: 10}}", "must not exceed high"),
    ("space: {pd: []}", "the PD list is empty"),
    ("space: {pd: [1, 7]}", "unknown pruning distribution"),
    ("space: {criteria: [l1, magic]}", "unknown criterion 'magic'"),
    ("space: {pd: [1], shape: {}}", "not both"),
    ("space: {mode: flexiprune, pd: null, shape: {}}", "flexiprune mode takes named PDs"),
    ("search: {sampler: annealing}", "search.sampler: Input should be"),
    ("search: {objectives: [accuracy, latency]}", "search.objectives.1: Input should be"),
    ("search: {num_trials: 0}", "search.num_trials: Input should be greater than or equal to 1"),
    ("search: {constraints: {max_acc_drop: -1}}", "search.constraints.max_acc_drop"),
    ("resources: {gpu: -1}", "resources.gpu"),
    ("finetune: {epochs: 2.5}", "finetune.epochs"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_configs_fail_in_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = main(["search", str(path), "--run-dir", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing launched, nothing written


def test_missing_config_file(capsys, tmp_path):
    assert main(["search", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_good_config_and_overrides(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    cfg = load_config(path, {"search.num_trials": 9})
    assert cfg.search.num_trials == 9 and cfg.space.pd == ["PD1", "PD3"]
    assert cfg.space.gpr.values() == [10, 20, 30, 40, 50]
    with pytest.raises(Exception, match="search.num_trials"):
        load_config(path, {"search.num_trials": -1})


def test_baseline_key_tracks_what_the_baseline_depends_on(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    a = load_config(path)
    assert a.baseline_key() == load_config(path, {"search.num_trials": 5}).baseline_key()  # search knobs don't matter
    assert a.baseline_key() != load_config(path, {"baseline": {"epochs": 3}}).baseline_key()


def test_shipped_search_spaces_are_valid():
    from pathlib import Path

    spaces = sorted(Path(__file__).parent.parent.joinpath("search_spaces").glob("*.yaml"))
    assert len(spaces) >= 4
    for path in spaces:
        load_config(path)


def test_resolved_config_round_trips_through_yaml(tmp_path):
    import yaml

    from pdsearch.config import SearchConfig

    path = tmp_path / "ok.yaml"
    path.write_text(GOOD + "\n")
    for space in ({"gpr": {"values": [20, 30, 50]}}, {"pd": None, "shape": {"slope": {"low": -0.5, "high": 0.5}}}):
        cfg = load_config(path, {"space": {**space}})
        assert SearchConfig.model_validate(yaml.safe_load(cfg.to_yaml())) == cfg
