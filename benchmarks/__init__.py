"""``make bench``: Conveyor against Celery and against the floor, on one moto server.

Run ``python -m benchmarks`` (``--quick`` for a tiny smoke run). Every AWS call of every
system goes through one counting, latency-injecting proxy (:mod:`benchmarks.proxy`) in
front of one moto process, so requests per task are counted the same way for all and
the 15 ms runs add the same delay to all. The report goes to docs/BENCHMARKS.md.
"""
