"""Names the backbone cannot tell apart stop a client before it trains at chance; near-twins are reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests_support import TINY_CONFIG
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

from pfeddc.client.model.backbone import Backbone, load_backbone
from pfeddc.client.model.classnames import ClassNameError, check_class_names


def word_level_backbone(tmp_path: Path) -> Backbone:
    """A tiny CLIP with a word-level tokenizer that knows only a handful of words (like the old embedded one)."""
    words = ["[PAD]", "<|startoftext|>", "[UNK]", "<|endoftext|>", "a", "photo", "of", "shirt", "boot", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 1), ("<|endoftext|>", 3)])
    config = {**TINY_CONFIG, "text_config": {**TINY_CONFIG["text_config"], "vocab_size": len(words),
                                             "bos_token_id": 1, "eos_token_id": 3, "pad_token_id": 0}}
    CLIPModel(CLIPConfig.from_dict(config)).save_pretrained(tmp_path)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                            pad_token="[PAD]", unk_token="[UNK]").save_pretrained(tmp_path)
    return load_backbone(str(tmp_path))


def test_classnames_identical_token_sequences_stop_the_client_naming_them(tiny_backbone: Backbone) -> None:
    with pytest.raises(ClassNameError, match=r"\['ankle boot', 'ankle  boot'\].*classnames.txt"):
        check_class_names(tiny_backbone, ["ankle boot", "ankle  boot", "shirt"])


def test_classnames_unknown_to_a_word_level_tokenizer_stop_the_client(tmp_path: Path) -> None:
    backbone = word_level_backbone(tmp_path)
    with pytest.raises(ClassNameError, match="identical token sequences"):
        check_class_names(backbone, ["pneumonia", "fracture", "shirt"])  # both unknown: the same [UNK]
    with pytest.raises(ClassNameError, match=r"\['golden retriever'\] are mostly unknown words"):
        check_class_names(backbone, ["golden retriever", "shirt", "boot"])
    assert isinstance(check_class_names(backbone, ["shirt", "boot"]), list)


def test_classnames_with_nearly_identical_text_features_are_reported(tiny_backbone: Backbone) -> None:
    names = ["pneumonia", "golden retriever", "x-ray 2"]
    assert check_class_names(tiny_backbone, names, max_cosine=1.01) == []
    with torch.no_grad():  # a text tower whose output ignores its input: every class prompt looks the same
        layer_norm = tiny_backbone.clip.text_model.final_layer_norm
        layer_norm.weight.zero_()
        layer_norm.bias.fill_(1.0)
    pairs = check_class_names(tiny_backbone, names)
    assert {(p.first, p.second) for p in pairs} == {(names[0], names[1]), (names[0], names[2]), (names[1], names[2])}
    assert all(p.cosine > 0.99 for p in pairs)
