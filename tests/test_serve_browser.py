"""The search page of `t1 serve` in a real headless browser (Debian's chromium, driven by
selenium through /usr/bin/chromedriver): the key opens the page, a query streams its reasoning
and shows the same ranked hits as the API, and document text is shown as text, never as HTML."""

import json
import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

CHROMEDRIVER = os.environ.get("T1_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

if not (CHROMIUM and os.path.exists(CHROMEDRIVER)):
    pytest.skip("no headless browser installed (apt-get install chromium chromium-driver; .ci/run does)",
                allow_module_level=True)
pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from t1.cli import main  # noqa: E402
from t1.index import Index  # noqa: E402
from t1.serve.app import ServeSettings, create_app  # noqa: E402
from t1.serve.engine import Engine  # noqa: E402

KEY = "browser-key"
CORPUS = [
    {"_id": "d1", "title": "Leaves", "text": "cell protein gene plant"},
    {"_id": "d2", "title": "Rivers", "text": "river water rock climate"},
    {"_id": "d3", "title": "<b>bold</b><img src=x onerror=\"document.title='pwned'\">", "text": "prime <i>integer</i>"},
    {"_id": "d4", "title": "Sun", "text": "solar energy carbon plant"},
    {"_id": "d5", "title": "", "text": "virus vaccine animal cell"},
]
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,1000"]


class ThreadServer:
    """uvicorn on a free loopback port in a background thread."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.time() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture(scope="module")
def server(tiny_model, tiny_model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(folder / "idx"),
                 "--device", "cpu"]) == 0
    engine = Engine(tiny_model, Index.open(folder / "idx", model=tiny_model))
    with ThreadServer(create_app(engine, ServeSettings(api_key=KEY, max_new_tokens=24))) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="t1-chromium-")
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_search_page_streams_reasoning_and_ranks_like_the_api(server, browser, tmp_path):
    browser.get(server.url + "/")
    assert "API key" in browser.find_element(By.TAG_NAME, "body").text  # 401 without the key

    browser.get(server.url + f"/?key={KEY}")  # sets the cookie and redirects to /
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: "documents" in d.find_element(By.ID, "info").text)
    assert browser.current_url == server.url + "/"
    assert "5 documents" in browser.find_element(By.ID, "info").text

    browser.find_element(By.ID, "q").send_keys("prime integer proof")
    browser.find_element(By.ID, "k").clear()
    browser.find_element(By.ID, "k").send_keys("5")  # every document, the one with markup included
    browser.execute_script(  # count each change of the reasoning text: it grows piece by piece
        "window.pieces = 0; new MutationObserver((r) => { window.pieces += r.length; })"
        ".observe(document.getElementById('reasoning'), {childList: true, characterData: true, subtree: true});")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("done", "error"))
    assert browser.find_element(By.ID, "status").get_attribute("data-state") == "done", \
        browser.find_element(By.ID, "status").text

    api = httpx.post(server.url + "/search", json={"query": "prime integer proof", "k": 5},
                     headers={"X-API-Key": KEY}, timeout=60).json()["results"][0]
    hits = browser.find_elements(By.CSS_SELECTOR, "#results li.hit")
    assert [h.get_attribute("data-id") for h in hits] == [h["id"] for h in api["hits"]]
    assert browser.find_element(By.ID, "reasoning").get_attribute("textContent") == api["reasoning"] != ""
    assert browser.execute_script("return window.pieces;") >= 10  # streamed: many pieces, not one answer
    first = hits[0].find_element(By.CLASS_NAME, "score").text
    assert first == f"{api['hits'][0]['score']:.4f}"

    # Titles and snippets are text: markup in a document is shown, never run.
    titles = [h.find_element(By.CLASS_NAME, "title").text for h in hits]
    evil = next(h for h in hits if h.get_attribute("data-id") == "d3")
    assert "<b>bold</b>" in evil.find_element(By.CLASS_NAME, "title").text
    assert "<i>integer</i>" in evil.find_element(By.CLASS_NAME, "snippet").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#results b, #results img, #results i")
    assert browser.title == "T1 search"
    assert all(titles)  # an untitled document shows its id
    assert browser.save_screenshot(str(os.environ.get("T1_SCREENSHOT", tmp_path / "page.png")))


def test_search_page_shows_a_bad_request(server, browser):
    browser.get(server.url + f"/?key={KEY}")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: "documents" in d.find_element(By.ID, "info").text)
    browser.execute_script("document.getElementById('q').value = '   ';")  # passes `required`, not the server
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "error")
    assert browser.find_element(By.ID, "status").text == "query is empty"
