"""``musicssl serve`` end to end in a real headless browser: Debian's Chromium
driven by Selenium drops the bundled example on the page and reads the key
from the DOM.

Needs ``chromium`` and ``chromium-driver`` (Debian packages; ``make test``
installs them with apt-get when it runs as root) and the ``serve``/``test``
extras; skips with the reason otherwise. Set ``MUSICSSL_SCREENSHOT=path.png``
to also save a screenshot of the page (docs/figures/serve_page.png is made so).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed (pip install 'musicssl[serve]')")
uvicorn = pytest.importorskip("uvicorn", reason="the 'serve' extra is not installed (pip install 'musicssl[serve]')")
pytest.importorskip("selenium", reason="selenium is not installed (pip install 'musicssl[test]')")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from musicssl.serve.analysis import ServeConfig  # noqa: E402
from musicssl.serve.app import EXAMPLE, create_app  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1000", "--hide-scrollbars"]


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/lib/chromium/{name}" if os.path.exists(f"/usr/lib/chromium/{name}") else None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    chromium = _find("chromium", "chromium-browser")
    driver_path = _find("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("Debian's chromium and chromium-driver are not installed; `make test` installs them "
                    "as root with apt-get, or run: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="musicssl-chromium-")
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_AVOID_STATS", "true")
    # an explicit driver path: Selenium Manager (which would download drivers) never runs
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ServeConfig(workers=2)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


DROP_SCRIPT = """
const [b64, name, selector] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], name, {type: "audio/ogg"}));
const target = document.querySelector(selector);
for (const type of ["dragenter", "dragover", "drop"]) {
  target.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
}
"""


def test_dropping_the_example_shows_its_key_tempo_and_charts(browser, server_url):
    browser.get(server_url + "/")
    WebDriverWait(browser, 30).until(lambda d: "key model" in d.find_element(By.ID, "server").text)
    browser.execute_script(DROP_SCRIPT, base64.b64encode(EXAMPLE.read_bytes()).decode(), EXAMPLE.name, "#drop")
    card = WebDriverWait(browser, 120).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f'.card[data-file="{EXAMPLE.name}"][data-state="done"]'))
    key = card.find_element(By.CSS_SELECTOR, ".key")
    assert key.text == "D major"
    assert key.get_attribute("data-key") == "D major"
    assert card.find_element(By.CSS_SELECTOR, ".confidence").text.startswith("confidence 0.9")
    assert card.find_element(By.CSS_SELECTOR, ".tempo").text.endswith("BPM")
    assert card.find_element(By.CSS_SELECTOR, ".error").get_attribute("hidden") is not None
    # the browser decoded the file: playback is possible and the waveform canvas is drawn on
    WebDriverWait(browser, 30).until(lambda d: card.find_element(By.CSS_SELECTOR, ".playbtn").is_enabled())
    for canvas in ("wave", "bars", "keygram"):
        inked = browser.execute_script(
            "const c = arguments[0]; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n;",
            card.find_element(By.CSS_SELECTOR, f"canvas.{canvas}"))
        assert inked > 500, canvas

    # another notation: the key is asked for again and shown in Camelot
    browser.execute_script("const s = document.getElementById('notation'); s.value = 'camelot';"
                           "s.dispatchEvent(new Event('change'));")
    WebDriverWait(browser, 60).until(lambda d: card.find_element(By.CSS_SELECTOR, ".key").text == "10B")
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe

    target = os.environ.get("MUSICSSL_SCREENSHOT")
    if target:
        browser.execute_script("const s = document.getElementById('notation'); s.value = 'standard';"
                               "s.dispatchEvent(new Event('change'));")
        WebDriverWait(browser, 60).until(lambda d: card.find_element(By.CSS_SELECTOR, ".key").text == "D major")
        height = browser.execute_script("return document.querySelector('main').getBoundingClientRect().bottom")
        chrome = browser.execute_script("return window.outerHeight - window.innerHeight")
        browser.set_window_size(1280, int(height) + int(chrome) + 24)
        time.sleep(0.5)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(target)


NO_KEY_FETCH = """
// the lead's no-key outcome: a key record with "key": null; the page must say "no key"
const realFetch = window.fetch;
window.fetch = async (url, options) => {
  if (String(url).startsWith("/v1/key?")) {
    const record = {path: "quiet.ogg", key: null, no_key: true, confidence: 0.01, duration: 29.6,
                    probabilities: {}, local: [{start: 0, end: 20, key: null, confidence: 0.0}], segments: []};
    return new Response(JSON.stringify(record), {status: 200, headers: {"content-type": "application/json"}});
  }
  return realFetch(url, options);
};
"""


def test_a_record_without_a_key_shows_no_key(browser, server_url):
    browser.get(server_url + "/")
    WebDriverWait(browser, 30).until(lambda d: "key model" in d.find_element(By.ID, "server").text)
    browser.execute_script(NO_KEY_FETCH)
    browser.execute_script(DROP_SCRIPT, base64.b64encode(EXAMPLE.read_bytes()).decode(), "quiet.ogg", "#drop")
    card = WebDriverWait(browser, 120).until(
        lambda d: d.find_element(By.CSS_SELECTOR, '.card[data-file="quiet.ogg"][data-state="done"]'))
    key = card.find_element(By.CSS_SELECTOR, ".key")
    assert key.text == "no key" and key.get_attribute("data-key") == "none"
    assert "nokey" in key.get_attribute("class")
    assert card.find_element(By.CSS_SELECTOR, ".tempo").text.endswith("BPM")  # beats still shown
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe
