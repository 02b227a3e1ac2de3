"""`python -m omi_receiver.devtools.simulate FILE.wav --url URL --uid U ...` (cli.py)."""

import sys

from omi_receiver.devtools.simulate.cli import main

sys.exit(main())
