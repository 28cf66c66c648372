"""The audit log's one writer and its verifier, and the shape every audited attempt takes.

Every attempt to change something lands here once, allowed or refused: the domain
functions record what reaches them (`attempt`), the API records what it refuses before
that (no credentials, malformed JSON, an oversized body), and `swaps.audit_signals`
what the admin changes and who signs in. Each entry is chained to the one before it
(`swaps.audit_chain`); `verify_chain` recomputes the chain.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.utils import timezone

from swaps import audit_chain
from swaps.models import AuditEntry
from swaps.refusals import Refused

Actor = AbstractBaseUser | AnonymousUser | str | None

# The actions, as they appear in the log.
REGISTER_VERSION = "register_version"
RETIRE_VERSION = "retire_version"
RESTORE_VERSION = "restore_version"
QUARANTINE_VERSION = "quarantine_version"  # a replica's trial found it unsafe to load
CLEAR_QUARANTINE = "clear_quarantine"
START_SWAP = "start_swap"
REQUEST_ROLLBACK = "request_rollback"
APPROVE_ROLLBACK = "approve_rollback"
REJECT_ROLLBACK = "reject_rollback"
START_ROLLOUT = "start_rollout"
PROMOTE_ROLLOUT = "promote_rollout"
APPROVE_ROLLOUT = "approve_rollout"
ABORT_ROLLOUT = "abort_rollout"
ROLLOUT_STEP = "rollout_step"  # the fleet applied a step's weight
ROLLOUT_VERDICT = "rollout_verdict"  # a step's analysis passed (a failure ends it: finish)
FINISH = "finish"  # a swap, rollback or deploy reached its final state
RECOVER = "recover"  # the sweep took over an operation whose runner died
REPUBLISH = "republish_fleet"
CREATE_API_TOKEN = "create_api_token"
# Django admin's own records (its LogEntry): users, groups, permissions, models, versions.
ADMIN_ADD = "admin_add"
ADMIN_CHANGE = "admin_change"
ADMIN_DELETE = "admin_delete"
SIGN_IN = "sign_in"  # accepted, or refused with the username tried

# What an entry keeps of text it is given: a client's body once filled one row with
# 142 kB. Keys are field names; values are messages, reasons, what a client sent.
MAX_KEY = 100
MAX_TEXT = 1000
MAX_DETAILS = 10_000  # characters of the details' JSON
TEXT_CUT = "... [cut from {length} characters]"
# Where details went over MAX_DETAILS, the top-level keys that were left out.
DETAILS_CUT = "details_cut"
CUT_NAMES_KEPT = 20

# Held by the one transaction appending to the chain on PostgreSQL (any constant will
# do; this one is only Hotswap's). Per database, so test databases never share it.
CHAIN_LOCK = 0x686F747377617001

INTACT = "{entries} entries, chain intact"
INTACT_HEAD = INTACT + " (head {head})"
BROKEN_AT = "{entries} entries, chain broken at entry {id} (sequence {sequence}): {problem}"
BROKEN = "{entries} entries, chain broken: {problem}"
OWN_HASH = "its fields no longer match its hash: it was changed after it was written"
MISSING = "the {count} entr{ies} before it, from sequence {first} on, deleted"
LINK = (
    "it does not link to the entry before it: that one was rewritten with a fresh "
    "hash, or this one was put in between"
)
HEAD_GONE = (
    "no entry has the head hash {head}: entries up to it were deleted, or the chain "
    "was rewritten and hashed afresh"
)


def actor_name(actor: Actor) -> str:
    if actor is None or isinstance(actor, AnonymousUser):
        return "anonymous"
    if isinstance(actor, str):
        return actor
    return actor.get_username()


def audit(
    *,
    actor: Actor,
    via: str,
    action: str,
    outcome: str,
    model: str = "",
    from_version: str = "",
    to_version: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        actor=_text(actor_name(actor))[:150],
        via=via,
        action=action,
        outcome=_text(outcome),
        model=_text(str(model))[:64],
        from_version=_text(str(from_version or ""))[:64],
        to_version=_text(str(to_version or ""))[:64],
        details=_bounded(details or {}),
    )
    with transaction.atomic():
        _lock_the_chain()
        head = AuditEntry.objects.order_by("-sequence").values_list("sequence", "entry_hash")
        sequence, previous_hash = head.first() or (0, audit_chain.GENESIS)
        entry.sequence, entry.previous_hash = sequence + 1, previous_hash
        # Taken in the lock, so times follow the chain's order (on one clock).
        entry.at = timezone.now()
        entry.entry_hash = audit_chain.digest(entry)
        entry.save(force_insert=True)
    return entry


def _lock_the_chain() -> None:
    """Make this transaction the chain's only writer until it ends.

    On PostgreSQL a transaction-level advisory lock: a writer waiting for it reads the
    head afresh once it has it (each statement sees what committed before it began),
    where SELECT ... FOR UPDATE of the head row would hand it the old head, still
    unchanged, and the unique sequence would refuse its entry. SQLite lets one
    connection write at a time, and the project opens SQLite transactions IMMEDIATE
    (settings), taking the write lock at BEGIN: the head read next is the head at commit.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK])


def _text(value: str) -> str:
    # PostgreSQL refuses NUL in text and JSON, neither database takes a lone surrogate
    # (JSON's "\ud800" parses to one), and a refused attempt must still leave its row.
    return value.replace("\x00", "").encode("utf-8", "backslashreplace").decode("utf-8")


def _storable(value: Any) -> Any:
    """Details as either database will give them back (the hash is taken over them
    before the row exists): string keys, lists for tuples, text `_text` can store, no
    NaN or infinity (which PostgreSQL's JSON refuses), and every string capped."""
    if isinstance(value, str):
        value = _text(value)
        return value if len(value) <= MAX_TEXT else _cut(value, MAX_TEXT)
    if isinstance(value, dict):
        return {_key(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, float) and abs(value) >= 1e16:
        # Written with an exponent (1e+16), which PostgreSQL's JSON does not keep: it
        # gives back the integer. Store that integer (the float's exact value) instead.
        return int(value)
    return value


def _key(key: Any) -> str:
    key = _text(str(key))
    return key if len(key) <= MAX_KEY else _cut(key, MAX_KEY)


def _cut(text: str, keep: int) -> str:
    return text[:keep] + TEXT_CUT.format(length=len(text))


def _bounded(details: dict[str, Any]) -> dict[str, Any]:
    """`details`, storable, in at most MAX_DETAILS characters of JSON: top-level items
    are kept in order while they fit, and DETAILS_CUT says how much was left out."""
    details = _storable(details)
    size = len(_json(details))
    if size <= MAX_DETAILS:
        return details
    kept: dict[str, Any] = {}
    left_out: list[str] = []
    # Room for the note, with CUT_NAMES_KEPT names of MAX_KEY characters (and a cut's).
    used, room = 2, MAX_DETAILS - CUT_NAMES_KEPT * (MAX_KEY + 50) - 100
    for key, value in details.items():
        item = len(_json({key: value})) - 1  # less its braces, plus a comma
        if used + item <= room:
            kept[key] = value
            used += item
        else:
            left_out.append(key)
    note = {"characters": size, "keys_left_out": len(left_out), "keys": left_out[:CUT_NAMES_KEPT]}
    kept[DETAILS_CUT] = note
    # Names of characters JSON escapes take up to six times their length.
    while len(_json(kept)) > MAX_DETAILS and note["keys"]:
        note["keys"].pop()
    return kept


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Attempt:
    """What an audited call is about; the call fills in what it learns on the way."""

    actor: Actor
    via: str
    action: str
    model: str = ""
    from_version: str = ""
    to_version: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def record(self, outcome: str, **details: Any) -> AuditEntry:
        return audit(
            actor=self.actor,
            via=self.via,
            action=self.action,
            outcome=outcome,
            model=self.model,
            from_version=self.from_version,
            to_version=self.to_version,
            details={**self.details, **details},
        )

    def accepted(self, **details: Any) -> AuditEntry:
        return self.record(AuditEntry.Outcome.ACCEPTED, **details)


@contextmanager
def attempt(**about: Any) -> Iterator[Attempt]:
    """Audit a refusal raised inside the block; the block records its own acceptance.

    A refusal's entry is written after the block's transaction rolled back, so the
    refused attempt leaves exactly one row behind: its audit entry. The block writes
    `accepted()` inside its transaction, so a change and its entry commit together.
    """
    record = Attempt(**about)
    try:
        yield record
    except Refused as refusal:
        record.record(AuditEntry.Outcome.REFUSED, error=refusal.message, **refusal.details())
        refusal.audited = True
        raise


@dataclass(frozen=True)
class ChainReport:
    """What `verify_chain` found: how many entries, and the first that breaks the chain."""

    entries: int
    # The hash of the last entry that verified. Recorded elsewhere, it shows later
    # that no entry up to it was cut or rewritten (`verify_chain(head=...)`).
    head: str
    problem: str = ""
    # The entry the problem shows at, if it shows at one.
    broken_id: int | None = None
    broken_sequence: int | None = None

    @property
    def intact(self) -> bool:
        return not self.problem

    @property
    def text(self) -> str:
        if self.broken_id is not None:
            return BROKEN_AT.format(
                entries=self.entries,
                id=self.broken_id,
                sequence=self.broken_sequence,
                problem=self.problem,
            )
        if self.problem:
            return BROKEN.format(entries=self.entries, problem=self.problem)
        if not self.entries:
            return INTACT.format(entries=0)
        return INTACT_HEAD.format(entries=self.entries, head=self.head)

    def as_dict(self) -> dict[str, Any]:
        broken = None
        if self.broken_id is not None:
            broken = {"id": self.broken_id, "sequence": self.broken_sequence}
        return {
            "entries": self.entries,
            "intact": self.intact,
            "head": self.head,
            "problem": self.problem,
            "broken_entry": broken,
        }


def verify_chain(*, head: str = "") -> ChainReport:
    """Recompute every entry's hash, in sequence order, and check each links to the last.

    An entry whose fields changed fails its own hash; one rewritten with a fresh hash,
    or removed, shows at the entry after it. Entries cut from the end, or a chain
    recomputed from some entry on, show only against a `head` recorded before: the
    chain must still pass through it.
    """
    entries = AuditEntry.objects.count()
    previous_sequence, previous_hash = 0, audit_chain.GENESIS
    passed_head = not head
    for entry in AuditEntry.objects.order_by("sequence").iterator(chunk_size=2000):
        problem = ""
        if audit_chain.digest(entry) != entry.entry_hash:
            problem = OWN_HASH
        elif entry.sequence != previous_sequence + 1:
            count = entry.sequence - previous_sequence - 1
            problem = MISSING.format(
                count=count, ies="y" if count == 1 else "ies", first=previous_sequence + 1
            )
        elif entry.previous_hash != previous_hash:
            problem = LINK
        if problem:
            return ChainReport(
                entries,
                previous_hash,
                problem=problem,
                broken_id=entry.pk,
                broken_sequence=entry.sequence,
            )
        previous_sequence, previous_hash = entry.sequence, entry.entry_hash
        passed_head = passed_head or entry.entry_hash == head
    if not passed_head:
        return ChainReport(entries, previous_hash, problem=HEAD_GONE.format(head=head))
    return ChainReport(entries, previous_hash if entries else "")
