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
import statistics
import subprocess
from pathlib import Path

import pytest

from dlscope import cli, experiments, report, runner
from dlscope.executors import LocalExecutor, Outcome
from dlscope.runner import RunResult, StudyProgress, run_experiment

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


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
    assert ids == ["findings", "contents", *experiments.names(), "differences"]
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


def test_numbers_beside_the_original_only_at_its_settings(study, tmp_path):
    page = (study / "report.html").read_text()
    body = text(section(page, "cifar-depth"))
    summary = json.loads((study / "cifar-depth" / "summary.json").read_text())
    from dlscope.experiments.cifar_depth import REFERENCE

    models = list(dict.fromkeys(row["model"] for row in summary["results"]))
    medians = {m: statistics.median([row["test_acc"] for row in summary["results"] if row["model"] == m]) for m in models}
    for m in models:
        assert f"{100 * medians[m]:.2f}%" in body  # accuracies as percentages
    # smoke is not the original's settings: the page says so and shows no numbers beside the original's
    assert re.search(r"not comparable at the\s+smoke\s+profile", body)
    assert not re.search(r"original\s+dlscope\s+difference", body)  # no table of numbers

    # the same results in a folder marked as a full-profile run: the original's numbers beside ours
    run = tmp_path / "full"
    for name in ("func-fit", "cifar-depth"):
        shutil.copytree(study / name, run / name)
        cfg = json.loads((run / name / "config.json").read_text())
        (run / name / "config.json").write_text(json.dumps({**cfg, "profile": "full"}))
    report.write_report(run)
    page = (run / "report.html").read_text()
    body = text(section(page, "cifar-depth"))
    for m in models:
        n = sum(row["model"] == m for row in summary["results"])
        ours, orig = medians[m], REFERENCE["rows"][f"{m} test accuracy"]
        # the comparison row: original, ours (the median over seeds), and the difference in percentage points
        assert re.search(
            rf"{m} test accuracy \(median of {n} "
            rf"seeds?\)\s+{100 * orig:.2f}%\s+{100 * ours:.2f}%\s+{100 * (ours - orig):+.1f} pp",
            body,
        )
    ff = text(section(page, "func-fit"))  # final MSE against SPEC's numbers, the median over seeds
    rows = json.loads((study / "func-fit" / "summary.json").read_text())["results"]
    deep_f1 = statistics.median(r["final_loss"] for r in rows if (r["function"], r["model"]) == ("f1", "mlp-deep"))
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
    assert [s["id"] for s in seen["sections"]] == ["findings", "contents", *experiments.names(), "differences"]
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
            assert f"dlscope run {name} --profile smoke --out {part.name}" in body
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
    result = run_experiment(
        "func-fit", "smoke", run, seed=0, device="cpu", data_dir=data_dir, progress=False, executor=FailingExecutor("mlp-shallow")
    )
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
        (Path(out) / name).mkdir(parents=True, exist_ok=True)
        (Path(out) / name / "config.json").write_text(json.dumps({"profile": "smoke", "seed": 0}))
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
    assert f"report: {tmp_path / 'cli' / 'report.html'}" in capsys.readouterr().out  # the one file to open


def test_overall_progress_line_and_time_left(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    study = StudyProgress(["a", "b", "c"], enabled=False, planned={"a": 40.0, "b": 40.0, "c": 40.0})
    study.enter("a")
    study.start_experiment("a", total=2, done=0)
    clock[0] = 10.0
    study.epoch("model-x", 5, 10)
    assert study.text() == "[1/3] a · trial 1/2 model-x · epoch 5/10 · ~2 min left"  # 30 + 2 * 40 = 110 s
    study.trial_done()
    clock[0] = 40.0
    study.trial_done()
    study.end_experiment()
    assert study.durations == [(40.0, 40.0)]

    study.enter("b")
    study.start_experiment("b", total=4, done=2)  # resumed: two trials were done before
    clock[0] = 50.0
    study.epoch("model-y", 1, 2)
    assert study.text() == "[2/3] b · trial 3/4 model-y · epoch 1/2 · ~70 s left"  # 30 of b + 40 of c
    clock[0] = 80.0
    study.trial_done()
    study.trial_done()
    assert study.text() == "[2/3] b · summary and figures · ~42 s left"  # b past its plan: 5% of it, and c
    study.end_experiment()
    study.end_experiment()  # ending twice (a crash after the trials) counts once
    assert study.durations == [(40.0, 40.0), (40.0, 40.0)]

    study.enter("c")
    study.start_experiment("c", total=1, done=1)  # nothing to do: says nothing about pace
    study.end_experiment()
    assert study.durations == [(40.0, 40.0), (40.0, 40.0)]


def test_time_left_without_a_plan_weighs_experiments_by_their_cost(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    study = StudyProgress(["func-fit", "random-labels"], enabled=False)
    study.enter("func-fit")
    study.start_experiment("func-fit", total=1, done=0)
    clock[0] = 90.0
    F, R = experiments.get("func-fit").COST, experiments.get("random-labels").COST
    assert abs(study.seconds_left() - (F - 90.0 + R)) < 1e-9


# --------------------------------------------------------------------------- findings


def with_findings(study: Path, dest: Path) -> dict[str, list[dict]]:
    """A copy of the study whose summaries carry findings computed from their own numbers where
    possible (findings.py's functions), so the verdicts are real ones, not typed in."""
    from dlscope.findings import Finding, at_least, greater

    shutil.copytree(study, dest)
    out = {}
    for name in RAN:
        path = dest / name / "summary.json"
        summary = json.loads(path.read_text())
        clear = greater([0.02, 0.03, 0.025, 0.04])  # every seed on the claimed side: shown
        split = greater([0.02, -0.03, 0.01])  # seeds disagree: inconclusive
        none = at_least(2, 100, 0.9)  # 2 of 100 where 90% are claimed: not shown
        found = [
            Finding.from_stat(
                clear, f"{name}-a", f"claim A of {name} <b>holds</b>.", "original", "mean of differences", "every seed agrees"
            ).as_dict(),
            Finding.from_stat(
                split, f"{name}-b", f"claim B of {name}.", "Novak et al. 2018", "mean rho", "one seed of three disagrees"
            ).as_dict(),
            Finding.from_stat(none, f"{name}-c", f"claim C of {name}.", "original", "fraction converged", "2 of 100").as_dict(),
        ]
        assert [f["verdict"] for f in found] == ["shown", "inconclusive", "not shown"]
        path.write_text(json.dumps({**summary, "findings": found}))
        out[name] = found
    return out


def test_report_opens_with_the_findings_and_each_section_with_its_verdicts(study, tmp_path):
    run = tmp_path / "run"
    found = with_findings(study, run)
    report.write_report(run)
    page = (run / "report.html").read_text()
    assert re.findall(r'<section id="([^"]+)">', page)[0] == "findings"  # the report opens with them
    table = section(page, "findings")
    for name, fs in found.items():
        for f in fs:
            # claim (escaped, not markup), source, verdict coloured by its kind, evidence: value, interval, n
            kind = {"shown": "good", "not shown": "bad", "inconclusive": "warn"}[f["verdict"]]
            assert html.escape(f["claim"], quote=False) in table
            assert f'<td class="verdict {kind}">{f["verdict"]}</td>' in table
            ci = f" (95% interval {f['ci'][0]:.3g} to {f['ci'][1]:.3g})" if f["ci"] else ""
            value = "0" if abs(f["value"]) < 1e-12 else f"{f['value']:.3g}"  # a mean of cancelling values: rounding noise
            assert f"{f['statistic']}: {value}{ci}, n = {f['n']}" in text(table)
        body = section(page, name)
        own = body[body.index("<h3>Findings") : body.index("<h3>What was run")]  # before anything else of the section
        assert own.count('<td class="verdict') == len(fs)
        beside = body[body.index("Beside the original study") :] if "Beside the original study" in body else ""
        if getattr(experiments.get(name), "REFERENCE", None) or beside:
            # the original's claims only, as verdicts; at smoke the numbers are not comparable
            assert beside.count('<td class="verdict') == sum(f["source"] == "original" for f in fs)
            assert "Novak" not in beside
    assert "<b>holds</b>" not in page  # a claim is text, never markup
    md = (run / "report.md").read_text()
    # the findings table, the section's own table, the original's claims beside it, and the key to verdicts
    assert md.count("**not shown**") == 3 * len(RAN) + 1


# The ids issue 11 asks every experiment's summary to carry (the original's claims and the papers')
REQUIRED_FINDINGS = {
    "func-fit": {"f1-all-fit", "f2-shallow-worst"},
    "cifar-depth": {"deeper-is-better"},
    "trajectory": {"runs-end-apart"},
    "grad-norm": {"grad-norm-falls"},
    "min-ratio": {"critical-points-reached", "ratio-rises-as-loss-falls"},
    "random-labels": {"memorises", "test-at-chance"},
    "param-count": {"more-params-better", "gap-grows-with-params"},
    "interpolation": {"large-batch-sharper", "large-lr-flatter"},
    "sensitivity": {"sensitivity-falls-with-batch", "sensitivity-tracks-gap"},
}


def test_every_experiment_states_its_findings_and_the_report_opens_with_them(study):
    from dlscope.findings import VERDICTS

    assert set(RAN) == set(REQUIRED_FINDINGS)
    page = (study / "report.html").read_text()
    assert re.findall(r'<section id="([^"]+)">', page)[0] == "findings"
    table = text(section(page, "findings"))
    for name in RAN:
        found = json.loads((study / name / "summary.json").read_text())["findings"]
        assert REQUIRED_FINDINGS[name] <= {f["id"] for f in found}, name
        for f in found:
            assert set(f) == {
                "id",
                "claim",
                "source",
                "verdict",
                "statistic",
                "value",
                "ci",
                "n",
                "note",
                "test",
                "p",
                "sample",
                "detectable",
            }
            assert f["verdict"] in VERDICTS and isinstance(f["n"], int)
            assert f["ci"] is None or (len(f["ci"]) == 2 and f["ci"][0] <= f["ci"][1])
            assert " ".join(f["claim"].split()) in table


def test_every_verdict_recomputed_from_its_sample_by_a_second_route(study):
    """Each finding names its test and the numbers it rests on; recomputed from summary.json alone
    (tests/verdict_recheck.py: textbook formulas, enumeration, scipy's own tests), the verdict agrees."""
    from verdict_recheck import disagreements, recheck

    tests_seen = set()
    for name in RAN:
        for f in json.loads((study / name / "summary.json").read_text())["findings"]:
            assert isinstance(f["test"], str) and f["test"] and isinstance(f["sample"], dict), (name, f["id"])
            assert f["p"] is None or 0.0 <= f["p"] <= 1.0
            if recheck(f) is None:  # too little data to decide anything
                assert f["verdict"] == "inconclusive", (name, f["id"])
            tests_seen.add(f["test"])
    assert disagreements(study) == []
    assert len(tests_seen) >= 4  # the smoke study exercises several methods, not one


def test_findings_table_counts_the_tests_and_marks_holm(study, tmp_path):
    run = tmp_path / "run"
    with_findings(study, run)
    report.write_report(run)
    page = text(section((run / "report.html").read_text(), "findings"))
    tested = 3 * len(RAN)  # with_findings: three claims with a p per experiment
    assert f"{tested} claims were tested" in page
    # each experiment's clear claim (p ~ 0.003) survives Holm over 3 x 9 tests only if p <= 0.025 / rank
    from dlscope.findings import greater, holm_survivors

    p = greater([0.02, 0.03, 0.025, 0.04]).p
    survive = holm_survivors([p] * len(RAN) + [0.5] * (2 * len(RAN)))[0]
    assert f"{len(RAN) if survive else 0} of {len(RAN)} do" in page


def test_no_findings_recorded_is_said_plainly(study, tmp_path):
    run = tmp_path / "bare"
    shutil.copytree(study, run)
    for name in RAN:  # summaries of an older dlscope carry no findings
        path = run / name / "summary.json"
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "findings"}))
    report.write_report(run)
    page = (run / "report.html").read_text()
    assert "No findings recorded" in text(section(page, "findings"))
    for name in RAN:
        assert "No findings recorded for this experiment" in text(section(page, name))


def test_run_prints_its_verdicts_and_what_to_do_next(monkeypatch, tmp_path, capsys):
    from dlscope.experiments._base import resolve
    from dlscope.findings import Finding

    finding = Finding("f1-all-fit", "All three fit f1.", "original", "inconclusive", "k", 0.5, [0.1, 0.9], 3, "seeds disagree")

    def fake_run_experiment(name, profile, out, seed, device, overrides, executor, data_dir, progress):
        (Path(out) / name).mkdir(parents=True, exist_ok=True)  # the settings a real run records, so a rerun accepts them
        cfg = resolve(experiments.get(name), profile, overrides, seed)
        (Path(out) / name / "config.json").write_text(json.dumps(cfg))
        return RunResult(name, Path(out) / name, {"experiment": name, "findings": [finding.as_dict()]})

    monkeypatch.setattr(runner, "run_experiment", fake_run_experiment)
    out = tmp_path / "one"
    assert cli.main(["run", "func-fit", "--profile", "smoke", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "INCONCLUSIVE  f1-all-fit: 0.5 [0.1, 0.9], n=3  (seeds disagree)" in [ln.strip() for ln in printed]
    assert printed[-1] == f"next: dlscope report {out}"
    assert not any("nothing to do" in ln for ln in printed)  # it ran something (trials_run unknown)

    def finished_run_experiment(*args, **kwargs):  # a rerun: every trial was already done
        return RunResult(**{**vars(fake_run_experiment(*args, **kwargs)), "trials_run": 0})

    monkeypatch.setattr(runner, "run_experiment", finished_run_experiment)
    monkeypatch.setattr(experiments, "available", lambda: ["func-fit", "cifar-depth"])
    assert cli.main(["run", "all", "--profile", "smoke", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"nothing to do: every trial of this study in {out} was already done" in printed
    assert printed.strip().splitlines()[-1] == f"report: {out / 'report.html'}"


# --------------------------------------------------------------------------- the page, as a newcomer reads it


def test_no_path_of_the_machine_and_captions_are_sentences(study):
    page = (study / "report.html").read_text()
    assert str(study.resolve()) not in page and str(study.resolve().parent) not in page
    assert f"<td>{study.name}</td>" in page  # the folder's name only
    captions = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S)]
    assert len(captions) == len(figure_files(study))
    for c in captions:
        # a sentence: starts with a capital, ends with a full stop, has words, names no file
        assert c[0].isupper() and c.endswith(".") and len(c.split()) >= 6, c
        assert ".png" not in c and "figures/" not in c, c


def test_long_series_are_a_link_and_per_point_rows_no_meaningless_medians(study):
    page = (study / "report.html").read_text()
    linked = [name for name in RAN if "are drawn in the figures above" in section(page, name)]
    assert linked  # interpolation's α series at least
    for name in linked:  # the per-point series are in the figures and metrics.csv, not in a table per record
        assert f'<a href="{name}/metrics.csv">{name}/metrics.csv</a>' in section(page, name)
        assert (study / name / "metrics.csv").is_file()
    for name in RAN:  # no statistic of a column that names a training (seed, run)
        body = section(page, name)
        results = body[body.index("<h3>Results") :]
        assert not re.search(r"<td>(seed|seeds|run)</td><td class=\"num\">", results), name


# --------------------------------------------------------------------------- a run folder from elsewhere


def tiny_png(marker: bytes = b"") -> bytes:
    import io

    import matplotlib.image

    buf = io.BytesIO()
    matplotlib.image.imsave(buf, [[0.0, 1.0], [1.0, 0.0]], format="png")
    return buf.getvalue() + marker  # bytes after IEND: still a PNG to any reader


def test_only_the_experiments_own_figure_files_are_embedded(study, tmp_path):
    secret = tiny_png(b"SECRET-MARKER-4711")
    (tmp_path / "secret.png").write_bytes(secret)
    (tmp_path / "secret.txt").write_bytes(b"SECRET-MARKER-4711")
    run = tmp_path / "deep" / "er" / "run"
    shutil.copytree(study / "func-fit", run / "func-fit")
    shutil.copytree(study / "cifar-depth", run / "cifar-depth")
    figs = run / "func-fit" / "figures"
    own = sorted(p.name for p in figs.glob("*.png"))
    timing = json.loads((run / "func-fit" / "timing.json").read_text())
    timing["figures"] = [
        str(tmp_path / "secret.png"),
        "../../../../secret.png",
        "../../../../secret.txt",
        "link.png",
        "sub/x.png",
        "..",
        *timing.get("figures", []),
    ]
    (run / "func-fit" / "timing.json").write_text(json.dumps(timing))
    (figs / "link.png").symlink_to(tmp_path / "secret.png")  # a link out of the folder
    (figs / "notapng.png").write_bytes(b"SECRET-MARKER-4711")  # not an image
    (figs / "sub").mkdir()
    # another experiment whose whole figures/ folder is a link out of the run
    shutil.rmtree(run / "cifar-depth" / "figures")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "curves.png").write_bytes(secret)
    (run / "cifar-depth" / "figures").symlink_to(tmp_path / "elsewhere")

    report.write_report(run)
    page, md = (run / "report.html").read_text(), (run / "report.md").read_text()
    encoded = base64.b64encode(secret).decode()
    for out in (page, md):
        assert encoded not in out and "SECRET-MARKER" not in out and "secret" not in out
    embedded = sorted(base64.b64decode(s.split(",", 1)[1]) for s in re.findall(r'<img src="([^"]+)"', page))
    assert embedded == sorted((figs / n).read_bytes() for n in own)  # exactly the experiment's own figures
    assert sorted(re.findall(r"\]\((func-fit/figures/[^)]+)\)", md)) == [f"func-fit/figures/{n}" for n in own]
    assert "<img" not in section(page, "cifar-depth")


def test_run_folder_strings_are_escaped_in_markdown_as_in_html(study, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(study / "func-fit", run / "func-fit")
    evil = "<script>alert(1)</script> [x](javascript:alert(2)) <img src=x onerror=alert(3)>"
    (run / "func-fit" / "trials" / "mlp-deep.error.txt").write_text(f"Traceback ...\nRuntimeError: {evil}\n")
    summary = json.loads((run / "func-fit" / "summary.json").read_text())
    summary["note<script>"] = evil
    (run / "func-fit" / "summary.json").write_text(json.dumps(summary))
    report.write_report(run)
    page, md = (run / "report.html").read_text(), (run / "report.md").read_text()
    for out in (page, md):
        assert "<script" not in out and "<img src=x" not in out and 'href="javascript' not in out
    assert "](javascript:" not in md  # no Markdown link to anywhere but this page and the run's files
    assert "RuntimeError: &lt;script&gt;alert(1)&lt;/script&gt;" in md  # shown as text, not dropped
    assert "RuntimeError: <script>alert(1)</script>" in text(section(page, "func-fit"))


@pytest.mark.parametrize(
    "file, content",
    [
        ("summary.json", {"failed_trials": 5}),
        ("summary.json", {"findings": "all shown"}),
        ("summary.json", [1, 2, 3]),
        ("config.json", {"profile": 5, "seed": 0}),
        ("config.json", "just a string"),
        ("timing.json", {"figures": 5}),
        ("timing.json", {"total_trial_seconds": "fast"}),
        ("summary.json", None),  # not JSON at all
    ],
)
def test_an_odd_file_marks_its_experiment_damaged_and_the_rest_renders(study, tmp_path, file, content):
    run = tmp_path / "run"
    shutil.copytree(study / "func-fit", run / "func-fit")
    shutil.copytree(study / "cifar-depth", run / "cifar-depth")
    (run / "func-fit" / file).write_text("{not json" if content is None else json.dumps(content))
    report.write_report(run)
    page = (run / "report.html").read_text()
    damaged = text(section(page, "func-fit"))
    assert "damaged" in damaged and file in damaged and "<img" not in section(page, "func-fit")
    good = section(page, "cifar-depth")  # the rest as ever
    assert "What was run" in text(good) and good.count("<img") == len(list((run / "cifar-depth" / "figures").glob("*.png")))
    assert "damaged: func-fit" in text(page)


def test_report_command_errors_are_one_line(study, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes").mkdir()
    assert cli.main(["report", str(empty)]) == 2  # holds no run: says so and writes nothing
    err = capsys.readouterr().err
    assert "holds no dlscope run" in err and "nothing written" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in empty.iterdir()) == ["notes"]
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err

    run = tmp_path / "run"
    shutil.copytree(study / "func-fit", run / "func-fit")
    (run / ".report.html.x1y2z3").write_text("left by a killed write")  # cleaned on the next write
    (run / ".report.md.abcd").write_text("left by a killed write")
    (run / "report.html").mkdir()  # a place the report cannot be written to, even by root
    assert cli.main(["report", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dlscope: error: cannot write the report in") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    (run / "report.html").rmdir()
    assert cli.main(["report", str(run)]) == 0
    assert not list(run.glob(".report.*"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the directory case above covers it")
def test_report_into_a_read_only_folder(study, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(study / "func-fit", run / "func-fit")
    run.chmod(0o555)
    try:
        assert cli.main(["report", str(run)]) == 1
        err = capsys.readouterr().err
        assert "cannot write the report" in err and "Permission denied" in err and "Traceback" not in err
    finally:
        run.chmod(0o755)


# --------------------------------------------------------------------------- the experiment contract


def test_every_experiment_keeps_the_contract_of_base_py(study):
    """Every module of experiments.names() declares what experiments/_base.py lists (REQUIRED; its
    declared settings name settings of every profile), and its smoke run yields findings, one
    results row per seed, and a caption for every figure it wrote."""
    import inspect

    from dlscope.experiments import _base as base

    assert {"WORK_SETTINGS", "POSITIVE_SETTINGS", "NON_NEGATIVE_SETTINGS", "REFERENCE"} <= set(base.REQUIRED)
    for name in experiments.names():
        module = experiments.get(name)
        missing = [k for k in base.REQUIRED if not hasattr(module, k)]
        assert not missing, f"{name} lacks {missing}"
        assert set(module.WORK_SETTINGS) == set(base.WORK_GROUPS) and all(module.WORK_SETTINGS.values()), name
        for profile, settings in module.PROFILES.items():
            declared = [*module.POSITIVE_SETTINGS, *module.NON_NEGATIVE_SETTINGS, *sum(module.WORK_SETTINGS.values(), ())]
            unknown = [k for k in declared if k not in settings]
            assert not unknown, f"{name} ({profile}) declares settings it does not have: {unknown}"
            base.check_common(settings, module.POSITIVE_SETTINGS, module.NON_NEGATIVE_SETTINGS)
            for group, keys in module.WORK_SETTINGS.items():
                assert sum(settings[k] for k in keys) > 0, f"{name} ({profile}): no {group} work"
        for k in base.OPTIONAL:
            assert not hasattr(module, k) or k.isupper() or callable(getattr(module, k)), f"{name}.{k}"
        assert set(module.PROFILES) == {"smoke", "quick", "full"}, name
        assert module.NAME == name and isinstance(module.LOOK_FOR, str) and module.LOOK_FOR.strip()
        assert isinstance(module.COST, (int, float)) and module.COST > 0
        assert all(callable(getattr(module, k)) for k in ("trials", "summarize", "metrics", "figures"))
        assert module.REFERENCE is None or callable(getattr(module, "ours", None)), f"{name}: REFERENCE without ours()"
        assert len(inspect.signature(module.summarize).parameters) == 2
        if name not in RAN:
            continue
        summary = json.loads((study / name / "summary.json").read_text())
        assert summary["findings"], name
        assert summary["results"] and all("seed" in row for row in summary["results"]), name
        written = [p.name for p in (study / name / "figures").glob("*.png")]
        assert written, name
        uncaptioned = [f for f in written if f not in module.CAPTIONS]
        assert not uncaptioned, f"{name}: figures without a caption: {uncaptioned}"
