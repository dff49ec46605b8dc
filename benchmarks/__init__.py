"""Speed benchmarks for sas: ``python -m benchmarks.run [--quick] [--sweep]`` (see run.py)."""
