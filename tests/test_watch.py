"""Watching a sweep: the progress block, policy-named trials, TensorBoard curves, optuna-dashboard,
and the interactive report opened in headless Chromium."""
import collections
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from ray import tune

import pdsearch
from pdsearch.run.directory import load_run
from pdsearch.run.front import hypervolume
from pdsearch.searching.progress import Silent, SweepProgress, tune_reporter
from pdsearch.space import SearchSpace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class FakeTrial:
    def __init__(self, status):
        self.status = status


def progress_of(nsga_run, **kwargs):
    cfg, run_dir, _ = nsga_run
    out = io.StringIO()
    reporter = SweepProgress(run_dir, SearchSpace(cfg), json.loads((run_dir / "model.json").read_text()), out=out, **kwargs)
    return reporter, out


def test_progress_block_counts_the_run_and_names_the_best_policy(nsga_run):
    cfg, run_dir, _ = nsga_run
    run = load_run(run_dir)
    reporter, out = progress_of(nsga_run)
    reporter.report([FakeTrial("RUNNING")], done=True)
    head, front_line, best_line = out.getvalue().splitlines()[-3:]
    counts = run.trials["status"].value_counts()
    assert f"{len(run.trials)}/{cfg.search.num_trials} trials ({counts.get('ok', 0)} ok, " in head
    assert "1 running, ETA -" in head
    front = run.front()
    assert front_line == (f"  front: {len(front)} policies, hypervolume "
                          f"{hypervolume(front, cfg.search.objectives, run.model):.4f}")
    best = front.loc[front["accuracy"].idxmax()]
    assert f"{SearchSpace(cfg).policy_of_row(best).name}, acc {best['accuracy']:.2f}" in best_line
    assert "acc drop <= 8 pts" in best_line


def test_progress_eta_and_lines_per_trial_only_in_small_sweeps(nsga_run):
    _, run_dir, _ = nsga_run
    finished = len(load_run(run_dir).trials)
    small, out = progress_of(nsga_run)
    small.total = 2 * finished  # half done, in 80 s: 80 s to go
    small._seen, small._finished_at_start = set(), 0
    lines = small.block(load_run(run_dir), [], elapsed=80.0)
    assert "ETA 1:20" in lines[0]
    small.report([], done=False)  # not due: only the trials not reported yet, one line each
    trial_lines = out.getvalue().splitlines()
    assert len(trial_lines) == finished and all(line.split()[0] in ("ok", "stopped", "failed") for line in trial_lines)
    small.report([], done=False)
    assert len(out.getvalue().splitlines()) == finished  # each trial once
    large, out = progress_of(nsga_run, lines_up_to=0)  # hundreds of trials: the block alone, a few lines
    large.setup(start_time=time.time())
    large.report([], done=True)
    assert len(out.getvalue().splitlines()) == 3


def test_quiet_and_verbose_reporters(nsga_run):
    cfg, run_dir, _ = nsga_run
    info = json.loads((run_dir / "model.json").read_text())
    assert not tune_reporter(SearchSpace(cfg), run_dir, info, "quiet").should_report([], done=True)
    assert isinstance(tune_reporter(SearchSpace(cfg), run_dir, info, "quiet"), Silent)
    verbose = tune_reporter(SearchSpace(cfg), run_dir, info, "verbose")
    assert isinstance(verbose, tune.CLIReporter)
    assert list(verbose._parameter_columns) == ["gpr", "pd"]  # only what the space has: no empty slope/criterion
    with pytest.raises(pdsearch.PdsearchError, match="unknown progress .loud.: use one of quiet, normal, verbose"):
        tune_reporter(SearchSpace(cfg), run_dir, info, "loud")


def test_tune_trials_are_named_by_their_policy(nsga_run):
    cfg, run_dir, _ = nsga_run
    trials = load_run(run_dir).trials
    ran = trials[trials["status"] != "infeasible"]
    folders = {p.name for p in (run_dir / "tune" / cfg.name).iterdir() if p.is_dir()}
    space = SearchSpace(cfg)
    for _, row in ran.iterrows():
        name = space.policy_of_row(row).name
        assert name.startswith(f"gpr{row['gpr']:g}-{row['pd']}-l1")
        assert f"{name}_{row['trial_id']}" in folders


def tensorboard_scalars(event_file: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of a TensorBoard event file (TFRecord framing: length, CRC, event, CRC)."""
    from tensorboardX.proto import event_pb2

    data, pos, out = event_file.read_bytes(), 0, collections.defaultdict(list)
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
        for value in event.summary.value:
            out[value.tag].append((event.step, value.simple_value))
    return out


def test_tensorboard_has_the_fine_tune_curve_of_every_trial(nsga_run):
    cfg, run_dir, _ = nsga_run
    trials = load_run(run_dir).completed
    for _, row in trials.iterrows():
        (folder,) = (run_dir / "tune" / cfg.name).glob(f"*_{row['trial_id']}")
        (events,) = folder.glob("events.out.tfevents.*")
        scalars = tensorboard_scalars(events)
        curve = [value for _, value in scalars["ray/tune/accuracy"]]
        assert len(curve) == cfg.finetune.epochs + 2  # screening (epoch 0), each epoch, the final result
        assert curve[0] == pytest.approx(row["accuracy_before_finetune"], abs=1e-3)
        assert curve[-1] == pytest.approx(row["accuracy"], abs=1e-3)
        assert [v for _, v in scalars["ray/tune/epoch"]][:-1] == list(range(cfg.finetune.epochs + 1))
        assert scalars["ray/tune/flops_reduction_pct"][0][1] == pytest.approx(row["flops_reduction_pct"], abs=1e-3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, timeout: float = 60.0):
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_dashboard_serves_the_study_with_named_objectives(nsga_run, tmp_path):
    cfg, run_dir, _ = nsga_run
    run = shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("tune"))
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "pdsearch", "dashboard", str(run), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == [cfg.search.study_name]
        served = _get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}")
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/dashboard/" in output
    study = optuna.load_study(study_name=cfg.search.study_name, storage=f"sqlite:///{run / 'study.db'}")
    assert served["objective_names"] == ["accuracy", "flops", "params"] == study.metric_names
    assert served["directions"] == ["maximize", "minimize", "minimize"]
    assert len(served["trials"]) == len(study.trials)
    completed = {t["number"]: t["values"] for t in served["trials"] if t["state"] == "Complete"}
    assert completed == {t.number: pytest.approx(t.values) for t in study.trials if t.state.name == "COMPLETE"}


def test_dashboard_on_a_busy_port_is_one_line(nsga_run, capsys):
    _, run_dir, _ = nsga_run
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        from pdsearch.cli import main

        assert main(["dashboard", str(run_dir), "--port", str(busy.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pdsearch: error: cannot serve on 127.0.0.1:") and err.count("\n") == 1


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium for the report test (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


def test_interactive_report_renders_offline_in_chromium(nsga_run, browser, tmp_path):
    import numpy as np
    from matplotlib.image import imread
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    _, run_dir, _ = nsga_run
    rep = pdsearch.report(run_dir, out=tmp_path / "rep")
    done = load_run(run_dir).completed
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(rep.html.as_uri())
    for name in ("pareto_flops", "pareto_params"):
        plot = page.locator(f"#plot-{name}")
        page.wait_for_selector(f"#plot-{name} .main-svg")
        assert page.locator(f"#plot-{name} .scatterlayer .point").count() == len(done) + 1  # trials and the baseline
        shot = tmp_path / f"{name}.png"
        plot.screenshot(path=str(shot))
        pixels = imread(shot)[..., :3]
        assert pixels.shape[0] > 300 and pixels.shape[1] > 600
        drawn = (pixels < 0.9).any(axis=-1)
        assert 0.01 < drawn.mean() < 0.5  # axes, labels and markers, not blank and not a solid block
        assert len(np.unique((pixels * 255).astype(int).reshape(-1, 3), axis=0)) > 20  # coloured markers
    # hover a front policy: its label names the policy, its accuracy and its trial
    front = rep.front.iloc[0]
    point = page.locator("#plot-pareto_flops .scatterlayer .point").first
    point.scroll_into_view_if_needed()
    hover_text = "document.querySelector('#plot-pareto_flops .hoverlayer').textContent"
    for i in range(page.locator("#plot-pareto_flops .scatterlayer .point").count()):
        box = page.locator("#plot-pareto_flops .scatterlayer .point").nth(i).bounding_box()
        page.mouse.move(0, 0)  # off the plot: the last point's label goes
        page.wait_for_function(f"{hover_text} === ''", timeout=10_000)
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:  # Plotly draws the hover label on a later frame: wait for it, however busy the machine
            page.wait_for_function(f"{hover_text} !== ''", timeout=10_000)
        except PlaywrightTimeout:  # a point under another draws no label of its own
            continue
        label = page.locator("#plot-pareto_flops .hoverlayer").text_content()
        if f"trial {front['trial_id']}" in label:
            break
    else:
        pytest.fail(f"no point of the plot shows trial {front['trial_id']} on hover")
    assert f"val acc {front['accuracy']:.2f}%" in label and f"gpr{front['gpr']:g}-{front['pd']}" in label
    assert requests == [rep.html.as_uri()]  # nothing left the file
    page.close()
