"""`python -m dbguard` runs the command line (same as the `dbguard` console script)."""

from dbguard.cli import main

raise SystemExit(main())
