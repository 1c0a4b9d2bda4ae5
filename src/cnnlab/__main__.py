"""``python -m cnnlab``: the same as the ``cnnlab`` console script."""

import sys

from .cli import main

sys.exit(main())
