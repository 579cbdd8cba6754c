"""Before the first trial: the baseline's training and the sensitivity profile say where they are, and a baseline
that learnt nothing stops the search (unless told to go on)."""
import io

import pytest

from pdsearch.cli import main
from pdsearch.searching.progress import StartProgress

from configs import near_chance_checkpoint, tiny_config


def test_start_progress_prints_each_stage_with_its_eta_and_a_heartbeat_while_it_runs():
    out = io.StringIO()
    p = StartProgress("tiny", out=out, gap=3600, heartbeat=0.0)
    p.update({"stage": "baseline", "unit": "epoch", "done": 0, "total": 4, "val_accuracy": None})
    p.update({"stage": "baseline", "unit": "epoch", "done": 1, "total": 4, "val_accuracy": 61.5})  # within the gap
    p.tick()  # the heartbeat repeats the last report
    p.update({"stage": "baseline", "unit": "epoch", "done": 4, "total": 4, "val_accuracy": 97.25})
    p.update({"stage": "sensitivity profile", "unit": "group", "done": 0, "total": 5})
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("[0:00] tiny: baseline, epoch 0/4, ETA -")
    assert "baseline, epoch 1/4, val 61.50%, ETA 0:00" in lines[1]
    assert "baseline, epoch 4/4, val 97.25%, done in 0 s" in lines[2]
    assert "sensitivity profile, group 0/5, ETA -" in lines[3]


@pytest.mark.slow  # (24 s: the default run stays under 5 minutes)
def test_allow_weak_searches_it_anyway_and_quiet_prints_nothing_before_the_summary(ray_session, tmp_path, capsys):
    config = tmp_path / "weak.yaml"
    cfg = tiny_config(baseline={"checkpoint": str(near_chance_checkpoint(tmp_path)), "allow_weak": True},
                      search={"num_trials": 1})
    config.write_text(cfg.to_yaml())
    assert main(["search", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "trials: 1 (" in out and out.lstrip().startswith("baseline: val") and "epoch" not in out


def test_the_search_prints_the_baselines_epochs_the_profiles_groups_and_the_loss_aware_path_before_the_first_trial(
        ray_session, tmp_path, capsys):
    cfg = tiny_config(space={"pd": ["sensitivity", "loss_aware"], "gpr": None,
                             "budget": {"flops_reduction": {"values": [20, 40]}},
                             "allocators": {"loss_aware": {"retrain_steps": 2}}},
                      search={"num_trials": 1})
    config = tmp_path / "s.yaml"
    config.write_text(cfg.to_yaml())
    assert main(["search", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    epochs = [line for line in out.splitlines() if "tiny: baseline, epoch" in line]
    assert epochs[0].endswith("epoch 0/6, ETA -") and "epoch 6/6, val " in epochs[-1] and "done in" in epochs[-1]
    groups = [line for line in out.splitlines() if "tiny: sensitivity profile, group" in line]
    assert groups[0].endswith("group 0/5, ETA -") and "group 5/5, done in" in groups[-1]
    assert out.index("sensitivity profile, group 5/5") < out.index("trials: 1 (")
    path = [line for line in out.splitlines() if "tiny: loss-aware path, percent of flops removed" in line]
    assert path[0].endswith("removed 0/40, ETA -") and "removed 40/40, done in" in path[-1]  # to the largest budget
    assert out.index("loss-aware path, percent of flops removed 40/40") < out.index("trials: 1 (")
    assert len(list((tmp_path / "run" / "baseline").glob("allocation-paths-*.json"))) == 1
