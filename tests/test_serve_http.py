"""`ncf serve` as a person runs it: a real server process on 127.0.0.1, hostile requests,
concurrency, a headless Chromium driving the page, and a clean stop on SIGTERM / Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi", reason="fastapi is not installed (pip install -e '.[test]')")
pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install -e '.[test]')")

from serving import small_run  # noqa: E402

START = "import sys; from ncf.cli import main; sys.exit(main())"


class Server:
    """An `ncf serve` process on a free port of 127.0.0.1."""

    def __init__(self, run: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", START, "serve", str(run), "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("ncf serve: http://") or not line:
                break
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"no URL printed: {line!r} {self.proc.stderr.read()!r}")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        self.started_line = line

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None,
                chunks: Iterator[bytes] | None = None) -> tuple[int, Any]:
        """One request over a fresh connection; ``chunks``: a chunked body, sent until the
        server answers. Returns ``(status, parsed JSON or text)``."""
        head = {"Host": f"127.0.0.1:{self.port}", "Connection": "close", **(headers or {})}
        if body is not None and "Content-Length" not in head:
            head["Content-Length"] = str(len(body))
        if chunks is not None:
            head["Transfer-Encoding"] = "chunked"
        text = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(text.encode() + b"\r\n" + (body or b""))
            for chunk in chunks or ():
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered: stop sending
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                except OSError:
                    break
            data = b""
            while True:
                try:
                    part = sock.recv(65536)
                except OSError:
                    break
                if not part:
                    break
                data += part
        head_text, _, payload = data.partition(b"\r\n\r\n")
        status = int(head_text.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head_text.lower():
            payload = _dechunk(payload)
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"the server did not stop: {err}") from None
        return self.proc.returncode, err


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, data = out + rest[:n], rest[n + 2 :]
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_run(tmp_path_factory)


@pytest.fixture(scope="module")
def server(run: Path) -> Iterator[Server]:
    s = Server(run)
    yield s
    if s.proc.poll() is None:
        s.stop()


def test_the_server_prints_its_url_and_answers(server: Server, run: Path) -> None:
    assert "models gmf, mlp, neumf, itempop" in server.started_line
    status, body = server.request("GET", "/api/health")
    assert status == 200 and body["status"] == "ok"


def test_hostile_requests_get_clear_answers_and_no_500(server: Server, run: Path) -> None:
    from ncf.report import load_model

    rec = load_model(run, "gmf")
    user, item = int(rec.user_raw[0]), int(rec.item_raw[0])
    js = {"Content-Type": "application/json"}
    huge = b"{\"items\": [" + b"1," * 5_000_000 + b"1]}"  # 10 MB
    cases: list[tuple[str, str, bytes | None, dict[str, str], int]] = [
        ("GET", f"/api/users/{user}/recommendations?k=0", None, {}, 422),
        ("GET", f"/api/users/{user}/recommendations?k=-1", None, {}, 422),
        ("GET", f"/api/users/{user}/recommendations?k=999999999999999999999", None, {}, 422),
        ("GET", f"/api/users/{user}/recommendations?k=1e3", None, {}, 422),
        ("GET", f"/api/users/{user}/recommendations?model=..%2F..%2Fetc", None, {}, 422),
        ("GET", "/api/users/..%2F..%2Fetc%2Fpasswd/recommendations", None, {}, 404),
        ("GET", "/api/users/%2e%2e/history", None, {}, 404),
        ("GET", f"/api/users/{quote('🙂')}/history", None, {}, 404),
        ("GET", "/api/users/" + "9" * 60 + "/recommendations", None, {}, 404),
        ("GET", "/api/users/" + "9" * 5000 + "/recommendations", None, {}, 422),
        ("GET", "/api/items/-5/similar", None, {}, 404),
        ("GET", "/api/items/1.5/similar", None, {}, 404),
        ("GET", f"/api/items/{item}/similar?k=100000", None, {}, 422),
        ("GET", "/api/items/%00/similar", None, {}, 404),
        ("GET", "/api/search?q=", None, {}, 422),
        ("GET", "/api/search?q=" + "a" * 500, None, {}, 422),
        ("GET", f"/api/search?q={quote('Ämélie ßtraße 東京 🙂')}", None, {}, 200),
        ("GET", "/api/search?q=%ff%fe", None, {}, 200),
        ("POST", "/api/recommendations", b"not json", js, 422),
        ("POST", "/api/recommendations", b"{\"items\": [1,", js, 422),
        ("POST", "/api/recommendations", b"{\"items\": \"1\"}", js, 422),
        ("POST", "/api/recommendations", b"{\"items\": [1e400]}", js, 422),
        ("POST", "/api/recommendations", json.dumps({"items": [item], "k": -2}).encode(), js, 422),
        ("POST", "/api/recommendations", json.dumps({"items": ["../../etc/passwd"]}).encode(),
         js, 404),
        ("POST", "/api/recommendations", json.dumps({"items": [item, 10**12]}).encode(), js, 404),
        ("POST", "/api/recommendations", json.dumps({"items": [item], "ratings": ["x"]}).encode(),
         js, 422),
        ("POST", "/api/recommendations", b"[]", js, 422),
        ("POST", "/api/recommendations", json.dumps({"items": [item]}).encode(),
         {"Content-Type": "text/plain"}, 422),
        ("POST", "/api/recommendations", huge[:65536], {**js, "Content-Length": str(len(huge))},
         413),
        ("DELETE", "/api/health", None, {}, 405),
        ("GET", "/etc/passwd", None, {}, 404),
    ]
    for method, path, body, headers, want in cases:
        status, answer = server.request(method, path, body, headers)
        assert status == want, (method, path[:80], status, answer)
        assert isinstance(answer, dict), (path[:80], answer)
        assert ("error" in answer) == (want >= 400), (path[:80], answer)
    # a 10 MB chunked body without Content-Length is refused once it passes the limit
    status, answer = server.request("POST", "/api/recommendations", headers=js,
                                    chunks=(huge[i : i + 65536] for i in
                                            range(0, len(huge), 65536)))
    assert status == 413, answer
    # the service still answers, correctly
    status, body = server.request("POST", "/api/recommendations",
                                  json.dumps({"items": [item], "k": 3}).encode(), js)
    assert status == 200 and len(body["items"]) == 3
    assert server.request("GET", "/api/health")[0] == 200


def test_requests_run_concurrently(run: Path) -> None:
    """A slow fold-in does not hold up other requests (fold-ins run in threads, the quick
    answers on the event loop)."""
    import uvicorn

    from ncf.serve.app import create_app
    from ncf.serve.service import Service

    class Slow(Service):
        def recommend_new(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            time.sleep(3.0)
            return super().recommend_new(*args, **kwargs)

    service = Slow(run)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        local = Server.__new__(Server)
        local.port, local.url = port, f"http://127.0.0.1:{port}"
        item = int(service.item_raw[0])
        slow: dict[str, Any] = {}

        def fold() -> None:
            slow["t0"] = time.monotonic()
            slow["status"] = local.request("POST", "/api/recommendations",
                                           json.dumps({"items": [item]}).encode(),
                                           {"Content-Type": "application/json"})[0]
            slow["t1"] = time.monotonic()

        worker = threading.Thread(target=fold)
        worker.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        user = quote(str(service.user_raw[0]))
        for _ in range(5):
            assert local.request("GET", "/api/health")[0] == 200
            assert local.request("GET", "/api/search?q=the")[0] == 200
            assert local.request("GET", f"/api/users/{user}/recommendations")[0] == 200
        fast = time.monotonic() - t0
        worker.join()
        assert slow["status"] == 200 and slow["t1"] - slow["t0"] >= 3.0
        assert fast < 2.0, fast  # answered while the fold-in was still sleeping
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _browser() -> Any:
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium is not installed (pip install -e '.[test]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("the browser test needs Debian's chromium and chromium-driver (.ci/run "
                    "installs them)")
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"ncf-chromium-{os.getpid()}"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1200,1100"):
        options.add_argument(flag)
    return webdriver.Chrome(service=DriverService(driver), options=options), profile


def _count(css: str, n: int) -> Any:
    """A wait condition: exactly ``n`` elements match ``css``."""
    from selenium.webdriver.common.by import By

    return lambda d: len(d.find_elements(By.CSS_SELECTOR, css)) == n


def test_the_page_in_a_real_browser(server: Server, run: Path,
                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    browser, profile = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    shots = tmp_path_factory.mktemp("screenshots")
    wait = WebDriverWait(browser, 30)
    try:
        browser.get(server.url + "/")
        wait.until(lambda d: "users" in d.find_element(By.ID, "run-info").text)
        assert browser.find_element(By.CSS_SELECTOR, "label[for=search]").text == \
            "Search films by title"
        box = browser.find_element(By.ID, "search")
        box.send_keys("the")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#search-results button.add"))
                   >= 3)
        picked = []
        for _ in range(3):  # the list is redrawn after each pick: look the buttons up again
            button = next(b for b in browser.find_elements(By.CSS_SELECTOR,
                                                           "#search-results button.add")
                          if b.is_enabled())
            picked.append(button.find_element(By.XPATH, "..").get_attribute("data-item"))
            button.click()
            wait.until(_count("#picks li", len(picked)))
        browser.find_element(By.ID, "recommend").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recs li")) == 10)
        recs = browser.find_elements(By.CSS_SELECTOR, "#recs li")
        rec_ids = [li.get_attribute("data-item") for li in recs]
        assert len(set(rec_ids)) == 10 and not set(rec_ids) & set(picked), (rec_ids, picked)
        picked_titles = [li.text.rsplit("\n", 1)[0].rstrip(" ×") for li in
                         browser.find_elements(By.CSS_SELECTOR, "#picks li")]
        for li in recs:
            why = li.find_element(By.CSS_SELECTOR, ".why").text
            assert why.startswith("because you liked ")
            assert any(t.strip() and t.strip() in why for t in picked_titles), (why, picked_titles)
        # a click on a recommended film opens its similar films
        first = recs[0].find_element(By.CSS_SELECTOR, "button.film")
        first.click()
        wait.until(ec.visibility_of_element_located((By.ID, "similar-panel")))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#similar li")) == 10)
        similar = [li.get_attribute("data-item") for li in
                   browser.find_elements(By.CSS_SELECTOR, "#similar li")]
        assert recs[0].get_attribute("data-item") not in similar
        # an existing user's history beside their recommendations
        from ncf.report import load_model

        rec = load_model(run, "neumf")
        user = str(rec.user_raw[0])
        browser.find_element(By.ID, "user-id").send_keys(user)
        browser.find_element(By.ID, "user-go").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#user-recs li")) == 10)
        seen = {str(rec.item_raw[i]) for i in rec.seen_items(0)}
        history = {li.get_attribute("data-item") for li in
                   browser.find_elements(By.CSS_SELECTOR, "#history li")}
        assert history and history <= seen
        user_recs = {li.get_attribute("data-item") for li in
                     browser.find_elements(By.CSS_SELECTOR, "#user-recs li")}
        assert not user_recs & seen
        assert browser.find_element(By.ID, "status").text == ""
        browser.set_window_size(1200, 1700)
        browser.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.3)
        browser.save_screenshot(str(shots / "page.png"))
        browser.set_window_size(400, 1400)  # a phone-width screen: one column
        browser.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.3)
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, width
        browser.save_screenshot(str(shots / "page-phone.png"))
        print(f"screenshots: {shots}")
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert (shots / "page.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("sig, workers", [(signal.SIGTERM, 1), (signal.SIGINT, 1),
                                          (signal.SIGTERM, 2), (signal.SIGINT, 2)])
def test_sigterm_and_ctrl_c_stop_the_server_cleanly(run: Path, sig: int, workers: int) -> None:
    s = Server(run, "--workers", str(workers))
    for _ in range(2 * workers):  # a connection each: both processes answer
        assert s.request("GET", "/api/health")[0] == 200
    code, err = s.stop(sig)
    assert code == 0, err
    assert "Traceback" not in err and "stopped" in err


def _workers_of(pid: int) -> list[int]:
    """The worker processes of an `ncf serve --workers N` (not multiprocessing's helpers)."""
    children = (Path(f"/proc/{pid}/task") / str(pid) / "children").read_text().split()
    return [int(c) for c in children
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _wait_for_workers(pid: int, n: int = 2, seconds: float = 60) -> list[int]:
    deadline = time.monotonic() + seconds
    while len(workers := _workers_of(pid)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return workers


def _connections_held(pid: int, port: int) -> int:
    """How many connections to ``port`` (of 127.0.0.1) the process ``pid`` has accepted."""
    accepted = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and f[3] == "01":  # local port, ESTABLISHED
            accepted.add(f"socket:[{f[9]}]")
    return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir() if os.readlink(fd) in accepted)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads "
                    "connections on Linux; elsewhere the workers share one socket")
def test_connections_are_spread_over_the_workers(run: Path) -> None:
    """Each worker has its own share of the connections, even those made while it was busy
    or still loading: with one shared socket, whichever worker woke first took them all."""
    s = Server(run, "--workers", "2")
    conns: list[socket.socket] = []
    try:
        workers = _wait_for_workers(s.proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGSTOP)  # one worker cannot accept for a while
        try:
            for _ in range(40):
                c = socket.create_connection(("127.0.0.1", s.port), timeout=60)
                c.sendall(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n"
                          .encode())
                conns.append(c)
            time.sleep(0.5)
        finally:
            os.kill(workers[0], signal.SIGCONT)
        for c in conns:  # every request is answered, those of the paused worker too
            assert c.recv(65536).startswith(b"HTTP/1.1 200")
        held = {w: _connections_held(w, s.port) for w in workers}
        # each holds its share of the 40 (the chance of fewer than 8 is ~1e-4)
        assert min(held.values()) >= 8 and sum(held.values()) == 40, held
    finally:
        for c in conns:
            c.close()
        code, err = s.stop()
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_that_dies_is_replaced(run: Path) -> None:
    s = Server(run, "--workers", "2")
    try:
        workers = _wait_for_workers(s.proc.pid)
        deadline = time.monotonic() + 60
        os.kill(workers[0], signal.SIGKILL)
        while time.monotonic() < deadline:
            now = _workers_of(s.proc.pid)
            if len(now) == 2 and workers[0] not in now:
                break
            time.sleep(0.05)
        assert len(now) == 2 and workers[0] not in now and workers[1] in now
        for _ in range(10):  # whichever worker a connection reaches answers
            assert s.request("GET", "/api/health")[0] == 200
    finally:
        code, err = s.stop()
    assert code == 0 and f"worker pid {workers[0]} died" in err, err


def test_the_log_holds_no_traceback_after_hostile_requests(server: Server) -> None:
    """Runs last in this module: stops the shared server and reads its log."""
    code, err = server.stop()
    assert code == 0 and "Traceback" not in err and " 500" not in err, err


def test_a_bad_run_directory_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", START, "serve", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no such run directory" in proc.stderr
