"""Benchmarks. Run each from the repository root as a module, e.g. ``python -m bench.worker``:
that puts the checkout on ``sys.path``, so the benches import ``bench``, ``tests`` (the loopback
Discord, the Redis helper) and the packages without touching ``sys.path`` themselves. They are
not part of the wheel."""
