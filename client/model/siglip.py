"""SigLIP behind the frozen-backbone seam: the second family, and the template for adding another.

SigLIP's text tower is CLIP's without the causal mask: it reads the whole padded sequence and pools at the last
position, through a linear head. Its image tower has no class token: an attention-pooling head reads every
patch. Its encoder layers are CLIP's, so the gated vision prompts (encoder.prompted_layer) apply unchanged.
The sigmoid loss's bias (`logit_bias`) shifts every class alike, so a softmax over classes ignores it.
Parity with `get_text_features` / `get_image_features` is tested in tests/client/model/test_encoders.py.
"""

from __future__ import annotations

import torch
from transformers import SiglipModel

from .encoder import FrozenEncoder, run_layers


class SiglipEncoder(FrozenEncoder):
    """A frozen SiglipModel: bidirectional text tower pooled at the last position, ViT with attention pooling."""

    network_class = SiglipModel
    default_mean = (0.5, 0.5, 0.5)  # SigLIP's preprocessing
    default_std = (0.5, 0.5, 0.5)
    network: SiglipModel

    def token_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        return self.network.text_model.embeddings.token_embedding(ids)

    def pool_positions(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=ids.device)

    def encode_text(self, token_embeds: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        text = self.network.text_model
        hidden = text.embeddings(inputs_embeds=token_embeds)
        hidden = text.encoder(inputs_embeds=hidden, attention_mask=None).last_hidden_state
        hidden = text.final_layer_norm(hidden)
        return text.head(hidden[torch.arange(hidden.shape[0], device=hidden.device), pool])

    def encode_image(self, pixel_values: torch.Tensor, prompts: torch.Tensor | None = None,
                     gates: torch.Tensor | None = None) -> torch.Tensor:
        vision = self.network.vision_model
        hidden = run_layers(vision.encoder.layers, vision.embeddings(pixel_values), prompts, gates)
        return vision.head(vision.post_layernorm(hidden))

    def logit_scale(self) -> float:
        return float(self.network.logit_scale.exp())
