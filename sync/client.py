"""The edge's HTTP client for the core's sync endpoints (aiohttp).

Errors (one root, flat family; ``RETRYABLE`` says what the caller retries)::

    SyncError
    ├── CoreUnavailable   connection refused/reset, timeout, 5xx      (retry with backoff)
    ├── CoreRefused       4xx: bad token, unknown venue, bad request  (do not retry as is)
    └── FeedForged        a change batch whose signature does not verify (retry; alert)
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

import aiohttp
import msgspec

from sync.codes import ACK_DOMAIN, FEED_DOMAIN, SNAPSHOT_DOMAIN, request_domain
from sync.wire import (
    ChangeBatch,
    QuickCancelAnswer,
    QuickCancelRequest,
    Resync,
    ScanAdmitted,
    ScanUpload,
    UploadResult,
)

REQUEST_TIMEOUT_S: Final = 10.0
CURSOR_HEADER: Final = "X-Gatekeeper-Cursor"
SNAPSHOT_TIMEOUT_S: Final = 600.0
SIGNATURE_HEADER: Final = "X-Gatekeeper-Signature"
MAX_FEED_BYTES: Final = 64 * 1024 * 1024

T = TypeVar("T")


class SyncError(Exception):
    """Root of the sync client's errors."""


class CoreUnavailable(SyncError):
    pass


class CoreRefused(SyncError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"core refused ({status}): {message}")
        self.status = status


class FeedForged(SyncError):
    pass


RETRYABLE: Final = (CoreUnavailable, FeedForged)

Verifier = Callable[[bytes, str | None, bytes], bool]
"""Checks a signed answer's body against its signature header and domain
(``sync.codes.FEED_DOMAIN``, ``ACK_DOMAIN``, ``SNAPSHOT_DOMAIN``), with public keys only."""


class SnapshotDigest(msgspec.Struct, frozen=True):
    cursor: int
    sha256: str

_digest_decoder: Final = msgspec.msgpack.Decoder(SnapshotDigest)
_batch_decoder: Final = msgspec.msgpack.Decoder(ChangeBatch)
_upload_result_decoder: Final = msgspec.msgpack.Decoder(UploadResult)
_quick_decoder: Final = msgspec.msgpack.Decoder(QuickCancelAnswer)
_encoder: Final = msgspec.msgpack.Encoder()
MSGPACK: Final = "application/msgpack"


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body of *resp*, or ``CoreUnavailable`` once it passes *limit* bytes.
    Not ``resp.content.read(n)``: that returns what is buffered so far, so an answer
    longer than one socket read came back cut, failed its signature, and the node
    refused every large batch (a catch-up, an admissions replay) as forged."""
    if resp.content_length is not None and resp.content_length > limit:
        raise CoreUnavailable("answer too large")
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise CoreUnavailable("answer too large")
        parts.append(chunk)
    return b"".join(parts)


class CoreClient:
    """Talks to one venue's sync endpoints of the core with a venue-scoped token."""

    def __init__(self, base_url: str, token: str, venue: str) -> None:
        self.base = base_url.rstrip("/")
        self.venue = venue
        self._headers = {"Authorization": f"Bearer {token}", "Accept": MSGPACK}
        self._session: aiohttp.ClientSession | None = None

    def _url(self, tail: str) -> str:
        from urllib.parse import quote

        return f"{self.base}/api/v1/venues/{quote(self.venue, safe='')}/{tail}"

    async def __aenter__(self) -> CoreClient:
        self._session = aiohttp.ClientSession(
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("CoreClient used outside 'async with'")
        return self._session

    async def _request(
        self, method: str, url: str, *, budget_s: float, data: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[bytes, str | None]:
        headers = {"Content-Type": MSGPACK} if data is not None else None
        try:
            async with self.session.request(
                method, url, data=data, params=params, headers=headers,
                timeout=aiohttp.ClientTimeout(total=budget_s),
            ) as resp:
                body = await _read_capped(resp, MAX_FEED_BYTES)
                if resp.status >= 500:
                    raise CoreUnavailable(f"core answered {resp.status}")
                if resp.status >= 400:
                    raise CoreRefused(resp.status, body[:300].decode("utf-8", "replace"))
                return body, resp.headers.get(SIGNATURE_HEADER)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise CoreUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def _signed(
        self, method: str, route: str, domain: bytes, numbers: tuple[int, ...],
        verify: Verifier, *, budget_s: float = REQUEST_TIMEOUT_S, data: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> bytes:
        """The body of *route*'s answer, once its signature verifies under *domain*
        bound to this request (``request_domain``: the route, the venue, *numbers*);
        ``FeedForged`` otherwise."""
        body, signature = await self._request(
            method, self._url(route), budget_s=budget_s, data=data, params=params)
        if not verify(body, signature, request_domain(domain, route, self.venue, *numbers)):
            raise FeedForged(f"{route} answer signature does not verify")
        return body

    async def changes(self, after: int, wait: float, verify: Verifier) -> ChangeBatch:
        """Changes after *after*, waiting up to *wait* seconds for the first one."""
        body = await self._signed(
            "GET", "changes", FEED_DOMAIN, (after,), verify, budget_s=wait + REQUEST_TIMEOUT_S,
            params={"after": str(after), "wait": f"{wait:.3f}"},
        )
        batch = _decode(_batch_decoder, body)
        # The signature binds the request (venue, *after*), and the batch must move
        # forward from *after*: a middleman can neither replay an old signed batch
        # (records and the cursor rolled back, admissions applied twice) nor ask for a
        # later *after* than the node did (the changes between skipped for good).
        if not any(isinstance(c, Resync) for c in batch.changes) and (
            batch.cursor < after or any(not after < c.seq <= batch.cursor for c in batch.changes)
        ):
            raise FeedForged(f"change batch does not follow cursor {after} (replayed?)")
        return batch

    async def admissions(self, after: int, upto: int, verify: Verifier) -> ChangeBatch:
        """Admitted scans with ``after < seq <= upto`` (replayed after a snapshot)."""
        body = await self._signed(
            "GET", "admissions", FEED_DOMAIN, (after, upto), verify,
            params={"after": str(after), "upto": str(upto)},
        )
        batch = _decode(_batch_decoder, body)
        if batch.cursor < after or batch.cursor > upto or any(
            not isinstance(c, ScanAdmitted) or not after < c.seq <= min(batch.cursor, upto)
            for c in batch.changes
        ):
            raise FeedForged(f"admissions do not answer ({after}, {upto}] (replayed?)")
        return batch

    async def upload(self, upload: ScanUpload, verify: Verifier) -> UploadResult:
        """Upload scans; a forged acknowledgement must never make the node drop them."""
        body = await self._signed(
            "POST", "scans", ACK_DOMAIN, (), verify, data=_encoder.encode(upload))
        result = _decode(_upload_result_decoder, body)
        # One ack per item, in order: a replayed signed answer (or a core that stored
        # only part) must not let the node move its outbox past unacknowledged scans.
        if len(result.acks) != len(upload.items) or any(
            ack.scan_id != item.scan_id for ack, item in zip(result.acks, upload.items, strict=True)
        ):
            raise FeedForged("upload acknowledgement does not match the scans sent")
        return result

    async def quick_cancel(
        self, request: QuickCancelRequest, verify: Verifier
    ) -> QuickCancelAnswer:
        body = await self._signed(
            "POST", "quick-cancel", ACK_DOMAIN, (), verify, data=_encoder.encode(request))
        answer = _decode(_quick_decoder, body)
        if answer.scan_id != request.scan_id:
            raise FeedForged("quick-cancel answer is for another scan_id")
        return answer

    async def download_snapshot(self, dest: Path) -> tuple[int, int, str]:
        """Stream the venue snapshot into *dest* (written, then renamed).

        Returns (bytes, cursor, sha256 hex). Check it with ``snapshot_digest`` before
        trusting it."""
        part = dest.with_suffix(dest.suffix + ".part")
        size = 0
        digest = hashlib.sha256()
        try:
            async with self.session.get(
                self._url("snapshot"), timeout=aiohttp.ClientTimeout(total=SNAPSHOT_TIMEOUT_S)
            ) as resp:
                if resp.status >= 400:
                    text = (await resp.content.read(300)).decode("utf-8", "replace")
                    if resp.status >= 500:
                        raise CoreUnavailable(f"core answered {resp.status}")
                    raise CoreRefused(resp.status, text)
                cursor_text = resp.headers.get(CURSOR_HEADER, "")
                with part.open("wb") as fh:
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        fh.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            part.unlink(missing_ok=True)
            raise CoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        if not cursor_text.isdigit():
            part.unlink(missing_ok=True)
            raise CoreUnavailable("snapshot without a cursor header")
        part.replace(dest)
        return size, int(cursor_text), digest.hexdigest()

    async def snapshot_digest(self, cursor: int, verify: Verifier) -> SnapshotDigest:
        """The core's signed SHA-256 of the snapshot it served at *cursor*."""
        body = await self._signed(
            "GET", "snapshot-digest", SNAPSHOT_DOMAIN, (cursor,), verify,
            params={"cursor": str(cursor)},
        )
        return _decode(_digest_decoder, body)


def _decode(decoder: msgspec.msgpack.Decoder[T], body: bytes) -> T:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise CoreUnavailable(f"undecodable answer: {exc}") from None


async def sleep_or(event: asyncio.Event, delay: float) -> bool:
    """Sleep *delay* seconds, or less if *event* is set; True when woken by it."""
    try:
        async with asyncio.timeout(delay):
            await event.wait()
    except TimeoutError:
        return False
    return True
