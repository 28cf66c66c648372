"""Seals on what the fleet keeps in Redis, so that write access to Redis is not control.

Whoever can write to the fleet's Redis could otherwise register a spec that names their
own module and ask every replica to load it, route a model to a version nobody chose,
quarantine a healthy version, or write a replica's report (requests nobody served, a
flip acked that no replica applied). Every entry that tells a replica what to run or
serve (specs, the desired set, routes, quarantines), and every replica's report, carries
an HMAC-SHA256 made with the fleet key (`HOTSWAP_FLEET_KEY`), which every fleet process
holds and Redis never sees; an entry whose seal does not match is ignored, and said so
in the log.

A sealed value is `<64 hex digits>.<value>`. The MAC covers the entry's kind and its
field as well as the value, so a sealed entry cannot be moved to another version or
another kind of key. Routes are sealed with their epoch (`route_seal`): replaying an
older route loses to the newer epoch every replica already applied.

Rotation: `Seal([new, old])` seals with the first key and accepts any, so processes can
be given the new key one at a time (`HOTSWAP_FLEET_KEY_PREVIOUS` holds the old one).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import Counter
from collections.abc import Sequence

log = logging.getLogger(__name__)

MINIMUM_KEY_LENGTH = 32
NO_KEY = (
    "HOTSWAP_FLEET_KEY is not set: every fleet process (console, worker, replicas) needs "
    "the same key, at least {length} characters (make one with `python -c "
    '"import secrets; print(secrets.token_hex(32))"`)'
)
SHORT_KEY = "HOTSWAP_FLEET_KEY has {got} characters; it needs at least {length}"
_DIGEST_LENGTH = 64  # hex digits of a SHA-256
REMEMBERED_REFUSALS = 10_000


class Seal:
    def __init__(self, keys: Sequence[str]) -> None:
        keys = [key for key in keys if key]
        if not keys:
            raise ValueError(NO_KEY.format(length=MINIMUM_KEY_LENGTH))
        for key in keys:
            if len(key) < MINIMUM_KEY_LENGTH:
                raise ValueError(SHORT_KEY.format(got=len(key), length=MINIMUM_KEY_LENGTH))
        self._keys = [key.encode() for key in keys]
        self._refused: set[bytes] = set()
        # Entries refused, each counted once, by kind: a replica's /metrics, for alerts.
        self.refused: Counter[str] = Counter()

    def seal(self, kind: str, field: bytes | str, value: bytes) -> bytes:
        """`value` with its seal in front, as it is stored."""
        return self._mac(self._keys[0], kind, field, value).encode() + b"." + value

    def open(self, kind: str, field: bytes | str, stored: bytes | None) -> bytes | None:
        """The value a sealed entry holds; None (logged once) if its seal does not match."""
        if stored is None:
            return None
        mac, dot, value = stored.partition(b".")
        if dot and len(mac) == _DIGEST_LENGTH and self._matches(mac, kind, field, value):
            return value
        self._refuse(kind, field, stored)
        return None

    def route_seal(self, model_id: str, version: str, epoch: int) -> bytes:
        return self._mac(self._keys[0], "route", model_id, f"{version}@{epoch}".encode()).encode()

    def route_matches(self, model_id: str, version: str, epoch: int, mac: bytes | None) -> bool:
        if mac is not None and self._matches(mac, "route", model_id, f"{version}@{epoch}".encode()):
            return True
        self._refuse("route", model_id, f"{version}@{epoch}".encode())
        return False

    def open_all(self, kind: str, entries: dict[bytes, bytes]) -> dict[bytes, bytes]:
        """The values of a hash's entries whose seals match, by field."""
        opened = {field: self.open(kind, field, stored) for field, stored in entries.items()}
        return {field: value for field, value in opened.items() if value is not None}

    def _matches(self, mac: bytes, kind: str, field: bytes | str, value: bytes) -> bool:
        return any(
            hmac.compare_digest(mac, self._mac(key, kind, field, value).encode())
            for key in self._keys
        )

    @staticmethod
    def _mac(key: bytes, kind: str, field: bytes | str, value: bytes) -> str:
        field = field.encode() if isinstance(field, str) else field
        # Lengths first: no choice of field and value can collide with another's.
        message = b"%s\n%d:%s\n%d:" % (kind.encode(), len(field), field, len(value)) + value
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    def _refuse(self, kind: str, field: bytes | str, stored: bytes) -> None:
        # Once per entry: a forged entry stays in Redis and is read on every heartbeat.
        fingerprint = hashlib.sha256(kind.encode() + b"\0" + _bytes(field) + b"\0" + stored)
        if fingerprint.digest() in self._refused:
            return
        if len(self._refused) >= REMEMBERED_REFUSALS:
            # A writer of Redis can make up entries without end: the memory of which
            # were logged stays bounded (some are logged, and counted, again).
            self._refused.clear()
        self._refused.add(fingerprint.digest())
        self.refused[kind] += 1
        log.error(
            "ignoring a %s entry in Redis whose seal does not match (field %r): it was not "
            "written with this fleet's key (HOTSWAP_FLEET_KEY), or it was altered",
            kind,
            _bytes(field).decode(errors="replace")[:200],
        )


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
