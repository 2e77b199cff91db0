"""Training-step throughput and peak memory of the pFedDC variants against an honest floor, in one run.

    python benchmarks/model_throughput.py                                  # embedded backbone, CPU
    python benchmarks/model_throughput.py --backbone vit-b16 --device cuda # ViT-B/16 shapes (random weights)

The floor does the same work minus pFedDC's machinery: the same frozen CLIP, the same token layout (class
prompts cut at the last end-of-text token), one text context and one set of vision prompts read through open
gates, and gradients to those prompt tensors only; no global/local split, no fusion, no optimizer state
beyond theirs. Every variant runs in its own process (peak = CUDA max allocated, or the process's peak RSS
on CPU); variants are interleaved over several repeats and the median throughput is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

FLOOR = "floor (same layout, prompts only)"
VARIANTS: dict[str, dict[str, Any] | None] = {
    FLOOR: None,
    "pfeddc shallow": {"method": "pfeddc", "vision_depth": 1},
    "pfeddc deep (every layer)": {"method": "pfeddc", "vision_depth": -1},
    "pfeddc-nofusion": {"method": "pfeddc-nofusion", "vision_depth": 1},
    "vision-only": {"method": "vision-only", "vision_depth": 1},
    "promptfl (text only)": {"method": "promptfl"},
    "coop (text only)": {"method": "coop"},
}
BACKBONES: dict[str, dict[str, Any] | None] = {
    "embedded": None,
    "vit-b16": {"projection_dim": 512,
                "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                                "num_attention_heads": 8, "max_position_embeddings": 77, "vocab_size": 49408,
                                "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407},
                "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                                  "num_attention_heads": 12, "image_size": 224, "patch_size": 16}},
}
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def measure(backbone_name: str, variant: dict[str, Any] | None, device_name: str, batch: int, steps: int
            ) -> dict[str, float]:
    import tempfile
    from pathlib import Path

    import torch
    import torch.nn.functional as F
    from transformers import CLIPConfig, CLIPModel

    from pfeddc.client.model.backbone import encode_image_prompted, encode_text_embeds, load_backbone, save_backbone
    from pfeddc.client.model.prompts import PFedDCModel
    from pfeddc.common.messages import TrainSettings
    from pfeddc.common.spec import PromptConfig

    torch.manual_seed(0)
    device = torch.device(device_name)
    config = BACKBONES[backbone_name]
    if config is None:
        backbone = load_backbone("embedded")
    else:
        tmp = Path(tempfile.mkdtemp())
        save_backbone(CLIPModel(CLIPConfig.from_dict(config)), tmp)
        backbone = load_backbone(str(tmp))
    size = backbone.image_size
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, len(CLASSES), (batch,), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    layout = PFedDCModel(backbone, CLASSES, PromptConfig(method="promptfl")).to(device)  # the same token layout
    if variant is None:
        clip, dims, cfg = backbone.clip, backbone.dims, PromptConfig()
        ctx = torch.zeros(cfg.text_ctx, dims.text_hidden, device=device, requires_grad=True)
        prompts = torch.randn(1, cfg.vision_tokens, dims.vision_hidden, device=device, requires_grad=True)
        gates = torch.ones(1, dims.vision_heads, device=device, requires_grad=True)
        opt = torch.optim.SGD([ctx, prompts, gates], lr=0.01, momentum=0.9)

        def loss_fn() -> torch.Tensor:
            prefix, suffix = layout.text_prefix, layout.text_suffix
            embeds = torch.cat([prefix, ctx.unsqueeze(0).expand(prefix.shape[0], -1, -1), suffix], dim=1)
            txt = F.normalize(encode_text_embeds(clip, embeds, layout.text_eos).float(), dim=-1)
            img = F.normalize(encode_image_prompted(clip, x, prompts, gates).float(), dim=-1)
            return F.cross_entropy(100 * img @ txt.t(), y)
    else:
        if variant.get("vision_depth") == -1:
            variant = {**variant, "vision_depth": backbone.dims.vision_layers}
        model = PFedDCModel(backbone, CLASSES, PromptConfig(**variant)).to(device)
        opt = torch.optim.SGD(model.param_groups(TrainSettings()), lr=0.01, momentum=0.9)

        def loss_fn() -> torch.Tensor:
            return F.cross_entropy(model(x), y)

    def step() -> None:
        with amp:
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"images_per_s": batch * steps / elapsed, "peak_mib": peak / 2**20}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", choices=list(BACKBONES), default="embedded")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds over all variants (default: 3)")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    args = p.parse_args(argv)
    if args.variant:
        print(json.dumps(measure(args.backbone, VARIANTS[args.variant], args.device, args.batch_size, args.steps)))
        return 0
    import torch

    hardware = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"# pFedDC training step, backbone={args.backbone}, batch={args.batch_size}, {args.steps} steps x "
          f"{args.repeats} interleaved repeats (median), device={args.device} ({hardware}), torch {torch.__version__}",
          flush=True)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name in VARIANTS:
            out = subprocess.run([sys.executable, __file__, "--variant", name, "--backbone", args.backbone,
                                  "--device", args.device, "--batch-size", str(args.batch_size), "--steps",
                                  str(args.steps)], capture_output=True, text=True, check=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = {name: {"images_per_s": statistics.median(r["images_per_s"] for r in rs),
                   "spread": (max(r["images_per_s"] for r in rs) - min(r["images_per_s"] for r in rs)),
                   "peak_mib": max(r["peak_mib"] for r in rs)} for name, rs in runs.items()}
    floor = rows[FLOOR]
    print(f"| {'variant':34} | img/s (median) | max-min | step time vs floor | peak MiB | vs floor |")
    print(f"|{'-' * 36}|---------------:|--------:|-------------------:|---------:|---------:|")
    for name, r in rows.items():
        print(f"| {name:34} | {r['images_per_s']:14.0f} | {r['spread']:7.0f} | "
              f"{floor['images_per_s'] / r['images_per_s']:17.2f}x | {r['peak_mib']:8.0f} | "
              f"{r['peak_mib'] / floor['peak_mib']:7.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
