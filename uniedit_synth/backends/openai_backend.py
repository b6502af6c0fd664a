"""The OpenAI backends: Chat Completions for text (`openai`, `openai-compatible`) and Images Edits for editing.

Thin protocol adapters over the official `openai` SDK (AsyncOpenAI). The SDK's own retries are off
(`max_retries=0`): the engine owns retrying, rate limiting and caching. Every SDK error is mapped onto the
backend contract in `base.py`; the API key never appears in an exception message or a log record.

`spec.options` recognised here: `json_mode` (bool; ask for `response_format={"type": "json_object"}` when
structured outputs are off), `image_detail` ("auto" | "low" | "high"; detail of input images), `organization`,
`project`. Call parameters (temperature, max_tokens, seed, size, quality, n, …) come from the stage's
`params`; parameters the SDK method does not know travel in `extra_body` (vLLM's `top_k`, …).
"""

from __future__ import annotations

import base64
import binascii
import inspect
import logging
import os
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn

import openai
from openai import AsyncOpenAI
from openai._base_client import make_request_options
from openai.resources.chat.completions import AsyncCompletions
from openai.resources.images import AsyncImages
from openai.types import ImagesResponse
from openai.types.chat import ChatCompletion

from ..core.config import BackendSpec
from ..core.errors import BackendConfigError
from .base import (
    AuthError,
    BackendError,
    BadRequest,
    EditReply,
    EditRequest,
    MalformedReply,
    NoImageReply,
    NotFound,
    RateLimited,
    RetryableError,
    SafetyBlocked,
    TextReply,
    TextRequest,
    Unreachable,
    Usage,
)
from .geometry import gpt_image_size
from .provider import ProviderBackend, shared_ssl_context
from .replies import (
    image_mime,
    json_instructions,
    parse_reply,
    repair_message,
    retry_after_seconds,
    truncate,
    with_reference_hint,
    with_system_prefix,
)

log = logging.getLogger(__name__)

#: 400 error codes (and types) that mean the provider's safety system refused: a reject, never a retry
SAFETY_CODES = frozenset(
    {"moderation_blocked", "content_policy_violation", "content_filter", "safety_violation"}
)
_KNOWN_OPTIONS = frozenset({"json_mode", "image_detail", "organization", "project"})
_RESERVED_CHAT = frozenset(
    {
        "messages",
        "model",
        "stream",
        "response_format",
        "extra_body",
        "extra_headers",
        "extra_query",
        "timeout",
    }
)
_RESERVED_EDIT = frozenset(
    {"image", "prompt", "model", "stream", "extra_body", "extra_headers", "extra_query", "timeout"}
)
_CHAT_PARAMS = frozenset(inspect.signature(AsyncCompletions.create).parameters) - {"self"} - _RESERVED_CHAT
_EDIT_PARAMS = frozenset(inspect.signature(AsyncImages.edit).parameters) - {"self"} - _RESERVED_EDIT
#: `images.edit` parameters that are uploads (multipart files), as the SDK's extract_files paths name them
_EDIT_FILES = ("markup", "mask")


def split_params(params: dict[str, Any], known: frozenset[str], reserved: frozenset[str]) -> dict[str, Any]:
    """SDK keyword arguments from call params; unknown names go in `extra_body` for compatible servers."""
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in params.items():
        if key in reserved:
            raise BackendConfigError(f"parameter '{key}' is set by the backend and cannot be given in params")
        (kwargs if key in known else extra)[key] = value
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def strict_schema(schema: Any) -> Any:
    """A copy of `schema` that OpenAI's strict structured outputs accept: every object closed
    (`additionalProperties: false`) with all its properties required. Optional fields should be nullable
    (`anyOf` with null, as pydantic writes `X | None`) so the model can still leave them empty."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict_schema(value) for key, value in schema.items()}
    if out.get("type") == "object" or "properties" in out:
        out.setdefault("additionalProperties", False)
        out["required"] = list(out.get("properties", {}))
    return out


class _OpenAIBase(ProviderBackend[AsyncOpenAI]):
    """Client construction, key handling and error mapping shared by the text and edit backends."""

    name: ClassVar[str] = "openai"
    known_options = _KNOWN_OPTIONS

    def __init__(self, spec: BackendSpec, seed: int = 0) -> None:
        compatible = self.name == "openai-compatible" or spec.type == "openai-compatible"
        self.provider: str = "openai-compatible" if compatible else "openai"
        super().__init__(spec, seed)
        self._base_url = spec.base_url or os.environ.get("OPENAI_BASE_URL") or None
        if self.provider == "openai-compatible" and not self._base_url:
            raise BackendConfigError(
                f"backend openai-compatible ({spec.model}) needs base_url (e.g. http://127.0.0.1:8000/v1)"
            )

    def _resolve_key(self) -> str:
        env = self.spec.api_key_env or "OPENAI_API_KEY"
        key = os.environ.get(env, "").strip()
        if key:
            return key
        # Local OpenAI-compatible servers usually run without a key; a named api_key_env is always required.
        if self.provider != "openai-compatible" or self.spec.api_key_env:
            raise BackendConfigError(
                f"backend {self.spec.type} ({self.spec.model}) needs an API key: set the environment "
                f"variable {env}" + ("" if self.spec.api_key_env else " (or name another one in api_key_env)")
            )
        return "not-needed"

    def _make_client(self) -> AsyncOpenAI:
        return AsyncOpenAI(
            api_key=self._api_key,
            base_url=self._base_url,
            organization=self.spec.options.get("organization"),
            project=self.spec.options.get("project"),
            max_retries=0,  # the engine retries (and honours Retry-After cluster-wide)
            timeout=self.spec.timeout_s,
            http_client=self._http_client(),
        )

    def _http_client(self) -> Any:
        """The SDK's default httpx client, with the process's one TLS context (provider.shared_ssl_context)."""
        return openai.DefaultAsyncHttpxClient(verify=shared_ssl_context())

    async def _close_client(self, client: AsyncOpenAI) -> None:
        await client.close()

    def batch_route(self, kind: str) -> Any:
        """None: image edits stay online (the batch route is for Chat Completions; engine/batch.py)."""
        return None

    async def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return await fn()
        except openai.OpenAIError as exc:
            self._raise_mapped(exc)

    def status_error(
        self, status: int, code: str, message: str, *, kind: str = "", retry_after: float | None = None,
        where: str = "",
    ) -> BackendError:
        """The error an HTTP status means, one mapping for an online call and for an item of a batch job
        (batch_routes.OpenAIChatBatch): the same reply must never be a reject online and a retry in a batch.

        429 is a RateLimited (the cluster's bucket pauses), 401/403 an AuthError (the run stops), a 400 from
        the safety system a SafetyBlocked (a reject), 408/409/5xx worth another try, any other 4xx a
        BadRequest (the request itself is wrong: a reject, never retried)."""
        where = where or f"{self.provider} {self.model}"
        message = self._redact(truncate(message))
        text = f"{where}: HTTP {status}" + (f" {code}" if code else "") + f": {message}"
        if status == 429:
            return RateLimited(text, retry_after=retry_after, status=429)
        if status in (401, 403):
            return AuthError(text)
        if status == 400 and (code in SAFETY_CODES or kind in SAFETY_CODES or _mentions_safety(kind, message)):
            return SafetyBlocked(text)
        if status >= 500 or status in (408, 409):
            return RetryableError(text, status=status)
        return (NotFound if status == 404 else BadRequest)(text)

    def _raise_mapped(self, exc: openai.OpenAIError) -> NoReturn:
        where = f"{self.provider} {self.model}"
        if isinstance(exc, openai.APITimeoutError):
            raise Unreachable(f"{where}: request timed out after {self.spec.timeout_s:g}s") from None
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            detail = f" ({type(cause).__name__})" if cause is not None else ""
            raise Unreachable(f"{where}: connection error{detail}") from None
        if isinstance(exc, openai.APIResponseValidationError):
            raise MalformedReply(f"{where}: reply did not match the API schema", raw="") from None
        if isinstance(exc, openai.APIStatusError):
            retry_after = retry_after_seconds(exc.response.headers)
            raise self.status_error(
                exc.status_code, str(exc.code or ""), _error_message(exc), kind=str(exc.type or ""),
                retry_after=retry_after,
            ) from None
        raise BackendError(f"{where}: {type(exc).__name__}: {self._redact(truncate(str(exc)))}") from None


async def _read_body(request: Any) -> None:
    await request.aread()  # httpx keeps the bytes read and sends them as one piece


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message


def _mentions_safety(kind: str, message: str) -> bool:
    return kind == "image_generation_user_error" and "safety system" in message.lower()


def _usage_from_chat(completion: Any) -> tuple[int, int]:
    usage = getattr(completion, "usage", None)
    if usage is None:
        return 0, 0
    return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)


class OpenAIText(_OpenAIBase):
    """Chat Completions with JSON-schema structured output (classify, rewrite, judge)."""

    name: ClassVar[str] = "openai"

    def batch_route(self, kind: str) -> Any:
        """Chat Completions go through the Batch API (Files + Batches) at half the price."""
        from .batch_routes import OpenAIChatBatch

        return OpenAIChatBatch(self) if kind == "text" and self.provider == "openai" else None

    def _chat_request(self, request: TextRequest) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
        """The messages and SDK keyword arguments of a request, and whether it uses structured outputs."""
        schema = request.response_schema
        structured = self.spec.structured_outputs and schema is not None
        system = request.system
        if not structured:
            system = (system + "\n\n" if system else "") + json_instructions(schema)
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": self._user_content(request)})

        kwargs = split_params({"seed": self.seed, **request.params}, _CHAT_PARAMS, _RESERVED_CHAT)
        if structured:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": strict_schema(schema), "strict": True},
            }
        elif self.spec.options.get("json_mode"):
            kwargs["response_format"] = {"type": "json_object"}
        return messages, kwargs, structured

    async def complete(self, request: TextRequest) -> TextReply:
        schema = request.response_schema
        messages, kwargs, structured = self._chat_request(request)
        usage = Usage()
        text = await self._chat(request, messages, kwargs, usage)
        try:
            data = parse_reply(text, schema)
        except MalformedReply as first:
            if structured:
                raise MalformedReply(f"{self.provider} {self.model}: {first}", raw=first.raw) from None
            log.info("%s %s: unusable JSON reply (%s); one repair attempt", self.provider, self.model, first)
            messages = [
                *messages,
                {"role": "assistant", "content": text},
                {"role": "user", "content": repair_message(str(first), schema)},
            ]
            text = await self._chat(request, messages, kwargs, usage)
            try:
                data = parse_reply(text, schema)
            except MalformedReply as second:
                raise MalformedReply(
                    f"{self.provider} {self.model}: {second} (after one repair attempt)", raw=second.raw
                ) from None
        # The configured name, not the snapshot the API resolved it to: prices and rate limits are keyed by it.
        return TextReply(data=data, text=text, usage=usage, model=request.model or self.model)

    def _user_content(self, request: TextRequest) -> str | list[dict[str, Any]]:
        if not request.images:
            return request.prompt
        detail = self.spec.options.get("image_detail")
        parts: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        for image in request.images:
            url = f"data:{image_mime(image)};base64,{base64.b64encode(image).decode()}"
            image_url: dict[str, Any] = {"url": url}
            if detail:
                image_url["detail"] = detail
            parts.append({"type": "image_url", "image_url": image_url})
        return parts

    async def _chat(
        self, request: TextRequest, messages: list[dict[str, Any]], kwargs: dict[str, Any], usage: Usage
    ) -> str:
        """One Chat Completions call; adds its usage to `usage` and returns the content."""
        body = {"model": request.model or self.model, "messages": messages, **kwargs}
        extra_body = body.pop("extra_body", None)
        # The SDK's own POST (auth, errors, reply parsing) without `chat.completions.create`'s param transform:
        # for plain-dict params it changes nothing, yet it walks every message part (base64 images too) and
        # cost more CPU than the rest of the call (benchmarks/peers.py: the CPU decides the share of a limit).
        completion = await self._call(
            lambda: self._client().post(
                "/chat/completions", body=body, cast_to=ChatCompletion,
                options=make_request_options(extra_body=extra_body, security={"bearer_auth": True}),
            )
        )
        return self._chat_content(completion, len(request.images), usage)

    def _chat_content(self, completion: Any, images: int, usage: Usage) -> str:
        """A completion's content (adding its usage to `usage`); SafetyBlocked / MalformedReply when unusable."""
        prompt_tokens, completion_tokens = _usage_from_chat(completion)
        usage.input_tokens += prompt_tokens
        usage.output_tokens += completion_tokens
        usage.images_in += images
        where = f"{self.provider} {self.model}"
        if not completion.choices:
            raise MalformedReply(f"{where}: reply has no choices")
        choice = completion.choices[0]
        message = choice.message
        refusal = getattr(message, "refusal", None)
        if choice.finish_reason == "content_filter" or refusal:
            reason = f"refused: {self._redact(truncate(refusal))}" if refusal else "content filter"
            raise SafetyBlocked(f"{where}: {reason}")
        return message.content or ""


class OpenAICompatibleText(OpenAIText):
    """Chat Completions on any OpenAI-compatible server (vLLM, SGLang, Ollama) at `base_url`.

    Set `structured_outputs: false` for servers without JSON-schema output: the schema then goes into the
    system text, and a bad reply gets one repair round-trip before MalformedReply. The key is optional
    unless `api_key_env` is named.
    """

    name: ClassVar[str] = "openai-compatible"


class OpenAIEditor(_OpenAIBase):
    """Images Edits (`gpt-image-1` and compatible): the source image + instruction → one edited image.

    `images.edit` takes one `prompt` and has no system role, so the edit prompt's system text is prepended
    to it, separated by a blank line (replies.with_system_prefix). A reply without image data raises
    NoImageReply (retried by the edit stage); one with only a URL is a MalformedReply (a config problem).
    """

    name: ClassVar[str] = "openai"

    def _http_client(self) -> Any:
        """The SDK's default client, sending a request's body as one piece: the multipart form of an edit
        (a dozen fields, each boundary, header and value its own piece, the image in 64 KiB ones) is otherwise
        written as ~45 socket writes, each one a trip through httpcore, h11 and anyio (the same bytes)."""
        return openai.DefaultAsyncHttpxClient(verify=shared_ssl_context(), event_hooks={"request": [_read_body]})

    async def edit(self, request: EditRequest) -> EditReply:
        prompt = with_system_prefix(
            request.system, with_reference_hint(request.instruction, request.reference_answer)
        )
        mime = image_mime(request.image)
        filename = "image." + mime.split("/", 1)[1].replace("jpeg", "jpg")
        params = dict(request.params)
        if request.source_size and "size" not in params:  # keep_geometry: the closest of gpt-image-1's sizes
            params["size"] = gpt_image_size(request.source_size)
        kwargs = split_params(params, _EDIT_PARAMS, _RESERVED_EDIT)
        extra_body = kwargs.pop("extra_body", None)
        # what `images.edit` sends (its file fields as files, the rest as form fields), by the SDK's own POST
        # without the param transform: for call params from a pipeline file it changes nothing, yet its typing
        # walk was a quarter of an edit call's CPU (~0.5 of 2 ms; benchmarks/README.md, fifth round)
        files = [("image", (filename, request.image, mime))]
        files += [(name, kwargs.pop(name)) for name in _EDIT_FILES if name in kwargs]
        body = {"prompt": prompt, "model": request.model or self.model, **kwargs}
        response = await self._call(
            lambda: self._client().post(
                "/images/edits", body=body, files=files, cast_to=ImagesResponse,
                options=make_request_options(
                    extra_headers={"Content-Type": "multipart/form-data"}, extra_body=extra_body,
                    security={"bearer_auth": True},
                ),
            )
        )
        where = f"{self.provider} {self.model}"
        items = list(response.data or [])
        encoded = next((item.b64_json for item in items if getattr(item, "b64_json", None)), None)
        if encoded is None:
            if any(getattr(item, "url", None) for item in items):
                raise MalformedReply(
                    f"{where}: reply holds only an image URL (not fetched); set params.response_format: b64_json"
                )
            usage = Usage(images_in=1)
            if response.usage is not None:
                usage.input_tokens = int(response.usage.input_tokens or 0)
                usage.output_tokens = int(response.usage.output_tokens or 0)
            raise NoImageReply(f"{where}: reply holds no image", usage=usage)
        try:
            image = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedReply(f"{where}: reply image is not valid base64") from None
        usage = Usage(images_in=1, images_out=len(items))
        if response.usage is not None:
            usage.input_tokens = int(response.usage.input_tokens or 0)
            usage.output_tokens = int(response.usage.output_tokens or 0)
        return EditReply(image=image, usage=usage, model=request.model or self.model)
