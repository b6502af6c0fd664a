"""The Gemini backends: generateContent for text (JSON output) and for image editing (e.g. Nano-Pro).

Thin protocol adapters over the official `google-genai` SDK (`client.aio.models.generate_content`). The SDK
does not retry by default and that stays so: the engine owns retries and reads the `retry_after` this module
takes from the error's `Retry-After` header (or the body's google.rpc.RetryInfo). Every SDK error and every
safety verdict is mapped onto the backend contract in `base.py`; the API key never appears in an exception
message or a log record.

`spec.options` recognised here: `api_version` (default "v1beta"), `max_connections` (HTTP pool size).
Call parameters come from the stage's `params`: any `GenerateContentConfig` field (temperature, top_p,
max_output_tokens — alias max_tokens —, seed, …); for edits also `aspect_ratio` (default: the supported ratio
closest to the request's `source_size` (keep_geometry), else "1:1"; "auto" or null keeps the model's choice), `image_size` (default "1K") and `response_modalities` (default ["IMAGE"]).
An edit request's `system` text goes out as `system_instruction`; a reply with no image (and no safety
finishReason) raises NoImageReply, which the edit stage retries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn

import httpx2
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

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
from .geometry import gemini_aspect_ratio
from .provider import ProviderBackend
from .replies import (
    duration_seconds,
    image_mime,
    json_instructions,
    parse_reply,
    repair_message,
    retry_after_seconds,
    truncate,
    with_reference_hint,
)

log = logging.getLogger(__name__)

#: finish reasons that mean the provider's safety systems stopped the output: a reject, never a retry
SAFETY_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
    }
)
#: google.rpc codes (a batch item's error) as the HTTP status the same error has online (google/rpc/code.proto)
RPC_HTTP_STATUS = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400,
                   12: 501, 13: 500, 14: 503, 15: 500, 16: 401}
_KNOWN_OPTIONS = frozenset({"api_version", "max_connections"})
_PARAM_ALIASES = {"max_tokens": "max_output_tokens", "stop": "stop_sequences"}
_RESERVED = frozenset(
    {
        "system_instruction",
        "response_mime_type",
        "response_schema",
        "response_json_schema",
        "http_options",
        "image_config",
    }
)
_CONFIG_FIELDS = frozenset(types.GenerateContentConfig.model_fields) - _RESERVED
_EDIT_ONLY = frozenset({"aspect_ratio", "image_size"})


def _enum_name(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "value", value)).upper()


class _GeminiBase(ProviderBackend[genai.Client]):
    """Client construction, key handling, parameter mapping and error mapping shared by text and edit."""

    name: ClassVar[str] = "gemini"
    known_options = _KNOWN_OPTIONS
    provider: str = "gemini"

    def _resolve_key(self) -> str:
        names = [self.spec.api_key_env] if self.spec.api_key_env else ["GEMINI_API_KEY", "GOOGLE_API_KEY"]
        for env in names:
            key = os.environ.get(env, "").strip()
            if key:
                return key
        raise BackendConfigError(
            f"backend gemini ({self.spec.model}) needs an API key: set the environment variable "
            + " or ".join(names)
        )

    def _make_client(self) -> genai.Client:
        options = types.HttpOptions(
            base_url=self.spec.base_url or None,
            api_version=str(self.spec.options.get("api_version", "v1beta")),
            timeout=int(self.spec.timeout_s * 1000),  # milliseconds
            retry_options=None,  # no SDK retries: the engine's retry layer decides
        )
        pool = self.spec.options.get("max_connections")
        if pool:
            limits = httpx2.Limits(max_connections=int(pool), max_keepalive_connections=int(pool))
            options.async_client_args = {"limits": limits}
        return genai.Client(api_key=self._api_key, vertexai=False, http_options=options)

    async def _close_client(self, client: genai.Client) -> None:
        await client.aio.aclose()
        client.close()

    def _config(self, params: dict[str, Any], **fixed: Any) -> types.GenerateContentConfig:
        values: dict[str, Any] = {}
        for key, value in params.items():
            field = _PARAM_ALIASES.get(key, key)
            if field in _EDIT_ONLY:
                continue
            if field not in _CONFIG_FIELDS:
                raise BackendConfigError(
                    f"backend gemini ({self.model}): unknown parameter '{key}' "
                    "(use a GenerateContentConfig field such as temperature, top_p, max_output_tokens, seed)"
                )
            values[field] = value
        values.update({k: v for k, v in fixed.items() if v is not None})
        try:
            return types.GenerateContentConfig(**values)
        except pydantic.ValidationError as exc:
            raise BackendConfigError(f"backend gemini ({self.model}): invalid parameters: {exc}") from None

    async def _generate(
        self, contents: list[types.Content], config: types.GenerateContentConfig, model: str
    ) -> types.GenerateContentResponse:
        return await self._call(
            lambda: self._client().aio.models.generate_content(model=model, contents=contents, config=config)
        )

    async def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return await fn()
        except genai_errors.APIError as exc:
            self._raise_api_error(exc)
        except httpx2.TimeoutException:
            raise Unreachable(
                f"gemini {self.model}: request timed out after {self.spec.timeout_s:g}s"
            ) from None
        except httpx2.TransportError as exc:
            raise Unreachable(f"gemini {self.model}: connection error ({type(exc).__name__})") from None
        except pydantic.ValidationError:
            raise MalformedReply(f"gemini {self.model}: reply did not match the API schema") from None

    def _raise_api_error(self, exc: genai_errors.APIError) -> NoReturn:
        details = exc.details if isinstance(exc.details, dict) else {}
        error = details.get("error", details) if isinstance(details.get("error", details), dict) else {}
        extra = error.get("details") if isinstance(error.get("details"), list) else []
        reasons = {str(d.get("reason", "")) for d in extra if isinstance(d, dict)}
        status = int(exc.code or 0)
        raise self.status_error(
            status, str(exc.message or ""), status_name=str(exc.status or ""), reasons=reasons,
            retry_after=self._retry_after(exc, extra) if status == 429 else None,
        ) from None

    def status_error(
        self, status: int, message: str, *, status_name: str = "", reasons: set[str] | frozenset[str] = frozenset(),
        retry_after: float | None = None, where: str = "",
    ) -> BackendError:
        """The error an HTTP status means, one mapping for an online call and for an item of a batch job
        (batch_routes.GeminiBatch, whose item errors carry google.rpc codes: below 100, read as their HTTP
        status), so the same failure is never a reject online and a retry in a batch.

        429 is a RateLimited, 401/403 (or an invalid key) an AuthError that stops the run, 408/409/499 and 5xx
        worth another try (a timeout, an aborted or cancelled call), any other 4xx a BadRequest (a reject)."""
        if 0 < status < 100:
            status = RPC_HTTP_STATUS.get(status, 500)
        where = where or f"gemini {self.model}"
        text = f"{where}: HTTP {status} {status_name}".rstrip() + f": {self._redact(truncate(message))}"
        if status == 429:
            return RateLimited(text, retry_after=retry_after, status=429)
        if status in (401, 403) or "API_KEY_INVALID" in reasons:
            return AuthError(text)
        if status >= 500 or status in (408, 409, 499):
            return RetryableError(text, status=status)
        if 400 <= status < 500:
            return (NotFound if status == 404 else BadRequest)(text)
        return BackendError(text)

    @staticmethod
    def _retry_after(exc: genai_errors.APIError, extra: list[Any]) -> float | None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
        seconds = retry_after_seconds(headers)
        if seconds is not None:
            return seconds
        for detail in extra:
            if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
                return duration_seconds(detail.get("retryDelay"))
        return None

    def _check_blocked(self, response: types.GenerateContentResponse) -> types.Candidate:
        """The first candidate, or SafetyBlocked / MalformedReply when there is none worth reading."""
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            detail = (
                f" ({self._redact(feedback.block_reason_message)})" if feedback.block_reason_message else ""
            )
            raise SafetyBlocked(
                f"gemini {self.model}: prompt blocked: {_enum_name(feedback.block_reason)}{detail}"
            )
        if not response.candidates:
            raise MalformedReply(f"gemini {self.model}: reply has no candidates")
        candidate = response.candidates[0]
        finish = _enum_name(candidate.finish_reason)
        if finish in SAFETY_FINISH_REASONS:
            raise SafetyBlocked(f"gemini {self.model}: output blocked: finishReason {finish}")
        return candidate

    @staticmethod
    def _usage(response: types.GenerateContentResponse, usage: Usage) -> None:
        meta = response.usage_metadata
        if meta is None:
            return
        usage.input_tokens += int(meta.prompt_token_count or 0)
        # thinking tokens are billed as output
        usage.output_tokens += int(meta.candidates_token_count or 0) + int(meta.thoughts_token_count or 0)


def _answer_parts(candidate: types.Candidate) -> list[types.Part]:
    content = candidate.content
    return [part for part in (content.parts or []) if not part.thought] if content is not None else []


class GeminiText(_GeminiBase):
    """generateContent with JSON output (`response_mime_type` + `response_json_schema`)."""

    def _text_request(self, request: TextRequest) -> tuple[list[types.Content], types.GenerateContentConfig, bool]:
        """The contents and config of a request, and whether the reply is schema-constrained."""
        schema = request.response_schema
        structured = self.spec.structured_outputs and schema is not None
        system = request.system
        if not structured:
            system = (system + "\n\n" if system else "") + json_instructions(schema)
        parts = [types.Part.from_text(text=request.prompt)]
        parts += [types.Part.from_bytes(data=image, mime_type=image_mime(image)) for image in request.images]
        contents = [types.Content(role="user", parts=parts)]
        config = self._config(
            {"seed": self.seed, **request.params},
            system_instruction=system or None,
            response_mime_type="application/json",
            response_json_schema=schema if structured else None,
        )
        return contents, config, structured

    def batch_route(self, kind: str) -> Any:
        """generateContent goes through Batch Mode (batchGenerateContent, inline requests) at half the price."""
        from .batch_routes import GeminiBatch

        return GeminiBatch(self, kind)

    async def complete(self, request: TextRequest) -> TextReply:
        schema = request.response_schema
        contents, config, structured = self._text_request(request)
        model = request.model or self.model
        usage = Usage()
        text = await self._text_call(contents, config, model, usage, len(request.images))
        try:
            data = parse_reply(text, schema)
        except MalformedReply as first:
            if structured:
                raise MalformedReply(f"gemini {self.model}: {first}", raw=first.raw) from None
            log.info("gemini %s: unusable JSON reply (%s); one repair attempt", self.model, first)
            contents = [
                *contents,
                types.Content(role="model", parts=[types.Part.from_text(text=text)]),
                types.Content(
                    role="user", parts=[types.Part.from_text(text=repair_message(str(first), schema))]
                ),
            ]
            text = await self._text_call(contents, config, model, usage, len(request.images))
            try:
                data = parse_reply(text, schema)
            except MalformedReply as second:
                raise MalformedReply(
                    f"gemini {self.model}: {second} (after one repair attempt)", raw=second.raw
                ) from None
        return TextReply(data=data, text=text, usage=usage, model=model)

    async def _text_call(
        self,
        contents: list[types.Content],
        config: types.GenerateContentConfig,
        model: str,
        usage: Usage,
        images: int,
    ) -> str:
        response = await self._generate(contents, config, model)
        return self._text_content(response, images, usage)

    def _text_content(self, response: types.GenerateContentResponse, images: int, usage: Usage) -> str:
        self._usage(response, usage)
        usage.images_in += images
        candidate = self._check_blocked(response)
        return "".join(part.text for part in _answer_parts(candidate) if part.text)


class GeminiEditor(_GeminiBase):
    """Image editing with a Gemini image model (the paper's `gemini-3-pro-image-preview`, "Nano-Pro")."""

    def batch_route(self, kind: str) -> Any:
        """Image edits go through Batch Mode (batchGenerateContent, inline requests) at half the price."""
        from .batch_routes import GeminiBatch

        return GeminiBatch(self, kind)

    async def edit(self, request: EditRequest) -> EditReply:
        contents, config = self._edit_request(request)
        model = request.model or self.model
        response = await self._generate(contents, config, model)
        return self._edit_reply(response, model)

    def _edit_request(self, request: EditRequest) -> tuple[list[types.Content], types.GenerateContentConfig]:
        params = dict(request.params)
        # the source's geometry (keep_geometry) unless the stage's params fix one; the release's default 1:1
        matched = gemini_aspect_ratio(request.source_size) if request.source_size else "1:1"
        aspect = params.pop("aspect_ratio", matched)
        size = params.pop("image_size", "1K")
        modalities = params.pop("response_modalities", ["IMAGE"])
        image_config = types.ImageConfig(
            aspect_ratio=None if aspect in (None, "auto") else str(aspect),
            image_size=None if size in (None, "auto") else str(size),
        )
        config = self._config(
            params,
            response_modalities=list(modalities),
            image_config=image_config,
            system_instruction=request.system or None,
        )
        prompt = with_reference_hint(request.instruction, request.reference_answer)
        parts = [
            types.Part.from_text(text=prompt),
            types.Part.from_bytes(data=request.image, mime_type=image_mime(request.image)),
        ]
        return [types.Content(role="user", parts=parts)], config

    def _edit_reply(self, response: types.GenerateContentResponse, model: str) -> EditReply:
        """The edited image of a reply; SafetyBlocked / MalformedReply when there is none."""
        usage = Usage(images_in=1)
        self._usage(response, usage)
        try:
            candidate = self._check_blocked(response)
        except MalformedReply as exc:  # no candidate at all (and no block): as image-less as a text reply
            raise NoImageReply(str(exc), usage=usage) from None
        answer = _answer_parts(candidate)
        images = [
            p
            for p in answer
            if p.inline_data is not None
            and p.inline_data.data
            and str(p.inline_data.mime_type or "image/").startswith("image/")
        ]
        text = "".join(p.text for p in answer if p.text)
        if not images:
            # safety finish reasons were raised above; anything else (STOP with text only, MAX_TOKENS,
            # OTHER, ...) is worth asking again
            finish = _enum_name(candidate.finish_reason) or "none"
            said = f"; model said: {self._redact(truncate(text, 200))!r}" if text else ""
            raise NoImageReply(
                f"gemini {self.model}: reply has no image part (finishReason {finish}){said}",
                usage=usage,
                text=self._redact(truncate(text, 500)),
            )
        usage.images_out = len(images)
        # Thinking image models emit draft images as thought parts; the last answer image is the final one.
        return EditReply(image=images[-1].inline_data.data, text=text, usage=usage, model=model)
