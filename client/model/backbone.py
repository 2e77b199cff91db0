"""Loading and saving a frozen backbone of any family, and the one image preprocessing of pfeddc.

`load_backbone` reads config.json's `model_type`, finds its row in `FAMILIES` (common/backbones.py) and builds
that family's `FrozenEncoder` (client/model/encoder.py): CLIP (client/model/clip.py), SigLIP (siglip.py).
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedModel

from ...common.backbones import EMBEDDED_MODEL, family_of
from ..embedded import embedded_dir
from .clip import CLIPEncoder, encode_image_prompted, encode_text_embeds
from .encoder import OPENAI_MEAN, OPENAI_STD, FrozenEncoder, freeze

__all__ = ["OPENAI_MEAN", "OPENAI_STD", "PIXEL_MEAN", "PIXEL_STD", "Backbone", "BackboneNotFound", "CLIPEncoder",
           "FrozenEncoder", "encode_image_prompted", "encode_text_embeds", "encoder_class", "freeze",
           "load_backbone", "preprocess", "save_backbone"]

# The normalization `save_backbone` writes: the embedded backbone's, which its pretraining (tools/embedded) uses.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.5

Backbone = FrozenEncoder  # the name callers knew before the seam


class BackboneNotFound(FileNotFoundError):
    pass


def preprocess(image: Path | Image.Image, size: int) -> np.ndarray:
    """RGB, shortest edge resized to `size` (bicubic), center crop: uint8 [3, size, size].

    The one image path of pfeddc: clients, the offline commands and the embedded backbone's pretraining all
    see pixels prepared by this function, so zero-shot numbers measured at build time hold on a client.
    """
    if isinstance(image, Image.Image):
        img = image.convert("RGB")
    else:
        with Image.open(image) as raw:
            img = raw.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    w, h = img.size
    left = (w - size) // 2
    top = (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def encoder_class(config: dict[str, Any]) -> type[FrozenEncoder]:
    """The `FrozenEncoder` subclass that runs a model with this config.json (its row in `FAMILIES`)."""
    module_name, class_name = family_of(config).encoder.rsplit(".", 1)
    found = getattr(importlib.import_module(f"{__package__}.{module_name}"), class_name)
    if not (isinstance(found, type) and issubclass(found, FrozenEncoder)):
        raise TypeError(f"{module_name}.{class_name} is not a FrozenEncoder")
    return found


def load_backbone(model: str, allow_download: bool = False) -> FrozenEncoder:
    """Load `model`: 'embedded' (shipped with pfeddc), a local directory, or a hub name.

    The hub is only contacted when `allow_download` is set; otherwise a missing model fails with a message
    saying what was looked for and how to provide it.
    """
    local = Path(embedded_dir() if model == EMBEDDED_MODEL else model).expanduser()
    is_dir = local.is_dir()
    where = str(local) if is_dir else model
    offline = not allow_download
    try:
        config, _ = PretrainedConfig.get_config_dict(where, local_files_only=offline)
        encoder_type = encoder_class(config)
        network = encoder_type.network_class.from_pretrained(where, local_files_only=offline,
                                                       dtype=torch.float32)  # weights stored in half train in fp32
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=offline)
    except OSError as exc:
        raise BackboneNotFound(
            f"no model found for {model!r} (looked for a local directory with config.json, model weights "
            f"and tokenizer files, then the Hugging Face cache{'' if allow_download else ' without network'}). "
            "Pass a directory saved with save_pretrained (model and tokenizer), pre-fetch the hub model with "
            "`hf download`, or allow downloads (--allow-download)."
        ) from exc
    mean, std = _normalization(local if is_dir else None)
    return encoder_type(model, network, tokenizer, mean, std)


def save_backbone(network: PreTrainedModel, directory: Path, tokenizer_dir: Path | None = None,
                  half: bool = False) -> None:
    """A directory `load_backbone` reads: weights (fp16 when `half`), config, tokenizer (copied from
    `tokenizer_dir`, by default the embedded backbone's), preprocessing (`PIXEL_MEAN`, `PIXEL_STD`)."""
    tokenizer_dir = tokenizer_dir or embedded_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (network.half() if half else network).save_pretrained(directory)
    network.float()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        if (tokenizer_dir / name).resolve() != (directory / name).resolve():
            shutil.copyfile(tokenizer_dir / name, directory / name)
    size = int(network.config.to_dict()["vision_config"]["image_size"])
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": size},
        "crop_size": {"height": size, "width": size}, "image_mean": [PIXEL_MEAN] * 3, "image_std": [PIXEL_STD] * 3,
    }, indent=1))


def _normalization(directory: Path | None) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The directory's pixel mean and std; None: the family's defaults."""
    cfg_path = directory / "preprocessor_config.json" if directory else None
    if cfg_path and cfg_path.is_file():
        cfg: dict[str, Any] = json.loads(cfg_path.read_text())
        mean = cfg.get("image_mean")
        std = cfg.get("image_std")
        return (tuple(mean) if mean else None), (tuple(std) if std else None)
    return None, None
