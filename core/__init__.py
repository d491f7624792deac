"""Shared infrastructure of imagine-bot, used by bot/, generation/ and moderation/ alike:
configuration, errors, image decoding, the SQLite store and job rows, private files, retention,
metrics, logging (docs/architecture.md lists each module).

Layering: ``bot`` -> {``generation``, ``moderation``} -> ``core``. Nothing in ``core`` imports
``bot``, ``generation`` or ``moderation``, nor discord, torch or diffusers at import time.
"""
