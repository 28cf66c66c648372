"""The audit log's hash chain: what an entry's hash covers, byte for byte.

Each entry's `entry_hash` is the SHA-256 of its own fields and the hash of the entry
before it (`previous_hash`; the first entry's is `GENESIS`). Changing, removing or
inserting an entry anywhere but at the end breaks the chain from there on, which
`manage.py verify_audit` reports. This format can never change: every entry ever
written must still verify, including those migration 0006 chained. So no imports of
the models here (the migration uses this module with its historical model), and no
field added to the hash without a new format for the entries after it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC
from typing import Any

GENESIS = "0" * 64

# The fields a hash covers, as they are named on the model.
CHAINED_FIELDS = (
    "sequence",
    "at",
    "actor",
    "via",
    "action",
    "outcome",
    "model",
    "from_version",
    "to_version",
    "details",
    "previous_hash",
)


def canonical(entry: Any) -> bytes:
    """The bytes an entry's hash is taken over: its chained fields as compact JSON with
    sorted keys, the time in UTC to the microsecond (what both databases store)."""
    document = {name: getattr(entry, name) for name in CHAINED_FIELDS}
    document["at"] = entry.at.astimezone(UTC).isoformat(timespec="microseconds")
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def digest(entry: Any) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()
