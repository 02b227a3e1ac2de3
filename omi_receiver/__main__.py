"""`python -m omi_receiver ...`: the same as the `omi-receiver` command (cli.py)."""

import sys

from .cli import main

sys.exit(main())
