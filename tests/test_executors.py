"""The process and ray executors: the same summary as the local executor for the same seeds, a
worker killed mid-trial costs nothing but time, a trial that raises is recorded and the rest finish.

The faults come from tests/gated_experiment.py (func-fit whose first trial holds mid-training until
its worker is killed, and whose trial named by $DLSCOPE_TEST_RAISE raises). The Ray tests start a
real single-node cluster on 127.0.0.1 with `ray start --head` in its own session, and stop it by
killing that session's process group: only the processes this test started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dlscope import runner
from dlscope.experiments._base import ConfigError, Resources, Trial
from dlscope.executors import AutoExecutor, Job, LocalExecutor, make_executor
from dlscope.executors.process import ProcessExecutor, cpu_count

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # whatever pytest's import mode: workers import it by this name too
    sys.path.insert(0, str(HERE))
import gated_experiment  # noqa: E402

# smoke profiles, smaller still: the comparison needs equal numbers, not good ones
SETTINGS = {
    "func-fit": ["epochs=8", "points=30"],
    "cifar-depth": ["epochs=1", "train_size=200", "test_size=100"],
}
SETTINGS["func-fit-gated"] = SETTINGS["func-fit"]
# the driver: the dlscope command, with the test experiment registered
DRIVER = "import sys, gated_experiment; gated_experiment.register(); from dlscope.cli import main; sys.exit(main(sys.argv[1:]))"
WAIT_S = 150


def child_env(**extra) -> dict:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    env["DLSCOPE_CHECKPOINT_SECONDS"] = "0"  # every epoch, so a retried trial resumes mid-way
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # with --node-ip-address=127.0.0.1: Ray stays on loopback
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_AUTH_MODE"] = "disabled"  # the same on both ends, whatever ~/.ray holds; nothing written there
    return env


def dlscope_args(exp: str, out: Path, *executor: str) -> list[str]:
    sets = [a for s in SETTINGS[exp] for a in ("--set", s)]
    return ["run", exp, "--profile", "smoke", "--device", "cpu", "--out", str(out), "--no-progress", *sets, *executor]


def run_dlscope(exp: str, out: Path, *executor: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *dlscope_args(exp, out, *executor)],
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )


def summary(out: Path, exp: str) -> dict:
    return json.loads((out / exp / "summary.json").read_text())


@pytest.fixture(scope="session")
def local_summary(tmp_path_factory):
    """The local executor's summary of an experiment (in this process, computed once). The runner
    fixes each trial's torch threads (runner.trial_threads), so local, auto and process give the
    same bits although CPU convolutions sum in an order that depends on the thread count."""
    cache: dict = {}

    def get(exp: str) -> dict:
        if exp not in cache:
            out = tmp_path_factory.mktemp("local")
            result = runner.run_experiment(
                exp, "smoke", out, device="cpu", overrides=SETTINGS[exp], executor=LocalExecutor(), progress=False
            )
            assert result.ok, result.failed
            timing = json.loads((out / exp / "timing.json").read_text())
            assert timing["threads_per_trial"] == runner.trial_threads(3)
            cache[exp] = summary(out, exp)
        return cache[exp]

    return get


def run_with_faults(tmp_path: Path, *executor: str, **env) -> tuple[subprocess.CompletedProcess, Path, int]:
    """func-fit-gated with the first trial's worker killed at its held epoch and mlp-shallow raising.
    Returns the finished driver, the run folder and the killed pid."""
    gate, out = tmp_path / "gate", tmp_path / "run"
    gate.mkdir()
    cmd = [sys.executable, "-c", DRIVER, *dlscope_args("func-fit-gated", out, *executor)]
    env = child_env(DLSCOPE_TEST_GATE=str(gate), DLSCOPE_TEST_RAISE="mlp-shallow", **env)
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while not (gate / "held").exists():  # the trial reached its held epoch in some worker
            assert driver.poll() is None, f"the driver ended before the trial was held:\n{driver.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, "the trial was never held"
            time.sleep(0.05)
        pid = int((gate / "held").read_text())
        assert pid != driver.pid
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=WAIT_S)
    finally:
        (gate / "release").touch()  # a held trial nobody killed ends now
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    attempts = {p.name: p.read_text() for p in gate.iterdir()}
    done = subprocess.CompletedProcess(cmd, driver.returncode, stdout, stderr)
    # attempt 0 was the killed one; attempt 1 started again from the checkpoint of the held epoch
    assert attempts.get("attempt-0") == str(pid), (attempts, stderr[-3000:])
    assert attempts.get("attempt-1") not in (None, str(pid)), (attempts, stderr[-3000:])
    assert attempts.get("resumed-1") == str(gated_experiment.HOLD_EPOCH), attempts
    return done, out, pid


def check_fault_run(done, out: Path, reference: dict) -> None:
    """Killing a worker changed nothing; the raising trial is recorded and the others finished."""
    assert done.returncode == 1, done.stderr[-3000:]  # one failed trial
    assert "trial mlp-shallow failed" in done.stderr and "a planned failure" in done.stderr
    s = summary(out, "func-fit-gated")
    assert s["failed_trials"] == ["mlp-shallow"]
    assert "a planned failure of this trial" in (out / "func-fit-gated" / "trials" / "mlp-shallow.error.txt").read_text()
    expected = [r for r in reference["results"] if r["model"] != "mlp-shallow"]
    assert len(expected) == 4 and s["results"] == expected


# --------------------------------------------------------------------------- choosing


def test_make_executor_checks_its_options(monkeypatch):
    assert isinstance(make_executor("local"), LocalExecutor)
    assert isinstance(make_executor(), AutoExecutor)  # the default
    assert isinstance(make_executor("process", workers=2), ProcessExecutor)
    for name, opts, message in [
        ("threads", {}, "unknown executor"),
        ("process", {"workers": 0}, "at least 1"),
        ("process", {"address": "h:1"}, "--address is for --executor ray"),
        ("local", {"workers": 2}, "--workers is for"),
        ("auto", {"workers": 2}, "--workers is for"),
    ]:
        with pytest.raises(ConfigError, match=message):
            make_executor(name, **opts)
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert make_executor("ray").address == "10.0.0.1:6379"  # connecting waits for the first run
    assert make_executor("ray", address="h:1").address == "h:1"


# --------------------------------------------------------------------------- process


@pytest.fixture(scope="module")
def pool():
    """One process executor for the tests below, as run_all uses it: warm across experiments."""
    ex = make_executor("process", workers=2)
    yield ex
    ex.close()


@pytest.mark.parametrize("exp", ["func-fit", "cifar-depth"])
def test_process_executor_gives_the_local_summary(tmp_path, local_summary, pool, exp):
    result = runner.run_experiment(exp, "smoke", tmp_path, device="cpu", overrides=SETTINGS[exp], executor=pool, progress=False)
    assert result.ok, result.failed
    assert summary(tmp_path, exp) == local_summary(exp)
    timing = json.loads((tmp_path / exp / "timing.json").read_text())
    assert timing["executor"] == "process" and len(timing["trial_seconds"]) == 3
    assert len({w.proc.pid for w in pool._pool} | {os.getpid()}) == 3  # two workers, neither of them this process


@pytest.mark.parametrize("exp", ["cifar-depth", "func-fit"])
def test_auto_executor_runs_trials_side_by_side_with_the_local_numbers(tmp_path, local_summary, monkeypatch, exp):
    """The default executor: an experiment long enough to be worth worker processes runs its trials
    side by side, one process per core, with exactly the numbers of one after another here."""
    from dlscope import executors

    monkeypatch.setattr(executors, "SIDE_BY_SIDE_MIN_SECONDS", 0.0)  # smoke is too short to be worth it
    auto = AutoExecutor()
    try:
        result = runner.run_experiment(
            exp, "smoke", tmp_path, device="cpu", overrides=SETTINGS[exp], executor=auto, progress=False
        )
        assert result.ok, result.failed
        assert summary(tmp_path, exp) == local_summary(exp)
        timing = json.loads((tmp_path / exp / "timing.json").read_text())
        workers = min(cpu_count(), 3)
        assert timing["executor"] == (f"auto ({workers} worker processes)" if workers > 1 else "auto (local)")
        if workers > 1:
            assert len({w.proc.pid for w in auto._pool._pool} | {os.getpid()}) == workers + 1
        assert timing["threads_per_trial"] == runner.trial_threads(3)
        assert 0 < timing["trial_cpu_seconds"] and 0 < timing["cpu_utilisation"] <= cpu_count() + 0.1
        assert 0 < timing["cores_busy_per_trial"] <= timing["threads_per_trial"] + 0.1
    finally:
        auto.close()


def test_auto_executor_keeps_short_runs_gpus_and_opted_out_experiments_here(monkeypatch):

    auto = AutoExecutor()

    def job(exp="cifar-depth", device="cpu", seconds=30.0):
        return Job(exp, Trial("a", print, {}), device, None, None, expected_seconds=seconds)

    cores = cpu_count()
    assert auto.side_by_side([job(), job()]) == (2 if cores > 1 else 0)
    assert auto.side_by_side([job()]) == 0  # one trial
    assert auto.side_by_side([job(seconds=1.0), job(seconds=1.0)]) == 0  # a smoke run: not worth a worker
    assert auto.side_by_side([job(device="cuda"), job(device="cuda")]) == 0
    assert auto.side_by_side([job("no-such-experiment"), job("no-such-experiment")]) == 0
    from dlscope.experiments import cifar_depth

    monkeypatch.setattr(cifar_depth, "SIDE_BY_SIDE", False, raising=False)
    assert auto.side_by_side([job(), job()]) == 0


def test_heaviest_trials_start_first_and_cnn_trials_weigh_their_parameters():
    from dlscope.executors import heaviest_first
    from dlscope.experiments import cifar_depth

    trials = cifar_depth.trials(runner.resolve(cifar_depth, "quick", [], 0))
    jobs = [Job("cifar-depth", t, "cpu", None, None) for t in trials]
    assert [j.trial.key for j in heaviest_first(jobs)] == ["cnn-7", "cnn-2", "cnn-1"]
    light = [Job("x", Trial(k, print, {}), "cpu", None, None) for k in "abc"]
    assert [j.trial.key for j in heaviest_first(light)] == ["a", "b", "c"]  # equal weights keep their order


def test_process_executor_survives_a_killed_worker(tmp_path, local_summary):
    done, out, _ = run_with_faults(tmp_path, "--executor", "process", "--workers", "2")
    check_fault_run(done, out, local_summary("func-fit"))


def test_process_executor_gives_up_on_a_trial_that_keeps_killing_its_worker(pool):
    """Retries are bounded: a worker that dies every time fails that trial; the others finish."""
    jobs = [
        Job("t", Trial(key, fn, {"n": i}, Resources()), "cpu", None, None)
        for i, (key, fn) in enumerate(
            [("dies", gated_experiment.die), ("a", gated_experiment.echo), ("b", gated_experiment.echo)]
        )
    ]
    outcomes = {}
    pool.max_retries = 1
    try:
        pool.run(jobs, lambda job, o: outcomes.setdefault(job.trial.key, o))
    finally:
        pool.max_retries = 3
    assert set(outcomes) == {"dies", "a", "b"}
    assert "died 2 times" in outcomes["dies"].error and outcomes["dies"].result is None
    assert outcomes["a"].result["n"] == 1 and outcomes["b"].result["n"] == 2
    assert outcomes["a"].result["pid"] != os.getpid()  # ran in a worker
    # the pool is whole again and serves the next experiment
    again = {}
    pool.run(jobs[1:2], lambda job, o: again.setdefault(job.trial.key, o))
    assert again["a"].result["n"] == 1 and all(w.proc.is_alive() for w in pool._pool)


# --------------------------------------------------------------------------- ray


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster on 127.0.0.1 (2 CPUs, small object store); yields its address."""
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--object-store-memory=200000000",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--temp-dir={temp}",
    ]
    # its own session: every process of the cluster (daemons, workers) shares its process group
    start = subprocess.Popen(
        cmd, env=child_env(), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        log = start.communicate(timeout=120)[0]
        assert start.returncode == 0, log[-3000:]
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(start.pid)
        shutil.rmtree(temp, ignore_errors=True)


def stop_group(pgid: int) -> None:
    """What `ray stop --force` does, for this cluster only: SIGKILL its process group."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the kernel has taken them all down
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def test_ray_executor_gives_the_local_summary(tmp_path, local_summary, ray_cluster):
    done = run_dlscope("func-fit", tmp_path, "--executor", "ray", "--address", ray_cluster)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Connected to Ray cluster" in done.stderr
    assert summary(tmp_path, "func-fit") == local_summary("func-fit")
    assert json.loads((tmp_path / "func-fit" / "timing.json").read_text())["executor"] == "ray"


def test_ray_executor_survives_a_killed_worker(tmp_path, local_summary, ray_cluster):
    done, out, _ = run_with_faults(tmp_path, "--executor", "ray", RAY_ADDRESS=ray_cluster)  # the address from the environment
    check_fault_run(done, out, local_summary("func-fit"))


LOCAL_RAY = """
import json, sys
from dlscope.executors import Job, make_executor
from dlscope.experiments._base import Resources, Trial
import gated_experiment, ray

ex = make_executor("ray", workers=2)
jobs = [Job("t", Trial(k, gated_experiment.echo, {"n": i}, Resources(cpus=1)), "cpu", None, None) for i, k in enumerate("ab")]
got = {}
ex.run(jobs, lambda job, o: got.setdefault(job.trial.key, o.result))
nodes = [n["NodeManagerAddress"] for n in ray.nodes()]
print(json.dumps({"results": got, "nodes": nodes, "cpus": ray.cluster_resources()["CPU"]}))
"""


def test_ray_executor_without_an_address_starts_a_private_instance_on_loopback(ray_cluster):
    """Even with a cluster running on this machine: no address means a new instance, on 127.0.0.1."""
    env = child_env()
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")  # the executor itself must keep Ray on loopback
    env["RAY_TMPDIR"] = temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # the instance's logs and sockets
    try:
        done = subprocess.run([sys.executable, "-c", LOCAL_RAY], env=env, capture_output=True, text=True, timeout=WAIT_S)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["nodes"] == ["127.0.0.1"] and out["cpus"] == 2
    assert {k: r["n"] for k, r in out["results"].items()} == {"a": 0, "b": 1}
    assert "Started a local Ray instance" in done.stderr


def test_whole_study_side_by_side_writes_the_files_of_one_trial_after_another(tmp_path, monkeypatch, capsys):
    """run_all with the default executor on a multi-core CPU: every experiment's trials in one
    queue on one pool of single-thread workers. The same summary.json and metrics.csv, byte for
    byte, as the in-process executor's one trial after another; the progress line walks the
    experiments in order; run again, it finds every trial done and writes the same files."""
    from dlscope import experiments

    monkeypatch.setattr(runner, "SIDE_BY_SIDE_MIN_SECONDS", 0.0)  # smoke is too short to be worth it
    monkeypatch.setenv("DLSCOPE_PROGRESS_SECONDS", "1000")  # a log: a line per trial and experiment
    auto = AutoExecutor()
    try:
        side = runner.run_all("smoke", tmp_path / "side", device="cpu", executor=auto, progress=True)
        lines = capsys.readouterr().err.splitlines()
        summaries = {n: (tmp_path / "side" / n / "summary.json").read_bytes() for n in experiments.available()}
        again = runner.run_all("smoke", tmp_path / "side", device="cpu", executor=auto, progress=False)
    finally:
        auto.close()
    n = len(experiments.available())
    shown = [int(line[1 : line.index("/")]) for line in lines if line.startswith("[")]
    assert shown == sorted(shown) and shown[0] == 1 and lines[-1] == f"[{n}/{n}] study finished · all ok", lines
    assert all(r.ok and r.trials_run == 0 for r in again)
    assert {n: (tmp_path / "side" / n / "summary.json").read_bytes() for n in summaries} == summaries
    local = runner.run_all("smoke", tmp_path / "local", device="cpu", executor=LocalExecutor(), progress=False)
    assert all(r.ok for r in side + local), [(r.experiment, r.failed) for r in side + local if not r.ok]
    names = experiments.available()
    assert [r.experiment for r in side] == names
    for name in names:
        for f in ("summary.json", "metrics.csv"):
            assert (tmp_path / "side" / name / f).read_bytes() == (tmp_path / "local" / name / f).read_bytes(), (name, f)
        timing = json.loads((tmp_path / "side" / name / "timing.json").read_text())
        if cpu_count() > 1:
            assert timing["executor"] == f"auto ({cpu_count()} worker processes, whole study)"
            assert timing["threads_per_trial"] == 1 and "cpu_utilisation" not in timing  # its wall is a share
            assert 0 < timing["cores_busy_per_trial"] <= 1.1
