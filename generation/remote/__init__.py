"""Scale-out: GPU workers in other processes (or machines), fed over Redis Streams.

Why Redis Streams and not a home-made protocol: consumer groups already give pending entries,
acknowledgements and ``XAUTOCLAIM`` (a dead consumer's entries handed to another), and the
append-only file makes them survive a Redis restart. The bot keeps what must be decided in one
place (the SQLite store, the fair-share scheduler, post-processing with the instance keys); the
workers only denoise. ``protocol`` names the keys and scripts both sides share, ``dispatcher``
is the bot side (with ``roster`` and ``results``), ``gpu_worker`` the worker process
(``imagine-bot worker``, with ``job_stream``).
"""
