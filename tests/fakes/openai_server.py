"""A fake OpenAI REST server on 127.0.0.1: Chat Completions and Images Edits, with scripted faults.

Speaks the real wire protocol, so tests drive the unmodified `openai` SDK against it:
- `POST /v1/chat/completions` (JSON) → `choices[0].message.content` (JSON text) and `usage`;
- `POST /v1/images/edits` (multipart, file field `image` or `image[]`) → `data[0].b64_json` (a real PNG: the input
  with a coloured rectangle drawn on it) and `usage`.

Fault kinds (see `tests/fakes/base.py` for the spec syntax):
  ok | 400 | 401 | 403 | 404 | 422 | 429[:retry_after_s] | 500 | 502 | 503 | 504
  slow[:seconds]   reply after `seconds` (default 30): beyond a short client timeout
  drop             close the connection without a reply (connection error)
  invalid_json     content that is not JSON           truncated   JSON cut in half, finish_reason "length"
  fenced           valid JSON wrapped in ```json fences
  moderation       400 code "moderation_blocked"     content_policy  400 code "content_policy_violation"
  content_filter   finish_reason "content_filter", no content      refusal  message.refusal set
  url_only         (images) data[0].url and no b64_json     no_image   (images) an empty `data` list

CLI: `python -m tests.fakes.openai_server --port 0 --latency 0.05` prints the base URL and serves until Ctrl-C.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from .base import FakeServer, Fault, RecordedRequest, Reply, b64, detect_task, edited_png, serve_forever_cli
from .base import token_estimate as tok

_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_value"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
    504: ("server_error", None),
}

IMAGE_INPUT_TOKENS = 323  # per input image (deterministic stand-in)
IMAGE_OUTPUT_TOKENS = 1056  # per output image


def error_reply(
    status: int,
    message: str,
    *,
    type_: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    default_type, default_code = _ERROR_TYPES.get(status, ("server_error", None))
    body = {
        "error": {
            "message": message,
            "type": type_ or default_type,
            "param": None,
            "code": code or default_code,
        }
    }
    return Reply(status, body, headers=headers)


class FakeOpenAI(FakeServer):
    """`with FakeOpenAI(latency=0.01) as server: AsyncOpenAI(base_url=server.base_url, ...)`."""

    RANDOM_FAULTS = ("429:0.01", "500", "503", "invalid_json")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def _handle(self, record: RecordedRequest, presented_key: str) -> Reply:
        path = record.path.split("?", 1)[0].rstrip("/")
        if record.method != "POST" or not (
            path.endswith("/chat/completions") or path.endswith("/images/edits")
        ):
            return error_reply(404, f"Invalid URL ({record.method} {record.path})")
        is_chat = path.endswith("/chat/completions")
        body = record.body if isinstance(record.body, dict) else {}
        if is_chat:
            record.model = str(body.get("model", ""))
            record.task = self._chat_task(body)
        else:
            record.model = str((body.get("fields") or {}).get("model", ""))
            record.task = "edit"
        if not presented_key:
            return error_reply(401, "You didn't provide an API key.", code="missing_api_key")
        if self.api_key is not None and presented_key != self.api_key:
            # Deliberately echoes the presented key: backends must keep it out of their errors and logs.
            return error_reply(401, f"Incorrect API key provided: {presented_key}.")
        fault = self._next_fault(record)
        record.fault = str(fault)
        reply = self._fault_reply(fault)
        if reply is not None:
            return reply
        if fault.kind == "slow":
            self._sleep(fault.float_arg if fault.float_arg is not None else 30.0)
        return self._chat(record, body, fault) if is_chat else self._edit(record, body, fault)

    def _fault_reply(self, fault: Fault) -> Reply | None:
        kind = fault.kind
        if kind.isdigit():
            status = int(kind)
            headers = {}
            if status == 429 and fault.arg is not None:
                headers["Retry-After"] = fault.arg
            messages = {
                401: "Incorrect API key provided.",
                429: "Rate limit reached for requests. Please try again later.",
            }
            message = messages.get(
                status,
                "The server had an error while processing your request."
                if status >= 500
                else f"Fake error {status}.",
            )
            return error_reply(status, message, headers=headers)
        if kind == "drop":
            return Reply(drop=True)
        if kind == "moderation":
            return error_reply(
                400,
                "Your request was rejected as a result of our safety system. Your request may contain content "
                "that is not allowed by our safety system.",
                type_="image_generation_user_error",
                code="moderation_blocked",
            )
        if kind == "content_policy":
            return error_reply(
                400, "This request has been blocked by our content filters.", code="content_policy_violation"
            )
        return None

    @staticmethod
    def _texts(body: dict[str, Any]) -> tuple[list[str], int]:
        texts: list[str] = []
        images = 0
        for message in body.get("messages") or []:
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                for part in content:
                    if part.get("type") == "text":
                        texts.append(str(part.get("text", "")))
                    elif part.get("type") == "image_url":
                        images += 1
        return texts, images

    def _chat_task(self, body: dict[str, Any]) -> str:
        response_format = body.get("response_format") or {}
        json_schema = response_format.get("json_schema") or {}
        texts, _ = self._texts(body)
        return detect_task(json_schema.get("schema"), str(json_schema.get("name", "")), texts)

    def _chat(self, record: RecordedRequest, body: dict[str, Any], fault: Fault) -> Reply:
        json_schema = (body.get("response_format") or {}).get("json_schema") or {}
        content_obj = self._reply_content(record.task, json_schema.get("schema"), fault, self._texts(body)[0])
        text: str | None = fault.text if fault.text is not None else json.dumps(content_obj)
        finish = "stop"
        refusal = None
        if fault.kind == "invalid_json":
            text = "Sure! Here is the JSON you asked for: {task_category: color, oops"
        elif fault.kind == "truncated":
            text = (text or "")[: max(1, len(text or "") // 2)]
            finish = "length"
        elif fault.kind == "fenced":
            text = f"```json\n{text}\n```"
        elif fault.kind == "content_filter":
            text, finish = None, "content_filter"
        elif fault.kind == "refusal":
            text, refusal = None, "I'm sorry, but I can't help with that request."
        texts, images = self._texts(body)
        usage = self.usage_override or {
            "prompt_tokens": tok("\n".join(texts)) + 85 * images,
            "completion_tokens": tok(text or refusal or ""),
        }
        usage = {**usage, "total_tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)}
        record.usage = usage
        return Reply(
            200,
            {
                "id": f"chatcmpl-fake-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": record.model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": refusal},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            },
        )

    def _edit(self, record: RecordedRequest, body: dict[str, Any], fault: Fault) -> Reply:
        fields = body.get("fields") or {}
        files = body.get("files") or {}
        images = files.get("image") or files.get("image[]") or []
        if not images:
            return error_reply(400, "Missing required parameter: 'image'.", code="missing_required_parameter")
        if not fields.get("prompt"):
            return error_reply(
                400, "Missing required parameter: 'prompt'.", code="missing_required_parameter"
            )
        n = int(fields.get("n") or 1)
        try:
            outputs = [edited_png(images[0]["data"], index=i) for i in range(n)]
        except Exception:  # noqa: BLE001 - any undecodable upload is the client's fault
            return error_reply(
                400,
                "Invalid image file or mode for image 1, please check your image file.",
                code="invalid_image_file",
            )
        usage = self.usage_override or {
            "input_tokens": tok(fields["prompt"]) + IMAGE_INPUT_TOKENS * len(images),
            "input_tokens_details": {
                "text_tokens": tok(fields["prompt"]),
                "image_tokens": IMAGE_INPUT_TOKENS * len(images),
            },
            "output_tokens": IMAGE_OUTPUT_TOKENS * n,
            "output_tokens_details": {"text_tokens": 0, "image_tokens": IMAGE_OUTPUT_TOKENS * n},
        }
        usage = {**usage, "total_tokens": usage.get("input_tokens", 0) + usage.get("output_tokens", 0)}
        record.usage = usage
        if fault.kind == "url_only":
            data = [{"url": f"https://images.invalid/fake-{i}.png"} for i in range(n)]
        elif fault.kind == "no_image":
            data = []
        else:
            data = [{"b64_json": b64(png)} for png in outputs]
        return Reply(
            200,
            {
                "created": int(time.time()),
                "data": data,
                "usage": usage,
                "output_format": "png",
                "background": "opaque",
            },
        )


def main(argv: list[str] | None = None) -> None:
    serve_forever_cli(FakeOpenAI, "fake-openai", "Run a fake OpenAI server on 127.0.0.1.", "401", argv)


if __name__ == "__main__":
    main()
