"""A fake Gemini API (generateContent) on 127.0.0.1, with scripted faults and safety blocks.

Speaks the real REST protocol, so tests drive the unmodified `google-genai` SDK against it:
`POST /{v1|v1beta|v1alpha}/models/{model}:generateContent` with the key in `x-goog-api-key`, JSON bodies
(`contents[].parts[]` with `text` / `inlineData`, `systemInstruction`, `generationConfig`), replies with
`candidates[0].content.parts[]` (`text`, or `inlineData {mimeType, data}` for image output) and `usageMetadata`.
A request whose `generationConfig.responseModalities` includes IMAGE is an edit: the reply image is the first
input image with a coloured rectangle drawn on it (a real PNG).

Fault kinds (spec syntax in `tests/fakes/base.py`):
  ok | 400 | 401 | 403 | 404 | 422 | 429[:retry_after_s] | 500 | 502 | 503 | 504
      (429 with an arg sends both a Retry-After header and a google.rpc.RetryInfo detail)
  quota[:seconds]  429 with the delay only in the body (google.rpc.RetryInfo retryDelay), no Retry-After header
  bad_key          400 INVALID_ARGUMENT with reason API_KEY_INVALID (what Gemini really sends for a wrong key)
  slow[:seconds]   reply after `seconds` (default 30)              drop   close the connection, no reply
  safety | image_safety | prohibited | recitation    finishReason SAFETY / IMAGE_SAFETY / PROHIBITED_CONTENT /
                                                     RECITATION and no content parts
  blocked_prompt[:REASON]   promptFeedback.blockReason (default SAFETY), no candidates
  no_candidates     a 200 reply with usage but an empty `candidates` list and no prompt feedback
  noimage[:FINISH]  a text-only reply ("I can't edit this image.") with finishReason FINISH (default STOP)
  `FakeGemini(noimage_every=N)`: every N-th image (edit) call that has no other fault gets `noimage`
  (held-out lost edits: the Uni-Edit release retries such replies)
  invalid_json | truncated (finishReason MAX_TOKENS) | fenced     for text (JSON) replies
  continuation      the first hop of a continued generation: a text part ("Working on it. "), finishReason
                    CONTINUATION and a continuationToken (the SDK resumes with the token; script the next reply)

CLI: `python -m tests.fakes.gemini_server --port 0 --latency 0.05` prints the base URL and serves until Ctrl-C.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import time
from typing import Any

from .base import (
    GEMINI_1K_SIZES,
    FakeServer,
    Fault,
    RecordedRequest,
    Reply,
    b64,
    b64decode_any,
    detect_task,
    edited_png,
    parse_fault,
    serve_forever_cli,
)
from .base import token_estimate as tok
from .batch_jobs import BatchJobs, FakeJob

_ROUTE = re.compile(r"^/(v1[a-z0-9]*)/models/([^/:]+):generateContent$")
_BATCH_CREATE = re.compile(r"^/(v1[a-z0-9]*)/models/([^/:]+):batchGenerateContent$")
_BATCH_GET = re.compile(r"^/(v1[a-z0-9]*)/batches/([^/:]+)(:cancel)?$")
_BATCH_LIST = re.compile(r"^/(v1[a-z0-9]*)/batches$")
_UPLOAD = re.compile(r"^/upload/(v1[a-z0-9]*)/files$")
_FILE_DOWNLOAD = re.compile(r"^(?:/download)?/(v1[a-z0-9]*)/files/([^/:]+):download$")
_BATCH_STATES = {"pending": "BATCH_STATE_PENDING", "running": "BATCH_STATE_RUNNING",
                 "completed": "BATCH_STATE_SUCCEEDED", "failed": "BATCH_STATE_FAILED",
                 "expired": "BATCH_STATE_EXPIRED", "cancelled": "BATCH_STATE_CANCELLED"}
#: HTTP status of an item's error → its google.rpc code inside a batch
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 422: 3, 429: 8, 500: 13, 502: 14, 503: 14, 504: 4}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FINISH_FAULTS = {
    "safety": "SAFETY",
    "image_safety": "IMAGE_SAFETY",
    "prohibited": "PROHIBITED_CONTENT",
    "recitation": "RECITATION",
}
#: stands in for a reply image's base64 while the rest of the reply is dumped (ImageReply)
_IMAGE_SLOT = "fake-gemini-image-slot-5b0c9e"
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
IMAGE_INPUT_TOKENS = 258  # Gemini bills a small input image as 258 tokens
IMAGE_OUTPUT_TOKENS = 1120  # a 1K image from gemini-3-pro-image-preview


def error_reply(
    status: int,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return Reply(status, {"error": error}, headers=headers)


class ImageReply(Reply):
    """A reply with one image's base64 in it (`blob`, an inlineData dict inside `body`): its JSON is the rest
    dumped with the base64 spliced in, the same bytes as `json.dumps(body)` (base64 needs no escaping) without
    json.dumps checking ~2 MB of it a character at a time (~10 ms of the fake's CPU per 1024-px edit)."""

    def __init__(self, body: dict[str, Any], blob: dict[str, Any]) -> None:
        super().__init__(200, body)
        self.blob = blob

    def payload(self) -> bytes:
        data = self.blob["data"]
        self.blob["data"] = _IMAGE_SLOT
        try:
            head, tail = json.dumps(self.body).encode().split(_IMAGE_SLOT.encode())
        finally:
            self.blob["data"] = data
        return b"".join((head, data.encode("ascii"), tail))


def _image_bytes(text: str) -> bytes:
    """An inlineData's bytes: URL-safe or standard base64 (the SDK sends URL-safe) in one translate and one
    validated decode; anything else (whitespace, no padding) through base.b64decode_any."""
    try:
        raw = text.encode("ascii").translate(_URLSAFE_TO_STANDARD)
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return b64decode_any(text)


def _bad_key_reply() -> Reply:
    return error_reply(
        400,
        "API key not valid. Please pass a valid API key.",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ],
    )


def _get(obj: dict[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    """Read a field the SDK may send in camelCase (REST) or snake_case."""
    if camel in obj:
        return obj[camel]
    return obj.get(snake, default)


class FakeGemini(BatchJobs, FakeServer):
    """`with FakeGemini() as server: genai.Client(api_key=..., http_options={"base_url": server.base_url})`.

    Also Batch Mode: `POST /{v}/models/{model}:batchGenerateContent` (inline requests, or a `fileName` uploaded
    with the File API's resumable `POST /upload/{v}/files`), `GET /{v}/batches/{id}`
    (the operation; results as inlined responses, or as a responses file when `batch_output = "file"`, read
    with `GET /download/{v}/files/{id}:download`), `POST /{v}/batches/{id}:cancel` (see `batch_jobs.py`)."""

    RANDOM_FAULTS = ("429:0.01", "500", "503")

    def __init__(self, *, noimage_every: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.thoughts_tokens = 0
        self.noimage_every = noimage_every
        self._ids = itertools.count(1)
        self._init_batches()
        #: "inline" (inlinedResponses) or "file" (a responsesFile of JSONL)
        self.batch_output = "inline"
        self.files: dict[str, bytes] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self._image_calls = itertools.count(1)  # next() on a count is atomic under the GIL

    def _handle(self, record: RecordedRequest, presented_key: str) -> Reply:
        path = record.path.split("?", 1)[0]
        if _BATCH_CREATE.match(path) or _BATCH_GET.match(path) or _FILE_DOWNLOAD.match(path) \
                or _BATCH_LIST.match(path) or _UPLOAD.match(path):
            record.task = "batch-api"
            if _UPLOAD.match(path) and "upload_id=" in record.path:
                return self._batch_api(record, path, presented_key)  # the upload URL itself authorises
            if not presented_key:
                return error_reply(403, "Method doesn't allow unregistered callers.")
            if self.api_key is not None and presented_key != self.api_key:
                return _bad_key_reply()
            return self._batch_api(record, path, presented_key)
        match = _ROUTE.match(path)
        if record.method != "POST" or match is None:
            return error_reply(404, f"Invalid URL {record.method} {record.path}")
        record.model = match.group(2)
        body = record.body if isinstance(record.body, dict) else {}
        config = _get(body, "generationConfig", "generation_config", {}) or {}
        modalities = [
            str(m).upper() for m in _get(config, "responseModalities", "response_modalities", []) or []
        ]
        texts, images = self._inputs(body)
        if "IMAGE" in modalities:
            record.task = "edit"
        else:
            schema = _get(config, "responseJsonSchema", "response_json_schema") or _get(
                config, "responseSchema", "response_schema"
            )
            record.task = detect_task(schema, "", texts)
        if not presented_key:
            return error_reply(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity.",
            )
        if self.api_key is not None and presented_key != self.api_key:
            return _bad_key_reply()
        fault = self._next_fault(record)
        if record.task == "edit" and self.noimage_every:
            if next(self._image_calls) % self.noimage_every == 0 and fault.kind == "ok":
                fault = parse_fault("noimage")
        record.fault = str(fault)
        reply = self._fault_reply(fault, record, texts, images)
        if reply is not None:
            return reply
        if fault.kind == "slow":
            self._sleep(fault.float_arg if fault.float_arg is not None else 30.0)
        if record.task == "edit":
            return self._edit(record, modalities, texts, images, fault)
        return self._text(record, config, texts, images, fault)

    @staticmethod
    def _inputs(body: dict[str, Any]) -> tuple[list[str], list[bytes]]:
        texts: list[str] = []
        images: list[bytes] = []
        contents = list(body.get("contents") or [])
        system = _get(body, "systemInstruction", "system_instruction")
        if isinstance(system, dict):
            contents.append(system)
        for content in contents:
            for part in content.get("parts") or []:
                if "text" in part:
                    texts.append(str(part["text"]))
                inline = _get(part, "inlineData", "inline_data")
                if isinstance(inline, dict) and inline.get("data"):
                    images.append(_image_bytes(str(inline["data"])))
        return texts, images

    def _usage(self, record: RecordedRequest, texts: list[str], images: list[bytes], out_tokens: int) -> dict:
        usage = self.usage_override or {
            "promptTokenCount": tok("\n".join(texts)) + IMAGE_INPUT_TOKENS * len(images),
            "candidatesTokenCount": out_tokens,
        }
        usage = dict(usage)
        if self.thoughts_tokens and "thoughtsTokenCount" not in usage:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        usage["totalTokenCount"] = sum(
            int(usage.get(k, 0)) for k in ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount")
        )
        record.usage = usage
        return usage

    def _envelope(
        self,
        record: RecordedRequest,
        candidates: list[dict] | None,
        usage: dict,
        prompt_feedback: dict | None = None,
    ) -> Reply:
        body: dict[str, Any] = {
            "usageMetadata": usage,
            "modelVersion": record.model,
            "responseId": f"fake-{next(self._ids)}",
        }
        if candidates is not None:
            body["candidates"] = candidates
        if prompt_feedback is not None:
            body["promptFeedback"] = prompt_feedback
        return Reply(200, body)

    def _fault_reply(
        self, fault: Fault, record: RecordedRequest, texts: list[str], images: list[bytes]
    ) -> Reply | None:
        kind = fault.kind
        if kind.isdigit():
            status = int(kind)
            headers: dict[str, str] = {}
            details = None
            if status == 429 and fault.arg is not None:
                headers["Retry-After"] = fault.arg
                details = [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{fault.arg}s"}
                ]
            message = {
                401: "Request had invalid authentication credentials.",
                403: "The caller does not have permission.",
                404: f"models/{record.model} is not found for API version v1beta.",
                429: "Resource has been exhausted (e.g. check quota).",
            }.get(status, "An internal error has occurred." if status >= 500 else f"Fake error {status}.")
            return error_reply(status, message, details=details, headers=headers)
        if kind == "quota":
            details = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{fault.arg or 1}s"}
            ]
            return error_reply(429, "You exceeded your current quota.", details=details)
        if kind == "bad_key":
            return _bad_key_reply()
        if kind == "drop":
            return Reply(drop=True)
        if kind in _FINISH_FAULTS:
            candidate = {
                "finishReason": _FINISH_FAULTS[kind],
                "index": 0,
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
                ],
            }
            return self._envelope(record, [candidate], self._usage(record, texts, images, 0))
        if kind == "blocked_prompt":
            feedback = {"blockReason": (fault.arg or "SAFETY").upper()}
            return self._envelope(record, None, self._usage(record, texts, images, 0), feedback)
        if kind == "no_candidates":
            return self._envelope(record, [], self._usage(record, texts, images, 0))
        if kind == "continuation":
            text = fault.text or "Working on it. "
            candidate = {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "CONTINUATION",
                "continuationToken": b64(b"\xfb\xff-fake-continuation"),  # '+' and '/' in standard base64
                "index": 0,
            }
            return self._envelope(record, [candidate], self._usage(record, texts, images, tok(text)))
        if kind == "noimage":
            text = fault.text or "I can't edit this image."
            candidate = {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": (fault.arg or "STOP").upper(),
                "index": 0,
            }
            return self._envelope(record, [candidate], self._usage(record, texts, images, tok(text)))
        return None

    def _text(
        self,
        record: RecordedRequest,
        config: dict[str, Any],
        texts: list[str],
        images: list[bytes],
        fault: Fault,
    ) -> Reply:
        schema = _get(config, "responseJsonSchema", "response_json_schema") or _get(
            config, "responseSchema", "response_schema"
        )
        content = self._reply_content(record.task, schema, fault, texts)
        text = fault.text if fault.text is not None else json.dumps(content)
        finish = "STOP"
        if fault.kind == "invalid_json":
            text = "Here you go: {task_category: color, oops"
        elif fault.kind == "truncated":
            text, finish = text[: max(1, len(text) // 2)], "MAX_TOKENS"
        elif fault.kind == "fenced":
            text = f"```json\n{text}\n```"
        candidate = {
            "content": {"role": "model", "parts": [{"text": text}]},
            "finishReason": finish,
            "index": 0,
        }
        return self._envelope(record, [candidate], self._usage(record, texts, images, tok(text)))

    def _edit(
        self,
        record: RecordedRequest,
        modalities: list[str],
        texts: list[str],
        images: list[bytes],
        fault: Fault,
    ) -> Reply:
        if not images:
            return error_reply(400, "An input image is required for this fake edit endpoint.")
        config = _get(record.body if isinstance(record.body, dict) else {}, "generationConfig", "generation_config", {})
        image_config = _get(config or {}, "imageConfig", "image_config", {}) or {}
        aspect = _get(image_config, "aspectRatio", "aspect_ratio")
        record.edit_geometry = aspect
        size = GEMINI_1K_SIZES.get(str(aspect or "1:1")) if self.edit_geometry else None
        try:
            # fault "unchanged": the input image back as it came (an editor that did nothing)
            png = images[0] if fault.kind == "unchanged" else edited_png(images[0], size=size)
        except Exception:  # noqa: BLE001 - an undecodable upload is the client's fault
            return error_reply(
                400,
                "Unable to process input image. Please retry or report in "
                "https://developers.generativeai.google/guide/troubleshooting",
            )
        parts: list[dict[str, Any]] = []
        out_tokens = IMAGE_OUTPUT_TOKENS
        if "TEXT" in modalities:
            note = fault.text or "Here is the edited image."
            parts.append({"text": note})
            out_tokens += tok(note)
        blob = {"mimeType": "image/png", "data": b64(png)}
        parts.append({"inlineData": blob})
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        reply = self._envelope(record, [candidate], self._usage(record, texts, images, out_tokens))
        return ImageReply(reply.body, blob)


    # -- Batch Mode ---------------------------------------------------------------------------------------
    def _batch_api(self, record: RecordedRequest, path: str, key: str) -> Reply:
        body = record.body if isinstance(record.body, dict) else {}
        created = _BATCH_CREATE.match(path)
        if created and record.method == "POST":
            fault = self._submit_fault()
            if fault is not None and fault.kind != "500_after":
                record.fault = str(fault)
                return self._fault_reply(fault, record, [], []) or error_reply(500, "fake submit fault")
            if fault is not None:  # create the job, lose the reply
                record.fault = str(fault)
                self._batch_api_create(record, created, body, key)
                return error_reply(500, "An internal error has occurred.")
            return self._batch_api_create(record, created, body, key)
        return self._batch_api_rest(record, path, body, key)

    def _batch_api_create(self, record: RecordedRequest, created: Any, body: dict[str, Any], key: str) -> Reply:
        version, model = created.group(1), created.group(2)
        batch = body.get("batch") or {}
        source = batch.get("inputConfig") or {}
        requests = (source.get("requests") or {}).get("requests")
        file_name = source.get("fileName")
        if file_name:  # an uploaded JSONL file: one {"key", "request"} per line
            if file_name not in self.files:
                return error_reply(400, f"File {file_name} not found.")
            lines = [json.loads(line) for line in self.files[file_name].splitlines() if line.strip()]
            requests = [{"request": line.get("request") or {}, "metadata": {"key": line.get("key")}}
                        for line in lines]
        if not isinstance(requests, list) or not requests:
            return error_reply(400, "batch.inputConfig needs requests or a fileName.")
        job = self._new_job("fakebatch", requests, key, model=model, version=version,
                            display_name=batch.get("displayName", ""), file_input=bool(file_name))
        return Reply(200, self._operation(job))

    def _upload(self, record: RecordedRequest, version: str) -> Reply:
        """The File API's resumable upload: `start` hands out an upload URL, chunks follow, `finalize` ends it."""
        from urllib.parse import parse_qs, urlsplit

        command = (record.header("x-goog-upload-command") or "").lower()
        upload_id = (parse_qs(urlsplit(record.path).query).get("upload_id") or [None])[0]
        if "start" in command:
            meta = (record.body or {}).get("file", {}) if isinstance(record.body, dict) else {}
            with self._lock:
                upload_id = f"up{len(self.uploads) + 1}"
                self.uploads[upload_id] = {"data": b"", "meta": meta}
            url = f"{self.root_url}/upload/{version}/files?upload_id={upload_id}"
            return Reply(200, {}, headers={"x-goog-upload-url": url, "x-goog-upload-status": "active"})
        upload = self.uploads.get(upload_id or "")
        if upload is None:
            return error_reply(404, "No such upload.")
        upload["data"] += record.raw
        if "finalize" not in command:
            return Reply(200, {}, headers={"x-goog-upload-status": "active"})
        name = f"files/upload-{upload_id}"
        self.files[name] = upload["data"]
        file = {"name": name, "displayName": upload["meta"].get("displayName", ""),
                "mimeType": upload["meta"].get("mimeType", "application/jsonl"),
                "sizeBytes": str(len(upload["data"])), "state": "ACTIVE", "source": "UPLOADED"}
        return Reply(200, {"file": file}, headers={"x-goog-upload-status": "final"})

    def _batch_api_rest(self, record: RecordedRequest, path: str, body: dict[str, Any], key: str) -> Reply:
        uploading = _UPLOAD.match(path)
        if uploading and record.method == "POST":
            return self._upload(record, uploading.group(1))
        if _BATCH_LIST.match(path):  # newest first, pageSize + pageToken (the index to start at)
            from urllib.parse import parse_qs, urlsplit

            query = parse_qs(urlsplit(record.path).query)
            size = int((query.get("pageSize") or ["50"])[0])
            start = int((query.get("pageToken") or ["0"])[0])
            ids = sorted(self.jobs, reverse=True)
            body = {"operations": [self._operation(self.jobs[i]) for i in ids[start:start + size]]}
            if start + size < len(ids):
                body["nextPageToken"] = str(start + size)
            return Reply(200, body)
        download = _FILE_DOWNLOAD.match(path)
        if download:
            name = f"files/{download.group(2)}"
            if name not in self.files:
                return error_reply(404, f"File {name} not found.")
            return Reply(200, raw=self.files[name], headers={"Content-Type": "application/octet-stream"})
        got = _BATCH_GET.match(path)
        if got is None:
            return error_reply(404, f"Invalid URL {record.method} {record.path}")
        job = self.jobs.get(got.group(2))
        if job is None:
            return error_reply(404, f"Batch batches/{got.group(2)} not found.")
        if got.group(3):
            with job.lock:
                if not job.done:
                    job.state = "cancelled"
            return Reply(200, {})
        fault = self._poll_fault()
        if fault is not None:
            record.fault = str(fault)
            reply = self._fault_reply(fault, record, [], [])
            if reply is not None:
                return reply
        self._advance(job)
        return Reply(200, self._operation(job))

    def _run_item(self, job: FakeJob, index: int, item: Any) -> tuple[int, Any]:
        request = dict(item.get("request") or {})
        model = str(request.pop("model", "") or job.meta["model"]).removeprefix("models/")
        record = RecordedRequest(method="POST", path=f"/{job.meta['version']}/models/{model}:generateContent",
                                 headers={}, body=request, auth_present=True, started=time.monotonic(),
                                 batch=job.id)
        self._record(record)
        reply = self._handle(record, job.key)
        record.status = reply.status
        record.finished = time.monotonic()
        return reply.status, reply.body

    def _responses(self, job: FakeJob) -> list[dict[str, Any]]:
        out = []
        for index, status, body in job.results:
            metadata = job.items[index].get("metadata")
            if status == 200:
                entry: dict[str, Any] = {"response": body}
            else:
                error = (body or {}).get("error") or {}
                entry = {"error": {"code": _RPC_CODES.get(status, 2), "message": error.get("message", "")}}
            if metadata is not None:
                entry["metadata"] = metadata
            out.append(entry)
        return out

    def _operation(self, job: FakeJob) -> dict[str, Any]:
        ok = sum(1 for _, status, _ in job.results if status == 200)
        meta: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "name": f"batches/{job.id}", "model": f"models/{job.meta['model']}",
            "displayName": job.meta.get("display_name", ""), "state": _BATCH_STATES[job.state],
            "createTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job.created_unix)),
            "updateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "batchStats": {"requestCount": str(len(job.items)), "successfulRequestCount": str(ok),
                           "failedRequestCount": str(len(job.results) - ok),
                           "pendingRequestCount": str(len(job.items) - len(job.results))},
        }
        operation: dict[str, Any] = {"name": f"batches/{job.id}", "metadata": meta, "done": job.done}
        if job.done and job.state != "failed":
            if self.batch_output == "file" or job.meta.get("file_input"):  # a file in, a file out
                name = f"files/batch-out-{job.id}"
                if name not in self.files:
                    lines = []
                    for entry in self._responses(job):
                        key = (entry.pop("metadata", None) or {}).get("key")
                        lines.append(json.dumps({"key": key, **entry}).encode())
                    self.files[name] = b"\n".join(lines) + b"\n"
                output: dict[str, Any] = {"responsesFile": name}
            else:
                output = {"inlinedResponses": {"inlinedResponses": self._responses(job)}}
            meta["output"] = output
            operation["response"] = {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput",
                **output,
            }
        if job.state == "failed":
            operation["error"] = {"code": 3, "message": "The batch is invalid (fake: scripted validation failure)."}
        return operation


def main(argv: list[str] | None = None) -> None:
    serve_forever_cli(FakeGemini, "fake-gemini", "Run a fake Gemini API server on 127.0.0.1.", "400 API_KEY_INVALID", argv)


if __name__ == "__main__":
    main()
