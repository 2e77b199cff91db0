"""`ClientOptions`: what the daemon is told, and the `pfeddc-client` flags made from it.

Every default of the client is written here once, as `TrainSettings` does for training: a field with `help`
metadata is a flag (`state_dir` -> `--state-dir`) whose default and help come from the field; the others are
derived by the app from several flags (the TLS files, the token, the training overrides). Torch-free: the
command line is parsed and checked before the model libraries load.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..common.transport import TlsFiles
from .connection import Backoff
from .folders import DEFAULT_TEST_FRACTION


@dataclass(frozen=True)
class ClientOptions:
    data: Path = field(metadata={"type": Path, "help": "ImageFolder of private images: DIR/<class>/*.png, or "
                                                       "DIR/train/<class> + DIR/test/<class>"})
    server: str = field(metadata={"type": str, "help": "coordinator address HOST:PORT"})
    state_dir: Path = field(default=Path("~/.pfeddc/client"), metadata={
        "help": "this client's own state: id, local prompts, fusion modules, history (default: %(default)s)"})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu, cuda, cuda:1, ..."})
    model: str | None = field(default=None, metadata={"type": str, "help": (
        "CLIP backbone: hub name or local directory with model and tokenizer; default: the one the coordinator "
        "announces ('embedded' unless it says otherwise)")})
    allow_download: bool = field(default=False, metadata={
        "help": "let transformers download a hub model that is not cached (off by default)"})
    seed: int = field(default=0, metadata={
        "help": "seeds the held-out split and local prompt init (with the client id) (default: %(default)s)"})
    test_fraction: float = field(default=DEFAULT_TEST_FRACTION, metadata={
        "help": "held-out fraction per class when DIR has no train/test split; chosen once and recorded "
                "(default: %(default)s)"})
    client_id: str | None = field(default=None, metadata={"type": str, "help": (
        "identity at the coordinator (default: the common name of --tls-cert, else generated once; kept in the "
        "state dir)")})
    client_id_source: str = "--client-id"  # or the certificate it was read from, for messages
    tls: TlsFiles = TlsFiles()  # --tls-ca, --tls-cert, --tls-key
    token: str | None = field(default=None, metadata={"type": str, "help": (
        "client token issued by the federation (visible to other users in the process list: prefer --token-file)")})
    max_retries: int = field(default=Backoff.max_attempts, metadata={
        "help": "attempts to reach the coordinator before giving up, with exponential backoff and jitter; "
                "0 = forever (default: %(default)s)"})
    progress: bool | None = field(default=None, metadata={
        "action": argparse.BooleanOptionalAction, "help": "progress bars (default: on a terminal)"})
    eval_every: int = field(default=1, metadata={
        "help": "measure test accuracy (personalized, and the global prompts alone) every N rounds, and always in "
                "the last; it costs a forward pass over the test split (default: %(default)s)"})
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainSettings fields set on the command line

    def progress_bars(self) -> bool:
        return sys.stderr.isatty() if self.progress is None else self.progress

    @classmethod
    def flag_fields(cls) -> dict[str, Field[Any]]:
        return {f.name: f for f in fields(cls) if "help" in f.metadata}


def add_option_flags(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """The flags of the `ClientOptions` fields `names`, in that order, with their defaults and help."""
    flags = ClientOptions.flag_fields()
    for name in names:
        f = flags[name]
        kwargs: dict[str, Any] = {"help": f.metadata["help"]}
        if f.default is MISSING:
            kwargs.update(type=f.metadata["type"], required=True)
        elif "action" in f.metadata:
            kwargs.update(action=f.metadata["action"], default=f.default)
        elif isinstance(f.default, bool):
            kwargs.update(action="store_true", default=f.default)
        else:
            kwargs.update(type=f.metadata.get("type", type(f.default)), default=f.default)
        parser.add_argument(f"--{name.replace('_', '-')}", **kwargs)


def options_from(args: argparse.Namespace, **derived: Any) -> ClientOptions:
    """The options of every flag field `args` holds, with the `derived` ones (tls, token, overrides, ...)."""
    given = {name: getattr(args, name) for name in ClientOptions.flag_fields() if hasattr(args, name)}
    return ClientOptions(**{**given, **derived})
