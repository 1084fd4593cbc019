"""Turn a fetched body into plain text the model can read, with numbered links.

HTML is converted with the standard library's `html.parser` only: scripts, styles,
navigation bars and other chrome are dropped; headings, paragraphs, list items, table
rows and preformatted blocks keep their line structure. Every followable link becomes an
inline marker `【{id}†{link text}†{domain}】`, ids counting from 0 in page order, so the
model can name a link by id in `browser.open`.

Plain-text bodies are shown as they are. Anything else (images, PDFs, archives, ...)
is refused with `UnsupportedContentError`, whose message names the content type.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

HTML_TYPES = ("text/html", "application/xhtml+xml")
# Non-text/* types that are still plain text and worth showing as is.
TEXT_LIKE_TYPES = ("application/json", "application/xml", "application/javascript", "application/x-yaml")

# Elements whose whole content is noise for a reader.
_SKIP_TAGS = frozenset(
    {"script", "style", "noscript", "template", "svg", "canvas", "iframe", "nav", "footer", "select", "button"}
)
# Elements that start and end on their own line.
_LINE_TAGS = frozenset(
    {"div", "section", "article", "main", "header", "aside", "li", "dt", "dd", "tr", "figure",
     "figcaption", "form", "fieldset", "address", "details", "summary", "caption", "br", "hr"}
)
# Elements followed by a blank line.
_PARAGRAPH_TAGS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "table", "pre", "blockquote"}
)
_HEADINGS = {f"h{n}": "#" * n + " " for n in range(1, 7)}
_MAX_LINK_TEXT = 80
_MARKER_CHARS = str.maketrans({"【": "[", "】": "]", "†": "+"})
# Control bytes that do not occur in text (tab, newlines, form feed and ESC are allowed).
_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


class UnsupportedContentError(Exception):
    """The body is of a content type the browser cannot show as text."""


@dataclass(frozen=True)
class Link:
    url: str
    text: str


@dataclass
class PageText:
    """A readable rendering of one document."""

    title: str
    text: str  # newline-separated; links appear as 【id†text†domain】 markers
    links: list[Link] = field(default_factory=list)  # index == link id
    source: str = ""  # the decoded body, for `view_source`


def link_marker(link_id: int, text: str, url: str) -> str:
    """The inline marker for link `link_id`, in the format gpt-oss was trained on."""
    text = " ".join(text.split()).translate(_MARKER_CHARS)
    if len(text) > _MAX_LINK_TEXT:
        text = text[: _MAX_LINK_TEXT - 1] + "…"
    return f"【{link_id}†{text}†{domain_of(url)}】"


def domain_of(url: str) -> str:
    """Host (and port, if any) of `url`, without a leading "www."."""
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    return netloc.removeprefix("www.")


def extract_text(body: bytes, content_type: str, url: str, charset: str | None = None) -> PageText:
    """Render `body` served as `content_type` from `url`; raise `UnsupportedContentError` for non-text."""
    kind = content_type or _sniff(body)
    if kind in HTML_TYPES:
        html = decode_body(body, charset or _meta_charset(body))
        return html_to_text(html, url)
    if kind.startswith("text/") or kind in TEXT_LIKE_TYPES or kind.endswith(("+json", "+xml")):
        text = decode_body(body, charset)
        name = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
        return PageText(title=name or url, text=text, source=text)
    if not content_type:
        raise UnsupportedContentError(f"{url} has no content type and looks like binary data; it cannot be shown as text")
    raise UnsupportedContentError(
        f"{url} is of content type {content_type!r}, which cannot be shown as text "
        "(only HTML and plain-text pages can be opened)"
    )


def decode_body(body: bytes, charset: str | None) -> str:
    """Decode with `charset` if Python knows it, else UTF-8; undecodable bytes become U+FFFD."""
    encoding = "utf-8"
    if charset:
        try:
            encoding = codecs.lookup(charset).name
        except LookupError:
            pass
    return body.decode(encoding, errors="replace")


def html_to_text(html: str, base_url: str) -> PageText:
    """Convert an HTML document to readable text with link markers; links resolve against `base_url`."""
    parser = _TextExtractor(base_url)
    parser.feed(html)
    parser.close()
    return PageText(title=parser.title(), text=parser.text(), links=parser.links, source=html)


def _sniff(body: bytes) -> str:
    """Guess a content type for a body served without one: HTML, plain text or "" (binary)."""
    head = body[:1024].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
        return "text/html"
    if not _BINARY_BYTES.search(body[:4096]):
        return "text/plain"
    return ""


def _meta_charset(body: bytes) -> str | None:
    """Charset named by a `<meta charset>` / http-equiv tag near the top of an HTML body."""
    match = _META_CHARSET.search(body[:4096])
    return match.group(1).decode("ascii") if match else None


class _TextExtractor(HTMLParser):
    """Streaming HTML -> lines converter; see the module docstring for the rules."""

    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.links: list[Link] = []
        self._lines: list[str] = []
        self._current: list[str] = []
        self._prefix = ""  # written before the next text on the current line ("## ", "* ")
        self._skip_stack: list[str] = []
        self._pre_depth = 0
        self._lists: list[list] = []  # one [tag, counter] per open ul/ol
        self._cells_in_row = 0
        self._title_parts: list[str] | None = None
        self._title = ""
        self._first_h1 = ""
        self._h1_parts: list[str] | None = None
        self._link: tuple[str, list[str]] | None = None  # (href, text parts) while inside <a>

    # -- results --------------------------------------------------------------------------

    def title(self) -> str:
        return self._title or self._first_h1

    def text(self) -> str:
        self._close_link()
        self._break()
        lines: list[str] = []
        for line in self._lines:
            if line or (lines and lines[-1]):
                lines.append(line)
        return "\n".join(lines).strip("\n")

    # -- parser callbacks -----------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip_stack.append(tag)
            return
        if self._skip_stack:
            return
        if tag == "title":
            if not self._title:
                self._title_parts = []
            return
        if tag == "a":
            self._close_link()
            href = dict(attrs).get("href")
            if href:
                self._link = (href, [])
            return
        if tag == "img":
            alt = (dict(attrs).get("alt") or "").strip()
            if alt and self._link is not None:
                self._link[1].append(alt)
            return
        if tag in _PARAGRAPH_TAGS or tag in _LINE_TAGS:
            self._break()
        if tag in _HEADINGS:
            self._prefix = _HEADINGS[tag]
            if tag == "h1" and not self._first_h1:
                self._h1_parts = []
        elif tag in ("ul", "ol"):
            self._lists.append([tag, 0])
        elif tag == "li":
            self._prefix = self._bullet()
        elif tag == "tr":
            self._cells_in_row = 0
        elif tag in ("td", "th"):
            if self._cells_in_row:
                self._current.append(" | ")
            self._cells_in_row += 1
        elif tag == "pre":
            self._pre_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self._skip_stack:
            if tag in self._skip_stack:
                while self._skip_stack.pop() != tag:
                    pass
            return
        if tag == "title":
            if self._title_parts is not None:
                self._title = " ".join("".join(self._title_parts).split())
            self._title_parts = None
            return
        if tag == "a":
            self._close_link()
            return
        if tag in _PARAGRAPH_TAGS:
            self._break(blank=True)
        elif tag in _LINE_TAGS:
            self._break()
        if tag in ("ul", "ol") and self._lists:
            self._lists.pop()
        elif tag == "pre" and self._pre_depth:
            self._pre_depth -= 1
        elif tag == "h1" and self._h1_parts is not None:
            self._first_h1 = " ".join("".join(self._h1_parts).split())
            self._h1_parts = None

    def handle_data(self, data: str) -> None:
        if self._skip_stack:
            return
        if self._title_parts is not None:
            self._title_parts.append(data)
            return
        if self._h1_parts is not None:
            self._h1_parts.append(data)
        if self._link is not None:
            self._link[1].append(data)
            return
        if self._pre_depth:
            first, *rest = data.split("\n")
            self._write(first)
            for piece in rest:
                self._break(keep_spaces=True)
                self._write(piece)
            return
        self._write(re.sub(r"\s+", " ", data))

    # -- helpers --------------------------------------------------------------------------

    def _bullet(self) -> str:
        if not self._lists or self._lists[-1][0] == "ul":
            return "* "
        self._lists[-1][1] += 1
        return f"{self._lists[-1][1]}. "

    def _write(self, text: str) -> None:
        if not text or (not self._current and not text.strip() and not self._pre_depth):
            return
        if self._prefix:
            self._current.append(self._prefix)
            self._prefix = ""
        self._current.append(text)

    def _close_link(self) -> None:
        """Emit the marker for the open <a>, if it has text and a followable target."""
        if self._link is None:
            return
        href, parts = self._link
        self._link = None
        text = " ".join("".join(parts).split())
        if not text:
            return
        url = urljoin(self.base_url, href.strip())
        target = urlsplit(url)
        same_page = target._replace(fragment="") == urlsplit(self.base_url)._replace(fragment="")
        if target.scheme not in ("http", "https") or (same_page and target.fragment):
            self._write(text)
            return
        self._write(link_marker(len(self.links), text, url))
        self.links.append(Link(url=url, text=text))

    def _break(self, blank: bool = False, keep_spaces: bool = False) -> None:
        """End the current line; with `blank`, also leave an empty line after it."""
        line = "".join(self._current)
        line = line.rstrip() if keep_spaces or self._pre_depth else re.sub(r" {2,}", " ", line).strip()
        self._current = []
        if line or keep_spaces:
            self._lines.append(line)
        if blank and self._lines and self._lines[-1]:
            self._lines.append("")
