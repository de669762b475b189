"""A grammar- and mutation-based SQL fuzzer run through the real server (issue 11).

``python -m tests.fuzz --statements 10000`` runs a full campaign; ``tests/test_fuzz.py`` runs a
quick seeded subset in the normal suite.
"""
