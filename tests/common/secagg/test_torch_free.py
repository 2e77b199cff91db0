"""Secure aggregation runs in the coordinator's image: no torch, no transformers."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration  # starts a real process


def test_secagg_imports_without_torch() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['transformers'] = None\n"
        "import pfeddc.server.round.secagg_coordinator, pfeddc.client.secagg_site\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
