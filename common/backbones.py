"""The shapes of a backbone that decide prompt shapes, read without torch and without downloading anything.

From a local `config.json`, the embedded default's config, or a table of well-known hub models: the
coordinator derives its spec from these (common/spec.py `global_spec`), and a client checks its model against it.
Each family of dual encoders has one row in `FAMILIES`, keyed by config.json's `model_type`: how to read its
shapes, and the client class that runs it (docs/architecture.md, "Adding a backbone").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDED_MODEL = "embedded"
HUB_DEFAULT_MODEL = "openai/clip-vit-base-patch16"


@dataclass(frozen=True)
class BackboneDims:
    """The few sizes of a dual encoder that decide prompt shapes."""

    text_hidden: int
    vision_hidden: int
    vision_layers: int
    text_max_positions: int
    vision_heads: int
    projection: int = 512  # the shared image-text feature width (CLIP: config projection_dim)


def clip_dims(config: dict[str, Any]) -> BackboneDims:
    """Read the prompt-relevant sizes from a CLIP `config.json` dict."""
    try:
        text = config["text_config"]
        vision = config["vision_config"]
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


def siglip_dims(config: dict[str, Any]) -> BackboneDims:
    """Read a SigLIP `config.json` dict; hub configs leave out sizes at transformers' defaults (base/16).

    SigLIP has no projection: its image features keep the vision width (attention pooling), and the text head
    projects to it. Its text is always padded to `max_position_embeddings` (64).
    """
    text = config.get("text_config") or {}
    vision = config.get("vision_config") or {}
    return BackboneDims(
        text_hidden=int(text.get("hidden_size", 768)),
        vision_hidden=int(vision.get("hidden_size", 768)),
        vision_layers=int(vision.get("num_hidden_layers", 12)),
        text_max_positions=int(text.get("max_position_embeddings", 64)),
        vision_heads=int(vision.get("num_attention_heads", 12)),
        projection=int(vision.get("hidden_size", 768)),
    )


@dataclass(frozen=True)
class Family:
    """One kind of dual encoder: how to read its shapes, and the client class that runs it."""

    dims: Callable[[dict[str, Any]], BackboneDims]
    encoder: str  # "<module>.<class>" in client/model/, a subclass of client/model/encoder.py FrozenEncoder


# One row per family, keyed by the `model_type` of its config.json.
FAMILIES: dict[str, Family] = {
    "clip": Family(clip_dims, "clip.CLIPEncoder"),
    "siglip": Family(siglip_dims, "siglip.SiglipEncoder"),
}

# Shapes of well-known hub models, so the coordinator never downloads anything.
KNOWN_BACKBONES: dict[str, BackboneDims] = {
    "openai/clip-vit-base-patch16": BackboneDims(512, 768, 12, 77, 12, 512),
    "openai/clip-vit-base-patch32": BackboneDims(512, 768, 12, 77, 12, 512),
    "openai/clip-vit-large-patch14": BackboneDims(768, 1024, 24, 77, 16, 768),
    "openai/clip-vit-large-patch14-336": BackboneDims(768, 1024, 24, 77, 16, 768),
}


def family_of(config: dict[str, Any]) -> Family:
    """The row of `config`'s model type (a config without one is CLIP's, as pfeddc's first backbone)."""
    model_type = str(config.get("model_type", "clip"))
    if model_type not in FAMILIES:
        raise ValueError(f"pfeddc has no encoder for model type {model_type!r} (it runs: "
                         f"{', '.join(sorted(FAMILIES))}); docs/architecture.md says how to add one")
    return FAMILIES[model_type]


def dims_from_config(config: dict[str, Any]) -> BackboneDims:
    """Read the prompt-relevant sizes from a `config.json` dict of any family in `FAMILIES`."""
    return family_of(config).dims(config)


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
