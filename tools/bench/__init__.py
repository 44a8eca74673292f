"""keybound.tools.bench.

``keybound bench``, figures timed against baselines in alternating rounds.
"""
