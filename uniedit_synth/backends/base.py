"""The backend contract: typed requests and replies for text and image-edit calls, and the errors backends raise.

A backend turns one request into one reply. It does no caching, rate limiting, retrying or cost accounting:
the engine wraps every call with those (engine/calls.py), so each backend stays a thin protocol adapter.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, Field


class Usage(BaseModel):
    """What a call consumed, as the provider reported it; priced by the engine's cost ledger."""

    input_tokens: int = 0
    output_tokens: int = 0
    images_in: int = 0
    images_out: int = 0


class TextRequest(BaseModel):
    """One structured-output text call (classify, rewrite, judge).

    `context` carries structured facts (scene graph, edit program, category) for backends that do not read
    prose (the builtin ones); real backends use `system`, `prompt` and `images`. Every field is part of the
    cache key.
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
    """One image-edit call. `reference_answer` goes to the editor (never into the instruction text)."""

    model: str
    instruction: str
    image: bytes
    reference_answer: str | None = None
    attempt: int = 0
    params: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)


class EditReply(BaseModel):
    image: bytes
    text: str = ""
    usage: Usage = Field(default_factory=Usage)
    model: str = ""


def request_key(kind: str, request: BaseModel) -> str:
    """sha256 of the full request (model, prompt text, parameters, image hashes, context): the cache key."""
    payload = request.model_dump()
    images: list[bytes] = []
    if "images" in payload:
        images = payload.pop("images")
    if "image" in payload:
        images = [payload.pop("image")]
    payload["image_sha256"] = [hashlib.sha256(b).hexdigest() for b in images]
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


class BadRequest(BackendError):
    """HTTP 400/404/422: the request itself is wrong; never retried, the record is rejected."""


class AuthError(BackendError):
    """HTTP 401/403: the key is wrong; the run stops."""


@runtime_checkable
class TextBackend(Protocol):
    name: ClassVar[str]
    provider: str

    async def complete(self, request: TextRequest) -> TextReply: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EditBackend(Protocol):
    name: ClassVar[str]
    provider: str

    async def edit(self, request: EditRequest) -> EditReply: ...

    async def aclose(self) -> None: ...
