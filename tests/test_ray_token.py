"""The Ray token trap: a private Ray run writes ~/.ray/auth_token, after which a `ray start --head`
cluster requires that token. `--executor ray --address` must then connect with it by itself.

Runs the whole sequence in a private HOME, so the user's ~/.ray is never read or written."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from test_executors import LOCAL_RAY, WAIT_S, child_env, dlscope_args, free_port, stop_group, summary


def test_address_run_after_a_private_run_uses_the_saved_token(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    home = tmp_path / "home"
    home.mkdir()
    env = child_env(HOME=str(home))
    env.pop("RAY_AUTH_MODE")  # as a user's shell has it: unset
    env.pop("RAY_ADDRESS", None)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    env["RAY_TMPDIR"] = temp

    # 1. a private run (no address) leaves the token file
    private = subprocess.run([sys.executable, "-c", LOCAL_RAY], env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert private.returncode == 0, private.stderr[-3000:]
    token = home / ".ray" / "auth_token"
    assert token.is_file(), "Ray no longer writes a token on a private run: this test's premise is gone"

    # 2. a head started afterwards by the same user requires it
    port = free_port()
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
    start = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log = start.communicate(timeout=120)[0]
        assert start.returncode == 0, log[-3000:]
        # 3. the address run connects by itself, and says how
        out = tmp_path / "run"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "dlscope",
                *dlscope_args("func-fit", out, "--executor", "ray", "--address", f"127.0.0.1:{port}"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"with the token in {token}" in done.stderr
        assert json.loads((out / "func-fit" / "timing.json").read_text())["executor"] == "ray"
        assert summary(out, "func-fit")["results"]  # the trials ran on the cluster
    finally:
        stop_group(start.pid)
        subprocess.run(["rm", "-rf", temp])
