"""Passes: one code for all events, event-choice passes, pass update, RFID cards."""

from __future__ import annotations

from core import jobs
from sync.codes import Kind, parse
from tests.core.conftest import VENUE, event_body, order_body


async def two_events(core):
    a = await core.ok("POST", "/api/v1/events", event_body(ndates=2))
    b = await core.ok("POST", "/api/v1/events", {**event_body(), "name": "Opera"})
    return a, b


async def test_season_pass_one_code_and_pass_update_extends_sold_passes(core):
    a, b = await two_events(core)
    product = await core.ok(
        "POST",
        "/api/v1/pass-products",
        {
            "name": "Season",
            "venue": VENUE,
            "events": [{"event": a["id"]}],
            "price": "200",
            "max_entries": 10,
        },
    )
    assert product["per_event"] is False and product["max_entries"] == 10
    orders = [
        await core.ok(
            "POST", "/api/v1/orders", order_body([{"pass": product["id"], "quantity": 2}])
        )
        for _ in range(2)
    ]
    passes = [t for o in orders for t in o["tickets"]]
    assert len(passes) == 4 and orders[0]["total"] == "400.00"
    claims = parse(passes[0]["code"]).claims
    assert (claims.kind, claims.id, claims.event, claims.date, claims.zone) == (
        Kind.PASS,
        passes[0]["id"],
        product["id"],
        0,
        0,
    )
    await core.ok(
        "POST", f"/api/v1/orders/{orders[1]['number']}/cancel", {"tickets": [passes[3]["id"]]}
    )

    update = await core.ok(
        "POST", f"/api/v1/pass-products/{product['id']}/events", {"event": b["id"]}
    )
    assert update["updated"] == 3
    assert [e["event"] for e in update["product"]["events"]] == [a["id"], b["id"]]
    status, err = await core.call(
        "POST", f"/api/v1/pass-products/{product['id']}/events", {"event": b["id"]}
    )
    assert (status, err["error"]) == (409, "already_included")
    status, _ = await core.call("POST", "/api/v1/pass-products/999/events", {"event": b["id"]})
    assert status == 404

    catalog = await core.ok("GET", f"/api/v1/venues/{VENUE}/catalog")
    (prod,) = catalog["products"]
    assert prod[2] == [a["id"], b["id"]]  # PassProduct is array-like: id, name, events, ...


async def test_event_choice_pass_prices_per_event_one_date_per_event(core):
    a, b = await two_events(core)
    product = await core.ok(
        "POST",
        "/api/v1/pass-products",
        {
            "name": "Pick",
            "venue": VENUE,
            "choice": True,
            "events": [{"event": a["id"], "price": "30"}, {"event": b["id"], "price": "12.5"}],
        },
    )
    assert product["per_event"] is True
    choice = [a["dates"][1]["id"], b["dates"][0]["id"]]
    order = await core.ok(
        "POST",
        "/api/v1/orders",
        order_body([{"pass": product["id"], "quantity": 1, "choices": choice}]),
    )
    assert order["total"] == "42.50"
    assert order["tickets"][0]["dates"] == sorted(choice)
    for bad in ([a["dates"][0]["id"], a["dates"][1]["id"]], [], [9999]):
        status, err = await core.call(
            "POST",
            "/api/v1/orders",
            order_body([{"pass": product["id"], "quantity": 1, "choices": bad}]),
        )
        assert 400 <= status < 500, (bad, status, err)
    status, err = await core.call(
        "POST",
        "/api/v1/pass-products",
        {"name": "x", "venue": VENUE, "choice": True, "events": [{"event": a["id"]}]},
    )
    assert (status, err["error"]) == (400, "price_required")

    c = await core.ok("POST", "/api/v1/events", {**event_body(), "name": "Ballet"})
    update = await core.ok(
        "POST", f"/api/v1/pass-products/{product['id']}/events", {"event": c["id"], "price": "10"}
    )
    assert update["updated"] == 1
    ticket = await core.ok("GET", f"/api/v1/tickets/{order['tickets'][0]['id']}")
    assert c["dates"][0]["id"] in ticket["dates"]


async def test_pass_quota_and_one_day_flags(core):
    a, b = await two_events(core)
    product = await core.ok(
        "POST",
        "/api/v1/pass-products",
        {
            "name": "Festival day",
            "venue": VENUE,
            "events": [{"event": a["id"]}, {"event": b["id"]}],
            "one_day": True,
            "price": "80",
            "quota": 2,
        },
    )
    await core.ok("POST", "/api/v1/orders", order_body([{"pass": product["id"], "quantity": 2}]))
    status, err = await core.call(
        "POST", "/api/v1/orders", order_body([{"pass": product["id"], "quantity": 1}])
    )
    assert (status, err["error"]) == (409, "sold_out")
    catalog = await core.ok("GET", f"/api/v1/venues/{VENUE}/catalog")
    assert catalog["products"][0][7] is True  # one_day


async def test_rfid_card_attached_to_a_pass(core):
    a, _b = await two_events(core)
    product = await core.ok(
        "POST",
        "/api/v1/pass-products",
        {"name": "S", "venue": VENUE, "events": [{"event": a["id"]}]},
    )
    order = await core.ok(
        "POST", "/api/v1/orders", order_body([{"pass": product["id"], "quantity": 2}])
    )
    first, second = (t["id"] for t in order["tickets"])
    ticket = await core.ok("POST", f"/api/v1/tickets/{first}/media", {"uid": "04a1b2c3d4"})
    assert ticket["media"] == ["04A1B2C3D4"]
    status, err = await core.call("POST", f"/api/v1/tickets/{second}/media", {"uid": "04A1B2C3D4"})
    assert (status, err["error"]) == (409, "media_in_use")
    for bad in ({"uid": "x"}, {"uid": "bad uid!"}, {}):
        status, _ = await core.call("POST", f"/api/v1/tickets/{first}/media", bad)
        assert status == 400
    changes = await core.ok("GET", f"/api/v1/venues/{VENUE}/changes?after=0")
    last = [
        c for c in changes["changes"] if c["type"] == "record_changed" and c["record"][0] == first
    ]
    assert last[-1]["record"][11] == ["04A1B2C3D4"]  # Record.media
    ticket = await core.ok("DELETE", f"/api/v1/tickets/{first}/media/04A1B2C3D4")
    assert ticket["media"] == []


async def test_renewal_moves_the_card_once_the_old_season_is_over(core):
    """The renewed holder keeps using the card on the old pass for what is left of its
    season: a card opens one pass, and the new season's pass (here not even paid yet)
    would refuse them at tonight's show. The card moves when the old season ends."""
    a, b = await two_events(core)
    old, new_product = await season_pass_with_card(core, a, b, "CAFE0001")
    renewed = await core.ok(
        "POST", f"/api/v1/passes/{old}/renew", {"product": new_product["id"], "payment": "invoice"}
    )
    assert renewed["status"] == "pending" and renewed["total"] == "110.00"
    assert renewed["customer"] == {"name": "Ada Lovelace", "email": "ada@example.org"}
    (new,) = renewed["tickets"]
    assert new["event"] == new_product["id"]
    assert new["media"] == []
    await core.ok("POST", f"/api/v1/orders/{renewed['number']}/pay", {})
    assert (await core.ok("GET", f"/api/v1/tickets/{old}"))["media"] == ["CAFE0001"]

    season_end = max(await dates_end(core, a))
    report = await core.store.write(jobs.run_deadlines, season_end - 60)
    assert report.cards_moved == 0  # the last show is still running
    report = await core.store.write(jobs.run_deadlines, season_end + 1)
    assert report.cards_moved == 1
    assert (await core.ok("GET", f"/api/v1/tickets/{new['id']}"))["media"] == ["CAFE0001"]
    assert (await core.ok("GET", f"/api/v1/tickets/{old}"))["media"] == []
    report = await core.store.write(jobs.run_deadlines, season_end + 2)
    assert report.cards_moved == 0  # done once

    ticket = await core.ok("POST", "/api/v1/orders", order_body([{**_line(a)}]))
    status, err = await core.call(
        "POST",
        f"/api/v1/passes/{ticket['tickets'][0]['id']}/renew",
        {"product": new_product["id"]},
    )
    assert (status, err["error"]) == (409, "not_a_pass")


async def test_a_renewal_that_is_cancelled_takes_no_card(core):
    a, b = await two_events(core)
    old, new_product = await season_pass_with_card(core, a, b, "CAFE0002")
    renewed = await core.ok(
        "POST", f"/api/v1/passes/{old}/renew", {"product": new_product["id"], "payment": "invoice"}
    )
    await core.ok("POST", f"/api/v1/orders/{renewed['number']}/cancel", {"reason": "changed mind"})
    report = await core.store.write(jobs.run_deadlines, max(await dates_end(core, a)) + 1)
    assert report.cards_moved == 0
    assert (await core.ok("GET", f"/api/v1/tickets/{old}"))["media"] == ["CAFE0002"]


async def test_the_card_of_a_cancelled_pass_goes_to_the_next_pass_it_is_attached_to(core):
    """A cancelled pass's card opens nothing: attaching it to another pass moves it there
    without a detach first. A card on a valid pass stays refused (media_in_use)."""
    a, b = await two_events(core)
    old, product = await season_pass_with_card(core, a, b, "CAFE0003")
    order = await core.ok(
        "POST", "/api/v1/orders", order_body([{"pass": product["id"], "quantity": 1}])
    )
    other = order["tickets"][0]["id"]
    status, err = await core.call("POST", f"/api/v1/tickets/{other}/media", {"uid": "CAFE0003"})
    assert (status, err["error"]) == (409, "media_in_use")
    number = await core.store.read(
        lambda tx: tx.scalar("SELECT order_number FROM tickets WHERE id = ?", (old,))
    )
    await core.ok("POST", f"/api/v1/orders/{number}/cancel", {"reason": "refund"})
    moved = await core.ok("POST", f"/api/v1/tickets/{other}/media", {"uid": "cafe0003"})
    assert moved["media"] == ["CAFE0003"]
    assert (await core.ok("GET", f"/api/v1/tickets/{old}"))["media"] == []


async def test_a_cancelled_second_renewal_leaves_the_card_to_the_first(core):
    """Renewed twice (a retry, a double click) and the duplicate cancelled: the first,
    paid renewal gets the card when the old season ends (found in review: the second
    renewal replaced the first's pending move, and its cancellation dropped it)."""
    a, b = await two_events(core)
    old, new_product = await season_pass_with_card(core, a, b, "CAFE0101")
    first = await core.ok("POST", f"/api/v1/passes/{old}/renew", {"product": new_product["id"]})
    second = await core.ok("POST", f"/api/v1/passes/{old}/renew", {"product": new_product["id"]})
    await core.ok("POST", f"/api/v1/orders/{second['number']}/cancel", {"reason": "duplicate"})
    await core.store.write(jobs.run_deadlines, max(await dates_end(core, a)) + 1)
    kept = first["tickets"][0]["id"]
    assert (await core.ok("GET", f"/api/v1/tickets/{kept}"))["media"] == ["CAFE0101"]
    assert (await core.ok("GET", f"/api/v1/tickets/{old}"))["media"] == []


async def season_pass_with_card(core, a, b, uid: str) -> tuple[int, dict]:
    """A 2030 pass (event *a*) sold with card *uid*, and the 2031 product (event *b*)."""
    old_product, new_product = [
        await core.ok(
            "POST",
            "/api/v1/pass-products",
            {"name": name, "venue": VENUE, "events": [{"event": e["id"]}], "price": price},
        )
        for name, e, price in (("2030", a, "100"), ("2031", b, "110"))
    ]
    order = await core.ok(
        "POST", "/api/v1/orders", order_body([{"pass": old_product["id"], "quantity": 1}])
    )
    old = order["tickets"][0]["id"]
    await core.ok("POST", f"/api/v1/tickets/{old}/media", {"uid": uid})
    return old, new_product


async def dates_end(core, event) -> list[float]:
    return [
        float(row["ends_at"])
        for row in await core.store.read(
            lambda tx: tx.all("SELECT ends_at FROM dates WHERE event_id = ?", (event["id"],))
        )
    ]


def _line(event):
    return {
        "date": event["dates"][0]["id"],
        "zone": event["zones"][0]["id"],
        "rate": event["rates"][0]["id"],
        "quantity": 1,
    }
