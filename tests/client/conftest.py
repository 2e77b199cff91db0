"""A tiny random CLIP loaded through the real loader (seconds on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfeddc.client.model.backbone import Backbone, load_backbone


@pytest.fixture
def tiny_backbone(tiny_model_dir: Path) -> Backbone:
    return load_backbone(str(tiny_model_dir))
