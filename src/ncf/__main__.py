"""``python -m ncf``: the command line (also what ``torchrun -m ncf`` starts on every rank)."""

import sys

from ncf.cli import main

sys.exit(main())
