"""The hot-swap engine: the seed's IModelHotSwapper contract in Python, free of Django.

The engine talks to its ports (`ports.py`); each port has an in-process implementation
(one process, unit tests) and a Redis-backed fleet implementation (many replicas).
"""
