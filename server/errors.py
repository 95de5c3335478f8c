"""Errors raised by the server; each subclasses :class:`ServerError` and a builtin."""


class ServerError(Exception):
    """Base class for server errors."""


class SettingsError(ServerError, ValueError):
    """An environment setting is missing or unsafe; the message says which and why."""


class SiteError(ServerError, ValueError):
    """The site file (rooms, devices, staff, duty, escalation) is wrong."""


class NotifierError(ServerError, RuntimeError):
    """A message could not be handed to the provider.

    ``code`` is the provider's error code when it gave one (Twilio: 21211 invalid
    number, 21610 opted out, ...), ``retryable`` says whether trying the same
    recipient again may help.
    """

    def __init__(self, message: str, *, code: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
