"""`charrnn serve` with real clients: the server runs as `charrnn serve` does (a child process on a free local
port, serving a tiny trained run), OpenAI's own Python client talks to it, raw sockets play the clients that
misbehave, and the writing page is driven in headless Chromium (Playwright). In-process (Starlette's test
client) for what needs a server configured otherwise: the API key, the Host check, a full queue."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from browser import require_chromium
from charrnn.cli import cli

slow = pytest.mark.slow  # a child process or a browser: left out of `make test-fast`
IDLE = 2.0  # the served child's --idle-timeout


class Served:
    """`charrnn serve RUN --port 0 ARGS` in a child process; its address read from the line it prints."""

    def __init__(self, run, *args: str, env: dict | None = None):
        environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", str(run), "--port", "0", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=environment)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()  # keeps the pipe drained
        deadline = time.monotonic() + 120
        while not (m := re.search(r"on http://127\.0\.0\.1:(\d+)/", self.stderr)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the server did not start:\n{self.stderr}")
            time.sleep(0.05)
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        while True:  # listening at once; answering once its worker has started
            try:
                if request(self, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, self.stderr
            time.sleep(0.05)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def health(self) -> dict:
        return json.loads(request(self, "GET", "/health")[2])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def request(served: Served, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None,
            timeout: float = 60):
    """(status, headers, body bytes) of one request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=timeout)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers={**sent, **(headers or {})})
    r = conn.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    conn.close()
    return out


def complete(served: Served, **body) -> dict:
    status, _, raw = request(served, "POST", "/v1/completions", body)
    assert status == 200, raw
    return json.loads(raw)


def raw_stream(served: Served, body: dict, rcvbuf: int | None = None, extra: bytes = b"") -> socket.socket:
    """A streamed completion asked on a bare socket (`extra`: more header lines), nothing read yet."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", served.port))
    data = json.dumps({**body, "stream": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Connection: close\r\n%sContent-Length: %d\r\n\r\n%s" % (extra, len(data), data))
    return s


def read_all(s: socket.socket, pause: float = 0.0) -> bytes:
    out = []
    while chunk := s.recv(4096):
        out.append(chunk)
        time.sleep(pause)
    return b"".join(out)


def events(raw: bytes) -> list[str]:
    """The `data:` payloads of an HTTP/1.1 event-stream response (chunked transfer encoding undone)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    plain = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        plain, body = plain + rest[:n], rest[n + 2:]
    return [line[6:] for line in plain.decode().split("\n") if line.startswith("data: ")]


def wait_for(condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def served(trained_run):
    server = Served(trained_run, "--idle-timeout", str(IDLE), "--max-queue", "32")
    yield server
    assert server.stop() == 0
    assert "Traceback" not in server.stderr, server.stderr


def sample_cli(run, prompt: str, length: int, *extra: str) -> str:
    """What `charrnn sample -t 0` prints after the prime (the server runs fp32 step weights: so does this)."""
    result = CliRunner().invoke(cli, ["sample", str(run), "--prime", prompt, "--length", str(length), "-t", "0",
                                      "--weights", "fp32", "--no-stream", *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout[len(prompt):-1]  # (click.echo's newline)


# --- OpenAI's client ---------------------------------------------------------------------------------
@slow
def test_openai_client_completes_streams_and_lists_the_model(served, trained_run):
    from openai import OpenAI

    client = OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == [trained_run.name]
    done = client.completions.create(model=trained_run.name, prompt="KING:\n", max_tokens=30, temperature=0)
    assert len(done.choices) == 1 and len(done.choices[0].text) == 30 and done.choices[0].finish_reason == "length"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (6, 30, 36)
    chunks = list(client.completions.create(model=trained_run.name, prompt="KING:\n", max_tokens=30, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == done.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 30
    stopped = client.completions.create(model="any", prompt="KING:\n", max_tokens=200, n=2, seed=4, stop=["\n", "!"],
                                        extra_body={"top_k": 8})
    for c in stopped.choices:
        assert "\n" not in c.text and "!" not in c.text and c.finish_reason in ("stop", "length")


@slow
def test_greedy_completions_equal_charrnn_sample_whoever_shares_the_step(served, trained_run):
    prompts = ["KING:\n", "QUEEN:\nThou art", "O", ""]
    answers: dict[str, dict] = {}

    def ask(prompt):
        answers[prompt] = complete(served, prompt=prompt, max_tokens=80, temperature=0, n=2)

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]  # at once: one batch
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for prompt in prompts:
        expected = sample_cli(trained_run, prompt, 80)
        assert [c["text"] for c in answers[prompt]["choices"]] == [expected, expected], prompt


@slow
def test_seeded_requests_are_reproducible_and_are_the_samplers_draws(served, trained_run):
    from charrnn.sampler import Sampler

    body = dict(prompt="LORD:\n", max_tokens=120, temperature=0.9, top_p=0.95, top_k=20, seed=7)
    first, second = complete(served, **body), complete(served, **body)
    assert first["choices"] == second["choices"]
    sampler = Sampler.load(trained_run, weights="fp32")
    expected = sampler.sample("LORD:\n", 120, temperature=0.9, top_p=0.95, top_k=20, seed=7)[len("LORD:\n"):]
    assert first["choices"][0]["text"] == expected
    echoed = complete(served, **body, echo=True)
    assert echoed["choices"][0]["text"] == "LORD:\n" + expected and echoed["usage"]["completion_tokens"] == 120


# --- clients that misbehave -------------------------------------------------------------------------
HOSTILE = [  # (what, body bytes, extra headers, status, param)
    ("truncated JSON", b'{"prompt": "KING', {}, 400, None),
    ("not an object", b"[1, 2, 3]", {}, 400, None),
    ("not UTF-8", b'{"prompt": "\xff\xfe"}', {}, 400, None),
    ("NaN temperature", b'{"prompt": "KING", "temperature": NaN}', {}, 400, None),
    ("infinite temperature", b'{"prompt": "KING", "temperature": 1e999}', {}, 400, "temperature"),
    ("negative temperature", {"prompt": "KING", "temperature": -0.5}, {}, 400, "temperature"),
    ("temperature a string", {"prompt": "KING", "temperature": "hot"}, {}, 400, "temperature"),
    ("max_tokens a string", {"prompt": "KING", "max_tokens": "10"}, {}, 400, "max_tokens"),
    ("max_tokens true", {"prompt": "KING", "max_tokens": True}, {}, 400, "max_tokens"),
    ("max_tokens too many", {"prompt": "KING", "max_tokens": 10**6}, {}, 400, "max_tokens"),
    ("max_tokens huge", b'{"prompt": "KING", "max_tokens": 1' + b"0" * 5000 + b"}", {}, 400, None),
    ("n too many", {"prompt": "KING", "n": 17}, {}, 400, "n"),
    ("n a float", {"prompt": "KING", "n": 1.5}, {}, 400, "n"),
    ("top_p zero", {"prompt": "KING", "top_p": 0}, {}, 400, "top_p"),
    ("seed negative", {"prompt": "KING", "seed": -1}, {}, 400, "seed"),
    ("stream a string", {"prompt": "KING", "stream": "yes"}, {}, 400, "stream"),
    ("prompt a number", {"prompt": 5}, {}, 400, "prompt"),
    ("prompt as token ids", {"prompt": [1, 2, 3]}, {}, 400, "prompt"),
    ("two prompts", {"prompt": ["KING", "QUEEN"]}, {}, 400, "prompt"),
    ("prompt too long", {"prompt": "a" * 9000}, {}, 400, "prompt"),
    ("characters outside the vocabulary", {"prompt": "KING \u2603"}, {}, 400, "prompt"),
    ("a lone surrogate", b'{"prompt": "KING \\ud800"}', {}, 400, "prompt"),
    ("an empty stop", {"prompt": "KING", "stop": [""]}, {}, 400, "stop"),
    ("five stops", {"prompt": "KING", "stop": list("abcde")}, {}, 400, "stop"),
    ("an unknown field", {"prompt": "KING", "frobnicate": 1}, {}, 400, "frobnicate"),
    ("a penalty", {"prompt": "KING", "presence_penalty": 0.5}, {}, 400, "presence_penalty"),
    ("logprobs", {"prompt": "KING", "logprobs": 2}, {}, 400, "logprobs"),
    ("nested too deep", b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, 400, None),
    ("a huge body", b"", {"Content-Length": str(10**8)}, 413, None),
    ("not JSON", b"prompt=KING", {"Content-Type": "application/x-www-form-urlencoded"}, 415, None),
    ("another site's name", {"prompt": "KING"}, {"Host": "attacker.example"}, 400, None),
]


@slow
def test_hostile_requests_get_openai_errors_and_the_server_serves_on(served):
    for what, body, headers, status, param in HOSTILE:
        got, _, raw = request(served, "POST", "/v1/completions", body, headers)
        error = json.loads(raw)["error"]
        assert (got, error["param"]) == (status, param), (what, raw)
        assert set(error) == {"message", "type", "param", "code"} and error["message"], what
    assert request(served, "GET", "/v1/completions")[0] == 405
    assert request(served, "GET", "/nowhere")[0] == 404
    # what the errors above refused, `unknown: bytes` reads
    assert len(complete(served, prompt="KING \u2603", unknown="bytes", max_tokens=5)["choices"][0]["text"]) == 5
    assert served.health()["streams"] == 0
    assert complete(served, prompt="KING:\n", max_tokens=10)["choices"][0]["finish_reason"] == "length"


@slow
def test_a_client_that_leaves_mid_stream_leaves_the_batch(served):
    before = served.health()["dropped"]
    s = raw_stream(served, {"prompt": "KING:\n", "max_tokens": 4096, "n": 4})
    got = b""
    while b"data: " not in got:
        got += s.recv(4096)
    s.close()  # gone after its first characters
    wait_for(lambda: served.health()["dropped"] >= before + 4)
    # a request that is not streamed, left before its answer
    s = socket.create_connection(("127.0.0.1", served.port))
    data = json.dumps({"prompt": "KING:\n", "max_tokens": 4096, "n": 16}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
    wait_for(lambda: served.health()["streams"] > 0 or served.health()["dropped"] > before + 4)
    s.close()
    wait_for(lambda: served.health()["dropped"] >= before + 20)
    assert wait_for(lambda: served.health()["streams"] == 0)


@slow
def test_a_slow_reader_holds_up_nobody_and_still_gets_its_whole_stream(served):
    slow = raw_stream(served, {"prompt": "KING:\n", "max_tokens": 3000, "n": 8, "seed": 1}, rcvbuf=4096)
    time.sleep(0.5)  # it reads nothing while the worker makes its text
    assert complete(served, prompt="QUEEN:", max_tokens=50)["choices"][0]["finish_reason"] == "length"
    payloads = events(read_all(slow, pause=0.001))
    slow.close()
    assert payloads[-1] == "[DONE]"
    texts, finish = [""] * 8, [None] * 8
    for p in payloads[:-1]:
        (c,) = json.loads(p)["choices"]
        texts[c["index"]] += c["text"]
        finish[c["index"]] = c["finish_reason"]
    assert [len(t) for t in texts] == [3000] * 8 and finish == ["length"] * 8
    assert served.health()["streams"] == 0


@slow
def test_idle_and_stalled_connections_are_closed_and_block_nobody(served):
    idle = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(1000)]
    half = socket.create_connection(("127.0.0.1", served.port))
    half.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n")  # headers never finished
    slow_body = socket.create_connection(("127.0.0.1", served.port))
    slow_body.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"prompt\": ")  # a body that never arrives
    assert complete(served, prompt="KING:", max_tokens=20)["choices"][0]["finish_reason"] == "length"
    for s in (*idle, half, slow_body):
        s.settimeout(IDLE + 20)
    assert b" 408 " in slow_body.recv(4096).split(b"\r\n")[0]
    for s in (*idle, half):
        assert s.recv(1) == b""  # the server closed it
        s.close()
    slow_body.close()
    assert complete(served, prompt="KING:", max_tokens=20)["choices"][0]["finish_reason"] == "length"


# --- the writing page --------------------------------------------------------------------------------
@slow
def test_the_writing_page_asks_streams_alternatives_and_takes_one(served, trained_run):
    chromium = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("requestfailed", lambda r: errors.append(f"{r.url}: {r.failure}")
                    if not r.url.endswith("/v1/completions") else None)  # (an abandoned stream is aborted)
            page.goto(served.url)
            page.wait_for_selector("body[data-ready='1']")  # (the page's CSP allows no eval: locators, not functions)
            expect(page.locator("#model")).to_have_text(trained_run.name)
            page.fill("#length", "25")
            page.click("#text")
            page.keyboard.type("KING:")
            page.keyboard.press("Enter")
            page.keyboard.press("Tab")  # ask
            expect(page.locator("#suggestions li.done")).to_have_count(3)
            offered = page.locator("#suggestions li").all_text_contents()
            assert [len(t) for t in offered] == [25, 25, 25]
            page.keyboard.press("ArrowDown")
            page.keyboard.press("Enter")  # take the second
            assert page.input_value("#text") == "KING:\n" + offered[1]
            assert page.locator("#suggestions li").count() == 0
            page.keyboard.type(" and")  # the cursor is after what was taken
            page.click("#ask")
            expect(page.locator("#suggestions li.done")).to_have_count(3)
            offered2 = page.locator("#suggestions li").all_text_contents()
            page.click("#suggestions li:nth-child(3)")
            assert page.input_value("#text") == "KING:\n" + offered[1] + " and" + offered2[2]
            assert errors == [] and page.text_content("#errors") == ""
        finally:
            browser.close()


# --- configured otherwise: in-process -------------------------------------------------------------------
def make_app(run, **config):
    from charrnn.sampler import Sampler
    from charrnn.serve import App, ServeConfig

    return App(Sampler.load(run, weights="fp32"), ServeConfig(**config), run.name)


def test_api_key_guards_the_api_not_the_page(trained_run):
    from starlette.testclient import TestClient

    client = TestClient(make_app(trained_run, api_key="s3cret", max_queue=0).starlette, base_url="http://localhost")
    wrong = ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
             {"Authorization": "Bearer \u00e9".encode("latin-1")})
    for headers in wrong:
        r = client.get("/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200 and "<textarea" in client.get("/").text
    assert "default-src 'none'" in client.get("/").headers["content-security-policy"]


def test_a_full_queue_answers_503_with_retry_after_and_bodies_are_bounded(trained_run):
    from starlette.testclient import TestClient

    from charrnn.completions import MAX_BODY

    client = TestClient(make_app(trained_run, max_queue=0).starlette, base_url="http://127.0.0.1")
    r = client.post("/v1/completions", json={"prompt": "KING"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "server_busy"
    r = client.post("/v1/completions", content=iter([b" " * 65536] * (MAX_BODY // 65536 + 1)),
                    headers={"Content-Type": "application/json"})  # no length given: counted as it arrives
    assert r.status_code == 413
    assert client.get("/health", headers={"Host": "evil.example:80"}).status_code == 400


def test_a_public_address_without_a_key_is_warned_about(trained_run, monkeypatch, capsys):
    from charrnn import serve as serving

    ran = []

    def run(self, sockets):  # instead of serving: note the address, close the socket
        ran.append(sockets[0].getsockname())
        sockets[0].close()

    monkeypatch.setattr(serving._Server, "run", run)
    serving.serve(trained_run, serving.ServeConfig(host="0.0.0.0", port=0))
    serving.serve(trained_run, serving.ServeConfig(host="0.0.0.0", port=0, api_key="k"))
    lines = capsys.readouterr().err.splitlines()
    assert len(ran) == 2 and [line.startswith("Warning: listening on 0.0.0.0 without --api-key") for line in lines
                              if not line.startswith("charrnn serve:")] == [True]


def test_a_port_in_use_is_one_line(trained_run):
    from charrnn.errors import CharrnnError
    from charrnn.serve import ServeConfig, serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(CharrnnError, match=r"^cannot listen on 127\.0\.0\.1:\d+: Address already in use$"):
            serve(trained_run, ServeConfig(port=taken.getsockname()[1]))


def test_a_stream_to_a_client_that_takes_nothing_is_cut_after_the_send_timeout():
    from charrnn.serve import EventStream

    closed = []

    async def events():
        try:
            while True:
                yield "x" * 1000
        finally:
            closed.append(True)  # where the server frees a request's streams

    async def receive():
        await asyncio.sleep(3600)  # no disconnect: the client is there, it just takes nothing
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body":
            await asyncio.sleep(3600)

    stream = EventStream(events(), send_timeout=0.2, ping=0)
    asyncio.run(asyncio.wait_for(stream({"type": "http", "method": "POST", "headers": []}, receive, send), 10))
    assert closed == [True]


def test_without_the_serve_extra_one_line_says_what_to_install(trained_run, monkeypatch):
    monkeypatch.delitem(sys.modules, "charrnn.serve", raising=False)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    result = CliRunner().invoke(cli, ["serve", str(trained_run)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        ("Error: charrnn serve needs the serve extra (uvicorn is not installed): pip install 'charrnn-toolkit[serve]' "
         "(in a checkout: pip install -e '.[serve]')")]


@slow
def test_sigterm_finishes_or_cuts_streams_in_flight_and_exits_0(trained_run):
    server = Served(trained_run, env={"CHARRNN_API_KEY": "k3y"})
    try:
        assert request(server, "GET", "/v1/models")[0] == 401
        assert request(server, "GET", "/v1/models", headers={"Authorization": "Bearer k3y"})[0] == 200
        stalled = raw_stream(server, {"prompt": "KING:\n", "max_tokens": 4096, "n": 16}, rcvbuf=4096,
                             extra=b"Authorization: Bearer k3y\r\n")
        time.sleep(0.3)
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert time.monotonic() - t0 < 10  # the stalled stream was cut after the grace period
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5)
        stalled.close()
        assert "Traceback" not in server.stderr, server.stderr
    finally:
        server.stop()
