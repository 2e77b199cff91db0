"""The offline default backbone ('embedded'): a small CLIP pretrained by this project's own code."""

from __future__ import annotations

from pathlib import Path


def embedded_dir(cache_dir: Path | None = None) -> Path:
    """The directory of the embedded backbone, built and cached on first use."""
    from .build import ensure_embedded

    return ensure_embedded(cache_dir)
