"""The invoice deadline job, with the clock passed in (no sleeping)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

from core import jobs
from tests.core.conftest import line, order_body

DAY = 86_400.0


async def created_at(core, number):
    return await core.store.read(
        lambda tx: tx.scalar("SELECT created_at FROM orders WHERE number = ?", (number,))
    )


async def run_job(core, now):
    return await core.store.write(jobs.run_deadlines, now)


async def test_two_reminders_then_cancelled_on_day_30_and_seats_return(core, event):
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event, 3)], payment="invoice"))
    number = order["number"]
    created = await created_at(core, order["number"])
    date_id = event["dates"][0]["id"]
    sold = (await core.ok("GET", f"/api/v1/dates/{date_id}/availability"))["zones"][0]["sold"]
    assert sold == 3

    timeline = [(9.9, 0, 0), (10.0, 1, 0), (15.0, 0, 0), (20.0, 1, 0), (29.9, 0, 0), (30.0, 0, 1)]
    for day, reminders, cancelled in timeline:
        report = await run_job(core, created + day * DAY)
        assert (report.reminders, report.cancelled) == (reminders, cancelled), day

    after = await core.ok("GET", f"/api/v1/orders/{number}")
    assert after["status"] == "cancelled"
    assert after["reminders_sent"] == 2
    assert {t["status"] for t in after["tickets"]} == {"cancelled"}
    assert {t["cancel_reason"] for t in after["tickets"]} == {"payment_deadline"}
    zone = (await core.ok("GET", f"/api/v1/dates/{date_id}/availability"))["zones"][0]
    assert zone["sold"] == 0 and zone["available"] == zone["capacity"]

    notices = await core.ok("GET", f"/api/v1/outbox?order={number}")
    assert [n["kind"] for n in notices] == ["reminder", "reminder", "cancelled"]
    assert {n["email"] for n in notices} == {"ada@example.org"}
    assert "Payment reminder 2" in notices[1]["subject"]
    report = await run_job(core, created + 40 * DAY)
    assert (report.reminders, report.cancelled) == (0, 0)


async def test_paid_invoice_gets_no_reminder(core, event):
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event)], payment="invoice"))
    await core.ok("POST", f"/api/v1/orders/{order['number']}/pay")
    created = await created_at(core, order["number"])
    report = await run_job(core, created + 31 * DAY)
    assert (report.reminders, report.cancelled) == (0, 0)
    assert (await core.ok("GET", f"/api/v1/orders/{order['number']}"))["status"] == "paid"


async def test_late_job_sends_one_reminder_not_every_missed_one(core, event):
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event)], payment="invoice"))
    created = await created_at(core, order["number"])
    report = await run_job(core, created + 25 * DAY)
    assert report.reminders == 1
    assert (await core.ok("GET", f"/api/v1/orders/{order['number']}"))["reminders_sent"] == 2


async def test_jobs_command_line(core, event, tmp_path):
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event)], payment="invoice"))
    created = await created_at(core, order["number"])
    when = datetime.fromtimestamp(created + 31 * DAY, UTC).isoformat()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "jobs",
            "--data",
            str(core.store.path.parent),
            "--now",
            when,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "reminders": 0, "cancelled": 1, "cards_moved": 0
    }
    assert (await core.ok("GET", f"/api/v1/orders/{order['number']}"))["status"] == "cancelled"
