"""`infp call` in a real headless Chromium with a fake microphone (Chromium's
--use-fake-device-for-media-stream --use-file-for-fake-audio-capture): frames arrive continuously over
WebRTC; while only the microphone speaks the avatar's mouth stays closed, measured by MediaPipe on the
frames the page received; when the agent's typed words play, it opens. Busy line, refused microphone,
hang-up. The bundled checkpoints: the mouth is what is tested."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from infp.audio.io import save_wav

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SNAPSHOT = ("const v = document.getElementById('avatar'); const c = document.createElement('canvas');"
            "c.width = v.videoWidth; c.height = v.videoHeight; c.getContext('2d').drawImage(v, 0, 0);"
            "return c.toDataURL('image/png');")


@pytest.fixture(scope="module")
def call_server(astronaut):
    pytest.importorskip("aiortc")
    pytest.importorskip("selenium")
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (make system installs them)")
    import uvicorn

    from infp.demo.call import build_call_app
    from infp.pipeline import InfpPipeline

    pipe = InfpPipeline.from_pretrained(device="cpu")
    # frames up to 3 s late are still shown: a busy machine shows the mouth late rather than not at all
    app = build_call_app(lambda: pipe, astronaut, "astronaut", steps=6, max_lag_s=3.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(30)


def _chromium(*flags: str):
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
              *flags):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))


def _calling(url: str, mic) -> object:
    """A Chromium whose microphone plays the file `mic`, on the call page, the call started."""
    from selenium.webdriver.common.by import By

    driver = _chromium("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                       f"--use-file-for-fake-audio-capture={mic}")
    driver.get(url)
    driver.find_element(By.ID, "start").click()
    return driver


def _until(condition, seconds: float, failure: str) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, failure
        time.sleep(0.2)


def _api(url: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _mouths(driver, n: int, every: float) -> np.ndarray:
    """MediaPipe's mouth opening on n frames the page is showing, `every` seconds apart."""
    import cv2

    from infp.eval.motion import measure_landmarks
    from infp.face.expression import mouth_opening

    frames = []
    for _ in range(n):
        png = base64.b64decode(driver.execute_script(SNAPSHOT).split(",")[1])
        frames.append(cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
        time.sleep(every)
    return mouth_opening(measure_landmarks(iter(frames)).astype(np.float64))


def test_a_call_in_chromium_listens_to_the_microphone_and_speaks_typed_words(call_server, tmp_path, shared_data):
    from selenium.webdriver.common.by import By

    from infp.audio.io import load_mono

    mic = tmp_path / "mic.wav"  # a real voice (held out from stage-2 training), looped by Chromium as the microphone
    save_wav(mic, load_mono(shared_data / "audio" / "hl_driving_4.wav")[: 16000 * 30])
    driver = _calling(call_server, mic)
    try:
        _until(lambda: _api(call_server, "stats")[1].get("frames_delivered", 0) > 0, 30, "no frame within 30 s")
        shown = driver.execute_script("return window.framesShown")
        time.sleep(2)
        assert driver.execute_script("return window.framesShown") - shown >= 30, "frames arrive continuously"

        time.sleep(1)
        listening = _mouths(driver, 12, 0.2)
        status, said = _api(call_server, "say", {"text": "Hello there. I am the avatar, and I am talking to you "
                                                         "now, with my own voice, for a few seconds."})
        assert status == 200 and said["queued_s"] > 3
        time.sleep(3.5)  # the words start at once (they go out with the microphone's audio); their frames come later
        speaking = _mouths(driver, 12, 0.2)
        assert np.isfinite(listening).mean() > 0.8 and np.isfinite(speaking).mean() > 0.8
        # closed while only the microphone speaks (real listeners rest at 0.029 of face height), open with its voice
        assert np.nanmean(listening) < 0.03, listening
        assert np.nanmean(speaking) > 1.3 * np.nanmean(listening), (listening, speaking, _api(call_server, "stats")[1])

        status, busy = _api(call_server, "offer", {"sdp": "v=0", "type": "offer"})
        assert status == 409 and "another call" in busy["error"]
        stats = _api(call_server, "stats")[1]
        assert stats["mic_seconds"] > 5 and stats["frames_sent"] > 100
    finally:
        driver.find_element(By.ID, "hangup").click()
        time.sleep(1)
        driver.quit()
    assert _api(call_server, "stats")[1] == {"call": None}, "the call is hung up and its session closed"


def test_a_refused_microphone_is_told_in_the_page(call_server):
    from selenium.webdriver.common.by import By

    driver = _chromium("--deny-permission-prompts")
    try:
        driver.get(call_server)
        driver.find_element(By.ID, "start").click()
        time.sleep(1)
        assert "microphone is not available" in driver.find_element(By.ID, "note").text
    finally:
        driver.quit()
    assert _api(call_server, "say", {"text": "hello"})[0] == 409, "no call was started"


def test_a_page_closed_mid_call_hangs_up(call_server, tmp_path):
    """The visitor closes the page mid-call: the call ends and the line is free again."""
    mic = tmp_path / "noise.wav"
    save_wav(mic, (0.05 * np.random.default_rng(0).normal(size=16000 * 5)).astype(np.float32))
    driver = _calling(call_server, mic)
    try:
        _until(lambda: "seconds" in _api(call_server, "stats")[1], 30, "the call did not start")
        driver.get("about:blank")  # the page goes away mid-call
        _until(lambda: _api(call_server, "stats")[1] == {"call": None}, 15, "not hung up when its page closed")
    finally:
        driver.quit()
