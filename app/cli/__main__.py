"""`python -m app.cli`: the same as `herald`."""

import sys

from app.cli.main import main

sys.exit(main())
