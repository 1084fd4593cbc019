"""The `browser` tool gpt-oss calls: `search`, `open` and `find` over numbered pages.

Every document the tool shows (a search results page, a fetched web page, a list of
`find` matches) is appended to `BrowserTool.pages`; its index there is its *cursor*.
A view of a page looks like

    [3] Page title (https://example.com/page)
    **viewing lines [0 - 49] of 211**

    L0: # Heading
    L1: Text with a link 【0†link text†example.com】 in it.

so the model can cite `【3†L0-L1】`, follow link 0 with `open(id=0)`, scroll with
`open(cursor=3, loc=50)` and search the text with `find`. One `BrowserTool` holds the
state of one conversation; make a new one per conversation.

`call()` is the entry point for tool messages: it never raises, every failure comes
back as text starting with "error:" so the model can read it and try something else.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import textwrap
from dataclasses import dataclass, field

from .backends import NoSearchBackend, SearchBackend, SearchError
from .fetch import FetchError, FetchLimits, fetch
from .html_text import UnsupportedContentError, extract_text, link_marker

logger = logging.getLogger(__name__)

# The tool's instructions for the system prompt, in the TypeScript-like namespace layout
# gpt-oss tools are described in. It goes under a "## browser" heading of the "# Tools"
# section of the system message.
DESCRIPTION = """\
// Tool for browsing the web.
// Every page the tool shows starts with its cursor in brackets: `[{cursor}]`.
// Cite information from the tool in this format: `【{cursor}†L{line_start}(-L{line_end})?】`, for example `【6†L9-L11】` or `【8†L3】`.
// Do not quote more than 10 words in a row from the tool output.
namespace browser {

// Searches the web for `query` and shows the top `topn` results as a page of links.
type search = (_: {
query: string,
topn?: number, // default: 10
}) => any;

// Opens link `id` of the page at `cursor` and shows `num_lines` lines starting at line `loc`.
// Link ids appear in page text as `【{id}†...】`.
// Without `cursor`, the most recent page is used.
// If `id` is a string, it is opened as a full URL.
// Without `loc`, the view starts at the top of the page.
// Call it without `id` to scroll to another part of a page that is already open.
// With `view_source`, the raw source of the page is shown instead of its text.
type open = (_: {
id?: number | string, // default: -1
cursor?: number, // default: -1
loc?: number, // default: -1
num_lines?: number, // default: -1
view_source?: boolean, // default: false
}) => any;

// Finds case-insensitive exact matches of `pattern` in the most recent page, or in the page at `cursor`.
type find = (_: {
pattern: string,
cursor?: number, // default: -1
}) => any;

} // namespace browser"""

_MARKER = re.compile(r"【[^】]*】")
_LINK_MARKER = re.compile(r"【\d+†([^†】]*)†[^】]*】")
_INTEGER = re.compile(r"[+-]?\d+")


class BrowserError(Exception):
    """The model called the tool in a way that cannot be served; the message says why."""


@dataclass
class Page:
    """One displayed document. `lines` are already wrapped; line i is shown as `Li:`."""

    url: str
    title: str
    lines: list[str]
    links: dict[int, str] = field(default_factory=dict)  # link id -> URL to fetch
    jumps: dict[int, tuple[int, int]] = field(default_factory=dict)  # link id -> (cursor, line), for find results
    source: str | None = None  # decoded body, for view_source; None for generated pages
    note: str = ""  # shown under the title, e.g. that the body was truncated


class BrowserTool:
    """gpt-oss's `browser` tool with its page state for one conversation."""

    name = "browser"
    description = DESCRIPTION

    def __init__(
        self,
        backend: SearchBackend | None = None,
        *,
        limits: FetchLimits = FetchLimits(),
        view_lines: int = 50,
        max_view_lines: int = 200,
        wrap_width: int = 80,
        max_topn: int = 25,
        max_find_results: int = 50,
    ) -> None:
        self.backend = backend or NoSearchBackend()
        self.limits = limits
        self.view_lines = view_lines
        self.max_view_lines = max_view_lines
        self.wrap_width = wrap_width
        self.max_topn = max_topn
        self.max_find_results = max_find_results
        self.pages: list[Page] = []

    # -- entry point ------------------------------------------------------------------------

    def call(self, function: str, args: str | dict | None) -> str:
        """Run `browser.<function>` with JSON (or dict) `args`; return the text the model sees."""
        name = function.removeprefix(f"{self.name}.")
        handler = {"search": self.search, "open": self.open, "find": self.find}.get(name)
        if handler is None:
            return f"error: unknown function {function!r}; the browser has search, open and find"
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as e:
                return f"error: arguments are not valid JSON ({e.msg} at position {e.pos})"
        args = args or {}
        if not isinstance(args, dict):
            return "error: arguments must be a JSON object"
        args = {key: value for key, value in args.items() if key != "source"}  # gpt-oss may send source="web"
        try:
            inspect.signature(handler).bind(**args)
        except TypeError as e:
            return f"error: bad arguments for browser.{name}: {e}"
        logger.debug("browser.%s(%s)", name, args)
        try:
            return handler(**args)
        except (BrowserError, FetchError, SearchError, UnsupportedContentError) as e:
            logger.info("browser.%s failed: %s", name, e)
            return f"error: {e}"
        except Exception as e:  # a tool failure must not end the conversation
            logger.exception("browser.%s crashed", name)
            return f"error: unexpected failure in browser.{name}: {type(e).__name__}: {e}"

    # -- the three functions ----------------------------------------------------------------

    def search(self, query: str, topn: int = 10) -> str:
        """Search with the backend and show the results as a new page of links."""
        if not isinstance(query, str) or not query.strip():
            raise BrowserError("`query` must be a non-empty string")
        query = " ".join(query.split())
        topn = _as_int("topn", topn)
        if topn < 1:
            raise BrowserError("`topn` must be at least 1")
        results = self.backend.search(query, min(topn, self.max_topn))
        if not results:
            return f"No search results for `{query}`."
        lines: list[str] = []
        for link_id, result in enumerate(results):
            if lines:
                lines.append("")
            lines.extend(self._wrap(link_marker(link_id, result.title, result.url)))
            lines.extend(self._wrap(result.snippet))
        page = Page(
            url="",
            title=f"Search results for `{query}`",
            lines=lines,
            links={link_id: result.url for link_id, result in enumerate(results)},
        )
        return self._show(self._add(page), -1, -1)

    def open(
        self,
        id: int | str = -1,
        cursor: int = -1,
        loc: int = -1,
        num_lines: int = -1,
        view_source: bool = False,
    ) -> str:
        """Open a URL or a link of a page, or scroll a page; see DESCRIPTION for the rules."""
        loc = _as_int("loc", loc)
        num_lines = _as_int("num_lines", num_lines)
        view_source = _as_bool("view_source", view_source)
        if isinstance(id, str) and not _INTEGER.fullmatch(id.strip()):
            url = id.strip()
            if "://" not in url:
                url = "https://" + url
            return self._show(self._add(self._load(url, view_source)), loc, num_lines)

        link_id = _as_int("id", id)
        current = self._cursor(cursor)
        page = self.pages[current]
        if link_id < 0:
            if view_source:
                if page.source is None:
                    raise BrowserError(f"page [{current}] was made by the browser and has no source to view")
                current = self._add(self._source_page(page.url, page.title, page.source))
            return self._show(current, loc, num_lines)
        if link_id in page.jumps:
            target, line = page.jumps[link_id]
            return self._show(target, line if loc < 0 else loc, num_lines)
        if link_id not in page.links:
            known = f"ids 0-{max(page.links)}" if page.links else "no links"
            raise BrowserError(f"page [{current}] has no link with id {link_id} (it has {known})")
        return self._show(self._add(self._load(page.links[link_id], view_source)), loc, num_lines)

    def find(self, pattern: str, cursor: int = -1) -> str:
        """Show the lines of a page containing `pattern` (case-insensitive) as a new page."""
        if not isinstance(pattern, str) or not pattern.strip():
            raise BrowserError("`pattern` must be a non-empty string")
        current = self._cursor(cursor)
        page = self.pages[current]
        needle = pattern.lower()
        matches = []
        for i, line in enumerate(page.lines):
            # Lines are wrapped, so also look for a match that starts here and runs on.
            following = page.lines[i + 1] if i + 1 < len(page.lines) else ""
            position = f"{line} {following}".lower().find(needle)
            if 0 <= position < len(line):
                matches.append(i)
        if not matches:
            return f"No matches for `{pattern}` in page [{current}] {page.title}."

        shown = matches[: self.max_find_results]
        lines: list[str] = []
        for match_id, line_no in enumerate(shown):
            if lines:
                lines.append("")
            lines.append(f"【{match_id}†match at L{line_no}】")
            # Source link markers become plain text here: ids on this page name matches.
            lines.extend(_LINK_MARKER.sub(r"\1", text) for text in page.lines[line_no : line_no + 2] if text)
        result = Page(
            url=page.url,
            title=f"Find results for text: `{pattern}` in `{page.title}`",
            lines=lines,
            jumps={match_id: (current, line_no) for match_id, line_no in enumerate(shown)},
            note=f"showing the first {len(shown)} of {len(matches)} matches" if len(shown) < len(matches) else "",
        )
        return self._show(self._add(result), -1, -1)

    # -- helpers ----------------------------------------------------------------------------

    def _load(self, url: str, view_source: bool) -> Page:
        """Fetch `url` and turn it into a page (or its source page)."""
        result = fetch(url, limits=self.limits)
        text = extract_text(result.body, result.content_type, result.url, result.charset)
        title = text.title or result.url
        if view_source:
            page = self._source_page(result.url, title, text.source)
        else:
            page = Page(
                url=result.url,
                title=title,
                lines=self._wrap(text.text),
                links={link_id: link.url for link_id, link in enumerate(text.links)},
                source=text.source,
            )
        if result.truncated:
            page.note = f"the page is longer than {self.limits.max_bytes} bytes; only its start is shown"
        return page

    def _source_page(self, url: str, title: str, source: str) -> Page:
        return Page(url=f"view-source:{url}", title=f"Source of {title}", lines=self._wrap(source))

    def _add(self, page: Page) -> int:
        self.pages.append(page)
        return len(self.pages) - 1

    def _cursor(self, cursor: int) -> int:
        """Resolve a cursor argument (-1 = most recent page) to an index into `pages`."""
        if not self.pages:
            raise BrowserError("no page is open yet: use browser.search, or browser.open with a URL")
        cursor = _as_int("cursor", cursor)
        if cursor == -1:
            return len(self.pages) - 1
        if not 0 <= cursor < len(self.pages):
            raise BrowserError(f"no page with cursor {cursor}; open pages have cursors 0-{len(self.pages) - 1}")
        return cursor

    def _show(self, cursor: int, loc: int, num_lines: int) -> str:
        """Render page `cursor` from line `loc` (-1: top) for `num_lines` lines (-1: default)."""
        page = self.pages[cursor]
        header = f"[{cursor}] {page.title}" + (f" ({page.url})" if page.url else "")
        out = [header]
        if page.note:
            out.append(f"**{page.note}**")
        total = len(page.lines)
        if total == 0:
            out.append("(this page has no readable text)")
            return "\n".join(out)
        start = max(loc, 0)
        if start >= total:
            raise BrowserError(f"loc {loc} is past the end of page [{cursor}], which has lines L0-L{total - 1}")
        count = self.view_lines if num_lines <= 0 else min(num_lines, self.max_view_lines)
        end = min(total, start + count)
        out.append(f"**viewing lines [{start} - {end - 1}] of {total - 1}**")
        out.append("")
        out.extend(f"L{i}: {page.lines[i]}" for i in range(start, end))
        return "\n".join(out)

    def _wrap(self, text: str) -> list[str]:
        """Split `text` into lines of about `wrap_width` characters without breaking link markers.

        Short lines make line-number citations precise. Markers are kept whole by
        hiding their spaces from textwrap; a run of text with no spaces at all (minified
        data) is cut hard so one line can never hold a whole page.
        """
        hard_limit = 4 * self.wrap_width
        lines: list[str] = []
        for raw in text.replace("\x00", "").split("\n"):
            if not raw.strip():
                lines.append("")
                continue
            protected = _MARKER.sub(lambda m: m.group().replace(" ", "\x00"), raw.rstrip())
            for piece in textwrap.wrap(
                protected, self.wrap_width, break_long_words=False, break_on_hyphens=False
            ):
                for start in range(0, len(piece), hard_limit):
                    lines.append(piece[start : start + hard_limit].replace("\x00", " "))
        return lines


def _as_int(name: str, value: object) -> int:
    """Accept ints, integral floats and integer strings (models send all three)."""
    if isinstance(value, bool):
        raise BrowserError(f"`{name}` must be an integer, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise BrowserError(f"`{name}` must be an integer, not {value!r}")


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BrowserError(f"`{name}` must be true or false, not {value!r}")
