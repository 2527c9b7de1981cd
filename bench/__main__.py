"""``python -m bench``: the same as ``python bench/bench.py``."""

import sys

from bench.bench import main

sys.exit(main())
