"""The embedded default backbone: a small CLIP pretrained by this project's own code, offline.

No pretrained CLIP can be downloaded where pfeddc is built and tested, so the demo's frozen backbone is
trained here from a seed on data that installs from package registries: Fashion-MNIST's *training* split
(Debian `dataset-fashion-mnist`) and digits rendered from fonts. The clients' data never comes from these
(the demo partitions Fashion-MNIST's test split; the digit suite uses MNIST, UCI and MNIST-M-style images).
The result is cached (~6 MB) and reused; `python -m pfeddc.client.embedded` builds it and prints its
zero-shot accuracy.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

from ...common.embedded import EMBEDDED_CONFIG, EMBEDDED_IMAGE_SIZE, EMBEDDED_VOCAB_SIZE
from ...common.logs import Event, get_logger
from .datasets import DIGIT_CLASSES, FASHION_CLASSES, FASHION_DIR, fashion_mnist, font_digits

log = get_logger("embedded")
EMBEDDED_VERSION = "v1"
TEMPLATES = ["a photo of a {}.", "a photo of the {}.", "a picture of a {}.", "an image of a {}.",
             "a blurry photo of a {}.", "a small {}.", "a drawing of a {}.", "a {}.", "this is a {}.",
             "a photo of a digit {}.", "a grayscale photo of a {}.", "a centered photo of a {}."]
# ids 0..3; the end-of-text id is 3 because transformers treats eos id 2 as a legacy argmax-pooling model
SPECIALS = ["[PAD]", "<|startoftext|>", "[UNK]", "<|endoftext|>"]
EXTRA_WORDS = ["x", "t", "top", "boot", "shoe", "digit", "number", "handwritten", "colored", "inverted", "rotated",
               "clothing", "item", "object", "of", "a", "an", "the", "photo", "picture", "image"]


def vocabulary() -> list[str]:
    words: list[str] = []
    for text in TEMPLATES + FASHION_CLASSES + DIGIT_CLASSES + EXTRA_WORDS:
        for word in text.replace("{}", " ").replace("-", " ").replace(".", " . ").split():
            if word not in words:
                words.append(word)
    words += [str(d) for d in range(10) if str(d) not in words]
    vocab = SPECIALS + words
    assert len(vocab) <= EMBEDDED_VOCAB_SIZE
    return vocab


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level CLIP-style tokenizer: lower-cased words and punctuation, start and end tokens."""
    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 1), ("<|endoftext|>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="[PAD]", unk_token="[UNK]", model_max_length=77)


def save_backbone(clip: CLIPModel, directory: Path, mean: float = 0.5, std: float = 0.5) -> None:
    """Save a CLIP directory loadable by load_backbone: weights, config, tokenizer, preprocessing."""
    clip.save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    config: Any = clip.config
    size = config.vision_config.image_size
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": size},
        "crop_size": {"height": size, "width": size}, "image_mean": [mean] * 3, "image_std": [std] * 3,
    }, indent=1))


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 28, 28] grayscale -> float [N, 3, 32, 32] normalized with mean 0.5, std 0.5."""
    x = torch.from_numpy(np.array(images)).float().div(255.0).unsqueeze(1)
    pad = (EMBEDDED_IMAGE_SIZE - images.shape[-1]) // 2
    x = F.pad(x, (pad, pad, pad, pad))
    return ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()


# ----- pretraining
def pretrain(seed: int = 0, epochs: int = 2, batch_size: int = 256, progress: bool = True,
             fashion_dir: Path = FASHION_DIR, num_digits: int = 20_000) -> CLIPModel:
    """CLIP-style contrastive training of image and text towers against class captions from random templates."""
    torch.manual_seed(seed)
    clip = CLIPModel(CLIPConfig.from_dict(EMBEDDED_CONFIG))
    tokenizer = build_tokenizer()
    xf, yf = fashion_mnist("train", fashion_dir)
    xd, yd = font_digits(num_digits, seed)
    images = to_pixels(np.concatenate([xf, xd]))
    classes = FASHION_CLASSES + DIGIT_CLASSES
    labels = torch.from_numpy(np.concatenate([yf.astype(np.int64), yd.astype(np.int64) + 10]))
    # class names as clients read them from folder names ('t-shirt' -> 't shirt')
    captions = [[t.format(c.replace("-", " ")) for c in classes] for t in TEMPLATES]
    ids = [tokenizer(c, padding="max_length", max_length=16, return_tensors="pt")["input_ids"] for c in captions]
    opt = torch.optim.AdamW(clip.parameters(), lr=1e-3, weight_decay=0.05)
    steps = epochs * (len(labels) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    from tqdm import tqdm

    bar = tqdm(total=steps, desc="pretraining embedded CLIP", disable=not progress, file=sys.stderr)
    clip.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=gen)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            x = images[idx]
            shift = torch.randint(-2, 3, (2,), generator=gen)
            x = torch.roll(x, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            t = ids[int(torch.randint(len(ids), (1,), generator=gen))]
            img = F.normalize(clip.get_image_features(pixel_values=x).pooler_output, dim=-1)
            txt = F.normalize(clip.get_text_features(input_ids=t).pooler_output, dim=-1)
            logits = clip.logit_scale.exp() * img @ txt.t()
            # each image against all 20 class captions; plus captions against the images of their class
            loss = F.cross_entropy(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, 4.6052)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return clip.eval()


@torch.no_grad()
def zero_shot_accuracy(clip: CLIPModel, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> float:
    tokenizer = build_tokenizer()
    ids = tokenizer([TEMPLATES[0].format(c.replace("-", " ")) for c in classes], padding="max_length", max_length=16,
                    return_tensors="pt")["input_ids"]
    txt = F.normalize(clip.get_text_features(input_ids=ids).pooler_output, dim=-1)
    correct = 0
    for start in range(0, len(labels), 1000):
        x = to_pixels(images[start:start + 1000])
        img = F.normalize(clip.get_image_features(pixel_values=x).pooler_output, dim=-1)
        correct += int(((img @ txt.t()).argmax(-1).numpy() == labels[start:start + 1000]).sum())
    return correct / len(labels)


def cache_root(cache_dir: Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("PFEDDC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pfeddc"


def ensure_embedded(cache_dir: Path | None = None, seed: int = 0, fashion_dir: Path = FASHION_DIR,
                    epochs: int = 2, num_digits: int = 20_000) -> Path:
    """The cached embedded backbone directory, building it first if needed (one builder at a time).

    `fashion_dir`, `epochs` and `num_digits` exist for tests; the cached default is built with the defaults.
    """
    root = cache_root(cache_dir)
    target = root / f"embedded-{EMBEDDED_VERSION}-seed{seed}"
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".embedded.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent clients wait for one build
        if (target / "config.json").exists():
            return target
        log.info(Event.EMBEDDED_BUILD_STARTED, target=str(target), seed=seed)
        started = time.monotonic()
        clip = pretrain(seed, epochs, fashion_dir=fashion_dir, num_digits=num_digits)
        xt, yt = fashion_mnist("test", fashion_dir)
        accuracy = zero_shot_accuracy(clip, xt, yt, FASHION_CLASSES)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".embedded-"))
        try:
            save_backbone(clip, tmp)
            (tmp / "pfeddc_embedded.json").write_text(json.dumps(
                {"version": EMBEDDED_VERSION, "seed": seed, "zero_shot_fashion_mnist_test": accuracy,
                 "build_seconds": round(time.monotonic() - started, 1)}, indent=1))
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info(Event.EMBEDDED_BUILD_FINISHED, target=str(target), zero_shot_accuracy=round(accuracy, 4),
                 duration_s=round(time.monotonic() - started, 1))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (or find) the embedded default backbone and report it.")
    parser.add_argument("--cache-dir", type=Path, help="default: $PFEDDC_CACHE or ~/.cache/pfeddc")
    parser.add_argument("--seed", type=int, default=0, help="pretraining seed (default: 0)")
    args = parser.parse_args(argv)
    path = ensure_embedded(args.cache_dir, args.seed)
    print(path)
    print((path / "pfeddc_embedded.json").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
