"""HTTP for connectors: one aiohttp session per source with the politeness every platform
asks for.

- Rate limits: a 429 or 503 waits what `Retry-After` says (seconds or an HTTP date; capped at
  `max_wait_s`), other 5xx and connection errors back off exponentially with jitter; after
  `attempts` tries the last error is raised as a `SourceError`.
- Conditional GETs: `get(url, etag=, last_modified=)` sends `If-None-Match` /
  `If-Modified-Since`; a 304 comes back as `Response.not_modified`.
- A body over `max_bytes` is not read past the limit (`Response.too_large`).
- The token (a `SecretStr`) goes into the `Authorization` header only, never a log line.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass, field

import aiohttp
import structlog
from pydantic import SecretStr

from base.errors import SourceError

log = structlog.get_logger(__name__)

RETRIED = frozenset({429, 500, 502, 503, 504})


@dataclass(slots=True)
class Response:
    url: str  # after redirects
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    too_large: bool = False

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


class HttpClient:
    def __init__(
        self,
        *,
        source: str,
        user_agent: str,
        timeout_s: float = 30.0,
        max_bytes: int = 20 * 1024 * 1024,
        token: SecretStr | None = None,
        attempts: int = 4,
        backoff_s: float = 0.5,
        max_wait_s: float = 120.0,
    ) -> None:
        self.source = source
        self.user_agent = user_agent
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_bytes = max_bytes
        self._token = token
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0  # every request sent, retries included (reports and benchmarks)
        self.bytes_read = 0

    async def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": self.user_agent}
            if self._token is not None:
                headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
            self._session = aiohttp.ClientSession(headers=headers, timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        allow_redirects: bool = True,
    ) -> Response:
        """GET `url`, retried as the module says. 4xx other than 429 are returned, not raised."""
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        session = await self._open()
        last_error = ""
        for attempt in range(1, self.attempts + 1):
            self.requests += 1
            try:
                async with session.get(
                    url, headers=headers, allow_redirects=allow_redirects
                ) as resp:
                    if resp.status in RETRIED and attempt < self.attempts:
                        wait = self._wait(resp.headers.get("Retry-After"), attempt)
                        log.info(
                            "source.http_retry",
                            source=self.source,
                            status=resp.status,
                            wait_s=round(wait, 2),
                        )
                        await asyncio.sleep(wait)
                        last_error = f"HTTP {resp.status}"
                        continue
                    body, too_large = await self._body(resp)
                    return Response(
                        str(resp.url),
                        resp.status,
                        {k.lower(): v for k, v in resp.headers.items()},
                        body,
                        too_large,
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                last_error = f"{exc.__class__.__name__}: {exc}" if str(exc) else type(exc).__name__
                if attempt < self.attempts:
                    await asyncio.sleep(self._wait(None, attempt))
                    continue
        raise SourceError(f"{url}: {last_error} after {self.attempts} tries")

    async def _body(self, resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        declared = resp.content_length
        if declared is not None and declared > self.max_bytes:
            return b"", True
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65_536):
            size += len(chunk)
            if size > self.max_bytes:
                return b"", True
            chunks.append(chunk)
        self.bytes_read += size
        return b"".join(chunks), False

    def _wait(self, retry_after: str | None, attempt: int) -> float:
        if retry_after:
            seconds = _retry_after_s(retry_after)
            if seconds is not None:
                return min(max(seconds, 0.0), self.max_wait_s)
        backoff = self.backoff_s * 2.0 ** (attempt - 1)
        return min(backoff * (0.5 + random.random()), self.max_wait_s)


def _retry_after_s(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = http_date(value)
    return when - time.time() if when is not None else None


def http_date(value: str | None) -> float | None:
    """An HTTP date (`Retry-After`, `Last-Modified`) as seconds since the epoch; None if absent
    or unreadable."""
    if not value:
        return None
    try:
        return float(email.utils.parsedate_to_datetime(value.strip()).timestamp())
    except (TypeError, ValueError, OverflowError):
        return None
