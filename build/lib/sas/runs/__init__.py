"""Experiments: one grid runner, a results store, and the sweeps and comparisons built on them."""
