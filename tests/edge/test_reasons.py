"""Every reason code of DESIGN.md, reached through POST /api/v1/scans on a real node."""

from __future__ import annotations

import pytest

from sync.codes import CODE_V1_CHARS, MAX_CODE_CHARS, Kind
from sync.snapshot import Channel, Status
from tests.venue import HOUR

DAY = 24 * HOUR


def flip(code: str, pos: int) -> str:
    """The code with one base32 character at *pos* replaced by another."""
    new = "A" if code[pos] != "A" else "B"
    return code[:pos] + new + code[pos + 1 :]


async def test_ok_answer_carries_every_contract_field(edge, venue):
    code = venue.add_ticket("t", date=10, zone=100, holder="Ada Lovelace", order="A-1")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    answer = await node.scan(code, scan_id="first-entry")
    assert answer["scan_id"] == "first-entry"
    assert answer["result"] == "accepted"
    assert answer["reason"] == "ok"
    assert isinstance(answer["message"], str) and answer["message"]
    assert answer["direction"] == "entry"
    ticket = answer["ticket"]
    assert {k: ticket[k] for k in ("id", "kind", "event", "date", "zone")} == {
        "id": venue.ids["t"], "kind": "ticket", "event": 1, "date": 10, "zone": 100,
    }
    assert ticket["holder"] == "Ada Lovelace"
    assert answer["entries"] == 1


async def test_single_mode_second_entry_already_used(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    assert (await node.scan(code))["reason"] == "ok"
    again = await node.scan(code)
    assert (again["result"], again["reason"]) == ("rejected", "already_used")
    assert again["entries"] == 1


@pytest.mark.parametrize(
    "code",
    [
        "\x00\x01\x02garbage\x7f",
        "abc\x1bdef",
        "line1\u2028line2",
        "",
        "   ",
        "\r\n",
        "GK1",
        "GK1ABCDEF",
        "GK9" + "A" * 136,
        "x" * (MAX_CODE_CHARS + 1),
    ],
    ids=["binary", "escape", "line-sep", "empty", "blank", "crlf", "prefix-only",
         "prefix-short", "unknown-version", "over-200"],
)
async def test_malformed(edge, venue, code):
    venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    answer = await node.scan(code)
    assert (answer["result"], answer["reason"]) == ("rejected", "malformed")
    assert "ticket" not in answer
    assert answer["direction"] == "entry"


async def test_malformed_signed_code_wrong_length_and_alphabet(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    assert len(code) == CODE_V1_CHARS
    for bad in (code[:-1], code + "A", code[:50] + code[50:].lower(), code[:-2] + "18"):
        assert (await node.scan(bad))["reason"] == "malformed", bad
    # None of those touched the real ticket.
    assert (await node.scan(code))["reason"] == "ok"


async def test_surrounding_whitespace_is_trimmed(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    assert (await node.scan(f"  {code}\r\n"))["reason"] == "ok"
    assert (await node.scan(code))["reason"] == "already_used"


async def test_forged_one_character_changed(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    # Positions inside the signature (the payload ends at char 3 + 34).
    for pos in (60, 100, CODE_V1_CHARS - 2):
        answer = await node.scan(flip(code, pos))
        assert (answer["result"], answer["reason"]) == ("rejected", "forged"), pos
        assert "ticket" not in answer
    assert (await node.scan(code))["reason"] == "ok"


async def test_forged_claims_rewritten_under_the_old_signature(edge, venue):
    """Someone re-encodes the payload for another ticket id but keeps the signature."""
    import base64

    code = venue.add_ticket("t")
    venue.add_ticket("victim")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    raw = bytearray(base64.b32decode(code[3:]))
    raw[3:11] = venue.ids["victim"].to_bytes(8, "big")
    tampered = "GK1" + base64.b32encode(bytes(raw)).decode().rstrip("=")
    assert (await node.scan(tampered))["reason"] == "forged"
    assert (await node.scan(venue.codes["victim"]))["reason"] == "ok"


async def test_forged_unknown_key(edge, venue):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    rogue = Ed25519PrivateKey.generate()
    # In the snapshot (so the index knows the digest) is impossible for a rogue issuer;
    # the rogue code is simply not in the index.
    from sync.codes import Claims, sign

    code = sign(Claims(7, Kind.TICKET, 4242, 1, 10, 100), rogue)
    # Same key id as the real key, but the wrong private key.
    impostor = sign(Claims(venue.key_id, Kind.TICKET, 4243, 1, 10, 100), rogue)
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    assert (await node.scan(code))["reason"] == "forged"
    assert (await node.scan(impostor))["reason"] == "forged"


async def test_forged_revoked_key_in_index_and_not(edge, venue):
    old = venue.add_key(2, revoked=True)
    in_index = venue.add_ticket("revoked", signer=(2, old))
    from sync.codes import Claims, sign

    not_in_index = sign(Claims(2, Kind.TICKET, 777_777, 1, 10, 100), old)
    good = venue.add_ticket("good")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    for code in (in_index, not_in_index):
        answer = await node.scan(code)
        assert (answer["result"], answer["reason"]) == ("rejected", "forged")
    assert (await node.scan(good))["reason"] == "ok"


async def test_superseded_code_of_a_reissued_ticket_is_cancelled(edge, venue):
    """A ticket re-issued under a new key keeps its id; its old, still validly signed
    code must not open the gate any more (nor share the ticket's entries)."""
    from sync.codes import Claims, sign

    new_key = venue.add_key(2)
    current = venue.add_ticket("t", signer=(2, new_key))
    ident = venue.ids["t"]
    superseded = sign(Claims(1, Kind.TICKET, ident, 1, 10, 100), venue.key)
    assert superseded != current
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    answer = await node.scan(superseded)
    assert (answer["result"], answer["reason"]) == ("rejected", "cancelled")
    assert (await node.scan(current))["reason"] == "ok"


async def test_unknown_plain_code_and_media_id(edge, venue):
    venue.add_ticket("t", media=("04A1B2C3D4E5F6",))
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    for code in ("RESELLER-000000", "04A1B2C3D4E5F7", "1234567890123"):
        answer = await node.scan(code)
        assert (answer["result"], answer["reason"]) == ("rejected", "unknown"), code


async def test_signed_code_not_in_snapshot_is_accepted_once(edge, venue):
    venue.add_ticket("t")
    fresh = venue.unsynced(date=10, zone=100)
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    first = await node.scan(fresh)
    assert (first["result"], first["reason"]) == ("accepted", "ok")
    assert first["ticket"]["date"] == 10 and first["ticket"]["event"] == 1
    assert (await node.scan(fresh))["reason"] == "already_used"


async def test_signed_code_not_in_snapshot_still_checked_for_date(edge, venue):
    fresh = venue.unsynced(date=11)
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    assert (await node.scan(fresh))["reason"] == "wrong_date"


async def test_cancelled_and_unpaid(edge, venue):
    cancelled = venue.add_ticket("c", status=Status.CANCELLED)
    unpaid = venue.add_ticket("u", status=Status.UNPAID)
    cancelled_pass = venue.add_pass("cp", 500, status=Status.CANCELLED)
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    for code, reason in ((cancelled, "cancelled"), (unpaid, "unpaid"),
                         (cancelled_pass, "cancelled")):
        answer = await node.scan(code)
        assert (answer["result"], answer["reason"]) == ("rejected", reason)
        assert answer["entries"] == 0


async def test_cancelled_wins_over_wrong_date(edge, venue):
    code = venue.add_ticket("c", date=11, status=Status.CANCELLED)
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    assert (await node.scan(code))["reason"] == "cancelled"


async def test_wrong_date_and_wrong_zone(edge, venue):
    tomorrow = venue.add_ticket("tomorrow", date=11)
    other_event = venue.add_ticket("play", date=20, zone=200)
    balcony = venue.add_ticket("balcony", date=10, zone=101)
    floor = venue.add_ticket("floor", date=10, zone=100)
    node = await edge.start()
    await node.gate("balcony", mode="single", dates=[10], zones=[101])
    assert (await node.scan(tomorrow, gate="balcony"))["reason"] == "wrong_date"
    assert (await node.scan(other_event, gate="balcony"))["reason"] == "wrong_date"
    answer = await node.scan(floor, gate="balcony")
    assert (answer["result"], answer["reason"]) == ("rejected", "wrong_zone")
    assert (await node.scan(balcony, gate="balcony"))["reason"] == "ok"
    # Refusals changed nothing: the floor ticket still gets in at a gate for its zone.
    await node.gate("floor", mode="single", dates=[10], zones=[100])
    assert (await node.scan(floor, gate="floor"))["reason"] == "ok"


async def test_gate_by_event_admits_all_its_dates(edge, venue):
    today = venue.add_ticket("today", date=10)
    play = venue.add_ticket("play", date=20, zone=200)
    node = await edge.start()
    await node.gate("concert", mode="single", events=[1])
    assert (await node.scan(today, gate="concert"))["reason"] == "ok"
    assert (await node.scan(play, gate="concert"))["reason"] == "wrong_date"


async def test_too_early_and_too_late(edge, venue):
    tomorrow = venue.add_ticket("tomorrow", date=11)
    yesterday = venue.add_ticket("yesterday", date=12)
    node = await edge.start()
    await node.gate("all", mode="single", events=[1])
    early = await node.scan(tomorrow, gate="all")
    assert (early["result"], early["reason"]) == ("rejected", "too_early")
    late = await node.scan(yesterday, gate="all")
    assert (late["result"], late["reason"]) == ("rejected", "too_late")
    # A refused entry is not an admission.
    assert early["entries"] == 0 and late["entries"] == 0


async def test_entry_exit_auto_alternates(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("door", mode="entry_exit", dates=[10])
    seen = []
    for _ in range(5):
        answer = await node.scan(code, gate="door", direction="auto")
        assert answer["result"] == "accepted"
        seen.append((answer["reason"], answer["direction"]))
    assert seen == [("ok", "entry"), ("exit_ok", "exit"), ("ok", "entry"),
                    ("exit_ok", "exit"), ("ok", "entry")]
    # Direction omitted means auto.
    assert (await node.scan(code, gate="door"))["reason"] == "exit_ok"


async def test_entry_exit_explicit_directions(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("door", mode="entry_exit", dates=[10])
    out = await node.scan(code, gate="door", direction="exit")
    assert (out["result"], out["reason"], out["direction"]) == ("rejected", "not_inside", "exit")
    assert (await node.scan(code, gate="door", direction="entry"))["reason"] == "ok"
    inside = await node.scan(code, gate="door", direction="entry")
    assert (inside["result"], inside["reason"]) == ("rejected", "already_inside")
    leave = await node.scan(code, gate="door", direction="exit")
    assert (leave["result"], leave["reason"], leave["direction"]) == (
        "accepted", "exit_ok", "exit")
    assert (await node.scan(code, gate="door", direction="exit"))["reason"] == "not_inside"
    back = await node.scan(code, gate="door", direction="entry")
    assert back["reason"] == "ok" and back["entries"] == 2


async def test_multi_gate_readmits(edge, venue):
    code = venue.add_ticket("t")
    season = venue.add_pass("season", 500)
    node = await edge.start()
    await node.gate("vip", mode="multi", dates=[10])
    for n in range(1, 4):
        answer = await node.scan(code, gate="vip")
        assert (answer["reason"], answer["entries"]) == ("ok", n)
        pass_answer = await node.scan(season, gate="vip")
        assert pass_answer["reason"] == "ok"
        assert pass_answer["ticket"]["kind"] == "pass"
        assert pass_answer["ticket"]["date"] == 10


async def test_rfid_media_id_opens_gate(edge, venue):
    code = venue.add_ticket("t", media=("04A1B2C3D4E5F6", "04FFEEDDCCBBAA"))
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    answer = await node.scan("04FFEEDDCCBBAA")
    assert (answer["reason"], answer["ticket"]["id"]) == ("ok", venue.ids["t"])
    # The card and the printed code are the same ticket.
    assert (await node.scan(code))["reason"] == "already_used"
    assert (await node.scan("04A1B2C3D4E5F6"))["reason"] == "already_used"


async def test_pass_media_id_and_pass_on_multi_gate(edge, venue):
    venue.add_pass("season", 500, media=("CARD-0001",))
    node = await edge.start()
    await node.gate("multi", mode="multi", dates=[10, 20, 30])
    for _ in range(3):
        answer = await node.scan("CARD-0001", gate="multi")
        assert answer["reason"] == "ok" and answer["ticket"]["kind"] == "pass"


async def test_plain_reseller_code(edge, venue):
    code = venue.add_ticket("r", plain="RSL-2024-0000042", channel=Channel.RESELLER)
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    first = await node.scan(code)
    assert (first["reason"], first["ticket"]["id"]) == ("ok", venue.ids["r"])
    assert (await node.scan(code))["reason"] == "already_used"


async def test_pass_entries_exhausted(edge, venue):
    code = venue.add_pass("p", 501)  # max_entries=1
    node = await edge.start()
    await node.gate("concert", mode="single", dates=[10])
    await node.gate("play", mode="single", dates=[20])
    assert (await node.scan(code, gate="concert"))["reason"] == "ok"
    answer = await node.scan(code, gate="play")
    assert (answer["result"], answer["reason"]) == ("rejected", "entries_exhausted")


async def test_pass_limit_per_day(edge, venue):
    code = venue.add_pass("p", 503)  # one event per day; dates 10 and 20 share a day
    other = venue.add_pass("p2", 503)
    node = await edge.start()
    await node.gate("concert", mode="single", dates=[10])
    await node.gate("play", mode="single", dates=[20])
    assert (await node.scan(code, gate="concert"))["reason"] == "ok"
    answer = await node.scan(code, gate="play")
    assert (answer["result"], answer["reason"]) == ("rejected", "limit_reached")
    assert (await node.scan(other, gate="play"))["reason"] == "ok"


async def test_pass_limit_per_event(edge, venue):
    """Event 1 yesterday (taken offline, sent in a batch), event 1 again today: refused."""
    code = venue.add_pass("p", 502)
    node = await edge.start()
    await node.gate("concert", mode="single", events=[1])
    await node.gate("play", mode="single", dates=[20])
    status, body = await node.call("POST", "/api/v1/scans/batch", {"scans": [
        {"scan_id": "y1", "code": code, "gate": "concert",
         "scanned_at": venue.date(12).start - HOUR},
    ]})
    assert status == 200 and body["results"][0]["reason"] == "ok"
    assert body["results"][0]["ticket"]["date"] == 12
    answer = await node.scan(code, gate="concert")
    assert (answer["result"], answer["reason"]) == ("rejected", "limit_reached")
    assert (await node.scan(code, gate="play"))["reason"] == "ok"


async def test_pass_limit_one_day(edge, venue):
    code = venue.add_pass("p", 505)  # every entry on the day of the first one
    same_day = venue.add_pass("p2", 505)
    node = await edge.start()
    await node.gate("concert", mode="single", events=[1])
    await node.gate("play", mode="single", dates=[20])
    status, body = await node.call("POST", "/api/v1/scans/batch", {"scans": [
        {"scan_id": "y1", "code": code, "gate": "concert",
         "scanned_at": venue.date(12).start - HOUR},
    ]})
    assert status == 200 and body["results"][0]["reason"] == "ok"
    answer = await node.scan(code, gate="play")
    assert (answer["result"], answer["reason"]) == ("rejected", "limit_reached")
    # A one-day pass first used today sees several events today.
    assert (await node.scan(same_day, gate="concert"))["reason"] == "ok"
    assert (await node.scan(same_day, gate="play"))["reason"] == "ok"


async def test_choice_pass_admits_only_chosen_dates(edge, venue):
    code = venue.add_pass("p", 504, dates=(20,))
    node = await edge.start()
    await node.gate("concert", mode="single", dates=[10])
    await node.gate("play", mode="single", dates=[20])
    assert (await node.scan(code, gate="concert"))["reason"] == "wrong_date"
    assert (await node.scan(code, gate="play"))["reason"] == "ok"


async def test_pass_exit_after_the_date_ended(edge, venue):
    """A pass holder inside when the show ends can still scan out (exits ignore the window).

    Taken offline yesterday: entry during the show, exit an hour after its end.
    """
    code = venue.add_pass("p", 500)
    ticket = venue.add_ticket("t", date=12)
    node = await edge.start()
    await node.gate("door", mode="entry_exit", dates=[12])
    yesterday = venue.date(12)
    scans = []
    for name, c in (("p", code), ("t", ticket)):
        scans += [
            {"scan_id": f"{name}-in", "code": c, "gate": "door", "direction": "entry",
             "scanned_at": yesterday.start},
            {"scan_id": f"{name}-out", "code": c, "gate": "door", "direction": "exit",
             "scanned_at": yesterday.end + HOUR},
        ]
    status, body = await node.call("POST", "/api/v1/scans/batch", {"scans": scans})
    assert status == 200
    assert [r["reason"] for r in body["results"]] == ["ok", "exit_ok", "ok", "exit_ok"]
