"""Hostile input: a data root or run folder from elsewhere is data, never code, and bad input ends
in one line and an exit code (2: bad usage, 1: a failure while running), never in a traceback.

Crafted files carry a harmless payload (making a marker folder): each test first shows that a
plain unpickler does run it, then that dlscope does not."""

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dlscope import cli, data, files
from dlscope.engine.ensemble import Ensemble
from dlscope.engine.train import CHECKPOINT_FORMAT, TrainConfig, Trainer
from dlscope.store import FileCheckpointer, RunStore, storable

DLSCOPE = [sys.executable, "-m", "dlscope"]
# func-fit, smaller still: two trials of a few milliseconds
TINY = ["--profile", "smoke", "--no-progress", "--set", "models=mlp-shallow,mlp-mid", "--set", "epochs=4", "--set", "points=30"]


class Payload:
    """Unpickled by a plain unpickler, this makes the folder `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def plain_unpickling_runs(payload_file_writer, tmp_path: Path) -> bool:
    """The payload is live: a file written the same way does make its marker under pickle.load."""
    probe, marker = tmp_path / "probe.pkl", tmp_path / "probe-marker"
    payload_file_writer(probe, marker)
    with open(probe, "rb") as f:
        try:
            torch.load(f, weights_only=False) if probe.read_bytes()[:2] == b"PK" else pickle.load(f)
        except Exception:
            pass  # whatever it builds afterwards, the payload ran first
    return marker.is_dir()


def run_main(capsys, *argv) -> tuple[int, str]:
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def one_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    return lines[0]


def summary(folder: Path) -> dict:
    return json.loads((folder / "func-fit" / "summary.json").read_text())


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> Path:
    """A finished tiny func-fit run, to be copied and damaged."""
    out = tmp_path_factory.mktemp("clean") / "run"
    assert cli.main(["run", "func-fit", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run_copy(clean_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    return out


# --------------------------------------------------------------------------- code in data files


def test_crafted_cifar_batch_runs_no_code(tmp_path, data_dir, capsys):
    def write(path, marker):
        path.write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [1]}))

    assert plain_unpickling_runs(write, tmp_path)
    root = tmp_path / "root"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / "MNIST").symlink_to(Path(data_dir) / "MNIST")
    for name in data.CIFAR_FILES:
        (root / "cifar-10-batches-py" / name).symlink_to(Path(data_dir) / "cifar-10-batches-py" / name)
    crafted = root / "cifar-10-batches-py" / "data_batch_1"
    crafted.unlink()
    write(crafted, tmp_path / "marker")

    code, err = run_main(capsys, "data", "info", "--data-dir", str(root))
    assert code == 1 and "data_batch_1" in one_line(err) and "posix.mkdir" in err
    assert not (tmp_path / "marker").exists()


def test_cifar_batches_that_hold_no_images_are_refused(tmp_path):
    batches = {
        "wrong_shape": {b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4},
        "floats": {b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4},
        "objects": {b"data": np.array([[b"x"] * 3072] * 2, dtype=object), b"labels": [0, 1]},
        "label_11": {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 11]},
        "huge_label": {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 2**80]},
        "count": {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]},
        "a_list": [1, 2, 3],
        "truncated": None,
    }
    good = pickle.dumps(
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 4], b"batch_label": b"b", b"filenames": [b"a", b"b"]}
    )
    for name, content in batches.items():
        path = tmp_path / name
        path.write_bytes(good[: len(good) // 2] if content is None else pickle.dumps(content))
        with pytest.raises(data.DataError) as e:
            data.read_cifar_batch(path)
        assert name in str(e.value) and "unreadable CIFAR-10 batch" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "good").write_bytes(good)
    x, y = data.read_cifar_batch(tmp_path / "good")  # what a real batch holds still reads
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [3, 4]


def _crafted_pt(path: Path, marker: Path) -> None:
    torch.save({"final_loss": 0.5, "hidden": Payload(marker)}, path)


def test_crafted_trial_result_and_checkpoint_run_no_code(run_copy, clean_run, tmp_path, capsys):
    assert plain_unpickling_runs(_crafted_pt, tmp_path)
    fit = run_copy / "func-fit"
    _crafted_pt(fit / "trials" / "mlp-shallow.pt", tmp_path / "marker-result")
    (fit / "trials" / "mlp-mid.pt").unlink()  # unfinished, with a crafted checkpoint to resume from
    _crafted_pt(fit / "checkpoints" / "mlp-mid.pt", tmp_path / "marker-checkpoint")

    code, err = run_main(capsys, "run", "func-fit", "--out", str(run_copy), *TINY)
    assert code == 0 and "mlp-shallow.pt: unreadable trial result" in err
    assert not (tmp_path / "marker-result").exists() and not (tmp_path / "marker-checkpoint").exists()
    assert summary(run_copy) == summary(clean_run)  # both trials ran again, from the start
    assert RunStore(run_copy, "func-fit").load_result("mlp-shallow")["model"] == "mlp-shallow"
    assert not (fit / "checkpoints" / "mlp-mid.pt").exists()


def test_only_plain_data_is_stored():
    result = {"loss": np.float64(0.25), "curve": np.arange(3.0), "rows": [(1, "a")], "t": torch.ones(2, requires_grad=True)}
    plain = storable(result)
    assert plain["loss"] == 0.25 and type(plain["loss"]) is float
    assert torch.equal(plain["curve"], torch.arange(3.0, dtype=torch.float64)) and not plain["t"].requires_grad
    with pytest.raises(TypeError, match=r"result\['rows'\]\[0\]\[1\] is a pathlib"):
        storable({"rows": [(1, Path("x"))]})


def test_an_archive_found_in_the_data_root_is_checked_before_unpacking(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"xxxxx"))
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(data.DataError) as e:
        data.ensure("cifar10", root)  # no download: the archive is there
    msg = str(e.value)
    assert "cifar-10-python.tar.gz" in msg and "checksum mismatch" in msg and "\n" not in msg
    assert not (root / "cifar-10-batches-py").exists()
    # the same archive with its own checksum as the published one unpacks
    res = [data.Resource("http://127.0.0.1:9/unused", "cifar-10-python.tar.gz", hashlib.md5(buf.getvalue()).hexdigest())]
    data.fetch("cifar10", root, res, progress=False)
    assert (root / "cifar-10-batches-py" / "data_batch_1").read_bytes() == b"xxxxx"


# --------------------------------------------------------------------------- damaged data files


def _idx(arr: torch.Tensor) -> bytes:
    return struct.pack(">i", 0x0800 | arr.dim()) + struct.pack(f">{arr.dim()}i", *arr.shape) + arr.numpy().tobytes()


def test_damaged_deflate_stream_in_mnist_is_one_line(tmp_path):
    g = torch.Generator().manual_seed(0)
    blob = bytearray(gzip.compress(_idx(torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8, generator=g))))
    for i in range(len(blob) // 2, len(blob) // 2 + 16):  # bytes flipped mid-file
        blob[i] ^= 0xFF
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(data.DataError) as e:
        data.read_idx(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_mnist_files_that_hold_other_shapes_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DLSCOPE_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    files = {
        "train-images-idx3-ubyte.gz": torch.zeros(4, 28, 28, dtype=torch.uint8),
        "train-labels-idx1-ubyte.gz": torch.tensor([0, 1, 2, 200], dtype=torch.uint8),  # class 200
        "t10k-images-idx3-ubyte.gz": torch.zeros(2, 28, 28, dtype=torch.uint8),
        "t10k-labels-idx1-ubyte.gz": torch.tensor([0, 1], dtype=torch.uint8),
    }
    for name, arr in files.items():
        (raw / name).write_bytes(gzip.compress(_idx(arr)))
    with pytest.raises(data.DataError, match="train-labels-idx1-ubyte.gz: .*not labels 0-9"):
        data.load_raw("mnist", tmp_path / "root")
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(torch.tensor([0, 1, 2, 3], dtype=torch.uint8))))
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(torch.zeros(4 * 28 * 28, dtype=torch.uint8))))
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz: .*not 28 x 28 images"):
        data.load_raw("mnist", tmp_path / "root")


def test_data_info_on_a_missing_root_writes_nothing_and_says_how_to_get_it(tmp_path, capsys):
    missing = tmp_path / "missing"
    code, err = run_main(capsys, "data", "info", "--data-dir", str(missing))
    line = one_line(err)
    assert code == 1 and str(missing) in line and "dlscope data download" in line
    assert not missing.exists()


def tiny_data_root(root: Path) -> Path:
    """MNIST and CIFAR-10 files in their real formats, with a few images each."""
    g = torch.Generator().manual_seed(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 20), ("t10k", 10)):
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx(torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g)))
        )
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(torch.arange(n, dtype=torch.uint8) % 10)))
    cifar = root / "cifar-10-batches-py"
    cifar.mkdir()
    for name in data.CIFAR_FILES:
        batch = {b"data": torch.randint(0, 256, (10, 3072), dtype=torch.uint8, generator=g).numpy(), b"labels": list(range(10))}
        (cifar / name).write_bytes(pickle.dumps(batch))
    return root


def test_data_info_into_a_closed_pipe_is_quiet(tmp_path):
    root = tiny_data_root(tmp_path / "root")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written, as after `| head -c 1`
    try:
        r = subprocess.run(
            DLSCOPE + ["data", "info", "--json", "--data-dir", str(root)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "DLSCOPE_CACHE": str(tmp_path / "cache")},
        )
    finally:
        os.close(write)
    assert r.returncode == 1 and r.stderr == ""  # no traceback; and no data error: only the pipe failed


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "argv, env, names",
    [
        (["func-fit", "--set", "lr=nan"], {}, "lr=nan"),
        (["func-fit", "--set", "lr=inf"], {}, "lr=inf"),
        (["func-fit", "--set", "lr=1e999"], {}, "lr=inf"),
        (["func-fit", "--set", "weight_decay=-inf"], {}, "weight_decay=-inf"),
        (["cifar-depth", "--set", "lr_gamma=nan"], {}, "lr_gamma=nan"),
        (["min-ratio", "--set", "grad_tol=NaN"], {}, "grad_tol=nan"),
        (["sensitivity", "--set", "lrs=0.1,nan"], {}, "lrs=0.1,nan"),
        (["sensitivity", "--set", "lrs=[0.1, Infinity]"], {}, "lrs=0.1,inf"),
        (["func-fit", "--set", "epochs=99999999999999999999999"], {}, "epochs=99999999999999999999999"),
        (["func-fit", "--set", "models=mlp-deep,mlp-deep"], {}, "mlp-deep is listed twice"),
        (["interpolation", "--set", "pairs=batch,batch"], {}, "batch is listed twice"),
        (["sensitivity", "--set", "batch_sizes=64,128,64"], {}, "64 is listed twice"),
        (["func-fit", "--seed", str(2**64)], {}, f"--seed {2**64}"),
        (["func-fit", "--seed", "-1"], {}, "--seed -1"),
        (["func-fit"], {"DLSCOPE_CHECKPOINT_SECONDS": "abc"}, "DLSCOPE_CHECKPOINT_SECONDS=abc"),
        (["func-fit"], {"DLSCOPE_CHECKPOINT_SECONDS": "nan"}, "DLSCOPE_CHECKPOINT_SECONDS=nan"),
        (["all", "--set", "trajectory.lr=nan"], {}, "trajectory: lr=nan"),
        (["all", "--seed", str(2**70)], {}, "--seed"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, argv, env, names):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "out"
    code, err = run_main(capsys, "run", *argv, "--profile", "smoke", "--out", str(out), "--no-progress")
    assert code == 2 and names in one_line(err)
    assert not out.exists()


def test_every_experiment_is_checked_against_the_folder_before_any_work(run_copy, capsys):
    """run all: a later experiment whose folder holds other settings stops the study up front."""
    other = run_copy / "sensitivity"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"profile": "smoke", "epochs": 1}))
    before = sorted(p.relative_to(run_copy) for p in run_copy.rglob("*"))
    stamp = (run_copy / "func-fit" / "summary.json").stat().st_mtime_ns
    same_func_fit = [a for s in TINY[4::2] for a in ("--set", f"func-fit.{s}")]  # func-fit's settings match the folder's
    code, err = run_main(capsys, "run", "all", "--profile", "smoke", "--out", str(run_copy), "--no-progress", *same_func_fit)
    assert code == 2 and "sensitivity" in one_line(err) and "other settings" in err
    assert sorted(p.relative_to(run_copy) for p in run_copy.rglob("*")) == before  # no experiment started
    assert (run_copy / "func-fit" / "summary.json").stat().st_mtime_ns == stamp


# --------------------------------------------------------------------------- --out


def _cases_of_bad_out(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "a_file").write_text("x")
    cases = {
        "existing file": tmp_path / "a_file",
        "below a file": tmp_path / "a_file" / "run",
        "name too long": tmp_path / ("n" * 300),
    }
    if Path("/sys/kernel").is_dir():  # Linux refuses new folders in /sys, even to root
        cases["a folder the system refuses"] = Path("/sys/dlscope-hostile-test")
    if os.geteuid() != 0:  # root writes into read-only folders anyway (the /sys case stands in)
        ro = tmp_path / "read_only"
        ro.mkdir(mode=0o555)
        cases["below a read-only folder"] = ro / "run"
        cases["a read-only folder"] = ro
    return cases


def test_out_that_cannot_be_a_run_folder_is_one_line(tmp_path, capsys):
    for what, out in _cases_of_bad_out(tmp_path).items():
        before = sorted(tmp_path.rglob("*"))
        code, err = run_main(capsys, "run", "func-fit", "--out", str(out), *TINY)
        assert code == 2 and f"--out {out}" in one_line(err), what
        assert sorted(tmp_path.rglob("*")) == before and not os.path.isdir(out), what


def test_experiment_folder_that_is_a_link_or_a_file_is_refused(run_copy, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run_copy / "func-fit" / "figures", elsewhere)
    (run_copy / "func-fit" / "figures").symlink_to(elsewhere)  # a run folder must not send writes outside it
    before = {p: p.stat().st_mtime_ns for p in elsewhere.iterdir()}
    code, err = run_main(capsys, "run", "func-fit", "--out", str(run_copy), *TINY)
    assert code == 1 and "figures is a symbolic link" in one_line(err)
    assert {p: p.stat().st_mtime_ns for p in elsewhere.iterdir()} == before
    (run_copy / "func-fit" / "figures").unlink()
    (run_copy / "func-fit" / "figures").write_text("x")
    code, err = run_main(capsys, "run", "func-fit", "--out", str(run_copy), *TINY)
    assert code == 1 and "figures is a file" in one_line(err)


# --------------------------------------------------------------------------- damaged run folders


@pytest.mark.parametrize("damage", [(b"", b"garbage\n"), (b"PK\x03\x04" + b"\x00" * 40, "a tensor")])
def test_unreadable_trial_results_run_their_trials_again(run_copy, clean_run, capsys, damage):
    paths = [run_copy / "func-fit" / "trials" / f"{key}.pt" for key in ("mlp-shallow", "mlp-mid")]
    for path, content in zip(paths, damage):
        if content == "a tensor":  # a valid file, but no result
            torch.save(torch.ones(3), path)
        else:
            path.write_bytes(content)
    code, err = run_main(capsys, "run", "func-fit", "--out", str(run_copy), *TINY)
    assert code == 0 and all(f"{path}: unreadable trial result" in err for path in paths)
    assert summary(run_copy) == summary(clean_run)
    assert RunStore(run_copy, "func-fit").load_result("mlp-mid")["model"] == "mlp-mid"


@pytest.mark.parametrize("content", ['{"profile": "smo', "[1, 2]", "", "\xff\xfe"])
def test_damaged_config_is_one_line_naming_it_and_changes_nothing(run_copy, capsys, content):
    config = run_copy / "func-fit" / "config.json"
    config.write_text(content, encoding="latin-1")

    def contents():
        return {p: p.read_bytes() for p in run_copy.rglob("*") if p.is_file() and p.name != files.LOCK_NAME}

    before = contents()
    code, err = run_main(capsys, "run", "func-fit", "--out", str(run_copy), *TINY)
    assert code == 1 and f"{config}: unreadable" in one_line(err)
    assert contents() == before


def test_checkpoint_that_does_not_fit_is_dropped(run_copy, clean_run, capsys):
    """An older format, or another model's state: the trial starts over instead of failing."""
    fit = run_copy / "func-fit"
    (fit / "trials" / "mlp-mid.pt").unlink()
    z = torch.zeros(7)
    torch.save(
        {
            "kind": "fast_mlp",
            "epoch": 1,
            "t": 1,
            "theta": z,
            "exp_avg": z,
            "exp_avg_sq": z,
            "history": {"loss": [z]},
            "diverged": torch.zeros(7, dtype=torch.bool),
        },
        fit / "checkpoints" / "mlp-mid.pt",
    )
    code, err = run_main(capsys, "run", "func-fit", "--out", str(run_copy), *TINY)
    assert code == 0, err
    assert summary(run_copy) == summary(clean_run)


def test_trainer_accepts_only_its_own_checkpoint_format(tmp_path):
    def trainer():
        ens = Ensemble.from_seeds("mlp-shallow", [0, 1], "cpu")
        return Trainer(ens, TrainConfig(epochs=3, batch_size=10, lr=1e-3, loss="mse"), [0, 1])

    x = torch.linspace(-1, 1, 30)[:, None]
    y = x[:, 0] ** 2
    fresh = trainer()
    fresh.run(x, y)
    state = fresh.state_dict()
    assert state["format"] == CHECKPOINT_FORMAT and trainer().fits(state)
    older = {k: v for k, v in state.items() if k != "format"}
    other_model = {**state, "ensemble": Ensemble.from_seeds("mlp-mid", [0, 1], "cpu").state_dict()}
    for bad in (older, other_model, {**state, "epoch": 4}, {**state, "epoch": 1.5}, {**state, "opt": {}}, [1, 2]):
        assert not trainer().fits(bad)
    # resumed from an older checkpoint, a training starts over and ends where a fresh one does
    path = tmp_path / "ckpt.pt"
    torch.save({**older, "epoch": 2}, path)
    resumed = trainer()
    resumed.run(x, y, checkpoint=FileCheckpointer(path, every_s=0))
    assert resumed.epoch == 3 and torch.equal(resumed.history["batch_loss"][-1], fresh.history["batch_loss"][-1])
    assert torch.load(path, weights_only=True)["format"] == CHECKPOINT_FORMAT


def test_leftovers_of_a_kill_are_cleaned_on_the_next_run(run_copy, clean_run, capsys):
    fit = run_copy / "func-fit"
    leftovers = [
        fit / ".summary.json.k2j4_x9a",
        fit / "trials" / ".mlp-mid.pt.abcd1234",
        fit / "figures" / ".loss.png.zz9_abcd.png",
        fit / "checkpoints" / "mlp-mid.pt",
    ]  # mlp-mid is finished
    for p in leftovers:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x" * 100)
    keep = fit / "notes.txt"
    keep.write_text("mine")
    code, err = run_main(capsys, "run", "func-fit", "--out", str(run_copy), *TINY)
    assert code == 0, err
    assert not any(p.exists() for p in leftovers) and keep.read_text() == "mine"
    assert summary(run_copy) == summary(clean_run)


def test_atomic_writes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a))), real_replace(a, b)))
    files.write_text_atomic(tmp_path / "x.json", "{}")
    (kind1, tmp), (kind2, renamed) = events[:2]
    assert kind1 == "fsync" and kind2 == "replace" and tmp == renamed and Path(tmp).name.startswith(".x.json.")
    assert (tmp_path / "x.json").read_text() == "{}"


# --------------------------------------------------------------------------- two writers


HOLDER = """
import sys
from dlscope.files import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test kills us
"""


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = subprocess.run(DLSCOPE + ["run", "func-fit", "--out", str(out), *TINY], capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert f"{out} is in use by another dlscope run (pid {holder.pid})" in one_line(r.stderr)
        assert not (out / "func-fit").exists()
    finally:
        holder.kill()  # kill -9: the lock goes with the process, nothing stale is left
        holder.wait()
    with files.folder_lock(out):  # free again: this would raise FolderInUse otherwise
        pass
