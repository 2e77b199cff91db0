"""The pFedDC model on a tiny random CLIP: parity with transformers, freezing, shapes, state partition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pfeddc.client.model.backbone import Backbone, BackboneNotFound, encode_image_prompted, load_backbone
from pfeddc.client.model.prompts import PFedDCModel, StatePart
from pfeddc.common import serde
from pfeddc.common.spec import METHODS, Fusion, FusionQuery, PromptConfig, spec_difference

CLASSES = ["t-shirt", "trouser", "ankle boot"]


def pixels(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_image_features_without_prompts_equal_get_image_features(tiny_backbone: Backbone) -> None:
    clip, x = tiny_backbone.clip, pixels()
    ours = encode_image_prompted(clip, x, None)
    theirs = clip.get_image_features(pixel_values=x).pooler_output
    torch.testing.assert_close(ours, theirs)


def test_text_prompts_set_to_template_words_equal_get_text_features(tiny_backbone: Backbone) -> None:
    # text_init has exactly text_ctx words, and the deltas start at zero: the prompt IS the template
    model = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(method="promptfl", text_ctx=4, text_init="a photo of a"))
    ids = tiny_backbone.tokenize([f"a photo of a {c}." for c in CLASSES])
    theirs = tiny_backbone.clip.get_text_features(input_ids=ids).pooler_output
    torch.testing.assert_close(model.text_features(), F.normalize(theirs, dim=-1))


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
    assert ("text.global" in names) == (text in ("global", "dual"))
    assert ("text.local" in names) == (text in ("local", "dual"))
    assert ("vision.global" in names) == (vision in ("global", "dual"))
    if vision != "none":
        assert model.vision is not None and model.vision().shape[0] == depth
    assert all(not n.startswith("fusion") for n in model.global_state())


@pytest.mark.parametrize(("fusion", "tokens"), [("attention", 2), ("sum", 2), ("concat", 4)])
def test_fusion_variants_produce_prompt_shapes(tiny_backbone: Backbone, fusion: str, tokens: int) -> None:
    model = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(fusion=Fusion(fusion), text_ctx=2, vision_tokens=2,
                                                             vision_depth=2))
    assert model.text is not None and model.vision is not None
    assert model.text().shape == (1, tokens, 32)
    assert model.vision().shape == (2, tokens, 48)
    assert model(pixels()).shape == (4, 3)


def test_only_prompts_and_fusion_train_and_backbone_stays_byte_identical(tiny_backbone: Backbone) -> None:
    model = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(vision_depth=2, fusion_query=FusionQuery.GLOBAL))
    before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("text.", "vision.")) for n in trainable)
    assert not any(p.requires_grad for p in model.clip.parameters())
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.5)
    x, y = pixels(8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in model.clip.parameters())
    for k, v in model.clip.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_loss_decreases_on_a_separable_toy_set(tiny_backbone: Backbone) -> None:
    torch.manual_seed(0)
    model = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(vision_depth=2))
    means = torch.randn(3, 3, 1, 1) * 2
    y = torch.arange(24) % 3
    x = means[y] + 0.3 * torch.randn(24, 3, 32, 32)
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_state_round_trips_exactly_through_safetensors(tiny_backbone: Backbone, tmp_path: Path) -> None:
    a = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(vision_depth=2), seed=1)
    b = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(vision_depth=2), seed=2)
    with torch.no_grad():
        for p in a.trainable_parameters():
            p.add_(torch.randn_like(p))
    b.load_state(serde.decode(serde.encode(a.global_state())), StatePart.GLOBAL)
    serde.save_file(tmp_path / "local.safetensors", a.local_state())
    b.load_state(serde.load_file(tmp_path / "local.safetensors"), StatePart.LOCAL)
    for part in ("global_state", "local_state"):
        sa, sb = getattr(a, part)(), getattr(b, part)()
        assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
    torch.testing.assert_close(a(pixels()), b(pixels()))


def test_load_state_refuses_mismatched_tensors(tiny_backbone: Backbone) -> None:
    model = PFedDCModel(tiny_backbone, CLASSES, PromptConfig())
    bad = {k: np.zeros((9, 9), np.float32) for k in model.global_state()}
    with pytest.raises(ValueError, match="shape"):
        model.load_state(bad, StatePart.GLOBAL)
    with pytest.raises(ValueError, match="differ"):
        model.load_state({}, StatePart.LOCAL)


def test_missing_model_names_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(BackboneNotFound, match="no CLIP model found for"):
        load_backbone(str(tmp_path / "nowhere"))
    with pytest.raises(BackboneNotFound, match="--allow-download"):
        load_backbone("openai/clip-vit-base-patch16")
