"""The pFedDC model: a frozen dual encoder, global and local prompts per modality, and their fusion.

Only prompts, vision gates and fusion modules are parameters; the backbone is frozen. Every trainable tensor
is either *global* (sent to the coordinator, averaged) or *local* (never leaves the client), named
`<modality>.<part>` or `fusion.<modality>.<...>`. Local tensors start at zero (fusion: output projection at
zero), so a client with a fresh local state computes exactly the global model, and the first global model
computes exactly the zero-shot backbone. The backbone is reached only through `FrozenEncoder`
(client/model/encoder.py), so CLIP and SigLIP run the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from enum import StrEnum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...common.messages import TrainSettings
from ...common.spec import Placement, PromptConfig, global_spec, initial_prompts
from .classnames import ZERO_SHOT_TEMPLATE
from .encoder import FrozenEncoder
from .fusion import PromptFusion
from .head import ClassHead

MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(logit_scale) at 100; every backbone is clamped alike


class StatePart(StrEnum):
    """The two halves of the trainable state: sent to the coordinator, or kept on the client."""

    GLOBAL = "global"
    LOCAL = "local"

    @classmethod
    def of(cls, name: str) -> StatePart:
        return cls.GLOBAL if name.endswith(".global") else cls.LOCAL


class PromptLearner(nn.Module):
    """One modality's prompts: offsets from a frozen base [D, n, d], global and/or local, fused when dual."""

    base: torch.Tensor

    def __init__(self, modality: str, placement: Placement, base: torch.Tensor, fusion: PromptFusion | None,
                 global_init: np.ndarray, gate_heads: int = 0) -> None:
        """`global_init` has the shape the offsets are stored (and sent) in; `base` is [D, n, d]."""
        super().__init__()
        self.modality = modality
        self.placement = placement
        self.fusion = fusion
        self.register_buffer("base", base, persistent=False)
        init = torch.from_numpy(global_init).clone()
        self.global_delta = nn.Parameter(init) if placement.has_global else None
        self.local_delta = nn.Parameter(torch.zeros_like(init)) if placement.has_local else None
        self.gate = nn.Parameter(torch.zeros(base.shape[0], gate_heads)) if gate_heads else None

    def forward(self) -> torch.Tensor:
        base = self.base
        g = self.global_delta.view_as(base) if self.global_delta is not None else torch.zeros_like(base)
        loc = self.local_delta.view_as(base) if self.local_delta is not None else torch.zeros_like(base)
        if self.fusion is not None:
            return self.fusion(base, g, loc)
        return base + g + loc

    def named_tensors(self) -> dict[str, torch.Tensor]:
        m = self.modality
        part = "global" if self.placement.has_global else "local"
        out: dict[str, torch.Tensor] = {}
        if self.global_delta is not None:
            out[f"{m}.global"] = self.global_delta
        if self.local_delta is not None:
            out[f"{m}.local"] = self.local_delta
        if self.gate is not None:
            out[f"{m}.gate.{part}"] = self.gate
        if self.fusion is not None:
            out.update({f"fusion.{m}.{k}": v for k, v in self.fusion.state_dict(keep_vars=True).items()})
        return out


class PFedDCModel(nn.Module):
    fixed_text_features: torch.Tensor
    text_prefix: torch.Tensor
    text_suffix: torch.Tensor
    text_eos: torch.Tensor  # where the text pass pools each class prompt (CLIP: its end-of-text token)

    def __init__(self, backbone: FrozenEncoder, classnames: list[str], cfg: PromptConfig, seed: int = 0) -> None:
        super().__init__()
        if not classnames:
            raise ValueError("the model needs at least one class name")
        if cfg.classes and list(classnames) != list(cfg.classes):
            raise ValueError(f"the model's classes {list(classnames)} differ from the federation's {list(cfg.classes)}")
        self.backbone = backbone
        self.cfg = cfg
        self.classnames = list(classnames)  # backbone: a frozen submodule
        dims = backbone.dims
        self.spec = global_spec(dims, cfg)
        global_init = initial_prompts(global_spec(dims, replace(cfg, method="pfeddc-prompts")), seed)

        def fusion(width: int, placement: Placement) -> PromptFusion | None:
            if placement != Placement.DUAL:
                return None
            with torch.random.fork_rng(devices=[]):  # the fusion's initial weights follow `seed`, nothing else
                torch.manual_seed(seed + width)
                return PromptFusion(cfg.fusion_kind, width, cfg.fusion_heads, cfg.fusion_query)

        self.text: PromptLearner | None = None
        if cfg.text != Placement.NONE:
            text_fusion = fusion(dims.text_hidden, cfg.text)
            self.text = PromptLearner("text", cfg.text, self._text_base(cfg.text_ctx, dims.text_hidden)[None],
                                      text_fusion, global_init["text.global"])
            self._build_text_template(text_fusion.tokens_out(cfg.text_ctx) if text_fusion else cfg.text_ctx)
        else:
            with torch.no_grad():
                ids = backbone.tokenize([ZERO_SHOT_TEMPLATE.format(c) for c in self.classnames])
                feats = backbone.encode_token_ids(ids)
            self.register_buffer("fixed_text_features", feats, persistent=False)

        self.head: ClassHead | None = None
        if cfg.head != Placement.NONE:
            self.head = ClassHead(len(self.classnames), dims.projection, cfg.shared_classes, cfg.head.has_local,
                                  cfg.residual)

        self.vision: PromptLearner | None = None
        if cfg.vision != Placement.NONE:
            base = torch.zeros(cfg.vision_depth, cfg.vision_tokens, dims.vision_hidden)
            self.vision = PromptLearner("vision", cfg.vision, base, fusion(dims.vision_hidden, cfg.vision),
                                        global_init["vision.global"], gate_heads=dims.vision_heads)

    # ----- construction helpers
    def _text_base(self, n_ctx: int, width: int) -> torch.Tensor:
        """Embeddings of the init phrase when it has exactly n_ctx tokens, else seeded random (same everywhere)."""
        words = self.backbone.word_ids(self.cfg.text_init)
        with torch.no_grad():
            if len(words) == n_ctx:
                return self.backbone.token_embedding(words).clone()
            return 0.02 * torch.randn(n_ctx, width, generator=torch.Generator().manual_seed(0))

    def _build_text_template(self, n_tokens: int) -> None:
        """Token embeddings of 'X X ... X {class}.' split around the X's, as frozen buffers."""
        placeholder = " ".join(["X"] * n_tokens)
        ids, pool = self.backbone.text_inputs([f"{placeholder} {c}." for c in self.classnames])
        start = self.backbone.text_start
        with torch.no_grad():
            emb = self.backbone.token_embedding(ids)
        self.register_buffer("text_prefix", emb[:, :start].clone(), persistent=False)  # [C, start, d] (start token)
        self.register_buffer("text_suffix", emb[:, start + n_tokens:].clone(), persistent=False)  # [C, *, d] class...
        self.register_buffer("text_eos", pool, persistent=False)

    # ----- forward
    def text_features(self) -> torch.Tensor:
        """L2-normalized prompted text features of every class: [C, proj]. One text pass for all classes."""
        return F.normalize(self.prompt_text_features().float(), dim=-1)

    def prompt_text_features(self) -> torch.Tensor:
        """The prompted text features (not normalized): [C, proj]."""
        if self.text is None:
            feats = self.fixed_text_features
        else:
            ctx = self.text()[0]  # [n, d]
            prefix = self.text_prefix
            suffix = self.text_suffix
            embeds = torch.cat([prefix, ctx.unsqueeze(0).expand(prefix.shape[0], -1, -1).to(prefix.dtype), suffix],
                               dim=1)
            feats = self.backbone.encode_text(embeds, self.text_eos)
        return feats

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        v = self.vision
        prompts, gates = (v(), v.gate) if v is not None else (None, None)
        return F.normalize(self.backbone.encode_image(pixel_values, prompts, gates).float(), dim=-1)

    def logits(self, pixel_values: torch.Tensor | None, text_features: torch.Tensor | None = None,
               image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits [B, C]: the text term, then the class head (client/model/head.py); precomputed
        `text_features` (evaluation) or `image_features` (no vision prompts: the frozen image tower gives the same
        features every epoch) skip that tower's pass."""
        text = self.text_features() if text_features is None else text_features
        if image_features is None:
            assert pixel_values is not None, "logits need pixels or image features"
            image_features = self.image_features(pixel_values)
        text_logits = self.logit_scale() * image_features @ text.t()
        return self.head(image_features, text_logits) if self.head is not None else text_logits

    def logit_scale(self) -> float:
        return min(self.backbone.logit_scale(), MAX_LOGIT_SCALE)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.logits(pixel_values)

    # ----- state partition
    def _named_state(self) -> dict[str, torch.Tensor]:
        parts = (self.text, self.head, self.vision)
        return {k: v for part in parts if part is not None for k, v in part.named_tensors().items()}

    def state(self, which: StatePart) -> dict[str, np.ndarray]:
        """The tensors as they are stored and sent (the head's statistics: this site's own, see head.py)."""
        return {k: v.detach().float().cpu().numpy().copy() for k, v in self._named_state().items()
                if StatePart.of(k) == which}

    def global_state(self) -> dict[str, np.ndarray]:
        return self.state(StatePart.GLOBAL)

    def local_state(self) -> dict[str, np.ndarray]:
        return self.state(StatePart.LOCAL)

    def load_state(self, tensors: dict[str, np.ndarray], which: StatePart) -> None:
        """Copy `tensors` into the global or local part; names and shapes must match exactly. The head's
        statistics among them become the ones it classifies with."""
        current = {k: v for k, v in self._named_state().items() if StatePart.of(k) == which}
        if sorted(current) != sorted(tensors):
            raise ValueError(f"{which} tensors differ: expected {sorted(current)}, got {sorted(tensors)}")
        statistics = set(self.head.stat_names().values()) if self.head is not None else set()
        with torch.no_grad():
            for name, target in current.items():
                source = torch.from_numpy(np.asarray(tensors[name]))
                if tuple(source.shape) != tuple(target.shape):
                    raise ValueError(f"{which} tensor {name!r}: shape {tuple(source.shape)} != {tuple(target.shape)}")
                if name not in statistics:
                    target.copy_(source.to(target.dtype))
        if self.head is not None and statistics <= set(tensors):
            self.head.load_statistics({name: torch.from_numpy(np.asarray(tensors[name])) for name in statistics})

    @contextmanager
    def global_only(self) -> Iterator[PFedDCModel]:
        """The global model as a new client would compute it: every local tensor at zero, then restored."""
        saved = self.local_state()
        self.load_state({k: np.zeros_like(v) for k, v in saved.items()}, StatePart.LOCAL)
        try:
            yield self
        finally:
            self.load_state(saved, StatePart.LOCAL)

    # ----- training
    def param_groups(self, settings: TrainSettings) -> list[dict[str, Any]]:
        """Text prompts at `lr`, vision prompts and gates at `lr_vision`, fusion modules at `lr_fusion` (the class
        head is not trained by SGD: its shared part is a closed form, its personal part the probe's)."""
        groups: dict[str, list[nn.Parameter]] = {"lr": [], "lr_vision": [], "lr_fusion": []}
        for name, tensor in self._named_state().items():
            if isinstance(tensor, nn.Parameter) and tensor.requires_grad and not name.startswith("head."):
                key = "lr_fusion" if name.startswith("fusion.") else "lr_vision" if name.startswith("vision.") else "lr"
                groups[key].append(tensor)
        return [{"params": params, "lr": getattr(settings, key), "name": key} for key, params in groups.items()
                if params]
