"""Peak memory of a client whose ImageFolder is large: streamed from disk vs decoded into memory.

    python benchmarks/client_memory.py                      # 100,000 images at 224 px (writes ~1 GB of JPEGs)
    python benchmarks/client_memory.py --images 20000       # a quicker look

Generates an ImageFolder of JPEGs (10 classes, 320x240, distinct noise), then in a fresh process per mode:
scan it, split it, load it as the client does at the backbone's image size, and read one full epoch of
training batches (the decode path of every step), plus a few real training steps of a prompted CLIP at that
image size. Peak RSS counts the process and its decoding workers. Prints a table of ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pfeddc.client.model.images import Images

IMAGE_SIZE = 224


def make_folder(root: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    if (root / "done").exists():
        return
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.full((240, 320, 3), 25 * (i % 10), np.uint8)
        noise = rng.integers(0, 40, (30, 40, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        if not (folder / f"{i:06d}.jpg").exists():  # resumable: an interrupted run keeps what it wrote
            Image.fromarray(base + noise).save(folder / f"{i:06d}.jpg", quality=70)
    (root / "done").write_text(str(count))


def measure(root: Path, mode: str, steps: int) -> dict[str, float]:
    import torch
    from transformers import CLIPConfig, CLIPModel

    from pfeddc.client.data import load_client_data
    from pfeddc.client.model.backbone import load_backbone, save_backbone
    from pfeddc.client.model.images import batches
    from pfeddc.client.model.prompts import PFedDCModel
    from pfeddc.client.model.train import train_local
    from pfeddc.common.embedded import EMBEDDED_CONFIG
    from pfeddc.common.messages import TrainSettings
    from pfeddc.common.spec import PromptConfig

    started = time.monotonic()
    limit = 1 if mode == "streamed" else 1 << 50
    data, _ = load_client_data(root, IMAGE_SIZE, None, in_memory_bytes=limit)
    loaded = time.monotonic() - started
    seen = 0
    for _, pixels, _ in batches(data.train, torch.randperm(len(data.train)), 64):
        seen += len(pixels)
    epoch = time.monotonic() - started - loaded
    config = {**EMBEDDED_CONFIG, "vision_config": {**EMBEDDED_CONFIG["vision_config"], "image_size": IMAGE_SIZE,
                                                   "patch_size": 32}}
    directory = root.parent / "model-224"
    if not (directory / "config.json").exists():
        save_backbone(CLIPModel(CLIPConfig.from_dict(config)), directory)
    model = PFedDCModel(load_backbone(str(directory)), data.classnames, PromptConfig())
    train_local(model, _first(data.train, steps * 32), TrainSettings(batch_size=32), torch.device("cpu"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"images": len(data.train) + len(data.test), "load_s": round(loaded, 1), "epoch_s": round(epoch, 1),
            "epoch_images": seen, "peak_rss_mib": round(peak / 1024, 1)}


def _first(data: Images, n: int) -> Images:
    """The first `n` training samples, in the same storage (files stay files)."""
    from pfeddc.client.model.images import FileImageSet, ImageSet

    if isinstance(data, FileImageSet):
        return FileImageSet(data.paths[:n], data.labels[:n], data.size)
    assert isinstance(data, ImageSet)
    return ImageSet(data.images[:n], data.labels[:n])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--work", type=Path, default=Path("/tmp/pfeddc-client-memory"))
    p.add_argument("--steps", type=int, default=20, help="real training steps after the epoch of batches")
    p.add_argument("--modes", default="streamed,in-memory")
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    root = args.work / f"images-{args.images}"
    if args.mode:
        print(json.dumps(measure(root, args.mode, args.steps)))
        return 0
    make_folder(root, args.images)
    print(f"# client memory, {args.images} JPEGs at {IMAGE_SIZE} px, {platform.machine()}, {os.cpu_count()} cores")
    print("| mode | images | load s | epoch of batches s | peak RSS MiB (with workers) |")
    print("|---|---:|---:|---:|---:|")
    for mode in args.modes.split(","):
        out = subprocess.run([sys.executable, __file__, "--images", str(args.images), "--work", str(args.work),
                              "--steps", str(args.steps), "--mode", mode], capture_output=True, text=True)
        if out.returncode:
            print(f"| {mode} | failed: {out.stderr.strip().splitlines()[-1]} | | | |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {mode} | {r['images']} | {r['load_s']} | {r['epoch_s']} | {r['peak_rss_mib']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
