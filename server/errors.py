"""Errors raised by the server; each subclasses :class:`ServerError` and a builtin."""

from panicbutton.errors import PanicbuttonError


class ServerError(PanicbuttonError):
    """Base class for server errors."""


class SettingsError(ServerError, ValueError):
    """An environment setting is missing or unsafe; the message says which and why."""


class SiteError(ServerError, ValueError):
    """The site file (rooms, devices, staff, duty, escalation) is wrong."""


class NotifierError(ServerError, RuntimeError):
    """A message could not be handed to the provider.

    ``code`` is the provider's error code when it gave one (Twilio: 21211 invalid
    number, 21610 opted out, 21617 body too long, ...), ``retryable`` says whether
    trying the same recipient again may help, and ``retry_after`` is how many
    seconds the provider asked us to wait first (its ``Retry-After`` on a 429), or
    None.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after


class PeopleError(ServerError, ValueError):
    """A change to people, roles or sign-in that cannot be made; the message says why."""
