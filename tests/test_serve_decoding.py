"""Decoding uploads is bounded: JPEG scans counted before decoding, a few decodes at once
with a short queue (then 503), a memory budget, a time limit, and a decode whose client
has gone stops at the decoder's next read."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.limits import MAX_JPEG_SCAN_PIXELS, MAX_JPEG_SCANS
from mnist_pipeline.formats import images
from mnist_pipeline.formats.image_bounds import ImageLimitError, jpeg_scans
from mnist_pipeline.formats.images import image_pixels, read_image, read_image_bytes
from mnist_pipeline.model.model_file import load_model
from mnist_pipeline.serving.app import create_app
from mnist_pipeline.serving.decoding import ClientGoneError, Decoder, _MemoryBudget
from mnist_pipeline.serving.inference import Predictor
from mnist_pipeline.serving.model_info import describe_model
from mnist_pipeline.serving.uploads import BodyBudget
from tests.serve_helpers import (
    connect,
    many_scan_jpeg,
    multipart,
    read_until_closed,
    running_server,
    seven_png,
    status_of,
    upload_request,
)
from tests.trained_models import tiny_model_file

HANG_S = 30  # only catches a hang


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("decoding") / "model.safetensors")


def make_app(model_path: Path, decoder: Decoder | None = None, bodies: BodyBudget | None = None):
    model, config = load_model(model_path)
    info = describe_model(model, config, model_path=model_path, metrics_path=Path("-"),
                          lock_path=Path("-"))  # fmt: skip
    return create_app(Predictor(model, threads=1), info, decoder=decoder, bodies=bodies)


async def post_upload(app, data: bytes, name: str = "digit.png") -> httpx.Response:
    body, content_type = multipart(data, name)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        return await http.post("/predict", content=body, headers={"content-type": content_type})


# --- JPEG scans ---------------------------------------------------------------------------


def test_scan_markers_are_counted_across_read_chunks(monkeypatch):
    from mnist_pipeline.formats import image_bounds

    data = many_scan_jpeg(64, 40)
    for chunk in (1, 2, 3, 7, 4096):  # a marker split between two reads still counts
        monkeypatch.setattr(image_bounds, "_CHUNK", chunk)
        file = io.BytesIO(data)
        file.seek(5)
        assert jpeg_scans(file) == 40
        assert file.tell() == 5  # the position is kept


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding(tmp_path):
    data = many_scan_jpeg(2048, 90_573)  # as the issue's: 1.5 MB, minutes of CPU to decode
    (tmp_path / "scans.jpg").write_bytes(data)
    start = time.monotonic()
    for read in (lambda: read_image_bytes(data, "scans.jpg"),
                 lambda: image_pixels(data, "scans.jpg"),
                 lambda: read_image(tmp_path / "scans.jpg")):  # fmt: skip
        expected = f"90573 scans; expected at most {MAX_JPEG_SCANS}"
        with pytest.raises(ImageLimitError, match=expected):
            read()
    assert time.monotonic() - start < HANG_S


def test_scans_times_pixels_is_bounded_too():
    data = many_scan_jpeg(4096, 80)  # under the scan limit, but 80 x 16.7 MP > 1e9
    with pytest.raises(ImageLimitError, match="in 80 scans; expected scans x pixels at most"):
        image_pixels(data, "big.jpg")
    assert MAX_JPEG_SCAN_PIXELS < 80 * 4096 * 4096
    ordinary = io.BytesIO()
    Image.new("RGB", (800, 600), "white").save(ordinary, format="JPEG", progressive=True)
    assert image_pixels(ordinary.getvalue(), "photo.jpg") == 800 * 600  # 10 scans: fine


def test_a_decode_stops_when_its_check_says_so():
    data = seven_png(600)
    reads = []

    class StopDecodeError(Exception):
        pass

    def check():
        reads.append(1)
        if len(reads) > 3:  # after the header, during the pixels
            raise StopDecodeError

    with pytest.raises(StopDecodeError):  # the caller's own exception, not an "unreadable" error
        read_image_bytes(data, "seven.png", check=check)
    assert read_image_bytes(data, "seven.png").max() > 0  # the file itself is fine


def test_many_scan_jpegs_then_a_normal_upload_are_all_answered(model_path):
    hostile = many_scan_jpeg(2048, 5000)
    with running_server(make_app(model_path)) as port:

        def send(data: bytes) -> int:
            with connect(port, timeout=HANG_S) as connection:
                connection.sendall(upload_request(data, "digit.jpg"))
                return status_of(read_until_closed(connection))

        with ThreadPoolExecutor(8) as pool:
            hostile_statuses = list(pool.map(send, [hostile] * 40))
            start = time.monotonic()
            normal = send(seven_png())
            normal_seconds = time.monotonic() - start
    assert set(hostile_statuses) == {413}
    assert normal == 200
    assert normal_seconds < HANG_S


# --- the queue, the memory budget, time and disconnects ----------------------------------------


@pytest.fixture
def slow_decodes(monkeypatch):
    """Decodes that run until released (or until their check raises), counting starts."""
    release = threading.Event()
    started: list[str] = []
    stopped: list[BaseException] = []

    def decode(data, name, *, check=None):
        started.append(name)
        try:
            while not release.wait(0.01):
                if check is not None:
                    check()
        except BaseException as err:
            stopped.append(err)
            raise
        return read_image_bytes(data, name)

    monkeypatch.setattr(images, "read_image_bytes", decode)
    yield release, started, stopped
    release.set()


def test_a_full_decode_queue_answers_503_at_once(model_path, slow_decodes):
    release, started, _ = slow_decodes
    app = make_app(model_path, Decoder(workers=1, queue=2))

    async def scenario():
        waiting = [asyncio.create_task(post_upload(app, seven_png())) for _ in range(3)]
        while len(started) < 1:
            await asyncio.sleep(0.01)
        refused = await asyncio.wait_for(post_upload(app, seven_png()), HANG_S)
        release.set()
        return refused, await asyncio.gather(*waiting)

    refused, answered = asyncio.run(scenario())
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "server busy" in refused.json()["detail"]
    assert [answer.status_code for answer in answered] == [200, 200, 200]


def test_a_decode_gets_a_time_limit(model_path, slow_decodes):
    app = make_app(model_path, Decoder(seconds=0.3))
    answer = asyncio.run(asyncio.wait_for(post_upload(app, seven_png(), "slow.png"), HANG_S))
    assert answer.status_code == 413
    assert answer.json()["detail"].startswith("slow.png: decoding took longer than")


def test_a_decode_whose_client_has_gone_stops(model_path, slow_decodes):
    _, started, stopped = slow_decodes
    with running_server(make_app(model_path)) as port:
        with connect(port) as connection:
            connection.sendall(upload_request(seven_png()))
            deadline = time.monotonic() + HANG_S
            while not started:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        # the client has closed its connection while its upload is being decoded
        while not stopped:
            assert time.monotonic() < deadline, "the decode went on after the client left"
            time.sleep(0.01)
    assert isinstance(stopped[0], ClientGoneError)


def test_the_memory_budget_lets_big_decodes_run_one_at_a_time():
    budget = _MemoryBudget(100)
    order: list[str] = []
    first_in = threading.Event()

    def hold(name: str, size: int, seconds: float) -> None:
        with budget.hold(size, lambda: None):
            order.append(f"{name} in")
            first_in.set()
            time.sleep(seconds)
            order.append(f"{name} out")

    first = threading.Thread(target=hold, args=("big", 80, 0.3))
    first.start()
    first_in.wait(HANG_S)
    second = threading.Thread(target=hold, args=("bigger", 500, 0))  # over the whole budget
    second.start()
    first.join(HANG_S)
    second.join(HANG_S)
    assert order == ["big in", "big out", "bigger in", "bigger out"]
    with budget.hold(30, lambda: None), budget.hold(60, lambda: None):
        pass  # small ones share it


def test_a_bad_image_is_still_one_line(model_path):
    answer = asyncio.run(post_upload(make_app(model_path), b"GIF89a nonsense", "x.gif"))
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("x.gif: not a PNG, JPEG or BMP image")
    with pytest.raises(PipelineError):
        read_image_bytes(b"GIF89a nonsense", "x.gif")


def test_uploads_past_the_shared_body_budget_get_a_503(model_path):
    bodies = BodyBudget(total=100_000)
    app = make_app(model_path, bodies=bodies)
    fits = asyncio.run(post_upload(app, seven_png()))
    assert fits.status_code == 200
    too_many = asyncio.run(post_upload(app, seven_png() + b"\0" * 200_000))
    assert too_many.status_code == 503
    assert "bytes of uploads are being received" in too_many.json()["detail"]
    assert bodies.used == 0  # every request gave its bytes back
