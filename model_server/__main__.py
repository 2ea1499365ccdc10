"""`python -m model_server serve ...`: the same as the `model-server` console script."""

import sys

from model_server.cli import main

sys.exit(main())
