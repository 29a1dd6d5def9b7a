"""Entry point of ``python -m cgru``; see ``cgru.cli``."""
import sys

from cgru.cli import main

sys.exit(main())
