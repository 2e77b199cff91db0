"""The frozen-backbone seam: what the pFedDC model needs of a dual encoder, and nothing more.

`PFedDCModel` (client/model/prompts.py) talks only to `FrozenEncoder`. A family of Hugging Face dual encoders
(CLIP: client/model/clip.py, SigLIP: client/model/siglip.py) subclasses it in one module and names that class
in its row of `FAMILIES` (common/backbones.py), which also reads its shapes from config.json without torch;
`load_backbone` (client/model/backbone.py) picks the row by config.json's `model_type`. A family implements:

- `network_class`: the transformers model class its directories hold (CLIPModel, SiglipModel);
- `token_embedding(ids)`: the text tower's input embeddings of token ids;
- `pool_positions(ids)`: where the text pass pools each row (CLIP: the end-of-text token; SigLIP: the last);
- `encode_text(embeds, pool)`: text features from token embeddings, prompts already spliced in;
- `encode_image(pixels, prompts, gates)`: image features, with gated prompts in the first layers (or none);
- `logit_scale()`: the temperature of its image-text similarities.

Tokenizing, dims, image size and normalization are shared here. Features are not normalized here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple, Self

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...common.backbones import BackboneDims, dims_from_config

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class TextInputs(NamedTuple):
    """Token ids cut to what the text pass reads, and the position each row is pooled at."""

    ids: torch.Tensor  # [N, L] long
    pool: torch.Tensor  # [N] long


class FrozenEncoder(nn.Module, ABC):
    """A frozen image-text dual encoder with its tokenizer and the pixel normalization it expects."""

    network_class: ClassVar[type[PreTrainedModel]]
    causal_text: ClassVar[bool] = False  # True: tokens after the pooled one cannot change it, so they are cut
    default_mean: ClassVar[tuple[float, ...]] = OPENAI_MEAN  # when a directory has no preprocessor_config.json
    default_std: ClassVar[tuple[float, ...]] = OPENAI_STD

    def __init__(self, name: str, network: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.name = name
        self.network = freeze(network)
        self.tokenizer = tokenizer
        self.mean = mean or self.default_mean
        self.std = std or self.default_std
        config: Any = network.config
        self.dims: BackboneDims = dims_from_config(config.to_dict())  # its family's row in common/backbones.py
        self.image_size = int(config.vision_config.image_size)
        tokenizer.model_max_length = self.dims.text_max_positions

    # ----- what a family implements
    @abstractmethod
    def token_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of token ids: [..., text_hidden]."""

    @abstractmethod
    def pool_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """The position [N] each row of `ids` [N, L] is pooled at by `encode_text`."""

    @abstractmethod
    def encode_text(self, token_embeds: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        """Text features [N, projection] from token embeddings [N, L, text_hidden], pooled at `pool` [N]."""

    @abstractmethod
    def encode_image(self, pixel_values: torch.Tensor, prompts: torch.Tensor | None = None,
                     gates: torch.Tensor | None = None) -> torch.Tensor:
        """Image features [B, projection]; prompts [depth, n, vision_hidden] and gates [depth, vision_heads] enter
        layers 0..depth-1 (see `prompted_layer`). No prompts, or closed gates: the network's own features."""

    @abstractmethod
    def logit_scale(self) -> float:
        """The multiplier of its cosine similarities (exp of the learned temperature)."""

    # ----- shared
    @property
    def eos_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        assert eos is not None, "the tokenizer defines no end-of-text token"
        return int(eos)

    @property
    def clip(self) -> Any:
        """The frozen network under its name from before this seam (benchmarks and tools still read it)."""
        return self.network

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids [N, text_max_positions], padded to the full length (SigLIP was trained that way)."""
        return self.tokenizer(texts, padding="max_length", truncation=True,
                              max_length=self.dims.text_max_positions, return_tensors="pt")["input_ids"]

    def word_ids(self, text: str) -> torch.Tensor:
        """The tokens of `text` alone, without start or end tokens."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    @property
    def text_start(self) -> int:
        """How many tokens `tokenize` puts before the text (CLIP: its start token)."""
        first = int(self.word_ids("X")[0])
        return int(self.tokenize(["X"])[0].tolist().index(first))

    def text_inputs(self, texts: list[str]) -> TextInputs:
        """`texts` tokenized for `encode_text`: cut after the last pooled token when attention is causal."""
        ids = self.tokenize(texts)
        pool = self.pool_positions(ids)
        if self.causal_text:
            ids = ids[:, :int(pool.max()) + 1]
        return TextInputs(ids, pool)

    def encode_token_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Text features of plain token ids (zero-shot class prompts): the network's own text features."""
        return self.encode_text(self.token_embedding(ids), self.pool_positions(ids))

    def train(self, mode: bool = True) -> Self:
        """Always in eval mode (no dropout), whatever mode the model around it is in."""
        return super().train(False)


def freeze(network: PreTrainedModel) -> PreTrainedModel:
    """Eval mode and no gradients: frozen weights then carry no .grad buffers and never change."""
    network.eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return network


def prompted_layer(layer: Any, hidden: torch.Tensor, prompts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """One pre-norm ViT encoder layer (CLIP's and SigLIP's: layer_norm1, self_attn with q/k/v/out_proj,
    layer_norm2, mlp) whose attention also reads prompt tokens through a gated second softmax.

    out = softmax(q k^T) v + tanh(gate) * softmax(q k_p^T) v_p per head (zero-init gated attention, as in
    LLaMA-Adapter): the prompts compete with nothing in the frozen attention, and a closed gate is an exact
    no-op, so training starts from the zero-shot model.
    """
    attn = layer.self_attn
    b, length, d = hidden.shape
    heads = attn.num_heads
    head_dim = attn.head_dim
    x = layer.layer_norm1(hidden)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], -1, heads, head_dim).transpose(1, 2)

    q = split(attn.q_proj(x))
    k = split(attn.k_proj(x))
    v = split(attn.v_proj(x))
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    p = layer.layer_norm1(prompts.to(x.dtype)).unsqueeze(0)
    kp = split(attn.k_proj(p)).expand(b, -1, -1, -1)
    vp = split(attn.v_proj(p)).expand(b, -1, -1, -1)
    prompted = F.scaled_dot_product_attention(q, kp, vp, scale=attn.scale)
    out = out + torch.tanh(gates).to(out.dtype).view(1, heads, 1, 1) * prompted
    hidden = hidden + attn.out_proj(out.transpose(1, 2).reshape(b, length, d))
    return hidden + layer.mlp(layer.layer_norm2(hidden))


def run_layers(layers: Any, hidden: torch.Tensor, prompts: torch.Tensor | None, gates: torch.Tensor | None
               ) -> torch.Tensor:
    """Run encoder `layers` over `hidden`; layer i < depth through `prompted_layer` with prompts[i], gates[i]."""
    for i, layer in enumerate(layers):
        if prompts is not None and gates is not None and i < prompts.shape[0]:
            hidden = prompted_layer(layer, hidden, prompts[i], gates[i])
        else:
            out = layer(hidden, None)
            hidden = out[0] if isinstance(out, tuple) else out
    return hidden
