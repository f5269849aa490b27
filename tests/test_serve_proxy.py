"""docs/serving.md's nginx example, run as written in front of a real `serve`.

The test takes the ```nginx block and the `openssl` line from docs/serving.md, replaces
only ports, paths and the 10 s client timeouts (1 s here), starts nginx on 127.0.0.1 in
the foreground, and checks TLS, a prediction through it, the body limit, the per-client
rate limit, the refused handshake for other names, and the client timeouts.
Skips only if the nginx or openssl binary is missing (.ci/run installs nginx-light).
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mnist_pipeline.serving.app import build_app
from tests.conftest import REPO_ROOT
from tests.serve_helpers import multipart, read_until_closed, running_server, seven_png
from tests.trained_models import tiny_model_file

NAME = "digits.lab.example"
DOC = (REPO_ROOT / "docs" / "serving.md").read_text()
HANG_S = 30

pytestmark = pytest.mark.slow  # ~20 s: nginx, TLS, and waits for the rate limit to refill


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.skip("no nginx binary (.ci/run installs Debian's nginx-light)")
    if shutil.which("openssl") is None:
        pytest.skip("no openssl binary to make the test certificate")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def replaced(text: str, old: str, new: str) -> str:
    """`text` with `old` -> `new`; `old` must be there (the docs and test must agree)."""
    assert old in text, f"docs/serving.md's example no longer has {old!r}"
    return text.replace(old, new)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """(HTTPS port, TLS context trusting the test certificate) of nginx in front of serve."""
    nginx = nginx_binary()
    folder = tmp_path_factory.mktemp("proxy")
    # The certificate, by the docs' own openssl line.
    (line,) = [ln for ln in DOC.splitlines() if ln.startswith("sudo openssl req ")]
    command = shlex.split(line)[1:]
    command = [arg.replace("/etc/ssl/mnist-pipeline", str(folder)) for arg in command]
    subprocess.run(command, check=True, capture_output=True, timeout=HANG_S)
    context = ssl.create_default_context(cafile=str(folder / "cert.pem"))

    model = tiny_model_file(folder / "model.safetensors")
    app = build_app(model_path=model, threads=1, metrics_path=folder / "none.json",
                    lock_path=folder / "none.lock")  # fmt: skip
    with running_server(app) as upstream:
        (site,) = re.findall(r"```nginx\n(.*?)```", DOC, re.DOTALL)
        port = free_port()
        site = replaced(site, "listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
        site = replaced(site, "listen 443 ssl default_server;",
                        f"listen 127.0.0.1:{port} ssl default_server;")  # fmt: skip
        site = replaced(site, "/etc/ssl/mnist-pipeline", str(folder))
        site = replaced(site, "proxy_pass http://127.0.0.1:8000;",
                        f"proxy_pass http://127.0.0.1:{upstream};")  # fmt: skip
        site = replaced(site, "client_header_timeout 10s;", "client_header_timeout 1s;")
        site = replaced(site, "client_body_timeout 10s;", "client_body_timeout 1s;")
        (folder / "site.conf").write_text(site)
        # The main config that Debian's /etc/nginx/nginx.conf would be: one process in the
        # foreground, everything it writes in the temp folder.
        (folder / "nginx.conf").write_text(f"""
daemon off;
master_process off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/site.conf;
}}
""")
        args = [nginx, "-p", str(folder), "-c", str(folder / "nginx.conf")]
        check = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=HANG_S)
        assert check.returncode == 0, check.stderr
        process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + HANG_S
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert process.poll() is None, process.stderr.read()
                    assert time.monotonic() < deadline, "nginx did not start"
                    time.sleep(0.05)
            yield port, context
        finally:
            process.terminate()
            process.wait(timeout=HANG_S)


def tls_socket(port: int, context: ssl.SSLContext, name: str = NAME) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=HANG_S)
    return context.wrap_socket(raw, server_hostname=name)


def https(port: int, context, method: str, path: str, body: bytes = b"", headers=None):
    connection = http.client.HTTPSConnection(NAME, port, context=context, timeout=HANG_S)
    connection.sock = tls_socket(port, context)  # 127.0.0.1, with the name for SNI
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def upload(data: bytes) -> tuple[bytes, dict]:
    body, content_type = multipart(data, "d.png")
    return body, {"Content-Type": content_type}


def test_a_prediction_through_tls(proxy):
    port, context = proxy
    status, answer = https(port, context, "POST", "/predict", *upload(seven_png()))
    assert status == 200, answer
    assert len(json.loads(answer)["probabilities"]) == 10
    status, answer = https(port, context, "GET", "/health")
    assert (status, json.loads(answer)["status"]) == (200, "ok")


def test_a_body_over_5_mb_is_refused_by_the_proxy(proxy):
    port, context = proxy
    time.sleep(2.5)  # a fresh rate-limit allowance
    status, _ = https(port, context, "POST", "/predict", *upload(b"\0" * (6 * 1024 * 1024)))
    assert status == 413


def test_another_name_gets_no_tls_handshake(proxy):
    port, context = proxy
    with pytest.raises(ssl.SSLError):
        tls_socket(port, context, name="rebind.evil.example")


def test_requests_past_the_rate_limit_get_429(proxy):
    port, context = proxy
    time.sleep(2.5)
    with ThreadPoolExecutor(20) as pool:  # 100 at once: far past 20 + 10/s however slow
        statuses = list(pool.map(lambda _: https(port, context, "GET", "/health")[0], range(100)))
    assert statuses.count(200) >= 20  # the burst passes...
    assert 429 in statuses  # ...then the client is held to 10/s


@pytest.mark.parametrize(
    "partial",
    [
        f"GET /health HTTP/1.1\r\nHost: {NAME}\r\nX-Slow: a",
        f"POST /predict HTTP/1.1\r\nHost: {NAME}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{",
    ],
    ids=["headers", "body"],
)
def test_a_client_that_stalls_is_cut_off(proxy, partial):
    port, context = proxy
    start = time.monotonic()
    with tls_socket(port, context) as connection:
        connection.sendall(partial.encode())
        try:
            answer = read_until_closed(connection)  # a timeout here fails the test
        except ssl.SSLError:  # closed without TLS's close_notify: closed all the same
            answer = b""
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - start < HANG_S  # closed by client_*_timeout (1 s here)
