"""embeddb benchmarks: each measures embeddb and the raw driver in the same run.

Run all: ``python -m benchmarks`` (``--quick`` for smaller sizes, ``-k NAME`` to filter).
"""
