"""``python -m benchmarks [--quick] [--json]``: asyncsnn against snnTorch."""

import sys

from .suite import main

sys.exit(main())
