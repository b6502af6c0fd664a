"""Provider batch routes: how a backend's requests go out as one batch job, and how its results come back.

- OpenAI (`OpenAIChatBatch`): Chat Completions through the Batch API — the requests as a JSONL file uploaded with
  `files.create(purpose="batch")`, `batches.create(endpoint="/v1/chat/completions")`, `batches.retrieve` to poll
  (validating → in_progress → finalizing → completed | expired | cancelled | failed), the output file
  (`custom_id` + `response.body`) and the error file read with `files.content`. Image edits (`images.edit`,
  multipart) have no batch route here and stay online.
- Gemini (`GeminiBatch`): `batchGenerateContent` (text and image edits) with inline requests, or, for a job over
  the 20 MB inline limit, a JSONL file of `{"key", "request"}` lines uploaded with the File API; `batches.get` to
  poll (PENDING → RUNNING → SUCCEEDED | FAILED | CANCELLED | EXPIRED); results as inlined responses or a
  responses file (`files.download`).

A route reuses its backend's request building, reply parsing and HTTP-status mapping (`status_error`), so a
batch reply or failure is read exactly as the online one would be (the one difference: a malformed JSON reply
gets no repair round trip, it is final).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from .base import BackendError, MalformedReply, RetryableError, TextReply, Usage
from .replies import parse_reply, truncate

# job states as the engine names them (engine/batch.py JobStatus)
_OPENAI_STATES = {
    "validating": "pending", "in_progress": "running", "finalizing": "running", "cancelling": "running",
    "completed": "completed", "expired": "expired", "cancelled": "cancelled", "failed": "failed",
}
_GEMINI_STATES = {
    "JOB_STATE_QUEUED": "pending", "JOB_STATE_PENDING": "pending", "JOB_STATE_RUNNING": "running",
    "JOB_STATE_UPDATING": "running", "JOB_STATE_CANCELLING": "running", "JOB_STATE_PAUSED": "running",
    "JOB_STATE_SUCCEEDED": "completed", "JOB_STATE_PARTIALLY_SUCCEEDED": "completed",
    "JOB_STATE_FAILED": "failed", "JOB_STATE_CANCELLED": "cancelled", "JOB_STATE_EXPIRED": "expired",
}


@dataclass
class JobStatus:
    """A provider batch job as the engine sees it; `state` is one of pending, running, completed, expired,
    cancelled, failed."""

    state: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    detail: str = ""


@dataclass
class ItemResult:
    """One request's outcome inside a finished job: a reply, or an error (final ones are cached as for online)."""

    reply: Any = None
    error: Exception | None = None


def _job_status(state: str, total: int = 0, completed: int = 0, failed: int = 0, detail: str = "") -> JobStatus:
    return JobStatus(state=state, total=total, completed=completed, failed=failed, detail=detail)


def _item(reply: Any = None, error: Exception | None = None) -> ItemResult:
    return ItemResult(reply=reply, error=error)


class OpenAIChatBatch:
    provider = "openai"
    endpoint = "/v1/chat/completions"

    def __init__(self, backend: Any):
        self.backend = backend
        self._sizes: dict[int, int] = {}

    def _line(self, key: str, request: Any) -> bytes:
        messages, kwargs, _ = self.backend._chat_request(request)
        extra = kwargs.pop("extra_body", None) or {}
        body = {"model": request.model or self.backend.model, "messages": messages, **kwargs, **extra}
        line = {"custom_id": key, "method": "POST", "url": self.endpoint, "body": body}
        return json.dumps(line, ensure_ascii=False).encode() + b"\n"

    def request_bytes(self, kind: str, request: Any) -> int:
        return len(self._line("0" * 64, request))

    async def submit(self, items: list[tuple[str, str, Any]], name: str, spec: Any) -> str:
        data = b"".join(self._line(key, request) for key, _, request in items)
        client = self.backend._client()
        upload = await self.backend._call(
            lambda: client.files.create(file=(f"{name}.jsonl", data, "application/jsonl"), purpose="batch")
        )
        job = await self.backend._call(
            lambda: client.batches.create(
                input_file_id=upload.id, endpoint=self.endpoint, completion_window=spec.completion_window,
                metadata={"uniedit_job": name},
            )
        )
        return job.id

    async def find(self, name: str) -> str | None:
        """The id of the job submitted as `name` (its metadata), or None: the most recent 1,000 jobs are looked at."""
        client = self.backend._client()
        page = await self.backend._call(lambda: client.batches.list(limit=100))
        seen = 0
        while page is not None and seen < 1000:
            for job in page.data:
                seen += 1
                if (job.metadata or {}).get("uniedit_job") == name:
                    return job.id
            page = await self.backend._call(page.get_next_page) if page.has_next_page() else None
        return None

    async def _retrieve(self, job_id: str) -> Any:
        client = self.backend._client()
        return await self.backend._call(lambda: client.batches.retrieve(job_id))

    async def poll(self, job_id: str) -> Any:
        job = await self._retrieve(job_id)
        counts = job.request_counts
        detail = ""
        if job.errors is not None and job.errors.data:
            first = job.errors.data[0]
            detail = f"{first.code or 'error'}: {first.message or ''}".strip()
        return _job_status(
            _OPENAI_STATES.get(job.status, "running"),
            total=counts.total if counts else 0,
            completed=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
            detail=detail,
        )

    async def results(self, job_id: str, requests: dict[str, dict[str, Any]]) -> dict[str, Any]:
        job = await self._retrieve(job_id)
        client = self.backend._client()
        out: dict[str, Any] = {}
        where = f"{self.backend.provider} {self.backend.model} (batch {job_id})"
        for file_id in (job.output_file_id, job.error_file_id):
            if not file_id:
                continue
            content = await self.backend._call(lambda fid=file_id: client.files.content(fid))
            for raw in content.content.splitlines():
                if not raw.strip():
                    continue
                line = json.loads(raw)
                key = line.get("custom_id")
                info = requests.get(key)
                if info is None:
                    continue
                out[key] = self._item(line, info, where)
        return out

    def _item(self, line: dict[str, Any], info: dict[str, Any], where: str) -> Any:
        from openai.types.chat import ChatCompletion

        response = line.get("response") or {}
        status = int(response.get("status_code") or 0)
        body = response.get("body") or {}
        if status == 200:
            try:
                completion = ChatCompletion.model_validate(body)
                usage = Usage()
                text = self.backend._chat_content(completion, int(info.get("images", 0)), usage)
                data = parse_reply(text, info.get("schema"))
            except BackendError as exc:
                return _item(error=exc)
            except ValueError:
                return _item(error=MalformedReply(f"{where}: reply did not match the API schema"))
            return _item(TextReply(data=data, text=text, usage=usage, model=info.get("model") or self.backend.model))
        if status:
            error = body.get("error") if isinstance(body, dict) else None
            error = error if isinstance(error, dict) else {}
            return _item(error=self.backend.status_error(
                status, str(error.get("code") or ""), str(error.get("message") or ""),
                kind=str(error.get("type") or ""), where=where))
        error = line.get("error") or {}
        return _item(error=RetryableError(f"{where}: {error.get('code', 'no result')}: {error.get('message', '')}"))


class GeminiBatch:
    provider = "gemini"

    def __init__(self, backend: Any, kind: str):
        self.backend = backend
        self.kind = kind

    def _inlined(self, key: str, kind: str, request: Any) -> Any:
        from google.genai import types

        if kind == "edit":
            contents, config = self.backend._edit_request(request)
        else:
            contents, config, _ = self.backend._text_request(request)
        return types.InlinedRequest(
            model=request.model or self.backend.model, contents=contents, config=config, metadata={"key": key}
        )

    def request_bytes(self, kind: str, request: Any) -> int:
        images = [request.image] if kind == "edit" else list(request.images)
        text = request.instruction if kind == "edit" else request.prompt + request.system
        return len(text.encode()) + sum(len(i) * 4 // 3 + 64 for i in images) + 2_000

    async def submit(self, items: list[tuple[str, str, Any]], name: str, spec: Any) -> str:
        model = items[0][2].model or self.backend.model
        src = [self._inlined(key, kind, request) for key, kind, request in items]
        client = self.backend._client()
        size = sum(self.request_bytes(kind, request) for _, kind, request in items)
        if size > self.INLINE_LIMIT:  # over the inline limit: a JSONL file uploaded with the File API
            data = self._jsonl(client, model, [key for key, _, _ in items], src)
            upload = await self.backend._call(lambda: client.aio.files.upload(
                file=io.BytesIO(data), config={"mime_type": "application/jsonl", "display_name": name}))
            source: Any = str(upload.name)
        else:
            source = src
        job = await self.backend._call(
            lambda: client.aio.batches.create(model=model, src=source, config={"display_name": name})
        )
        return str(job.name)

    #: bytes of inline requests Batch Mode accepts in one create call (above: an input file)
    INLINE_LIMIT = 19_000_000

    @staticmethod
    def _jsonl(client: Any, model: str, keys: list[str], src: list[Any]) -> bytes:
        """The input file: one `{"key", "request"}` line per request, each request in the REST form the SDK
        sends inline (its own converters, so a file and an inline job carry the same requests)."""
        from google.genai import _common, batches, types

        params = types._CreateBatchJobParameters(model=model, src=types.BatchJobSource(inlined_requests=src))
        body = batches._CreateBatchJobParameters_to_mldev(client._api_client, params)
        body = _common.encode_unserializable_types(_common.convert_to_dict(body))
        requests = body["batch"]["inputConfig"]["requests"]["requests"]
        return b"".join(json.dumps({"key": key, "request": item["request"]}).encode() + b"\n"
                        for key, item in zip(keys, requests, strict=True))

    async def find(self, name: str) -> str | None:
        """The name (`batches/…`) of the job submitted with display name `name`, or None (1,000 most recent)."""
        client = self.backend._client()
        pager = await self.backend._call(lambda: client.aio.batches.list(config={"page_size": 100}))
        seen = 0
        while seen < 1000:
            for job in pager.page:
                seen += 1
                if job.display_name == name:
                    return str(job.name)
            if not pager.config.get("page_token"):
                return None
            await self.backend._call(pager.next_page)
        return None

    async def _get(self, job_id: str) -> Any:
        client = self.backend._client()
        return await self.backend._call(lambda: client.aio.batches.get(name=job_id))

    async def poll(self, job_id: str) -> Any:
        job = await self._get(job_id)
        state = str(getattr(job.state, "value", job.state) or "")
        detail = ""
        if job.error is not None:
            detail = f"{job.error.code}: {job.error.message or ''}"
        return _job_status(_GEMINI_STATES.get(state, "running"), detail=detail)

    async def results(self, job_id: str, requests: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from google.genai import types

        job = await self._get(job_id)
        where = f"gemini {self.backend.model} (batch {job_id})"
        out: dict[str, Any] = {}
        dest = job.dest
        if dest is None:
            return out
        lines: list[tuple[Any, Any, Any]] = []  # (key, response, error)
        if dest.inlined_responses:
            order = list(requests)
            for i, item in enumerate(dest.inlined_responses):
                key = (item.metadata or {}).get("key") or (order[i] if i < len(order) else None)
                lines.append((key, item.response, item.error))
        elif dest.file_name:
            client = self.backend._client()
            blob = await self.backend._call(lambda: client.aio.files.download(file=dest.file_name))
            for raw in bytes(blob).splitlines():
                if not raw.strip():
                    continue
                line = json.loads(raw)
                response = line.get("response")
                parsed = types.GenerateContentResponse._from_response(response=response, kwargs={}) if response else None
                error = line.get("error") or line.get("status")
                lines.append((line.get("key") or (line.get("metadata") or {}).get("key"), parsed,
                              types.JobError(**error) if isinstance(error, dict) else None))
        for key, response, error in lines:
            info = requests.get(key)
            if info is None:
                continue
            out[key] = self._item(response, error, info, where)
        return out

    def _item(self, response: Any, error: Any, info: dict[str, Any], where: str) -> Any:
        if error is not None or response is None:
            code = int(getattr(error, "code", 0) or 0)
            message = str(getattr(error, "message", "") or "no response")
            if not code:  # no reply and no error: the job lost it, worth another wave
                return _item(error=RetryableError(f"{where}: {truncate(message)}"))
            return _item(error=self.backend.status_error(code, message, where=where))
        model = info.get("model") or self.backend.model
        try:
            if info.get("kind") == "edit":
                return _item(self.backend._edit_reply(response, model))
            usage = Usage()
            text = self.backend._text_content(response, int(info.get("images", 0)), usage)
            data = parse_reply(text, info.get("schema"))
            return _item(TextReply(data=data, text=text, usage=usage, model=model))
        except BackendError as exc:
            return _item(error=exc)
