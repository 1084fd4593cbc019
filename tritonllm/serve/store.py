"""Stored responses, for `previous_response_id` and `GET /v1/responses/{id}`.

Kept in memory, least recently used dropped past a cap: the server is a single process
serving one model, and a response that is gone only means the client must resend the
conversation. Each entry keeps the harmony messages after the header (the next turn's
history), so continuing never re-parses the client-facing JSON.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from openai_harmony import Message


@dataclass(frozen=True)
class StoredResponse:
    response: dict  # the Response object as sent to the client
    history: list[Message]  # the conversation after the header, this response included
    call_names: dict[str, str]  # call_id -> function name, for function_call_output items
    start_date: str  # the conversation's first day, kept so the prompt prefix (and KV cache) stays


class ResponseStore:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"the response store needs a capacity >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def put(self, entry: StoredResponse) -> None:
        self._entries[entry.response["id"]] = entry
        self._entries.move_to_end(entry.response["id"])
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        entry = self._entries.get(response_id)
        if entry is not None:
            self._entries.move_to_end(response_id)
        return entry

    def __len__(self) -> int:
        return len(self._entries)
