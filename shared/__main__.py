"""``python -m shared score FILE.jsonl --url ...``: the same as ``python -m shared.cli``."""

import sys

from shared.cli import main

sys.exit(main())
