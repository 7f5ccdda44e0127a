"""The default command, timed: `dlscope run all` (quick) as a user runs it, with its wall time, the CPU
it used (all its processes, as /usr/bin/time counts them) and every "~N left" of its progress line
set against the time that was really left.

    python bench/study_time.py --out runs/timed            # ~10 min on 2 idle cores; writes bench/results-study_time.json
    python bench/study_time.py --out runs/timed -- --set func-fit.epochs=500

The progress line goes to a log (not a terminal), one line every --every seconds. For each line the
estimated total (elapsed + estimate) is compared with the final wall time; the table gives the
estimate near 1, 5, 10 and 15 minutes and the worst error after the first minute.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

LEFT = re.compile(r"~(\d+(?:\.\d+)?) (s|min|h) left")
UNIT = {"s": 1, "min": 60, "h": 3600}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="a new run folder (removed first if it exists)")
    p.add_argument("--every", type=float, default=15.0, help="seconds between progress lines")
    p.add_argument("--results", default=str(Path(__file__).with_name("results-study_time.json")))
    p.add_argument("extra", nargs="*", help="more arguments for dlscope run all (after --)")
    a = p.parse_args()
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    dlscope = shutil.which("dlscope") or str(Path(sys.executable).with_name("dlscope"))
    env = {**os.environ, "DLSCOPE_PROGRESS_SECONDS": str(a.every)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [dlscope, "run", "all", "--out", str(out), *a.extra],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines = []
    for line in proc.stderr:
        lines.append((time.monotonic() - t0, line.rstrip("\n")))
        print(f"{lines[-1][0]:7.1f}s  {lines[-1][1]}", flush=True)
    proc.wait()
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    estimates = []
    for t, text in lines:
        m = LEFT.search(text)
        if m:
            total = t + float(m.group(1)) * UNIT[m.group(2)]
            estimates.append(
                {
                    "at_s": round(t, 1),
                    "left_s": round(total - t, 1),
                    "estimated_total_s": round(total, 1),
                    "error": round(total / wall - 1, 3),
                }
            )
    late = [e for e in estimates if e["at_s"] >= 60]
    marks = {}
    for minute in (1, 5, 10, 15):
        near = [e for e in estimates if e["at_s"] >= 60 * minute]
        if near:
            marks[f"{minute} min"] = near[0]
    experiments = {}
    for d in sorted(out.iterdir()) if out.exists() else []:
        if (d / "timing.json").exists():
            t = json.loads((d / "timing.json").read_text())
            experiments[d.name] = {
                k: t.get(k) for k in ("wall_seconds_this_invocation", "trial_cpu_seconds", "cores_busy_per_trial", "executor")
            }
    record = {
        "command": f"dlscope run all --out {out} {' '.join(a.extra)}".strip(),
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "cpu_percent": round(100 * cpu / wall, 1),
        "cores": len(os.sched_getaffinity(0)),
        "estimates_at": marks,
        "worst_error_after_1_min": max((abs(e["error"]) for e in late), default=None),
        "estimates": estimates,
        "experiments": experiments,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    Path(a.results).write_text(json.dumps(record, indent=1))
    print(f"\nwall {wall / 60:.1f} min, CPU {cpu:.0f} s = {record['cpu_percent']:.0f}% of one core; rc {proc.returncode}")
    for k, e in marks.items():
        print(f"  at {k}: ~{e['left_s'] / 60:.1f} min left -> total {e['estimated_total_s'] / 60:.1f} min ({e['error']:+.0%})")
    print(f"  worst estimate after the first minute: {record['worst_error_after_1_min']:+.0%}" if late else "")
    for name, e in experiments.items():
        print(
            f"  {name:14s} {e['wall_seconds_this_invocation']:7.1f} s  CPU {e['trial_cpu_seconds']:7.1f} s  cores busy per "
            f"trial {e['cores_busy_per_trial']}"
        )


if __name__ == "__main__":
    main()
