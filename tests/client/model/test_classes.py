"""Class embeddings: started from a site's images, shared by class counts through a plain weighted mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pfeddc.client.model.backbone import Backbone
from pfeddc.client.model.classes import FLOOR_SHARE, ClassEmbeddings
from pfeddc.client.model.prompts import PFedDCModel, StatePart
from pfeddc.common.spec import PromptConfig, global_spec

CLASSES = ["cat", "dog", "bird"]


def _features(labels: list[int], width: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, width, generator=gen) * 3
    y = torch.tensor(labels)
    return F.normalize(centers[y] + torch.randn(len(labels), width, generator=gen), dim=-1), y


def _rows(rows: torch.nn.Parameter | None) -> torch.nn.Parameter:
    assert rows is not None
    return rows


def test_class_embeddings_start_fills_held_rows_once_and_only_weak_shared_rows() -> None:
    emb = ClassEmbeddings(3, 8, shared=True, local=True)
    shared, local = _rows(emb.global_rows), _rows(emb.local_rows)
    x, y = _features([0, 0, 1, 1, 1])
    with torch.no_grad():
        shared[1] = 5.0  # the federation already learned class 1
    assert not emb.started
    assert emb.start(x, y) == [0]  # class 1 is strong, class 2 not held
    assert torch.allclose(shared[0], x[:2].mean(0))
    assert float(shared[2].detach().abs().sum()) == 0 and float(local.detach().abs().sum()) == 0
    assert emb.started and emb.counts.tolist() == [2.0, 3.0, 0.0]

    private = ClassEmbeddings(3, 8, shared=False, local=True)
    assert private.start(x, y) == [0, 1]  # no shared rows: the site's own means go into its local rows
    assert torch.allclose(_rows(private.local_rows)[1], x[2:].mean(0))


def test_class_rows_average_by_class_counts_through_a_plain_weighted_mean() -> None:
    """What the coordinator's FedAvg (weights = example counts) makes of the wire form: each row averaged by
    the sites' image counts of that class; a site without the class has (almost) no say over it."""
    sites = []
    for labels, value in (([0] * 9 + [1], 1.0), ([1] * 4, 3.0)):
        emb = ClassEmbeddings(3, 4, shared=True, local=False)
        x, y = _features(labels, width=4)
        emb.start(x, y)
        with torch.no_grad():
            _rows(emb.global_rows).fill_(value)
        rows = _rows(emb.global_rows).detach().numpy().copy()
        sites.append((len(labels), emb.to_wire({"text.classes.global": rows})))
    total = sum(n for n, _ in sites)
    mean = {k: np.sum([n * t[k] for n, t in sites], axis=0) / total for k in sites[0][1]}
    rows = ClassEmbeddings.from_wire(mean)["text.classes.global"]
    assert rows[0] == pytest.approx(np.full(4, (9 * 1.0 + 4 * FLOOR_SHARE * 3.0) / (9 + 4 * FLOOR_SHARE)), rel=1e-5)
    assert rows[1] == pytest.approx(np.full(4, (1 * 1.0 + 4 * 3.0) / 5), rel=1e-5)  # 1 image vs 4 images
    assert rows[2] == pytest.approx(np.full(4, (10 * 1.0 + 4 * 3.0) / 14), rel=1e-5)  # no holder: plain mean


def test_probe_fit_moves_only_the_class_rows_and_separates_the_classes() -> None:
    emb = ClassEmbeddings(3, 8, shared=True, local=True)
    x, y = _features([0, 1, 2] * 20, seed=3)
    text = torch.randn(3, 8)
    before = float(F.cross_entropy(20 * x @ emb(text).t(), y))
    emb.fit(text, x, y, steps=50, lr=0.05, scale=20.0)
    assert float(F.cross_entropy(20 * x @ emb(text).t(), y)) < before / 2
    assert ((x @ emb(text).t()).argmax(-1) == y).float().mean() > 0.9


def test_model_state_round_trips_shared_class_rows_and_refuses_other_class_lists(tiny_backbone: Backbone) -> None:
    cfg = PromptConfig(classes=tuple(CLASSES))
    spec = {s.name: s.shape for s in global_spec(tiny_backbone.dims, cfg)}
    assert spec["text.classes.global"] == (3, tiny_backbone.dims.projection)
    assert spec["text.classes.share.global"] == (3,)
    model = PFedDCModel(tiny_backbone, CLASSES, cfg)
    assert model.class_embeddings is not None
    x, y = _features([0, 2, 2], width=tiny_backbone.dims.projection)
    model.class_embeddings.start(x, y)
    sent = model.global_state()
    assert {k: v.shape for k, v in sent.items()} == spec
    other = PFedDCModel(tiny_backbone, CLASSES, cfg)
    other.load_state(sent, StatePart.GLOBAL)
    assert other.class_embeddings is not None
    assert torch.allclose(_rows(other.class_embeddings.global_rows), _rows(model.class_embeddings.global_rows),
                          atol=1e-6)
    with pytest.raises(ValueError, match="differ from the federation's"):
        PFedDCModel(tiny_backbone, ["dog", "cat", "bird"], cfg)
    with pytest.raises(ValueError, match="named more than once: Cat, cat"):
        PromptConfig(classes=("cat", "Cat"))


def test_no_class_embeddings_for_baselines_and_the_ablation(tiny_backbone: Backbone) -> None:
    for method in ("coop", "promptfl", "vision-only", "zeroshot", "pfeddc-noproto"):
        cfg = PromptConfig(method=method, classes=tuple(CLASSES))
        model = PFedDCModel(tiny_backbone, CLASSES, cfg)
        assert model.class_embeddings is None
        assert not any("classes" in s.name for s in global_spec(tiny_backbone.dims, cfg))


def test_rows_from_the_wire_never_divide_by_less_than_the_floor() -> None:
    """A share at or below zero (only a coordinator that skipped its bounds check could send one) leaves the row
    finite and at most 1 / FLOOR_SHARE times the sent value."""
    rows = np.ones((2, 3), dtype=np.float32)
    out = ClassEmbeddings.from_wire({"text.classes.global": rows, "text.classes.share.global":
                                     np.array([-0.5, 1e-9], dtype=np.float32)})["text.classes.global"]
    assert np.isfinite(out).all() and float(np.abs(out).max()) <= 1 / FLOOR_SHARE + 1e-3
