"""The shared core of the fake provider servers: a threaded loopback HTTP server that records requests,
adds latency, and answers from a script of faults (or a seeded random fault mode).

Protocol specifics (routes, reply bodies, error bodies) live in `openai_server.py` and `gemini_server.py`;
this module knows only HTTP, bodies, fault specs and the default task replies.

Fault specs are strings `kind[:arg][*count]` (`"429:2"` = a 429 with `Retry-After: 2`; `"500*3"` = three
500s in a row), dicts (`{"content": {...}}` / `{"text": "raw reply text"}` to override one reply's content,
optionally with `"fault": "<spec>"`), `Fault` objects, or a callable `RecordedRequest -> spec | None` given to
`script()` that decides per request.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import wire
from .pixels import edited_png  # noqa: F401 - the servers' and tests' import of it

REDACTED = "<redacted>"
AUTH_HEADERS = {"authorization", "x-goog-api-key", "api-key", "x-api-key"}

#: default reply content per text task; schema-driven filling uses these as hints
DEFAULT_REPLIES: dict[str, dict[str, Any]] = {
    "classify": {"task_category": "color", "process_answer": "red"},
    "rewrite": {
        "instruction": (
            "Work out the colour of the object the question asks about in the original image, then add a "
            "small ceramic mug painted in that same colour next to it. Refine the image with a visually "
            "appealing, harmonious look."
        ),
        "then_edit": None,
        "else_edit": None,
        "candidate": None,
        "edit_program": None,
    },
    "judge": {
        "observed_changes": "The object the instruction targets changed as asked; nothing else moved (fake judge).",
        "branch_observed": "expected",
        "changes_outside_target": False,
        "instruction_following": 4,
        "visual_quality": 4,
        "coherence": 4,
        "analysis": "The edit selects the right branch and blends naturally with the source (fake judge).",
    },
}


@dataclass
class Fault:
    """One scripted outcome for one request. `kind` "ok" means a normal reply (maybe with `content`)."""

    kind: str = "ok"
    arg: str | None = None
    content: Any = None
    text: str | None = None

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"

    @property
    def float_arg(self) -> float | None:
        return float(self.arg) if self.arg not in (None, "") else None


FaultSpec = str | dict | Fault | None


def parse_fault(spec: FaultSpec) -> Fault:
    if spec is None:
        return Fault()
    if isinstance(spec, Fault):
        return spec
    if isinstance(spec, dict):
        base = parse_fault(spec.get("fault", "ok"))
        base.content = spec.get("content", base.content)
        base.text = spec.get("text", base.text)
        return base
    kind, _, arg = str(spec).partition(":")
    return Fault(kind=kind.strip().lower(), arg=arg.strip() or None)


def expand_script(entries: Iterable[FaultSpec]) -> list[Fault]:
    """Turn `["429:2*2", "ok"]` into three Faults (a `*n` suffix on a string repeats it)."""
    out: list[Fault] = []
    for entry in entries:
        if isinstance(entry, str) and "*" in entry:
            spec, _, count = entry.rpartition("*")
            out.extend(parse_fault(spec) for _ in range(int(count)))
        else:
            out.append(parse_fault(entry))
    return out


@dataclass
class RecordedRequest:
    """What the fake saw (auth header values replaced by `<redacted>`) and what it did."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    task: str = ""
    model: str = ""
    fault: str = "ok"
    status: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    auth_present: bool = False
    started: float = 0.0
    finished: float = 0.0
    #: the provider batch job this request was an item of ("" for an online call)
    batch: str = ""
    #: the raw body of a file upload (other requests keep only the parsed `body`)
    raw: bytes = b""
    #: an edit's requested geometry as it arrived (Gemini aspectRatio, OpenAI size; None when not sent)
    edit_geometry: Any = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Reply:
    """An HTTP reply the handler writes: status, JSON (or raw) body, extra headers; `drop` closes silently."""

    def __init__(
        self,
        status: int = 200,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        drop: bool = False,
    ):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.raw = raw
        self.drop = drop

    def payload(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.body).encode()


def token_estimate(text: str) -> int:
    """A deterministic stand-in for a tokenizer (4 characters a token), so tests can predict usage."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def detect_task(schema: Any, schema_name: str, texts: Iterable[str]) -> str:
    """Which engine task a text request is: from the schema's properties, its name, then the prompt text."""
    props: set[str] = set()
    if isinstance(schema, dict):
        props = set(_all_property_names(schema))
    if "task_category" in props:
        return "classify"
    if "edit_instruction" in props or {"instruction", "then_edit"} <= props:
        return "rewrite"
    if props & {"instruction_following", "visual_quality", "coherence"}:
        return "judge"
    name = (schema_name or "").lower()
    for task in ("classify", "rewrite", "judge"):
        if task in name:
            return task
    blob = "\n".join(texts)
    if "instruction_following" in blob:
        return "judge"
    if "edit_instruction" in blob or "then_edit" in blob:
        return "rewrite"
    if "task_category" in blob:
        return "classify"
    return "unknown"


_PLAN_CANDIDATE = re.compile(r"<vqa_plan>style: conditional\ncandidate: (?:'([^'\n]*)'|\"([^\"\n]*)\"|(none given))")


_PLAN_PATHS = re.compile(r"exactly these paths: ([^\n(]+?) \(")
_PLAN_CONDITION = re.compile(r"operator \w+ on question \d+: ([^\n]+)")
_PLAN_SWITCH = re.compile(r"in this order: ([^;\n]+);")
#: visibly different edits, one per path of a branch tree
TREE_EDITS = (
    "paint the object the question asks about bright gold",
    "add a small ceramic mug beside the object the question asks about",
    "draw a thick red frame around the whole picture",
    "put a tall green cone in the front left corner of the floor",
    "hang a white sign with a black star on the back wall",
)


def tree_following_rewrite(text: str) -> dict[str, Any] | None:
    """A default reply for a plan with a branch tree (issue 25): its conditions worded from the plan (operands
    joined by "or", so each stays in its condition clause), one visible edit per listed path."""
    paths = _PLAN_PATHS.search(text)
    if paths is None or "<vqa_plan>style: conditional" not in text:
        return None
    names = [p.strip() for p in paths.group(1).split(",")]
    edits = dict(zip(names, TREE_EDITS, strict=False))
    switch = _PLAN_SWITCH.search(text)
    if switch is not None:
        options = [o.strip() for o in switch.group(1).split(",")]
        body = "; ".join(f"if the answer is {o}, {edits[f'case:{o}']}" for o in options)
    else:
        def worded(line: str) -> str:
            found = _PLAN_CONDITION.search(line)
            if found is None or "operator statement" in line:
                return "the statement of that question holds"
            return found.group(1).replace(": ", " ").replace(", ", " or ")

        lines = [ln for ln in text.splitlines() if _PLAN_CONDITION.search(ln)]
        top = [worded(ln) for ln in lines if ln.startswith(("condition:", "joined with"))]
        nested = {b: worded(ln) for b in ("then", "else") for ln in lines if f"inside the {b} branch" in ln}
        condition = " and ".join(top) or "the statement is true"
        if "then" in nested:  # the tree's shape in the clauses: the nested condition inside its branch
            body = (f"if {condition}: if {nested['then']}, {edits['then/then']}; otherwise, {edits['then/else']}. "
                    f"In every other case, {edits['else']}")  # fmt: skip
        elif "else" in nested:
            body = (f"if {condition}, {edits['then']}. Otherwise, if {nested['else']}, {edits['else/then']}; "
                    f"otherwise, {edits['else/else']}")  # fmt: skip
        else:
            leaves = list(edits.values())
            body = f"if {condition}, {leaves[0]}; otherwise, " + "; otherwise, ".join(leaves[1:])
    return {
        "instruction": f"Answer the question about the original image. {body[0].upper()}{body[1:]}.",
        "then_edit": None, "else_edit": None, "candidate": None,
        "branches": [{"path": path, "edit": edit} for path, edit in edits.items()],
    }  # fmt: skip


def plan_following_rewrite(texts: Iterable[str]) -> dict[str, Any] | None:
    """A default rewrite reply for a conditional plan found in the prompt, else None."""
    tree = tree_following_rewrite("\n".join(texts))
    if tree is not None:
        return tree
    match = _PLAN_CANDIDATE.search("\n".join(texts))
    if match is None:
        return None
    candidate = match.group(1) or match.group(2)
    proposed = None
    if candidate is None:  # the plan asks the rewriter for a distractor
        candidate = proposed = "zebra-striped"
    then_edit = "paint the object the question asks about bright gold"
    else_edit = "add a small ceramic mug beside the object the question asks about"
    return {
        "instruction": (
            f"Answer the question about the original image. If the answer is {candidate}, {then_edit}; "
            f"otherwise, {else_edit}. Refine the image with a visually appealing, harmonious look."
        ),
        "then_edit": then_edit,
        "else_edit": else_edit,
        "candidate": proposed,
    }


def _all_property_names(schema: dict[str, Any]) -> Iterable[str]:
    for key, sub in (schema.get("properties") or {}).items():
        yield key
        if isinstance(sub, dict):
            yield from _all_property_names(sub)
    for sub in (schema.get("$defs") or schema.get("definitions") or {}).values():
        if isinstance(sub, dict):
            yield from _all_property_names(sub)


def fill_schema(
    schema: Any, hints: dict[str, Any], root: dict[str, Any] | None = None, name: str = ""
) -> Any:
    """A schema-valid value for `schema`, preferring `hints[name]` where it fits (so defaults follow schemas)."""
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    if not isinstance(schema, dict):
        return hints.get(name, "fake")
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[-1]
        target = (root.get("$defs") or root.get("definitions") or {}).get(ref, {})
        return fill_schema(target, hints, root, name)
    for combo in ("anyOf", "oneOf"):
        if combo in schema:
            options = schema[combo]
            if name in hints and hints[name] is None and any(o.get("type") == "null" for o in options):
                return None
            non_null = [o for o in options if o.get("type") != "null"] or options
            return fill_schema(non_null[0], hints, root, name)
    hint = hints.get(name, ...)
    if "enum" in schema:
        return hint if hint in schema["enum"] else schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        if hint is None and "null" in kind:
            return None
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        if isinstance(hint, dict) and not schema.get("properties"):
            return hint
        return {
            key: fill_schema(sub, hints, root, key) for key, sub in (schema.get("properties") or {}).items()
        }
    if kind == "array":
        if isinstance(hint, list):
            return hint
        return [fill_schema(schema.get("items", {}), hints, root, name)]
    if kind in ("integer", "number"):
        value = hint if isinstance(hint, (int, float)) and not isinstance(hint, bool) else 4
        low, high = schema.get("minimum"), schema.get("maximum")
        value = max(value, low) if low is not None else value
        value = min(value, high) if high is not None else value
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return hint if isinstance(hint, bool) else False
    if kind == "null":
        return None
    return hint if isinstance(hint, str) else "fake"


#: what Gemini image models return at 1K per `imageConfig.aspectRatio` (ai.google.dev image generation docs)
GEMINI_1K_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
    "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672),
}  # fmt: skip


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64decode_any(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not (the SDKs send either)."""
    text = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs: the SDKs pool connections
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # silence per-request stderr lines

    def parse_request(self) -> bool:
        """`BaseHTTPRequestHandler.parse_request` for a plain `METHOD /path HTTP/1.1` line, its headers read
        with the stdlib's reader and parsed by `wire` (the same values, a fraction of the email parser's CPU);
        any other request line goes to the stdlib."""
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if len(words) != 3 or words[2] != "HTTP/1.1" or words[1].startswith("//"):
            return super().parse_request()
        self.requestline = requestline
        self.command, self.path, self.request_version = words
        self.close_connection = False  # HTTP/1.1 on both sides: keep-alive unless the client says close
        try:
            self.headers = wire.parse_header_lines(wire.read_headers(self.rfile), self.MessageClass)
        except http.client.LineTooLong as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(err))
            return False
        except http.client.HTTPException as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(err))
            return False
        conntype = self.headers.get("Connection", "")
        if conntype.lower() == "close":
            self.close_connection = True
        elif conntype.lower() == "keep-alive":
            self.close_connection = False
        if self.headers.get("Expect", "").lower() == "100-continue":
            return bool(self.handle_expect_100())
        return True

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        fake = self.server.fake
        raw = self._read_body()
        headers = {k.lower(): (REDACTED if k.lower() in AUTH_HEADERS else v) for k, v in self.headers.items()}
        presented = self.headers.get("Authorization", "") or self.headers.get("x-goog-api-key", "")
        if presented.lower().startswith("bearer "):
            presented = presented[7:]
        record = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=headers,
            body=parse_body(self.headers.get("Content-Type", ""), raw),
            auth_present=bool(presented),
            started=time.monotonic(),
            raw=raw if self.path.startswith("/upload/") else b"",
        )
        fake._enter()
        fake._record(record)  # recorded on arrival, so a client that timed out still sees it counted
        try:
            try:
                reply = fake._handle(record, presented)
            except Exception as exc:  # noqa: BLE001 - a bug in the fake must surface as a visible 500
                record.fault = f"fake-crash: {type(exc).__name__}: {exc}"
                reply = Reply(500, {"error": {"message": record.fault, "code": 500}})
            fake._sleep(fake._latency_s())
            record.status = 0 if reply.drop else reply.status
            record.finished = time.monotonic()
            if reply.drop:
                self.close_connection = True
                return
            payload = reply.payload()
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.headers.pop("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(payload)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            # end_headers() then write(payload), as one send: the same bytes, one syscall
            self._headers_buffer.append(b"\r\n")
            self._headers_buffer.append(payload)
            self.flush_headers()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout): nothing to do
        finally:
            fake._leave()


def parse_body(content_type: str, raw: bytes) -> Any:
    """JSON → dict; multipart/form-data → {"fields": {...}, "files": {name: [{filename, content_type, data}]}}."""
    if not raw:
        return None
    if content_type.startswith("multipart/form-data"):
        return wire.parse_multipart(content_type, raw)
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # benchmarks open hundreds of connections at once
    allow_reuse_address = True
    fake: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout, closed pool) resets its connection: expected here, not an error."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class FakeServer:
    """Base class: start/stop, recording, latency, fault script, random faults, scriptable reply content.

    Use as a context manager: `with FakeOpenAI() as server: server.base_url ...`.
    """

    #: the kinds the random fault mode draws from (subclasses may narrow)
    RANDOM_FAULTS: tuple[str, ...] = ("429:0.01", "500", "503")

    def __init__(
        self,
        *,
        latency: float | tuple[float, float] = 0.0,
        port: int = 0,
        api_key: str | None = None,
        fault_rate: float = 0.0,
        fault_seed: int = 0,
        random_faults: Iterable[str] | None = None,
    ) -> None:
        self.latency = latency
        self.port = port
        self.api_key = api_key
        self.fault_rate = fault_rate
        self.random_faults = tuple(random_faults) if random_faults is not None else self.RANDOM_FAULTS
        self.replies: dict[str, Any] = {key: dict(value) for key, value in DEFAULT_REPLIES.items()}
        self.usage_override: dict[str, Any] | None = None
        #: edits come back at the requested geometry (Gemini imageConfig.aspectRatio at 1K, OpenAI `size`), as
        #: the real APIs do; off: at the input's size
        self.edit_geometry = False
        self.max_in_flight = 0
        self._rng = random.Random(fault_seed)
        self._latency_rng = random.Random(fault_seed + 1)
        self._script: deque[Fault] = deque()
        self._script_fn: Callable[[RecordedRequest], FaultSpec] | None = None
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._in_flight = 0
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> FakeServer:
        self._server = _HTTPServer(("127.0.0.1", self.port), _Handler)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers sleeping in latency / slow faults
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url

    # -- scripting ---------------------------------------------------------------------------------------
    def script(self, entries: Iterable[FaultSpec] | Callable[[RecordedRequest], FaultSpec]) -> None:
        """Queue faults for the next requests (in order; then normal replies), or set a per-request callable."""
        with self._lock:
            if callable(entries):
                self._script_fn = entries
                self._script.clear()
            else:
                self._script_fn = None
                self._script = deque(expand_script(entries))

    def set_reply(self, task: str, content: Any) -> None:
        """Default content for a task ("classify", "rewrite", "judge"; "unknown" for anything else)."""
        with self._lock:
            self.replies[task] = content

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget recorded requests, the script and the in-flight high-water mark."""
        with self._lock:
            self._requests.clear()
            self._script.clear()
            self._script_fn = None
            self.max_in_flight = 0

    # -- internals used by the handler ----------------------------------------------------------------------
    def _next_fault(self, record: RecordedRequest) -> Fault:
        with self._lock:
            if self._script_fn is not None:
                return parse_fault(self._script_fn(record))
            if self._script:
                return self._script.popleft()
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return parse_fault(self._rng.choice(self.random_faults))
            return Fault()

    def _latency_s(self) -> float:
        if isinstance(self.latency, tuple):
            with self._lock:
                return self._latency_rng.uniform(*self.latency)
        return float(self.latency)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def _reply_content(self, task: str, schema: Any, fault: Fault, texts: Iterable[str] = ()) -> Any:
        """The JSON content of a normal text reply: scripted, else the task default shaped by the schema.

        The default rewrite reply follows a conditional plan stated in the prompt (`<vqa_plan>`), as a
        compliant model would: the candidate in the condition, two different visible branch edits."""
        if fault.content is not None:
            return fault.content
        with self._lock:
            hints = self.replies.get(task)
        if hints is None:
            hints = {}
        if task == "rewrite" and hints == DEFAULT_REPLIES["rewrite"]:
            hints = plan_following_rewrite(texts) or hints
        if isinstance(schema, dict) and isinstance(hints, dict) and schema:
            return fill_schema(schema, hints)
        return hints

    def _handle(self, record: RecordedRequest, presented_key: str) -> Reply:
        raise NotImplementedError


def serve_forever_cli(
    server_cls: type[FakeServer], name: str, description: str, bad_key_reply: str, argv: list[str] | None = None
) -> None:
    """`python -m tests.fakes.<x>_server`: parse the flags, print the base URL, serve until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of requests answered with a fault")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default=None, help=f"if set, other keys get {bad_key_reply}")
    args = parser.parse_args(argv)
    server = server_cls(
        latency=args.latency, port=args.port, fault_rate=args.fault_rate, fault_seed=args.seed, api_key=args.api_key
    )
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())  # also when started in the background (SIGINT ignored)
    server.start()
    print(server.base_url, flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
        print(f"{name}: served {len(server.requests)} requests (max {server.max_in_flight} in flight)", flush=True)
