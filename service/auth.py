"""Who may do what, for every transport: inference keys, admin keys and the doors that change
what is served.

- With ``CNN_SERVE_API_KEYS`` set, every request needs ``Authorization: Bearer <key>`` or
  ``X-API-Key: <key>`` (an admin key also does) - except the health probes, CORS preflights
  and the ``CNN_SERVE_PUBLIC_PATHS`` an operator opens. Otherwise a 401 in the error shape of
  the path's API, with ``WWW-Authenticate``.
- The management doors (:data:`MANAGEMENT`: uploads, load, unload, reload) are refused (403)
  while closed by the settings (uploads off, model control ``none``: the defaults), and when
  open take an admin key (``CNN_SERVE_ADMIN_KEYS``) only: none is a 401, an inference key a
  403. They are never public.

Keys are compared as SHA-256 digests with :func:`hmac.compare_digest`, against every key
(no early exit), so the time taken says nothing about how close a guess was. Neither keys nor
the headers that carry them are logged; the access line says which kind of key acted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TYPE_CHECKING, Literal

from starlette.types import Scope

from service.apis import is_probe

if TYPE_CHECKING:
    from service.settings import Settings

CHALLENGE = (b"www-authenticate", b'Bearer realm="cnn-serve"')
KeyKind = Literal["admin", "inference"]
Refusal = tuple[int, str, str]

# the doors that change what is served, REST (POST) and gRPC alike -> the door's name
UPLOADS, CONTROL = "uploads", "control"
MANAGEMENT = (
    (re.compile(r"/models/[^/]+/versions"), UPLOADS),
    (re.compile(r"/models/[^/]+/reload"), CONTROL),
    (re.compile(r"/v2/repository/models/[^/]+/(load|unload)"), CONTROL),
    (re.compile(r"/inference\.GRPCInferenceService/RepositoryModel(Load|Unload)"), CONTROL),
)
MANAGEMENT_PREFIXES = ("/models/", "/v2/repository/", "/inference.")
CLOSED = {  # door -> the 403's (code, message) while the settings keep it closed
    UPLOADS: (
        "model_uploads_disabled",
        "model uploads are off; the operator turns them on with CNN_SERVE_MODEL_UPLOADS=true",
    ),
    CONTROL: (
        "model_control_disabled",
        (
            "model control is off (CNN_SERVE_MODEL_CONTROL=none): models are loaded from the "
            "repository only; the operator allows load, unload and reload with "
            "CNN_SERVE_MODEL_CONTROL=explicit"
        ),
    ),
}


def management_door(method: str, path: str) -> str | None:
    """The management door a request knocks on (uploads or control), or None."""
    if method != "POST" or not path.startswith(MANAGEMENT_PREFIXES):  # the hot path: cheap
        return None
    return next((door for pattern, door in MANAGEMENT if pattern.fullmatch(path)), None)


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def offered_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
    return None


def _matches(given: bytes, digests: list[bytes]) -> bool:
    matches = [hmac.compare_digest(given, digest) for digest in digests]
    return any(matches)


class Access:
    """Checked by :class:`service.middleware.RequestGate` and :class:`service.rpc.gate.RpcGate`
    before anything else runs."""

    def __init__(
        self,
        keys: list[str],
        public_paths: list[str],
        cors: bool = False,
        admin_keys: list[str] | None = None,
        open_doors: frozenset[str] = frozenset(),
    ) -> None:
        self.cors = cors
        self.digests = [_digest(key) for key in keys]
        self.admin_digests = [_digest(key) for key in admin_keys or []]
        self.public = [p.rstrip("/") or "/" for p in public_paths]
        self.open_doors = open_doors

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        doors = {UPLOADS} if settings.model_uploads else set()
        if settings.model_control == "explicit":
            doors.add(CONTROL)
        return cls(
            [k.get_secret_value() for k in settings.api_keys],
            settings.public_paths,
            bool(settings.cors_origins),
            [k.get_secret_value() for k in settings.admin_keys],
            frozenset(doors),
        )

    def refusal(self, scope: Scope) -> tuple[Refusal | None, KeyKind | None]:
        """(None when the HTTP request may pass, else the refusal's (status, code, message);
        the kind of key it carried)."""
        if self._preflight(scope):
            return None, None
        return self.refusal_of(scope["method"], scope["path"], scope["headers"])

    def refusal_of(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]]
    ) -> tuple[Refusal | None, KeyKind | None]:
        """The same for any transport: a method, a path (a gRPC method's too), headers."""
        key = offered_key(headers)
        kind = self._kind(key)
        door = management_door(method, path)
        if door is not None:
            return self._management(door, key, kind), kind
        if not self.digests or kind is not None or self._is_public(path):
            return None, kind
        return (401, "unauthorized", _unauthorised(key)), None

    def _management(self, door: str, key: bytes | None, kind: KeyKind | None) -> Refusal | None:
        if door not in self.open_doors:
            return 403, *CLOSED[door]
        if kind == "admin":
            return None
        if kind == "inference":
            return 403, "forbidden", "an inference key may not manage models: use an admin key"
        return 401, "unauthorized", _unauthorised(key, "an admin key")

    def _kind(self, key: bytes | None) -> KeyKind | None:
        if not key:
            return None
        given = _digest(key)
        admin = _matches(given, self.admin_digests)
        inference = _matches(given, self.digests)
        return "admin" if admin else "inference" if inference else None

    def _is_public(self, path: str) -> bool:
        if is_probe(path):  # probes must work without secrets
            return True
        return any(path == p or (p != "/" and path.startswith(p + "/")) for p in self.public)

    def _preflight(self, scope: Scope) -> bool:
        """A browser's CORS preflight carries no credentials; CORS answers it."""
        return (
            self.cors
            and scope["method"] == "OPTIONS"
            and any(name == b"access-control-request-method" for name, _ in scope["headers"])
        )


def _unauthorised(key: bytes | None, what: str = "an API key") -> str:
    if key:
        return f"the key is not valid: this needs {what}"
    return f"{what} is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
