"""Run the MovieLens demo with ``python -m app.demo``."""

import sys

from app.demo.cli import main

sys.exit(main())
