"""`python -m pinniped_concierge` is `pinniped-concierge`."""

import sys

from pinniped_concierge.main import main

sys.exit(main())
