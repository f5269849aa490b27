"""`serve` on a real socket: slow clients are answered 408 or dropped, idle and trickling
connections never take a request's place, and only allowed Host names get an answer.

The server runs in a thread with serve's own uvicorn settings (serving/server.py); the
deadlines are shortened here so that the cases run in seconds (test_serve_load.py runs the
real 10 s ones against `mnist-pipeline serve`).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mnist_pipeline.serving import protocol
from mnist_pipeline.serving.app import build_app
from mnist_pipeline.serving.guards import allowed_hosts
from tests.serve_helpers import connect, read_until_closed, running_server, status_of
from tests.trained_models import tiny_model_file

HEADER_S, BODY_S, LINGER_S = 0.5, 0.5, 0.3
# Generous bounds that only catch a server that never answers or never closes.
HANG_S = 15
PIXELS_JSON = json.dumps({"pixels": [0] * 784}).encode()


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    folder = tmp_path_factory.mktemp("network")
    model = tiny_model_file(folder / "model.safetensors")
    hosts = allowed_hosts("127.0.0.1", ["digits.lab.example", "*.lan.example"])
    app = build_app(model_path=model, threads=1, metrics_path=folder / "none.json",
                    lock_path=folder / "none.lock", hosts=hosts)  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocol, "HEADER_TIMEOUT_S", HEADER_S)
        patch.setattr(protocol, "BODY_TIMEOUT_S", BODY_S)
        patch.setattr(protocol, "LINGER_S", LINGER_S)
        with running_server(app) as port:
            yield port


def json_request(host: str = "127.0.0.1", extra: str = "") -> bytes:
    return (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(PIXELS_JSON)}\r\n{extra}\r\n"
    ).encode() + PIXELS_JSON


def timed_answer(port: int, send) -> tuple[bytes, float]:
    """Connect, let `send(connection)` write, read until closed: (bytes, seconds)."""
    start = time.monotonic()
    with connect(port, timeout=HANG_S) as connection:
        sender = threading.Thread(target=send, args=(connection,), daemon=True)
        sender.start()
        answer = read_until_closed(connection)
    return answer, time.monotonic() - start


def trickle(data: bytes, every: float = 0.2):
    def send(connection: socket.socket) -> None:
        try:
            for byte in data:
                connection.send(bytes([byte]))
                time.sleep(every)
        except OSError:  # dropped by the server: what the test waits for
            pass

    return send


def test_headers_sent_a_byte_at_a_time_get_a_408(port):
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    answer, seconds = timed_answer(port, trickle(head))
    assert status_of(answer) == 408, answer
    assert b"request headers not received within" in answer
    assert HEADER_S <= seconds < HANG_S


def test_a_body_shorter_than_its_content_length_gets_a_408(port):
    def send(connection):
        connection.sendall(json_request()[:-100])  # 100 bytes never come

    answer, seconds = timed_answer(port, send)
    assert status_of(answer) == 408, answer
    assert b"request body not received in time" in answer
    assert BODY_S <= seconds < HANG_S


def test_a_body_sent_a_byte_at_a_time_gets_a_408(port):
    request = json_request()
    head_end = request.index(b"\r\n\r\n") + 4

    def send(connection):
        connection.sendall(request[:head_end])
        trickle(request[head_end:], every=0.2)(connection)

    answer, seconds = timed_answer(port, send)
    assert status_of(answer) == 408, answer
    assert seconds < HANG_S


def test_an_endless_chunked_body_gets_a_413_and_is_cut_off(port):
    sent = [0]

    def send(connection):
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(200_000):  # bounded: 200 MB at most
                connection.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
                sent[0] += 1024
        except OSError:
            pass

    answer, seconds = timed_answer(port, send)
    assert status_of(answer) == 413, answer
    assert seconds < HANG_S
    assert sent[0] < 200_000 * 1024  # the server closed the connection


def test_a_body_the_app_never_reads_is_discarded_then_the_connection_closed(port):
    def send(connection):
        connection.sendall(
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
        )
        trickle(b" " * 1000, every=0.05)(connection)

    answer, seconds = timed_answer(port, send)
    assert status_of(answer) == 200, answer
    assert seconds < HANG_S  # lingered LINGER_S, not 1000 x 0.05 s


def test_a_connection_that_sends_nothing_is_closed_silently(port):
    answer, seconds = timed_answer(port, lambda connection: None)
    assert answer == b""
    assert HEADER_S <= seconds < HANG_S


def test_keep_alive_serves_several_requests_then_times_out(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG_S)
    try:
        for _ in range(3):  # one connection, three answers
            connection.request(
                "POST", "/predict", PIXELS_JSON, {"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            assert response.status == 200
            response.read()
        start = time.monotonic()
        assert read_until_closed(connection.sock) == b""  # then idle: closed by a deadline
        assert time.monotonic() - start < HANG_S
    finally:
        connection.close()


def _normal_request_seconds(port: int) -> float:
    start = time.monotonic()
    with connect(port) as connection:
        connection.sendall(json_request(extra="Connection: close\r\n"))
        assert status_of(read_until_closed(connection)) == 200
    return time.monotonic() - start


def test_idle_and_trickling_connections_do_not_delay_a_normal_request(port):
    baseline = min(_normal_request_seconds(port) for _ in range(3))
    # 50 idle connections, 25 sending headers slowly, 25 sending a body slowly: more
    # than uvicorn's limit_concurrency=64 that this server used to have.
    held = [connect(port) for _ in range(100)]
    try:
        for index, connection in enumerate(held[50:]):
            request = json_request()
            connection.sendall(request[: 20 if index < 25 else len(request) - 100])
        time.sleep(0.3)
        with ThreadPoolExecutor(4) as pool:
            seconds = list(pool.map(lambda _: _normal_request_seconds(port), range(8)))
    finally:
        for connection in held:
            connection.close()
    assert max(seconds) < baseline + 1.0, seconds


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1", 200),
        ("localhost:8000", 200),
        ("[::1]:8000", 200),
        ("digits.lab.example", 200),  # --allowed-host
        ("pad.lan.example", 200),  # --allowed-host '*.lan.example'
        ("rebind.evil.example", 400),
        ("evil.example.localhost.attacker.example", 400),
        ("", 400),
    ],
)
def test_only_allowed_host_names_are_answered(port, host, status):
    with connect(port) as connection:
        connection.sendall(json_request(host=host, extra="Connection: close\r\n"))
        answer = read_until_closed(connection)
    assert status_of(answer) == status, answer
    if status == 400:
        detail = json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"]
        assert "--allowed-host" in detail
        assert "\n" not in detail


def test_too_many_connections_are_closed_at_once(port, monkeypatch):
    monkeypatch.setattr(protocol, "MAX_CONNECTIONS", 20)
    held = [connect(port) for _ in range(20)]
    try:
        time.sleep(0.2)
        with connect(port) as extra:
            assert read_until_closed(extra) == b""  # closed before a byte is read
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.3)
    assert _normal_request_seconds(port) < HANG_S  # and the server answers once they go


def test_requests_past_the_in_flight_limit_get_a_503():
    import asyncio

    import httpx

    from mnist_pipeline.serving.guards import Guard

    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    guard = Guard(slow_app, hosts=["localhost"], max_in_flight=2)

    async def scenario():
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            held = [asyncio.create_task(http.get("/")) for _ in range(2)]
            while guard.in_flight < 2:
                await asyncio.sleep(0.01)
            refused = await asyncio.wait_for(http.get("/"), HANG_S)
            release.set()
            return refused, await asyncio.gather(*held), guard.in_flight

    refused, answered, left = asyncio.run(scenario())
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["detail"].startswith("server busy: 2 requests in flight")
    assert [answer.status_code for answer in answered] == [200, 200]
    assert left == 0
