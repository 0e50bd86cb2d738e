"""The ``htcgrid`` command line."""
