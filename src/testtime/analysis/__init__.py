"""Compute-optimal analysis of runs: difficulty, the cross-validated table, curves, report,
sweeps and the adaptive solver (see the "Compute-optimal analysis" section of
docs/architecture.md). Modules import numpy/matplotlib lazily where they can."""
