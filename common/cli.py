"""Flags shared by the command-line tools, with their defaults read from the domain types.

The coordinator, the client, pfeddc-sim and the benchmarks all describe prompt layouts, training settings and
logging with these flags, so their names, help texts and defaults can never drift apart.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .logs import DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, LOG_FORMATS
from .messages import TrainSettings
from .spec import METHODS, SECURE_DEFAULT_METHOD, Fusion, FusionQuery, PromptConfig


def add_log_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=DEFAULT_LOG_FORMAT,
                        help="auto: readable on a terminal, JSON lines otherwise (default: %(default)s)")
    parser.add_argument("--log-level", default=DEFAULT_LOG_LEVEL,
                        help="debug, info, warning or error (default: %(default)s)")


def add_prompt_flags(parser: argparse.ArgumentParser, with_method: bool = True) -> None:
    d = PromptConfig()
    g = parser.add_argument_group("prompt layout (sent to every client)")
    if with_method:
        g.add_argument("--method", choices=list(METHODS), default=None,
                       help="pfeddc: the class head (the federation's discriminant from pooled class statistics, "
                            "and each site's correction); pfeddc-prompts: the class head plus the paper's global and "
                            "local text and vision prompts fused by cross-attention; promptfl: federated text "
                            "prompts; coop: local text prompts only; vision-only: pFedDC's vision side; zeroshot: no "
                            "training; pfeddc-no*: ablations, one part removed each (docs/method.md) "
                            f"(default: {d.method}; with --secure-aggregation {SECURE_DEFAULT_METHOD}: under the "
                            "masks one hostile site's residual rows cannot be bounded)")
    g.add_argument("--text-ctx", type=int, default=d.text_ctx,
                   help="learnable text context tokens (default: %(default)s)")
    g.add_argument("--text-init", default=d.text_init,
                   help="phrase the text context starts from; used when its token count equals --text-ctx "
                        "(default: %(default)r)")
    g.add_argument("--vision-tokens", type=int, default=d.vision_tokens,
                   help="learnable vision prompt tokens per prompted layer, read through gated attention "
                        "(default: %(default)s)")
    g.add_argument("--vision-depth", type=int, default=d.vision_depth,
                   help="encoder layers that get their own vision prompts: 1 = shallow, >1 = deep "
                        "(default: %(default)s)")
    g.add_argument("--fusion", choices=list(Fusion), default=None,
                   help="how global and local prompts combine; default: the method's (attention for "
                        "pfeddc-prompts)")
    g.add_argument("--fusion-query", choices=list(FusionQuery), default=str(d.fusion_query),
                   help="which prompts query the other side in the cross-attention (default: %(default)s)")
    g.add_argument("--fusion-heads", type=int, default=d.fusion_heads,
                   help="attention heads of the fusion modules (default: %(default)s)")
    g.add_argument("--classes", default="",
                   help="the federation's class names, comma-separated or a file with one per line: sites label their "
                        "images by this list (folder names matched ignoring case, '_' and '-') and share the class "
                        "head's statistics by it (default: none; the coordinator gathers the list from the classes "
                        "the sites name at Join, fixed when the first round opens)")


def default_method(secure_aggregation: bool) -> str:
    """The method a federation runs when `--method` is not given: the class head with its shared residual, except
    under secure aggregation. There the coordinator bounds only the sum of a residual row, and honest sites' changes
    of a row cancel in it, so the slack is one hostile site's: it moved rows 19-99x the largest honest site's
    influence and cost honest sites 2.3-7.4 points, where plain rounds bound each site's row (2.6x at most;
    benchmarks/results/attack_head_secure.md and attack_head.md)."""
    return SECURE_DEFAULT_METHOD if secure_aggregation else PromptConfig.method


def prompt_config_from(args: argparse.Namespace, method: str | None = None) -> PromptConfig:
    """The layout the flags describe; `method` (else `--method`, else the default for the federation's mode)."""
    method = method or getattr(args, "method", None) or default_method(bool(getattr(args, "secure_aggregation", False)))
    return PromptConfig(method=method, text_ctx=args.text_ctx, vision_tokens=args.vision_tokens,
                        vision_depth=args.vision_depth, fusion=args.fusion, fusion_query=args.fusion_query,
                        fusion_heads=args.fusion_heads, text_init=args.text_init, classes=parse_classes(args.classes))


def parse_classes(value: str) -> tuple[str, ...]:
    """`--classes`: a file with one name per line (blank lines ignored), or a comma-separated list."""
    if not value:
        return ()
    path = Path(value).expanduser()
    if path.is_file():
        return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if "/" in value or value.startswith("~") or value.endswith(".txt"):
        raise ValueError(f"--classes {value!r} looks like a file but there is no such file")
    return tuple(c.strip() for c in value.split(",") if c.strip())


def prompt_flags(config: PromptConfig) -> list[str]:
    """The flags that reproduce `config` on another tool's command line (method excluded)."""
    flags = ["--text-ctx", str(config.text_ctx), "--text-init", config.text_init,
             "--vision-tokens", str(config.vision_tokens), "--vision-depth", str(config.vision_depth),
             "--fusion-query", str(config.fusion_query), "--fusion-heads", str(config.fusion_heads)]
    return flags + (["--fusion", str(config.fusion)] if config.fusion else [])


def add_train_flags(parser: argparse.ArgumentParser, overrides: bool = False) -> None:
    """One flag per `TrainSettings` field: the coordinator's defaults, or (overrides=True) a client's overrides."""
    defaults = TrainSettings()
    title = "override the coordinator's training settings" if overrides else "training settings sent to clients"
    group = parser.add_argument_group(title)
    for f in TrainSettings.flag_fields():
        value = getattr(defaults, f.name)
        suffix = " (default: the coordinator's)" if overrides else " (default: %(default)s)"
        group.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=None if overrides else value,
                           help=f.metadata["help"] + suffix)


def train_settings_from(args: argparse.Namespace, base: TrainSettings | None = None) -> TrainSettings:
    """`base` (default: the defaults) with every train flag that was given applied."""
    return (base or TrainSettings()).with_overrides(**train_overrides_from(args))


def train_overrides_from(args: argparse.Namespace) -> dict[str, object]:
    return {f.name: getattr(args, f.name) for f in TrainSettings.flag_fields()}


def train_flags(settings: TrainSettings) -> list[str]:
    """The flags that reproduce `settings` on another tool's command line."""
    out: list[str] = []
    for f in TrainSettings.flag_fields():
        out += [f"--{f.name.replace('_', '-')}", str(getattr(settings, f.name))]
    return out
