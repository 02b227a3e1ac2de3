"""`python -m bench.soak` (make soak): see cli.py."""

import sys

from bench.soak.cli import main

sys.exit(main())
