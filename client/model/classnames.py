"""Can the backbone tell the classes apart by name? Checked before a client joins, so nobody trains at chance.

With a word-level tokenizer, unknown class names all become `[UNK]`: every class prompt is then the same
sequence, every logit ties and the model predicts class 0 forever while the run "succeeds". The same
happens with any tokenizer when two names coincide. Identical or mostly-unknown names stop the client with
an error; class prompts whose text features are nearly identical (cosine above 0.99) are reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .encoder import FrozenEncoder

ZERO_SHOT_TEMPLATE = "a photo of a {}."
MAX_COSINE = 0.99  # text features this alike are one class to the model (also the training collapse check)
ADVICE = ("name the classes in classnames.txt (one name per line, in sorted folder order) or classnames.json "
          "({folder: name}) in the data folder, or use a --model whose tokenizer knows these words")


class ClassNameError(ValueError):
    pass


@dataclass(frozen=True)
class SimilarPair:
    first: str
    second: str
    cosine: float


def check_class_names(backbone: FrozenEncoder, classnames: list[str], max_cosine: float = MAX_COSINE
                      ) -> list[SimilarPair]:
    """Raise ClassNameError for names the model cannot tell apart; return pairs that are nearly so."""
    tokenizer = backbone.tokenizer
    ids = backbone.tokenize([ZERO_SHOT_TEMPLATE.format(c) for c in classnames])
    same: dict[tuple[int, ...], list[str]] = {}
    for name, row in zip(classnames, ids.tolist(), strict=True):
        same.setdefault(tuple(row), []).append(name)
    clashes = [names for names in same.values() if len(names) > 1]
    if clashes:
        raise ClassNameError(f"class names {clashes} give identical token sequences to the tokenizer of "
                             f"{backbone.name!r}, so the model cannot tell them apart: {ADVICE}")
    unk = tokenizer.unk_token_id
    if unk is not None and unk != tokenizer.eos_token_id:  # byte-level BPE has no unknown words
        unknown = []
        for name in classnames:
            pieces = tokenizer(name, add_special_tokens=False)["input_ids"]
            if pieces and sum(p == unk for p in pieces) * 2 > len(pieces):
                unknown.append(name)
        if unknown:
            raise ClassNameError(f"class names {unknown} are mostly unknown words to the tokenizer of "
                                 f"{backbone.name!r}: {ADVICE}")
    with torch.no_grad():
        feats = F.normalize(backbone.encode_token_ids(ids).float(), dim=-1)
    cosine = (feats @ feats.t()).fill_diagonal_(-1.0)
    pairs = [SimilarPair(classnames[i], classnames[j], round(float(cosine[i, j]), 4))
             for i, j in (cosine > max_cosine).nonzero().tolist() if i < j]
    return sorted(pairs, key=lambda p: -p.cosine)
