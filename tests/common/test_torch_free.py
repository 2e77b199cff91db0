"""The coordinator and common/ must import and run without torch or transformers installed."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration  # starts real processes


def test_server_imports_without_torch() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"  # makes any `import torch` raise ImportError
        "sys.modules['transformers'] = None\n"
        "import pfeddc.server.app, pfeddc.client.connection, pfeddc.server.ops.certs\n"
        "pfeddc.server.app.build_parser().parse_args(['--rounds', '1'])\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
