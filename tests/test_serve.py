"""adcore serve: a real server process on loopback, a real HTTP client, and the page in headless Chromium."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("uvicorn", reason="adcore serve needs pip install adcore[serve]")

from adcore.data.folder import open_folder  # noqa: E402
from adcore.data.loading import load_images  # noqa: E402
from adcore.data import synthetic  # noqa: E402
from adcore.plugins import get_registry  # noqa: E402

SIZE = 64
#: The server under test refuses images above this many pixels (the test images have 96 x 96 = 9,216).
PIXEL_LIMIT = 50_000
STARTUP_S = 180  # a loaded 2-core machine: importing torch and warming the model up take a while


class Server:
    """An ``adcore serve`` process on a free loopback port, its output collected on a thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        code = "from adcore.cli.main import cli; cli()"
        self.process = subprocess.Popen([sys.executable, "-c", code, "serve", *args, "--port", "0"],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, "ADCORE_PROGRESS": "0", "PYTHONFAULTHANDLER": "1",
                                             **(env or {})})
        self.lines: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()
        self.url = self._wait_for(r"adcore serve: (http://\S+/)").group(1)
        deadline = time.monotonic() + STARTUP_S
        while get(self.url + "readyz")[0] != 200:
            assert self.process.poll() is None, self.output()
            if time.monotonic() > deadline:
                self._fail("not ready")
            time.sleep(0.2)

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def _wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if (found := re.search(pattern, line)):
                    return found
            assert self.process.poll() is None, self.output()
            time.sleep(0.1)
        self._fail(f"no line matching {pattern!r}")

    def _fail(self, what: str) -> NoReturn:
        """Fail with the server's output and, through faulthandler, where each of its threads stands."""
        self.process.send_signal(signal.SIGABRT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        time.sleep(0.5)  # the collector thread reads the last lines
        raise AssertionError(f"{what} after {STARTUP_S} s: {self.output()}")

    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def get(url: str) -> tuple[int, bytes, str]:
    return send(url, None, method="GET")


def send(url: str, body: bytes | None, content_type: str | None = None,
         method: str = "POST") -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")
    except urllib.error.URLError as exc:
        return 0, str(exc).encode(), ""


def declare_only(url: str, length: int, content_type: str) -> tuple[int, bytes, str]:
    """POST headers announcing ``length`` body bytes, without sending the body."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        connection.putrequest("POST", parts.path)
        connection.putheader("Content-Type", content_type)
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("Content-Type", "")
    finally:
        connection.close()


def multipart(field: str, name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], np.ndarray]:
    """A small PatchCore model with thresholds, test image files, and their torch scores."""
    root = tmp_path_factory.mktemp("serve")
    data = synthetic.generate(root / "data", categories=("machined_part",), seed=0, size=96, n_train=16,
                              n_test_good=6, n_test_defect=2)
    category = open_folder(data)[0]
    detector = get_registry().load_object("detector", "patchcore")(backbone_weights="random")
    detector.fit(load_images([s.path for s in category.train], SIZE))
    paths = [s.path for s in category.test]
    scores = detector.predict(load_images(paths, SIZE), progress=None)
    folder = root / "model"
    detector.save(folder, metadata={"image_size": SIZE, "image_threshold": float(np.median(scores.scores)),
                                    "pixel_threshold": float(np.quantile(scores.anomaly_maps, 0.99)),
                                    "display_range": [float(scores.anomaly_maps.min()),
                                                      float(scores.anomaly_maps.max())]})
    return folder, paths, scores.scores


@pytest.fixture(scope="module")
def server(model: tuple[Path, list[Path], np.ndarray]) -> Iterator[Server]:
    running = Server(str(model[0]), "--device", "cpu", "--max-mb", "0.5",
                     env={"ADCORE_MAX_IMAGE_PIXELS": str(PIXEL_LIMIT)})
    yield running
    running.stop()


def test_binds_to_loopback_and_reports_health(server: Server) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    assert get(server.url + "healthz")[:2] == (200, b'{"alive":true}')
    status, body, _ = get(server.url + "readyz")
    assert status == 200 and json.loads(body)["model"]["detector"] == "patchcore"
    assert any(line.startswith("Model ready: patchcore (torch)") for line in server.lines)


def test_predict_raw_and_multipart_match_adcore_predict(server: Server, model: Any) -> None:
    """The served score is the score of the same file read from disk; the map is a PNG at the working size."""
    _, paths, scores = model
    data = paths[0].read_bytes()
    status, body, kind = send(server.url + "predict", data, "image/png")
    assert status == 200 and kind == "application/json", body
    answer = json.loads(body)
    assert answer["score"] == pytest.approx(float(scores[0]), rel=1e-5)
    threshold = answer["image_threshold"]
    assert answer["anomalous"] == (answer["score"] >= threshold)
    assert answer["verdict"] == ("anomalous" if answer["anomalous"] else "normal")
    assert answer["model"]["detector"] == "patchcore" and answer["latency_ms"] > 0
    assert answer["image"] == {"width": 96, "height": 96} and answer["map_size"] == [SIZE, SIZE]
    png = base64.b64decode(answer["anomaly_map_png"].split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size == (SIZE, SIZE)
    body, kind = multipart("image", paths[1].name, paths[1].read_bytes())
    status, reply, _ = send(server.url + "predict", body, kind)
    assert status == 200 and json.loads(reply)["score"] == pytest.approx(float(scores[1]), rel=1e-5)


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_requests_get_a_4xx_naming_the_problem(server: Server, model: Any) -> None:
    form_without_file = (b"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--b--\r\n",
                         "multipart/form-data; boundary=b")
    cases = [
        (b"this is not an image", "image/png", 400, "not an image"),
        (b"", "image/png", 400, "empty body"),
        (b'{"image": 1}', "application/json", 415, "not an image"),
        (_png((400, 400)), "image/png", 413, "decompression bomb"),
        (*form_without_file, 400, "no file"),
    ]
    replies = [(send(server.url + "predict", body, kind), status, words) for body, kind, status, words in cases]
    # Over the limit: the server answers on the declared length; a client still sending a large body
    # may see the connection closed first (broken pipe), so only the headers are sent.
    replies.append((declare_only(server.url + "predict", 600_000, "application/octet-stream"), 413, "over the limit"))
    for (got, reply, reply_kind), status, words in replies:
        assert (got, reply_kind) == (status, "application/json"), (words, got, reply)
        answer = json.loads(reply)
        assert answer["status"] == status and words in answer["error"], answer
    assert get(server.url + "predict")[0] == 405
    assert json.loads(get(server.url + "nowhere")[1])["status"] == 404
    assert send(server.url + "predict", model[1][0].read_bytes(), "image/png")[0] == 200  # still serving


def test_metrics_in_prometheus_text_format(server: Server) -> None:
    send(server.url + "predict", b"nope", "image/png")
    status, body, kind = get(server.url + "metrics")
    text = body.decode()
    assert status == 200 and kind.startswith("text/plain")
    assert re.search(r'adcore_requests_total\{endpoint="/predict",status="400"\} [1-9]', text)
    assert re.search(r'adcore_request_errors_total\{status="400"\} [1-9]', text)
    assert "adcore_predict_latency_seconds_bucket{le=" in text and "adcore_model_ready 1.0" in text
    assert "process_resident_memory_bytes" in text


def test_serves_an_onnx_export_and_stops_cleanly_on_sigterm(model: Any, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX engine needs pip install adcore[onnx]")
    from adcore.export import RTOL, export_model

    folder, paths, scores = model
    export_model(folder, tmp_path / "onnx")
    running = Server(str(tmp_path / "onnx"), "--engine", "onnx")
    try:
        status, body, _ = send(running.url + "predict", paths[2].read_bytes(), "image/png")
        answer = json.loads(body)
        assert status == 200 and answer["model"]["engine"] == "onnx"
        assert abs(answer["score"] - float(scores[2])) <= RTOL * float(np.abs(scores).max())
    finally:
        code = running.stop()
    assert code == 0, running.output()
    assert "Stopped by SIGTERM" in running.output()


def test_without_the_extra_one_line_says_what_to_install(model: Any) -> None:
    code = ("import sys; sys.modules['uvicorn'] = None\n"
            "from adcore.cli.main import cli; cli()")
    done = subprocess.run([sys.executable, "-c", code, "serve", str(model[0])], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["Error: adcore serve needs uvicorn: pip install adcore[serve]"]


def test_a_port_in_use_is_one_line_before_the_model_loads(model: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-c", "from adcore.cli.main import cli; cli()", "serve",
                               str(model[0]), "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port} (Address already in use); choose another --port or --host"]


# --------------------------------------------------------------------------- the page, in a browser
class DevTools:
    """Just enough of the Chrome DevTools protocol: commands on one page, events skipped."""

    def __init__(self, url: str) -> None:
        import websocket

        self.socket = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.count = 0

    def __call__(self, method: str, **params: Any) -> dict[str, Any]:
        self.count += 1
        self.socket.send(json.dumps({"id": self.count, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.count:
                assert "error" not in message, message
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        return self("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 60) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}")


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    pytest.importorskip("websocket", reason="the browser test drives Chromium with websocket-client")
    browser = subprocess.Popen(
        [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert browser.stderr is not None
        port = None
        for line in browser.stderr:
            if (found := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)):
                port = found.group(1)
                break
        assert port, "chromium did not start its DevTools endpoint"
        threading.Thread(target=browser.stderr.read, daemon=True).start()  # keep its pipe drained
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        tools = DevTools(next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page"))
        yield tools
        tools.socket.close()
    finally:
        browser.terminate()
        try:
            browser.wait(15)
        except subprocess.TimeoutExpired:
            browser.kill()


def test_page_shows_verdict_score_and_heat_map(server: Server, model: Any, chromium: DevTools) -> None:
    """A person's path: open /, choose an image, read the verdict and score, see the overlay."""
    _, paths, scores = model
    chromium("Page.enable")
    chromium("Page.navigate", url=server.url)
    assert chromium.wait_for("document.getElementById('model').textContent.startsWith('Model: patchcore')")
    root = chromium("DOM.getDocument")["root"]["nodeId"]
    node = chromium("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
    chromium("DOM.setFileInputFiles", nodeId=node, files=[str(paths[3])])
    shown = json.loads(chromium.wait_for(
        "(() => { const $ = (i) => document.getElementById(i);"
        " return $('heat').naturalWidth && $('photo').naturalWidth && JSON.stringify({verdict: $('verdict')"
        ".textContent, score: $('score').textContent, heat: $('heat').naturalWidth,"
        " photo: $('photo').naturalWidth, error: $('error').textContent}); })()"))
    assert shown["error"] == "" and shown["verdict"] in ("normal", "anomalous")
    assert float(shown["score"]) == pytest.approx(float(scores[3]), rel=1e-3)  # shown with 4 digits
    assert (shown["heat"], shown["photo"]) == (SIZE, 96)
    picture = base64.b64decode(chromium("Page.captureScreenshot", format="png")["data"])
    assert Image.open(io.BytesIO(picture)).size[0] > 0
