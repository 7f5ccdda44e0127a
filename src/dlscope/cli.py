"""The `dlscope` command. Exit codes: 0 success, 2 bad usage or settings, 1 failure while running."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__

EXECUTORS = ("auto", "local", "process", "ray")  # executors.EXECUTORS, not imported here: that loads torch

PROFILES_HELP = (
    "smoke: seconds per experiment, for tests; "
    "quick (the default): the whole study on a 2-core CPU in about 30 minutes, 3 seeds, with data subsets and "
    "shorter schedules; full: the original study's settings, meant for a GPU"
)

EXAMPLES = """examples:
  dlscope run all --out runs/study       # the whole study (quick profile)
  dlscope report runs/study              # then open runs/study/report.html
  dlscope run func-fit --dry-run         # settings, trials and a time estimate; runs nothing
"""


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's own behaviour, without the usage dump)
        self.exit(2, f"dlscope: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self.prog != "dlscope":  # a subcommand's unknown option: its own hint, not the top's
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = _Parser(
        prog="dlscope",
        description="Deep vs shallow, optimization and generalization: the study, measured.",
        epilog=EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--version", action="version", version=f"dlscope {__version__}")
    sub = p.add_subparsers(dest="command", title="commands", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("list", help="the experiments, one line each")

    m = sub.add_parser("models", help="the model zoo with parameter counts")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")

    data_dir_help = "the data root (default: $DLSCOPE_DATA, else ~/.cache/dlscope)"
    d = sub.add_parser("data", help="data sets: info, download")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="{info,download}", parser_class=_Parser)
    di = dsub.add_parser("info", help="image count, per-channel mean/std, count per class (reads only)")
    di.add_argument("--json", action="store_true", help="print JSON instead of a table")
    di.add_argument("--data-dir", default=None, metavar="DIR", help=data_dir_help)
    dd = dsub.add_parser("download", help="fetch MNIST and CIFAR-10 into the data root")
    dd.add_argument("--data-dir", default=None, metavar="DIR", help=data_dir_help)

    r = sub.add_parser("run", help="run an experiment, or all of them", epilog=EXAMPLES, formatter_class=raw)
    r.add_argument("experiment", help="an experiment name (see `dlscope list`) or `all`")
    r.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"], help=PROFILES_HELP)
    r.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="run folder (default: a new timestamped folder under runs/); running again into the same folder resumes",
    )
    r.add_argument(
        "--seed", type=_integer, default=0, metavar="N", help="base seed, 0 to 2^32-1: trial i uses seed + i (default: 0)"
    )
    r.add_argument(
        "--device",
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where trials run; auto (the default) picks cuda if there is a GPU, else cpu",
    )
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (repeatable); with `all`, write EXPERIMENT.KEY=VALUE",
    )
    r.add_argument("--data-dir", default=None, metavar="DIR", help=data_dir_help)
    r.add_argument(
        "--executor",
        default="auto",
        choices=EXECUTORS,
        help="where trials run: auto (the default: in this process, one after another, except "
        "trials that each use one core, which run side by side on a multi-core CPU), local "
        "(in this process, one after another), process (a pool of worker processes on this "
        "machine), ray (a Ray cluster)",
    )
    r.add_argument(
        "--workers",
        type=_integer,
        default=None,
        metavar="N",
        help="--executor process: worker processes (default: one per CPU core; with --device cuda, one per "
        "GPU); --executor ray: trials at once (default: the CPUs of the machine)",
    )
    r.add_argument(
        "--address",
        default=None,
        metavar="HOST:PORT",
        help="a Ray cluster for --executor ray (default: $RAY_ADDRESS, else a private Ray instance on this machine)",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress line (messages and results still print)")
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="print the settings, the trials and a time estimate, and check them; run and write nothing",
    )

    from .analyze import add_arguments as _analyze_arguments

    _analyze_arguments(sub.add_parser("analyze", help="curvature, sharpness and loss plane of your own model"))

    rep = sub.add_parser("report", help="write DIR/report.html and DIR/report.md")
    rep.add_argument("dir", metavar="DIR", help="a run folder (the --out of `dlscope run`)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Bad input never ends in a traceback: each error is one line on stderr and an exit code
    (set DLSCOPE_TRACEBACK=1 to see where an unexpected one came from)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `dlscope`: the commands
        parser.print_help()
        return 0
    from .data import DataError
    from .experiments._base import ConfigError
    from .store import RunFolderError

    try:
        code = _dispatch(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below, not at exit
        return code
    except ConfigError as e:
        print(f"dlscope: error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"dlscope: data error: {e}", file=sys.stderr)
        return 1
    except RunFolderError as e:
        print(f"dlscope: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dlscope: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`dlscope data info --json | head -c 1`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 1
    except OSError as e:
        if os.environ.get("DLSCOPE_TRACEBACK"):
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"dlscope: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:
        if os.environ.get("DLSCOPE_TRACEBACK"):
            raise
        what = str(e).splitlines()[0][:300] if str(e) else ""
        print(f"dlscope: unexpected error: {type(e).__name__}: {what} (set DLSCOPE_TRACEBACK=1 to see where)", file=sys.stderr)
        return 1


def _dispatch(args) -> int:
    if args.command == "list":
        from . import experiments

        for name in experiments.names():
            if experiments.is_available(name):
                print(f"{name:15s} {experiments.get(name).TITLE}")
            else:
                print(f"{name:15s} (not implemented in this version)")
        return 0

    if args.command == "models":
        from .models import zoo

        rows = zoo()
        if args.json:
            print(json.dumps([{"name": r["name"], "params": r["params"]} for r in rows], indent=2))
        else:
            for r in rows:
                print(f"{r['name']:13s} {r['params']:>9,d}  {r['description']}")
        return 0

    if args.command == "data":
        from . import data

        if args.data_command == "download":
            for name in ("mnist", "cifar10"):
                print(f"{name}: {data.ensure(name, data.data_root(args.data_dir))}")
            return 0
        info = {name: data.stats(name, args.data_dir) for name in ("mnist", "cifar10")}
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            for name, splits in info.items():
                for split, s in splits.items():
                    print(
                        f"{name:8s} {split:5s} {s['images']:>6d} images  mean {s['mean']}  std {s['std']}  per class "
                        f"{s['per_class']}"
                    )
        return 0

    if args.command == "run":
        return _run(args)

    if args.command == "analyze":
        from . import analyze

        return analyze.run(args)

    if args.command == "report":
        from pathlib import Path

        from . import report

        try:
            paths = report.write_report(Path(args.dir))
        except report.ReportError as e:
            print(f"dlscope: error: {e}", file=sys.stderr)
            return 1
        for p in paths:
            print(p)
        return 0
    return 2


def _run(args) -> int:
    from pathlib import Path

    from . import runner
    from .executors import make_executor

    opts = {k: v for k, v in (("workers", args.workers), ("address", args.address)) if v is not None}
    executor = make_executor(args.executor, **opts)
    out = Path(args.out) if args.out else runner.default_out()
    if args.dry_run:
        return _dry_run(args, out)
    common = dict(
        profile=args.profile,
        out=out,
        seed=args.seed,
        device=args.device,
        executor=executor,
        data_dir=args.data_dir,
        progress=not args.no_progress,
    )
    if args.experiment == "all":
        results = runner.run_all(overrides=args.overrides, **common)
        failed = [r.experiment for r in results if not r.ok]
        if not failed and results and all(r.trials_run == 0 for r in results):
            print(f"nothing to do: every trial of this study in {out} was already done")
        for r in results:
            print(f"{r.experiment:15s} {'ok' if r.ok else 'FAILED'}  {r.out_dir}")
        for r in results:
            _print_findings(r, heading=True)
        html = _write_report(out)
        if html is not None:
            print(f"report: {html}")
        return 1 if failed or html is None else 0
    result = runner.run_experiment(args.experiment, overrides=args.overrides, **common)
    if result.ok and result.trials_run == 0:
        print(f"nothing to do: every trial of {result.experiment} in {out} was already done")
    print(f"{result.experiment}: {'ok' if result.ok else 'FAILED'} -> {result.out_dir}")
    _print_findings(result, heading=False)
    for key, err in result.failed.items():
        lines = err.strip().splitlines()
        print(f"  trial {key} failed: {lines[-1] if lines else 'error'}", file=sys.stderr)
    print(f"next: dlscope report {out}")
    return 1 if result.failed else 0


def _dry_run(args, out) -> int:
    """The run's settings, trials and a rough time on this device, after the checks a real run makes
    before it starts; nothing runs, nothing is written (not even --out)."""
    from . import experiments, runner
    from .experiments._base import resolve
    from .progress import ESTIMATE_BASIS, format_duration, plan_seconds

    device, plans = runner.check_plan(args.experiment, args.profile, args.overrides, args.seed, out, args.device)
    state = "exists: finished trials are skipped" if out.exists() else "not created by a dry run"
    print(f"dry run: nothing runs, nothing is written\nrun folder: {out} ({state})")
    print(f"device: {device} ({runner.device_description(device)})")
    planned = plan_seconds(plans, device, args.seed)
    total = 0.0
    for module, settings, trials, store in plans:
        done = sum(1 for t in trials if store.read_result(t.key, warn=False) is not None)
        seconds = planned[module.NAME]
        total += seconds
        print(
            f"\n{module.NAME}: {len(trials)} trial{'s' if len(trials) != 1 else ''}"
            + (f", {done} already done" if done else "")
            + f", ~{format_duration(seconds) if seconds else '0 s'}"
        )
        defaults = resolve(module, args.profile, None, args.seed)
        print("  settings:")
        for key, value in settings.items():
            mark = "   (--set)" if defaults.get(key) != value else ""
            print(f"    {key} = {json.dumps(value)}{mark}")
        print("  trials:")
        width = max(len(t.key) for t in trials) if trials else 0
        for t in trials:
            print(f"    {t.key:{width}s}  {t.label}".rstrip())
    missing = [n for n in experiments.names() if n not in experiments.available()] if args.experiment == "all" else []
    if missing:
        print(f"\nnot implemented in this version, skipped: {', '.join(missing)}")
    where = "on the reference CPU (no GPU measurement exists)" if device.startswith("cuda") else "on this device"
    print(f"\nestimate: ~{format_duration(total) if total else '0 s'} {where}, profile {args.profile}")
    print(f"  ({ESTIMATE_BASIS}; trials already done are not counted)")
    if args.executor not in ("auto", "local"):
        print(f"  (for one trial at a time: with --executor {args.executor}, trials run side by side and take less)")
    return 0


def _print_findings(result, heading: bool) -> None:
    """The verdict lines of an experiment's findings (its summary.json), if it states any."""
    from .findings import render

    found = [
        f
        for f in ((result.summary or {}).get("findings") or [])
        if isinstance(f, dict) and isinstance(f.get("id"), str) and isinstance(f.get("verdict"), str)
    ]
    if not found:
        return
    if heading:
        print(f"{result.experiment}:")
    for line in render(found):
        print(f"  {line}")


def _write_report(out):
    """Write the run's report; its HTML path, or None (and a one-line error) if it cannot be written."""
    from . import report
    from .experiments._base import ConfigError

    try:
        return report.write_report(out)[0]
    except (report.ReportError, ConfigError) as e:
        print(f"dlscope: error: {e}", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())
