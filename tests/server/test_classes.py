"""The federation's class list: gathered from the sites' Joins as round 1 opens, or fixed by --classes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pfeddc.common.backbones import resolve_dims
from pfeddc.common.messages import Code, Refused
from pfeddc.common.spec import (
    MAX_CLASS_NAME_CHARS,
    MAX_CLASSES,
    PromptConfig,
    TensorSpec,
    global_spec,
    initial_prompts,
)
from pfeddc.server.round.federation import Federation, FederationConfig, FederationState

DIMS = resolve_dims("embedded")
PROMPT = PromptConfig()  # the shipped method: a class head, no prompts


def spec_for(classes: tuple[str, ...]) -> list[TensorSpec]:
    return global_spec(DIMS, replace(PROMPT, classes=classes))


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def gathering(min_clients: int = 2) -> Federation:
    spec = spec_for(())
    return Federation(FederationConfig(rounds=2, min_clients=min_clients), spec,
                      FederationState(1, initial_prompts(spec, 0), {}), clock=Clock(), spec_for=spec_for)


def test_class_list_is_the_union_of_the_sites_fixed_as_round_one_opens() -> None:
    fed = gathering()
    assert fed.classes_pending and fed.spec == [] and fed.classes == ()
    fed.join("a", 10, [], class_names=("Cat", "dog"))
    assert fed.task("a").action == "wait" and fed.classes_pending  # one site: round 1 cannot open yet
    fed.join("b", 10, [], class_names=("ankle_boot", "cat"))  # 'cat' is 'Cat' (matched ignoring case)
    task = fed.task("a")
    assert task.action == "train" and not fed.classes_pending
    assert fed.classes == ("ankle_boot", "Cat", "dog")  # ordered by key, spelled as first named
    assert {s.name for s in fed.spec} == {"head.calibration.global", "head.counts.global", "head.moment.global",
                                          "head.residual.global", "head.sums.global"}
    assert fed.global_tensors["head.sums.global"].shape == (3, DIMS.projection)
    assert fed.global_tensors["head.residual.global"].shape == (3, DIMS.projection + 1)
    assert not any(v.any() for v in fed.global_tensors.values())  # the head starts with no statistics


def test_a_site_outside_a_fixed_list_is_refused_naming_the_class() -> None:
    fed = gathering()
    fed.join("a", 10, [], class_names=("cat",))
    fed.join("b", 10, [], class_names=("dog",))
    fed.task("a")
    with pytest.raises(Refused) as info:
        fed.join("c", 10, fed.spec, class_names=("cat", "zebra"))
    assert info.value.code is Code.FAILED_PRECONDITION and "zebra" in info.value.message
    fed.join("d", 10, fed.spec, class_names=("Dog",))  # a subset is welcome


def test_a_site_still_on_the_gathering_spec_is_told_what_changed() -> None:
    fed = gathering()
    fed.join("a", 10, [], class_names=("cat",))
    fed.join("b", 10, [], class_names=("dog",))
    fed.task("a")
    with pytest.raises(Refused, match="head.calibration.global"):
        fed.join("a", 10, [], class_names=("cat",))  # it must ask for the federation again and rebuild


def test_class_names_are_bounded() -> None:
    fed = gathering()
    with pytest.raises(Refused, match=f"at most {MAX_CLASS_NAME_CHARS} characters"):
        fed.join("a", 10, [], class_names=("x" * (MAX_CLASS_NAME_CHARS + 1),))
    with pytest.raises(Refused, match="exceed the limit"):
        fed.join("a", 10, [], class_names=tuple(f"c{i}" for i in range(MAX_CLASSES + 1)))


def test_a_federation_started_with_classes_does_not_gather() -> None:
    spec = spec_for(("cat", "dog"))
    state = FederationState(1, initial_prompts(spec, 0), {}, classes=("cat", "dog"))
    fed = Federation(FederationConfig(rounds=1), spec, state, clock=Clock(), spec_for=spec_for)
    assert not fed.classes_pending and fed.classes == ("cat", "dog")
    assert np.array_equal(fed.global_tensors["head.counts.global"], np.zeros(2, np.float32))
