"""The frozen-backbone seam, checked on every family: a tiny random CLIP and a tiny random SigLIP, each loaded
through the real loader, must give their network's own features, match their row of the torch-free shapes table,
and run the whole pFedDC model (zero-shot start, prompted forward and a training step, the class head).

A new family adds its tiny config and one entry in `TINY` below (docs/architecture.md, "Adding a backbone").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, SiglipConfig, SiglipModel

from pfeddc.client.model.backbone import encoder_class, load_backbone, save_backbone
from pfeddc.client.model.clip import CLIPEncoder
from pfeddc.client.model.encoder import FrozenEncoder
from pfeddc.client.model.images import ImageSet
from pfeddc.client.model.prompts import PFedDCModel
from pfeddc.client.model.siglip import SiglipEncoder
from pfeddc.client.model.train import image_features
from pfeddc.common.backbones import FAMILIES, dims_from_config, resolve_dims, siglip_dims
from pfeddc.common.spec import PromptConfig

CLASSES = ["red", "green", "blue"]
TINY_SIGLIP = {
    "model_type": "siglip",
    # the embedded backbone's CLIP tokenizer (a real SigLIP's is SentencePiece), so the vocabulary is CLIP's
    "text_config": {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 2, "max_position_embeddings": 64, "projection_size": 48},
    "vision_config": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 8},
}


def tiny_siglip() -> PreTrainedModel:
    return SiglipModel(SiglipConfig.from_dict(TINY_SIGLIP))


# family -> (its encoder class, a builder of a tiny random network; None: the session's tiny CLIP directory)
TINY: dict[str, tuple[type[FrozenEncoder], Callable[[], PreTrainedModel] | None]] = {
    "clip": (CLIPEncoder, None),
    "siglip": (SiglipEncoder, tiny_siglip),
}


@pytest.fixture(scope="module", params=sorted(TINY))
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = TINY[request.param][1]
    if build is None:
        return Path(request.getfixturevalue("tiny_model_dir"))
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp(f"tiny-{request.param}")
    save_backbone(build().eval(), directory)
    return directory


@pytest.fixture
def encoder(model_dir: Path) -> FrozenEncoder:
    return load_backbone(str(model_dir))


def pixels(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_every_family_row_names_an_encoder_of_its_model_type() -> None:
    for model_type in FAMILIES:
        found = encoder_class({"model_type": model_type})
        config_class = found.network_class.config_class
        assert issubclass(found, FrozenEncoder) and config_class is not None and config_class.model_type == model_type
    assert set(TINY) == set(FAMILIES)  # every family has its tiny model here
    with pytest.raises(ValueError, match="no encoder for model type 'bert'"):
        dims_from_config({"model_type": "bert"})


def test_siglip_row_reads_hub_configs_that_leave_sizes_at_the_defaults() -> None:
    assert siglip_dims({"model_type": "siglip"}) == dims_from_config(SiglipConfig().to_dict())


def test_the_loader_picks_the_family_and_its_row_matches_the_networks_shapes(model_dir: Path,
                                                                             encoder: FrozenEncoder) -> None:
    family = json.loads((model_dir / "config.json").read_text())["model_type"]
    assert type(encoder) is TINY[family][0]
    dims = encoder.dims
    assert resolve_dims(str(model_dir)) == dims  # what the coordinator reads, torch-free
    ids = encoder.tokenize(["a photo of a red."])
    assert ids.shape == (1, dims.text_max_positions)
    assert encoder.token_embedding(ids).shape == (1, dims.text_max_positions, dims.text_hidden)
    assert encoder.encode_token_ids(ids).shape == (1, dims.projection)
    depth = dims.vision_layers  # prompts in every layer, the gate open in the last one only
    prompts, gates = torch.randn(depth, 2, dims.vision_hidden), torch.zeros(depth, dims.vision_heads)
    assert encoder.encode_image(pixels(), prompts, gates).shape == (4, dims.projection)
    gates[-1] = 1.0
    assert not torch.allclose(encoder.encode_image(pixels(), prompts, gates), encoder.encode_image(pixels()))


def test_no_prompts_give_the_networks_own_features(encoder: FrozenEncoder) -> None:
    network: Any = encoder.network  # transformers' own passes, the reference
    x = pixels()
    theirs = network.get_image_features(pixel_values=x).pooler_output
    torch.testing.assert_close(encoder.encode_image(x), theirs)
    closed = torch.zeros(2, encoder.dims.vision_heads)  # closed gates: the prompts change nothing
    torch.testing.assert_close(encoder.encode_image(x, torch.randn(2, 3, encoder.dims.vision_hidden), closed), theirs)
    ids = encoder.tokenize([f"a photo of a {c}." for c in CLASSES])
    torch.testing.assert_close(encoder.encode_token_ids(ids), network.get_text_features(input_ids=ids).pooler_output)


def test_text_prompts_set_to_template_words_give_the_networks_text_features(encoder: FrozenEncoder) -> None:
    model = PFedDCModel(encoder, CLASSES, PromptConfig(method="promptfl", text_ctx=4, text_init="a photo of a"))
    ids = encoder.tokenize([f"a photo of a {c}." for c in CLASSES])
    network: Any = encoder.network
    theirs = network.get_text_features(input_ids=ids).pooler_output
    torch.testing.assert_close(model.text_features(), F.normalize(theirs, dim=-1))


def test_prompted_model_starts_at_zero_shot_and_trains_only_its_prompts(encoder: FrozenEncoder) -> None:
    zero_shot = PFedDCModel(encoder, CLASSES, PromptConfig(method="zeroshot"))
    model = PFedDCModel(encoder, CLASSES, PromptConfig(method="pfeddc-prompts", vision_depth=2), seed=3)
    torch.testing.assert_close(model(pixels()), zero_shot(pixels()))
    frozen = {k: v.clone() for k, v in encoder.state_dict().items()}
    before = model.global_state()
    model.train()
    assert not encoder.network.training  # the backbone stays in eval mode
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = F.cross_entropy(model(pixels(6)), torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    assert model.vision is not None and model.vision.gate is not None and model.vision.gate.grad is not None
    assert model.vision.gate.grad.norm() > 0
    opt.step()
    after = model.global_state()
    assert any(not (after[k] == before[k]).all() for k in before)
    assert all(torch.equal(v, frozen[k]) for k, v in encoder.state_dict().items())
    assert all(p.grad is None for p in encoder.parameters())


def test_class_head_of_the_default_method_gives_logits(encoder: FrozenEncoder) -> None:
    labels = torch.arange(12) % 3
    colours = torch.tensor([[220, 40, 40], [40, 200, 40], [40, 40, 220]])
    noise = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 30
    data = ImageSet((colours[labels][:, :, None, None] + noise).clamp(0, 255).to(torch.uint8), labels)
    model = PFedDCModel(encoder, CLASSES, PromptConfig(classes=tuple(CLASSES)))  # method "pfeddc"
    assert model.head is not None and model.text is None and model.vision is None
    features = image_features(model, data, torch.device("cpu"))
    assert features.shape == (12, encoder.dims.projection)
    model.head.observe(features, labels)
    logits = model.logits(None, image_features=features)
    assert logits.shape == (12, 3) and torch.isfinite(logits).all()
    assert model.global_state()["head.counts.global"].sum() > 0
    assert model(pixels()).shape == (4, 3)
