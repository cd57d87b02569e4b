"""`python -m dfc`: the same command line as the `dfc` script."""

from dfc.cli import main

main()
