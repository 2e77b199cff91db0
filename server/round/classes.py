"""The federation's class list: given by --classes, kept by a resumed checkpoint, or gathered from the Joins.

A coordinator started without a list, for a method whose class head is shared, gathers it: each site names its
classes at Join (FederationInfo.classes_pending tells it to), and when round 1 opens the list is fixed as every
class the active sites named, once. The class head's tensors join the spec then, at their initial values; the
list is saved with the round's checkpoint, so a restart keeps it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...common.logs import Event
from ...common.spec import TensorSpec, class_key, initial_prompts, merged_classes
from .state import FederationState

SpecFor = Callable[[tuple[str, ...]], list[TensorSpec]]  # the spec of a class list


def class_list(given: tuple[str, ...], saved: tuple[str, ...], where: str) -> tuple[str, ...]:
    """--classes (`given`), else the list a resumed federation saved (the two must agree); empty: none (yet)."""
    if given and saved and [class_key(c) for c in saved] != [class_key(c) for c in given]:
        raise ValueError(f"the federation in {where} runs with the classes {list(saved)}, not --classes "
                         f"{list(given)}: use the list it was made with, or a new --state-dir")
    return given or saved


def agree(state: FederationState, active: list[str], spec_for: SpecFor, seed: int, log: Callable[..., None]
          ) -> list[TensorSpec]:
    """Fix `state`'s class list from the classes the `active` sites named, adding the tensors it brings at their
    initial values; returns the new spec."""
    classes = merged_classes([state.clients[c].class_names for c in active])
    spec = spec_for(classes)
    added = [s for s in spec if s.name not in state.global_tensors]
    extra: dict[str, np.ndarray] = initial_prompts(added, seed)
    state.global_tensors, state.classes = {**state.global_tensors, **extra}, classes
    log("info", Event.CLASSES_AGREED, classes=list(classes), sites=active, tensors=[s.describe() for s in added])
    return spec


class ClassList:
    """The spec the federation runs with, and (while it gathers its class list) how to grow it once."""

    def __init__(self, spec: list[TensorSpec], spec_for: SpecFor | None, fixed: bool) -> None:
        self.spec = spec
        self._spec_for = None if fixed else spec_for

    @property
    def pending(self) -> bool:
        return self._spec_for is not None

    def agree(self, state: FederationState, active: list[str], seed: int, log: Callable[..., None]) -> bool:
        """While pending: fix the list from the `active` sites (`agree` above); True when it grew the state."""
        if self._spec_for is None:
            return False
        self.spec, self._spec_for = agree(state, active, self._spec_for, seed, log), None
        return True
