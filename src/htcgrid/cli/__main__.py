"""``python -m htcgrid.cli``: the same as the ``htcgrid`` command."""

from htcgrid.cli.main import main

main(prog_name="htcgrid")
