"""The HTTP face of a real daemon (a separate process) serving the real SmolLM2: the official
openai client (whole and streamed answers, a repeated long prompt reusing its KV cube, four
clients at once, recall and errors), curl for malformed requests, and the dashboard in a real
headless Chromium (Debian's chromium + chromedriver, driven by selenium)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.cli_helpers import memnet
from tests.swarm_helpers import Swarm

pytestmark = pytest.mark.slow

DOC = ("memnet is a peer-to-peer daemon for MemCubes: signed, content-addressed units of LLM memory. "
       "A node stores cubes in LMDB, announces them in a Kademlia DHT and fetches them from peers. ") * 12
MESSAGES = [{"role": "system", "content": "Answer from this document.\n\n" + DOC},
            {"role": "user", "content": "What does a node store its cubes in? One short sentence."}]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, smollm2_models_dir):
    mp = pytest.MonkeyPatch()
    mp.setenv("MEMNET_MODELS", str(smollm2_models_dir))
    swarm = Swarm(tmp_path_factory.mktemp("http"))
    home = swarm.home("api")
    memnet(home, "model", "pin", "smollm2")
    memnet(home, "remember", "The office wifi password is tangerine-42.")
    node = swarm.start("api", "--http-listen", "127.0.0.1:0")
    try:
        deadline = time.monotonic() + 120
        while json.loads(node.cli("status", "--json").out)["http"]["model"]["state"] != "ready":
            assert time.monotonic() < deadline, node.log_text()
            time.sleep(0.2)
        urls = json.loads(node.cli("dashboard", "--json").out)
        yield node, urls
    finally:
        swarm.close()
        mp.undo()


def client(urls):
    import openai

    return openai.OpenAI(base_url=urls["api"], api_key="unused-on-loopback", max_retries=0, timeout=120)


def test_openai_client_whole_streamed_and_reused(daemon):
    node, urls = daemon
    api = client(urls)
    assert [m.id for m in api.models.list()] == ["smollm2"]
    first = api.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=24, temperature=0)
    second = api.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=24, temperature=0)
    prompt = first.usage.prompt_tokens
    assert prompt > 256 and first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == prompt - 1
    ext1, ext2 = first.model_extra["memnet"], second.model_extra["memnet"]
    assert ext2["source"] == "local" and ext2["reused_tokens"] == prompt - 1 and ext2["cube"]
    assert ext2["ttft_ms"] < ext1["ttft_ms"] / 2, (ext1, ext2)       # the second answer starts sooner
    assert second.choices[0].message.content == first.choices[0].message.content
    assert "lmdb" in first.choices[0].message.content.lower()

    text, finish, usage, ext = "", None, None, None
    stream = api.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=24, temperature=0,
                                         stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
            ext = (chunk.model_extra or {}).get("memnet") or ext
        if chunk.usage:
            usage = chunk.usage
    assert text == first.choices[0].message.content and finish == first.choices[0].finish_reason
    assert usage.prompt_tokens_details.cached_tokens == prompt - 1 and ext["source"] == "local"


def test_four_clients_at_once_and_recall(daemon):
    node, urls = daemon
    api = client(urls)

    def ask(i):
        r = api.completions.create(model="smollm2", prompt=f"{i} + {i} =", max_tokens=6, temperature=0)
        return r.choices[0].text, r.usage.completion_tokens

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ask, range(8)))
    assert len(results) == 8 and all(tokens >= 1 for _, tokens in results)
    answer = api.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the password of the office wifi?"}],
        max_tokens=16, temperature=0, extra_body={"memnet": {"recall": 2}})
    assert "tangerine" in answer.choices[0].message.content.lower()
    assert len(answer.model_extra["memnet"]["memories"]) == 1
    logged = json.loads(node.cli("audit", "--last", "1", "--json").out)[-1]
    assert [c["role"] for c in logged["cubes"]] == ["plaintext"] and logged["kind"] == "http"


def curl(url, *args):
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", url, *args], capture_output=True, text=True, timeout=120)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(body)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_error_cases_and_the_daemon_goes_on(daemon):
    node, urls = daemon
    chat = urls["api"] + "/chat/completions"
    missing = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    json_header = ("-H", "Content-Type: application/json")
    cases = [
        (("-d", "{not json", *json_header), 400, None),
        (("-d", '{"model": "smollm2", "messages": []}', *json_header), 400, None),
        (("-d", json.dumps({"model": "nope", "messages": MESSAGES}), *json_header), 404, "model_not_found"),
        (("-d", json.dumps({"model": f"smollm2+{missing}", "messages": MESSAGES}), *json_header), 404, "not_found"),
        (("-d", json.dumps({"model": "smollm2", "messages": MESSAGES, "max_tokens": 9000}), *json_header), 400,
         "context_length_exceeded"),
        (("-d", json.dumps({"model": "smollm2", "messages": MESSAGES}),), 400, None),   # no JSON content type
        (("-d", json.dumps({"model": "smollm2", "messages": MESSAGES}), *json_header, "-H", "Origin: http://evil.example"),
         403, None),
        (("-H", "Host: rebind.example"), 421, None),
    ]
    for args, status, code in cases:
        got, body = curl(chat, *args)
        assert got == status and body["error"]["code"] == code and body["error"]["message"], (args, body)
    assert curl(urls["api"].replace("/v1", "/api/overview"))[0] == 401
    status = json.loads(node.cli("status", "--json").out)
    assert status["http"]["model"]["state"] == "ready" and node.alive()


def test_idle_and_oversized_connections_do_not_stop_the_api(daemon):
    """200 connections that send nothing and one request head over 16 KiB: the API still answers
    at once, and the silent connections are closed after the keep-alive timeout (5 s)."""
    node, urls = daemon
    host, port = urls["url"].split("//")[1].split("/")[0].split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(200)]
    try:
        big = socket.create_connection((host, int(port)), timeout=5)
        big.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        answer = big.recv(4096)
        assert answer == b"" or answer.split(b" ")[1] in (b"400", b"431"), answer[:100]
        big.close()
        start = time.monotonic()
        assert [m.id for m in client(urls).models.list()] == ["smollm2"]
        assert time.monotonic() - start < 2
        idle[0].settimeout(15)
        assert idle[0].recv(1) == b""                     # closed by the server after its idle timeout
    finally:
        for s in idle:
            s.close()
    assert node.alive()


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1700"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(DRIVER))


def _fresh(action, tries=20):
    """Run action again when the page redrew the element it held (the dashboard redraws a part
    when its data changed)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(tries - 1):
        try:
            return action()
        except StaleElementReferenceException:
            time.sleep(0.1)
    return action()


def _pinned(node, cube):
    return cube in {c["cid"] for c in json.loads(node.cli("ls", "--pinned", "--json").out)}


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                    reason="Debian's chromium and chromium-driver are not installed (scripts/test.sh installs them as root)")
def test_dashboard_in_headless_chromium(daemon, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    node, urls = daemon
    client(urls).chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=4, temperature=0)
    browser = _browser()
    try:
        browser.get(urls["url"])
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_element(By.ID, "live").text == "live")
        assert "#token" not in browser.current_url                        # the token left the address bar
        assert browser.find_element(By.ID, "identity").text == node.peer_id
        cids = _fresh(lambda: [r.get_attribute("data-cid")
                               for r in browser.find_elements(By.CSS_SELECTOR, "#cubes tbody tr.cube")])
        listed = {c["cid"] for c in json.loads(node.cli("ls", "--json").out)}
        assert set(cids) == listed and len(cids) >= 2                      # the note and the kept prompt
        cube = _fresh(lambda: next(r.get_attribute("data-cid") for r in browser.find_elements(
            By.CSS_SELECTOR, "#cubes tbody tr.cube") if "prompt-cache" in r.text))
        assert not _pinned(node, cube)
        pin = f'tr[data-cid="{cube}"] button.pin'
        _fresh(lambda: browser.find_element(By.CSS_SELECTOR, pin).click())
        wait.until(lambda b: _pinned(node, cube))                          # the click changed the store
        wait.until(lambda b: _fresh(lambda: b.find_element(By.CSS_SELECTOR, f'tr[data-cid="{cube}"] td.pinned').text)
                   == "yes")
        _fresh(lambda: browser.find_element(By.CSS_SELECTOR, pin).click())
        wait.until(lambda b: not _pinned(node, cube))
        _fresh(lambda: browser.find_element(By.CSS_SELECTOR, f'tr[data-cid="{cube}"] td').click())
        wait.until(lambda b: b.find_element(By.ID, "d-cid").text == cube)
        assert '"kind": "activation"' in browser.find_element(By.ID, "d-manifest").text
        wait.until(lambda b: "prompt tokens reused" in b.find_element(By.ID, "reuse-summary").text)
        assert browser.find_elements(By.CSS_SELECTOR, "#reuse-plot rect.bar")
        assert browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        browser.save_screenshot(str(tmp_path / "dashboard.png"))
    finally:
        browser.quit()


def test_the_api_reuses_a_peers_cube(tmp_path, monkeypatch, tiny_model_dir):
    """B's API request finds the prefix A built in the swarm, fetches it (through B's own fetch
    service, from inside the daemon) and says where it came from."""
    import urllib.request

    monkeypatch.setenv("MEMNET_MODELS", str(tmp_path / "models"))
    swarm = Swarm(tmp_path)
    try:
        a = swarm.start("a")
        home_b = swarm.home("b")
        memnet(home_b, "model", "pin", str(tiny_model_dir))
        b = swarm.start("b", "--http-listen", "127.0.0.1:0", bootstrap=[a])
        a.cli("model", "pin", str(tiny_model_dir))
        b.cli("trust", "add", a.peer_id, "--for", "pin,inject")
        text = " ".join(f"memory {i} is content addressed and shared" for i in range(22))
        built = json.loads(a.cli("kv", "build", text, "--dtype", "float32", "--json").out)
        url = json.loads(b.cli("dashboard", "--json").out)["api"] + "/completions"
        body = json.dumps({"model": "tiny-llama", "prompt": text + " and so on", "max_tokens": 3, "temperature": 0,
                           "memnet": {"fetch": "always"}}).encode()
        deadline = time.monotonic() + 30
        while True:   # A's announcement reaches the DHT asynchronously
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            ext = json.loads(urllib.request.urlopen(request, timeout=60).read())["memnet"]
            if ext["source"] == "peer" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert ext["source"] == "peer" and ext["cube"] == built["cube"] and ext["reused_tokens"] == built["tokens"]
        assert ext["peer"] == a.peer_id and ext["decision"].startswith("fetch")
    finally:
        swarm.close()
