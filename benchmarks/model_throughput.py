"""Training-step throughput and peak memory of the pFedDC model variants, side by side in one run.

    python benchmarks/model_throughput.py                   # embedded backbone dims, CPU
    python benchmarks/model_throughput.py --backbone vit-b16 --device cuda   # ViT-B/16 dims (random weights)

Each variant runs in its own subprocess so peak memory is its own (CUDA: max_memory_allocated; CPU: the
process's peak RSS). The floor is a plain forward+backward through the frozen backbone without prompts:
gradients w.r.t. the inputs of both encoders, full 77-token text for every class.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from typing import Any

VARIANTS = {
    "floor (frozen CLIP, no prompts)": None,
    "pfeddc shallow": {"method": "pfeddc", "vision_depth": 1},
    "pfeddc deep (every layer)": {"method": "pfeddc", "vision_depth": -1},
    "text-only (promptfl)": {"method": "promptfl"},
    "vision-only": {"method": "vision-only", "vision_depth": 1},
}
BACKBONES: dict[str, dict[str, Any] | None] = {
    "embedded": None,
    "vit-b16": {"projection_dim": 512,
                "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                                "num_attention_heads": 8, "max_position_embeddings": 77, "vocab_size": 512,
                                "bos_token_id": 1, "eos_token_id": 3, "pad_token_id": 0},
                "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                                  "num_attention_heads": 12, "image_size": 224, "patch_size": 16}},
}
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def measure(backbone_name: str, variant: dict[str, Any] | None, device_name: str, batch: int, steps: int) -> dict:
    import tempfile
    from pathlib import Path

    import torch
    import torch.nn.functional as F
    from transformers import CLIPConfig, CLIPModel

    from pfeddc.client.embedded.build import save_backbone
    from pfeddc.client.model.backbone import encode_image_prompted, encode_text_embeds, load_backbone
    from pfeddc.client.model.prompts import PFedDCModel
    from pfeddc.common.spec import PromptConfig

    torch.manual_seed(0)
    device = torch.device(device_name)
    if BACKBONES[backbone_name] is None:
        backbone = load_backbone("embedded")
    else:
        tmp = Path(tempfile.mkdtemp())
        config = BACKBONES[backbone_name]
        assert config is not None
        save_backbone(CLIPModel(CLIPConfig.from_dict(config)), tmp)
        backbone = load_backbone(str(tmp))
    size = backbone.image_size
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, len(CLASSES), (batch,), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    if variant is None:
        clip = backbone.clip
        torch.nn.Module.to(clip, device)  # modules move in place
        ids = backbone.tokenize([f"a photo of a {c}." for c in CLASSES]).to(device)
        eos = (ids == backbone.eos_token_id).int().argmax(-1)

        def step() -> None:
            px = x.clone().requires_grad_(True)
            emb = clip.text_model.embeddings.token_embedding(ids).detach().requires_grad_(True)
            with amp:
                img = F.normalize(encode_image_prompted(clip, px, None).float(), dim=-1)
                txt = F.normalize(encode_text_embeds(clip, emb, eos).float(), dim=-1)
                loss = F.cross_entropy(100 * img @ txt.t(), y)
            loss.backward()
    else:
        if variant.get("vision_depth") == -1:
            variant = {**variant, "vision_depth": backbone.dims.vision_layers}
        model = PFedDCModel(backbone, CLASSES, PromptConfig(**variant)).to(device)
        opt = torch.optim.SGD(model.trainable_parameters(), lr=0.01, momentum=0.9)

        def step() -> None:
            with amp:
                loss = F.cross_entropy(model(x), y)
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
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    args = p.parse_args(argv)
    if args.variant:
        print(json.dumps(measure(args.backbone, VARIANTS[args.variant], args.device, args.batch_size, args.steps)))
        return 0
    import torch

    hardware = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"# pFedDC training step, backbone={args.backbone}, batch={args.batch_size}, steps={args.steps}, "
          f"device={args.device} ({hardware}), torch {torch.__version__}", flush=True)
    rows = {}
    for name in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--variant", name, "--backbone", args.backbone,
                              "--device", args.device, "--batch-size", str(args.batch_size), "--steps",
                              str(args.steps)], capture_output=True, text=True, check=True)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    floor = rows[next(iter(VARIANTS))]
    print(f"| {'variant':32} | img/s | vs floor | peak MiB | vs floor |")
    print(f"|{'-' * 34}|------:|---------:|---------:|---------:|")
    for name, r in rows.items():
        print(f"| {name:32} | {r['images_per_s']:5.0f} | {r['images_per_s'] / floor['images_per_s']:7.2f}x "
              f"| {r['peak_mib']:8.0f} | {r['peak_mib'] / floor['peak_mib']:7.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
