"""Locust users for load testers: gate scanners hitting ``POST /api/v1/scans``.

    GATEKEEPER_CODES=bench-data/codes.jsonl GATEKEEPER_TOKEN=... \\
        locust -f bench/locustfile.py --host http://127.0.0.1:8800

Make the codes with ``python -m bench dataset`` and PUT its ``gates.json`` profiles
to the node first (``python -m bench scan --keep`` does both). Every scan fires one
locust request event named after the answer's ``reason`` (``ok``, ``already_used``,
``forged``...), so the report breaks down by outcome; a refusal is a normal answer,
and only a transport error (no answer at all) counts as a failure. An HTTP error
status shows up as ``http_<status>``.

Environment:

``GATEKEEPER_CODES``  CODES.jsonl written by ``bench dataset`` (required)
``GATEKEEPER_TOKEN``  bearer token (admin or a paired device's)
``GATEKEEPER_LIMIT``  codes read from the file (default 200000)
``GATEKEEPER_WAIT``   mean seconds between a scanner's scans (default 1.0)
"""

from __future__ import annotations

import itertools
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL
from locust import User, between, task

from bench.dataset import CodeLine
from bench.scan import forged_code, garbage_code

WAIT = float(os.environ.get("GATEKEEPER_WAIT", "1.0"))
_decoder = msgspec.json.Decoder(dict[str, Any])


@dataclass
class Codes:
    """The codes a locust process hands out; first-entry codes are used once each."""

    fresh: list[CodeLine] = field(default_factory=list)
    refused: list[CodeLine] = field(default_factory=list)
    passes: list[CodeLine] = field(default_factory=list)
    extra: list[CodeLine] = field(default_factory=list)
    signed: list[str] = field(default_factory=list)
    admitted: list[str] = field(default_factory=list)
    inside: list[str] = field(default_factory=list)


_codes: Codes | None = None


def codes() -> Codes:
    """Load ``GATEKEEPER_CODES`` once per process."""
    global _codes
    if _codes is None:
        path = os.environ.get("GATEKEEPER_CODES")
        if not path:
            raise RuntimeError("set GATEKEEPER_CODES to a CODES.jsonl from `bench dataset`")
        limit = int(os.environ.get("GATEKEEPER_LIMIT", "200000"))
        decoder = msgspec.json.Decoder(CodeLine)
        loaded = Codes()
        with open(path, "rb") as fh:
            for raw in itertools.islice(fh, limit):
                line = decoder.decode(raw)
                if not line.in_snapshot:
                    loaded.extra.append(line)
                elif line.kind == "pass":
                    loaded.passes.append(line)
                elif line.status == "valid" and line.open:
                    loaded.fresh.append(line)
                else:
                    loaded.refused.append(line)
                if line.code.startswith("GK1") and len(loaded.signed) < 2000:
                    loaded.signed.append(line.code)
        for pool in (loaded.fresh, loaded.refused, loaded.passes, loaded.extra):
            random.shuffle(pool)
        _codes = loaded
    return _codes


class ScanClient:
    """Keep-alive scan client that reports each scan to locust, named by its reason."""

    def __init__(self, host: str, token: str, request_event: Any) -> None:
        self._http = HTTPClient.from_url(
            URL(host), concurrency=1, connection_timeout=5.0, network_timeout=10.0
        )
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._fire = request_event.fire
        self._prefix = uuid.uuid4().hex[:12]
        self._seq = itertools.count(1)

    def scan(self, code: str, gate: str, direction: str | None = None) -> dict[str, Any] | None:
        """One scan; returns the answer, or None on a transport error."""
        body: dict[str, Any] = {
            "scan_id": f"{self._prefix}-{next(self._seq)}",
            "code": code,
            "gate": gate,
        }
        if direction:
            body["direction"] = direction
        payload = msgspec.json.encode(body)
        started = time.perf_counter()
        try:
            response = self._http.post("/api/v1/scans", body=payload, headers=self._headers)
            data = response.read()
            status = response.status_code
        except Exception as exc:  # any failure to get an answer is a transport error
            self._fire(
                request_type="scan",
                name="transport_error",
                response_time=(time.perf_counter() - started) * 1000,
                response_length=0,
                exception=exc,
                context={"gate": gate},
            )
            return None
        elapsed = (time.perf_counter() - started) * 1000
        answer: dict[str, Any] = {}
        try:
            answer = _decoder.decode(data)
        except msgspec.DecodeError:
            pass
        reason = answer.get("reason") if 200 <= status < 300 else None
        self._fire(
            request_type="scan",
            name=str(reason) if reason else f"http_{status}",
            response_time=elapsed,
            response_length=len(data),
            exception=None,
            context={"gate": gate},
        )
        return answer

    def close(self) -> None:
        self._http.close()


class ScanUser(User):
    """Base user owning a ``ScanClient``; subclasses pick what to scan."""

    abstract = True
    wait_time = between(0.0, 2 * WAIT)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        token = os.environ.get("GATEKEEPER_TOKEN", "")
        self.client = ScanClient(
            self.host or "http://127.0.0.1:8800", token, environment.events.request
        )
        self.codes = codes()

    def on_stop(self) -> None:
        self.client.close()


class GateScanner(ScanUser):
    """A single-entry main gate: mostly first entries, some repeats and bad codes."""

    weight = 8

    @task(80)
    def first_entry(self) -> None:
        if not self.codes.fresh:
            self.repeat()
            return
        code = self.codes.fresh.pop().code
        answer = self.client.scan(code, "main")
        if answer and answer.get("reason") == "ok":
            self.codes.admitted.append(code)

    @task(8)
    def repeat(self) -> None:
        if self.codes.admitted:
            self.client.scan(random.choice(self.codes.admitted[-5000:]), "main")

    @task(5)
    def refused(self) -> None:
        if self.codes.refused:
            self.client.scan(random.choice(self.codes.refused).code, "main")

    @task(3)
    def garbage(self) -> None:
        self.client.scan(garbage_code(random.Random(), self.codes.signed), "main")

    @task(2)
    def forged(self) -> None:
        key = Ed25519PrivateKey.generate()
        self.client.scan(forged_code(random.Random(), self.codes.signed, key), "main")

    @task(2)
    def sold_after_sync(self) -> None:
        if self.codes.extra:
            code = self.codes.extra.pop().code
            self.codes.admitted.append(code)
            self.client.scan(code, "main")


class InOutScanner(ScanUser):
    """An entry/exit gate: people come in, step out, come back."""

    weight = 1

    @task(3)
    def enter(self) -> None:
        if self.codes.fresh:
            code = self.codes.fresh.pop().code
            answer = self.client.scan(code, "inout", "entry")
            if answer and answer.get("reason") == "ok":
                self.codes.inside.append(code)

    @task(2)
    def leave(self) -> None:
        if self.codes.inside:
            code = self.codes.inside.pop(random.randrange(len(self.codes.inside)))
            self.client.scan(code, "inout", "auto")


class PassScanner(ScanUser):
    """Pass holders going from one event's gate to the next (pass limits)."""

    weight = 1

    def on_start(self) -> None:
        self.walk: list[tuple[str, int]] = []

    @task
    def scan_pass(self) -> None:
        if self.walk and random.random() < 0.7:
            i = random.randrange(len(self.walk))
            code, event = self.walk[i]
            self.client.scan(code, f"event-{event}")
            if event >= 5:
                self.walk.pop(i)
            else:
                self.walk[i] = (code, event + 1)
        elif self.codes.passes:
            code = self.codes.passes.pop().code
            self.client.scan(code, "event-1")
            self.walk.append((code, 2))
