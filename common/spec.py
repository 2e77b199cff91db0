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
    head: Placement = Placement.NONE  # the class head (client/model/head.py): shared statistics, personal part
    residual: bool = False  # with a class head: its shared residual (head.residual, client/model/residual.py)

    @property
    def shares(self) -> bool:
        """Whether its federation shares any tensor (zeroshot shares none: there is no sum to aggregate or hide)."""
        return self.text.has_global or self.vision.has_global or self.head.has_global


METHODS: dict[str, MethodLayout] = {
    # shipped: the class head (federated statistics, their shared residual, each site's correction); docs/method.md
    "pfeddc": MethodLayout(Placement.NONE, Placement.NONE, Fusion.SUM, Placement.DUAL, residual=True),
    # the paper's dual prompts in both modalities with cross-attention fusion, on top of the class head
    "pfeddc-prompts": MethodLayout(Placement.DUAL, Placement.DUAL, Fusion.ATTENTION, Placement.DUAL),
    "promptfl": MethodLayout(Placement.GLOBAL, Placement.NONE, Fusion.SUM),
    "coop": MethodLayout(Placement.LOCAL, Placement.NONE, Fusion.SUM),
    "vision-only": MethodLayout(Placement.NONE, Placement.DUAL, Fusion.ATTENTION),
    "zeroshot": MethodLayout(Placement.NONE, Placement.NONE, Fusion.SUM),
    # ablations, one part removed each: of the shipped head, then of pfeddc-prompts
    "pfeddc-noresidual": MethodLayout(Placement.NONE, Placement.NONE, Fusion.SUM, Placement.DUAL),
    "pfeddc-nopersonal": MethodLayout(Placement.NONE, Placement.NONE, Fusion.SUM, Placement.GLOBAL, residual=True),
    "pfeddc-nofusion": MethodLayout(Placement.DUAL, Placement.DUAL, Fusion.SUM, Placement.DUAL),
    "pfeddc-novision": MethodLayout(Placement.DUAL, Placement.NONE, Fusion.ATTENTION, Placement.DUAL),
    "pfeddc-notext": MethodLayout(Placement.NONE, Placement.DUAL, Fusion.ATTENTION, Placement.DUAL),
    "pfeddc-nolocal": MethodLayout(Placement.GLOBAL, Placement.GLOBAL, Fusion.SUM, Placement.GLOBAL),
    "pfeddc-noproto": MethodLayout(Placement.DUAL, Placement.DUAL, Fusion.ATTENTION),  # no class head (issue 11)
}
# `--method` under --secure-aggregation when none is given: the class head without its residual, whose rows the
# coordinator cannot bound per site under the masks (common/cli.py `default_method`)
SECURE_DEFAULT_METHOD = "pfeddc-noresidual"


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
    def head(self) -> Placement:
        """The class head over the image features (client/model/head.py): GLOBAL/DUAL share its statistics when
        the federation names its classes; LOCAL/DUAL add each site's personal correction."""
        return METHODS[self.method].head

    @property
    def residual(self) -> bool:
        """Whether the class head has its shared residual (head.residual, client/model/residual.py)."""
        return self.head != Placement.NONE and METHODS[self.method].residual

    @property
    def shared_classes(self) -> bool:
        """Whether the class head's statistics are federated: needs the federation's class list."""
        return self.head.has_global and bool(self.classes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"] = list(self.classes)
        return {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# The class head's shared tensors (client/model/head.py sends them, server/pipeline/statistics.py bounds the
# statistics): their names on the wire, the calibration's ranges, (log T, w), and the residual's values.
HEAD_STATISTICS = ("counts", "sums", "moment", "calibration", "residual")
LOG_TEMPERATURE_RANGE = (-5.0, 5.0)
TEXT_WEIGHT_RANGE = (0.0, 1.0)
RESIDUAL_RANGE = (-100.0, 100.0)


def head_key(statistic: str, part: str = "global") -> str:
    """The tensor name of a class-head statistic: shared (`global`) or kept on the site (`local`)."""
    return f"head.{statistic}.{part}"


# Shared tensors whose rows are the federation's classes: the coordinator bounds each row's change on its own
# (server/pipeline/clipping.py), so no site can spend a whole tensor's bound on one class.
CLASS_ROW_TENSORS = frozenset({head_key("residual")})


# Shared tensors a newer pfeddc added to an existing method: a checkpoint made before them resumes with them at their
# initial values (as a new federation starts them); any other difference from the spec is refused.
ADDED_BY_UPGRADE = frozenset({head_key("residual")})


def class_rows(spec: list[TensorSpec]) -> dict[str, int]:
    """The class-row tensors of `spec` and their numbers of rows."""
    return {s.name: s.shape[0] for s in spec if s.name in CLASS_ROW_TENSORS}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "F32"
    bounds: tuple[float, float] | None = field(default=None, compare=False)  # the values an update may hold

    def describe(self) -> str:
        return f"{self.name}{list(self.shape)}:{self.dtype}"


def global_spec(dims: BackboneDims, cfg: PromptConfig) -> list[TensorSpec]:
    """The federated tensors of a model with these dims and prompt settings, sorted by name.

    text.global: context offsets [tokens, width]; vision.global: prompt tokens [depth, tokens, width];
    vision.gate.global: how much each prompted layer's heads attend to the prompts [depth, heads];
    head.counts.global [classes], head.sums.global [classes, projection], head.moment.global [projection,
    projection], head.calibration.global [2], head.residual.global [classes, projection + 1]: the class head's
    statistics as means over a site's images, its calibration and its discriminative residual (rows and biases,
    client/model/head.py), when the federation names its classes. The statistics' bounds hold for any honest
    site: fractions, and means of unit vectors.
    """
    if cfg.vision != Placement.NONE and cfg.vision_depth > dims.vision_layers:
        raise ValueError(f"vision_depth {cfg.vision_depth} exceeds the backbone's {dims.vision_layers} layers")
    specs = []
    if cfg.text.has_global:
        specs.append(TensorSpec("text.global", (cfg.text_ctx, dims.text_hidden)))
    if cfg.shared_classes:
        classes = len(cfg.classes)
        width = dims.projection
        specs.append(TensorSpec(head_key("counts"), (classes,), bounds=(0.0, 1.0)))
        specs.append(TensorSpec(head_key("sums"), (classes, width), bounds=(-1.0, 1.0)))
        specs.append(TensorSpec(head_key("moment"), (width, width), bounds=(-1.0, 1.0)))
        specs.append(TensorSpec(head_key("calibration"), (2,), bounds=LOG_TEMPERATURE_RANGE))
        if cfg.residual:
            specs.append(TensorSpec(head_key("residual"), (classes, width + 1), bounds=RESIDUAL_RANGE))
    if cfg.vision.has_global:
        specs.append(TensorSpec("vision.global", (cfg.vision_depth, cfg.vision_tokens, dims.vision_hidden)))
        specs.append(TensorSpec("vision.gate.global", (cfg.vision_depth, dims.vision_heads)))
    return sorted(specs, key=lambda s: s.name)


def spec_difference(expected: list[TensorSpec], got: list[TensorSpec]) -> str | None:
    """None when equal, else a message naming the first tensor that differs."""
    exp = {s.name: s for s in expected}
    have = {s.name: s for s in got}
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


# A federation's class list: at most this many names of at most this many characters (a Join carries them while
# the coordinator gathers its list; --classes for longer lists).
MAX_CLASSES = 1000
MAX_CLASS_NAME_CHARS = 64


def merged_classes(lists: list[tuple[str, ...]]) -> tuple[str, ...]:
    """The federation's class list gathered from the sites' own: every class any of them names, once (matched by
    `class_key`), in the order of their keys, spelled as the first site to name it spells it."""
    names: dict[str, str] = {}
    for names_of_site in lists:
        for name in names_of_site:
            names.setdefault(class_key(name), name.strip())
    return tuple(names[k] for k in sorted(names))


def classes_outside(federation: tuple[str, ...], site: tuple[str, ...]) -> list[str]:
    """The site's class names that the federation's list lacks (matched by `class_key`)."""
    known = {class_key(c) for c in federation}
    return [c for c in site if class_key(c) not in known]


def class_names_problem(names: tuple[str, ...]) -> str | None:
    """Why a Join's class names cannot be taken, or None."""
    if len(names) > MAX_CLASSES:
        return f"{len(names)} class names exceed the limit of {MAX_CLASSES}"
    bad = [n for n in names if not n.strip() or len(n) > MAX_CLASS_NAME_CHARS]
    if bad:
        return f"class names must be non-empty and at most {MAX_CLASS_NAME_CHARS} characters: {bad[:3]!r}"
    return None


def initial_prompts(specs: list[TensorSpec], seed: int) -> dict[str, np.ndarray]:
    """Seeded starting values of the global tensors, torch-free so the coordinator can create them.

    The starting global model is exactly zero-shot CLIP: text prompts are offsets from the embedding of the
    init phrase ("a photo of a"), zero; vision prompts are read through gates that start closed (zero).
    The vision prompt tokens themselves are random at unit scale (LayerNorm'd before use): distinct tokens
    break the symmetry identical tokens would never leave. The class head's statistics start at zero (no
    image seen yet: the head is zero-shot CLIP until the first round's statistics arrive).
    """
    rng = np.random.default_rng(seed)
    return {s.name: (rng.standard_normal(s.shape) if s.name == "vision.global" else np.zeros(s.shape)
                     ).astype(np.float32) for s in specs}
