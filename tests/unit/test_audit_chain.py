"""The audit chain's pure core (token_service/audit_chain.py): the canonical encoding and hash, and what
verification names for each kind of damage; and the audit settings."""

from __future__ import annotations

from dataclasses import replace

import pytest

from token_service.audit_chain import GENESIS, AuditEvent, AuditRecord, Link, canonical, chained, verify
from token_service.config import ConfigError, load_settings
from token_service.stores.cursor import decode_id_cursor, encode_id_cursor


def chain(n: int, first_seq: int = 1, prev: str = GENESIS) -> list[AuditRecord]:
    records = []
    for i in range(n):
        event = AuditEvent(at=1_800_000_000 + i, actor="bootstrap", address="10.0.0.1", action="api_key.create",
                           target=f"k{i} secret", outcome="ok")
        record = chained(event, first_seq + i, prev, f"1800000000{i:03d}-0")
        records.append(record)
        prev = record.hash
    return records


def head(record: AuditRecord) -> Link:
    return Link(record.seq, record.hash, record.id)


def test_the_encoding_is_fixed():
    """A known vector: changing the encoding would make every stored chain fail verification."""
    [record] = chain(1)
    assert canonical(record.body()) == ('{"action":"api_key.create","actor":"bootstrap","address":"10.0.0.1","at":1800000000,'
                                        '"outcome":"ok","prev":"' + GENESIS + '","seq":1,"target":"k0 secret"}')
    assert record.hash == "6fcb108c1710b4fd35de15d8aac2c0e0653b4e0a22dc6b4d4930707c90388355"
    assert record.expected_hash() == record.hash
    assert canonical({"target": "é\u2028"}) == '{"target":"\\u00e9\\u2028"}'  # ASCII only


def test_an_intact_chain_verifies():
    records = chain(4)
    assert verify(None, head(records[-1]), records).broken is None
    assert verify(None, head(records[-1]), records).checked == 4
    assert verify(None, None, []).broken is None


def test_from_an_anchor():
    records = chain(6)
    anchor = head(records[1])
    assert verify(anchor, head(records[-1]), records[2:]).broken is None
    broken = verify(None, head(records[-1]), records[2:]).broken  # without the anchor: the start is missing
    assert broken is not None and (broken.record_id, broken.problem) == (records[2].id, "missing")
    broken = verify(Link(2, "f" * 64, records[1].id), head(records[-1]), records[2:]).broken
    assert broken is not None and (broken.record_id, broken.problem) == (records[2].id, "prev mismatch")
    assert "trimming anchor" in broken.detail


@pytest.mark.parametrize("damage, at, problem", [
    ("delete", 2, "missing"), ("edit", 1, "hash mismatch"), ("edit-and-rehash", 1, "prev mismatch"),
    ("reorder", 1, "missing"),
])
def test_damage_is_named_at_the_first_broken_link(damage, at, problem):
    records = chain(5)
    tip = head(records[-1])
    if damage == "delete":
        damaged = records[:at] + records[at + 1:]
        named = records[at + 1].id
    elif damage == "edit":
        damaged = [*records[:at], replace(records[at], actor="mallory"), *records[at + 1:]]
        named = records[at].id
    elif damage == "edit-and-rehash":
        edited = chained(AuditEvent(records[at].at, "mallory", None, "api_key.create", "x", "ok"), records[at].seq, records[at].prev,
                         records[at].id)
        damaged = [*records[:at], edited, *records[at + 1:]]
        named = records[at + 1].id
    else:
        damaged = [records[0], records[2], records[1], *records[3:]]
        named = records[2].id
    result = verify(None, tip, damaged)
    assert result.broken is not None and (result.broken.record_id, result.broken.problem) == (named, problem)
    assert result.checked == (at if damage != "edit-and-rehash" else at + 1)


def test_the_newest_records_missing_against_the_head():
    records = chain(5)
    broken = verify(None, head(records[-1]), records[:3]).broken
    assert broken is not None and broken.problem == "missing" and "4..5" in broken.detail
    broken = verify(None, None, records).broken
    assert broken is not None and broken.problem == "missing" and "head" in broken.detail
    broken = verify(None, Link(5, "e" * 64, records[-1].id), records).broken
    assert broken is not None and (broken.record_id, broken.problem) == (records[-1].id, "hash mismatch")


def test_id_cursors_round_trip_and_refuse_others():
    assert decode_id_cursor(encode_id_cursor("1800000000000-7")) == "1800000000000-7"
    assert decode_id_cursor(None) is None and decode_id_cursor("") is None
    for bad in ("czE", "a1-1", encode_id_cursor("1-1") + "A", "YTEtMS0x"):
        with pytest.raises(ValueError):
            decode_id_cursor(bad)


def test_the_audit_settings():
    defaults = load_settings({})
    assert (defaults.audit_retention, defaults.audit_max_records) == (90 * 86400, 250_000)
    chosen = load_settings({"TOKEN_SERVICE_AUDIT_RETENTION": "3600", "TOKEN_SERVICE_AUDIT_MAX_RECORDS": "1000"})
    assert (chosen.audit_retention, chosen.audit_max_records) == (3600, 1000)
    for name, value in (("AUDIT_RETENTION", "59"), ("AUDIT_RETENTION", "90d"), ("AUDIT_MAX_RECORDS", "999"),
                        ("AUDIT_MAX_RECORDS", "-1")):
        with pytest.raises(ConfigError, match=f"TOKEN_SERVICE_{name}"):
            load_settings({f"TOKEN_SERVICE_{name}": value})
