"""Benchmarks of asyncsnn, run on purpose rather than by the test suite.

``python -m benchmarks`` compares asyncsnn with snnTorch (see :mod:`benchmarks.suite`);
``python benchmarks/bench_engine.py`` times the asynchronous engine alone.
"""
