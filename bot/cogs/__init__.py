"""Slash-command cogs: ``imagine`` (the main command and reaction shortcuts), ``user`` (queue,
settings, help, stats) and ``policy`` (moderators)."""
