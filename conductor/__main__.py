"""``python -m conductor``: the same CLI as the ``conductor`` command."""

import sys

from conductor.cli import main

sys.exit(main())
