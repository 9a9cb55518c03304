"""The gateway's HTTP client for model calls: streams an upstream's answer, piece by piece.

Why aiohttp and not tornado's client (the gateway's server is tornado): a streamed answer is
thousands of small HTTP chunks (a 200 kB Anthropic stream is ~12,000 server-sent events, one
chunk each), and tornado's HTTP/1 client decodes the chunked framing in Python, a few
coroutine steps per chunk: about 0.1 s of the gateway's thread per 200 kB, most of what the
gateway added to a stream (see docs/performance.md). aiohttp parses HTTP in C (llhttp) and hands
over whatever has arrived as one block. It is imported at the first call (about 0.1 s), which
the kernel does once it is idle (`omnikernel.kernel.kernel`), not while it starts.

The interface is tornado's streaming fetch, which the gateway's call handler was written
against: `on_header` gets the status line, each header line and the blank line that ends them;
`on_chunk` each block of the body as it arrives. An exception raised by `on_chunk` (a budget
cut, a client gone) ends the request and closes its connection, so the upstream stops
generating. A failure to get an answer (refused, unreachable, timed out, cut off) is returned,
not raised. Each call opens its own connection and closes it after (as tornado's client did):
no pooled connection can have gone stale between two calls, so the gateway's retries only ever
see the upstream's own failures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp


@dataclasses.dataclass
class Answered:
    """How a call went: the upstream's status (0 if it never answered), or why it failed."""

    code: int = 0
    failure: Exception | None = None


class UpstreamClient:
    """One per gateway, used from its event loop only; `close` it when the gateway stops."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp  # see the module docstring

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                auto_decompress=False,  # the bytes are forwarded as they came
                trust_env=False,  # never through a proxy the environment names
            )
        return self._session

    async def stream(
        self,
        url: str,
        *,
        method: str,
        headers: dict[str, str],
        body: bytes | None,
        on_header: Callable[[str], None],
        on_chunk: Callable[[bytes], None],
        request_timeout: float,
        connect_timeout: float,
    ) -> Answered:
        """Send the request; give the answer to `on_header` and `on_chunk` as it comes."""
        import aiohttp

        session = self._session_now()
        timeout = aiohttp.ClientTimeout(total=request_timeout, connect=connect_timeout)
        answered = Answered()
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                timeout=timeout,
                allow_redirects=False,  # a redirect must not carry the user's key elsewhere
            ) as response:
                answered.code = response.status
                v = response.version
                version = f"HTTP/{v.major}.{v.minor}" if v is not None else "HTTP/1.1"
                on_header(f"{version} {response.status} {response.reason or ''}\r\n")
                for name, value in response.raw_headers:
                    on_header(f"{name.decode('latin-1')}: {value.decode('latin-1')}\r\n")
                on_header("\r\n")
                async for block in response.content.iter_any():
                    on_chunk(block)
        except TimeoutError:
            answered.failure = TimeoutError(f"no complete answer within {request_timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            answered.failure = exc
        return answered

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
