"""The `dlscope` command. Exit codes: 0 success, 2 bad usage or settings, 1 failure while running."""

from __future__ import annotations

import argparse
import json
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

    from .analyze import add_arguments as _analyze_arguments

    _analyze_arguments(sub.add_parser("analyze", help="curvature, sharpness and loss plane of your own model"))

    rep = sub.add_parser("report", help="write DIR/report.html and DIR/report.md")
    rep.add_argument("dir")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data import DataError
    from .experiments.base import ConfigError

    try:
        return _dispatch(args)
    except ConfigError as e:
        print(f"dlscope: error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"dlscope: data error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dlscope: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


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

    if args.command == "analyze":
        from . import analyze

        return analyze.run(args)

    if args.command == "report":
        from pathlib import Path

        from .experiments.base import ConfigError

        if not Path(args.dir).is_dir():
            raise ConfigError(f"{args.dir}: no such run folder")
        from . import report

        paths = report.write_report(Path(args.dir))
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
        _write_report(out)
        failed = [r.experiment for r in results if not r.ok]
        for r in results:
            print(f"{r.experiment:15s} {'ok' if r.ok else 'FAILED'}  {r.out_dir}")
        return 1 if failed else 0
    result = runner.run_experiment(args.experiment, overrides=args.overrides, **common)
    print(f"{result.experiment}: {'ok' if result.ok else 'FAILED'} -> {result.out_dir}")
    if result.failed:
        for key, err in result.failed.items():
            print(f"  trial {key} failed: {err.strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    return 0


def _write_report(out) -> None:
    try:
        from . import report
    except ImportError:
        return
    report.write_report(out)


if __name__ == "__main__":
    sys.exit(main())
