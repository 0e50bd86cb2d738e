"""One benchmark repetition in a fresh process (see :mod:`htcgrid.benchmark.driver`)."""

import sys

from htcgrid.benchmark.driver import child_main

sys.exit(child_main())
