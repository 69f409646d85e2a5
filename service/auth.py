"""API keys: with ``CNN_SERVE_API_KEYS`` set, every request needs ``Authorization: Bearer
<key>`` or ``X-API-Key: <key>`` - except the health probes, CORS preflights and the
``CNN_SERVE_PUBLIC_PATHS`` an operator opens (e.g. the docs or ``/metrics``). Otherwise a 401
in the error shape of the path's API, with ``WWW-Authenticate``.

Keys are compared as SHA-256 digests with :func:`hmac.compare_digest`, against every key
(no early exit), so the time taken says nothing about how close a guess was. Neither keys nor
the headers that carry them are logged.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from starlette.types import Scope

from service.apis import is_probe

if TYPE_CHECKING:
    from service.settings import Settings

CHALLENGE = (b"www-authenticate", b'Bearer realm="cnn-serve"')


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def offered_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
    return None


class ApiKeys:
    """Who may pass: checked by :class:`service.middleware.RequestGate` before the app runs."""

    def __init__(self, keys: list[str], public_paths: list[str], cors: bool) -> None:
        self.cors = cors
        self.digests = [_digest(key) for key in keys]
        self.public = [p.rstrip("/") or "/" for p in public_paths]

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys | None:
        """The settings' keys, or None when no key is set (everything is open)."""
        keys = [k.get_secret_value() for k in settings.api_keys]
        return cls(keys, settings.public_paths, bool(settings.cors_origins)) if keys else None

    def refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        """None when the HTTP request may pass, else the 401's (status, code, message)."""
        return None if self._preflight(scope) else self.refusal_of(scope["path"], scope["headers"])

    def refusal_of(
        self, path: str, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, str, str] | None:
        """The same for any transport: a path (a gRPC method's too) and its headers."""
        if self._is_public(path) or self._authorised(headers):
            return None
        missing = offered_key(headers) is None
        message = (
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            if missing
            else "the API key is not valid"
        )
        return 401, "unauthorized", message

    def _is_public(self, path: str) -> bool:
        if is_probe(path):  # probes must work without secrets
            return True
        return any(path == p or (p != "/" and path.startswith(p + "/")) for p in self.public)

    def _authorised(self, headers: list[tuple[bytes, bytes]]) -> bool:
        key = offered_key(headers)
        if not key:
            return False
        given = _digest(key)
        matches = [hmac.compare_digest(given, digest) for digest in self.digests]
        return any(matches)

    def _preflight(self, scope: Scope) -> bool:
        """A browser's CORS preflight carries no credentials; CORS answers it."""
        return (
            self.cors
            and scope["method"] == "OPTIONS"
            and any(name == b"access-control-request-method" for name, _ in scope["headers"])
        )
