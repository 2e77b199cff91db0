"""CLIP behind the frozen-backbone seam: its prompted text and image passes, composed from its own modules.

transformers' `CLIPTextTransformer.forward` refuses `inputs_embeds` and pools at an EOS position read from
token ids, so the passes below call its sub-modules in the same order (parity is tested against
`get_text_features` / `get_image_features`). transformers is pinned to a minor version for this reason.
"""

from __future__ import annotations

import torch
from transformers import CLIPModel
from transformers.masking_utils import create_causal_mask

from .encoder import FrozenEncoder, run_layers


class CLIPEncoder(FrozenEncoder):
    """A frozen CLIPModel: causal text tower pooled at the end-of-text token, ViT with a class token."""

    network_class = CLIPModel
    causal_text = True
    network: CLIPModel

    def token_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        return self.network.text_model.embeddings.token_embedding(ids)

    def pool_positions(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids == self.eos_token_id).int().argmax(dim=-1)  # the first end-of-text (padding repeats it)

    def encode_text(self, token_embeds: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        return encode_text_embeds(self.network, token_embeds, pool)

    def encode_image(self, pixel_values: torch.Tensor, prompts: torch.Tensor | None = None,
                     gates: torch.Tensor | None = None) -> torch.Tensor:
        return encode_image_prompted(self.network, pixel_values, prompts, gates)

    def logit_scale(self) -> float:
        return float(self.network.logit_scale.exp())


def encode_text_embeds(clip: CLIPModel, token_embeds: torch.Tensor, eos_positions: torch.Tensor) -> torch.Tensor:
    """Text features from token embeddings [N, L, d] (prompts already spliced in), pooled at `eos_positions`.

    Pass only the tokens up to the last EOS: the causal mask makes later positions irrelevant.
    """
    text = clip.text_model
    hidden = text.embeddings(inputs_embeds=token_embeds)
    mask = create_causal_mask(config=text.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None)
    hidden = text.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
    hidden = text.final_layer_norm(hidden)
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eos_positions]
    return clip.text_projection(pooled)


def encode_image_prompted(clip: CLIPModel, pixel_values: torch.Tensor, prompts: torch.Tensor | None = None,
                          gates: torch.Tensor | None = None) -> torch.Tensor:
    """Image features; with prompts [depth, n, d] and gates [depth, heads], layer i < depth also attends to
    prompts[i], each head's share scaled by tanh(gates[i]): closed gates (zero) give exactly CLIP's pass."""
    vision = clip.vision_model
    hidden = vision.pre_layrnorm(vision.embeddings(pixel_values))
    hidden = run_layers(vision.encoder.layers, hidden, prompts, gates)
    return clip.visual_projection(vision.post_layernorm(hidden[:, 0]))
