"""One engine, one generation at a time, many clients.

The engine holds a single KV cache, so generations cannot overlap. `Backend` owns it on a
dedicated worker thread (the model is loaded there too) and serves generation jobs in
arrival order from an asyncio queue. Each job streams its tokens into its own queue, read
by the request that submitted it, so clients never see each other's tokens.

Admission is bounded: a request takes a `Ticket` for its whole life (one running and
`max_queue` waiting); past that `admit()` raises `Busy` and the client is told to retry.
A job whose request goes away is cancelled: the worker stops pulling tokens from the model
at the next one, closes the token source and moves on to the next job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tritonllm.conversation import TokenSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """How a request wants tokens drawn (see `LLM.generate`)."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


# Given a request's sampling, the token source to run its prompt through.
SourceFactory = Callable[[Sampling], TokenSource]


class Busy(Exception):
    """Every slot is taken; the request should be retried later."""


class NotReady(Exception):
    """The model is not loaded (yet, or loading failed: `error` says)."""

    def __init__(self, error: str | None):
        super().__init__(error or "the model is still loading")
        self.error = error


class GenerationError(RuntimeError):
    """The model failed while generating."""


_END = object()


class Job:
    """One prompt run through the model; iterate it (async) for the token ids."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prompt: list[int], stop: list[int], sampling: Sampling,
                 max_tokens: int):
        self.prompt, self.stop, self.sampling, self.max_tokens = prompt, stop, sampling, max_tokens
        self.cancelled = threading.Event()
        self._loop = loop
        self._tokens: asyncio.Queue = asyncio.Queue()

    def cancel(self) -> None:
        """Stop generating: the worker drops the job at its next token (or before it starts)."""
        self.cancelled.set()

    def put(self, item) -> None:
        """From the worker thread: hand over a token id, or how the job ended (an exception or the end)."""
        self._loop.call_soon_threadsafe(self._tokens.put_nowait, item)

    def __aiter__(self):
        return self

    async def __anext__(self) -> int:
        item = await self._tokens.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise GenerationError(f"the model failed: {type(item).__name__}: {item}") from item
        return item


class Ticket:
    """A request's place in the backend; `release()` (idempotent) gives it back."""

    def __init__(self, backend: Backend):
        self._backend = backend
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._backend.admitted -= 1


class Backend:
    """Loads the model with `load()` (on the worker thread, at start) and runs jobs one by one."""

    def __init__(self, load: Callable[[], SourceFactory], max_queue: int = 64):
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.max_queue = max_queue
        self.admitted = 0  # requests holding a ticket: at most one running + max_queue waiting
        self.load_error: str | None = None
        self._load = load
        self._factory: SourceFactory | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task | None = None
        self._jobs: asyncio.Queue[Job] | None = None
        self._current: Job | None = None

    @property
    def ready(self) -> bool:
        return self._factory is not None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._jobs = asyncio.Queue(maxsize=self.max_queue + 1)  # never full: admission bounds it
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tritonllm-engine")
        self._worker = asyncio.create_task(self._serve(), name="tritonllm-backend")

    async def stop(self) -> None:
        """Cancel the running and the waiting jobs, then let the worker thread go."""
        if self._current is not None:
            self._current.cancel()
        while self._jobs is not None and not self._jobs.empty():
            self._jobs.get_nowait().put(_END)
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def admit(self) -> Ticket:
        """A place for one request (raises NotReady or Busy)."""
        if not self.ready:
            raise NotReady(self.load_error)
        if self.admitted > self.max_queue:
            raise Busy()
        self.admitted += 1
        return Ticket(self)

    def submit(self, prompt: list[int], stop: list[int], sampling: Sampling, max_tokens: int) -> Job:
        """Queue a generation of at most `max_tokens` tokens; the caller must hold a ticket."""
        job = Job(self._loop, list(prompt), list(stop), sampling, max_tokens)
        self._jobs.put_nowait(job)
        return job

    async def _serve(self) -> None:
        try:
            self._factory = await self._loop.run_in_executor(self._executor, self._load)
        except Exception as e:
            self.load_error = f"loading the model failed: {type(e).__name__}: {e}"
            log.error("%s", self.load_error, exc_info=e)
            return
        log.info("model loaded; serving requests")
        while True:
            job = await self._jobs.get()
            self._current = job
            try:
                await self._loop.run_in_executor(self._executor, self._run, job)
            finally:
                self._current = None

    def _run(self, job: Job) -> None:
        """On the worker thread: stream the job's tokens until a stop token, its budget or a cancel."""
        tokens: Iterator[int] | None = None
        outcome = _END
        try:
            if not job.cancelled.is_set():
                tokens = iter(self._factory(job.sampling)(job.prompt, job.stop))
                for count, token in enumerate(tokens):
                    if job.cancelled.is_set():
                        log.info("generation cancelled after %d tokens", count)
                        break
                    job.put(token)
                    if token in job.stop or count + 1 >= job.max_tokens:
                        break
        except Exception as e:
            log.error("generation failed", exc_info=e)
            outcome = e
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()
            job.put(outcome)
