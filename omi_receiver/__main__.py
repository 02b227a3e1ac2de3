"""`python -m omi_receiver ...`: the same as the `omi-receiver` command (cli.py)."""

import sys

from omi_receiver.ops.cli import main

sys.exit(main())
