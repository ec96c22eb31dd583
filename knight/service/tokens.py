"""Bearer tokens: created once, stored only as sha256 hashes with a scope, checked in constant time.

A token file holds one `<sha256 hex of the token> <scope>` line per token; `#` starts a comment.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from knight.errors import UsageError

SCOPES = ("ro", "rw")  # read-only: every GET; read-write: also evaluations and runs
TOKEN_PREFIX = "knight_"


def token_hash(token: str) -> str:
    """The sha256 hex digest a token file stores for `token`."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(scope: str, token_file: Path) -> str:
    """Make a new random token, append its hash and scope to `token_file`, return the token."""
    if scope not in SCOPES:
        raise UsageError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_file.parent.mkdir(parents=True, exist_ok=True)
    # Owner-only from the first byte: the file lists who may use the service.
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(f"{token_hash(token)} {scope}\n")
    return token


@dataclass(frozen=True)
class TokenStore:
    """The accepted token hashes and their scopes."""

    entries: tuple[tuple[str, str], ...]

    @classmethod
    def load(cls, token_file: Path) -> TokenStore:
        """Read a token file; a malformed line is a usage error naming its line number."""
        try:
            text = token_file.read_text()
        except OSError as e:
            raise UsageError(f"cannot read token file {token_file}: {e.strerror or e}") from None
        entries = []
        for i, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or len(parts[0]) != 64 or parts[1] not in SCOPES:
                raise UsageError(f"{token_file}:{i}: expected '<sha256 hex> <ro|rw>'")
            entries.append((parts[0].lower(), parts[1]))
        if not entries:
            raise UsageError(
                f"no tokens in {token_file}: create one with "
                f"`knight token create --scope rw --token-file {token_file}`"
            )
        return cls(tuple(entries))

    def scope_of(self, token: str) -> str | None:
        """The scope of `token`, or None; compares against every entry so timing reveals nothing."""
        digest = token_hash(token)
        found: str | None = None
        for stored, scope in self.entries:
            if hmac.compare_digest(stored, digest) and found != "rw":
                found = scope
        return found
