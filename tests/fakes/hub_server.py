"""A fake Hugging Face Hub on 127.0.0.1 that speaks the upload endpoints `huggingface_hub` uses.

Enough of the protocol for `HfApi.create_repo` and `HfApi.upload_folder` (through the real client, pointed here
with HF_ENDPOINT): repo creation, the `preupload` check (every file is answered "regular", so contents travel
base64 inside the commit, no LFS/Xet), and the NDJSON commit. Files land in `repos[(type, repo_id)]`; every
request is recorded with its Authorization header redacted (the token is checked, never kept).
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class HubRequest:
    method: str
    path: str
    authorized: bool


@dataclass
class FakeHub:
    token: str
    repos: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)
    private: dict[tuple[str, str], bool] = field(default_factory=dict)
    requests: list[HubRequest] = field(default_factory=list)
    commits: int = 0
    cards: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- protocol --------------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = unquote(urlsplit(handler.path).path)
        authorized = handler.headers.get("Authorization") == f"Bearer {self.token}"
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if handler.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with self._lock:
            self.requests.append(HubRequest(method, path, authorized))
        if not authorized:
            return self._reply(handler, 401, {"error": "Invalid credentials in Authorization header"})
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_card(handler, json.loads(body).get("content", ""))
        if method == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            repo_type = payload.get("type") or "model"
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            key = (repo_type, repo_id)
            with self._lock:
                self.repos.setdefault(key, {})
                self.private[key] = bool(payload.get("private")) or payload.get("visibility") == "private"
            return self._reply(handler, 200, {"url": f"{self.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}",
                                              "name": repo_id, "id": repo_id})
        # /api/{type}s/{namespace}/{name}/{preupload|commit}/{revision}
        if method == "POST" and len(parts) >= 6 and parts[0] == "api" and parts[4] in ("preupload", "commit"):
            repo_type, repo_id, action = parts[1].rstrip("s"), f"{parts[2]}/{parts[3]}", parts[4]
            if (repo_type, repo_id) not in self.repos:
                return self._reply(handler, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            if action == "preupload":
                files = json.loads(body).get("files", [])
                answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                          for f in files]
                return self._reply(handler, 200, {"files": answer, "commitOid": "0" * 40})
            return self._commit(handler, repo_type, repo_id, body)
        return self._reply(handler, 404, {"error": f"fake hub: no route for {method} {path}"})

    def _validate_card(self, handler: BaseHTTPRequestHandler, content: str) -> None:
        """The dataset card's YAML front matter must parse to a mapping (the Hub refuses the upload otherwise)."""
        import yaml

        if not content.startswith("---\n"):
            return self._reply(handler, 200, {"warnings": [{"message": "empty or missing yaml metadata"}]})
        front = content[4:].split("\n---\n", 1)[0]
        try:
            parsed = yaml.safe_load(front)
        except yaml.YAMLError as exc:
            return self._reply(handler, 400, {"errors": [{"message": f"invalid YAML: {exc}"}]})
        if not isinstance(parsed, dict):
            return self._reply(handler, 400, {"errors": [{"message": "metadata must be a mapping"}]})
        with self._lock:
            self.cards.append(parsed)
        return self._reply(handler, 200, {"warnings": []})

    def _commit(self, handler: BaseHTTPRequestHandler, repo_type: str, repo_id: str, body: bytes) -> None:
        files: dict[str, bytes] = {}
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "file":
                value = item["value"]
                content = value["content"]
                files[value["path"]] = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
            elif item["key"] in ("lfsFile", "deletedFile", "deletedFolder", "copyFile"):
                return self._reply(handler, 400, {"error": f"fake hub: {item['key']} is not supported"})
        with self._lock:
            self.repos[(repo_type, repo_id)].update(files)
            self.commits += 1
            oid = f"{self.commits:040x}"
        prefix = "datasets/" if repo_type == "dataset" else ""
        self._reply(handler, 200, {"commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid,
                                   "pullRequestUrl": None})

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)
