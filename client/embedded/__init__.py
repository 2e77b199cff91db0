"""The offline default backbone ('embedded'): a small CLIP pretrained by this project's own code.

Its weights ship in `weights/` (model, tokenizer, preprocessing, and `card.json` with sources, licences and
measured zero-shot accuracy); the pretraining pipeline that makes them is not installed: `python -m tools.embedded
build`, from a checkout, rebuilds them from scratch.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def embedded_dir() -> Path:
    """The directory of the shipped embedded backbone."""
    if not (WEIGHTS_DIR / "config.json").is_file():
        raise FileNotFoundError(f"the embedded backbone is missing from {WEIGHTS_DIR}: reinstall pfeddc, or rebuild "
                                "it from a checkout with `python -m tools.embedded build`")
    return WEIGHTS_DIR
