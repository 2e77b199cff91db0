"""Do the shipped training defaults stay stable on the production backbone's shapes? Side by side, one run.

    python benchmarks/backbone_stability.py            # embedded vs ViT-B/16 shapes (random weights), CPU
    python benchmarks/backbone_stability.py --model /models/clip-vit-base-patch16 --device cuda   # real weights

The shipped rates were chosen on the 9.9M embedded backbone. This runs a client's real round code
(client/trainer.py: class-embedding start and probe, then the joint epoch, with the shipped TrainSettings) for a
few rounds on inverted MNIST digits (a style neither model saw) on each backbone, and reports per round: the
training loss, whether the round failed (collapse or divergence), and for every global tensor how far the round
moved it relative to its size (what the coordinator then averages), plus the largest prompt value. Random
weights cannot show accuracy; they show whether steps of the shipped size stay in proportion at 768 / 512
widths and 12 layers.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_throughput import BACKBONES  # noqa: E402

from pfeddc.client.model.backbone import Backbone, load_backbone, preprocess  # noqa: E402
from pfeddc.client.model.images import ImageSet  # noqa: E402
from pfeddc.client.model.prompts import PFedDCModel, StatePart  # noqa: E402
from pfeddc.client.sim.datasets import DIGIT_CLASSES, digit_domains  # noqa: E402
from pfeddc.client.trainer import LocalTrainer  # noqa: E402
from pfeddc.common.messages import TrainSettings  # noqa: E402
from pfeddc.common.spec import PromptConfig  # noqa: E402


def backbone(name: str, workdir: Path) -> Backbone:
    config = BACKBONES.get(name)
    if config is None:
        return load_backbone(name)
    from transformers import CLIPConfig, CLIPModel

    from pfeddc.client.model.backbone import save_backbone

    torch.manual_seed(0)
    directory = workdir / name
    save_backbone(CLIPModel(CLIPConfig.from_dict(config)).eval(), directory)
    return load_backbone(str(directory))


def digits(size: int, train: int, test: int) -> tuple[ImageSet, ImageSet]:
    from PIL import Image

    images, labels, domains = digit_domains()
    keep = np.flatnonzero(domains == "mnist-inverted")[:train + test]
    pixels = torch.from_numpy(np.stack([preprocess(Image.fromarray(images[i]), size) for i in keep]))
    y = torch.from_numpy(labels[keep])
    return ImageSet(pixels[:train], y[:train]), ImageSet(pixels[train:], y[train:])


@dataclass
class Row:
    backbone: str
    round: int
    loss: float
    failure: str | None
    relative: dict[str, float]  # L2 of the round's change / L2 of the tensor (at least 1), per global tensor
    largest: float
    accuracy: float
    seconds: float


def run(name: str, bb: Backbone, rounds: int, train: int, test: int, device: torch.device) -> list[Row]:
    data = digits(bb.image_size, train, test)
    model = PFedDCModel(bb, DIGIT_CLASSES, PromptConfig(classes=tuple(DIGIT_CLASSES))).to(device)
    trainer = LocalTrainer(model, *data, device)
    received = model.global_state()
    rows = []
    for r in range(1, rounds + 1):
        started = time.monotonic()
        outcome = trainer.run(received, TrainSettings(seed=r))
        sent = outcome.tensors or received
        relative = {k: float(np.linalg.norm(sent[k] - received[k])) / max(float(np.linalg.norm(received[k])), 1.0)
                    for k in sorted(sent) if k != "text.classes.share.global"}
        largest = max(float(np.abs(v).max()) for part in StatePart for v in model.state(part).values())
        rows.append(Row(name, r, outcome.metrics.train_loss, outcome.failure, relative, largest,
                        outcome.metrics.accuracy_after, time.monotonic() - started))
        received = sent
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit-b16",
                   help="the backbone beside the embedded one: vit-b16 (random weights of the real shapes), a "
                        "local directory or a hub name (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--train", type=int, default=64, help="training images (default: %(default)s)")
    p.add_argument("--test", type=int, default=32)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    from pfeddc.common.logs import configure_logging

    configure_logging("console", "error")
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("embedded", args.model):
            rows += run(name, backbone(name, Path(tmp)), args.rounds, args.train, args.test, device)
    names = sorted({k for r in rows for k in r.relative})
    print(f"{platform.machine()}, {torch.get_num_threads()} threads, {args.device}, torch {torch.__version__}; "
          f"shipped TrainSettings, {args.train} inverted-MNIST training images, {args.rounds} rounds\n")
    print("| backbone | round | loss | failed | largest value | " + " | ".join(f"moved {n} (rel.)" for n in names)
          + " | accuracy | s |")
    print("|---|---:|---:|---|---:|" + "---:|" * len(names) + "---:|---:|")
    for r in rows:
        cells = " | ".join(f"{r.relative[n]:.3f}" if n in r.relative else "-" for n in names)
        print(f"| {r.backbone} | {r.round} | {r.loss:.3f} | {r.failure or 'no'} | {r.largest:.2f} | {cells} | "
              f"{100 * r.accuracy:.1f} | {r.seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
