"""Tests for the browser tool against a real HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from tritonllm.tools.browser import (
    BrowserTool,
    ExaBackend,
    FetchError,
    FetchLimits,
    NoSearchBackend,
    Page,
    SearchError,
    YouComBackend,
    backend_from_keys,
    extract_text,
    fetch,
    html_to_text,
)

API_KEY = "test-key-123"
HUGE_BYTES = 10 * 1024 * 1024
PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))

HOME_HTML = """<!doctype html>
<html><head><title>Test Home</title>
<style>body { color: red; } .hidden-style-marker {}</style>
<script>var secretScriptMarker = 1;</script>
</head><body>
<nav><a href="/menu">Menu link</a> navigation noise</nav>
<h1>Welcome to the test site</h1>
<p>This page links to the <a href="/second.html">second page</a> and to
<a href="/plain.txt">a text file</a>.</p>
<h2>Fruit list</h2>
<ul><li>apple</li><li>banana with needle inside</li></ul>
<table><tr><th>name</th><th>count</th></tr><tr><td>pears</td><td>7</td></tr></table>
<p>Mail <a href="mailto:someone@example.com">someone</a> or jump <a href="#top">to top</a>.</p>
<footer>footer noise</footer>
</body></html>"""

SECOND_HTML = (
    "<html><head><title>Second Page</title></head><body><h1>Second</h1>"
    + "".join(
        f"<p>Paragraph {i} {'with the needle word' if i in (12, 40) else 'of filler text'}.</p>" for i in range(60)
    )
    + "</body></html>"
)

PLAIN_TEXT = "Plain text line one.\n  indented line two.\n<b>not html</b>\n"


class Handler(BaseHTTPRequestHandler):
    """Routes for every case the tests need; see `_routes`."""

    seen_api_keys: list[str | None] = []
    seen_payloads: list[dict] = []

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        if path == "/":
            self._send(200, HOME_HTML.encode(), "text/html; charset=utf-8")
        elif path == "/second.html":
            self._send(200, SECOND_HTML.encode(), "text/html")
        elif path == "/plain.txt":
            self._send(200, PLAIN_TEXT.encode(), "text/plain; charset=utf-8")
        elif path == "/image.png":
            self._send(200, PNG_BYTES, "image/png")
        elif path == "/huge":
            self._send_huge()
        elif path in ("/loop/a", "/loop/b"):
            self._redirect("/loop/b" if path == "/loop/a" else "/loop/a")
        elif path.startswith("/chain/"):
            step = int(path.rsplit("/", 1)[1])
            if step > 0:
                self._redirect(f"/chain/{step - 1}")
            else:
                self._send(200, b"<html><head><title>Chain End</title></head><body>arrived</body></html>", "text/html")
        elif path == "/to-ftp":
            self._redirect("ftp://127.0.0.1/file")
        elif path == "/slow":
            time.sleep(2.0)
            try:
                self._send(200, b"too late", "text/plain")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as intended
        elif path == "/echo-secret":
            self._send(200, (self.headers.get("X-Secret") or "none").encode(), "text/plain")
        elif path == "/same-host":
            self._redirect("/echo-secret")
        elif path == "/cross-host":
            self._redirect(f"http://localhost:{self.server.server_port}/echo-secret")
        elif path == "/trickle":
            self._send_trickle()
        elif path == "/ydc/v1/search":
            self._you_search(parse_qs(parts.query))
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        if self.path != "/exa/search":
            self._send(404, b"not found", "text/plain")
            return
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.seen_api_keys.append(self.headers.get("x-api-key"))
        Handler.seen_payloads.append(payload)
        if self.headers.get("x-api-key") != API_KEY:
            self._send(401, b'{"error": "invalid api key"}', "application/json")
            return
        base = f"http://127.0.0.1:{self.server.server_port}"
        results = [
            {"id": "1", "title": "Test Home", "url": f"{base}/", "text": "The home page of the test site."},
            {"id": "2", "title": "Second Page", "url": f"{base}/second.html", "text": "Sixty paragraphs."},
            {"id": "3", "title": "Plain", "url": f"{base}/plain.txt", "text": "A text file."},
        ]
        body = json.dumps({"requestId": "r1", "results": results[: payload["numResults"]]}).encode()
        self._send(200, body, "application/json")

    def _you_search(self, query: dict[str, list[str]]) -> None:
        if self.headers.get("X-API-Key") != API_KEY:
            self._send(401, b'{"error": "unauthorized"}', "application/json")
            return
        base = f"http://127.0.0.1:{self.server.server_port}"
        web = [
            {"url": f"{base}/", "title": "Home via You", "description": "desc", "snippets": ["snippet about home"]},
            {"url": f"{base}/second.html", "title": "Second via You", "description": "second desc"},
        ]
        count = int(query["count"][0])
        body = {"results": {"web": web[:count], "news": []}, "metadata": {"query": query["query"][0]}}
        self._send(200, json.dumps(body).encode(), "application/json")

    def _send_trickle(self) -> None:
        """A body sent one byte every 0.1 s: each read is quick, the whole fetch is not."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "40")
        self.end_headers()
        try:
            for _ in range(40):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send_huge(self) -> None:
        """10 MiB of HTML, generated chunk by chunk; the client hangs up early."""
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(HUGE_BYTES))
        self.end_headers()
        chunk = (b"<p>" + b"huge page filler " * 60 + b"</p>\n")[:4096].ljust(4096, b" ")
        try:
            for _ in range(HUGE_BYTES // len(chunk)):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def base_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser():
    return BrowserTool(limits=FetchLimits(max_bytes=2_000_000, max_redirects=5, timeout_s=5.0))


def viewed_lines(output: str) -> dict[int, str]:
    """Line number -> text of the `Ln: ...` lines of a page view."""
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^L(\d+): (.*)$", output, re.MULTILINE)}


# -- fetch -----------------------------------------------------------------------------------


def test_fetch_returns_body_and_content_type(base_url):
    result = fetch(f"{base_url}/")
    assert result.status == 200
    assert result.content_type == "text/html"
    assert result.charset == "utf-8"
    assert b"Welcome to the test site" in result.body
    assert not result.truncated


def test_fetch_follows_redirect_chain_within_limit(base_url):
    result = fetch(f"{base_url}/chain/5", limits=FetchLimits(max_redirects=5))
    assert result.url == f"{base_url}/chain/0"
    assert len(result.redirects) == 5


def test_fetch_refuses_too_many_redirects(base_url):
    with pytest.raises(FetchError, match=r"too many redirects \(more than 5\)"):
        fetch(f"{base_url}/chain/6", limits=FetchLimits(max_redirects=5))


def test_fetch_detects_redirect_loop(base_url):
    with pytest.raises(FetchError, match="redirect loop detected: .*/loop/a -> .*/loop/b -> .*/loop/a"):
        fetch(f"{base_url}/loop/a")


def test_fetch_keeps_caller_headers_only_on_the_same_host(base_url):
    secret = {"X-Secret": "s3cret"}
    assert fetch(f"{base_url}/same-host", headers=secret).body == b"s3cret"
    crossed = fetch(f"{base_url}/cross-host", headers=secret)
    assert urlsplit(crossed.url).hostname == "localhost"
    assert crossed.body == b"none"


def test_fetch_stops_reading_huge_body_at_limit(base_url):
    started = time.monotonic()
    result = fetch(f"{base_url}/huge", limits=FetchLimits(max_bytes=2_000_000))
    assert result.truncated
    assert len(result.body) == 2_000_000
    assert time.monotonic() - started < 10


def test_fetch_times_out_on_slow_server(base_url):
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out after 0.5 s"):
        fetch(f"{base_url}/slow", limits=FetchLimits(timeout_s=0.5))
    assert time.monotonic() - started < 1.5


def test_fetch_deadline_covers_a_trickling_body(base_url):
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out after 0.5 s"):
        fetch(f"{base_url}/trickle", limits=FetchLimits(timeout_s=0.5))
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://127.0.0.1/x", "unsupported URL scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported URL scheme 'file'"),
        ("http:///nohost", "has no host name"),
    ],
)
def test_fetch_rejects_non_http_urls(url, message):
    with pytest.raises(FetchError, match=message):
        fetch(url)


def test_fetch_rejects_redirect_to_other_scheme(base_url):
    with pytest.raises(FetchError, match="unsupported URL scheme 'ftp'"):
        fetch(f"{base_url}/to-ftp")


def test_fetch_reports_http_errors_and_refused_connections(base_url):
    with pytest.raises(FetchError, match="HTTP 404 Not Found"):
        fetch(f"{base_url}/missing")
    port = urlsplit(base_url).port
    with pytest.raises(FetchError, match="connection refused|network error"):
        fetch(f"http://127.0.0.1:{port + 1 if port < 65535 else 1}/")


# -- html -> text ----------------------------------------------------------------------------


def test_html_to_text_keeps_structure_and_drops_noise():
    page = html_to_text(HOME_HTML, "http://site.test/")
    assert page.title == "Test Home"
    text = page.text
    for noise in ("secretScriptMarker", "hidden-style-marker", "navigation noise", "Menu link", "footer noise"):
        assert noise not in text
    assert "# Welcome to the test site" in text.splitlines()
    assert "## Fruit list" in text.splitlines()
    assert "* banana with needle inside" in text.splitlines()
    assert "name | count" in text.splitlines()
    assert "pears | 7" in text.splitlines()
    assert "【0†second page†site.test】" in text
    assert "【1†a text file†site.test】" in text
    # mailto: and same-page anchors are not followable links: text only.
    assert "Mail someone or jump to top." in text.splitlines()
    assert [link.url for link in page.links] == ["http://site.test/second.html", "http://site.test/plain.txt"]


def test_extract_text_refuses_binary_and_keeps_plain_text():
    with pytest.raises(Exception, match="image/png"):
        extract_text(PNG_BYTES, "image/png", "http://x/a.png")
    with pytest.raises(Exception, match="binary"):
        extract_text(PNG_BYTES, "", "http://x/a")
    plain = extract_text(PLAIN_TEXT.encode(), "text/plain", "http://x/notes.txt")
    assert plain.text == PLAIN_TEXT
    assert plain.title == "notes.txt"


# -- the tool --------------------------------------------------------------------------------


def test_open_url_shows_cursor_title_url_and_numbered_lines(browser, base_url):
    out = browser.call("open", {"id": f"{base_url}/"})
    first = out.splitlines()[0]
    assert first == f"[0] Test Home ({base_url}/)"
    lines = viewed_lines(out)
    assert lines[0] == "# Welcome to the test site"
    assert "secretScriptMarker" not in out and "navigation noise" not in out
    domain = urlsplit(base_url).netloc
    assert f"【0†second page†{domain}】" in out


def test_follow_link_id_opens_second_page_with_new_cursor(browser, base_url):
    browser.call("open", json.dumps({"id": f"{base_url}/"}))
    out = browser.call("open", json.dumps({"id": 0}))
    assert out.splitlines()[0] == f"[1] Second Page ({base_url}/second.html)"
    assert viewed_lines(out)[0] == "# Second"
    # Link 1 of page 0 (not of the most recent page) via an explicit cursor.
    out = browser.call("browser.open", {"id": 1, "cursor": 0})
    assert out.splitlines()[0] == f"[2] plain.txt ({base_url}/plain.txt)"
    assert "Plain text line one." in out


def test_open_with_loc_and_num_lines_scrolls_same_cursor(browser, base_url):
    browser.call("open", {"id": f"{base_url}/second.html"})
    out = browser.call("open", {"cursor": 0, "loc": 10, "num_lines": 5})
    assert out.splitlines()[0].startswith("[0] Second Page")
    assert "**viewing lines [10 - 14] of " in out
    lines = viewed_lines(out)
    assert sorted(lines) == [10, 11, 12, 13, 14]
    assert len(browser.pages) == 1  # scrolling does not add pages
    past_end = browser.call("open", {"loc": 10_000})
    assert past_end.startswith("error: loc 10000 is past the end of page [0]")


def test_default_view_is_limited_and_reports_total(browser, base_url):
    out = browser.call("open", {"id": f"{base_url}/second.html"})
    lines = viewed_lines(out)
    total = len(browser.pages[0].lines)
    assert total > 50
    assert sorted(lines) == list(range(50))
    assert f"**viewing lines [0 - 49] of {total - 1}**" in out


def test_find_lists_matches_with_line_numbers_and_jumps_to_them(browser, base_url):
    browser.call("open", {"id": f"{base_url}/second.html"})
    page_lines = browser.pages[0].lines
    expected = [i for i, line in enumerate(page_lines) if "needle" in line]
    assert len(expected) == 2

    out = browser.call("find", {"pattern": "NEEDLE word"})
    assert out.splitlines()[0].startswith("[1] Find results for text: `NEEDLE word` in `Second Page`")
    for match_id, line_no in enumerate(expected):
        assert f"【{match_id}†match at L{line_no}】" in out
    assert "Paragraph 12 with the needle word." in out

    jumped = browser.call("open", {"id": 1})  # second match, on the find page
    assert jumped.splitlines()[0].startswith("[0] Second Page")
    assert f"**viewing lines [{expected[1]} - " in jumped
    assert viewed_lines(jumped)[expected[1]] == page_lines[expected[1]]

    assert browser.call("find", {"pattern": "zebra", "cursor": 0}).startswith("No matches for `zebra` in page [0]")


def test_find_matches_across_wrapped_lines():
    tool = BrowserTool(wrap_width=20)
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    tool.pages.append(Page(url="http://x/", title="Greek", lines=tool._wrap(text)))
    assert tool.pages[0].lines[:2] == ["alpha beta gamma", "delta epsilon zeta"]
    out = tool.call("find", {"pattern": "gamma delta"})
    assert "【0†match at L0】" in out
    assert "【1†" not in out


def test_plain_text_page_is_shown_as_is(browser, base_url):
    out = browser.call("open", {"id": f"{base_url}/plain.txt"})
    lines = viewed_lines(out)
    assert lines[0] == "Plain text line one."
    assert lines[1] == "  indented line two."
    assert lines[2] == "<b>not html</b>"


def test_binary_page_is_refused_with_content_type(browser, base_url):
    out = browser.call("open", {"id": f"{base_url}/image.png"})
    assert out.startswith("error: ")
    assert "image/png" in out
    assert browser.pages == []


def test_huge_page_is_truncated_with_a_note(browser, base_url):
    out = browser.call("open", {"id": f"{base_url}/huge", "num_lines": 3})
    assert out.splitlines()[0].startswith("[0] ")
    assert "**the page is longer than 2000000 bytes; only its start is shown**" in out
    assert len(browser.pages[0].source) <= 2_000_000
    assert "huge page filler" in viewed_lines(out)[0]


def test_redirects_through_the_tool(browser, base_url):
    out = browser.call("open", {"id": f"{base_url}/chain/3"})
    assert out.splitlines()[0] == f"[0] Chain End ({base_url}/chain/0)"
    loop = browser.call("open", {"id": f"{base_url}/loop/a"})
    assert loop.startswith("error: redirect loop detected")


def test_slow_page_times_out_as_error_text(base_url):
    tool = BrowserTool(limits=FetchLimits(timeout_s=0.5))
    started = time.monotonic()
    out = tool.call("open", {"id": f"{base_url}/slow"})
    assert out == f"error: timed out after 0.5 s fetching {base_url}/slow"
    assert time.monotonic() - started < 1.5


def test_view_source_shows_raw_html(browser, base_url):
    browser.call("open", {"id": f"{base_url}/"})
    out = browser.call("open", {"view_source": True})
    assert out.splitlines()[0] == f"[1] Source of Test Home (view-source:{base_url}/)"
    assert "secretScriptMarker" in out


def test_bad_calls_come_back_as_error_text(browser, base_url):
    assert browser.call("open", {"id": 0}).startswith("error: no page is open yet")
    assert browser.call("open", "{not json").startswith("error: arguments are not valid JSON")
    assert browser.call("open", "[1, 2]") == "error: arguments must be a JSON object"
    assert browser.call("fly", {}).startswith("error: unknown function 'fly'")
    assert "unexpected keyword argument 'bogus'" in browser.call("find", {"pattern": "x", "bogus": 1})
    assert "missing a required argument: 'pattern'" in browser.call("find", {})
    browser.call("open", {"id": f"{base_url}/"})
    assert browser.call("open", {"id": 99}) == "error: page [0] has no link with id 99 (it has ids 0-1)"
    assert browser.call("open", {"cursor": 7}) == "error: no page with cursor 7; open pages have cursors 0-0"
    assert browser.call("open", {"loc": "ten"}) == "error: `loc` must be an integer, not 'ten'"
    assert browser.call("open", {"id": "ftp://127.0.0.1/x"}).startswith("error: unsupported URL scheme 'ftp'")
    # Numeric strings and the `source` argument gpt-oss may add are accepted.
    assert browser.call("open", {"id": "0", "source": "web"}).startswith("[1] Second Page")


def test_description_states_the_three_functions_and_citation_format():
    description = BrowserTool.description
    assert BrowserTool.name == "browser"
    assert "namespace browser {" in description
    for signature in ("type search = (_: {", "type open = (_: {", "type find = (_: {"):
        assert signature in description
    for param in ("topn?: number, // default: 10", "id?: number | string, // default: -1",
                  "view_source?: boolean, // default: false", "pattern: string,"):
        assert param in description
    assert "【{cursor}†L{line_start}(-L{line_end})?】" in description


# -- search ----------------------------------------------------------------------------------


def test_exa_search_results_page_and_follow_result(base_url):
    Handler.seen_api_keys.clear()
    Handler.seen_payloads.clear()
    tool = BrowserTool(ExaBackend(API_KEY, base_url=f"{base_url}/exa"))
    out = tool.call("search", {"query": "test   site", "topn": 2})
    assert Handler.seen_api_keys == [API_KEY]
    assert Handler.seen_payloads[0]["query"] == "test site"
    assert Handler.seen_payloads[0]["numResults"] == 2
    domain = urlsplit(base_url).netloc
    assert out.splitlines()[0] == "[0] Search results for `test site`"
    assert f"【0†Test Home†{domain}】" in out
    assert f"【1†Second Page†{domain}】" in out
    assert "Plain" not in out
    assert "The home page of the test site." in out

    followed = tool.call("open", {"id": 1})
    assert followed.splitlines()[0] == f"[1] Second Page ({base_url}/second.html)"


def test_exa_search_with_wrong_key_reports_http_error(base_url):
    tool = BrowserTool(ExaBackend("wrong-key", base_url=f"{base_url}/exa"))
    out = tool.call("search", {"query": "anything"})
    assert out.startswith("error: Exa search failed: HTTP 401")


def test_you_com_search(base_url):
    backend = YouComBackend(API_KEY, base_url=f"{base_url}/ydc")
    results = backend.search("home", 5)
    assert [r.title for r in results] == ["Home via You", "Second via You"]
    assert results[0].snippet == "snippet about home"
    assert results[1].snippet == "second desc"
    with pytest.raises(SearchError, match="You.com search failed: HTTP 401"):
        YouComBackend("nope", base_url=f"{base_url}/ydc").search("home", 5)


def test_no_search_backend_says_how_to_configure():
    with pytest.raises(SearchError) as excinfo:
        NoSearchBackend().search("q", 3)
    assert "EXA_API_KEY" in str(excinfo.value) and "YDC_API_KEY" in str(excinfo.value)
    out = BrowserTool().call("search", {"query": "anything"})
    assert out.startswith("error: web search is not configured")
    assert "EXA_API_KEY" in out and "YDC_API_KEY" in out


def test_backend_from_keys_prefers_exa_then_you_com():
    assert isinstance(backend_from_keys(), NoSearchBackend)
    assert isinstance(backend_from_keys(exa_api_key="", ydc_api_key=None), NoSearchBackend)
    assert isinstance(backend_from_keys(ydc_api_key="k"), YouComBackend)
    assert isinstance(backend_from_keys(exa_api_key="e", ydc_api_key="k"), ExaBackend)
