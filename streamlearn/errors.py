"""One root for every error streamlearn raises on purpose.

Bad *data* never raises: a malformed message becomes a rejected record with a reason (see
``ingest``). Exceptions are for the edges — a bad config file, an unreadable checkpoint — where the
operator has to act.
"""

from __future__ import annotations


class StreamlearnError(Exception):
    """Root of all streamlearn errors."""


class ConfigError(StreamlearnError):
    """A configuration value is missing, unknown or of the wrong type.

    The message always names the file, the key and what was expected, so the operator can fix it
    without reading code.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.key = key
        where = ""
        if source is not None:
            where = f"{source}: "
        if key is not None:
            where += f"{key}: "
        super().__init__(where + message)


class CheckpointError(StreamlearnError):
    """A checkpoint could not be written, or none that can be trusted could be read."""


class BrokerError(StreamlearnError):
    """The embedded broker could not be found, started or reached."""
