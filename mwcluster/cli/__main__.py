"""`python -m mwcluster.cli ...`: the same commands as the `mwcluster` script."""

from mwcluster.cli import main

main()
