"""Data: the real files' statistics, the readers' errors, the checksummed download (against a
local HTTP server) and the on-device augmentation."""

import gzip
import hashlib
import functools
import http.server
import io
import json
import pickle
import struct
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dlscope import data


def test_cli_data_info_matches_readme_statistics(data_dir):
    out = subprocess.run(
        [sys.executable, "-m", "dlscope", "data", "info", "--json", "--data-dir", data_dir],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    m, c = info["mnist"], info["cifar10"]
    assert m["train"]["images"] == 60000 and m["test"]["images"] == 10000
    assert m["train"]["mean"] == [0.1307] and m["train"]["std"] == [0.3081]
    assert c["train"]["mean"] == [0.4914, 0.4822, 0.4465] and c["train"]["std"] == [0.247, 0.2435, 0.2616]
    assert c["test"]["mean"] == [0.4942, 0.4851, 0.4504]
    assert c["train"]["per_class"] == [5000] * 10 and c["test"]["per_class"] == [1000] * 10


def test_mnist_labels_and_resize(data_dir):
    raw = data.load_raw("mnist", data_dir)
    assert raw["train"][1][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert raw["test"][1][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    d = data.load("mnist", "cpu", data_dir, train_size=100, test_size=50)
    assert d.train.x.shape == (100, 1, 32, 32) and d.test.x.shape == (50, 1, 32, 32)
    assert torch.bincount(d.train.y).tolist() == [10] * 10  # balanced subset


def test_cifar_normalisation(data_dir):
    d = data.load("cifar10", "cpu", data_dir, train_size=1000, test_size=10)
    x = d.train.x * torch.tensor(data.CIFAR_STD).view(1, 3, 1, 1) + torch.tensor(data.CIFAR_MEAN).view(1, 3, 1, 1)
    assert x.min() >= -1e-6 and x.max() <= 1 + 1e-6
    raw = data.load_raw("cifar10", data_dir)["train"][0]
    idx = data.balanced_subset(data.load_raw("cifar10", data_dir)["train"][1], 1000)
    torch.testing.assert_close(x, raw[idx].float() / 255, atol=1e-5, rtol=0)


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DLSCOPE_DATA", str(tmp_path / "env"))
    assert data.data_root(tmp_path / "flag") == tmp_path / "flag"
    assert data.data_root() == tmp_path / "env"
    monkeypatch.delenv("DLSCOPE_DATA")
    assert data.data_root() == Path("~/.cache/dlscope").expanduser()


# --------------------------------------------------------------------------- augmentation


def test_random_crop_flip_is_a_crop_of_the_reflect_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 32, 32, generator=g)
    out = data.random_crop_flip(x, torch.Generator().manual_seed(1))
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    seen_offsets, flips = set(), 0
    for i in range(len(x)):
        matches = [
            (dy, dx, f)
            for dy in range(9)
            for dx in range(9)
            for f in (0, 1)
            if torch.equal(out[i], (lambda c: c.flip(-1) if f else c)(padded[i, :, dy : dy + 32, dx : dx + 32]))
        ]
        assert matches, f"image {i} is not a crop (or flipped crop) of its padded original"
        seen_offsets.add(matches[0][:2])
        flips += matches[0][2]
    assert len(seen_offsets) > 20 and 10 < flips < 54  # random, not constant


# --------------------------------------------------------------------------- files and download


def _idx(arr: torch.Tensor) -> bytes:
    dims = arr.shape
    return struct.pack(">i", 0x0800 | len(dims)) + struct.pack(f">{len(dims)}i", *dims) + arr.numpy().tobytes()


class _Server:
    """A static file server on 127.0.0.1 for the duration of a test."""

    def __init__(self, folder: Path):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.RequestHandlerClass.log_message = lambda *a: None
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def test_download_mnist_from_local_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    g = torch.Generator().manual_seed(0)
    files = {
        "train-images-idx3-ubyte.gz": _idx(torch.randint(0, 256, (20, 28, 28), dtype=torch.uint8, generator=g)),
        "train-labels-idx1-ubyte.gz": _idx(torch.arange(20, dtype=torch.uint8) % 10),
        "t10k-images-idx3-ubyte.gz": _idx(torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8, generator=g)),
        "t10k-labels-idx1-ubyte.gz": _idx(torch.arange(10, dtype=torch.uint8)),
    }
    blobs = {n: gzip.compress(b) for n, b in files.items()}
    for n, b in blobs.items():
        (served / n).write_bytes(b)
    root = tmp_path / "root"
    with _Server(served) as url:
        res = [data.Resource(f"{url}/{n}", f"MNIST/raw/{n}", _md5(b)) for n, b in blobs.items()]
        data.fetch("mnist", root, res, progress=False)
        bad = [data.Resource(f"{url}/t10k-images-idx3-ubyte.gz", "other/x.gz", "0" * 32)]
        with pytest.raises(data.DataError, match="checksum mismatch"):
            data.fetch("mnist", root, bad, progress=False)
    assert not (root / "other" / "x.gz").exists()  # nothing half-written is left behind
    x = data.read_idx(root / "MNIST/raw/train-images-idx3-ubyte.gz")
    assert x.shape == (20, 28, 28)
    assert data.read_idx(root / "MNIST/raw/t10k-labels-idx1-ubyte.gz").tolist() == list(range(10))


def test_download_cifar_archive_from_local_server(tmp_path):
    def batch(n, seed):
        g = torch.Generator().manual_seed(seed)
        return pickle.dumps(
            {
                b"data": torch.randint(0, 256, (n, 3072), dtype=torch.uint8, generator=g).numpy(),
                b"labels": [i % 10 for i in range(n)],
                b"batch_label": b"x",
                b"filenames": [],
            }
        )

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in data.CIFAR_FILES:
            blob = batch(10, hash(name) % 100) if name != "batches.meta" else pickle.dumps({b"label_names": []})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    served = tmp_path / "served"
    served.mkdir()
    (served / "c.tar.gz").write_bytes(buf.getvalue())
    root = tmp_path / "root"
    with _Server(served) as url:
        data.fetch(
            "cifar10", root, [data.Resource(f"{url}/c.tar.gz", "cifar-10-python.tar.gz", _md5(buf.getvalue()))], progress=False
        )
    x, y = data.read_cifar_batch(root / "cifar-10-batches-py" / "data_batch_3")
    assert x.shape == (10, 3, 32, 32) and y.tolist() == list(range(10))


def test_truncated_and_corrupt_files_give_one_line_errors(tmp_path):
    good = gzip.compress(_idx(torch.zeros(5, 28, 28, dtype=torch.uint8)))
    (tmp_path / "trunc.gz").write_bytes(gzip.compress(gzip.decompress(good)[:-100]))
    (tmp_path / "corrupt.gz").write_bytes(b"not a gzip file at all")
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    for name in ("trunc.gz", "corrupt.gz", "cut.gz"):
        with pytest.raises(data.DataError) as e:
            data.read_idx(tmp_path / name)
        msg = str(e.value)
        assert name in msg and "\n" not in msg and "download" in msg
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x02garbage")
    with pytest.raises(data.DataError, match="data_batch_1"):
        data.read_cifar_batch(tmp_path / "data_batch_1")


def test_missing_data_offline_names_the_files(tmp_path, monkeypatch):
    # a closed port on 127.0.0.1 stands in for "offline"
    monkeypatch.setitem(
        data.RESOURCES, "mnist", [data.Resource("http://127.0.0.1:9/x.gz", "MNIST/raw/train-images-idx3-ubyte.gz", "0" * 32)]
    )
    with pytest.raises(data.DataError) as e:
        data.ensure("mnist", tmp_path)
    msg = str(e.value)
    assert "train-labels-idx1-ubyte.gz" in msg and str(tmp_path) in msg and "\n" not in msg


def test_cli_reports_missing_data_in_one_line(tmp_path):
    env = {**__import__("os").environ, "DLSCOPE_CACHE": str(tmp_path / "cache")}
    bad = tmp_path / "empty"
    bad.mkdir()
    (bad / "cifar-10-batches-py").mkdir()
    for name in data.CIFAR_FILES:
        (bad / "cifar-10-batches-py" / name).write_bytes(b"")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlscope",
            "run",
            "cifar-depth",
            "--profile",
            "smoke",
            "--data-dir",
            str(bad),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 1
    assert "data_batch_1" in r.stderr and "Traceback" not in r.stderr
