"""Debian tools some tests drive (chromium, jq): installed with apt when missing, as CI machines start bare."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def ensure(binary: str, *packages: str) -> str:
    """The path of `binary`, installing `packages` (default: a package of the same name) with apt if needed."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail(f"this test needs Debian's {binary}: sudo apt-get install -y {' '.join(packages or (binary,))}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *(packages or (binary,))], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    found = shutil.which(binary)
    assert found, f"apt-get installed {packages or binary} but {binary} is not on PATH"
    return found
