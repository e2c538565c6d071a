"""`python -m concierge` is `pinniped-concierge`."""

import sys

from concierge.main import main

sys.exit(main())
