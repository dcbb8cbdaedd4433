"""Errors a user can act on.

Every failure that reaches a user carries a `hint` that says what to do next; the CLI
prints it and the API returns it in the JSON body, so nobody ever sees a traceback for
a condition we anticipated.
"""

from __future__ import annotations


class TunestackError(Exception):
    """A failure with a message for humans and a hint for the next step."""

    status_code = 400

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, str]:
        out = {"error": type(self).__name__, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class NotFound(TunestackError):
    status_code = 404


class BadInput(TunestackError):
    status_code = 422


class ServiceUnavailable(TunestackError):
    """A peer service (Chroma, the LLM server) is down; `service` names which."""

    status_code = 503

    def __init__(self, service: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.service = service

    def to_dict(self) -> dict[str, str]:
        out = super().to_dict()
        out["service"] = self.service
        return out


class UpstreamTimeout(ServiceUnavailable):
    """A peer answered too slowly (504): it is up, so "unreachable" would mislead."""

    status_code = 504


class Conflict(TunestackError):
    """The request is valid but cannot be done in the current state (the hint says how)."""

    status_code = 409


class EmbedderMismatch(Conflict):
    pass


class Busy(TunestackError):
    """Too much work queued right now; `retry_after` seconds is a fair wait (429)."""

    status_code = 429

    def __init__(self, message: str, hint: str | None = None, retry_after: int = 5) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after
