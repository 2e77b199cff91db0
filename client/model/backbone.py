"""A frozen Hugging Face CLIP, and the two encoder passes pFedDC needs, composed from its own modules.

transformers' `CLIPTextTransformer.forward` refuses `inputs_embeds` and pools at an EOS position read from
token ids, so the prompted passes below call its sub-modules in the same order (parity is tested against
`get_text_features` / `get_image_features`). transformers is pinned to a minor version for this reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, CLIPModel, PreTrainedTokenizerBase
from transformers.masking_utils import create_causal_mask

from ...common.spec import EMBEDDED_MODEL, BackboneDims, dims_from_config

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class BackboneNotFound(FileNotFoundError):
    pass


@dataclass
class Backbone:
    """A frozen CLIPModel with its tokenizer and the image preprocessing it expects."""

    name: str
    clip: CLIPModel
    tokenizer: PreTrainedTokenizerBase
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def dims(self) -> BackboneDims:
        return dims_from_config(self.clip.config.to_dict())

    @property
    def eos_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        assert eos is not None, "the tokenizer defines no end-of-text token"
        return int(eos)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts, padding="max_length", truncation=True,
                              max_length=self.dims.text_max_positions,
                              return_tensors="pt")["input_ids"]


def freeze(clip: CLIPModel) -> CLIPModel:
    """Eval mode and no gradients: frozen weights then carry no .grad buffers and never change."""
    clip.eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    return clip


def load_backbone(model: str, allow_download: bool = False, cache_dir: Path | None = None) -> Backbone:
    """Load `model`: 'embedded' (built and cached on first use), a local directory, or a hub name.

    The hub is only contacted when `allow_download` is set; otherwise a missing model fails with a message
    saying what was looked for and how to provide it.
    """
    source: str | Path = model
    if model == EMBEDDED_MODEL:
        from ..embedded import embedded_dir

        source = embedded_dir(cache_dir)
    local = Path(source).expanduser()
    is_dir = local.is_dir()
    try:
        clip = CLIPModel.from_pretrained(str(local) if is_dir else model, local_files_only=not allow_download)
        tokenizer = AutoTokenizer.from_pretrained(str(local) if is_dir else model,
                                                  local_files_only=not allow_download)
    except OSError as exc:
        raise BackboneNotFound(
            f"no CLIP model found for {model!r} (looked for a local directory with config.json, model weights "
            f"and tokenizer files, then the Hugging Face cache{'' if allow_download else ' without network'}). "
            "Pass a directory saved with CLIPModel.save_pretrained + the tokenizer, pre-fetch the hub model with "
            "`hf download`, or allow downloads (--allow-download)."
        ) from exc
    config: Any = clip.config
    tokenizer.model_max_length = int(config.text_config.max_position_embeddings)
    mean, std = _normalization(local if is_dir else None)
    return Backbone(model, freeze(clip), tokenizer, int(config.vision_config.image_size), mean, std)


def _normalization(directory: Path | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg_path = directory / "preprocessor_config.json" if directory else None
    if cfg_path and cfg_path.is_file():
        cfg: dict[str, Any] = json.loads(cfg_path.read_text())
        return tuple(cfg.get("image_mean", OPENAI_MEAN)), tuple(cfg.get("image_std", OPENAI_STD))
    return OPENAI_MEAN, OPENAI_STD


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


def encode_image_prompted(clip: CLIPModel, pixel_values: torch.Tensor, prompts: torch.Tensor | None) -> torch.Tensor:
    """Image features with prompt tokens after CLS: prompts [depth, n, d]; layer i < depth gets prompts[i]."""
    vision = clip.vision_model
    hidden = vision.embeddings(pixel_values)
    batch = hidden.shape[0]
    n = 0 if prompts is None else prompts.shape[1]
    if prompts is not None:
        hidden = torch.cat([hidden[:, :1], prompts[0].expand(batch, -1, -1).to(hidden.dtype), hidden[:, 1:]], dim=1)
    hidden = vision.pre_layrnorm(hidden)
    for i, layer in enumerate(vision.encoder.layers):
        if prompts is not None and 0 < i < prompts.shape[0]:
            deep = prompts[i].expand(batch, -1, -1).to(hidden.dtype)
            hidden = torch.cat([hidden[:, :1], deep, hidden[:, 1 + n:]], dim=1)
        out = layer(hidden, None)
        hidden = out[0] if isinstance(out, tuple) else out
    return clip.visual_projection(vision.post_layernorm(hidden[:, 0]))
