"""The Gemini backends: generateContent for text (JSON output) and for image editing (e.g. Nano-Pro).

Thin protocol adapters over the official `google-genai` SDK. An online call goes through the SDK's own API
client (auth, base URL, timeout, headers, its `APIError`s) with the request body written here once as the
JSON the SDK's converters would write, and the reply read as plain JSON: `models.generate_content`'s request
conversion and reply model walk every part, base64 images included, and cost more CPU than the rest of an
edit (benchmarks/cpu_per_record.py). Batch Mode (batch_routes.GeminiBatch) still builds SDK types. The SDK
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

import base64
import functools
import json
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NoReturn

import httpx2
import pydantic
from google import genai
from google.genai import _common, _transformers, models, types
from google.genai import errors as genai_errors

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
from .provider import ProviderBackend, shared_ssl_context
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
#: stands in for an image's base64 in the request's JSON text until the bytes are spliced in (request_json);
#: letters, digits and dashes, which json.dumps writes as they are, random so that no prompt holds it
_IMAGE_SLOT = "uniedit-image-" + secrets.token_hex(16)
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
#: distinct request configs a backend keeps converted (a stage sends one config, or one per aspect ratio)
_CONFIG_MEMO_SIZE = 64


def _enum_name(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "value", value)).upper()


def content_json(role: str, text: str, images: list[bytes] | tuple[bytes, ...] = ()) -> dict[str, Any]:
    """One Content as the SDK's converter writes it (`Part.from_text`, then `Part.from_bytes` per image), each
    image's data a slot that request_json fills."""
    parts: list[dict[str, Any]] = [{"text": text}]
    parts += [{"inlineData": {"data": _IMAGE_SLOT, "mime_type": image_mime(image)}} for image in images]
    return {"parts": parts, "role": role}


def request_json(body: dict[str, Any], images: list[bytes] | tuple[bytes, ...]) -> bytes:
    """The bytes the SDK sends for `body` (`json.dumps`, UTF-8) with the image slots filled, in order, with each
    image's URL-safe base64 (the SDK's encoding of bytes). Spliced in, not dumped: json.dumps checks a string
    one character at a time, ~10 ms for the base64 of a 1.5 MB image; base64 needs no JSON escaping."""
    pieces = json.dumps(body).encode().split(_IMAGE_SLOT.encode())
    if len(pieces) != len(images) + 1:
        raise RuntimeError("gemini request: image slots and images do not match")
    out = [pieces[0]]
    for image, piece in zip(images, pieces[1:], strict=True):
        out += (base64.urlsafe_b64encode(image), piece)
    return b"".join(out)


def _base64_bytes(data: Any) -> bytes:
    """Bytes of a JSON bytes field: standard or URL-safe base64, as the SDK's models accept (already bytes in a
    Batch Mode reply the SDK parsed); ValueError when it is not base64."""
    if isinstance(data, bytes):
        return data
    if not isinstance(data, str):
        raise ValueError("not a string")
    raw = data.encode("ascii")
    if b"-" in raw or b"_" in raw:
        raw = raw.translate(_URLSAFE_TO_STANDARD)
    return base64.b64decode(raw, validate=True)


def _rest_reply(response: Any) -> Mapping[str, Any]:
    """A reply in the REST JSON shape: as it came online, or from the SDK's model (a Batch Mode item)."""
    if isinstance(response, Mapping):
        return response
    return response.model_dump(by_alias=True, exclude_none=True)


def _continuation_token(reply: Mapping[str, Any]) -> str | None:
    """The token of a reply to resume (the SDK's automatic continuation: a first candidate with a token and
    finishReason CONTINUATION or none), else None."""
    candidates = reply.get("candidates")
    if not candidates or not isinstance(candidates, list) or not isinstance(candidates[0], Mapping):
        return None
    candidate = candidates[0]
    token = candidate.get("continuationToken")
    if not token or _enum_name(candidate.get("finishReason")) not in ("", "CONTINUATION"):
        return None
    try:
        return base64.urlsafe_b64encode(_base64_bytes(token)).decode("ascii")
    except ValueError:
        return None


def _merged(first: Mapping[str, Any], then: Mapping[str, Any]) -> dict[str, Any]:
    """Two hops of one continued generation as one reply, as the SDK merges them for what is read here: the
    first candidate's parts in order, the last hop's finishReason, the token counts summed."""
    merged = {**first, **then}
    firsts, thens = first.get("candidates") or [], then.get("candidates") or []
    if firsts and thens and isinstance(firsts[0], Mapping) and isinstance(thens[0], Mapping):
        a, b = firsts[0], thens[0]
        before, after = a.get("content") or {}, b.get("content") or {}
        content = {**before, **after, "parts": [*(before.get("parts") or []), *(after.get("parts") or [])]}
        candidate = {**a, **b, "content": content}
        for key in ("finishReason", "continuationToken"):
            candidate.pop(key, None)
            if b.get(key) is not None:
                candidate[key] = b[key]
        merged["candidates"] = [candidate, *thens[1:]]
    usage = {**(first.get("usageMetadata") or {})}
    for key, value in (then.get("usageMetadata") or {}).items():
        try:  # counts are summed (int64 counts may come as strings); anything else is the last hop's
            usage[key] = int(usage[key]) + int(value) if key.endswith("Count") and key in usage else value
        except (TypeError, ValueError):
            usage[key] = value
    if usage:
        merged["usageMetadata"] = usage
    return merged


class _GeminiBase(ProviderBackend[genai.Client]):
    """Client construction, key handling, parameter mapping and error mapping shared by text and edit."""

    name: ClassVar[str] = "gemini"
    known_options = _KNOWN_OPTIONS
    provider: str = "gemini"

    def __init__(self, spec: Any, seed: int = 0) -> None:
        super().__init__(spec, seed)
        self._config_memo: dict[str, dict[str, Any]] = {}

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
        # the process's one TLS context (provider.shared_ssl_context): the SDK would load the CA bundle for each
        # client (the same context for its sync and async clients)
        options.async_client_args = {"verify": shared_ssl_context()}
        pool = self.spec.options.get("max_connections")
        if pool:
            limits = httpx2.Limits(max_connections=int(pool), max_keepalive_connections=int(pool))
            options.async_client_args["limits"] = limits
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

    def _config_json(self, params: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
        """The request's keys besides `contents` (systemInstruction, generationConfig, …) as the SDK's own
        converter writes them for the config of `params` and `fixed`. Memoised: a stage sends the same config
        with every record, and the converter looks up each of the config's 39 fields by `key in model`, a walk
        over all of them (~3,000 steps a call)."""
        try:
            key: str | None = json.dumps([params, fixed])
        except (TypeError, ValueError):  # a parameter JSON cannot write: converted every time
            key = None
        cached = self._config_memo.get(key) if key is not None else None
        if cached is not None:
            return cached
        config = self._config(params, **fixed)
        api = self._client()._api_client
        head: dict[str, Any] = {}
        # what models._GenerateContentParameters_to_mldev does with a config: the converter sets some keys on
        # the request itself (systemInstruction, tools, …), then generationConfig follows them
        head["generationConfig"] = models._GenerateContentConfig_to_mldev(
            api, config, head, types._GenerateContentParameters(model=self.model, config=config)
        )
        head = _common.encode_unserializable_types(_common.convert_to_dict(head))
        head = {k: v for k, v in head.items() if not k.startswith("_") and k not in ("config", "contents")}
        if key is not None:
            if len(self._config_memo) >= _CONFIG_MEMO_SIZE:
                self._config_memo.clear()
            self._config_memo[key] = head
        return head

    async def _post(self, data: bytes, model: str) -> Mapping[str, Any]:
        """One generateContent call through the SDK's API client: `async_request` (the call
        `models.generate_content` ends in: auth, base URL, timeout, headers, its APIErrors) with the JSON
        already written, then the reply's JSON."""
        api = self._client().aio._api_client
        path = f"{_transformers.t_model(api, model)}:generateContent"
        # no per-request http_options and none with an extra_body on the client: the body is complete as written
        http_request = api._build_request("post", path, {}, None)
        http_request.data = data
        response = await api._async_request(http_request=http_request, http_options=None, stream=False)
        text = response.response_stream[0] if response.response_stream else ""
        try:
            reply = json.loads(text) if text else {}
        except ValueError:
            raw = self._redact(truncate(text))
            raise MalformedReply(f"gemini {self.model}: reply is not JSON", raw=raw) from None
        if not isinstance(reply, dict):
            raise self._schema_error()
        return reply

    async def _generate(
        self, body: dict[str, Any], images: list[bytes] | tuple[bytes, ...], model: str
    ) -> Mapping[str, Any]:
        """The reply to `body` (its image slots filled with `images`), continued as the SDK's automatic
        continuation does while the reply carries a continuation token."""
        data = request_json(body, images)
        reply = await self._call(lambda: self._post(data, model))
        while (token := _continuation_token(reply)) is not None:
            head = {k: v for k, v in body.items() if k != "generationConfig"}
            # the converter sets continuationToken with the config's other top-level keys, before generationConfig
            hop = {**head, "continuationToken": token, "generationConfig": body.get("generationConfig", {})}
            post = functools.partial(self._post, request_json(hop, images), model)
            reply = _merged(reply, await self._call(post))
        return reply

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
            raise self._schema_error() from None

    def _schema_error(self) -> MalformedReply:
        return MalformedReply(f"gemini {self.model}: reply did not match the API schema")

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

    def _check_blocked(self, reply: Mapping[str, Any]) -> Mapping[str, Any]:
        """The first candidate, or SafetyBlocked / MalformedReply when there is none worth reading."""
        feedback = reply.get("promptFeedback")
        if feedback is not None and not isinstance(feedback, Mapping):
            raise self._schema_error()
        if feedback and feedback.get("blockReason") is not None:
            message = feedback.get("blockReasonMessage")
            detail = f" ({self._redact(str(message))})" if message else ""
            raise SafetyBlocked(
                f"gemini {self.model}: prompt blocked: {_enum_name(feedback.get('blockReason'))}{detail}"
            )
        candidates = reply.get("candidates")
        if not candidates:
            raise MalformedReply(f"gemini {self.model}: reply has no candidates")
        if not isinstance(candidates, list) or not isinstance(candidates[0], Mapping):
            raise self._schema_error()
        candidate = candidates[0]
        finish = _enum_name(candidate.get("finishReason"))
        if finish in SAFETY_FINISH_REASONS:
            raise SafetyBlocked(f"gemini {self.model}: output blocked: finishReason {finish}")
        return candidate

    def _usage(self, reply: Mapping[str, Any], usage: Usage) -> None:
        meta = reply.get("usageMetadata")
        if meta is None:
            return
        try:
            usage.input_tokens += int(meta.get("promptTokenCount") or 0)
            # thinking tokens are billed as output
            usage.output_tokens += int(meta.get("candidatesTokenCount") or 0) + int(
                meta.get("thoughtsTokenCount") or 0
            )
        except (AttributeError, TypeError, ValueError):
            raise self._schema_error() from None

    def _answer_parts(self, candidate: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The parts of a candidate that are not thoughts."""
        content = candidate.get("content")
        if content is None:
            return []
        parts = content.get("parts") if isinstance(content, Mapping) else None
        if not isinstance(parts or [], list) or not all(isinstance(p, Mapping) for p in parts or []):
            raise self._schema_error()
        return [part for part in parts or [] if not part.get("thought")]

    def _parts_text(self, parts: list[Mapping[str, Any]]) -> str:
        texts = [part.get("text") for part in parts]
        if not all(text is None or isinstance(text, str) for text in texts):
            raise self._schema_error()
        return "".join(text for text in texts if text)


class GeminiText(_GeminiBase):
    """generateContent with JSON output (`response_mime_type` + `response_json_schema`)."""

    def _text_settings(self, request: TextRequest) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """The call params and the config values the backend sets, and whether the reply is schema-constrained."""
        schema = request.response_schema
        structured = self.spec.structured_outputs and schema is not None
        system = request.system
        if not structured:
            system = (system + "\n\n" if system else "") + json_instructions(schema)
        fixed = {
            "system_instruction": system or None,
            "response_mime_type": "application/json",
            "response_json_schema": schema if structured else None,
        }
        return {"seed": self.seed, **request.params}, fixed, structured

    def _text_request(self, request: TextRequest) -> tuple[list[types.Content], types.GenerateContentConfig, bool]:
        """The contents and config of a request as SDK types (Batch Mode), and whether it is schema-constrained."""
        params, fixed, structured = self._text_settings(request)
        parts = [types.Part.from_text(text=request.prompt)]
        parts += [types.Part.from_bytes(data=image, mime_type=image_mime(image)) for image in request.images]
        contents = [types.Content(role="user", parts=parts)]
        return contents, self._config(params, **fixed), structured

    def batch_route(self, kind: str) -> Any:
        """generateContent goes through Batch Mode (batchGenerateContent, inline requests) at half the price."""
        from .batch_routes import GeminiBatch

        return GeminiBatch(self, kind)

    async def complete(self, request: TextRequest) -> TextReply:
        schema = request.response_schema
        params, fixed, structured = self._text_settings(request)
        head = self._config_json(params, fixed)
        contents = [content_json("user", request.prompt, request.images)]
        model = request.model or self.model
        usage = Usage()
        text = await self._text_call(contents, head, model, usage, request.images)
        try:
            data = parse_reply(text, schema)
        except MalformedReply as first:
            if structured:
                raise MalformedReply(f"gemini {self.model}: {first}", raw=first.raw) from None
            log.info("gemini %s: unusable JSON reply (%s); one repair attempt", self.model, first)
            contents = [
                *contents,
                content_json("model", text),
                content_json("user", repair_message(str(first), schema)),
            ]
            text = await self._text_call(contents, head, model, usage, request.images)
            try:
                data = parse_reply(text, schema)
            except MalformedReply as second:
                raise MalformedReply(
                    f"gemini {self.model}: {second} (after one repair attempt)", raw=second.raw
                ) from None
        return TextReply(data=data, text=text, usage=usage, model=model)

    async def _text_call(
        self,
        contents: list[dict[str, Any]],
        head: dict[str, Any],
        model: str,
        usage: Usage,
        images: list[bytes],
    ) -> str:
        reply = await self._generate({"contents": contents, **head}, images, model)
        return self._text_content(reply, len(images), usage)

    def _text_content(self, response: Any, images: int, usage: Usage) -> str:
        """A reply's answer text (a REST reply, or a Batch Mode item's SDK model); adds its usage to `usage`."""
        reply = _rest_reply(response)
        self._usage(reply, usage)
        usage.images_in += images
        candidate = self._check_blocked(reply)
        return self._parts_text(self._answer_parts(candidate))


class GeminiEditor(_GeminiBase):
    """Image editing with a Gemini image model (the paper's `gemini-3-pro-image-preview`, "Nano-Pro")."""

    def batch_route(self, kind: str) -> Any:
        """Image edits go through Batch Mode (batchGenerateContent, inline requests) at half the price."""
        from .batch_routes import GeminiBatch

        return GeminiBatch(self, kind)

    async def edit(self, request: EditRequest) -> EditReply:
        params, fixed, prompt = self._edit_settings(request)
        body = {"contents": [content_json("user", prompt, [request.image])], **self._config_json(params, fixed)}
        model = request.model or self.model
        reply = await self._generate(body, [request.image], model)
        return self._edit_reply(reply, model)

    def _edit_settings(self, request: EditRequest) -> tuple[dict[str, Any], dict[str, Any], str]:
        """The call params, the config values the backend sets, and the prompt of an edit."""
        params = dict(request.params)
        # the source's geometry (keep_geometry) unless the stage's params fix one; the release's default 1:1
        matched = gemini_aspect_ratio(request.source_size) if request.source_size else "1:1"
        aspect = params.pop("aspect_ratio", matched)
        size = params.pop("image_size", "1K")
        modalities = params.pop("response_modalities", ["IMAGE"])
        fixed = {
            "response_modalities": list(modalities),
            "image_config": {
                "aspect_ratio": None if aspect in (None, "auto") else str(aspect),
                "image_size": None if size in (None, "auto") else str(size),
            },
            "system_instruction": request.system or None,
        }
        return params, fixed, with_reference_hint(request.instruction, request.reference_answer)

    def _edit_request(self, request: EditRequest) -> tuple[list[types.Content], types.GenerateContentConfig]:
        """The contents and config of an edit as SDK types (Batch Mode)."""
        params, fixed, prompt = self._edit_settings(request)
        parts = [
            types.Part.from_text(text=prompt),
            types.Part.from_bytes(data=request.image, mime_type=image_mime(request.image)),
        ]
        return [types.Content(role="user", parts=parts)], self._config(params, **fixed)

    def _edit_reply(self, response: Any, model: str) -> EditReply:
        """The edited image of a reply (a REST reply, or a Batch Mode item's SDK model); SafetyBlocked /
        MalformedReply / NoImageReply when there is none."""
        reply = _rest_reply(response)
        usage = Usage(images_in=1)
        self._usage(reply, usage)
        try:
            candidate = self._check_blocked(reply)
        except MalformedReply as exc:  # no candidate at all (and no block): as image-less as a text reply
            if reply.get("candidates"):
                raise  # candidates off the API schema
            raise NoImageReply(str(exc), usage=usage) from None
        answer = self._answer_parts(candidate)
        images = [
            blob
            for blob in (part.get("inlineData") for part in answer)
            if isinstance(blob, Mapping)
            and blob.get("data")
            and str(blob.get("mimeType") or "image/").startswith("image/")
        ]
        text = self._parts_text(answer)
        if not images:
            # safety finish reasons were raised above; anything else (STOP with text only, MAX_TOKENS,
            # OTHER, ...) is worth asking again
            finish = _enum_name(candidate.get("finishReason")) or "none"
            said = f"; model said: {self._redact(truncate(text, 200))!r}" if text else ""
            raise NoImageReply(
                f"gemini {self.model}: reply has no image part (finishReason {finish}){said}",
                usage=usage,
                text=self._redact(truncate(text, 500)),
            )
        usage.images_out = len(images)
        try:
            # Thinking image models emit draft images as thought parts; the last answer image is the final one.
            image = _base64_bytes(images[-1]["data"])
        except ValueError:
            raise self._schema_error() from None
        return EditReply(image=image, text=text, usage=usage, model=model)
