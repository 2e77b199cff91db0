"""Emoji artwork with names and keywords: thousands of everyday concepts as image-text pairs, offline.

npm `emoji-datasource-<style>` ships 64 px PNGs and `emoji.json` (Unicode names, short names, categories);
npm `emojibase-data` adds the CLDR English labels and keywords. Styles: `google` (Noto Emoji, Apache-2.0) is
pretrained on; `twitter` (Twemoji, CC BY 4.0) is held out of pretraining entirely and only evaluated.
Country and subdivision flags are left out (at 32 px they are coloured stripes named only by country), as
are the skin-tone swatches; skin-tone variants are more images of the same concept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .registry import npm_package

PACKAGES = {"google": "emoji-datasource-google@16.0.0", "twitter": "emoji-datasource-twitter@16.0.0"}
EMOJIBASE = "emojibase-data@17.0.0"
_FE0F = re.compile(r"-?FE0F")


@dataclass(frozen=True)
class Concept:
    """One emoji; `names` first the CLDR label, then the Unicode name and short names."""

    unified: str
    image: str
    names: tuple[str, ...]
    keywords: tuple[str, ...]
    group: str
    variants: tuple[str, ...]  # skin-tone images of the same concept

    @property
    def name(self) -> str:
        return self.names[0]


def _dedupe(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i.strip() for i in items if i.strip()))


def _readable(key: str) -> str:
    return key.replace("_", " ").replace("-", " ").strip().lower()


def style_root(style: str, cache: Path) -> Path:
    return npm_package(PACKAGES[style], cache, (f"package/img/{style}/64/", "package/emoji.json",
                                                "package/LICENSE", "package/README.md"))


def concepts(cache: Path) -> list[Concept]:
    """Every emoji drawn in both styles, in Unicode sort order (the same list on every machine)."""
    root = style_root("google", cache)
    base_root = npm_package(EMOJIBASE, cache, ("package/en/data.json", "package/en/messages.json", "package/LICENSE"))
    cldr = {_FE0F.sub("", e["hexcode"].upper()): e for e in json.loads((base_root / "en/data.json").read_text())}
    groups = {g["order"]: g["message"] for g in json.loads((base_root / "en/messages.json").read_text())["groups"]}
    out = []
    for entry in sorted(json.loads((root / "emoji.json").read_text()), key=lambda e: e["sort_order"]):
        if entry["category"] == "Component" or entry["subcategory"] in ("country-flag", "subdivision-flag"):
            continue
        if not (entry.get("has_img_google") and entry.get("has_img_twitter")):
            continue
        info = cldr.get(_FE0F.sub("", entry["unified"].upper()), {})
        names = _dedupe([str(info.get("label", "")).lower(), entry["name"].lower(),
                         *(_readable(s) for s in entry["short_names"])])
        keywords = tuple(k for k in _dedupe([t.lower() for t in info.get("tags", ())]) if k not in names)
        variants = tuple(v["image"] for v in (entry.get("skin_variations") or {}).values()
                         if v.get("has_img_google") and v.get("has_img_twitter"))
        out.append(Concept(entry["unified"], entry["image"], names, keywords,
                           str(groups.get(info.get("group", -1), entry["category"])).lower(), variants))
    return out


def render(root: Path, style: str, file: str, size: int) -> np.ndarray:
    """One emoji as uint8 RGBA [4, size, size], resized on premultiplied alpha (no dark fringes)."""
    with Image.open(root / "img" / style / "64" / file) as im:
        rgba = im.convert("RGBA")
    if rgba.size != (size, size):
        rgba = rgba.convert("RGBa").resize((size, size), Image.Resampling.BOX).convert("RGBA")
    return np.asarray(rgba, dtype=np.uint8).transpose(2, 0, 1).copy()


def on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA [4, H, W] composited on white: how an emoji looks saved as an ordinary image file."""
    alpha = rgba[3:4].astype(np.float32) / 255
    return np.rint(rgba[:3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


def images(cache: Path, style: str, chosen: list[Concept], size: int, variants: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
    """RGBA images [N, 4, size, size] of `chosen` in `style` and the index of each image's concept."""
    root = style_root(style, cache)
    pixels = []
    owners = []
    for i, concept in enumerate(chosen):
        for file in (concept.image, *(concept.variants if variants else ())):
            pixels.append(render(root, style, file, size))
            owners.append(i)
    return np.stack(pixels), np.array(owners, dtype=np.int64)
