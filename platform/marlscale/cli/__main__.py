"""`python -m marlscale.cli`: the `marlscale` command."""

import sys

from marlscale.cli import main

sys.exit(main())
