"""The test suite; a package so that tests and ``python -m benchmarks`` import ``tests.support``."""
