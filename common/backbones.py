"""The shapes of a CLIP backbone that decide prompt shapes, read without torch and without downloading anything.

From a local `config.json`, the embedded default's config, or a table of well-known hub models: the
coordinator derives its spec from these (common/spec.py `global_spec`), and a client checks its model against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDED_MODEL = "embedded"
HUB_DEFAULT_MODEL = "openai/clip-vit-base-patch16"


@dataclass(frozen=True)
class BackboneDims:
    """The few sizes of a CLIP backbone that decide prompt shapes."""

    text_hidden: int
    vision_hidden: int
    vision_layers: int
    text_max_positions: int
    vision_heads: int
    projection: int = 512  # the shared image-text feature width (config projection_dim)


# Shapes of well-known hub models, so the coordinator never downloads anything.
KNOWN_BACKBONES: dict[str, BackboneDims] = {
    "openai/clip-vit-base-patch16": BackboneDims(512, 768, 12, 77, 12, 512),
    "openai/clip-vit-base-patch32": BackboneDims(512, 768, 12, 77, 12, 512),
    "openai/clip-vit-large-patch14": BackboneDims(768, 1024, 24, 77, 16, 768),
    "openai/clip-vit-large-patch14-336": BackboneDims(768, 1024, 24, 77, 16, 768),
}


def dims_from_config(config: dict[str, Any]) -> BackboneDims:
    """Read the prompt-relevant sizes from a CLIP `config.json` dict."""
    try:
        text, vision = config["text_config"], config["vision_config"]
        return BackboneDims(
            text_hidden=int(text["hidden_size"]),
            vision_hidden=int(vision["hidden_size"]),
            vision_layers=int(vision["num_hidden_layers"]),
            text_max_positions=int(text.get("max_position_embeddings", 77)),
            vision_heads=int(vision["num_attention_heads"]),
            projection=int(config.get("projection_dim", 512)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a CLIP config (missing or bad {exc}): need text_config/vision_config") from exc


def resolve_dims(model: str) -> BackboneDims:
    """Dims of `model`: the embedded default, a local directory with config.json, or a known hub name."""
    if model == EMBEDDED_MODEL:
        from .embedded import EMBEDDED_CONFIG

        return dims_from_config(EMBEDDED_CONFIG)
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return dims_from_config(json.loads((path / "config.json").read_text()))
    if model in KNOWN_BACKBONES:
        return KNOWN_BACKBONES[model]
    raise ValueError(
        f"cannot derive prompt shapes for model {model!r}: it is neither {EMBEDDED_MODEL!r}, a directory "
        f"holding config.json, nor a known hub name ({', '.join(sorted(KNOWN_BACKBONES))})"
    )
