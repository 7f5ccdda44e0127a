"""The report (DIR/report.html, DIR/report.md) and the `run all` experience.

One smoke run of every available experiment is shared by the tests of this file; the page is
rendered in headless Chromium, which must show every section and load every figure.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dlscope import cli, experiments, report, runner
from dlscope.executors import LocalExecutor, Outcome
from dlscope.runner import RunResult, StudyProgress, run_experiment

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
                  "--hide-scrollbars"]


RAN: list[str] = []  # the experiments the study fixture ran (available() when it ran)


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir) -> Path:
    """A run folder with every experiment of this version run on the smoke profile."""
    out = tmp_path_factory.mktemp("study")
    RAN[:] = experiments.available()
    for name in RAN:
        result = run_experiment(name, "smoke", out, seed=0, device="cpu", data_dir=data_dir, progress=False)
        assert result.ok, f"{name}: {result.failed}"
    report.write_report(out)
    return out


def figure_files(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("*/figures/*.png") if not p.name.startswith("."))


def section(page: str, ident: str) -> str:
    m = re.search(rf'<section id="{re.escape(ident)}">(.*?)</section>', page, re.S)
    assert m, f"no section {ident}"
    return m.group(1)


def text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", fragment))


# --------------------------------------------------------------------------- the page itself


def test_report_is_self_contained_and_embeds_every_figure(study):
    page = (study / "report.html").read_text()
    # no network: no external scripts, styles, fonts or images
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    srcs = re.findall(r'<img src="([^"]+)"', page)
    files = figure_files(study)
    assert files and len(srcs) == len(files)
    embedded = sorted(base64.b64decode(s.split(",", 1)[1]) for s in srcs)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert embedded == sorted(p.read_bytes() for p in files)  # byte for byte the figures on disk


def test_report_sections_in_spec_order_with_status(study):
    page = (study / "report.html").read_text()
    ids = re.findall(r'<section id="([^"]+)">', page)
    assert ids == ["contents", *experiments.names(), "differences"]
    for name in experiments.names():
        body = text(section(page, name))
        if name in RAN:
            assert "What was run" in body and "Results" in body and "smoke" in body
        else:
            assert "Not run" in body
    toc = text(section(page, "contents"))
    for name in experiments.names():
        assert name in toc
    diffs = text(section(page, "differences"))
    for topic in ("Sensitivity", "Minimal ratio", "1→1 input layer", "cnn-1's Softmax", "cnn-7's missing activation"):
        assert topic in diffs


def test_settings_that_differ_from_full_are_listed(study):
    page = (study / "report.html").read_text()
    for name in RAN:
        module = experiments.get(name)
        cfg = json.loads((study / name / "config.json").read_text())
        body = section(page, name)
        differing = [k for k, v in module.PROFILES["full"].items() if json.dumps(cfg.get(k)) != json.dumps(v)]
        for k in differing:
            assert f"<td>{html.escape(k)}</td>" in body, f"{name}: setting {k} differs from full but is not listed"
        same = [k for k in module.PROFILES["full"] if k not in differing]
        assert f"({len(same)} others are the same)" in body


def test_numbers_formatted_and_compared_with_the_original(study):
    page = (study / "report.html").read_text()
    body = text(section(page, "cifar-depth"))
    summary = json.loads((study / "cifar-depth" / "summary.json").read_text())
    from dlscope.experiments.cifar_depth import REFERENCE

    for row in summary["results"]:
        ours = row["test_acc"]
        orig = REFERENCE["rows"][f"{row['model']} test accuracy"]
        assert f"{100 * ours:.2f}%" in body  # accuracies as percentages
        # the comparison row: original, ours, and the difference in percentage points
        assert re.search(rf"{row['model']} test accuracy\s+{100 * orig:.2f}%\s+{100 * ours:.2f}%\s+{100 * (ours - orig):+.1f} pp", body)
    # smoke is not the original's settings, and the page says so
    assert "not the original's settings" in body
    # func-fit compares final MSE with SPEC's numbers
    ff = text(section(page, "func-fit"))
    rows = json.loads((study / "func-fit" / "summary.json").read_text())["results"]
    deep_f1 = next(r["final_loss"] for r in rows if (r["function"], r["model"]) == ("f1", "mlp-deep"))
    assert re.search(rf"f1 · mlp-deep\s+0.0029\s+{re.escape(f'{deep_f1:.4g}')}\s+{re.escape(f'{deep_f1 - 0.0029:+.4g}')}", ff)


def test_markdown_links_every_figure_by_relative_path(study):
    md = (study / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(p.relative_to(study).as_posix() for p in figure_files(study))
    for name in experiments.names():
        assert f"— {name}" in md
    assert "Where dlscope's definitions differ" in md


# --------------------------------------------------------------------------- in a browser


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed here (apt-get install chromium); CI installs it")
    return path


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({file: i.dataset.file, w: i.naturalWidth, h: i.naturalHeight,
                                               shown: i.getBoundingClientRect().width, ok: i.complete && i.naturalWidth > 0}));
  const sections = [...document.querySelectorAll('section[id]')].map(s => ({id: s.id, h: s.getBoundingClientRect().height}));
  const wide = document.documentElement.scrollWidth - window.innerWidth;
  const pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify({imgs, sections, wide});
  document.body.appendChild(pre);
});
</script>"""


def test_report_renders_in_chromium_with_every_figure_loaded(study, tmp_path):
    page = (study / "report.html").read_text()
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page.replace("</body>", PROBE + "</body>"))
    done = run_chromium(tmp_path, "--virtual-time-budget=20000", "--window-size=1280,4000", "--dump-dom", probe_page.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert m, f"chromium printed no probe result: {done.stderr[-2000:]}"
    seen = json.loads(html.unescape(m.group(1)))

    files = {p.relative_to(study).as_posix(): p for p in figure_files(study)}
    assert sorted(img["file"] for img in seen["imgs"]) == sorted(files)
    for img in seen["imgs"]:
        assert img["ok"], f"broken image {img['file']}"
        # decoded at the PNG's own size, and shown no wider than the page's column
        assert (img["w"], img["h"]) == report.png_size(files[img["file"]])
        assert 0 < img["shown"] <= 1120
    assert [s["id"] for s in seen["sections"]] == ["contents", *experiments.names(), "differences"]
    assert all(s["h"] > 50 for s in seen["sections"]), seen["sections"]  # every section has content on screen
    assert seen["wide"] <= 0  # no horizontal scrolling: nothing sticks out of the page

    shot = tmp_path / "report.png"
    done = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", (study / "report.html").as_uri())
    assert shot.exists(), done.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (4000, 1280)
    assert pixels[..., :3].std() > 0.05  # not a blank page


# --------------------------------------------------------------------------- partial and failed runs


def test_partial_folder_says_what_is_not_run(study, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(study / "func-fit", part / "func-fit")
    paths = report.write_report(part)
    assert paths == [part / "report.html", part / "report.md"]
    page = paths[0].read_text()
    assert f"1 of {len(experiments.names())} complete" in text(page)
    for name in experiments.names()[1:]:
        body = text(section(page, name))
        assert "Not run" in body
        if name in experiments.available():  # and how to run it, into the same folder
            assert f"dlscope run {name} --profile smoke --out {part}" in body
        assert "<img" not in section(page, name)
    assert len(re.findall(r"<img ", section(page, "func-fit"))) == len(list((part / "func-fit" / "figures").glob("*.png")))
    md = paths[1].read_text()
    assert md.count("not run") >= len(experiments.names()) - 1


class FailingExecutor(LocalExecutor):
    """Runs trials in-process, except the one it is told to fail."""

    def __init__(self, fail: str):
        self.fail = fail

    def run(self, jobs, on_outcome, on_progress=None):
        for job in jobs:
            if job.trial.key == self.fail:
                on_outcome(job, Outcome(job.trial.key, error="Traceback ...\nRuntimeError: out of patience\n"))
            else:
                super().run([job], on_outcome, on_progress)


def test_failed_trial_is_named_in_the_report(study, tmp_path, data_dir):
    run = tmp_path / "run"
    shutil.copytree(study / "func-fit", run / "func-fit")
    (run / "func-fit" / "trials" / "mlp-shallow.pt").unlink()  # as if that trial had never finished
    result = run_experiment("func-fit", "smoke", run, seed=0, device="cpu", data_dir=data_dir, progress=False,
                            executor=FailingExecutor("mlp-shallow"))
    assert not result.ok and list(result.failed) == ["mlp-shallow"]
    report.write_report(run)
    page = (run / "report.html").read_text()
    body = text(section(page, "func-fit"))
    assert "1 trial(s) failed" in body and "mlp-shallow" in body and "RuntimeError: out of patience" in body
    # the results that exist are still shown, the failed model's are not
    assert "mlp-deep" in body and not re.search(r"f1\s+mlp-shallow\s+573", body)
    assert "failed" in text(section(page, "contents"))


# --------------------------------------------------------------------------- run all


def test_run_all_reports_a_failure_and_goes_on(monkeypatch, tmp_path, capsys):
    calls = []

    def fake_run_experiment(name, profile, out, seed, device, overrides, executor, data_dir, progress):
        calls.append(name)
        bar = runner.Progress(name, 2, 0, enabled=progress)
        bar.trial_done()
        bar.close()
        if name == "func-fit":
            raise RuntimeError("figure code broke")
        return RunResult(name, Path(out) / name, {"experiment": name})

    monkeypatch.setattr(experiments, "available", lambda: ["func-fit", "cifar-depth"])
    monkeypatch.setattr(runner, "run_experiment", fake_run_experiment)
    results = runner.run_all("smoke", tmp_path, progress=True)
    assert calls == ["func-fit", "cifar-depth"]
    assert [r.ok for r in results] == [False, True]
    assert "figure code broke" in results[0].failed["<experiment>"]
    err = capsys.readouterr().err
    assert "func-fit: FAILED" in err and "failed: func-fit" in err
    assert StudyProgress.current is None  # the overall display is closed

    # the command's exit code says that something failed, and the report is written anyway
    assert cli.main(["run", "all", "--profile", "smoke", "--out", str(tmp_path / "cli"), "--no-progress"]) == 1
    assert (tmp_path / "cli" / "report.html").exists()


def test_overall_progress_line_and_time_left(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    study = StudyProgress(["a", "b", "c"], enabled=False)
    study.enter("a")
    study.start_experiment("a", total=2, done=0)
    clock[0] = 10.0
    study.epoch("model-x", 5, 10)  # a quarter of a's work in 10 s: a takes 40 s, b and c guessed alike
    assert study.text() == "[1/3] a · trial 1/2 model-x · epoch 5/10 · ~2 min left"  # 30 + 2 * 40 = 110 s
    study.trial_done()
    clock[0] = 40.0
    study.trial_done()
    study.end_experiment()
    assert [d for d, _ in study.durations] == [40.0]

    study.enter("b")
    study.start_experiment("b", total=4, done=2)  # resumed: two trials were done before
    clock[0] = 50.0
    study.epoch("model-y", 1, 2)  # a quarter of what was left: 40 s in all; c guessed at 40 s
    assert study.text() == "[2/3] b · trial 3/4 model-y · epoch 1/2 · ~70 s left"
    clock[0] = 80.0
    study.trial_done()
    study.trial_done()
    assert study.text() == "[2/3] b · summary and figures · ~40 s left"  # c, guessed at the mean of 40 and 40 s
    study.end_experiment()
    study.end_experiment()  # ending twice (a crash after the trials) counts once
    assert [d for d, _ in study.durations] == [40.0, 40.0]

    study.enter("c")
    study.start_experiment("c", total=1, done=1)  # nothing to do: says nothing about pace
    study.end_experiment()
    assert [d for d, _ in study.durations] == [40.0, 40.0]


def test_time_left_weighs_experiments_by_their_relative_cost(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    study = StudyProgress(["func-fit", "random-labels"], enabled=False)
    study.enter("func-fit")
    study.start_experiment("func-fit", total=1, done=0)
    clock[0] = 90.0
    study.epoch("mlp-deep", 1, 2)  # half of func-fit in 90 s; random-labels costs 18/181 of func-fit
    expected = 90.0 + 180.0 * experiments.get("random-labels").COST / experiments.get("func-fit").COST
    assert abs(study.seconds_left() - expected) < 1e-9
