"""The shipped tokenizer is OpenAI CLIP's byte-level BPE, rebuilt offline, and tells any two names apart."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from pfeddc.client.embedded import WEIGHTS_DIR
from tools.embedded.build import load_tokenizer
from tools.embedded.tokenizer import VOCAB_SIZE, read_merges, write_tokenizer_files


def test_tokenizer_is_clips_bpe_with_its_known_ids() -> None:
    tok = load_tokenizer(WEIGHTS_DIR)
    assert len(tok) == VOCAB_SIZE == 49408
    # ids of openai/clip-vit-base-patch16 (and of OpenAI's SimpleTokenizer) for this caption
    assert tok("a photo of a dog")["input_ids"] == [49406, 320, 1125, 539, 320, 1929, 49407]
    assert tok.eos_token_id == 49407 and tok.model_max_length == 77


def test_tokenizer_gives_arbitrary_class_names_distinct_ids() -> None:
    tok = load_tokenizer(WEIGHTS_DIR)
    names = ["pneumonia", "golden retriever", "Ölfleck", "x-ray 2", "x-ray 3", "ankle boot", "t shirt", "épée"]
    ids = [tuple(tok(f"a photo of a {n}.")["input_ids"]) for n in names]
    assert len(set(ids)) == len(names)
    assert all(tok.unk_token_id not in i[1:-1] for i in ids)  # byte-level: nothing is unknown


def test_tokenizer_files_are_rebuilt_byte_for_byte_from_the_merges(tmp_path: Path) -> None:
    shipped = (WEIGHTS_DIR / "merges.txt").read_text(encoding="utf-8")
    bpe = tmp_path / "bpe.txt.gz"
    with gzip.open(bpe, "wt", encoding="utf-8") as fh:  # the layout of OpenAI's file: a header, then merges
        fh.write(shipped.replace("#version: 0.2", "bpe_simple_vocab_16e6.txt#version: 0.2", 1) + "\nextra merge")
    write_tokenizer_files(bpe, tmp_path / "out")
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / "out" / name).read_bytes() == (WEIGHTS_DIR / name).read_bytes(), name


def test_tokenizer_refuses_a_file_that_is_not_clips_merges(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write("#version\na b\nc d\n")
    with pytest.raises(ValueError, match="48894 merges"):
        read_merges(bad)
