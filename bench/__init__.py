"""Herald benchmarks: relay throughput, replay time, end-to-end latency (`python -m bench`).

Importing the package sets this run's environment first (bench/env.py): its own
Socket.IO channels, Celery queues and secret, before anything reads settings.
"""

from bench import env  # noqa: F401
