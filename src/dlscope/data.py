"""Data sets: where they live, how they are fetched and read, and how they sit on the device.

MNIST comes as four gzip'd IDX files, CIFAR-10 as python-pickled batches. A data root may come
from anywhere, so its files are data, never code: the batches are unpickled by an unpickler that
builds numpy arrays and nothing else, and an archive is checked against its published checksum
before it is unpacked. Both are decoded once into uint8 tensors, cached under the cache folder
(never in the data root, which may be read-only), and then moved to the device whole: training
indexes batches out of resident tensors and augments them there, in batch, with no per-sample
DataLoader.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .files import atomic_file, save_atomic

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)  # the study's values (not the true std 0.247/0.243/0.261)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


class DataError(RuntimeError):
    """A data set is missing, truncated or corrupt. The message is one line saying what to do."""


# --------------------------------------------------------------------------- where things live


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $DLSCOPE_DATA, else ~/.cache/dlscope."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("DLSCOPE_DATA"):
        return Path(os.environ["DLSCOPE_DATA"]).expanduser()
    return Path("~/.cache/dlscope").expanduser()


def cache_root() -> Path:
    """Where derived files (decoded tensors) go: $DLSCOPE_CACHE, else ~/.cache/dlscope."""
    return Path(os.environ.get("DLSCOPE_CACHE", "~/.cache/dlscope")).expanduser()


# --------------------------------------------------------------------------- download


@dataclass(frozen=True)
class Resource:
    url: str
    filename: str  # where the download is stored, relative to the data set's folder
    md5: str  # the published checksum of the file at url


MNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]

# Canonical addresses and published checksums (as used by torchvision and the data sets' pages).
RESOURCES = {
    "mnist": [
        Resource(f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}", f"MNIST/raw/{name}", md5)
        for name, md5 in zip(
            MNIST_FILES,
            [
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ],
        )
    ],
    "cifar10": [
        Resource(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        )
    ],
}


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str, progress: bool = True, timeout: float = 60) -> Path:
    """Fetch url to dest through a temporary file, with a progress bar; checked against md5."""
    from tqdm import tqdm

    with atomic_file(dest) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        got = md5sum(tmp)
        if got != md5:
            raise DataError(f"{url}: checksum mismatch (md5 {got}, expected {md5}); the download is corrupt, try again")
    return dest


def fetch(name: str, root: Path, resources: list[Resource] | None = None, progress: bool = True) -> None:
    """Download and unpack a data set into root (its canonical resources unless given others).
    An archive already in root is unpacked only if it matches the published checksum."""
    resources = RESOURCES[name] if resources is None else resources
    for res in resources:
        dest = root / res.filename
        archive = dest.name.endswith((".tar.gz", ".tgz"))
        if not dest.exists():
            download(res.url, dest, res.md5, progress=progress)
        elif archive and (got := md5sum(dest)) != res.md5:  # one found there: unpack only the published one
            raise DataError(
                f"{dest}: checksum mismatch (md5 {got}, expected {res.md5}); it is not the published "
                f"archive: delete it and run `dlscope data download` again"
            )
        if archive:
            with tarfile.open(dest) as tar:
                tar.extractall(dest.parent, filter="data")


def ensure(name: str, root: Path, download_missing: bool = True) -> Path:
    """The folder holding data set `name` under root, downloading it if it is missing (with
    download_missing=False, a missing data set is an error and nothing is written)."""
    folder, files = _layout(name, root)
    missing = [f for f in files if not (folder / f).exists()]
    if missing and not download_missing:
        raise DataError(
            f"{name}: {', '.join(missing)} not found in {folder}; run `dlscope data download` "
            f"(with the same --data-dir), or point --data-dir / DLSCOPE_DATA at a folder that has them"
        )
    if missing:
        try:
            fetch(name, root)
        except DataError:  # a checksum mismatch: the message says which file and what to do
            raise
        except (OSError, tarfile.TarError, zlib.error, EOFError) as e:
            raise DataError(
                f"{name}: {', '.join(missing)} not found in {folder} and the download failed ({_short(e)}); "
                f"put the files there, or point --data-dir / DLSCOPE_DATA at a folder that has them"
            ) from None
        missing = [f for f in files if not (folder / f).exists()]
    if missing:
        raise DataError(
            f"{name}: expected {', '.join(missing)} in {folder}; point --data-dir / DLSCOPE_DATA at a folder that has them"
        )
    return folder


def _short(e: BaseException) -> str:
    return (str(e) or type(e).__name__).splitlines()[0][:200]


def _layout(name: str, root: Path) -> tuple[Path, list[str]]:
    if name == "mnist":
        return root / "MNIST" / "raw", MNIST_FILES
    if name == "cifar10":
        return root / "cifar-10-batches-py", CIFAR_FILES
    raise ValueError(f"unknown data set {name!r}; known: mnist, cifar10")


# --------------------------------------------------------------------------- readers


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (gzip'd or not) as a uint8 tensor; one-line DataError if it is damaged."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
        (magic,) = struct.unpack(">i", raw[:4])
        ndim = magic & 0xFF
        if magic >> 8 != 0x08 or ndim not in (1, 3):
            raise ValueError(f"bad magic number {magic}")
        shape = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
        body = raw[4 + 4 * ndim :]
        expected = 1
        for s in shape:
            expected *= s
        if len(body) != expected:
            raise ValueError(f"holds {len(body)} bytes of data, its header promises {expected}")
    except (OSError, EOFError, ValueError, struct.error, zlib.error) as e:  # zlib: a damaged deflate stream
        raise DataError(
            f"{path}: unreadable IDX file ({_short(e)}); it is truncated or corrupt, delete it and download it again"
        ) from None
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR-10 batch holds (dicts, lists, bytes, numbers and numpy arrays) and
    refuses every other class or function, so a crafted file cannot run code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),  # the name in pickles written by numpy 1
        ("numpy._core.multiarray", "_reconstruct"),  # ... and by numpy 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch does not hold")
        import numpy

        if name == "_reconstruct":
            return numpy.ndarray.__reduce__(numpy.zeros(0))[0]  # numpy's own, under either name
        return getattr(numpy, name)


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A CIFAR-10 batch file as (x uint8 [n, 3, 32, 32], y int64 [n]); one-line DataError if it is
    damaged, not a batch, or holds anything but data."""
    import numpy

    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
        if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
            raise ValueError("no data and labels in it")
        data, labels = d[b"data"], d[b"labels"]
        if not isinstance(data, numpy.ndarray) or data.dtype != numpy.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(
                f"its data is not n x 3072 bytes (found {getattr(data, 'dtype', type(data).__name__)} "
                f"{getattr(data, 'shape', '')})"
            )
        if isinstance(labels, numpy.ndarray):
            labels = labels.tolist()
        if not isinstance(labels, list) or not all(type(v) is int and 0 <= v < 10 for v in labels):
            raise ValueError("its labels are not a list of classes 0-9")
        if len(labels) != len(data):
            raise ValueError(f"{len(data)} images but {len(labels)} labels")
        x = torch.from_numpy(numpy.ascontiguousarray(data)).reshape(-1, 3, 32, 32)
        y = torch.tensor(labels, dtype=torch.int64)
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        MemoryError,
        RecursionError,
        pickle.UnpicklingError,
    ) as e:
        raise DataError(
            f"{path}: unreadable CIFAR-10 batch ({_short(e)}); it is truncated or corrupt, delete it and download it again"
        ) from None
    return x, y


def load_raw(name: str, data_dir=None, download_missing: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train": (x uint8 [N,C,H,W], y int64 [N]), "test": ...} from the files, via the cache."""
    folder = ensure(name, data_root(data_dir), download_missing)
    listing = []
    for f in sorted(folder.glob("*")):
        try:
            listing.append((f.name, f.stat().st_size, int(f.stat().st_mtime)))
        except OSError as e:  # a dangling link, a file without permission
            raise DataError(f"{f}: unreadable ({e.strerror or e}); delete it and download it again") from None
    stamp = hashlib.sha1(repr(listing).encode()).hexdigest()[:12]
    cached = cache_root() / "decoded" / f"{name}-{stamp}.pt"
    if cached.exists():
        try:
            out = torch.load(cached, weights_only=True)
            if _decoded(out):
                return out
        except Exception:
            pass  # a damaged cache is rebuilt below
    if name == "mnist":
        out = {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images, labels = folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"
            x, y = read_idx(images), read_idx(labels).long()
            if x.dim() != 3 or x.shape[1:] != (28, 28):
                raise DataError(f"{images}: holds {tuple(x.shape)} values, not 28 x 28 images; delete it and download it again")
            if y.dim() != 1 or (len(y) and y.max() >= 10):
                raise DataError(f"{labels}: holds {tuple(y.shape)} values, not labels 0-9; delete it and download it again")
            if len(x) != len(y):
                raise DataError(f"{folder}: {prefix} images ({len(x)}) and labels ({len(y)}) differ in count; re-download MNIST")
            out[split] = (x.unsqueeze(1), y)
    else:
        parts = [read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
        out = {
            "train": (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])),
            "test": read_cifar_batch(folder / "test_batch"),
        }
    try:  # the cache is an optimisation: a read-only cache folder is no error
        save_atomic(out, cached)
    except OSError:
        pass
    return out


def _decoded(out) -> bool:
    """Whether a cache file holds what load_raw returns."""
    try:
        return set(out) == {"train", "test"} and all(
            x.dtype == torch.uint8 and x.dim() == 4 and y.dtype == torch.int64 and y.shape == x.shape[:1] for x, y in out.values()
        )
    except (TypeError, ValueError, AttributeError):
        return False


def stats(name: str, data_dir=None) -> dict:
    """Per split: image count, per-channel mean and std of pixels in [0,1], count per class.
    Reads only: a missing data set is an error (`dlscope data download` fetches it)."""
    out = {}
    for split, (x, y) in load_raw(name, data_dir, download_missing=False).items():
        xf = x.double().div_(255)
        out[split] = {
            "images": len(x),
            "mean": [round(v, 4) for v in xf.mean(dim=(0, 2, 3)).tolist()],
            "std": [round(v, 4) for v in xf.std(dim=(0, 2, 3)).tolist()],
            "per_class": torch.bincount(y, minlength=10).tolist(),
        }
    return out


# --------------------------------------------------------------------------- device-resident data


@dataclass
class Split:
    x: torch.Tensor  # float32 [N,C,H,W], normalised, on the device
    y: torch.Tensor  # int64 [N], on the device

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class ImageData:
    name: str
    train: Split
    test: Split


def balanced_subset(y: torch.Tensor, n: int | None, seed: int = 0) -> torch.Tensor:
    """Indices of n examples, as equal per class as possible, chosen with a fixed seed."""
    if n is None or n >= len(y):
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    classes = int(y.max()) + 1
    per = [order[y[order] == c] for c in range(classes)]
    take = [p[: n // classes + (1 if c < n % classes else 0)] for c, p in enumerate(per)]
    return torch.cat(take).sort().values


def load(
    name: str,
    device: torch.device | str = "cpu",
    data_dir=None,
    train_size: int | None = None,
    test_size: int | None = None,
    subset_seed: int = 0,
) -> ImageData:
    """A data set normalised as SPEC says and resident on the device, optionally subsetted.

    MNIST is resized to 32x32 (bilinear) for the study's mnist-mlp.
    """
    raw = load_raw(name, data_dir)
    mean, std = (MNIST_MEAN, MNIST_STD) if name == "mnist" else (CIFAR_MEAN, CIFAR_STD)
    splits = {}
    for split, size in (("train", train_size), ("test", test_size)):
        x, y = raw[split]
        idx = balanced_subset(y, size, subset_seed)
        x = x[idx].to(device).float().div_(255)
        if name == "mnist":
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        s = torch.tensor(std, device=device).view(1, -1, 1, 1)
        splits[split] = Split(((x - m) / s).contiguous(), y[idx].to(device))
    return ImageData(name, splits["train"], splits["test"])


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (reflect padding) then random horizontal flip, for a whole batch at once.

    Reflect padding commutes with per-channel normalisation, so it is applied to normalised data.
    """
    b, _, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    off = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=generator.device).to(dev)
    flip = torch.rand(b, generator=generator, device=generator.device).to(dev) < 0.5
    rows = off[0, :, None] + torch.arange(h, device=dev)  # [b, h]
    cols = off[1, :, None] + torch.arange(w, device=dev)  # [b, w]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=dev)[:, None, None]
    out = xp[bi, :, rows[:, :, None], cols[:, None, :]]  # [b, h, w, c]
    return out.permute(0, 3, 1, 2).contiguous()


_LOADED: dict[tuple, ImageData] = {}


def load_cached(name: str, device: str, data_dir=None, train_size=None, test_size=None) -> ImageData:
    """load(), remembered for the life of the process: trials in one worker share one copy."""
    key = (name, str(device), str(data_root(data_dir)), train_size, test_size)
    if key not in _LOADED:
        _LOADED[key] = load(name, device, data_dir, train_size, test_size)
    return _LOADED[key]
