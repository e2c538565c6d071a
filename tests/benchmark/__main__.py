"""`python -m tests.benchmark`: see `tests.benchmark.runner`."""

from tests.benchmark.runner import main

raise SystemExit(main())
