"""Regenerate every figure and printed output the documentation shows, from real runs.

    python benchmarks/docs_figures.py            # the quickstart's: its printed output, front, profile, report
    python benchmarks/docs_figures.py --all      # and the benchmark figures (latency, search efficiency: hours)

The quickstart search runs into runs/docs-quickstart/ (a fresh folder each time); what it
prints becomes docs/snippets/quickstart-output.txt, which the Getting-started page
includes, and its report and sensitivity profile give docs/figures/quickstart_*.png and
the report screenshot.
"""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES, SNIPPETS = ROOT / "docs" / "figures", ROOT / "docs" / "snippets"
RUN = ROOT / "runs" / "docs-quickstart"


def run(*argv: str, cwd: Path = ROOT) -> str:
    print("$", " ".join(argv), flush=True)
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


def quickstart() -> None:
    """Command 1 as a user runs it (its default run directory, runs/quickstart), in a scratch folder."""
    pdsearch = str(Path(sys.executable).with_name("pdsearch"))
    shutil.rmtree(RUN, ignore_errors=True)
    (RUN / "search_spaces").mkdir(parents=True)
    shutil.copyfile(ROOT / "search_spaces" / "quickstart.yaml", RUN / "search_spaces" / "quickstart.yaml")
    printed = run(pdsearch, "search", "search_spaces/quickstart.yaml", cwd=RUN)
    (SNIPPETS / "quickstart-output.txt").write_text(printed.replace(str(RUN) + "/", ""))
    run_dir = RUN / "runs" / "quickstart"
    run(pdsearch, "report", str(run_dir))
    run(pdsearch, "sensitivity", str(run_dir))
    shutil.copyfile(run_dir / "report" / "pareto_flops.png", FIGURES / "quickstart_pareto_flops.png")
    shutil.copyfile(run_dir / "sensitivity.png", FIGURES / "quickstart_sensitivity.png")
    run(sys.executable, "benchmarks/screenshot_report.py", str(run_dir / "report" / "report.html"),
        str(FIGURES / "report_interactive.png"))


def benchmarks() -> None:
    bench = ROOT / "benchmarks"
    run(sys.executable, "latency_vs_flops.py", "--out", str(FIGURES / "latency_vs_flops.png"), cwd=bench)
    run(sys.executable, "search_efficiency.py", "--out", str(FIGURES / "search_efficiency.png"), cwd=bench)
    table = ROOT / "runs" / "resnet18-224-ort.json"
    pdsearch = str(Path(sys.executable).with_name("pdsearch"))
    run(pdsearch, "latency-table", "--config", "search_spaces/latency_target.yaml", "--out", str(table))
    latency_run = ROOT / "runs" / "docs-latency-target"
    shutil.rmtree(latency_run, ignore_errors=True)
    run(pdsearch, "search", "search_spaces/latency_target.yaml", "--run-dir", str(latency_run))
    run(pdsearch, "report", str(latency_run))
    shutil.copyfile(latency_run / "report" / "latency_predicted_vs_measured.png",
                    FIGURES / "latency_predicted_vs_measured.png")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--all", action="store_true", help="also the benchmark figures (hours on 2 cores)")
    args = parser.parse_args()
    quickstart()
    if args.all:
        benchmarks()


if __name__ == "__main__":
    main()
