"""The pFedDC model on a tiny random CLIP: parity with transformers, zero-shot start, state partition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pfeddc.client.model.backbone import Backbone, BackboneNotFound, encode_image_prompted, load_backbone
from pfeddc.client.model.prompts import PFedDCModel, StatePart
from pfeddc.common import serde
from pfeddc.common.messages import TrainSettings
from pfeddc.common.spec import METHODS, Fusion, FusionQuery, PromptConfig, spec_difference

CLASSES = ["t-shirt", "trouser", "ankle boot"]


def pixels(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def perturb(model: PFedDCModel, part: StatePart, scale: float = 0.5, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    state = model.state(part)
    model.load_state({k: v + scale * rng.standard_normal(v.shape).astype(np.float32) for k, v in state.items()}, part)


def test_image_features_without_prompts_equal_get_image_features(tiny_backbone: Backbone) -> None:
    clip, x = tiny_backbone.clip, pixels()
    theirs = clip.get_image_features(pixel_values=x).pooler_output
    torch.testing.assert_close(encode_image_prompted(clip, x), theirs)
    prompts, closed = torch.randn(2, 3, 48), torch.zeros(2, 2)  # closed gates: the prompts change nothing
    torch.testing.assert_close(encode_image_prompted(clip, x, prompts, closed), theirs)
    assert not torch.allclose(encode_image_prompted(clip, x, prompts, torch.ones(2, 2)), theirs, atol=1e-4)


def test_text_prompts_set_to_template_words_equal_get_text_features(tiny_backbone: Backbone) -> None:
    # text_init has exactly text_ctx words, and the deltas start at zero: the prompt IS the template
    model = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(method="promptfl", text_ctx=4, text_init="a photo of a"))
    ids = tiny_backbone.tokenize([f"a photo of a {c}." for c in CLASSES])
    theirs = tiny_backbone.clip.get_text_features(input_ids=ids).pooler_output
    torch.testing.assert_close(model.text_features(), F.normalize(theirs, dim=-1))


@pytest.mark.parametrize("method", [m for m in METHODS if m != "zeroshot"])
def test_every_method_starts_exactly_at_zero_shot(tiny_backbone: Backbone, method: str) -> None:
    zero_shot = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(method="zeroshot"))
    model = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(method=method, vision_depth=2), seed=3)
    torch.testing.assert_close(model(pixels()), zero_shot(pixels()))


def test_a_client_with_fresh_local_state_computes_the_global_model(tiny_backbone: Backbone) -> None:
    trained = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(method="pfeddc-prompts", vision_depth=2), seed=1)
    perturb(trained, StatePart.GLOBAL)
    perturb(trained, StatePart.LOCAL, seed=1)
    newcomer = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(method="pfeddc-prompts", vision_depth=2), seed=2)
    newcomer.load_state(trained.global_state(), StatePart.GLOBAL)
    personal = trained(pixels())
    with trained.global_only() as alone:
        torch.testing.assert_close(alone(pixels()), newcomer(pixels()))
    torch.testing.assert_close(trained(pixels()), personal)  # the local state came back
    assert not torch.allclose(personal, newcomer(pixels()))


@pytest.mark.parametrize("fusion", list(Fusion))
def test_global_prompts_get_gradient_from_the_first_step(tiny_backbone: Backbone, fusion: Fusion) -> None:
    model = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(method="pfeddc-prompts", fusion=fusion, vision_depth=2))
    F.cross_entropy(model(pixels(6)), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    assert model.text is not None and model.vision is not None
    assert model.text.global_delta is not None and model.text.global_delta.grad is not None
    assert model.text.global_delta.grad.norm() > 0
    assert model.vision.gate is not None and model.vision.gate.grad is not None
    assert model.vision.gate.grad.norm() > 0  # the gates open first, then the vision prompts follow


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("depth", [1, 3])
def test_every_method_gives_logits_and_a_spec_matching_its_global_state(
    tiny_backbone: Backbone, method: str, depth: int
) -> None:
    cfg = PromptConfig(method=method, text_ctx=3, vision_tokens=2, vision_depth=depth)
    model = PFedDCModel(tiny_backbone, CLASSES, cfg)
    assert model(pixels()).shape == (4, len(CLASSES))
    assert spec_difference(model.spec, serde.spec_of(model.global_state())) is None
    names = set(model.global_state()) | set(model.local_state())
    text, vision = METHODS[method].text, METHODS[method].vision
    assert ("text.global" in names) == text.has_global and ("text.local" in names) == text.has_local
    assert ("vision.global" in names) == vision.has_global and ("vision.local" in names) == vision.has_local
    assert ("vision.gate.global" in names) == vision.has_global
    if model.vision is not None:
        assert model.vision().shape[0] == depth
    assert all(not n.startswith("fusion") for n in model.global_state())
    assert all(not np.any(v) for k, v in model.local_state().items() if k.endswith(".local"))


@pytest.mark.parametrize(("fusion", "tokens"), [("attention", 2), ("sum", 2), ("concat", 4)])
def test_fusion_variants_produce_prompt_shapes(tiny_backbone: Backbone, fusion: str, tokens: int) -> None:
    cfg = PromptConfig(method="pfeddc-prompts", fusion=Fusion(fusion), text_ctx=2, vision_tokens=2, vision_depth=2)
    model = PFedDCModel(tiny_backbone, CLASSES, cfg)
    assert model.text is not None and model.vision is not None
    assert model.text().shape == (1, tokens, 32)
    assert model.vision().shape == (2, tokens, 48)
    assert model(pixels()).shape == (4, 3)


def test_param_groups_give_text_vision_and_fusion_their_own_learning_rates(tiny_backbone: Backbone) -> None:
    model = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(method="pfeddc-prompts", vision_depth=2))
    groups = {g["name"]: g for g in model.param_groups(TrainSettings(lr=0.1, lr_vision=0.2, lr_fusion=0.3))}
    assert {k: g["lr"] for k, g in groups.items()} == {"lr": 0.1, "lr_vision": 0.2, "lr_fusion": 0.3}
    # every trainable tensor but the class head's personal part (fitted by its own probe, client/model/head.py)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    assert sum(len(g["params"]) for g in groups.values()) == len(trainable)


def test_only_prompts_and_fusion_train_and_backbone_stays_byte_identical(tiny_backbone: Backbone) -> None:
    cfg = PromptConfig(method="pfeddc-prompts", vision_depth=2, fusion_query=FusionQuery.LOCAL)
    model = PFedDCModel(tiny_backbone, CLASSES, cfg)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("text.", "vision.", "head.")) for n in trainable)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x, y = pixels(8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in model.backbone.parameters())
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_state_round_trips_exactly_through_safetensors(tiny_backbone: Backbone, tmp_path: Path) -> None:
    a = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(method="pfeddc-prompts", vision_depth=2), seed=1)
    b = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(method="pfeddc-prompts", vision_depth=2), seed=2)
    perturb(a, StatePart.GLOBAL)
    perturb(a, StatePart.LOCAL, seed=1)
    b.load_state(serde.decode(serde.encode(a.global_state())), StatePart.GLOBAL)
    serde.save_file(tmp_path / "local.safetensors", a.local_state())
    b.load_state(serde.load_file(tmp_path / "local.safetensors"), StatePart.LOCAL)
    for part in (StatePart.GLOBAL, StatePart.LOCAL):
        sa, sb = a.state(part), b.state(part)
        assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
    torch.testing.assert_close(a(pixels()), b(pixels()))


def test_load_state_refuses_mismatched_tensors(tiny_backbone: Backbone) -> None:
    model = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(method="pfeddc-prompts"))
    bad = {k: np.zeros((9, 9), np.float32) for k in model.global_state()}
    with pytest.raises(ValueError, match="shape"):
        model.load_state(bad, StatePart.GLOBAL)
    with pytest.raises(ValueError, match="differ"):
        model.load_state({}, StatePart.LOCAL)


def test_missing_model_names_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(BackboneNotFound, match="no model found for"):
        load_backbone(str(tmp_path / "nowhere"))
    with pytest.raises(BackboneNotFound, match="--allow-download"):
        load_backbone("openai/clip-vit-base-patch16")
