"""Tiny random CLIP backbones saved to disk and loaded through the real loader (seconds on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_support import make_tiny_model_dir

from pfeddc.client.backbone import Backbone, load_backbone


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture
def tiny_backbone(tiny_model_dir: Path) -> Backbone:
    return load_backbone(str(tiny_model_dir))
