"""One MNIST training epoch of random-labels: mnist-mlp on 32x32 MNIST, random training labels,
batch size 100, Adam lr 1e-4.

dlscope: data.load() once (resized to 32x32, normalised, resident in memory), then
Trainer.train_epoch on a one-member Ensemble: batches indexed out of the resident tensor.
reference: the original study's pipeline: torchvision's MNIST data set (a PIL image per sample)
with Resize(32), ToTensor, Normalize per sample (re-implemented in common.py, as torchvision does
it), DataLoader(batch_size=100, shuffle=True), one model, eager Adam.

Both sides train on the same images with the same random labels from the same initial weights.
Reported: seconds per epoch of 60,000 images (measured on `images` and scaled).
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
    parse_args,
    report,
    result,
    set_up,
)
from torch.utils.data import DataLoader  # noqa: E402

from dlscope import data, models  # noqa: E402
from dlscope.engine import Ensemble, Trainer, TrainConfig  # noqa: E402

MODEL, BATCH, LR, EPOCH_IMAGES = "mnist-mlp", 100, 1e-4, 60000


def run(quick: bool, repeats: int, device="cpu") -> dict:
    images = 12000 if quick else EPOCH_IMAGES
    with Clock() as load:
        d = data.load("mnist", device, train_size=images, test_size=1)  # resident: resized, normalised
    labels = torch.randint(0, 10, (images,), generator=torch.Generator().manual_seed(0))  # random labels
    labels_dev = labels.to(device)
    raw = data.load_raw("mnist")["train"]
    idx = data.balanced_subset(raw[1], images)
    ref_set = TorchvisionStyleImages(raw[0][idx], labels, "mnist")  # the same images, as uint8 28x28
    scale = EPOCH_IMAGES / images

    def dlscope():
        ens = Ensemble.from_seeds(MODEL, [0], device)
        trainer = Trainer(ens, TrainConfig(1, BATCH, LR), [0])
        with Clock() as c:
            trainer.train_epoch(d.train.x, labels_dev)
        return c.wall * scale, c.cpu * scale

    def reference():
        torch.manual_seed(0)
        model = models.build(MODEL).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        loader = DataLoader(ref_set, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))
        with Clock() as c:
            classifier_epoch(model, loader, opt)
        return c.wall * scale, c.cpu * scale

    dlscope()  # warm-up
    ref_t, dl_t = alternate(reference, dlscope, repeats)
    r = result(
        "mnist-epoch",
        dl_t,
        ref_t,
        unit="seconds per training epoch of 60,000 images",
        images_timed=images,
        repeats=repeats,
        dlscope_load_s=load.wall,
        machine=machine(),
    )
    r["dlscope_images_per_s"] = EPOCH_IMAGES / r["dlscope_s"]
    r["reference_images_per_s"] = EPOCH_IMAGES / r["reference_s"]
    return r


def main():
    args = parse_args(__doc__.splitlines()[0])
    set_up(args.threads or 1, args.device)
    report([run(args.quick, args.repeats, args.device)], args.out)


if __name__ == "__main__":
    main()
