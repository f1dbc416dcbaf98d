"""``python -m coregister`` runs the command line."""

import sys

from coregister.cli import main

sys.exit(main())
