"""The service's domain errors: one base class, answered by one exception handler (app.py)."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service will not answer as asked. ``detail`` names the problem and the fix;
    ``status_code`` is the HTTP status (4xx: the caller's to fix, 503: come back later)."""

    status_code = 422

    def __init__(self, detail: str, status_code: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers


class Unauthorized(ServiceError):
    status_code = 401

    def __init__(self) -> None:
        super().__init__(
            "missing or wrong bearer token (header Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": 'Bearer realm="reward_api"'},
        )


class BodyTooLarge(ServiceError):
    status_code = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than the limit of {limit} bytes (REWARD_API_MAX_BODY_BYTES)")
