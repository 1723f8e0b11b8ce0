"""`python -m huref_lab.generator_training COMMAND ...` (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
