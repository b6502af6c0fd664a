"""The backend contract: typed requests and replies for text and image-edit calls, and the errors backends raise.

A backend turns one request into one reply. It does no caching, rate limiting, retrying or cost accounting:
the engine wraps every call with those (engine/calls.py), so each backend stays a thin protocol adapter.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

from pydantic import BaseModel, Field

from ..core.digests import image_digest


class Usage(BaseModel):
    """What a call consumed, as the provider reported it; priced by the engine's cost ledger."""

    input_tokens: int = 0
    output_tokens: int = 0
    images_in: int = 0
    images_out: int = 0


class TextRequest(BaseModel):
    """One structured-output text call (classify, rewrite, judge).

    `context` carries structured facts (scene graph, edit program, category) for backends that do not read
    prose (the builtin ones); real backends use `system`, `prompt` and `images`. Every other field is part
    of the cache key; `context` only for backends that read it (`reads_context`).
    """

    task: str
    model: str
    system: str = ""
    prompt: str
    images: list[bytes] = Field(default_factory=list)
    response_schema: dict[str, Any] | None = None
    schema_name: str = "reply"
    params: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)


class TextReply(BaseModel):
    data: dict[str, Any] = Field(default_factory=dict)
    text: str = ""
    usage: Usage = Field(default_factory=Usage)
    model: str = ""


class EditRequest(BaseModel):
    """One image-edit call. `reference_answer` goes to the editor (never into the instruction text).

    `system` is the system half of the edit prompt (prompts/edit.txt): Gemini receives it as
    `system_instruction`; OpenAI `images.edit` has no system role, so it is prepended to the prompt
    (replies.with_system_prefix). `instruction` is the rendered user half (question, reference answer, task).
    `source_size` (width, height), set with `stages.edit.keep_geometry`: ask the model for the source's
    geometry, each backend as close as it supports (backends/geometry.py); an explicit geometry parameter in
    `params` wins. The edit stage brings the reply back to this size whatever the backend did.
    """

    model: str
    instruction: str
    system: str = ""
    image: bytes
    reference_answer: str | None = None
    attempt: int = 0
    params: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    source_size: tuple[int, int] | None = None


class EditReply(BaseModel):
    image: bytes
    text: str = ""
    usage: Usage = Field(default_factory=Usage)
    model: str = ""


def request_key(kind: str, request: BaseModel, *, with_context: bool = True) -> str:
    """The cache key: sha256 of what reaches the model (model, prompt text, schema, parameters, image hashes).

    `context` (structured facts only the builtin backends read) is hashed only `with_context`, i.e. for a
    backend whose `reads_context` is True: editing a stage's context dict must not invalidate the replies of
    a real model, which never saw it. With it, the key is the one every run before this change wrote (the
    engine still finds those entries: engine/calls.py)."""
    payload = request.model_dump(exclude=None if with_context else {"context"})
    if payload.get("source_size", 0) is None:  # unset: the key every run before keep_geometry wrote
        del payload["source_size"]
    images: list[bytes] = []
    if "images" in payload:
        images = payload.pop("images")
    if "image" in payload:
        images = [payload.pop("image")]
    payload["image_sha256"] = [image_digest(b) for b in images]
    blob = json.dumps({"kind": kind, **payload}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class BackendError(Exception):
    """Base of errors a backend raises for one call."""


class RetryableError(BackendError):
    """429, 5xx, timeouts, connection errors: worth retrying after `retry_after` seconds (if the server said)."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class Unreachable(RetryableError):
    """The provider could not be reached (connection refused or reset, DNS, TLS, a timeout): retried like any
    RetryableError, but still failing after the retries it is an outage that stops the run, never a reject."""


class RateLimited(RetryableError):
    """HTTP 429: the whole cluster's bucket for this provider+model pauses for `retry_after`."""


class SafetyBlocked(BackendError):
    """The provider refused on safety grounds: a reject (`safety_blocked`), never a retry."""


class MalformedReply(BackendError):
    """The reply could not be parsed or validated (bad JSON, missing image): one repair attempt, then a reject."""

    def __init__(self, message: str, raw: str = ""):
        super().__init__(message)
        self.raw = raw


class NoImageReply(BackendError):
    """An edit reply without an image (text only, or a finishReason other than a safety one): transient.

    The edit stage asks again, up to `stages.edit.no_image_retries` times (the Uni-Edit release's
    nano_api.generate retries such replies too); the engine never caches it as a final answer and charges
    `usage` (the provider bills the text it sent)."""

    def __init__(self, message: str, usage: Usage | None = None, text: str = ""):
        super().__init__(message)
        self.usage = usage or Usage()
        self.text = text


class BadRequest(BackendError):
    """HTTP 400/404/422: the request itself is wrong; never retried, the record is rejected."""


class NotFound(BadRequest):
    """HTTP 404: what the request names is not there (a model; a batch job the provider no longer knows, which
    engine/batch.py treats as expired)."""


class AuthError(BackendError):
    """HTTP 401/403: the key is wrong; the run stops."""


class Backend:
    """A backend's optional members, with their defaults. The built-in backends subclass it, and a plugin's
    PluginGuard (plugin_guard.py) gives the plugin's own members or these defaults, so the engine calls them
    without checking what a backend has. `provider`, `complete` / `edit` and `aclose` are the protocol's
    (TextBackend, EditBackend below)."""

    provider: str
    #: the BackendSpec the backend was built from (its `model` names the rate-limit bucket); None: built without
    spec: Any = None
    #: True if the backend reads `request.context`: only then is `context` part of the response-cache key
    reads_context: bool = False
    #: "module:Class" of the runner that serves this backend from Ray replicas (engine/replicas.py); None: none
    replica_runner: str | None = None

    @property
    def rate_limited(self) -> bool:
        """Whether calls wait on the cluster's rate limits: a provider's quota, but not the builtin models' (nor a
        local model's, whose capacity is its replicas')."""
        return self.provider != "builtin"

    async def start(self) -> None:
        """Load weights / open pools: once in each worker process before its first call, never in the driver."""

    def preflight(self, engine_kind: str) -> None:
        """Check in the driver, without loading weights, what `start()` will need (a local model's files)."""

    def batch_route(self, capability: str) -> Any:
        """The provider's batch API for `capability` (engine/batch.py), or None: the stage stays online."""
        return None


class TextBackend(Protocol):
    """What a text backend implements (built-in or a plugin named `package.module:ClassName` in the YAML).

    - `__init__(spec: BackendSpec, seed: int = 0)`: cheap, by contract. Check `spec.options`, read an API
      key from the environment (raise `BackendConfigError` with a one-line message). Never load model weights
      here: the driver builds each backend once to check the config before any worker starts.
    - `provider`: a name for rate-limit buckets (`<provider>/<model>`); "builtin" skips the rate limiter.
    - the optional members of `Backend` above (`start()`, `reads_context`, `rate_limited`, `batch_route()`,
      `preflight()`, `spec`): a class may subclass it, or define the ones it needs; the others take its defaults.
    - `complete(request)`: one call; raise the errors below (RetryableError/RateLimited for 429/5xx/timeouts,
      SafetyBlocked, BadRequest, MalformedReply, AuthError); caching, limits, retries and cost are the
      engine's.
    - `aclose()`: release clients.
    """

    provider: str

    async def complete(self, request: TextRequest) -> TextReply: ...

    async def aclose(self) -> None: ...


class EditBackend(Protocol):
    """What an image-edit backend implements: as TextBackend, with `edit(request) -> EditReply` (the edited
    image as PNG or JPEG bytes) in place of `complete`. examples/plugins/tint_editor.py is a small example."""

    provider: str

    async def edit(self, request: EditRequest) -> EditReply: ...

    async def aclose(self) -> None: ...


def protocol_methods(protocol: type) -> list[str]:
    """The methods a backend class must have to follow `protocol`."""
    return [name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")]
