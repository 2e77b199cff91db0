"""Regenerate the Python stubs in common/proto/ from protos/pfeddc/v1/*.proto.

Run: python protos/generate.py [--out DIR]. tests/common/test_protos.py regenerates into a temporary
directory and fails when the committed stubs differ, so the stubs never drift from the contract.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT.parent / "common" / "proto"
# protoc writes imports after the proto package (pfeddc.v1); the stubs live in pfeddc.common.proto.
_IMPORT = re.compile(r"^from pfeddc\.v1 import (\w+) as", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc  # dev-only dependency

    protos = sorted((PROTO_ROOT / "pfeddc" / "v1").glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p) for p in protos],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {protos}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for src in sorted((Path(tmp) / "pfeddc" / "v1").iterdir()):
            text = _IMPORT.sub(r"from pfeddc.common.proto import \1 as", src.read_text())
            dst = out_dir / src.name
            dst.write_text(text)
            written.append(dst)
    init = out_dir / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated gRPC stubs of protos/pfeddc/v1 (python protos/generate.py)."""\n')
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
