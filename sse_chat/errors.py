"""The API's refusals: one exception type, rendered as `{"error", "message"}` JSON."""

from __future__ import annotations

from collections.abc import Mapping


class ApiError(Exception):
    """A request refused with `status`; `code` is machine-readable, `message` for a person."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **details: object,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = details

    def body(self) -> dict[str, object]:
        """The JSON body of the response."""
        return {"error": self.code, "message": self.message, **self.details}


# Codes for the statuses that Quart/Werkzeug raise on their own (unknown route, body too big...).
HTTP_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
}
