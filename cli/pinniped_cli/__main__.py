"""`python -m pinniped_cli` runs the same command as the `pinniped` console script."""

from pinniped_cli.main import main

raise SystemExit(main())
