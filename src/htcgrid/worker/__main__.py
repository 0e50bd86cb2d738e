"""``python -m htcgrid.worker --store URL``: the same as ``htcgrid worker``."""

import sys

from htcgrid.cli.main import main

main(args=["worker", *sys.argv[1:]], prog_name="htcgrid")
