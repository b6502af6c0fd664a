"""What the HTTP provider backends share: the options check, the API key with its redactor, one SDK client per loop."""

from __future__ import annotations

import asyncio
import functools
import ssl
import weakref
from typing import Any, ClassVar, Generic, TypeVar

from ..core.config import BackendSpec
from ..core.errors import BackendConfigError
from ..core.redact import Redactor
from .base import Backend

ClientT = TypeVar("ClientT")


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The TLS context every SDK client of this process verifies servers with: what each SDK would build for
    itself (httpx2.create_ssl_context: SSL_CERT_FILE / SSL_CERT_DIR if set, else the system's CA bundle), made
    once. Loading the CA bundle is ~30 ms of CPU, and every client of every event loop made its own."""
    import httpx2

    return httpx2.create_ssl_context()


class ProviderBackend(Backend, Generic[ClientT]):
    """Base of the openai and gemini backends. Subclasses set `known_options`, resolve their key in
    `_resolve_key` and build / close their SDK client in `_make_client` / `_close_client`."""

    name: ClassVar[str]
    known_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: BackendSpec, seed: int = 0) -> None:
        self.spec = spec
        self.seed = seed
        self.model = spec.model
        unknown = set(spec.options) - self.known_options
        if unknown:
            raise BackendConfigError(
                f"backend {spec.type} ({spec.model}): unknown option(s) {sorted(unknown)}; "
                f"known: {sorted(self.known_options)}"
            )
        self._api_key = self._resolve_key()
        self._redact = Redactor([self._api_key])
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ClientT] = weakref.WeakKeyDictionary()

    def _resolve_key(self) -> str:
        raise NotImplementedError

    def _make_client(self) -> ClientT:
        raise NotImplementedError

    async def _close_client(self, client: ClientT) -> None:
        raise NotImplementedError

    def _client(self) -> ClientT:
        """One client per event loop: an httpx pool must not be shared across loops (Ray actors, tests)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._make_client()
        return client

    async def aclose(self) -> None:
        """Close this loop's client; clients of other loops are dropped (they cannot be awaited here)."""
        clients, self._clients = self._clients, weakref.WeakKeyDictionary()
        client: Any = clients.get(asyncio.get_running_loop())
        if client is not None:
            await self._close_client(client)
