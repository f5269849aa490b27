"""`mnist-pipeline serve` for real: the command serves a model trained on real digits, and
headless Chromium draws digits on the page with pointer events and reads the answers.

UPDATE_SCREENSHOT=1 also writes docs/serve.png (the README's picture of the page), of
the tutorial's default model (params.yaml's mlp, trained as `dvc repro` trains it), so the
picture shows the model a newcomer gets.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mnist_pipeline.core.params import parse_params
from mnist_pipeline.data.split import load_bundled_digits, split_digits
from mnist_pipeline.formats.images import read_image
from mnist_pipeline.model.model_file import load_model, save_model
from mnist_pipeline.model.predict import class_probabilities
from mnist_pipeline.training.loop import train_model
from tests.conftest import REPO_ROOT, write_params
from tests.trained_models import bundled_split, digit_model_file

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = REPO_ROOT / "docs" / "serve.png"
# Strokes in the pad's 280x280 pixels, drawn as a person would, one polyline per stroke.
SEVEN = [[(75, 65), (205, 65), (125, 225)]]
ONE = [[(125, 80), (150, 55), (150, 230)]]
NOTHING = "\N{EN DASH}"  # what the page shows before a prediction
FOUR = [[(110, 50), (80, 160), (200, 160)], [(170, 90), (170, 235)]]


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright (test extra) is not installed")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on PATH (.ci/run installs Debian's `chromium`)")
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return digit_model_file(tmp_path_factory.mktemp("digits") / "model.safetensors")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(model_path: Path, folder: Path):
    """`python -m mnist_pipeline serve` of `model_path` on a free loopback port; its URL."""
    repo_params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params = write_params(folder / "params.yaml", repo_params | {"runtime": {"threads": 1}})
    port = _free_port()
    command = [
        sys.executable, "-m", "mnist_pipeline", "serve", "--model", str(model_path),
        "--port", str(port), "--params", str(params),
        "--metrics", str(folder / "metrics.json"), "--lock", str(folder / "dvc.lock"),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    assert json.load(response)["status"] == "ok"
                    break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"serve did not start: {process.stderr.read()}")
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(chromium, model_path, tmp_path_factory) -> str:
    with serving(model_path, tmp_path_factory.mktemp("server")) as url:
        yield url


@contextlib.contextmanager
def browser_page(chromium, url: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 820, "height": 640})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        yield page
        browser.close()
        assert not errors  # no JavaScript error on the page


@pytest.fixture
def page(chromium, server):
    with browser_page(chromium, server) as page:
        yield page


def draw(page, strokes: list[list[tuple[int, int]]]) -> None:
    """Real mouse input on the pad: Chromium turns it into pointer events."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=12)
        page.mouse.up()


def shown(page) -> tuple[str, int, list[str]]:
    """Once no prediction is pending: the digit shown, the number of bars, their values."""
    page.wait_for_selector("#results[aria-busy=false]")
    values = page.locator("#bars .value").all_inner_texts()
    return page.inner_text("#predicted"), page.locator("#bars .bar").count(), values


@pytest.mark.parametrize(("strokes", "digit"), [(SEVEN, "7"), (ONE, "1"), (FOUR, "4")])
def test_drawn_digit_is_recognised(page, strokes, digit):
    draw(page, strokes)
    predicted, bars, values = shown(page)
    assert (predicted, bars) == (digit, 10)
    assert all(value.endswith("%") for value in values)
    best = max(range(10), key=lambda d: float(values[d].rstrip("%")))
    assert str(best) == digit  # the largest value is the predicted digit...
    widths = [page.locator("#bars .bar").nth(d).bounding_box()["width"] for d in range(10)]
    assert max(widths) == widths[best] > 0  # ...and its bar is drawn the longest
    lit = page.evaluate(
        "() => { const d = document.getElementById('preview').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data; let n = 0;"
        " for (let i = 0; i < d.length; i += 4) n += d[i] > 0; return n; }"
    )
    assert 20 < lit < 28 * 28 // 2  # the 28x28 preview shows a digit, not a blank


def test_the_default_model_reads_a_drawn_seven_and_says_what_it_is(chromium, tmp_path):
    """The README's picture: the tutorial's mlp as `dvc repro` trains it by default (its
    data split, params and threads), serving a drawn 7 and naming its true architecture."""
    params = parse_params(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()))
    train, _ = split_digits(load_bundled_digits(), params.data)
    result = train_model(train, params.model, params.train, params.runtime.threads)
    model_path = tmp_path / "model.safetensors"
    save_model(result.model, result.config, model_path)
    hidden = "-".join(str(width) for width in params.model.hidden)
    with serving(model_path, tmp_path) as url, browser_page(chromium, url) as page:
        draw(page, SEVEN)
        assert shown(page)[0] == "7"
        page.wait_for_function(
            "!document.getElementById('model-info').textContent.startsWith('Loading')"
        )
        assert page.inner_text("#model-info").startswith(f"Model: mlp (hidden {hidden}; ")
        if os.environ.get("UPDATE_SCREENSHOT") == "1":
            page.screenshot(path=str(SCREENSHOT))


def test_clear_empties_the_pad_and_the_answer(page):
    draw(page, SEVEN)
    shown(page)
    page.get_by_role("button", name="Clear").click()
    assert page.inner_text("#predicted") == NOTHING
    assert page.locator("#bars .value").all_inner_texts() == [NOTHING] * 10
    ink = page.evaluate(
        "() => Array.from(document.getElementById('pad').getContext('2d')"
        ".getImageData(0, 0, 280, 280).data).some(v => v < 255)"
    )
    assert not ink


def test_keyboard_reaches_the_controls(page):
    focused = []
    for _ in range(3):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("() => document.activeElement.id"))
    assert focused == ["pad", "clear", "file"]


def test_picked_image_file_is_classified(page, model_path, tmp_path):
    _, test = bundled_split()
    index = int((test.labels == 3).nonzero()[0][0])
    # A dark-on-light photo-like image, 4x the size: the server makes it MNIST-style again.
    picture = Image.fromarray(255 - test.images[index, 0]).resize((112, 112))
    path = tmp_path / "three.png"
    picture.save(path)
    model, _ = load_model(model_path)
    expected = class_probabilities(model, read_image(path)[None, None])[0].argmax()
    page.set_input_files("#file", str(path))
    predicted, bars, _ = shown(page)
    assert (predicted, bars) == (str(expected), 10)


def test_bad_file_shows_a_message(page, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#results[aria-busy=false]")
    assert page.inner_text("#message") == (
        "notes.png: not a PNG, JPEG or BMP image; expected a PNG, JPEG or BMP image of one digit"
    )


def _post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, {"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def _declared_only(server: str, length: int) -> int:
    """Send headers declaring a `length`-byte upload, no body; the answer's status."""
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", "multipart/form-data; boundary=x")
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_real_server_answers_bad_input_with_4xx(server):
    status, answer = _post(f"{server}/predict", b"[1, 2", "application/json")
    assert status == 422
    assert "JSON" in answer["detail"]
    assert _declared_only(server, 6_000_000) == 413  # refused before the body is sent
    buffer = io.BytesIO()
    Image.new("L", (40, 40), 0).save(buffer, format="BMP")
    body = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="black.bmp"\r\n\r\n'
        + buffer.getvalue()
        + b"\r\n--x--\r\n"
    )
    status, answer = _post(f"{server}/predict", body, "multipart/form-data; boundary=x")
    assert (status, answer["detail"].split(":")[0]) == (400, "black.bmp")
    pixels = json.dumps({"pixels": [0] * 784}).encode()
    status, answer = _post(f"{server}/predict", pixels, "application/json")
    assert status == 200
    assert len(answer["probabilities"]) == 10
