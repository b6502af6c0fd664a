"""One backend call as the engine makes it: cache lookup, budget check, rate limit, retries, cost ledger.

Backends are thin protocol adapters; everything that must be the same for every provider lives here:
- a reply (or a final refusal: safety block, bad request, malformed reply) is cached by the sha256 of the
  full request, so re-running never repeats a call that returned;
- the cluster-wide coordinator spaces calls per provider+model and is told about every Retry-After;
- retries (tenacity) cover 429/5xx/timeouts/connection errors with jittered exponential back-off, never
  400/401/403; a 401 aborts the run, and so does a provider still unreachable after the retries (an outage
  is not a property of the record: its shard stays unfinished and a rerun picks it up);
- the cost of each call is priced from the config's table and charged to the shared budget;
- an edit reply without an image (NoImageReply) is charged but never cached as the request's answer: a
  note of it is stored under its own key for `uniedit inspect`, and the edit stage asks again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from ..backends.base import (
    AuthError,
    BackendError,
    BadRequest,
    EditReply,
    EditRequest,
    MalformedReply,
    NoImageReply,
    RateLimited,
    RetryableError,
    SafetyBlocked,
    TextReply,
    TextRequest,
    Unreachable,
    Usage,
    request_key,
)
from ..core.config import Price, RetrySpec
from ..core.errors import AuthenticationFailed, ProviderUnreachable
from ..core.ledger import Ledger
from ..core.redact import redact_url
from ..run.cache import CacheEntry, ResponseCache

log = logging.getLogger(__name__)

_FINAL_ERRORS: dict[str, type[BackendError]] = {
    "safety_blocked": SafetyBlocked,
    "bad_request": BadRequest,
    "malformed": MalformedReply,
}


class BudgetExhausted(Exception):
    """The run's --max-cost is spent: no new paid call is started."""


class CoordinatorLike(Protocol):
    async def acquire(self, bucket: str, tokens: int = 0) -> float: ...
    async def pause(self, bucket: str, seconds: float) -> None: ...
    async def budget_left(self) -> bool: ...
    async def spend(self, usd: float) -> bool: ...


def price(prices: dict[str, Price], model: str, usage: Usage, batch: bool = False) -> float:
    """What a call with `usage` costs at the table's prices (a batch job's at the model's batch_factor)."""
    p = prices.get(model)
    if p is None:
        return 0.0
    online = (
        usage.input_tokens * p.input_per_mtok / 1e6
        + usage.output_tokens * p.output_per_mtok / 1e6
        + usage.images_in * p.per_image_in
        + usage.images_out * p.per_image_out
    )
    return online * p.batch_factor if batch else online


def no_image_key(request_key: str, seq: int) -> str:
    """Where the note of a no-image reply is stored: a key no request hashes to, so the cache never answers
    the request with it (a rerun asks the provider again)."""
    return hashlib.sha256(f"{request_key}/no-image/{seq}".encode()).hexdigest()


def estimate_tokens(request: TextRequest | EditRequest) -> int:
    text = request.prompt if isinstance(request, TextRequest) else request.instruction
    images = len(request.images) if isinstance(request, TextRequest) else 1
    return len(text) // 4 + 800 * images


class RunStopping(Exception):
    """The run is stopping (an outage, Ctrl-C, SIGTERM): no new call is sent; the record's shard is left
    unfinished, for the rerun. Not a BackendError, so no stage turns it into a reject."""


class Drain:
    """A worker's calls on the wire, so that an orderly stop can wait for them (and their cache writes) before
    the worker is killed: a reply that arrived is then never paid for again by the rerun."""

    def __init__(self) -> None:
        self.stopping = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._halted = asyncio.Event()
        #: the error that stopped this worker (its other shards end with it too, not with RunStopping)
        self.cause: BaseException | None = None

    def halt(self, cause: BaseException | None = None) -> None:
        """Send nothing new from now on (a retry's back-off in progress ends at once)."""
        if cause is not None and self.cause is None and not isinstance(cause, RunStopping):
            self.cause = cause
        self.stopping = True
        self._halted.set()

    async def pause(self, seconds: float) -> None:
        """A back-off before a retry, cut short when the run stops (the retry is then not sent)."""
        try:
            await asyncio.wait_for(self._halted.wait(), timeout=max(0.0, seconds))
        except asyncio.TimeoutError:
            pass

    def enter(self) -> None:
        if self.stopping:
            raise RunStopping("the run is stopping")
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight <= 0:
            self._idle.set()

    async def stop(self, timeout_s: float) -> int:
        """Send nothing new; wait (at most `timeout_s`) for the calls on the wire. Returns how many were."""
        self.halt()
        waited = self.in_flight
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, timeout_s))
        except asyncio.TimeoutError:
            pass
        return waited


class ModelCaller:
    """Makes the calls of one stage through one backend, for every record a worker handles."""

    def __init__(
        self,
        stage: str,
        backend: Any,
        *,
        cache: ResponseCache,
        coordinator: CoordinatorLike,
        prices: dict[str, Price],
        retry: RetrySpec,
        rate_limited: bool,
        sleep=asyncio.sleep,
        backend_name: str = "",
    ):
        self.stage = stage
        self.backend = backend
        self.cache = cache
        self.coordinator = coordinator
        self.prices = prices
        self.retry = retry
        self.rate_limited = rate_limited
        self.bucket = f"{backend.provider}/{backend.spec.model}" if backend.spec is not None else stage
        #: only a backend that reads `request.context` has it in its cache keys (backends/base.py request_key)
        self.reads_context = bool(backend.reads_context)
        self._sleep = sleep
        #: set by the worker when this stage runs in batch mode: a cache miss then waits for a batch job
        self.batch: Any = None
        #: request key -> done when the call in flight for it returns (identical requests are sent once)
        self._in_flight: dict[str, asyncio.Future] = {}
        #: the worker's calls on the wire (set by the worker; an orderly stop waits for them)
        self.drain = Drain()
        self.backend_name = backend_name

    async def text(self, request: TextRequest, ledger: Ledger) -> TextReply:
        entry = await self._call("text", request, ledger)
        return TextReply.model_validate(entry[0])

    async def edit(self, request: EditRequest, ledger: Ledger) -> EditReply:
        meta, payload = await self._call("edit", request, ledger)
        return EditReply.model_validate({**meta, "image": payload})

    async def _call(self, kind: str, request: TextRequest | EditRequest, ledger: Ledger) -> tuple[dict, bytes]:
        key = request_key(kind, request, with_context=self.reads_context)
        hit = self.cache.get(key)
        if hit is None and not self.reads_context and self.cache.legacy_keys:
            hit = self._legacy_hit(kind, request, key)
        if hit is not None:
            info = hit.meta.pop("_call")
            ledger.add(self.stage, info["cost_usd"], info["latency_s"], True, key, info.get("error"), kind,
                       request.model, paid_by=info.get("paid_by"), batch=bool(info.get("batch")))
            if "error" in info:
                raise _FINAL_ERRORS[info["error"]](info["detail"])
            return hit.meta, hit.payload

        waiter = self._in_flight.get(key)
        if waiter is not None:
            # the same request is on the wire for another record of this worker: wait for its reply and take
            # it from the cache (paid once; this record's row attributes it), or call again if it failed
            await asyncio.shield(waiter)
            return await self._call(kind, request, ledger)
        if not await self.coordinator.budget_left():
            raise BudgetExhausted()
        if self.batch is not None:
            self.batch.defer(self, kind, key, request, ledger)  # raises BatchPending unless it goes online
        self.drain.enter()  # raises RunStopping once the run stops: nothing new goes out
        done = asyncio.get_running_loop().create_future()
        self._in_flight[key] = done
        try:
            return await self._call_provider(kind, request, ledger, key)
        finally:
            self._in_flight.pop(key, None)
            done.set_result(None)
            self.drain.leave()

    async def _call_provider(self, kind: str, request: TextRequest | EditRequest, ledger: Ledger,
                             key: str) -> tuple[dict, bytes]:
        started = time.monotonic()
        try:
            reply = await self._with_retries(kind, request)
        except Unreachable as exc:
            raise ProviderUnreachable(
                f"{self.where()} is unreachable after {self.retry.max_attempts} attempt(s): {exc}; the run stopped "
                "(shards in flight are not finished): run the same command again once it is reachable"
            ) from None
        except (SafetyBlocked, BadRequest, MalformedReply) as exc:
            latency = time.monotonic() - started
            code = next(name for name, cls in _FINAL_ERRORS.items() if isinstance(exc, cls))
            info = {"cost_usd": 0.0, "latency_s": latency, "error": code, "detail": str(exc)[:500],
                    "paid_by": ledger.owner}
            self.cache.put(key, {"_call": info})
            ledger.add(self.stage, 0.0, latency, False, key, code, kind, request.model)
            raise
        except NoImageReply as exc:
            latency = time.monotonic() - started
            cost = price(self.prices, request.model, exc.usage)
            note = no_image_key(key, len(ledger.events))
            info = {"cost_usd": cost, "latency_s": latency, "error": "no_image", "detail": str(exc)[:500]}
            self.cache.put(note, {"text": exc.text, "usage": exc.usage.model_dump(), "_call": info})
            ledger.add(self.stage, cost, latency, False, note, "no_image", kind, request.model)
            await self.coordinator.spend(cost)
            raise
        latency = time.monotonic() - started
        cost = price(self.prices, reply.model or request.model, reply.usage)
        meta = reply.model_dump(exclude={"image"})
        payload = reply.image if isinstance(reply, EditReply) else b""
        # persist first: the only window in which a kill loses a paid reply is this one write
        self.cache.put(key, {**meta, "_call": {"cost_usd": cost, "latency_s": latency, "paid_by": ledger.owner}},
                       payload)
        ledger.add(self.stage, cost, latency, False, key, None, kind, request.model)
        await self.coordinator.spend(cost)
        return meta, payload

    def _legacy_hit(self, kind: str, request: TextRequest | EditRequest, key: str) -> CacheEntry | None:
        """A reply cached before context left the keys of backends that never read it: found under its old
        key (context included) and copied to the new one, so no paid reply is asked for again."""
        legacy = request_key(kind, request, with_context=True)
        if legacy == key:
            return None
        hit = self.cache.get(legacy)
        if hit is not None:
            self.cache.put(key, hit.meta, hit.payload)
        return hit

    async def _with_retries(self, kind: str, request: TextRequest | EditRequest) -> TextReply | EditReply:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(RetryableError),
            reraise=True,
            sleep=self._retry_sleep,
        )
        async for attempt in retrying:
            with attempt:
                if self.drain.stopping and attempt.retry_state.attempt_number > 1:
                    raise RunStopping("the run is stopping: no retry")
                if self.rate_limited:
                    delay = await self.coordinator.acquire(self.bucket, estimate_tokens(request))
                    if delay > 0:
                        await self._sleep(delay)
                    if self.drain.stopping:  # waited for a slot while the run stopped: not sent
                        raise RunStopping("the run is stopping")
                try:
                    if kind == "text":
                        return await self.backend.complete(request)
                    return await self.backend.edit(request)
                except RateLimited as exc:
                    if exc.retry_after:
                        await self.coordinator.pause(self.bucket, exc.retry_after)
                    raise
                except AuthError as exc:
                    raise AuthenticationFailed(
                        f"{self.bucket}: the provider rejected the API key ({exc}); check your API key "
                        "environment variable and the backend's base_url"
                    ) from None
                except asyncio.TimeoutError:
                    raise Unreachable(f"{self.bucket}: timed out") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _retry_sleep(self, seconds: float) -> None:
        if self._sleep is not asyncio.sleep:  # a test's clock
            await self._sleep(seconds)
        else:
            await self.drain.pause(seconds)

    def where(self) -> str:
        """The backend as an error message names it: provider/model and the endpoint (without credentials)."""
        spec = self.backend.spec
        url = redact_url(spec.base_url if spec is not None else None)
        name = f"'{self.backend_name}' ({self.bucket})" if self.backend_name else self.bucket
        return f"backend {name}" + (f" at {url}" if url else "")

    def _wait(self, retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        backoff = wait_exponential_jitter(
            initial=self.retry.initial_s, max=self.retry.max_s, jitter=self.retry.jitter_s
        )(retry_state)
        if isinstance(exc, RetryableError) and exc.retry_after:
            # the coordinator already holds the bucket; wait at least as long as the server asked
            return max(float(exc.retry_after), min(backoff, self.retry.max_s))
        return backoff
