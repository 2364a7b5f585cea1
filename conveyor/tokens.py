"""API tokens: the tokens file the API reads, and making one for ``conveyor run``.

The file holds only SHA-256 hashes, never a token (the chart mounts it from a Secret)::

    {"tokens": [{"name": "ci", "sha256": "<hex>", "scopes": ["tasks:submit", "tasks:read"]}]}

A token is 32 random bytes (``secrets.token_urlsafe``): too much entropy to guess, so
an unsalted fast hash is enough, and a leak of the file gives nobody a usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.watched import Watched, stat_signature

log = logging.getLogger("conveyor.auth")

SUBMIT = "tasks:submit"
READ = "tasks:read"
ADMIN = "tasks:admin"
# Reads tasks like tasks:read, but every answer omits their payloads and results.
READ_METADATA = "tasks:read-metadata"
SCOPES = (SUBMIT, READ, ADMIN, READ_METADATA)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TokenEntry:
    name: str
    sha256: str
    scopes: frozenset[str]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "scopes": sorted(self.scopes)}


class TokenSet:
    """The tokens the API accepts. ``find`` takes the same time whichever entry matches,
    or none: every stored hash is compared with ``hmac.compare_digest``."""

    def __init__(self, entries: Iterable[TokenEntry] = ()) -> None:
        self.entries = tuple(entries)
        self._digests = [(bytes.fromhex(e.sha256), e) for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, token: str) -> TokenEntry | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for stored, entry in self._digests:
            if hmac.compare_digest(stored, digest) and found is None:
                found = entry
        return found

    def document(self) -> dict[str, Any]:
        return {"tokens": [e.to_json() for e in self.entries]}

    @classmethod
    def from_document(cls, doc: Any) -> TokenSet:
        """Validate a tokens document; a ValueError names the bad entry and field."""
        if not isinstance(doc, Mapping) or not isinstance(doc.get("tokens"), list):
            raise ValueError('a tokens file is {"tokens": [...]}')
        entries: list[TokenEntry] = []
        names: set[str] = set()
        for i, raw in enumerate(doc["tokens"]):
            where = f"/tokens/{i}"
            if not isinstance(raw, Mapping):
                raise ValueError(f"{where}: must be an object")
            name, digest, scopes = raw.get("name"), raw.get("sha256"), raw.get("scopes")
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(f"{where}/name: 1-64 characters of letters, digits and _.@:-")
            if name in names:
                raise ValueError(f"{where}/name: {name!r} is used twice (names identify callers)")
            if not isinstance(digest, str) or not _HEX64.match(digest.lower()):
                raise ValueError(f"{where}/sha256: the lowercase hex SHA-256 of the token (64 characters)")
            if not isinstance(scopes, list) or not scopes or any(s not in SCOPES for s in scopes):
                raise ValueError(f"{where}/scopes: a non-empty list of {', '.join(SCOPES)}")
            names.add(name)
            entries.append(TokenEntry(name, digest.lower(), frozenset(scopes)))
        return cls(entries)


def load(path: str | Path) -> TokenSet:
    return TokenSet.from_document(json.loads(Path(path).read_text()))


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (never readable by others,
    not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_tokens_file(path: Path, tokens: TokenSet) -> None:
    write_private(path, json.dumps(tokens.document(), indent=2) + "\n")


def _load_or_none(path: Path) -> TokenSet:
    """The tokens in ``path``; none when it is missing, so auth fails closed."""
    try:
        return load(path)
    except FileNotFoundError:
        log.error("no tokens file at %s: every authenticated request is refused", path)
        return TokenSet()


class TokensWatcher(Watched[TokenSet]):
    """The current tokens, re-read when the file changes (see ``conveyor.watched``), so
    tokens rotate without a restart. A file that fails to parse keeps the last good
    tokens in service; a file that is missing means no token is accepted."""

    def __init__(self, path: str | Path, interval: float = 1.0) -> None:
        self.path = Path(path)
        super().__init__(
            f"tokens file {self.path}",
            load=lambda: _load_or_none(self.path),
            signature=lambda: stat_signature([self.path]),
            initial=TokenSet(),
            log=log,
            errors=(OSError, ValueError),
            describe=lambda tokens: f"{len(tokens)} token(s): " + ", ".join(e.name for e in tokens.entries),
            interval=interval,
        )
