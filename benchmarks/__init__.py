"""Benchmarks of the solver layer, run by ``python -m benchmarks`` (``make bench``).

They are not tests: they print measured figures (sample efficiency of the
active allocation, fit time and memory) for the record in docs/benchmarks.md.
"""
