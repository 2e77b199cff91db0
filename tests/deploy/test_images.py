"""The Dockerfiles' promises, read from the files: locked dependencies before the source, two stages and no pip
in the runtime, OCI labels, the base pinned by digest; and the locks agree with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {"coordinator": "coordinator.txt", "client": "client.txt"}


def stages(dockerfile: str) -> list[str]:
    return re.split(r"^FROM ", dockerfile, flags=re.M)[1:]


def locked(name: str) -> dict[str, str]:
    text = (ROOT / "deploy" / "requirements" / name).read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\", text, flags=re.M))
    blocks = re.findall(r"^[A-Za-z0-9_.-]+==\S+ \\\n((?:    --hash=sha256:[0-9a-f]{64}.*\n)+)", text, flags=re.M)
    assert len(blocks) == len(pins), f"{name}: every pin needs its hashes"
    return {k.lower().replace("_", "-"): v for k, v in pins.items()}


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_is_multi_stage_locked_labelled_and_pinned(image: str) -> None:
    text = (ROOT / "deploy" / f"{image}.Dockerfile").read_text()
    default_base = re.search(r"^ARG BASE=(\S+)", text, flags=re.M)
    assert default_base and re.search(r"@sha256:[0-9a-f]{64}$", default_base.group(1))
    build, runtime = stages(text)
    lock = f"deploy/requirements/{IMAGES[image]}"
    assert build.index(f"COPY {lock}") < build.index("--require-hashes") < build.index("COPY common")
    assert "uninstall --yes --quiet pip setuptools" in build
    assert "pip install" not in runtime and "COPY --from=build /opt/pfeddc /opt/pfeddc" in runtime
    assert "USER 10001:10001" in runtime and "site-packages/pip" in runtime
    for label in ("title", "description", "source", "licenses", "version", "revision", "base.name"):
        assert f"org.opencontainers.image.{label}=" in runtime, label
    if image == "coordinator":
        assert "pfeddc/client" in build and "COPY client" not in runtime  # no client code in the runtime


@pytest.mark.parametrize(("extras", "lock"), [((), "coordinator.txt"), (("client",), "client.txt")])
def test_locks_satisfy_pyproject(extras: tuple[str, ...], lock: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    pins = locked(lock)
    for req in wanted:
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{lock} lacks {req.name}: run deploy/lock.sh"
        assert req.specifier.contains(pins[name], prereleases=True), f"{lock}: {name}=={pins[name]} vs {req}"
    assert ("torch" in pins) == bool(extras) and pins.get("torch", "+cpu").endswith("+cpu")


def test_the_coordinator_image_sets_the_allocator_as_the_coordinator_does() -> None:
    """The image sets server/ops/process.py's allocator options in its environment (from the process's first
    allocation; `main` sets them later): the same values, so neither drifts from the other."""
    from pfeddc.server.ops.process import ALLOCATOR

    text = (ROOT / "deploy" / "coordinator.Dockerfile").read_text()
    runtime = stages(text)[1]
    env = dict(re.findall(r"\b(MALLOC_[A-Z_]+)=(\d+)", runtime))
    assert env == {name: str(value) for name, (_option, value) in ALLOCATOR.items()}
