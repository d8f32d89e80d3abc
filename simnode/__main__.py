"""`python -m simnode` (`make node`): one simulated node through its whole life."""

import sys

from simnode.life import main

sys.exit(main())
