"""Stop sequences for Chat Completions' `stop`: cut the answer where one first appears.

Text arrives in pieces, so a piece that ends with the start of a stop sequence is held back
until the next shows whether the sequence completes; nothing after a stop is ever sent.
"""

from __future__ import annotations


class StopText:
    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of `text` (with what was held back) that is safe to send."""
        if self.stopped:
            return ""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        keep = max((n for s in self.stops for n in range(1, len(s)) if self.pending.endswith(s[:n])), default=0)
        out, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep :]
        return out

    def flush(self) -> str:
        """What was held back, once the answer is over."""
        out, self.pending = self.pending, ""
        return out
