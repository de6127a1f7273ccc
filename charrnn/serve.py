"""`charrnn serve`: a run behind HTTP. An OpenAI-compatible completions API (POST /v1/completions, GET
/v1/models), a page to write with the model (GET /, charrnn/web/write.html) and GET /health.

Every request goes to one `batching.Worker`, which steps all the streams in hand at once; this module is
the HTTP around it (Starlette on uvicorn; the event stream through sse-starlette). The worker's thread hands
each step's text to the event loop in one call; a request reads it from its own listener, so the worker
never waits for a client: a slow reader only fills its own listener (bounded by n x max_tokens) and is cut
when it takes nothing for SEND_TIMEOUT seconds; a client that leaves has its streams dropped from the batch
before the next step.

What clients cannot do (each refused with OpenAI's error shape and a 4xx, the server serving on): send
more than completions.MAX_BODY, anything but a JSON object of the documented fields, or more than the
worker's queue holds (503 with Retry-After); hold a connection without sending a request for more than
the idle timeout. Bound to 127.0.0.1, the server answers only requests naming this machine in their Host
header (a web page cannot reach it by DNS rebinding). With an API key, /v1/* needs `Authorization: Bearer
KEY`.

SIGTERM or Ctrl-C: stop accepting; in-flight requests get `grace` seconds to finish, then are cut; exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import os
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import uvicorn
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from .batching import Busy, Job, Piece, Worker
from .completions import (MAX_BODY, MAX_N, ApiError, choice, model_list, parse_request, response, usage)
from .errors import CharrnnError
from .sampler import Sampler

try:  # POSIX only
    import resource
except ImportError:  # pragma: no cover
    resource = None

SEND_TIMEOUT = 30.0  # seconds a streaming client may take no data before it is cut
PING = 15.0  # seconds between keep-alive comments on a quiet event stream
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (printed)
    api_key: str | None = None  # required as `Authorization: Bearer KEY` on /v1/* when set
    max_streams: int = 256  # streams stepped at once
    max_queue: int = 64  # requests waiting for room; beyond them 503
    batching: bool = True  # False: one request at a time (for comparison)
    idle_timeout: float = 5.0  # seconds a connection may stay without a request (or a body may take to arrive)
    grace: float = 3.0  # seconds in-flight requests get to finish at shutdown


def page_html() -> str:
    """The writing page, from the package's data."""
    return files("charrnn").joinpath("web/write.html").read_text(encoding="utf-8")


class _Whole:
    """Collects a request's text until every stream has finished (a response that is not streamed)."""

    def __init__(self, n: int):
        self.texts: list[list[str]] = [[] for _ in range(n)]
        self.finish: list[str | None] = [None] * n
        self.error: str | None = None
        self.done = asyncio.Event()

    def feed(self, piece: Piece) -> None:
        if self.finish[piece.index] is not None:
            return
        if piece.finish == "error":
            self.error = piece.text
        else:
            self.texts[piece.index].append(piece.text)
        self.finish[piece.index] = piece.finish
        if None not in self.finish:
            self.done.set()


class _Streamed:
    """Holds a streamed request's new text, by choice, until its response takes it: a reader that fell
    behind gets what it missed in one go (and what waits is text, never more than n x max_tokens)."""

    def __init__(self):
        self.pending: dict[int, tuple[list[str], str | None]] = {}  # index -> (pieces, finish)
        self.ready = asyncio.Event()

    def feed(self, piece: Piece) -> None:
        pieces, finish = self.pending.setdefault(piece.index, ([], None))
        if piece.finish == "error":  # what the worker failed with replaces what it made
            self.pending[piece.index] = ([piece.text], "error")
        elif finish is None:
            pieces.append(piece.text)
            self.pending[piece.index] = (pieces, piece.finish)
        self.ready.set()

    async def take(self) -> dict[int, tuple[str, str | None]]:
        """index -> (text, finish) of what has arrived, at least one choice's."""
        await self.ready.wait()
        self.ready.clear()
        taken, self.pending = self.pending, {}
        return {i: ("".join(pieces), finish) for i, (pieces, finish) in taken.items()}


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (its body already read, the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:8000
        return host_header[1:host_header.find("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class App:
    """The Starlette application around one worker."""

    def __init__(self, sampler: Sampler, config: ServeConfig, name: str):
        self.config, self.name, self.tok = config, name, sampler.tok
        self.created = int(time.time())
        self.max_n = min(MAX_N, config.max_streams)
        self.worker = Worker(sampler, self._deliver, config.max_streams, config.max_queue, config.batching)
        self.local_only = _is_loopback(config.host)
        self.key = f"Bearer {config.api_key}".encode() if config.api_key else None
        self.loop: asyncio.AbstractEventLoop | None = None
        routes = [Route("/", self.page), Route("/health", self.health), Route("/v1/models", self.models),
                  Route("/v1/completions", self.completions, methods=["POST"])]
        handlers = {ApiError: self._api_error, HTTPException: self._http_error, Exception: self._server_error}
        self.starlette = Starlette(routes=routes, exception_handlers=handlers, lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        self.loop = asyncio.get_running_loop()
        self.worker.start()
        try:
            yield
        finally:
            self.worker.close()

    # --- from the worker's thread -----------------------------------------------------------------
    def _deliver(self, pieces: list[Piece]) -> None:
        try:
            self.loop.call_soon_threadsafe(self._dispatch, pieces)
        except RuntimeError:  # the loop has closed: nobody is waiting
            pass

    @staticmethod
    def _dispatch(pieces: list[Piece]) -> None:
        for piece in pieces:
            piece.job.tag.feed(piece)

    # --- errors ----------------------------------------------------------------------------------------
    @staticmethod
    async def _api_error(request: Request, e: ApiError) -> Response:
        return JSONResponse(e.body(), e.status, headers=e.headers)

    async def _http_error(self, request: Request, e: HTTPException) -> Response:
        what = {404: "no such path", 405: "method not allowed"}.get(e.status_code, str(e.detail))
        return await self._api_error(request, ApiError(e.status_code, f"{what}: {request.method} {request.url.path}",
                                                       headers=dict(e.headers or {})))

    async def _server_error(self, request: Request, e: Exception) -> Response:
        return await self._api_error(request, ApiError(500, "the server failed on this request", kind="server_error"))

    def _guard(self, request: Request, api: bool) -> None:
        if self.local_only and _host_name(request.headers.get("host", "")).lower() not in LOOPBACK_NAMES:
            raise ApiError(400, "the Host header must name this machine (localhost or 127.0.0.1)", code="bad_host")
        if api and self.key is not None:
            given = request.headers.get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, self.key):
                raise ApiError(401, "a valid API key is needed: send Authorization: Bearer KEY", code="invalid_api_key")

    # --- routes ------------------------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        self._guard(request, api=False)
        # the page is self-contained: nothing may load from elsewhere, and it talks only to this server
        csp = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
               "img-src data:; base-uri 'none'; form-action 'none'")
        return HTMLResponse(page_html(), headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff"})

    async def health(self, request: Request) -> Response:
        self._guard(request, api=False)
        return JSONResponse({"status": "ok", "model": self.name, **self.worker.stats()})

    async def models(self, request: Request) -> Response:
        self._guard(request, api=True)
        return JSONResponse(model_list(self.name, self.created))

    async def completions(self, request: Request) -> Response:
        self._guard(request, api=True)
        req = parse_request(await self._body(request), self.tok, self.max_n)
        listener = _Streamed() if req.stream else _Whole(req.completion.n)
        job = Job(req.completion, tag=listener)
        try:
            self.worker.submit(job)
        except Busy as e:
            raise ApiError(503, f"the server is busy ({e}); try again shortly", code="server_busy",
                           kind="server_error", headers={"Retry-After": "1"}) from None
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            return EventStream(self._events(req, job, listener, cid, created), sep="\n", ping=PING,
                               send_timeout=SEND_TIMEOUT, shutdown_grace_period=self.config.grace,
                               client_close_handler_callable=lambda message: self._left(job))
        return await self._whole(request, req, job, listener, cid, created)

    async def _left(self, job: Job) -> None:
        """A streaming client disconnected (its generator, if it started, frees its streams too)."""
        self.worker.cancel(job)

    async def _body(self, request: Request) -> bytes:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(415, "send the body as JSON, with Content-Type: application/json")
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            raise ApiError(413, f"the body is larger than {MAX_BODY:,} bytes")

        async def read() -> bytes:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY:
                    raise ApiError(413, f"the body is larger than {MAX_BODY:,} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            return await asyncio.wait_for(read(), self.config.idle_timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the body did not arrive within {self.config.idle_timeout:g} s") from None
        except ClientDisconnect:  # nobody will read the answer; no failure of the server's either
            raise ApiError(400, "the client left before its body arrived") from None

    async def _whole(self, request: Request, req, job: Job, listener: _Whole, cid: str, created: int) -> Response:
        done = asyncio.ensure_future(listener.done.wait())
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            gone.cancel()
            if not listener.done.is_set():  # the client left (or the server is stopping): free its streams
                self.worker.cancel(job)
        if not listener.done.is_set():
            return Response(status_code=499)  # nobody reads it
        if listener.error is not None:
            raise ApiError(500, f"the model failed: {listener.error}", kind="server_error")
        texts = [(req.prompt if req.echo else "") + "".join(t) for t in listener.texts]
        choices = [choice(i, t, f) for i, (t, f) in enumerate(zip(texts, listener.finish))]
        made = sum(len(s) for parts in listener.texts for s in parts)
        return JSONResponse(response(cid, created, self.name, choices, usage(req.prompt, made)))

    async def _events(self, req, job: Job, listener: _Streamed, cid: str, created: int):
        """The event stream: `data: {chunk}` events, one choice each, then `data: [DONE]`."""
        n = req.completion.n
        left, made = set(range(n)), 0
        try:
            if req.echo:
                for i in range(n):
                    yield json.dumps(response(cid, created, self.name, [choice(i, req.prompt, None)], None))
            while left:
                for i, (text, finish) in (await listener.take()).items():
                    if i not in left:
                        continue
                    if finish == "error":
                        yield json.dumps(ApiError(500, f"the model failed: {text}", kind="server_error").body())
                        return
                    made += len(text)
                    if finish is not None:
                        left.discard(i)
                    yield json.dumps(response(cid, created, self.name, [choice(i, text, finish)], None))
            if req.include_usage:
                yield json.dumps(response(cid, created, self.name, [], usage(req.prompt, made)))
            yield "[DONE]"
        finally:
            if left:  # the client left, was too slow, or the server is stopping: free its streams
                self.worker.cancel(job)


class EventStream(EventSourceResponse):
    """sse-starlette's event stream; a client cut for taking nothing for `send_timeout` seconds is its own
    doing, not a failure of the server's to log (the stream's generator has been closed: its streams freed)."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            pass


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline on a connection's first request: uvicorn times out a
    connection only once it has answered on it, so one that never sends a whole request head would stay
    open for good. Those are closed after the idle timeout (`timeout_keep_alive`)."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._first_request = self.loop.call_later(self.timeout_keep_alive, self._close_if_silent)

    def _close_if_silent(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self._first_request.cancel()
        super().connection_lost(exc)


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame) -> None:
        # as uvicorn's, without noting the signal to raise again once stopped: a stop asked for exits 0
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for requests in flight
        else:
            self.should_exit = True


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return socket.create_server(infos[0][4][:2], family=infos[0][0], backlog=2048)
    except OSError as e:  # socket.gaierror is one (create_server's own message repeats the address)
        why = os.strerror(e.errno) if e.errno and not isinstance(e, socket.gaierror) else e.strerror or str(e)
        raise CharrnnError(f"cannot listen on {host}:{port}: {why}") from None


def _more_files() -> None:
    """Each connection is a file descriptor: allow as many as the system lets this process have."""
    if resource is None:  # pragma: no cover
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def serve(run: str | Path, config: ServeConfig, device: str = "cpu", weights: str = "fp32") -> None:
    """Load `run` once and serve it until SIGTERM or Ctrl-C."""
    sampler = Sampler.load(run, device=device, weights=weights)
    path = Path(run)
    name = path.name if path.is_dir() else path.parent.name
    app = App(sampler, config, name)
    sock = _listen(config.host, config.port)
    host, port = sock.getsockname()[:2]
    _more_files()
    shown = f"[{host}]" if ":" in host else host
    print(f"charrnn serve: {name} ({sampler.model.config.model}, {sampler.weights} weights) on http://{shown}:{port}/ "
          f"(the writing page; the API under /v1)", file=sys.stderr, flush=True)
    if not app.local_only and not config.api_key:
        print(f"Warning: listening on {host} without --api-key: anyone who can reach this address can use the "
              "model", file=sys.stderr, flush=True)
    uv = uvicorn.Config(app.starlette, http=_Protocol, ws="none", lifespan="on", log_level="warning",
                        access_log=False, timeout_keep_alive=config.idle_timeout,
                        timeout_graceful_shutdown=config.grace + 1)
    _Server(uv).run(sockets=[sock])
