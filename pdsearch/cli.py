"""Command line: a thin layer over pdsearch's Python API (same verbs)."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Sequence

from pdsearch.catalog.objectives import CONSTRAINTS, OBJECTIVES  # a plain table: keeps `pdsearch --help` fast
from pdsearch.errors import Interrupted, PdsearchError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        raise PdsearchError(f"{self.prog}: {message}")


def _numbers(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PdsearchError(f"expected comma-separated numbers, got {text!r}") from None
    return [int(v) if v.is_integer() else v for v in values]


def _print_plan(p) -> None:
    from pdsearch.cost import human_count

    pol = p.policy
    shape = pol.pd or f"slope {pol.slope:+.2f} curvature {pol.curvature:+.2f}"
    how = pol.allocator.describe(pol)
    amount = pol.amount + (f" (homogeneous equivalent: GPR {p.gpr:.2f}%)" if pol.budget is not None else "")
    print(f"{p.model}: {amount}, {shape}, {how}, criterion {pol.criterion}")
    print(f"{'#':>3}  {'layer':<36} {'pos':>5} {'rate':>7} {'channels':>9} {'kept':>6}")
    for i, layer in enumerate(p.layers):
        print(f"{i:>3}  {layer['name']:<36} {layer['position']:>5.2f} {layer['rate']:>7.2%} "
              f"{layer['channels']:>9} {layer['kept']:>6}")
    print(f"FlexiPrune list_pruning: {p.flexiprune_list}")
    for label, c in (("FLOPs", p.flops), ("params", p.params)):
        print(f"{label:<7} {human_count(c['base'])} -> {human_count(c['pruned'])}  (-{c['reduction_pct']:.2f}%)")
    if p.latency:
        c = p.latency
        print(f"latency {c['base']:.3f} -> {c['pruned']:.3f} ms  ({-c['reduction_pct']:+.2f}%, predicted by the latency "
              f"table: {c['precision']} at {c['input_size']}x{c['input_size']} on {c['runtime']}, {c['device']})")


def _amount_flags(args: argparse.Namespace) -> dict:
    """--gpr, or a budget: --flops-reduction / --params-reduction / --latency-reduction (percent)."""
    from pdsearch.planning import amount_fields

    return amount_fields(args.gpr, args.flops_reduction, args.params_reduction, args.latency_reduction)


def _cmd_plan(args: argparse.Namespace) -> int:
    from pdsearch.planning import Planner, grid_amounts
    from pdsearch.policy import Needs, Policy, normalize_pd
    from pdsearch.policy.solve import NO_TABLE

    fields = dict(mode=args.mode, criterion=args.criterion, target=args.target, max_rate=args.max_rate,
                  round_to=args.round_to)
    if args.grid:  # validate every grid point before the (slow) model analysis
        pds = [normalize_pd(p) for p in args.pds.split(",")]
        amounts = grid_amounts(args.gprs if args.flops_reductions is None and args.params_reductions is None else None,
                           args.flops_reductions, args.params_reductions)
        for amount in amounts:
            Policy(pd=pds[0], **amount, **fields)
    else:
        amount = _amount_flags(args)
        if amount.get("gpr") is None and "budget" not in amount:
            raise PdsearchError("plan needs --gpr, --flops-reduction, --params-reduction or --latency-reduction "
                                "(or --grid)")
        if amount.get("budget_metric") == "latency" and not args.latency_table:
            raise PdsearchError(NO_TABLE)
        policy = Policy(pd=args.pd, **amount, **fields)
        if policy.allocator.needs != Needs.STRUCTURE:
            raise PdsearchError(f"pd {policy.pd} is measured on trained weights and data: use it in a search "
                                "(plan takes PD1-PD5 and shapes)")
    planner = Planner(args.model, num_classes=args.num_classes, input_size=args.input_size, in_channels=args.in_channels,
                      latency_table=args.latency_table)
    if args.grid:
        table = planner.grid(**_grid_amount(args), pds=pds, **fields)
        if args.csv:
            table.to_csv(args.csv, index=False)
        if args.json:
            print(table.to_json(orient="records"))
        else:
            rows = "budget" if "budget" in table.columns else "gpr"
            for metric in ("flops_reduction_pct", "params_reduction_pct"):
                print(f"{metric} by {rows.upper() if rows == 'gpr' else 'budget %'} (rows) x PD (columns)")
                print(table.pivot(index=rows, columns="pd", values=metric).to_string(float_format="%.2f"))
            failed = table[table["error"] != ""]
            for _, row in failed.iterrows():
                print(f"{rows} {row[rows]:g} {row['pd']}: {row['error']}")
        return 0
    p = planner.plan(policy)
    if args.json:
        print(json.dumps(p.to_dict(), indent=2))
    else:
        _print_plan(p)
    return 0


def _cmd_latency_table(args: argparse.Namespace) -> int:
    import time

    from pdsearch.cost.target import latency_table

    start = latest = time.time()
    printed, began = 0.0, {}  # stage -> when it began: each stage's own pace (an anchor times the whole model)

    def report(stage: str, done: int, total: int) -> None:
        nonlocal latest, printed
        now, since = time.time(), began.setdefault(stage, latest)
        latest = now
        if now - printed >= 10 or done == total:
            printed = now
            # the first layers measured are the largest: an ETA from them overshoots several times over
            eta = f"ETA {(now - since) * (total - done) / done:.0f} s" if done >= total / 4 else \
                "ETA once a quarter is measured"
            print(f"[{now - start:4.0f} s] {done}/{total} {stage}, {eta}", flush=True)

    table = latency_table(args.out, args.model, config=args.config, input_size=args.input_size,
                          num_classes=args.num_classes, in_channels=args.in_channels, runtime=args.runtime,
                          precision=args.precision,
                          threads=args.threads, batch_size=args.batch_size, points=args.points, address=args.address,
                          report=report)
    key = table.key
    print(f"{key['model']} at {key['input_size']}x{key['input_size']}, batch {key['batch_size']}, {key['precision']} on "
          f"{key['runtime']} on "
          f"{key['device']} ({key['threads'] or 'default'} threads): baseline {table.baseline_ms:.3f} ms, "
          f"{len(table.tables)} layer shapes measured in {table.seconds:.0f} s")
    print(f"written to {args.out}   next: {_plan_command(table, args.out)} --gpr 40")
    return 0


def _plan_command(table, path: str) -> str:
    """The plan command that reads ``table``: its model at the table's resolution, channels and classes."""
    shapes = [table.tables[k].shape for k in table.layers.values()]
    flags = [f"--model {table.key['model']}", f"--input-size {table.key['input_size']}"]
    if shapes[0].in_channels != 3:
        flags.append(f"--in-channels {shapes[0].in_channels}")
    if shapes[-1].kind == "linear" and shapes[-1].out_channels != 10:
        flags.append(f"--num-classes {shapes[-1].out_channels}")
    return f"pdsearch plan {' '.join(flags)} --latency-table {path}"


def _grid_amount(args: argparse.Namespace) -> dict:
    if args.flops_reductions is not None or args.params_reductions is not None:
        return {"gprs": None, "flops_reductions": args.flops_reductions, "params_reductions": args.params_reductions}
    return {"gprs": args.gprs}


def _print_front(result) -> None:
    from pdsearch.run.directory import shipped_precision, status_counts

    base, trials, front = result.baseline, result.trials, result.front
    print(f"\nbaseline: val {base['val_accuracy']:.2f}%  test {base['test_accuracy']:.2f}%")
    print(f"trials: {len(trials)} ({status_counts(trials)})"
          + (f" in {result.seconds:.0f} s" if result.seconds else ""))
    if len(front):
        _print_front_table(front)
    else:
        print("Pareto front: empty (no completed trial meets the constraints)")
    run = result.run_dir
    print(f"\nwritten to {run}: {', '.join(result.written)}")
    quantized = len(trials) and (shipped_precision(trials) != "fp32").any()
    print(f"next: pdsearch report {run}   |   pdsearch select {run} --export pruned.{'onnx' if quantized else 'pt2'}")


def _print_front_table(front) -> None:
    cols = ["gpr", "budget", "pd", "criterion", "accuracy", "acc_drop", "test_accuracy", "flops_reduction_pct", "params_reduction_pct"]
    shown = [c for c in cols if c in front.columns and front[c].replace("", None).notna().any()]  # no empty columns
    table = front[shown].rename(
        columns={"flops_reduction_pct": "flops_red_%", "params_reduction_pct": "params_red_%"})
    print(f"Pareto front ({len(front)} policies, val accuracy vs FLOPs vs params):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


def _cmd_search(args: argparse.Namespace) -> int:
    from pdsearch.searching.driver import search

    _print_front(search(args.config, run_dir=args.run_dir, num_trials=args.num_trials, address=args.address,
                        progress=args.progress))
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from pdsearch.searching.driver import resume

    _print_front(resume(args.run_dir, address=args.address, progress=args.progress))
    return 0


def _cmd_sensitivity(args: argparse.Namespace) -> int:
    from pdsearch.reporting.profile_report import describe, sensitivity

    print(describe(sensitivity(args.run_dir)))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pdsearch.reporting.document import report

    rep = report(args.run_dir, out=args.out, source=args.source)
    _note(rep.note)
    print(f"Pareto front: {len(rep.front)} policies, hypervolume {rep.hypervolume:.4f}")
    print(f"report: {rep.html}\n        {rep.markdown}")
    print("plots:  " + "\n        ".join(str(p) for p in rep.plots.values()))
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from pdsearch.reporting.selection import describe, select

    chosen = select(
        args.run_dir, prefer=args.prefer, export=args.export, finetune_epochs=args.finetune_epochs, distill=args.distill,
        source=args.source, trial=args.trial, precision=args.precision, **{c.field: getattr(args, c.field) for c in CONSTRAINTS.values()},
    )
    _note(chosen.note)
    print(describe(chosen))
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from pdsearch.reporting.dashboard import dashboard

    dashboard(args.run_dir, host=args.host, port=args.port)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from pdsearch.models import list_models

    for source, names in list_models(args.filter).items():
        shown = names or (['(timm is not installed: pip install -e ".[timm]")'] if source == "timm" and not args.filter
                          else ["(none)"])
        print(f"{source} ({len(names)}): {', '.join(shown)}")
    return 0


def _note(text: str) -> None:
    if text:
        print(f"pdsearch: note: {text}", file=sys.stderr)


def _progress_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quiet", dest="progress", action="store_const", const="quiet",
                   help="print nothing until the final summary")
    g.add_argument("--verbose", dest="progress", action="store_const", const="verbose",
                   help="Ray Tune's full trial table instead of the compact progress")
    p.set_defaults(progress="normal")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pdsearch", description="Search pruning policies (GPR x PD) for CNNs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("plan", help="per-layer rates and FLOPs/params of a policy, or of a GPR x PD grid")
    p.add_argument("--model", required=True, help="registry name, torchvision name, or package.module:factory")
    p.add_argument("--num-classes", type=int, default=10, help="classes of the model's classifier")
    p.add_argument("--input-size", type=int, default=224, help="side of the square input the cost is counted at")
    p.add_argument("--in-channels", type=int, default=3, help="image channels the model takes (1: grey, as digits)")
    p.add_argument("--gpr", type=float, help="global pruning rate in percent, [0, 100)")
    p.add_argument("--flops-reduction", type=float, metavar="PCT", help="a FLOPs budget instead of a GPR (percent removed)")
    p.add_argument("--params-reduction", type=float, metavar="PCT", help="a params budget instead of a GPR (percent removed)")
    p.add_argument("--latency-reduction", type=float, metavar="PCT",
                   help="a latency budget instead of a GPR (percent removed, predicted by --latency-table)")
    p.add_argument("--latency-table", metavar="TABLE.json",
                   help="a latency table of the target (pdsearch latency-table): adds the predicted latency")
    p.add_argument("--pd", default="PD1", help="PD1-PD5 or a name such as bottom-up")
    p.add_argument("--mode", default="calibrated", help="calibrated (any CNN) or flexiprune (AlexNet/VGG tables)")
    p.add_argument("--criterion", default="l1", help="filter criterion (l1, l2, fpgm, cosine, ...)")
    p.add_argument("--target", default="flops", help="calibration target: flops, params or mean")
    p.add_argument("--max-rate", type=float, default=0.9, help="per-layer rate cap (fraction)")
    p.add_argument("--round-to", type=int, default=1, metavar="K",
                   help="pruned groups keep a multiple of K channels (e.g. 8; groups under K stay whole)")
    p.add_argument("--grid", action="store_true", help="plan every GPR x PD")
    p.add_argument("--gprs", type=_numbers, default=list(range(10, 100, 10)), metavar="LIST",
                   help="grid over GPRs, e.g. 10,30,50")
    p.add_argument("--flops-reductions", type=_numbers, metavar="LIST", help="grid over FLOPs budgets, e.g. 30,50,70")
    p.add_argument("--params-reductions", type=_numbers, metavar="LIST", help="grid over params budgets")
    p.add_argument("--pds", default="1,2,3,4,5", metavar="LIST", help="the grid's PDs")
    p.add_argument("--csv", help="write the grid to this CSV file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_plan)

    t = sub.add_parser("latency-table", help="measure a model's latency table on this machine, the deployment target")
    t.add_argument("--config", help="a search config: its model, latency runtime, threads, batch and input size")
    t.add_argument("--model", help="registry name, torchvision name, timm/NAME or package.module:factory")
    t.add_argument("--input-size", type=int, help="the deployment resolution (default: the config's)")
    t.add_argument("--num-classes", type=int, default=10, help="classes of the model's classifier")
    t.add_argument("--in-channels", type=int, default=3, help="image channels the model takes (1: grey, as digits)")
    t.add_argument("--runtime", help="torch or onnxruntime (default: the config's, else onnxruntime)")
    t.add_argument("--precision", help="fp32 or int8, the precision the model ships in (default: the config's "
                   "space.precision where it has one, else fp32)")
    t.add_argument("--threads", type=int, help="intra-op threads (default: the config's, else the runtime's)")
    t.add_argument("--batch-size", type=int, help="default: the config's first latency batch size, else 1")
    t.add_argument("--points", type=int, default=6, help="channel counts sampled per layer axis (default 6)")
    t.add_argument("--address", help="run on the cluster node that carries latency.target_resource (needs --config)")
    t.add_argument("--out", required=True, metavar="TABLE.json", help="where the table is written")
    t.set_defaults(func=_cmd_latency_table)

    s = sub.add_parser("search", help="search policies with Ray Tune + Optuna; writes trials.csv and pareto.csv")
    s.add_argument("config", help="YAML search space, e.g. search_spaces/quickstart.yaml")
    s.add_argument("--run-dir", help="where results go (default: the config's run_dir, else runs/NAME)")
    s.add_argument("--num-trials", type=int, help="override search.num_trials")
    s.add_argument("--address", help="Ray cluster address ('auto' on a cluster head); default: start Ray locally")
    _progress_flags(s)
    s.set_defaults(func=_cmd_search)

    m = sub.add_parser("resume", help="continue a search whose driver died: same Tune experiment, same Optuna study")
    m.add_argument("run_dir", help="the run directory of the search to continue")
    m.add_argument("--address", help="Ray cluster address; default: start Ray locally")
    _progress_flags(m)
    m.set_defaults(func=_cmd_resume)

    v = sub.add_parser("sensitivity", help="the baseline's sensitivity profile (measured if missing): sensitivity.csv and .png")
    v.add_argument("run_dir", help="a run directory with a trained baseline")
    v.set_defaults(func=_cmd_sensitivity)

    source = dict(choices=["auto", "csv", "study"], default="auto",
                  help="read trials from trials.csv or the Optuna study (auto: trials.csv if present)")
    r = sub.add_parser("report", help="Pareto report of a run (finished or not): report.html, report.md, PNG plots")
    r.add_argument("run_dir", help="the run directory to report on")
    r.add_argument("--out", help="folder for the report (default: RUN_DIR/report)")
    r.add_argument("--source", **source)
    r.set_defaults(func=_cmd_report)

    c = sub.add_parser("select", help="pick one policy by constraints and a preference; write policy.json, export its model")
    c.add_argument("run_dir", help="the run directory to pick from")
    for con in CONSTRAINTS.values():
        c.add_argument(f"--{con.field.replace('_', '-')}", type=float, metavar="PTS" if con.unit == " pts" else "PCT",
                       help=f"{con.label} {con.sense} this (default: the search's constraint)")
    c.add_argument("--prefer", choices=["knee", *OBJECTIVES], default="knee",
                   help="knee: nearest the ideal point with objectives scaled over the front (default); "
                        "an objective: the best on it")
    c.add_argument("--trial", metavar="ID", help="take this completed trial instead of choosing by constraints and preference")
    c.add_argument("--precision", help="pick among the policies that ship in this precision (fp32, int8); "
                   "default: the whole front, each exported in its own")
    c.add_argument("--export", metavar="PATH", help="rerun the policy and save the pruned model (.pt2: torch.export; "
                   ".onnx: ONNX, quantized for an int8 policy)")
    c.add_argument("--finetune-epochs", type=int, metavar="E", help="with --export: fine-tune E epochs instead of the trials'")
    c.add_argument("--distill", type=float, metavar="WEIGHT",
                   help="with --export: distil from the baseline at this weight (0: off; default: as the trial did)")
    c.add_argument("--source", **source)
    c.set_defaults(func=_cmd_select)

    o = sub.add_parser("models", help="the model names a config and plan take (pdsearch's, torchvision's, timm's)")
    o.add_argument("--filter", default="", metavar="TEXT", help="only names holding TEXT")
    o.set_defaults(func=_cmd_models)

    d = sub.add_parser("dashboard", help="optuna-dashboard on the run's study (needs the [dashboard] extra)")
    d.add_argument("run_dir", help="the run directory whose study to serve")
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    d.add_argument("--port", type=int, default=8080, help="port to listen on")
    d.set_defaults(func=_cmd_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation chatter
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except Interrupted as exc:
        print(f"pdsearch: {exc}", file=sys.stderr)
        return exc.exit_code
    except PdsearchError as exc:
        print(f"pdsearch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("pdsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
