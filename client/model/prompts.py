"""The pFedDC model: a frozen CLIP, global and local prompts per modality, and their fusion.

Only the prompts and the fusion modules are parameters; everything else is frozen or a non-persistent
buffer. The model partitions its trainable state into *global* tensors (sent to the coordinator) and
*local* tensors (prompts and fusion modules that never leave the client), each as name -> numpy array.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...common.spec import Placement, PromptConfig, TensorSpec, global_spec, initial_prompts
from .backbone import Backbone, encode_image_prompted, encode_text_embeds
from .fusion import PromptFusion

ZERO_SHOT_TEMPLATE = "a photo of a {}."


class StatePart(StrEnum):
    """The two halves of the trainable state: sent to the coordinator, or kept on the client."""

    GLOBAL = "global"
    LOCAL = "local"

    @classmethod
    def of(cls, name: str) -> StatePart:
        return cls.GLOBAL if name.endswith(".global") else cls.LOCAL


class PromptLearner(nn.Module):
    """The prompts of one modality: global and/or local offsets from a frozen base, and their fusion."""

    base: torch.Tensor

    def __init__(self, placement: Placement, base: torch.Tensor, fusion: PromptFusion | None,
                 global_init: np.ndarray | None, local_init: np.ndarray | None) -> None:
        super().__init__()
        self.placement = placement
        self.register_buffer("base", base, persistent=False)  # [D, n, d]
        self.global_delta = nn.Parameter(torch.from_numpy(global_init)) if global_init is not None else None
        self.local_delta = nn.Parameter(torch.from_numpy(local_init)) if local_init is not None else None
        self.fusion = fusion

    def forward(self) -> torch.Tensor:
        base = self.base
        if self.placement == Placement.GLOBAL:
            assert self.global_delta is not None
            return base + self.global_delta.view_as(base)
        if self.placement == Placement.LOCAL:
            assert self.local_delta is not None
            return base + self.local_delta.view_as(base)
        assert self.global_delta is not None and self.local_delta is not None and self.fusion is not None
        return self.fusion(base + self.global_delta.view_as(base), base + self.local_delta.view_as(base))


class PFedDCModel(nn.Module):
    text_prefix: torch.Tensor
    text_suffix: torch.Tensor
    text_eos: torch.Tensor
    fixed_text_features: torch.Tensor

    def __init__(self, backbone: Backbone, classnames: list[str], cfg: PromptConfig, seed: int = 0) -> None:
        super().__init__()
        if not classnames:
            raise ValueError("the model needs at least one class name")
        self.backbone, self.cfg, self.classnames = backbone, cfg, list(classnames)
        self.clip = backbone.clip
        dims = backbone.dims
        self.spec = global_spec(dims, cfg)
        global_init = initial_prompts(self.spec, seed)
        local_specs = [TensorSpec(s.name.replace(".global", ".local"), s.shape)
                       for s in global_spec(dims, replace(cfg, method="pfeddc"))]
        local_init = initial_prompts(local_specs, seed + 1)
        kind = cfg.fusion_kind

        self.text: PromptLearner | None = None
        if cfg.text != Placement.NONE:
            base = self._text_base(cfg.text_ctx, dims.text_hidden)
            fusion = PromptFusion(kind, dims.text_hidden, cfg.fusion_heads, cfg.fusion_query) \
                if cfg.text == Placement.DUAL else None
            self.text = PromptLearner(cfg.text, base.unsqueeze(0), fusion,
                                      global_init.get("text.global"),
                                      local_init["text.local"] if cfg.text.has_local else None)
            n_text = fusion.tokens_out(cfg.text_ctx) if fusion else cfg.text_ctx
            self._build_text_template(n_text)
        else:
            with torch.no_grad():
                ids = backbone.tokenize([ZERO_SHOT_TEMPLATE.format(c) for c in self.classnames])
                feats = self.clip.get_text_features(input_ids=ids)
            feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
            self.register_buffer("fixed_text_features", feats, persistent=False)

        self.vision: PromptLearner | None = None
        if cfg.vision != Placement.NONE:
            shape = (cfg.vision_depth, cfg.vision_tokens, dims.vision_hidden)
            fusion = PromptFusion(kind, dims.vision_hidden, cfg.fusion_heads, cfg.fusion_query) \
                if cfg.vision == Placement.DUAL else None
            self.vision = PromptLearner(cfg.vision, torch.zeros(shape), fusion,
                                        global_init.get("vision.global"),
                                        local_init["vision.local"] if cfg.vision.has_local else None)

    # ----- construction helpers
    def _text_base(self, n_ctx: int, width: int) -> torch.Tensor:
        """Embeddings of the init phrase when it has exactly n_ctx tokens, else seeded random (same everywhere)."""
        ids = self.backbone.tokenize([self.cfg.text_init])[0]
        eos = int((ids == self.backbone.eos_token_id).nonzero()[0])
        words = ids[1:eos]
        with torch.no_grad():
            if len(words) == n_ctx:
                return self.clip.text_model.embeddings.token_embedding(words).clone()
            gen = torch.Generator().manual_seed(0)
            return 0.02 * torch.randn(n_ctx, width, generator=gen)

    def _build_text_template(self, n_tokens: int) -> None:
        """Token embeddings of 'X X ... X {class}.' split around the X's, as frozen buffers."""
        placeholder = " ".join(["X"] * n_tokens)
        ids = self.backbone.tokenize([f"{placeholder} {c}." for c in self.classnames])
        eos = (ids == self.backbone.eos_token_id).int().argmax(dim=-1)
        length = int(eos.max()) + 1  # only pay for the tokens up to the longest end-of-text
        with torch.no_grad():
            emb = self.clip.text_model.embeddings.token_embedding(ids[:, :length])
        self.register_buffer("text_prefix", emb[:, :1].clone(), persistent=False)  # [C, 1, d] start token
        self.register_buffer("text_suffix", emb[:, 1 + n_tokens:].clone(), persistent=False)  # [C, *, d] class, EOS
        self.register_buffer("text_eos", eos, persistent=False)

    # ----- forward
    def text_features(self) -> torch.Tensor:
        """L2-normalized features of every class prompt: [C, proj]. One text pass for all classes."""
        if self.text is None:
            feats = self.fixed_text_features
        else:
            ctx = self.text()[0]  # [n, d]
            prefix, suffix = self.text_prefix, self.text_suffix
            embeds = torch.cat([prefix, ctx.unsqueeze(0).expand(prefix.shape[0], -1, -1).to(prefix.dtype), suffix],
                               dim=1)
            feats = encode_text_embeds(self.clip, embeds, self.text_eos)
        return F.normalize(feats.float(), dim=-1)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        prompts = self.vision() if self.vision is not None else None
        return F.normalize(encode_image_prompted(self.clip, pixel_values, prompts).float(), dim=-1)

    def logits(self, pixel_values: torch.Tensor, text_features: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits [B, C]; pass precomputed `text_features` at evaluation to skip the text pass."""
        text = self.text_features() if text_features is None else text_features
        return self.clip.logit_scale.exp().float() * self.image_features(pixel_values) @ text.t()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.logits(pixel_values)

    def train(self, mode: bool = True) -> PFedDCModel:
        super().train(mode)
        self.clip.eval()  # the backbone stays in eval mode (no dropout) while prompts train
        return self

    # ----- state partition
    def _named_state(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for modality in ("text", "vision"):
            learner: PromptLearner | None = getattr(self, modality)
            if learner is None:
                continue
            if learner.global_delta is not None:
                out[f"{modality}.global"] = learner.global_delta
            if learner.local_delta is not None:
                out[f"{modality}.local"] = learner.local_delta
            if learner.fusion is not None:
                for k, v in learner.fusion.state_dict().items():
                    out[f"fusion.{modality}.{k}"] = v
        return out

    def state(self, which: StatePart) -> dict[str, np.ndarray]:
        return {k: v.detach().float().cpu().numpy() for k, v in self._named_state().items()
                if StatePart.of(k) == which}

    def global_state(self) -> dict[str, np.ndarray]:
        return self.state(StatePart.GLOBAL)

    def local_state(self) -> dict[str, np.ndarray]:
        return self.state(StatePart.LOCAL)

    def load_state(self, tensors: dict[str, np.ndarray], which: StatePart) -> None:
        """Copy `tensors` into the global or local part; names and shapes must match exactly."""
        current = {k: v for k, v in self._named_state().items() if StatePart.of(k) == which}
        if sorted(current) != sorted(tensors):
            raise ValueError(f"{which} tensors differ: expected {sorted(current)}, got {sorted(tensors)}")
        with torch.no_grad():
            for name, target in current.items():
                source = torch.from_numpy(np.asarray(tensors[name]))
                if tuple(source.shape) != tuple(target.shape):
                    raise ValueError(f"{which} tensor {name!r}: shape {tuple(source.shape)} != {tuple(target.shape)}")
                target.copy_(source.to(target.dtype))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

