"""Which prompt tensors exist, their names, shapes and dtypes: the contract the coordinator checks.

Torch-free on purpose: the coordinator derives the spec of the *global* prompts from a model's
`config.json` (or a built-in table) and the prompt settings, and refuses clients whose model disagrees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

import numpy as np

from .backbones import BackboneDims

# No prompt value is ever this large (CLIP's token embeddings and residual stream stay orders of magnitude
# below): a client stops training before exceeding it, the coordinator refuses it (--max-abs-value; 3e38
# survives a finiteness check and turns the average into 1e38).
MAX_ABS_VALUE = 1e4


class Placement(StrEnum):
    """Where a modality's prompts live: nowhere, federated only, on the client only, or both fused."""

    NONE = "none"
    GLOBAL = "global"
    LOCAL = "local"
    DUAL = "dual"

    @property
    def has_global(self) -> bool:
        return self in (Placement.GLOBAL, Placement.DUAL)

    @property
    def has_local(self) -> bool:
        return self in (Placement.LOCAL, Placement.DUAL)


class Fusion(StrEnum):
    """How a dual placement combines its global and local prompts."""

    ATTENTION = "attention"
    SUM = "sum"
    CONCAT = "concat"


class FusionQuery(StrEnum):
    LOCAL = "local"
    GLOBAL = "global"


@dataclass(frozen=True)
class MethodLayout:
    text: Placement
    vision: Placement
    fusion: Fusion
    prototypes: bool = False  # class embeddings started from each site's class means of image features


METHODS: dict[str, MethodLayout] = {
    "pfeddc": MethodLayout(Placement.DUAL, Placement.DUAL, Fusion.ATTENTION, prototypes=True),
    "promptfl": MethodLayout(Placement.GLOBAL, Placement.NONE, Fusion.SUM),
    "coop": MethodLayout(Placement.LOCAL, Placement.NONE, Fusion.SUM),
    "vision-only": MethodLayout(Placement.NONE, Placement.DUAL, Fusion.ATTENTION),
    "zeroshot": MethodLayout(Placement.NONE, Placement.NONE, Fusion.SUM),
    # ablations of pfeddc, one part removed each
    "pfeddc-nofusion": MethodLayout(Placement.DUAL, Placement.DUAL, Fusion.SUM, prototypes=True),
    "pfeddc-novision": MethodLayout(Placement.DUAL, Placement.NONE, Fusion.ATTENTION, prototypes=True),
    "pfeddc-nolocal": MethodLayout(Placement.GLOBAL, Placement.GLOBAL, Fusion.SUM, prototypes=True),
    "pfeddc-noproto": MethodLayout(Placement.DUAL, Placement.DUAL, Fusion.ATTENTION),
}


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are laid out. `method` picks a preset; `fusion` overrides the preset's fusion."""

    method: str = "pfeddc"
    text_ctx: int = 4
    vision_tokens: int = 4
    vision_depth: int = 1
    fusion: Fusion | None = None
    fusion_query: FusionQuery = FusionQuery.GLOBAL
    fusion_heads: int = 1
    text_init: str = "a photo of a"
    classes: tuple[str, ...] = ()  # the federation's class list, in label order: shares the class embeddings

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c).strip() for c in self.classes))
        if any(not c for c in self.classes):
            raise ValueError("classes must be non-empty names")
        keys = [class_key(c) for c in self.classes]
        if len(set(keys)) != len(keys):
            twice = sorted({c for c, k in zip(self.classes, keys, strict=True) if keys.count(k) > 1})
            raise ValueError(f"classes must be distinct; named more than once: {', '.join(twice)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        try:  # accept plain strings (JSON, flags) and store the enums
            if self.fusion is not None:
                object.__setattr__(self, "fusion", Fusion(self.fusion))
        except ValueError:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose one of {', '.join(Fusion)}") from None
        try:
            object.__setattr__(self, "fusion_query", FusionQuery(self.fusion_query))
        except ValueError:
            raise ValueError(f"fusion_query must be 'local' or 'global', got {self.fusion_query!r}") from None
        for name in ("text_ctx", "vision_tokens", "vision_depth", "fusion_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def text(self) -> Placement:
        return METHODS[self.method].text

    @property
    def vision(self) -> Placement:
        return METHODS[self.method].vision

    @property
    def fusion_kind(self) -> Fusion:
        return self.fusion or METHODS[self.method].fusion

    @property
    def prototypes(self) -> bool:
        """Class embeddings on the text side, started from each site's class means (see client/model/classes.py)."""
        return METHODS[self.method].prototypes and self.text != Placement.NONE

    @property
    def shared_classes(self) -> bool:
        """Whether the class embeddings are also federated: needs the federation's class list."""
        return self.prototypes and self.text.has_global and bool(self.classes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"] = list(self.classes)
        return {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "F32"
    bounds: tuple[float, float] | None = field(default=None, compare=False)  # the values an update may hold

    def describe(self) -> str:
        return f"{self.name}{list(self.shape)}:{self.dtype}"


CLASS_SHARE_FLOOR = 1e-3  # a site's share of a class it does not hold (client/model/classes.py): never 0


def global_spec(dims: BackboneDims, cfg: PromptConfig) -> list[TensorSpec]:
    """The federated tensors of a model with these dims and prompt settings, sorted by name.

    text.global: context offsets [tokens, width]; vision.global: prompt tokens [depth, tokens, width];
    vision.gate.global: how much each prompted layer's heads attend to the prompts [depth, heads];
    text.classes.global, text.classes.share.global: the shared class embeddings [classes, projection] times each
    site's share of the class, and that share [classes], when the federation names its classes.
    """
    if cfg.vision != Placement.NONE and cfg.vision_depth > dims.vision_layers:
        raise ValueError(f"vision_depth {cfg.vision_depth} exceeds the backbone's {dims.vision_layers} layers")
    specs = []
    if cfg.text.has_global:
        specs.append(TensorSpec("text.global", (cfg.text_ctx, dims.text_hidden)))
    if cfg.shared_classes:  # rows times each site's share of the class, and the share (client/model/classes.py)
        specs.append(TensorSpec("text.classes.global", (len(cfg.classes), dims.projection)))
        specs.append(TensorSpec("text.classes.share.global", (len(cfg.classes),), bounds=(CLASS_SHARE_FLOOR, 1.0)))
    if cfg.vision.has_global:
        specs.append(TensorSpec("vision.global", (cfg.vision_depth, cfg.vision_tokens, dims.vision_hidden)))
        specs.append(TensorSpec("vision.gate.global", (cfg.vision_depth, dims.vision_heads)))
    return sorted(specs, key=lambda s: s.name)


def spec_difference(expected: list[TensorSpec], got: list[TensorSpec]) -> str | None:
    """None when equal, else a message naming the first tensor that differs."""
    exp, have = {s.name: s for s in expected}, {s.name: s for s in got}
    for name in sorted(exp.keys() | have.keys()):
        if name not in have:
            return f"tensor {name!r} is missing: expected {exp[name].describe()}"
        if name not in exp:
            return f"tensor {name!r} is not part of the federation's spec (got {have[name].describe()})"
        if exp[name] != have[name]:
            return f"tensor {name!r} differs: expected {exp[name].describe()}, got {have[name].describe()}"
    return None


def class_key(name: str) -> str:
    """How class names are matched across sites: case, spaces, '_' and '-' do not matter."""
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def initial_prompts(specs: list[TensorSpec], seed: int) -> dict[str, np.ndarray]:
    """Seeded starting values of the global tensors, torch-free so the coordinator can create them.

    The starting global model is exactly zero-shot CLIP: text prompts are offsets from the embedding of the
    init phrase ("a photo of a"), zero; vision prompts are read through gates that start closed (zero).
    The vision prompt tokens themselves are random at unit scale (LayerNorm'd before use): distinct tokens
    break the symmetry identical tokens would never leave. Class embeddings start at zero: the first site
    that holds a class fills its row from its own images.
    """
    rng = np.random.default_rng(seed)
    return {s.name: (rng.standard_normal(s.shape) if s.name == "vision.global" else np.zeros(s.shape)
                     ).astype(np.float32) for s in specs}


def weighted_mean_only(spec: list[TensorSpec]) -> str | None:
    """Why this spec needs the plain weighted mean (FedAvg, no DP), or None. Shared class rows travel as rows x
    share and the share (client/model/classes.py): only the ratio of two weighted means is a class-weighted
    mean; a median or trimmed mean of each is not, and DP noise on the share is divided into the rows."""
    if any(s.name == "text.classes.share.global" for s in spec):
        return ("the federation shares class embeddings (--classes): they are averaged by class through the plain "
                "weighted mean, which --aggregator median/trimmed-mean and DP noise would break; run without "
                "--classes (each site keeps its class rows) to use them")
    return None
