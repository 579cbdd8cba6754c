"""Configuration: overrides, the baseline key, the shipped spaces (bad input: test_bad_input.py)."""
import pytest

from pdsearch.config import load_config

GOOD = """
name: t
data: {dataset: digits, input_size: 8}
space: {gpr: {low: 10, high: 50, step: 10}, pd: [1, 3]}
search: {num_trials: 2}
"""

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
