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
import re
import time
from typing import Any

from .base import FakeServer, Fault, RecordedRequest, Reply, b64, detect_task, edited_png, serve_forever_cli
from .base import token_estimate as tok
from .batch_jobs import BatchJobs, FakeJob

_FILE_ROUTE = re.compile(r"^/v1/files(?:/([^/]+))?(/content)?$")
_BATCH_ROUTE = re.compile(r"^/v1/batches(?:/([^/]+))?(/cancel)?$")
_BATCH_STATUS = {"pending": "validating", "running": "in_progress", "completed": "completed", "failed": "failed",
                 "expired": "expired", "cancelled": "cancelled"}
BATCH_ENDPOINTS = ("/v1/chat/completions",)

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


class FakeOpenAI(BatchJobs, FakeServer):
    """`with FakeOpenAI(latency=0.01) as server: AsyncOpenAI(base_url=server.base_url, ...)`.

    Also the Batch API: `POST /v1/files` (multipart, purpose=batch), `GET /v1/files/{id}[/content]`,
    `POST /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`, for `/v1/chat/completions`
    items (see `tests/fakes/batch_jobs.py` for job scripting)."""

    RANDOM_FAULTS = ("429:0.01", "500", "503", "invalid_json")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ids = itertools.count(1)
        self._init_batches()
        self.files: dict[str, dict[str, Any]] = {}
        self._file_ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def _handle(self, record: RecordedRequest, presented_key: str) -> Reply:
        path = record.path.split("?", 1)[0].rstrip("/")
        if _FILE_ROUTE.match(path) or _BATCH_ROUTE.match(path):
            record.task = "batch-api"
            if not presented_key:
                return error_reply(401, "You didn't provide an API key.", code="missing_api_key")
            if self.api_key is not None and presented_key != self.api_key:
                return error_reply(401, f"Incorrect API key provided: {presented_key}.")
            return self._batch_api(record, path, presented_key)
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
        record.edit_geometry = fields.get("size")
        size = None
        if self.edit_geometry and str(fields.get("size") or "auto") != "auto":
            width, _, height = str(fields["size"]).partition("x")
            size = (int(width), int(height))
        try:
            if fault.kind == "unchanged":  # the input image back as it came (an editor that did nothing)
                outputs = [images[0]["data"]] * n
            else:
                outputs = [edited_png(images[0]["data"], index=i, size=size) for i in range(n)]
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


    # -- Files + Batches ----------------------------------------------------------------------------------
    def _file_object(self, file_id: str) -> dict[str, Any]:
        f = self.files[file_id]
        return {"id": file_id, "object": "file", "bytes": len(f["data"]), "created_at": f["created_at"],
                "filename": f["filename"], "purpose": f["purpose"], "status": "processed", "expires_at": None,
                "status_details": None}

    def _new_file(self, data: bytes, filename: str, purpose: str) -> str:
        with self._lock:
            file_id = f"file-fake{next(self._file_ids):06d}"
            self.files[file_id] = {"data": data, "filename": filename, "purpose": purpose,
                                   "created_at": int(time.time())}
        return file_id

    def _batch_api(self, record: RecordedRequest, path: str, key: str) -> Reply:
        body = record.body if isinstance(record.body, dict) else {}
        files = _FILE_ROUTE.match(path)
        if files:
            file_id, content = files.group(1), files.group(2)
            if record.method == "POST" and file_id is None:
                upload = ((body.get("files") or {}).get("file") or [None])[0]
                purpose = (body.get("fields") or {}).get("purpose", "")
                if upload is None or purpose not in ("batch", "batch_output", "user_data", "vision"):
                    return error_reply(400, "Missing file or invalid purpose.", code="invalid_request")
                return Reply(200, self._file_object(self._new_file(upload["data"], upload["filename"], purpose)))
            if file_id not in self.files:
                return error_reply(404, f"No such File object: {file_id}", code=None)
            if content:
                return Reply(200, raw=self.files[file_id]["data"], headers={"Content-Type": "application/octet-stream"})
            return Reply(200, self._file_object(file_id))
        match = _BATCH_ROUTE.match(path)
        assert match is not None
        batch_id, cancel = match.group(1), match.group(2)
        if record.method == "POST" and batch_id is None:
            fault = self._submit_fault()
            if fault is not None and fault.kind != "500_after":
                record.fault = str(fault)
                return self._fault_reply(fault) or error_reply(500, "fake submit fault")
            reply = self._create_batch(body, key)
            if fault is not None:  # created, but the reply is lost
                record.fault = str(fault)
                return error_reply(500, "The server had an error while processing your request.")
            return reply
        if batch_id is None:  # GET /v1/batches: newest first, `after` + `limit` pagination
            return self._list_batches(record.path)
        job = self.jobs.get(batch_id or "")
        if job is None:
            return error_reply(404, f"No batch found with id '{batch_id}'.", code=None)
        if cancel:
            with job.lock:
                if not job.done:
                    job.state = "cancelled"
            return Reply(200, self._batch_object(job))
        fault = self._poll_fault()
        if fault is not None:
            record.fault = str(fault)
            reply = self._fault_reply(fault)
            if reply is not None:
                return reply
        self._advance(job)
        return Reply(200, self._batch_object(job))

    def _list_batches(self, path: str) -> Reply:
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(path).query)
        limit = int((query.get("limit") or ["20"])[0])
        after = (query.get("after") or [None])[0]
        ids = sorted(self.jobs, reverse=True)
        if after in ids:
            ids = ids[ids.index(after) + 1:]
        page = [self._batch_object(self.jobs[i]) for i in ids[:limit]]
        return Reply(200, {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                           "last_id": page[-1]["id"] if page else None, "has_more": len(ids) > limit})

    def _create_batch(self, body: dict[str, Any], key: str) -> Reply:
        input_id = str(body.get("input_file_id", ""))
        endpoint = str(body.get("endpoint", ""))
        window = str(body.get("completion_window", ""))
        if input_id not in self.files:
            return error_reply(400, f"Invalid input_file_id: {input_id}", code="invalid_request")
        if window != "24h":
            return error_reply(400, "completion_window must be 24h", code="invalid_value")
        if endpoint not in BATCH_ENDPOINTS:
            return error_reply(400, f"Invalid endpoint: {endpoint}", code="invalid_value")
        lines = [json.loads(line) for line in self.files[input_id]["data"].splitlines() if line.strip()]
        job = self._new_job("batch_fake", lines, key, endpoint=endpoint, input_file_id=input_id,
                            metadata=body.get("metadata"), window=window)
        if any(line.get("url") != endpoint or "custom_id" not in line for line in lines):
            job.outcome = "fail_validation"  # what the real API does with a line for another endpoint
        return Reply(200, self._batch_object(job))

    def _run_item(self, job: FakeJob, index: int, item: Any) -> tuple[int, Any]:
        record = RecordedRequest(method="POST", path=item.get("url", ""), headers={}, body=item.get("body"),
                                 auth_present=True, started=time.monotonic(), batch=job.id)
        self._record(record)
        reply = self._handle(record, job.key)
        record.status = reply.status
        record.finished = time.monotonic()
        return reply.status, reply.body

    def _finish_files(self, job: FakeJob) -> None:
        if "output_file_id" in job.meta or not job.done:
            return
        out: list[bytes] = []
        errors: list[bytes] = []
        answered = set()
        for index, status, body in job.results:
            answered.add(index)
            line = {"id": f"batch_req_{job.id}_{index}", "custom_id": job.items[index].get("custom_id"),
                    "response": {"status_code": status, "request_id": f"req_{index}", "body": body}, "error": None}
            (out if status == 200 else errors).append(json.dumps(line).encode())
        if job.state in ("expired", "cancelled"):
            code = "batch_expired" if job.state == "expired" else "batch_cancelled"
            for index, item in enumerate(job.items):
                if index not in answered:
                    line = {"id": f"batch_req_{job.id}_{index}", "custom_id": item.get("custom_id"), "response": None,
                            "error": {"code": code, "message": "This request could not be executed before the "
                                      "completion window expired." if code == "batch_expired" else "cancelled"}}
                    errors.append(json.dumps(line).encode())
        job.meta["output_file_id"] = self._new_file(b"\n".join(out) + b"\n", "output.jsonl", "batch_output") if out else None
        job.meta["error_file_id"] = self._new_file(b"\n".join(errors) + b"\n", "errors.jsonl", "batch_output") if errors else None

    def _batch_object(self, job: FakeJob) -> dict[str, Any]:
        self._finish_files(job)
        ok = sum(1 for _, status, _ in job.results if status == 200)
        failed = len(job.results) - ok
        if job.state in ("expired", "cancelled"):
            failed += len(job.items) - len(job.results)
        errors = None
        if job.state == "failed":
            errors = {"object": "list", "data": [{"code": "invalid_request", "message": "The batch input file is "
                                                  "invalid (fake: scripted validation failure).", "param": None,
                                                  "line": 1}]}
        now = int(time.time())
        return {
            "id": job.id, "object": "batch", "endpoint": job.meta["endpoint"], "errors": errors,
            "input_file_id": job.meta["input_file_id"], "completion_window": job.meta["window"],
            "status": _BATCH_STATUS[job.state], "output_file_id": job.meta.get("output_file_id"),
            "error_file_id": job.meta.get("error_file_id"), "created_at": job.created_unix,
            "in_progress_at": job.created_unix if job.state != "pending" else None,
            "expires_at": job.created_unix + 86400,
            "completed_at": now if job.state == "completed" else None,
            "failed_at": now if job.state == "failed" else None,
            "expired_at": now if job.state == "expired" else None,
            "cancelled_at": now if job.state == "cancelled" else None,
            "request_counts": {"total": len(job.items), "completed": ok, "failed": failed},
            "metadata": job.meta.get("metadata"),
        }


def main(argv: list[str] | None = None) -> None:
    serve_forever_cli(FakeOpenAI, "fake-openai", "Run a fake OpenAI server on 127.0.0.1.", "401", argv)


if __name__ == "__main__":
    main()
