"""The benchmark suite's correctness parts (not its timings): the reference loops see the same
data order and weights as dlscope and give the same losses; the torchvision-style pipelines give
the images data.load gives; every workload the issue names is in run_all."""

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_func_fit  # noqa: E402
import bench_hessians  # noqa: E402
import bench_min_ratio  # noqa: E402
import common  # noqa: E402
import run_all  # noqa: E402

from dlscope import data  # noqa: E402
from dlscope.engine import TrainConfig  # noqa: E402
from dlscope.engine import fast_mlp as fm  # noqa: E402
from dlscope.experiments.func_fit import f1, f2, inputs  # noqa: E402


def test_run_all_has_every_workload_of_the_issue():
    assert list(run_all.WORKLOADS) == [
        "func-fit-6",
        "func-fit-48",
        "min-ratio-100",
        "mnist-epoch",
        "cifar-epoch-cnn-1",
        "cifar-epoch-cnn-7",
        "hessians-100",
    ]
    r = common.result("w", [(1.0, 0.5), (2.0, 1.0), (3.0, 1.5)], [(10.0, 5.0), (30.0, 20.0), (20.0, 10.0)])
    assert (r["dlscope_s"], r["reference_s"], r["ratio"], r["ratio_cpu"]) == (2.0, 20.0, 10.0, 10.0)


def test_func_fit_reference_loop_follows_the_fast_path(float64):
    """The DataLoader loop with dlscope's sampler: the same full-data loss curve as the fast path
    (batch size 1, the benchmark's settings, one epoch of 300 steps)."""
    x = inputs(bench_func_fit.POINTS)
    y = f2(x[:, 0])
    ref = bench_func_fit.reference_training("mlp-shallow", 5, x, y, 1)
    tr = fm.FastMLPTrainer("mlp-shallow", TrainConfig(1, 1, bench_func_fit.LR, bench_func_fit.WD, loss="mse"), [5], compile=False)
    tr.run(x, y)
    torch.testing.assert_close(torch.stack(tr.history["loss"])[:, 0], torch.tensor(ref), rtol=1e-11, atol=0)


def test_min_ratio_reference_loop_follows_the_fast_path(float64):
    x = inputs(bench_min_ratio.POINTS)
    y = f1(x[:, 0])
    ref = bench_min_ratio.reference_training(3, x, y, 6)
    tr = fm.FastMLPTrainer("mlp-minratio", TrainConfig(6, 300, bench_min_ratio.LR, loss="mse"), [3], compile=False)
    got = tr.train_full_batch(x, y, 6)[:, 0]
    torch.testing.assert_close(got, torch.tensor(ref), rtol=1e-12, atol=0)


def test_hessian_reference_function_agrees_with_the_closed_form(float64):
    x = inputs(50)
    y = f1(x[:, 0])
    torch.manual_seed(0)
    template = bench_hessians.models.build("mlp-minratio")
    theta = fm.init_flat("mlp-minratio", [1])
    H = fm.hessians(theta, fm.spec_of(template), x, y)[0]
    ref = torch.autograd.functional.hessian(bench_hessians.flat_loss(template, x, y), theta[0])
    torch.testing.assert_close(H, ref, rtol=0, atol=1e-13)
    assert bench_hessians.min_ratio(H) == bench_hessians.min_ratio(ref)


def test_torchvision_style_mnist_is_data_loads_image(data_dir):
    pytest.importorskip("PIL")
    raw = data.load_raw("mnist", data_dir)["train"]
    ds = common.TorchvisionStyleImages(raw[0][:20], raw[1][:20], "mnist")
    ours = data.load("mnist", "cpu", data_dir).train.x[:20]
    imgs = torch.stack([ds[i][0] for i in range(20)])
    assert imgs.shape == ours.shape and ds[3][1] == int(raw[1][3])
    # PIL's bilinear resize and F.interpolate differ by rounding to uint8 only: < 1/255 before normalising
    assert (imgs - ours).abs().max() * data.MNIST_STD[0] < 1.5 / 255


def test_torchvision_style_cifar_is_a_crop_or_flip_of_data_loads_image(data_dir):
    pytest.importorskip("PIL")
    raw = data.load_raw("cifar10", data_dir)["train"]
    ds = common.TorchvisionStyleImages(raw[0][:4], raw[1][:4], "cifar10")
    ours = torch.nn.functional.pad(data.load("cifar10", "cpu", data_dir).train.x[:4], (4, 4, 4, 4), mode="reflect")
    torch.manual_seed(0)
    for i in range(4):
        img = ds[i][0]
        crops = [
            c
            for t in range(9)
            for l in range(9)
            for c in (ours[i, :, t : t + 32, l : l + 32], ours[i, :, t : t + 32, l : l + 32].flip(-1))
        ]
        assert min(float((img - c).abs().max()) for c in crops) < 1e-5
