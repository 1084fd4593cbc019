"""gpt-oss's `browser` tool: web search, page opening and in-page find for the chat model.

`BrowserTool` is the tool itself (one instance per conversation); search goes through a
pluggable `SearchBackend` (`backend_from_keys` picks Exa, You.com or none from API keys).
"""

from .backends import (
    ExaBackend,
    NoSearchBackend,
    SearchBackend,
    SearchError,
    SearchResult,
    YouComBackend,
    backend_from_keys,
)
from .fetch import FetchError, FetchLimits, FetchResult, fetch
from .html_text import PageText, UnsupportedContentError, extract_text, html_to_text
from .tool import BrowserError, BrowserTool, Page

__all__ = [
    "BrowserError",
    "BrowserTool",
    "ExaBackend",
    "FetchError",
    "FetchLimits",
    "FetchResult",
    "NoSearchBackend",
    "Page",
    "PageText",
    "SearchBackend",
    "SearchError",
    "SearchResult",
    "UnsupportedContentError",
    "YouComBackend",
    "backend_from_keys",
    "extract_text",
    "fetch",
    "html_to_text",
]
