from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pfeddc.common import serde
from pfeddc.common.backbones import resolve_dims
from pfeddc.common.spec import PromptConfig, TensorSpec, global_spec, initial_prompts


def test_encode_decode_round_trip_is_exact_and_deterministic() -> None:
    tensors: dict[str, np.ndarray] = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones((1,), np.float16)}
    payload = serde.encode(tensors)
    assert payload == serde.encode(dict(reversed(list(tensors.items()))))
    back = serde.decode(payload)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)


def test_decode_refuses_garbage() -> None:
    with pytest.raises(serde.InvalidTensors, match="not valid safetensors"):
        serde.decode(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")


def test_validate_names_the_first_difference() -> None:
    spec = [TensorSpec("a", (2,)), TensorSpec("b", (3,))]
    with pytest.raises(serde.InvalidTensors, match="'b' is missing"):
        serde.validate({"a": np.zeros(2, np.float32)}, spec)
    with pytest.raises(serde.InvalidTensors, match="'a' differs"):
        serde.validate({"a": np.zeros(3, np.float32), "b": np.zeros(3, np.float32)}, spec)


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "dir" / "x.safetensors"
    serde.save_file(target, {"a": np.zeros(3, np.float32)})
    serde.save_file(target, {"a": np.ones(3, np.float32)})
    assert np.array_equal(serde.load_file(target)["a"], np.ones(3))
    assert os.listdir(target.parent) == ["x.safetensors"]


@pytest.mark.parametrize("links", [True, False])
def test_a_write_that_must_not_replace_keeps_the_first_file_even_without_hard_links(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, links: bool) -> None:
    """How a site's signing key is made: of two writers, the first wins; both leave no temp; the file is 0600
    (on a file system without hard links, by an exclusive create)."""
    if not links:
        def no_links(src: object, dst: object) -> None:
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "key.pem"
    serde.atomic_write(target, b"first", replace=False)
    serde.atomic_write(target, b"second", replace=False)
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["key.pem"]
    assert target.stat().st_mode & 0o777 == 0o600


def test_spec_from_known_and_embedded_models() -> None:
    hub = global_spec(resolve_dims("openai/clip-vit-base-patch16"), PromptConfig("pfeddc-prompts", text_ctx=16,
                                                                                 vision_tokens=8, vision_depth=12))
    assert [(s.name, s.shape) for s in hub] == [("text.global", (16, 512)), ("vision.gate.global", (12, 12)),
                                                ("vision.global", (12, 8, 768))]
    assert global_spec(resolve_dims("embedded"), PromptConfig(method="coop")) == []
    with pytest.raises(ValueError, match="exceeds"):
        global_spec(resolve_dims("embedded"), PromptConfig("pfeddc-prompts", vision_depth=99))
    with pytest.raises(ValueError, match="known hub name"):
        resolve_dims("no/such-model")


def test_initial_prompts_are_seeded() -> None:
    spec = [TensorSpec("text.global", (2, 4)), TensorSpec("vision.global", (1, 2, 4))]
    a, b = initial_prompts(spec, 1), initial_prompts(spec, 1)
    assert np.array_equal(a["vision.global"], b["vision.global"]) and not a["text.global"].any()
    assert not np.array_equal(a["vision.global"], initial_prompts(spec, 2)["vision.global"])


def test_encoded_file_is_its_bytes_with_the_metadata_added_and_reads_back(tmp_path: Path) -> None:
    tensors: dict[str, np.ndarray] = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones(5, np.float16)}
    encoded = serde.Encoded.of(tensors)
    assert encoded.tensors is tensors and encoded.sha256 == serde.sha256(serde.encode(tensors))
    serde.save_file(tmp_path / "t.safetensors", encoded, metadata={"round": "3"})
    raw = (tmp_path / "t.safetensors").read_bytes()
    assert raw.endswith(encoded.payload[8 + int.from_bytes(encoded.payload[:8], "little"):])  # data reused as is
    assert int.from_bytes(raw[:8], "little") % 8 == 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "t.safetensors"), framework="numpy") as fh:
        assert fh.metadata() == {"round": "3"}
        np.testing.assert_array_equal(fh.get_tensor("b"), tensors["b"])
    back = serde.load_file(tmp_path / "t.safetensors")
    assert serde.sha256(serde.encode(back)) == encoded.sha256


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_non_finite_value_anywhere_is_found_and_counted(bad: float) -> None:
    """One bad value among finite ones, at the start, the middle or the end of a tensor, is named and counted."""
    spec = [TensorSpec("a", (3, 4), "F32"), TensorSpec("b", (5,), "F32")]
    values = {"a": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "b": np.arange(5, dtype=np.float32)}
    assert serde.decode_as(serde.encode(values), spec)["a"][2, 3] == 1.0
    for position in (0, 7, 11):
        poisoned = {**values, "a": values["a"].copy()}
        poisoned["a"].flat[position] = bad
        with pytest.raises(serde.InvalidTensors, match="'a' holds 1 NaN or Inf values"):
            serde.decode_as(serde.encode(poisoned), spec)
