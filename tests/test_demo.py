"""The web demo in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium):
upload, generate, a video element that plays; a user error shown in the page with the server still
serving; the live tab streaming frames. Tiny untrained models: this tests the plumbing."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from infp.audio.io import save_wav
from infp.demo.activity import activity_image

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def test_activity_image_marks_who_speaks():
    agent = np.zeros(250, bool)
    agent[:100] = True
    partner = ~agent
    img = activity_image(agent, partner, width=600)
    assert img.shape[1] == 600 and img.dtype == np.uint8
    orange = (np.abs(img.astype(int) - (230, 120, 40)).sum(-1) < 30)
    blue = (np.abs(img.astype(int) - (40, 120, 230)).sum(-1) < 30)
    cols_o, cols_b = np.flatnonzero(orange.any(0)), np.flatnonzero(blue.any(0))
    assert cols_o.max() < cols_b[cols_b > cols_o.max()].min() + 5  # orange first, blue after
    assert np.flatnonzero(orange.any(1)).max() < np.flatnonzero(blue.any(1)).min()  # agent lane above


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    gr = pytest.importorskip("gradio")
    pytest.importorskip("selenium")
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (make system installs them)")
    from infp.demo.app import build_app, call_routes
    from infp.pipeline import InfpPipeline

    pipe = InfpPipeline.from_pretrained(tiny_models / "m", tiny_models / "imi", device="cpu")
    routes = call_routes(lambda: pipe)
    app = build_app(lambda: pipe, tmp_path_factory.mktemp("demo_out"), call=bool(routes))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               allowed_paths=[str(app.infp_out_dir)], app_kwargs={"routes": routes})
    assert isinstance(app, gr.Blocks)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
              "--window-size=1400,1100"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def media(tmp_path_factory, astronaut) -> Path:
    import cv2

    d = tmp_path_factory.mktemp("demo_media")
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    voice = (0.2 * rng.normal(size=(2, 32000)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2).astype(np.float32)
    voice[0, 16000:] = 0  # the agent speaks first, then listens
    voice[1, :16000] = 0
    save_wav(d / "conversation.wav", voice)
    save_wav(d / "mono.wav", voice[0])
    cv2.imwrite(str(d / "portrait.png"), astronaut[:, :, ::-1])
    return d


def _wait(condition, timeout: float = 90, every: float = 0.25):
    end = time.time() + timeout
    while time.time() < end:
        if got := condition():
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s")


def _click(driver, element) -> None:
    """Click through whatever overlays it (an error toast)."""
    driver.execute_script("arguments[0].click()", element)


def _upload(driver, elem_id: str, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))


def test_offline_generation_plays_in_the_browser_and_errors_show_in_the_page(server, browser, media):
    from selenium.webdriver.common.by import By

    browser.get(server)
    _wait(lambda: browser.find_elements(By.ID, "generate"))
    _upload(browser, "portrait", media / "portrait.png")
    _upload(browser, "conversation", media / "mono.wav")
    time.sleep(1.5)  # the upload lands in the component
    browser.find_element(By.ID, "generate").click()
    assert "needs two channels" in _wait(lambda: next((e.text for e in browser.find_elements(By.CSS_SELECTOR, ".toast-body")
                                                       if "channel" in e.text), None))

    _click(browser, browser.find_element(By.CSS_SELECTOR, "#conversation button[aria-label='Clear']"))
    _upload(browser, "conversation", media / "conversation.wav")
    time.sleep(1.5)
    _click(browser, browser.find_element(By.ID, "generate"))  # the server is still serving after the error
    video = _wait(lambda: next((v for v in browser.find_elements(By.CSS_SELECTOR, "#video video") if v.get_attribute("src")), None))
    assert "/file=" in video.get_attribute("src")
    duration = _wait(lambda: browser.execute_script(
        "const v = document.querySelector('#video video'); v.muted = true; v.play(); return v.readyState >= 2 && v.duration"))
    assert duration == pytest.approx(2.0, abs=0.1)
    assert _wait(lambda: browser.execute_script("return document.querySelector('#video video').currentTime > 0.2"), 20)
    assert _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#activity img"))
    note = browser.find_element(By.ID, "note").text
    assert "50 frames" in note and "portrait: face" in note  # the portrait check's line


def test_live_tab_streams_frames(server, browser, media):
    from selenium.webdriver.common.by import By

    browser.get(server)
    _wait(lambda: browser.find_elements(By.ID, "generate"))  # the live tab is rendered when chosen
    _upload(browser, "conversation", media / "conversation.wav")
    time.sleep(1.5)
    _click(browser, next(b for b in browser.find_elements(By.CSS_SELECTOR, "button[role='tab']") if b.text == "Live"))
    _click(browser, _wait(lambda: next((b for b in browser.find_elements(By.ID, "start_live") if b.is_displayed()), None)))
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#live_frame img"), 60)
    assert _wait(lambda: "done: 50 frames" in browser.find_element(By.ID, "live_note").text, 60)
    assert "first frame after" not in browser.find_element(By.ID, "live_note").text  # the note moved on
    # the live tab links to the microphone call, served by the same server
    link = browser.find_element(By.CSS_SELECTOR, "#call_link a")
    assert link.get_attribute("href").endswith("/call/")
    browser.get(link.get_attribute("href"))
    assert _wait(lambda: browser.find_elements(By.ID, "start")) and "talk to the avatar" in browser.page_source
