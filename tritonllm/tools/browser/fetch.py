"""Bounded HTTP(S) fetching for the browser tool.

The model chooses which URLs get opened, so every fetch is treated as untrusted:
only http/https, a cap on the body size (the body is streamed and reading stops at the
cap, so a huge page is never held whole in memory), a cap on redirects with loop
detection, and one deadline covering connect, redirects and every read. Each failure is
raised as `FetchError` whose text is meant to be shown to the model as is.

Built on `http.client` rather than `urllib.request` because we need to see each redirect
(to count hops, spot loops and re-check the scheme) and to stop reading mid-body.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import time
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import quote, urldefrag, urljoin, urlsplit

logger = logging.getLogger(__name__)

USER_AGENT = "TritonLLM-browser/0.1"
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_CHUNK_BYTES = 64 * 1024
# Characters left alone when percent-encoding a path or query the model may have typed
# with spaces or non-ASCII text; existing %XX escapes are kept.
_URL_SAFE = "/%?=&:@!$'()*+,;~-._[]"


class FetchError(Exception):
    """A fetch failed; the message says why in words fit for the model."""


@dataclass(frozen=True)
class FetchLimits:
    """Per-fetch limits. `timeout_s` is one deadline for the whole fetch, redirects included."""

    max_bytes: int = 2_000_000
    max_redirects: int = 5
    timeout_s: float = 15.0


@dataclass(frozen=True)
class FetchResult:
    """The final response of a fetch, after redirects."""

    url: str  # final URL, after redirects
    status: int
    content_type: str  # lower-case MIME type without parameters; "" when the server sent none
    charset: str | None  # from the Content-Type header, if given
    body: bytes  # at most `FetchLimits.max_bytes`
    truncated: bool  # True when the body was cut at `max_bytes`
    redirects: list[str] = field(default_factory=list)  # URLs visited before `url`


def check_url(url: str) -> None:
    """Raise `FetchError` unless `url` is an absolute http(s) URL with a host."""
    parts = urlsplit(url)
    try:
        parts.port  # raises ValueError for a malformed port
    except ValueError:
        raise FetchError(f"URL {url!r} has an invalid port") from None
    if parts.scheme not in ("http", "https"):
        shown = parts.scheme or "none"
        raise FetchError(f"unsupported URL scheme {shown!r} in {url!r}: only http and https can be opened")
    if not parts.hostname:
        raise FetchError(f"URL {url!r} has no host name")


def fetch(
    url: str,
    *,
    limits: FetchLimits = FetchLimits(),
    method: str = "GET",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> FetchResult:
    """Fetch `url`, following redirects, within `limits`; raise `FetchError` on any failure.

    Responses with status >= 400 are failures. 301/302/303 turn a POST into a bodyless GET,
    as browsers do; 307/308 repeat the request. `headers` are not sent on after a redirect
    to another host.
    """
    deadline = time.monotonic() + limits.timeout_s
    visited: list[str] = []
    current = url
    while True:
        check_url(current)
        if current in visited:
            chain = " -> ".join(visited + [current])
            raise FetchError(f"redirect loop detected: {chain}")
        visited.append(current)
        status, reason, response_headers, body, truncated = _request_once(
            current, method, headers, data, limits, deadline
        )
        if status in _REDIRECT_STATUSES:
            location = response_headers.get("Location")
            if not location:
                raise FetchError(f"HTTP {status} redirect without a Location header from {current}")
            if len(visited) > limits.max_redirects:
                raise FetchError(f"too many redirects (more than {limits.max_redirects}) starting from {url}")
            target = urldefrag(urljoin(current, location.strip())).url
            logger.debug("redirect %d: %s -> %s", status, current, target)
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, data = "GET", None
            if urlsplit(target).netloc != urlsplit(current).netloc:
                headers = None  # the caller's headers may carry an API key meant for this host only
            current = target
            continue
        if status >= 400:
            raise FetchError(f"HTTP {status} {reason} for {current}")
        content_type, charset = _parse_content_type(response_headers.get("Content-Type", ""))
        if truncated:
            logger.info("body of %s truncated at %d bytes", current, limits.max_bytes)
        return FetchResult(
            url=current,
            status=status,
            content_type=content_type,
            charset=charset,
            body=body,
            truncated=truncated,
            redirects=visited[:-1],
        )


def _request_once(
    url: str,
    method: str,
    headers: dict[str, str] | None,
    data: bytes | None,
    limits: FetchLimits,
    deadline: float,
) -> tuple[int, str, Message, bytes, bool]:
    """One request/response exchange, no redirect handling.

    Returns (status, reason, headers, body, truncated); the body is not read for redirects.
    """
    parts = urlsplit(url)
    target = quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_URL_SAFE)
    request_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", "Accept": "*/*"}
    request_headers.update(headers or {})

    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=_remaining(deadline, limits, url),
            context=ssl.create_default_context(),
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=_remaining(deadline, limits, url))
    try:
        conn.connect()
        sock = conn.sock  # kept: http.client may drop conn.sock once the response is read
        conn.request(method, target, body=data, headers=request_headers)
        sock.settimeout(_remaining(deadline, limits, url))
        response = conn.getresponse()
        if response.status in _REDIRECT_STATUSES or response.status >= 400:
            return response.status, response.reason, response.headers, b"", False
        chunks: list[bytes] = []
        received = 0
        wanted = limits.max_bytes + 1  # one byte past the cap tells us the body was cut
        while received < wanted and not response.isclosed():  # closed: whole body read
            sock.settimeout(_remaining(deadline, limits, url))
            # read1: at most one recv per call, so the deadline holds against a server
            # that trickles bytes just fast enough to beat the socket timeout.
            chunk = response.read1(min(_CHUNK_BYTES, wanted - received))
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
        body = b"".join(chunks)
        truncated = len(body) > limits.max_bytes
        return response.status, response.reason, response.headers, body[: limits.max_bytes], truncated
    except TimeoutError:
        raise FetchError(f"timed out after {limits.timeout_s:g} s fetching {url}") from None
    except socket.gaierror as e:
        raise FetchError(f"could not resolve host {parts.hostname!r} ({e.strerror})") from None
    except ConnectionRefusedError:
        raise FetchError(f"connection refused by {parts.netloc}") from None
    except ssl.SSLError as e:
        raise FetchError(f"TLS error talking to {parts.netloc}: {e.reason or e}") from None
    except http.client.HTTPException as e:
        raise FetchError(f"invalid HTTP response from {parts.netloc}: {type(e).__name__} {e}") from None
    except OSError as e:
        raise FetchError(f"network error fetching {url}: {e.strerror or e}") from None
    finally:
        conn.close()


def _remaining(deadline: float, limits: FetchLimits, url: str) -> float:
    """Seconds left before `deadline`; raise the timeout error when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(f"timed out after {limits.timeout_s:g} s fetching {url}")
    return left


def _parse_content_type(value: str) -> tuple[str, str | None]:
    """Split a Content-Type header into (lower-case MIME type, charset or None)."""
    msg = Message()
    msg["Content-Type"] = value
    mime = value.split(";", 1)[0].strip().lower()
    charset = msg.get_param("charset")
    if not isinstance(charset, str) or not charset.strip():
        return mime, None
    return mime, charset.strip().lower()
