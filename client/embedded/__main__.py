"""`python -m pfeddc.client.embedded`: build (or find) the embedded backbone and print its report."""

import sys

from .build import main

sys.exit(main())
