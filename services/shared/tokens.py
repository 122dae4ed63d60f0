"""Bearer tokens of partners (API keys) and team members: made random, kept as digests.

Tokens are 256-bit random strings, so one SHA-256 is a safe way to keep and find them: the
registry and the directory store the digest only, and look a presented token up by it.
"""

from __future__ import annotations

import hashlib
import secrets

from services.shared.errors import ConfigurationError

#: Shortest token accepted when one is handed in (tests, the demo); made ones are 43 chars.
MIN_GIVEN_LENGTH = 16


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def issue_token(given: str | None, what: str) -> str:
    """A new random token, or `given` when it is long enough; `what` names it in the refusal."""
    token = given or secrets.token_urlsafe(32)
    if len(token) < MIN_GIVEN_LENGTH:
        raise ConfigurationError(f"{what} needs at least {MIN_GIVEN_LENGTH} characters")
    return token
