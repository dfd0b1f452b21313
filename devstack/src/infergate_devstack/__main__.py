"""`python -m infergate_devstack`: see infergate_devstack.cli."""

import sys

from infergate_devstack.cli import main

sys.exit(main())
