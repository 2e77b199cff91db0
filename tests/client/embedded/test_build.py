"""The embedded backbone builder: tokenizer, pretraining, cache, report; on small generated idx data."""

from __future__ import annotations

import json
from pathlib import Path

from tests_support import fake_fashion_dir

from pfeddc.client.embedded.build import build_tokenizer, ensure_embedded
from pfeddc.client.embedded.datasets import fashion_mnist
from pfeddc.client.model.backbone import load_backbone
from pfeddc.common.embedded import EMBEDDED_CONFIG


def test_tokenizer_reads_class_names_as_the_clients_do() -> None:
    tok = build_tokenizer()
    ids = tok("a photo of a t shirt.")["input_ids"]
    assert ids[0] == 1 and ids[-1] == tok.eos_token_id == 3
    assert tok.unk_token_id not in ids


def test_ensure_embedded_builds_once_reports_and_loads(tmp_path: Path) -> None:
    fashion = fake_fashion_dir(tmp_path / "fashion")
    x, y = fashion_mnist("train", fashion)
    assert x.shape == (200, 28, 28) and y.shape == (200,)
    path = ensure_embedded(tmp_path / "cache", seed=1, fashion_dir=fashion, epochs=1, num_digits=256)
    report = json.loads((path / "pfeddc_embedded.json").read_text())
    assert 0.0 <= report["zero_shot_fashion_mnist_test"] <= 1.0 and report["seed"] == 1
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_embedded(tmp_path / "cache", seed=1, fashion_dir=fashion) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not rebuilt
    backbone = load_backbone(str(path))
    assert backbone.dims.vision_hidden == EMBEDDED_CONFIG["vision_config"]["hidden_size"]
    assert backbone.mean == (0.5, 0.5, 0.5)
    assert not list((tmp_path / "cache").glob(".embedded-*"))  # no half-written build left behind
