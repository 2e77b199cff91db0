"""A frozen Hugging Face CLIP, and the two encoder passes pFedDC needs, composed from its own modules.

transformers' `CLIPTextTransformer.forward` refuses `inputs_embeds` and pools at an EOS position read from
token ids, so the prompted passes below call its sub-modules in the same order (parity is tested against
`get_text_features` / `get_image_features`). transformers is pinned to a minor version for this reason.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoTokenizer, CLIPModel, PreTrainedTokenizerBase
from transformers.masking_utils import create_causal_mask

from ...common.backbones import EMBEDDED_MODEL, BackboneDims, dims_from_config
from ..embedded import embedded_dir

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# The normalization `save_backbone` writes: the embedded backbone's, which its pretraining (tools/embedded) uses.
PIXEL_MEAN, PIXEL_STD = 0.5, 0.5


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


def preprocess(image: Path | Image.Image, size: int) -> np.ndarray:
    """RGB, shortest edge resized to `size` (bicubic), center crop: uint8 [3, size, size].

    The one image path of pfeddc: clients, the offline commands and the embedded backbone's pretraining all
    see pixels prepared by this function, so zero-shot numbers measured at build time hold on a client.
    """
    if isinstance(image, Image.Image):
        img = image.convert("RGB")
    else:
        with Image.open(image) as raw:
            img = raw.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def freeze(clip: CLIPModel) -> CLIPModel:
    """Eval mode and no gradients: frozen weights then carry no .grad buffers and never change."""
    clip.eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    return clip


def load_backbone(model: str, allow_download: bool = False) -> Backbone:
    """Load `model`: 'embedded' (shipped with pfeddc), a local directory, or a hub name.

    The hub is only contacted when `allow_download` is set; otherwise a missing model fails with a message
    saying what was looked for and how to provide it.
    """
    source: str | Path = model
    if model == EMBEDDED_MODEL:
        source = embedded_dir()
    local = Path(source).expanduser()
    is_dir = local.is_dir()
    try:
        clip = CLIPModel.from_pretrained(str(local) if is_dir else model, local_files_only=not allow_download,
                                         dtype=torch.float32)  # weights stored in half precision train in fp32
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


def save_backbone(clip: CLIPModel, directory: Path, tokenizer_dir: Path | None = None, half: bool = False) -> None:
    """A CLIP directory `load_backbone` reads: weights (fp16 when `half`), config, tokenizer (copied from
    `tokenizer_dir`, by default the embedded backbone's), preprocessing (`PIXEL_MEAN`, `PIXEL_STD`)."""
    tokenizer_dir = tokenizer_dir or embedded_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (clip.half() if half else clip).save_pretrained(directory)
    clip.float()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        if (tokenizer_dir / name).resolve() != (directory / name).resolve():
            shutil.copyfile(tokenizer_dir / name, directory / name)
    size = int(clip.config.to_dict()["vision_config"]["image_size"])
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": size},
        "crop_size": {"height": size, "width": size}, "image_mean": [PIXEL_MEAN] * 3, "image_std": [PIXEL_STD] * 3,
    }, indent=1))


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


def encode_image_prompted(clip: CLIPModel, pixel_values: torch.Tensor, prompts: torch.Tensor | None = None,
                          gates: torch.Tensor | None = None) -> torch.Tensor:
    """Image features; with prompts [depth, n, d] and gates [depth, heads], layer i < depth also attends to
    prompts[i], each head's share scaled by tanh(gates[i]): closed gates (zero) give exactly CLIP's pass."""
    vision = clip.vision_model
    hidden = vision.pre_layrnorm(vision.embeddings(pixel_values))
    for i, layer in enumerate(vision.encoder.layers):
        if prompts is not None and gates is not None and i < prompts.shape[0]:
            hidden = _prompted_layer(layer, hidden, prompts[i], gates[i])
        else:
            out = layer(hidden, None)
            hidden = out[0] if isinstance(out, tuple) else out
    return clip.visual_projection(vision.post_layernorm(hidden[:, 0]))


def _prompted_layer(layer: Any, hidden: torch.Tensor, prompts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """One CLIP encoder layer whose attention also reads prompt tokens through a gated second softmax.

    out = softmax(q k^T) v + tanh(gate) * softmax(q k_p^T) v_p per head (zero-init gated attention, as in
    LLaMA-Adapter): the prompts compete with nothing in the frozen attention, and a closed gate is an exact
    no-op, so training starts from the zero-shot model.
    """
    attn = layer.self_attn
    b, length, d = hidden.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    x = layer.layer_norm1(hidden)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], -1, heads, head_dim).transpose(1, 2)

    q, k, v = split(attn.q_proj(x)), split(attn.k_proj(x)), split(attn.v_proj(x))
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    p = layer.layer_norm1(prompts.to(x.dtype)).unsqueeze(0)
    kp, vp = split(attn.k_proj(p)).expand(b, -1, -1, -1), split(attn.v_proj(p)).expand(b, -1, -1, -1)
    prompted = F.scaled_dot_product_attention(q, kp, vp, scale=attn.scale)
    out = out + torch.tanh(gates).to(out.dtype).view(1, heads, 1, 1) * prompted
    hidden = hidden + attn.out_proj(out.transpose(1, 2).reshape(b, length, d))
    return hidden + layer.mlp(layer.layer_norm2(hidden))
