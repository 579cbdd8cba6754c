"""Distillation from the baseline: the loss gains the teacher's term, weight 0 is exactly plain training,
trials and exports distil when asked, and the weight can be searched."""
import copy

import pytest
import torch
import torch.nn.functional as F

import pdsearch
from pdsearch.space import SearchSpace
from pdsearch.trial.training import Teacher, train
from pdsearch.trial.trial import run_trial, trial_context

from configs import tiny_config

CPU = torch.device("cpu")


def test_the_loss_adds_the_teachers_soft_targets_at_the_temperature():
    torch.manual_seed(0)
    x, student_logits = torch.randn(6, 4), torch.randn(6, 3)
    teacher_model = torch.nn.Linear(4, 3)
    hard = torch.tensor(1.7)
    t = Teacher(teacher_model, weight=0.25, temperature=2.0)
    soft = teacher_model(x).detach()
    p, log_q = F.softmax(soft / 2, 1), F.log_softmax(student_logits / 2, 1)
    kl = (p * (p.log() - log_q)).sum(1).mean() * 4  # T² · KL(teacher ‖ student)
    assert t.loss(x, student_logits, hard) == pytest.approx(float(0.75 * hard + 0.25 * kl), rel=1e-5)
    same = Teacher(torch.nn.Identity(), weight=0.5, temperature=3.0)  # a teacher that agrees: no extra term
    assert same.loss(student_logits, student_logits, hard) == pytest.approx(0.5 * 1.7, abs=1e-6)


def test_training_with_a_teacher_runs_it_on_every_batch_and_moves_the_student_elsewhere(baseline):
    cfg = tiny_config()
    ctx = trial_context(cfg, baseline)
    calls = []
    teacher_model = copy.deepcopy(ctx.model).eval()
    teacher_model.register_forward_hook(lambda *a: calls.append(1))
    plain, taught = copy.deepcopy(ctx.model), copy.deepcopy(ctx.model)
    for model, teacher in ((plain, None), (taught, Teacher(teacher_model, 0.9, 4.0))):
        torch.manual_seed(0)
        train(model, ctx.data, cfg.finetune, CPU, seed=3, teacher=teacher)
    steps = -(-len(ctx.data.train) // ctx.data.batch_size) * cfg.finetune.epochs
    assert len(calls) == steps
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), taught.state_dict().values()))


def test_weight_zero_is_exactly_todays_trial_and_a_weight_is_recorded(baseline):
    cfg = tiny_config()
    params = {"gpr": 50.0, "pd": "PD1"}
    plain = run_trial(params, cfg, baseline, CPU)
    off = run_trial(params, cfg.with_distill(0.0), baseline, CPU)
    on = run_trial(params, cfg.with_distill(0.8), baseline, CPU)
    assert plain["accuracy"] == off["accuracy"] and plain["test_accuracy"] == off["test_accuracy"]
    assert plain["distill"] == 0.0 and on["distill"] == 0.8 and on["status"] == "ok"
    assert on["accuracy_before_finetune"] == plain["accuracy_before_finetune"]  # the same pruned model ...
    assert (on["accuracy"], on["test_accuracy"]) != (plain["accuracy"], plain["test_accuracy"])  # ... taught


def test_the_weight_is_a_sampler_dimension_when_the_space_lists_several():
    space = SearchSpace(tiny_config(space={"distill": [0, 0.5]}))
    assert list(space.fixed["distill"].choices) == [0, 0.5] and space.grid["distill"] == [0, 0.5]
    assert space.distill_weight({"gpr": 20.0, "pd": "PD1", "distill": 0.5}) == 0.5
    assert space.policy({"gpr": 20.0, "pd": "PD1", "distill": 0.5}) == space.policy({"gpr": 20.0, "pd": "PD1"})
    single = SearchSpace(tiny_config(space={"distill": [0.3]}, finetune={"distill": {"weight": 0.1}}))
    assert "distill" not in single.fixed and single.distill_weight({}) == 0.3
    assert SearchSpace(tiny_config(finetune={"distill": {"weight": 0.1}})).distill_weight({}) == 0.1


def test_the_final_finetune_distils_when_asked(nsga_run, tmp_path):
    import shutil

    _, run_dir, _ = nsga_run
    run = shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("tune"))
    chosen = pdsearch.select(run, prefer="accuracy", export=tmp_path / "kd.pt2", distill=0.5)
    export = chosen.record["export"]
    assert export["distill"] == {"weight": 0.5, "temperature": 4.0}
    assert "distilled from the baseline at weight 0.5" in export["source"]
    plain = pdsearch.select(run, prefer="accuracy", export=tmp_path / "plain.pt2").record["export"]
    assert plain["distill"] is None and "no distillation" in plain["source"]
