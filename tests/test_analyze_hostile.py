"""`dlscope analyze` keeps the promises `dlscope run` keeps: hostile and careless input ends in one
line and an exit code (2: bad usage, 1: a failure while running), never in a traceback; nothing is
written before every check passed; no file is read or written through a link out of its folder; a
kill resumes to the same results; a diverged model is a recorded result; one damaged analyze folder
costs only its own section of a study's report.

The models are tiny (a pooled linear layer, 490 weights) and the budgets smoke-sized."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlscope import cli, files

# a crafted pickle's payload, a lock holder, a tiny func-fit run (TINY) and a finished one (clean_run)
from test_hostile import HOLDER, TINY as TINY_RUN, Payload, clean_run  # noqa: F401 (clean_run: a fixture)

MODELS = '''
import os
import signal

import torch
from torch import nn


class Tiny(nn.Module):
    """Pooled to 4x4, then one linear layer."""

    def __init__(self, channels=3, outputs=10, dropout=0.0):
        super().__init__()
        self.pool, self.drop, self.fc = nn.AdaptiveAvgPool2d(4), nn.Dropout(dropout), nn.Linear(channels * 16, outputs)

    def forward(self, x):
        when = os.environ.get("DLSCOPE_TEST_KILL_WHEN")  # kill -9 mid-measure, once this file exists
        if when and os.path.exists(when):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.fc(self.drop(self.pool(x).flatten(1)))


def build():
    torch.manual_seed(0)
    return Tiny()


def seven():
    return Tiny(outputs=7)


def gray():
    return Tiny(channels=1)


def dropout():
    return Tiny(dropout=0.5)


def no_weights():
    return nn.Identity()


def not_a_module():
    return 42


def raises():
    raise RuntimeError("cannot build today")
'''

FAST = [
    "--train-size",
    "20",
    "--plane-steps",
    "3",
    "--trace-hvp",
    "9",
    "--density-vectors",
    "1",
    "--density-steps",
    "4",
    "--sharpness-steps",
    "2",
    "--k",
    "1",
]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A folder with the models module, on sys.path (as the current folder is for the command)."""
    folder = tmp_path_factory.mktemp("models")
    (folder / "hostile_models.py").write_text(MODELS)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("hostile_models", None)


def run_main(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own refusals (a value of the wrong type): one line, exit 2
        code = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "unexpected error" not in err, err
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def analyze(capsys, data_dir, out, *args, model="hostile_models:build", data="cifar10"):
    return run_main(capsys, "analyze", "--model", model, "--data", data, *FAST, "--out", out, "--data-dir", data_dir, *args)


def tree(root: Path) -> dict:
    """Every path under root: a file's bytes, a link's target, a folder's mark."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else ("<dir>" if p.is_dir() else p.read_bytes())
    return out


@pytest.fixture(scope="module")
def finished(models_dir, tmp_path_factory, data_dir):
    """A finished analyze folder of the tiny model, to be copied and damaged (and its summary)."""
    out = tmp_path_factory.mktemp("finished") / "an"
    assert (
        cli.main(
            ["analyze", "--model", "hostile_models:build", "--data", "cifar10", *FAST, "--out", str(out), "--data-dir", data_dir]
        )
        == 0
    )
    return out


@pytest.fixture
def an_copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "an"))


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


# --------------------------------------------------------------------------- settings that are never checked


@pytest.mark.parametrize(
    "args, names",
    [
        (["--train-size", "-1"], "--train-size -1"),
        (["--train-size", "0"], "--train-size 0"),
        (["--train-size", str(10**12)], f"--train-size {10**12}"),
        (["--k", "0"], "--k 0"),
        (["--k", "101"], "--k 101"),
        (["--plane-steps", "1"], "--plane-steps 1"),
        (["--plane-steps", "4"], "--plane-steps 4"),
        (["--plane-steps", str(10**9)], f"--plane-steps {10**9}"),
        (["--seed", str(2**64 + 1)], f"--seed {2**64 + 1}"),
        (["--seed", "-1"], "--seed -1"),
        (["--trace-hvp", "3"], "--trace-hvp 3"),
        (["--density-steps", "0"], "--density-steps 0"),
        (["--density-vectors", "-2"], "--density-vectors -2"),
        (["--sharpness-steps", "0"], "--sharpness-steps 0"),
        (["--batch-size", "0"], "--batch-size 0"),
        (["--measures", "trace", "trace"], "listed twice"),
        (["--train-size", "1.5"], "1.5"),
        (["--seed", "nan"], "nan"),
    ],
)
def test_bad_settings_are_one_line_and_write_nothing(models_dir, tmp_path, data_dir, capsys, args, names):
    out = tmp_path / "an"
    code, _, err = analyze(capsys, data_dir, out, *args)
    assert code == 2 and names in one_line(err)
    assert not out.exists()


def test_usage_mistakes_are_one_line(models_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "an"
    for argv, names in (
        (["analyze", "--model", "hostile_models:build", "--data", "cifar10"], "--out"),
        (["analyze", "--run", tmp_path, "--data", "mnist"], "--data"),
        (["analyze", "--model", "hostile_models:build", "--data", "cifar10", "--out", out, "--experiment", "x"], "--experiment"),
        (["analyze", "--model", "no_colon", "--data", "cifar10", "--out", out], "MODULE:FACTORY"),
    ):
        code, _, err = run_main(capsys, *argv)
        assert code == 2 and names in one_line(err)
    assert sorted(tmp_path.iterdir()) == []


def test_out_that_is_a_file_is_one_line(models_dir, tmp_path, data_dir, capsys):
    (tmp_path / "a_file").write_text("mine")
    for out in (tmp_path / "a_file", tmp_path / "a_file" / "below", tmp_path / ("n" * 300)):
        code, _, err = analyze(capsys, data_dir, out)
        assert code == 2 and f"--out {out}" in one_line(err)
    assert tree(tmp_path) == {"a_file": b"mine"}


# --------------------------------------------------------------------------- a model that does not fit


@pytest.mark.parametrize(
    "model, data, names",
    [
        ("hostile_models:seven", "cifar10", "[B, 7]"),  # 7 outputs for 10 classes
        ("hostile_models:build", "mnist", "mnist images [B, 1, 32, 32]"),  # a 3-channel model on MNIST
        ("hostile_models:gray", "cifar10", "cifar10 images [B, 3, 32, 32]"),
        ("hostile_models:no_weights", "cifar10", "no trainable parameters"),
        ("hostile_models:not_a_module", "cifar10", "not an nn.Module"),
        ("hostile_models:raises", "cifar10", "cannot build today"),
        ("hostile_models:missing", "cifar10", "no function 'missing'"),
        ("nosuchmodule:build", "cifar10", "nosuchmodule"),
    ],
)
def test_a_model_that_does_not_fit_is_one_line_before_any_measure(models_dir, tmp_path, data_dir, capsys, model, data, names):
    out = tmp_path / "an"
    code, stdout, err = analyze(capsys, data_dir, out, model=model, data=data)
    assert code == 2 and names in one_line(err) and stdout == ""
    assert not out.exists()


def test_a_model_that_differs_between_two_passes_is_one_line(models_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "an"
    code, _, err = analyze(capsys, data_dir, out, "--mode", "train", model="hostile_models:dropout")
    assert code == 2 and "differ" in one_line(err) and "--mode train" in err
    assert not out.exists()


def test_a_module_that_fails_to_import_is_one_line(models_dir, tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the command imports from the current folder
    (tmp_path / "broken_models.py").write_text("def build(:\n")
    code, _, err = analyze(capsys, data_dir, tmp_path / "an", model="broken_models:build")
    assert code == 2 and "broken_models" in one_line(err) and "SyntaxError" in err
    assert not (tmp_path / "an").exists()


def test_weights_that_do_not_fit_or_hold_code_are_one_line(models_dir, tmp_path, data_dir, capsys):
    import hostile_models

    torch.save(hostile_models.seven().state_dict(), tmp_path / "seven.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a weights file")
    torch.save({"fc.weight": Payload(tmp_path / "marker")}, tmp_path / "crafted.pt")
    before = tree(tmp_path)
    for name, names in (
        ("seven.pt", "does not fit the model"),
        ("list.pt", "not a state dict"),
        ("garbage.pt", "can read"),
        ("crafted.pt", "can read"),
        ("missing.pt", "can read"),
    ):
        code, _, err = analyze(capsys, data_dir, tmp_path / "an", "--weights", tmp_path / name)
        assert code == 2 and f"--weights {tmp_path / name}" in one_line(err) and names in err, err
    assert tree(tmp_path) == before  # no folder, and the payload never ran
    assert not (tmp_path / "marker").exists()


def test_a_failed_first_attempt_does_not_poison_the_folder(models_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "an"
    for model in ("nosuchmodule:build", "hostile_models:seven"):
        code, _, _ = analyze(capsys, data_dir, out, model=model)
        assert code == 2 and not out.exists()
    code, _, err = analyze(capsys, data_dir, out, "--measures", "trace")
    assert code == 0, err
    assert summary(out)["trace"]["n_hvp"] == 9


# --------------------------------------------------------------------------- non-finite results


def test_nan_weights_are_a_recorded_result(models_dir, tmp_path, data_dir, capsys):
    import hostile_models

    model = hostile_models.build()
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    torch.save(model.state_dict(), tmp_path / "nan.pt")
    out = tmp_path / "an"
    code, stdout, err = analyze(capsys, data_dir, out, "--weights", tmp_path / "nan.pt")
    assert code == 0 and err == "" and "diverged (non-finite weights)" in stdout
    s = summary(out)
    assert s["diverged"] == "non-finite weights" and s["failed"] == []
    assert all(s[m] is None for m in ("top_eigenvalues", "trace", "density", "sharpness", "plane"))
    assert "The model diverged (non-finite weights)" in (out / "report.html").read_text()
    assert run_main(capsys, "report", out)[0] == 0
    again = analyze(capsys, data_dir, out, "--weights", tmp_path / "nan.pt")
    assert again[0] == 0 and summary(out) == s


def test_non_finite_numbers_in_a_result_render_as_not_finite(an_copy, capsys):
    """A measure that came out NaN (recorded as null) renders as n/a: the table, the text, the figures."""
    s = summary(an_copy)
    s["trace"].update(value=None, ci=[None, None])
    s["top_eigenvalues"]["values"] = [None]
    s["density"]["nodes"][0][0] = None
    s["plane"]["loss"][0][0] = None
    s["sharpness"]["keskar"]["value"] = None
    (an_copy / "summary.json").write_text(json.dumps(s))
    code, _, err = run_main(capsys, "report", an_copy)
    assert code == 0, err
    md = (an_copy / "report.md").read_text()
    assert "| Hessian trace | n/a |" in md and "| top eigenvalues | n/a |" in md


# --------------------------------------------------------------------------- links out of the folder


def test_an_analyze_folder_that_is_a_link_is_refused(models_dir, tmp_path, data_dir, capsys):
    """`analyze --run RUN` (no --out) where RUN/analyze is a link elsewhere: nothing there changes."""
    run = tmp_path / "run"
    (run / "sensitivity" / "trials").mkdir(parents=True)
    (run / "sensitivity" / "config.json").write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "summary.json").write_text('{"mine": 1}')
    (elsewhere / "report.html").write_text("mine")
    (run / "analyze").symlink_to(elsewhere)
    before = tree(tmp_path)
    code, _, err = run_main(capsys, "analyze", "--run", run, *FAST)
    assert code == 1 and "analyze is a symbolic link" in one_line(err)
    code, _, err = analyze(capsys, data_dir, run / "analyze")
    assert code == 1 and "analyze is a symbolic link" in one_line(err)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("link", ["measures", "figures"])
def test_a_subfolder_that_is_a_link_is_refused(an_copy, tmp_path, data_dir, capsys, link):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(an_copy / link, elsewhere)
    (an_copy / link).symlink_to(elsewhere)
    before = tree(tmp_path)
    code, _, err = analyze(capsys, data_dir, an_copy)
    assert code == 1 and f"{link} is a symbolic link" in one_line(err)
    code, _, err = run_main(capsys, "report", an_copy)
    assert code == 1 and f"{link} is a symbolic link" in one_line(err)
    assert tree(tmp_path) == before


def test_a_measure_that_is_a_link_is_not_read_but_computed_again(an_copy, finished, tmp_path, data_dir, capsys):
    secret = tmp_path / "secret.json"
    trace = json.loads((an_copy / "measures" / "trace.json").read_text())
    secret.write_text(json.dumps({**trace, "value": 12345.0}))  # a trace-shaped file elsewhere
    (an_copy / "measures" / "trace.json").unlink()
    (an_copy / "measures" / "trace.json").symlink_to(secret)
    before = secret.read_bytes()
    code, stdout, err = analyze(capsys, data_dir, an_copy)
    assert code == 0 and "trace.json: damaged (a symbolic link" in one_line(err)
    assert stdout.count("done before, kept") == 4
    assert summary(an_copy) == summary(finished) and secret.read_bytes() == before
    assert not (an_copy / "measures" / "trace.json").is_symlink()


def test_a_config_that_is_a_link_is_one_line_and_changes_nothing(an_copy, tmp_path, data_dir, capsys):
    config = an_copy / "config.json"
    shutil.move(config, tmp_path / "elsewhere.json")
    config.symlink_to(tmp_path / "elsewhere.json")
    before = tree(tmp_path)
    code, _, err = analyze(capsys, data_dir, an_copy)
    assert code == 1 and f"{config}: unreadable (a symbolic link" in one_line(err)
    assert tree(tmp_path) == before


def test_a_summary_that_is_a_link_is_not_read_by_the_report(an_copy, tmp_path, capsys):
    (tmp_path / "elsewhere.json").write_text(json.dumps(summary(an_copy)))
    (an_copy / "summary.json").unlink()
    (an_copy / "summary.json").symlink_to(tmp_path / "elsewhere.json")
    code, _, err = run_main(capsys, "report", an_copy)
    assert code == 1 and "summary.json: a symbolic link" in one_line(err)


# --------------------------------------------------------------------------- damaged files are recomputed


@pytest.mark.parametrize(
    "content",
    [
        '{"value": 1.0',
        "[1, 2]",
        '{"value": "x", "ci": [0, 1], "n_hvp": 9, "method": "m"}',
        '{"value": 1.0, "ci": [0], "n_hvp": 9, "method": "m"}',
        "\xff\xfe",
    ],
)
def test_a_damaged_measure_is_named_and_computed_again(an_copy, finished, data_dir, capsys, content):
    (an_copy / "measures" / "trace.json").write_text(content, encoding="latin-1")
    code, stdout, err = analyze(capsys, data_dir, an_copy)
    assert code == 0 and f"{an_copy / 'measures' / 'trace.json'}: damaged" in one_line(err) and "computing trace again" in err
    assert summary(an_copy) == summary(finished)


@pytest.mark.parametrize("content", ['{"model": "x', "[]", "", "\xff"])
def test_a_damaged_config_is_one_line_and_changes_nothing(an_copy, tmp_path, data_dir, capsys, content):
    config = an_copy / "config.json"
    config.write_text(content, encoding="latin-1")
    before = tree(tmp_path)
    code, _, err = analyze(capsys, data_dir, an_copy)
    assert code == 1 and f"{config}: unreadable" in one_line(err)
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- the study's report


def _drop_data(s):
    s.pop("data")


def _trace_text(s):
    s["trace"]["value"] = "big"


def _ragged_plane(s):
    s["plane"]["loss"][0] = [1.0]


def _a_list(s):
    s.clear()


@pytest.mark.parametrize("damage", [_drop_data, _trace_text, _ragged_plane, _a_list, "link", "garbage"])
def test_one_damaged_analyze_folder_costs_only_its_section(clean_run, finished, tmp_path, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(clean_run, run)  # a finished tiny func-fit run: the study
    shutil.copytree(finished, run / "analyze")
    shutil.copytree(finished, run / "analyze-ok")
    path = run / "analyze" / "summary.json"
    s = summary(finished)
    if damage == "link":
        (tmp_path / "elsewhere.json").write_text(json.dumps(s))
        path.unlink()
        path.symlink_to(tmp_path / "elsewhere.json")
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage")
    else:
        damage(s)
        path.write_text(json.dumps([] if damage is _a_list else s))
    code, _, err = run_main(capsys, "report", run)
    assert code == 0, err
    page = (run / "report.html").read_text()
    assert "The files of this analysis are damaged" in page and "summary.json" in page
    assert page.count("The files of this analysis are damaged") == 1  # analyze-ok renders in full
    assert "Hessian trace" in page and '<section id="func-fit">' in page


# --------------------------------------------------------------------------- kills, and a second writer


def _command(models_dir, data_dir, out, env=None):
    """`dlscope analyze` as its own process (run from the models' folder, as a user would)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dlscope",
            "analyze",
            "--model",
            "hostile_models:build",
            "--data",
            "cifar10",
            *FAST,
            "--out",
            str(out),
            "--data-dir",
            data_dir,
        ],
        cwd=models_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_kill_during_analyze_resumes_to_the_same_results(models_dir, tmp_path, data_dir):
    whole = tmp_path / "whole"
    assert _command(models_dir, data_dir, whole).returncode == 0
    out = tmp_path / "an"
    # killed (kill -9) in the first forward pass after trace.json is written: during density
    killed = _command(models_dir, data_dir, out, {"DLSCOPE_TEST_KILL_WHEN": str(out / "measures" / "trace.json")})
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (out / "measures").iterdir()) == ["top_eigenvalues.json", "trace.json"]
    assert not (out / "summary.json").exists()
    leftovers = [
        out / ".summary.json.k2j4_x9a",
        out / "measures" / ".density.json.abcd1234",
        out / "figures" / ".plane.png.zz9_abcd.png",
    ]  # what kills during writes leave
    for p in leftovers:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x" * 100)
    resumed = _command(models_dir, data_dir, out)
    assert resumed.returncode == 0 and resumed.stdout.count("done before, kept") == 2, resumed.stderr
    assert summary(out) == summary(whole)
    assert not any(p.exists() for p in leftovers)


@pytest.mark.parametrize("command", ["analyze", "run"])
def test_a_refused_second_writer_leaves_nothing_behind(models_dir, tmp_path, data_dir, command):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert list(out.iterdir()) == []  # the lock is on the folder itself: no lock file
        if command == "analyze":
            r = _command(models_dir, data_dir, out)
        else:
            r = subprocess.run(
                [sys.executable, "-m", "dlscope", "run", "func-fit", "--out", str(out), *TINY_RUN],
                capture_output=True,
                text=True,
                timeout=300,
            )
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert f"{out} is in use by another dlscope run (pid {holder.pid})" in one_line(r.stderr)
        assert list(out.iterdir()) == []
    finally:
        holder.kill()  # kill -9: the lock goes with the process
        holder.wait()
    assert list(out.iterdir()) == []
    with files.folder_lock(out):  # free again: this would raise FolderInUse otherwise
        pass


def test_kept_models_of_a_crafted_run_are_data_checked_for_shape(tmp_path, capsys):
    """`analyze --run`: a trial file with code, one that is a link, and weights of the wrong shape."""
    run = tmp_path / "run"
    trials = run / "sensitivity" / "trials"
    trials.mkdir(parents=True)
    (run / "sensitivity" / "config.json").write_text("{}")
    torch.save(
        {"weights": {"model": "cnn-1", "params": {"x": torch.ones(1, 3)}, "buffers": {}, "labels": ["a"]}}, trials / "odd.pt"
    )
    torch.save({"weights": Payload(tmp_path / "marker")}, trials / "crafted.pt")
    elsewhere = tmp_path / "elsewhere.pt"
    torch.save({"weights": {"model": "cnn-2", "params": {"y": torch.ones(1, 2)}, "buffers": {}, "labels": ["b"]}}, elsewhere)
    (trials / "link.pt").symlink_to(elsewhere)  # read, it would make two architectures
    before = tree(tmp_path)
    code, _, err = run_main(capsys, "analyze", "--run", run, *FAST)
    assert code == 2 and "sensitivity/trials/odd.pt" in one_line(err) and "do not load as cnn-1" in err
    assert tree(tmp_path) == before and not (tmp_path / "marker").exists()
