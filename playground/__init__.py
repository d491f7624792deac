"""``imagine-bot playground``: the whole bot in a browser, no Discord account or token needed.

The real bot (``bot.runner.run``: store, worker, moderation, watermark, delivery) talks to the
built-in Discord stand-in (``playground.emulator``), and a small web page (``playground.web``)
shows its server, channels and DMs and lets a visitor act as any of its members.
"""
