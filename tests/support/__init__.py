"""Test support that is not part of the product: helpers the tests (and the ROS benchmark) share.

Import as ``tests.support.<module>`` from the repository root (pytest puts the root on sys.path
because ``tests`` is a package; ``python -m benchmarks`` runs from the root).
"""
