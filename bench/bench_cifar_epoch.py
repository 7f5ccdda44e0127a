"""One CIFAR-10 training epoch at batch size 64 (cnn-1 or cnn-7): Adam lr 4e-4, weight decay 1e-4,
random crop (reflect pad 4) + horizontal flip.

dlscope: data.load() once (normalised float32 resident in memory), then Trainer.train_epoch on a
one-member Ensemble: batches indexed out of the resident tensor, augmented in batch, channels_last.
reference: the original study's pipeline: torchvision's CIFAR10 data set (a PIL image per sample)
with RandomCrop(32, padding=4, reflect), RandomHorizontalFlip, ToTensor, Normalize per sample
(re-implemented in common.py, as torchvision does it), DataLoader(batch_size=64, shuffle=True),
one model in the original's layer order (conv, ReLU, pool; dlscope's zoo pools first: the same
function, tests/test_models.py), eager Adam.

Both sides train on the same images (the first `images` of the class-balanced subset) from the
same initial weights. Reported: seconds per epoch of 50,000 images (measured on `images` and
scaled), images/s, the achieved GFLOP/s of training (FLOPs of forward + backward, counted by
PyTorch's FlopCounterMode), and the GFLOP/s of a 2048x2048 matmul measured in the same run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import (  # noqa: E402
    Clock,
    TorchvisionStyleImages,
    alternate,
    classifier_epoch,
    machine,
    matmul_gflops,
    parse_args,
    report,
    result,
    set_up,
    training_flops,
)
from torch.utils.data import DataLoader  # noqa: E402

from dlscope import data, models  # noqa: E402
from dlscope.engine import Ensemble, Trainer, TrainConfig  # noqa: E402

BATCH, LR, WD, EPOCH_IMAGES = 64, 4e-4, 1e-4, 50000


def run(model_name: str, quick: bool, repeats: int, device="cpu") -> dict:
    images = (3200 if model_name == "cnn-7" else 6400) if quick else EPOCH_IMAGES
    with Clock() as load:
        d = data.load("cifar10", device, train_size=images, test_size=1)  # resident, normalised
    raw = data.load_raw("cifar10")["train"]
    idx = data.balanced_subset(raw[1], images)
    ref_set = TorchvisionStyleImages(raw[0][idx], raw[1][idx], "cifar10")  # the same images, as uint8
    scale = EPOCH_IMAGES / images

    def dlscope():
        ens = Ensemble.from_seeds(model_name, [0], device)
        trainer = Trainer(ens, TrainConfig(1, BATCH, LR, WD, augment=True), [0])
        with Clock() as c:
            trainer.train_epoch(d.train.x, d.train.y)
        return c.wall * scale, c.cpu * scale

    def reference():
        torch.manual_seed(0)
        model = models.spec_layer_order(models.build(model_name)).to(device)  # the original's layer order
        opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WD)
        loader = DataLoader(ref_set, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))
        with Clock() as c:
            classifier_epoch(model, loader, opt)
        return c.wall * scale, c.cpu * scale

    dlscope()  # warm-up: first-touch allocations, oneDNN primitive caches
    ref_t, dl_t = alternate(reference, dlscope, repeats)
    torch.manual_seed(0)
    flops_per_image = training_flops(models.build(model_name).to(device), d.train.x[:BATCH], d.train.y[:BATCH]) / BATCH
    r = result(
        f"cifar-epoch-{model_name}",
        dl_t,
        ref_t,
        unit="seconds per training epoch of 50,000 images",
        images_timed=images,
        repeats=repeats,
        dlscope_load_s=load.wall,
        machine=machine(),
    )
    r["dlscope_images_per_s"] = EPOCH_IMAGES / r["dlscope_s"]
    r["reference_images_per_s"] = EPOCH_IMAGES / r["reference_s"]
    r["training_gflop_per_image"] = flops_per_image / 1e9
    r["dlscope_gflops"] = flops_per_image * r["dlscope_images_per_s"] / 1e9
    r["reference_gflops"] = flops_per_image * r["reference_images_per_s"] / 1e9
    r["matmul_2048_gflops"] = matmul_gflops(device=device)
    return r


def main():
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--model", default="cnn-1", choices=["cnn-1", "cnn-7"]))
    set_up(args.threads or 1, args.device)
    report([run(args.model, args.quick, args.repeats, args.device)], args.out)


if __name__ == "__main__":
    main()
