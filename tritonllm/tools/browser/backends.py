"""Pluggable web-search backends for `browser.search`.

A backend turns a query into a ranked list of `SearchResult(title, url, snippet)`; the
browser tool renders that list as a page of numbered links. Two hosted APIs are
supported, Exa and You.com; each takes its API key and base URL as constructor
arguments (this module never reads the environment), so callers decide where keys come
from and tests can point a backend at a local server. `NoSearchBackend` stands in when
no key is configured and fails with a message saying how to configure one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from urllib.parse import urlencode

from .fetch import FetchError, FetchLimits, fetch

logger = logging.getLogger(__name__)

_MAX_SNIPPET_CHARS = 400
_API_LIMITS = FetchLimits(max_bytes=4_000_000, max_redirects=2, timeout_s=20.0)


class SearchError(Exception):
    """A search could not be run; the message is meant to be shown to the model."""


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    snippet: str


class SearchBackend:
    """Base class: `search(query, topn)` returns at most `topn` results, best first."""

    name = "search"

    def search(self, query: str, topn: int) -> list[SearchResult]:
        raise NotImplementedError

    def _get_json(self, url: str, *, headers: dict[str, str], payload: dict | None = None) -> dict:
        """GET `url` (or POST `payload` as JSON) and return the decoded JSON object."""
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        all_headers = {"Accept": "application/json", **headers}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        try:
            result = fetch(
                url, limits=_API_LIMITS, method="GET" if data is None else "POST", headers=all_headers, data=data
            )
        except FetchError as e:
            raise SearchError(f"{self.name} search failed: {e}") from None
        if result.truncated:
            raise SearchError(f"{self.name} search failed: response larger than {_API_LIMITS.max_bytes} bytes")
        try:
            decoded = json.loads(result.body.decode(result.charset or "utf-8", errors="replace"))
        except json.JSONDecodeError as e:
            raise SearchError(f"{self.name} search failed: response is not valid JSON ({e.msg})") from None
        if not isinstance(decoded, dict):
            raise SearchError(f"{self.name} search failed: unexpected response shape")
        return decoded


class ExaBackend(SearchBackend):
    """Exa search API: POST {base_url}/search with the key in the `x-api-key` header."""

    name = "Exa"
    DEFAULT_BASE_URL = "https://api.exa.ai"

    def __init__(self, api_key: str, base_url: str = DEFAULT_BASE_URL) -> None:
        if not api_key:
            raise ValueError("ExaBackend needs an API key")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")

    def search(self, query: str, topn: int) -> list[SearchResult]:
        payload = {
            "query": query,
            "numResults": topn,
            "contents": {"text": {"maxCharacters": _MAX_SNIPPET_CHARS}},
        }
        logger.debug("Exa search %r (topn=%d)", query, topn)
        data = self._get_json(f"{self.base_url}/search", headers={"x-api-key": self._api_key}, payload=payload)
        results = []
        for item in _list_of_dicts(data.get("results")):
            url = item.get("url")
            if not isinstance(url, str) or not url:
                continue
            results.append(
                SearchResult(title=_clean(item.get("title")) or url, url=url, snippet=_snippet(item.get("text")))
            )
        return results[:topn]


class YouComBackend(SearchBackend):
    """You.com search API: GET {base_url}/v1/search?query=..&count=.. with the `X-API-Key` header."""

    name = "You.com"
    DEFAULT_BASE_URL = "https://ydc-index.io"

    def __init__(self, api_key: str, base_url: str = DEFAULT_BASE_URL) -> None:
        if not api_key:
            raise ValueError("YouComBackend needs an API key")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")

    def search(self, query: str, topn: int) -> list[SearchResult]:
        logger.debug("You.com search %r (topn=%d)", query, topn)
        url = f"{self.base_url}/v1/search?" + urlencode({"query": query, "count": topn})
        data = self._get_json(url, headers={"X-API-Key": self._api_key})
        sections = data.get("results")
        if not isinstance(sections, dict):
            raise SearchError("You.com search failed: response has no 'results' object")
        results = []
        for item in _list_of_dicts(sections.get("web")) + _list_of_dicts(sections.get("news")):
            url = item.get("url")
            if not isinstance(url, str) or not url:
                continue
            snippets = item.get("snippets")
            snippet = " ".join(snippets) if isinstance(snippets, list) and snippets else item.get("description")
            results.append(SearchResult(title=_clean(item.get("title")) or url, url=url, snippet=_snippet(snippet)))
        return results[:topn]


class NoSearchBackend(SearchBackend):
    """Placeholder used when no search API key is configured; every search fails clearly."""

    name = "none"

    def search(self, query: str, topn: int) -> list[SearchResult]:
        raise SearchError(
            "web search is not configured: set EXA_API_KEY (Exa) or YDC_API_KEY (You.com) in the "
            "environment, or pass exa_api_key / ydc_api_key to backend_from_keys(). "
            "Pages can still be opened by URL with browser.open."
        )


def backend_from_keys(exa_api_key: str | None = None, ydc_api_key: str | None = None) -> SearchBackend:
    """Pick a backend from whichever key is given: Exa first, then You.com, else `NoSearchBackend`."""
    if exa_api_key:
        return ExaBackend(exa_api_key)
    if ydc_api_key:
        return YouComBackend(ydc_api_key)
    return NoSearchBackend()


def _list_of_dicts(value: object) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _clean(value: object) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _snippet(value: object) -> str:
    text = _clean(value)
    return text if len(text) <= _MAX_SNIPPET_CHARS else text[: _MAX_SNIPPET_CHARS - 1] + "…"
