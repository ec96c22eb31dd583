"""A request the service turns down, with the HTTP status to answer."""

from __future__ import annotations


class Refused(Exception):
    """A request the server will not take; carries the HTTP status and headers to answer with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}
