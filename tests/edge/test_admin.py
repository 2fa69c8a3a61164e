"""Technician endpoints: gates, search, status, metrics; and localized messages."""

from __future__ import annotations

import re

import pytest

from edge import messages
from sync.rules import Reason


async def test_put_and_get_gates(edge, venue):
    node = await edge.start()
    status, body = await node.call("PUT", "/api/v1/gates/door", {"mode": "entry_exit",
                                                                 "dates": [10, 11]})
    assert status == 200
    assert (body["gate"], body["mode"], body["dates"], body["admitted_dates"]) == (
        "door", "entry_exit", [10, 11], 2)
    await node.gate("concert", mode="multi", events=[1], zones=[100, 101])
    await node.gate("all", mode="single")
    status, body = await node.call("GET", "/api/v1/gates")
    assert status == 200
    gates = {g["gate"]: g for g in body["gates"]}
    assert list(gates) == ["all", "concert", "door"]
    assert gates["concert"]["mode"] == "multi"
    assert gates["concert"]["events"] == [1]
    assert gates["concert"]["zones"] == [100, 101]
    assert gates["concert"]["admitted_dates"] == 3
    assert gates["all"]["admitted_dates"] == len(venue.catalog.dates)
    # Replacing a profile takes effect for the next scan.
    code = venue.unsynced(date=20, zone=200)
    await node.gate("door", mode="single", dates=[20])
    assert (await node.scan(code, gate="door"))["reason"] == "ok"


async def test_empty_gate_admits_nothing(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("closed", mode="multi", dates=[])
    assert (await node.scan(code, gate="closed"))["reason"] == "wrong_date"


async def test_search_by_holder_and_order(edge, venue):
    venue.add_ticket("a", holder="Ada Lovelace", order="ORD-1001")
    venue.add_ticket("b", holder="Ada Byron", order="ORD-1002", date=20, zone=200)
    venue.add_ticket("c", holder="Charles Babbage", order="ORD-2001")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    await node.scan(venue.codes["a"])

    async def search(q):
        status, body = await node.call("GET", "/api/v1/search", params={"q": q})
        assert status == 200, body
        return body["results"]

    found = await search("ada")
    assert sorted(r["id"] for r in found) == [venue.ids["a"], venue.ids["b"]]
    by_id = {r["id"]: r for r in found}
    assert by_id[venue.ids["a"]]["entries"] == 1
    assert by_id[venue.ids["a"]]["order"] == "ORD-1001"
    assert by_id[venue.ids["b"]]["entries"] == 0
    assert by_id[venue.ids["b"]]["status"] == "valid"
    assert [r["id"] for r in await search("LOVELACE")] == [venue.ids["a"]]
    assert [r["id"] for r in await search("ada byron")] == [venue.ids["b"]]
    assert [r["id"] for r in await search("ord-2001")] == [venue.ids["c"]]
    assert sorted(r["id"] for r in await search("ord-100")) == [venue.ids["a"],
                                                                 venue.ids["b"]]
    assert await search("zebra") == []


async def test_search_lists_each_record_once(edge, venue):
    """A holder whose several words (or order number) match the query is one result."""
    venue.add_ticket("m", holder="Marie Martin", order="MAR-1")
    node = await edge.start()
    status, body = await node.call("GET", "/api/v1/search", params={"q": "mar"})
    assert status == 200
    assert [r["id"] for r in body["results"]] == [venue.ids["m"]]


@pytest.mark.parametrize("q", ["", "a", " a ", "x" * 101])
async def test_search_query_length(edge, venue, q):
    node = await edge.start()
    status, body = await node.call("GET", "/api/v1/search", params={"q": q})
    assert status == 400 and set(body) == {"error", "message"}


async def test_search_without_q(edge, venue):
    node = await edge.start()
    status, body = await node.call("GET", "/api/v1/search")
    assert status == 400 and set(body) == {"error", "message"}


async def test_status_fields(edge, venue):
    venue.add_ticket("t", media=("CARD-1",))
    venue.add_pass("p", 500)
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    await node.scan(venue.codes["t"])
    await node.scan(venue.codes["t"])
    await node.scan("nonsense")
    status, body = await node.call("GET", "/api/v1/status")
    assert status == 200
    assert isinstance(body["node_id"], str) and body["node_id"]
    assert body["venue"] == "Arena"
    assert body["index"]["records"] == 2
    assert body["index"]["codes"] == 2
    assert body["index"]["media"] == 1
    assert body["index"]["dates"] == len(venue.catalog.dates)
    assert body["sync"]["cursor"] == 0
    assert {"lag_s", "lag_changes", "outbox"} <= set(body["sync"])
    assert body["scans"]["total"] == 3
    assert body["scans"]["accepted"] == 1
    assert body["scans"]["logged"] == 3
    assert body["scans"]["per_s"] >= 0
    assert body["gates"] == ["main"]
    assert body["devices"] == []
    assert body["memory"]["rss_bytes"] > 0


async def test_metrics_prometheus_text(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    await node.scan(code)
    await node.scan(code)
    await node.scan("garbage\x00")
    async with node.session.get(node.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert "# TYPE edge_scans_total counter" in text
    samples = dict(re.findall(r'^edge_scans_total\{result="\w+",reason="(\w+)"\} (\d+)$', text,
                              re.MULTILINE))
    assert set(samples) == {str(r) for r in Reason}
    assert (samples["ok"], samples["already_used"], samples["malformed"]) == ("1", "1", "1")
    assert samples["forged"] == "0"
    for line in text.splitlines():
        assert not line or line.startswith("#") or re.fullmatch(
            r'[a-z_]+(\{[a-z_]+="[\w.+]+"(,[a-z_]+="[\w.+]+")*\})? \d+(\.\d+)?', line), line
    commits = int(re.search(r"^edge_commits_total (\d+)$", text, re.MULTILINE).group(1))
    inf = re.search(r'^edge_commit_duration_seconds_bucket\{le="\+Inf"\} (\d+)$', text,
                    re.MULTILINE)
    assert commits >= 3 and int(inf.group(1)) == commits


@pytest.mark.parametrize(
    ("header", "lang"),
    [("fr", "fr"), ("de", "de"), ("it", "it"), ("fr-CH, fr;q=0.9, en;q=0.8", "fr"),
     ("en;q=0.5, de;q=0.9", "de"), ("it-IT", "it")],
)
async def test_localized_messages(edge, venue, header, lang):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    english = {}
    for reason, c in (("ok", code), ("already_used", code), ("unknown", "NOPE")):
        answer = await node.scan(c, headers=node.headers(**{"Accept-Language": lang}))
        assert answer["reason"] == reason
        english[reason] = messages.message(reason, "en")
        assert answer["message"] == messages.message(reason, lang)
        assert answer["message"] != english[reason]


async def test_accept_language_header_variants(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    for header, lang in (("fr-CH, fr;q=0.9, en;q=0.8", "fr"), ("en;q=0.5, de;q=0.9", "de"),
                         ("xx, zz", "en"), ("", "en")):
        answer = await node.scan(code, headers=node.headers(**{"Accept-Language": header}))
        assert answer["message"] == messages.message(answer["reason"], lang), header
    answer = await node.scan(code)
    assert answer["message"] == messages.message("already_used", "en")


async def test_retry_in_another_language_same_reason_localized_message(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    fr = await node.scan(code, scan_id="x", headers=node.headers(**{"Accept-Language": "fr"}))
    de = await node.scan(code, scan_id="x", headers=node.headers(**{"Accept-Language": "de"}))
    assert fr["reason"] == de["reason"] == "ok"
    assert (fr["message"], de["message"]) == (messages.message("ok", "fr"),
                                              messages.message("ok", "de"))
    assert {k: v for k, v in fr.items() if k != "message"} == {
        k: v for k, v in de.items() if k != "message"}


def test_every_reason_has_a_message_in_every_language():
    for lang in messages.LANGUAGES:
        for reason in Reason:
            assert messages.message(reason, lang)
        if lang != "en":
            for reason in Reason:
                assert messages.message(reason, lang) != messages.message(reason, "en")


async def test_search_is_case_insensitive_beyond_ascii(edge, venue):
    venue.add_ticket("e", holder="Émile Zola", order="ORD-É1")
    venue.add_ticket("m", holder="JÜRGEN MÜLLER", order="ORD-2")
    node = await edge.start()
    for q, name in (("émile", "e"), ("ÉMILE ZOLA", "e"), ("müller", "m"), ("Jürgen", "m")):
        status, body = await node.call("GET", "/api/v1/search", params={"q": q})
        assert status == 200
        assert [r["id"] for r in body["results"]] == [venue.ids[name]], q
