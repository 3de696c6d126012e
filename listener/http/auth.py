"""Who may see the dashboard and act on it: one token, as HTTP Basic or Bearer, and a per-process form nonce."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from urllib.parse import urlsplit

from pydantic import SecretStr

REALM = 'Basic realm="session-ledger", charset="UTF-8"'


class Auth:
    """Checks the dashboard token; with no token configured the dashboard does not exist."""

    def __init__(self, token: SecretStr | None) -> None:
        value = token.get_secret_value() if token is not None else ""
        self._token = value.encode("utf-8") if value else None
        # Put into every form the page renders and required back on every POST: a page of
        # another origin cannot read it, so it cannot forge an action a browser would send
        # with the operator's cached Basic credentials.
        self.nonce = secrets.token_urlsafe(32)

    @property
    def enabled(self) -> bool:
        """Whether a token is configured."""
        return self._token is not None

    def scheme(self, authorization: str | None) -> str | None:
        """'basic' or 'bearer' when the Authorization header carries the token, else None."""
        if self._token is None or not authorization:
            return None
        kind, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if kind.lower() == "bearer":
            return "bearer" if hmac.compare_digest(credentials.encode("utf-8"), self._token) else None
        if kind.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return None
            _user, sep, password = decoded.partition(b":")
            return "basic" if sep and hmac.compare_digest(password, self._token) else None
        return None

    def form_allowed(
        self, *, scheme: str, nonce: str | None, origin: str | None, fetch_site: str | None, host: str | None
    ) -> bool:
        """Whether a POST may act: a Bearer client, or a same-origin form that carries this process's nonce."""
        if scheme == "bearer":
            # Browsers never attach a Bearer header on their own, so such a request is no forgery.
            return True
        if nonce is None or not hmac.compare_digest(nonce.encode("utf-8"), self.nonce.encode("utf-8")):
            return False
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return False
        if origin is not None:
            return origin != "null" and urlsplit(origin).netloc == (host or "")
        return True
