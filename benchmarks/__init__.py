"""Reproducible benchmarks of meshgate against baselines measured in the same run.

``python -m benchmarks`` lists them; ``python -m benchmarks <name> --help`` tells how to run one.
"""
