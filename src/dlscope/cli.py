"""The `dlscope` command. Exit codes: 0 success, 2 bad usage or settings, 1 failure while running."""

from __future__ import annotations

import argparse
import json
import os
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's own behaviour, without the usage dump)
        self.exit(2, f"dlscope: error: {message} (see dlscope --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dlscope", description="Deep vs shallow, optimization and generalization: the study, measured.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("list", help="the experiments, one line each")

    m = sub.add_parser("models", help="the model zoo with parameter counts")
    m.add_argument("--json", action="store_true")

    d = sub.add_parser("data", help="data sets")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    di = dsub.add_parser("info", help="image count, per-channel mean/std, count per class")
    di.add_argument("--json", action="store_true")
    di.add_argument("--data-dir", default=None)
    dd = dsub.add_parser("download", help="fetch MNIST and CIFAR-10 into the data root")
    dd.add_argument("--data-dir", default=None)

    r = sub.add_parser("run", help="run an experiment, or all of them")
    r.add_argument("experiment", help="an experiment name (see `dlscope list`) or `all`")
    r.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    r.add_argument("--out", default=None, help="run folder (default: a new timestamped folder under runs/)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto", help="auto, cpu or cuda")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (repeatable); with `all`, write EXPERIMENT.KEY=VALUE")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--executor", default="local", help="where trials run (default: local)")
    r.add_argument("--workers", type=int, default=None)
    r.add_argument("--address", default=None, help="cluster address for --executor ray")
    r.add_argument("--no-progress", action="store_true")

    rep = sub.add_parser("report", help="write DIR/report.html and DIR/report.md")
    rep.add_argument("dir")
    return p


def main(argv: list[str] | None = None) -> int:
    """Bad input never ends in a traceback: each error is one line on stderr and an exit code
    (set DLSCOPE_TRACEBACK=1 to see where an unexpected one came from)."""
    args = build_parser().parse_args(argv)
    from .data import DataError
    from .experiments.base import ConfigError
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
                    print(f"{name:8s} {split:5s} {s['images']:>6d} images  mean {s['mean']}  std {s['std']}  per class {s['per_class']}")
        return 0

    if args.command == "run":
        return _run(args)

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
    common = dict(profile=args.profile, out=out, seed=args.seed, device=args.device, executor=executor,
                  data_dir=args.data_dir, progress=not args.no_progress)
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


def _print_findings(result, heading: bool) -> None:
    """The verdict lines of an experiment's findings (its summary.json), if it states any."""
    from .findings import render

    found = [f for f in ((result.summary or {}).get("findings") or [])
             if isinstance(f, dict) and isinstance(f.get("id"), str) and isinstance(f.get("verdict"), str)]
    if not found:
        return
    if heading:
        print(f"{result.experiment}:")
    for line in render(found):
        print(f"  {line}")


def _write_report(out):
    """Write the run's report; its HTML path, or None (and a one-line error) if it cannot be written."""
    from . import report
    from .experiments.base import ConfigError

    try:
        return report.write_report(out)[0]
    except (report.ReportError, ConfigError) as e:
        print(f"dlscope: error: {e}", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())
