"""Benchmarks of a grid, for measuring one's own deployment (``htcgrid bench``).

:mod:`~htcgrid.benchmark.runs` holds the workloads, :mod:`~htcgrid.benchmark.churn` the
worker-killing one (W6), :mod:`~htcgrid.benchmark.measure` what is read besides wall time
(memory, CPU, the machine) and :mod:`~htcgrid.benchmark.driver` the repetitions in fresh
child processes and the JSON record of their median. The workloads are described in
docs/benchmarks.md.

This package imports nothing itself: executors import :mod:`~htcgrid.benchmark.runs` for
the warm-up handler, and a slow import there would count as a slow task and throttle the
workers' prefetch for the first second of the timed run.
"""
