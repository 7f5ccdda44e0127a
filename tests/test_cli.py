"""The command line a newcomer meets: --version, help, error hints, --dry-run, and the progress
display on a terminal, under a pty that reports no width, and in a log (no `\\r` there)."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

import pytest

from dlscope import __version__, cli, experiments, progress
from dlscope.experiments._base import resolve
from dlscope.progress import StudyProgress

# a func-fit run of two tiny trials: seconds
TINY = ["run", "func-fit", "--profile", "smoke", "--set", "models=mlp-shallow,mlp-mid", "--set", "epochs=4", "--set", "points=30"]


def main(capsys, *argv) -> tuple[int, str, str]:
    """cli.main in this process: (exit code, stdout, stderr); argparse's own exits included."""
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def dlscope(*argv, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlscope", *argv], env={**os.environ, **(env or {})}, **kw)


# --------------------------------------------------------------------------- help and usage


def test_version():
    r = dlscope("--version", capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == f"dlscope {__version__}\n"


def test_bare_dlscope_prints_the_commands(capsys):
    code, out, err = main(capsys)
    assert code == 0 and err == ""
    for command in ("list", "models", "data", "run", "report", "--version"):
        assert command in out
    assert "dlscope run all --out runs/study" in out and "dlscope report runs/study" in out  # the examples


def test_run_help_explains_each_profile_and_lists_choices(capsys):
    code, out, _ = main(capsys, "run", "--help")
    assert code == 0
    text = " ".join(out.split())  # argparse wraps lines
    assert "smoke: seconds per experiment" in text
    assert "quick (the default): the whole study on a 2-core CPU in about" in text
    assert "full: the original study's settings, meant for a GPU" in text
    assert "{auto,local,process,ray}" in text and "{auto,cpu,cuda,cuda:N}" in text
    for option in ("--seed N", "--data-dir DIR", "--workers N", "--no-progress", "--dry-run"):
        line = next(line for line in out.splitlines() if line.strip().startswith(option))
        assert len(line.split()) > len(option.split()) or option == "--dry-run", f"{option} has no help"
    assert "dlscope run all --out runs/study" in out and "dlscope report runs/study" in out
    code, out, _ = main(capsys, "report", "--help")
    assert "a run folder" in out


def test_executor_choices_are_the_executors():
    from dlscope.executors import EXECUTORS

    assert cli.EXECUTORS == EXECUTORS


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["run"], "see dlscope run --help"),
        (["run", "func-fit", "--executor", "slurm"], "see dlscope run --help"),
        (["run", "func-fit", "--seed", "x"], "see dlscope run --help"),
        (["data"], "see dlscope data --help"),
        (["data", "info", "--bogus"], "see dlscope data info --help"),
        (["bogus"], "see dlscope --help"),
    ],
)
def test_usage_errors_point_to_the_subcommands_help(capsys, argv, hint):
    code, out, err = main(capsys, *argv)
    assert code == 2 and out == ""
    assert err.endswith(f"({hint})\n") and len(err.splitlines()) == 1
    if "--seed" in argv:
        assert "argument --seed: expected an integer, got 'x'" in err


@pytest.mark.parametrize(
    "experiment, setting, expected",
    [
        ("func-fit", "epochs=ten", "expected an integer"),
        ("func-fit", "lr=fast", "expected a number"),
        ("min-ratio", "float64=maybe", "expected true or false"),
        ("sensitivity", "lrs=1e-3,big", "expected a list of numbers"),
        ("sensitivity", "batch_sizes=64,1.5", "expected a list of integers"),
    ],
)
def test_set_errors_name_the_type_in_english(capsys, tmp_path, experiment, setting, expected):
    code, _, err = main(capsys, "run", experiment, "--set", setting, "--out", str(tmp_path / "x"), "--no-progress")
    assert code == 2 and expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- --dry-run


def test_dry_run_prints_settings_trials_and_estimate_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out (runs/...) would be created here
    out_dir = tmp_path / "study"
    code, out, err = main(
        capsys,
        "run",
        "sensitivity",
        "--profile",
        "smoke",
        "--set",
        "epochs=3",
        "--out",
        str(out_dir),
        "--dry-run",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert not out_dir.exists() and list(tmp_path.iterdir()) == []
    cfg = resolve(experiments.get("sensitivity"), "smoke", ["epochs=3"], 0)
    for key, value in cfg.items():  # every setting, the --set one marked
        line = next(line for line in out.splitlines() if line.strip().startswith(f"{key} = "))
        assert ("(--set)" in line) == (key == "epochs")
    trials = experiments.get("sensitivity").trials(cfg)
    for t in trials:  # every trial: key and label
        assert any(line.split()[:1] == [t.key] and t.label in line for line in out.splitlines())
    assert f"sensitivity: {len(trials)} trials" in out
    assert "estimate: ~" in out and "rough estimate" in out

    code, out, err = main(capsys, "run", "all", "--profile", "smoke", "--dry-run")
    assert code == 0, err
    assert list(tmp_path.iterdir()) == []  # no runs/ folder either
    for name in experiments.available():
        assert f"\n{name}: " in out


def test_dry_run_estimate_scales_with_the_work():
    """Quick as it is costs the module's COST (on 2 threads); twice the epochs, twice as long."""
    import torch

    module = experiments.get("random-labels")
    quick = resolve(module, "quick", None, 0)
    n = len(module.trials(quick))
    threads = max(2 / torch.get_num_threads(), 0.5)
    assert progress.estimate_seconds("random-labels", quick, n, n, "cpu") == pytest.approx(module.COST * threads)
    longer = resolve(module, "quick", [f"epochs={2 * quick['epochs']}"], 0)
    assert progress.estimate_seconds("random-labels", longer, n, n, "cpu") == pytest.approx(2 * module.COST * threads)
    assert progress.estimate_seconds("random-labels", quick, n, 0, "cpu") == 0.0  # all done already


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["func-fit", "--set", "epochs=0"], {}, "epochs"),
        (["all", "--set", "epochs=3"], {}, "EXPERIMENT.KEY=VALUE"),
        (["func-fit", "--device", "cuda:99"], {}, "--device cuda:99"),
        (["func-fit", "--workers", "2"], {}, "--workers is for"),
        (["func-fit"], {"DLSCOPE_PROGRESS_SECONDS": "soon"}, "DLSCOPE_PROGRESS_SECONDS=soon"),
    ],
)
def test_dry_run_rejects_what_a_run_rejects(capsys, tmp_path, monkeypatch, argv, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out_dir = str(tmp_path / "x")
    dry = main(capsys, "run", *argv, "--profile", "smoke", "--out", out_dir, "--dry-run")
    real = main(capsys, "run", *argv, "--profile", "smoke", "--out", out_dir, "--no-progress")
    assert dry[0] == real[0] == 2
    assert dry[2] == real[2] and message in dry[2] and len(dry[2].splitlines()) == 1
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- progress


def test_off_a_terminal_progress_is_lines_without_carriage_returns(tmp_path, capsys, monkeypatch):
    r = dlscope(*TINY, "--out", str(tmp_path / "a"), env={"DLSCOPE_PROGRESS_SECONDS": "0"}, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    assert b"\r" not in r.stdout + r.stderr
    lines = r.stderr.decode().splitlines()
    assert lines[0].startswith("[1/1] func-fit · trial 1/2 · ~")  # this experiment's, with the dry run's time from the start
    assert lines[0].endswith(" left") and "estimating" not in r.stderr.decode()
    for label, trial in (("mlp-shallow", 1), ("mlp-mid", 2)):  # a line per epoch (interval 0) of each trial
        assert any(line.startswith(f"[1/1] func-fit · trial {trial}/2 {label} · epoch ") for line in lines)
    assert any(line.startswith("[1/1] func-fit · trial 2/2 · ") for line in lines)  # at the first trial's end
    assert any(line.startswith("[1/1] func-fit · summary and figures") for line in lines)  # at the second's
    assert "next: dlscope report" in r.stdout.decode()

    # a long interval (the default is 30 s): lines at the trials' ends only (in this process: quicker)
    monkeypatch.setenv("DLSCOPE_PROGRESS_SECONDS", "1e9")
    code, out, err = main(capsys, *TINY, "--out", str(tmp_path / "b"))
    assert code == 0 and "\r" not in out + err
    assert [line.split(" · ")[1] for line in err.splitlines()] == ["trial 1/2", "trial 2/2", "summary and figures"]


def test_a_terminal_of_zero_columns_still_shows_the_line(tmp_path):
    """A pty that reports 0 columns (as `pty.openpty` makes one): the live line at 100 columns."""
    main_fd, child_fd = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    assert os.get_terminal_size(child_fd).columns == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlscope", *TINY, "--out", str(tmp_path)],
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
        env=env,
    )
    os.close(child_fd)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the child closed the pty
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    assert proc.wait() == 0, shown.decode()
    frames = [f.removesuffix("\x1b[K") for f in shown.decode().split("\r") if f.startswith("[1/1]")]
    assert frames and frames[0].startswith("[1/1] func-fit · trial 1/2")
    assert all(len(f) < progress.FALLBACK_COLUMNS for f in frames)
    assert "func-fit: ok" in shown.decode()


def test_terminal_columns_fallback(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert progress.terminal_columns(io.StringIO()) == progress.FALLBACK_COLUMNS
    monkeypatch.setenv("COLUMNS", "0")
    assert progress.terminal_columns(io.StringIO()) == progress.FALLBACK_COLUMNS
    monkeypatch.setenv("COLUMNS", "72")
    assert progress.terminal_columns(io.StringIO()) == 72


def test_each_experiment_starts_with_its_own_frame_and_time_left_follows_the_plan(monkeypatch):
    """The plan (what --dry-run prints) from the first second; finished experiments correct its
    pace: func-fit planned at 100 s takes 220 s, so cifar-depth's planned 50 s count as
    50 x (220 + PRIOR) / (100 + PRIOR)."""
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    monkeypatch.setenv("DLSCOPE_PROGRESS_SECONDS", "0")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    study = StudyProgress(["func-fit", "cifar-depth"], planned={"func-fit": 100.0, "cifar-depth": 50.0})
    study.enter("func-fit")
    assert sys.stderr.getvalue().splitlines()[-1] == "[1/2] func-fit · starting · ~2 min left"  # 150 s
    assert study.seconds_left() == pytest.approx(150.0)
    study.start_experiment("func-fit", total=1, done=0)
    clock[0] = 1.0
    study.epoch("mlp-deep", 1, 1000)  # a slow first epoch (compiling) changes nothing
    assert study.seconds_left() == pytest.approx(149.0)
    clock[0] = 200.0  # past its plan: a sliver of it is still left, and all of cifar-depth
    assert study.seconds_left() == pytest.approx(progress.MIN_LEFT_SHARE * 100 + 50)
    clock[0] = 220.0
    study.trial_done()
    study.trials_finished()
    study.end_experiment()
    pace = (220 + progress.PRIOR_SECONDS) / (100 + progress.PRIOR_SECONDS)
    assert study.pace() == pytest.approx(pace)

    study.enter("cifar-depth")  # its first frame: cifar-depth's, and its whole (corrected) time is left
    first = sys.stderr.getvalue().splitlines()[-1]
    assert first.startswith("[2/2] cifar-depth · starting · ~")
    assert study.seconds_left() == pytest.approx(50 * pace)
    study.start_experiment("cifar-depth", total=2, done=0)
    clock[0] = 220 + 10
    study.trial_done()
    assert study.seconds_left() == pytest.approx(50 * pace - 10)
    assert "\r" not in sys.stderr.getvalue()
