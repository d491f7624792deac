# Discord-shaped tokens are masked in the logs of every process that runs bot code.
from bot import redaction as _redaction  # noqa: F401
