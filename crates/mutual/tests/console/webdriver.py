"""A minimal W3C WebDriver client (stdlib only) for the console's browser test.

Why not selenium: nothing to download at test time; chromedriver speaks plain JSON over HTTP and
the test needs a dozen commands. Used by console_browser.py.
"""
import base64
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class WebDriverError(Exception):
    pass


class Driver:
    """chromedriver + one headless Chromium session with HOME=home (its NSS db)."""

    def __init__(self, home, log_path):
        self.port = free_port()
        env = dict(os.environ, HOME=home)
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            ["chromedriver", f"--port={self.port}"], env=env,
            stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        # Wait for the driver to answer (an event, not a timed assertion: bounded retries).
        for _ in range(200):
            try:
                self._req("GET", "/status")
                break
            except (urllib.error.URLError, ConnectionError, WebDriverError):
                time.sleep(0.05)
        else:
            raise WebDriverError("chromedriver did not start")
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": False,
            "goog:chromeOptions": {"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1200,800",
                "--no-first-run", "--disable-extensions",
                f"--user-data-dir={home}/chrome-profile",
            ]},
        }}}
        self.sid = self._req("POST", "/session", caps)["sessionId"]

    def _req(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        r = urllib.request.Request(self.base + path, data=data, method=method,
                                   headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(r, timeout=60) as resp:
                v = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            v = json.loads(e.read() or b"{}")
            raise WebDriverError(json.dumps(v.get("value", v))[:800]) from None
        return v.get("value", v)

    def _s(self, method, path, body=None):
        return self._req(method, f"/session/{self.sid}{path}", body)

    def get(self, url):
        self._s("POST", "/url", {"url": url})

    def source(self):
        return self._s("GET", "/source")

    def title(self):
        return self._s("GET", "/title")

    def url(self):
        return self._s("GET", "/url")

    def find(self, css):
        el = self._s("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(el.values()))

    def find_all(self, css):
        els = self._s("POST", "/elements", {"using": "css selector", "value": css})
        return [next(iter(e.values())) for e in els]

    def text(self, css):
        return self._s("GET", f"/element/{self.find(css)}/text")

    def type(self, css, value):
        el = self.find(css)
        self._s("POST", f"/element/{el}/clear", {})
        self._s("POST", f"/element/{el}/value", {"text": value})

    def click(self, css):
        self._s("POST", f"/element/{self.find(css)}/click", {})

    def submit_with(self, action):
        """Runs `action` (a click or a script that submits a form) and waits for the new page:
        the old document carries a marker the new one lacks (an event, polled, bounded)."""
        self.execute("window.__mutual_old_page = true;")
        action()
        for _ in range(400):
            try:
                done = self.execute(
                    "return window.__mutual_old_page === undefined && "
                    "document.readyState === 'complete';")
            except WebDriverError:
                done = False
            if done:
                return
            time.sleep(0.025)
        raise WebDriverError("the page did not change after the submit")

    def click_and_wait(self, css):
        self.submit_with(lambda: self.click(css))

    def select(self, css, option_text):
        for o in self.find_all(css + " option"):
            if self._s("GET", f"/element/{o}/text") == option_text:
                self._s("POST", f"/element/{o}/click", {})
                return
        raise WebDriverError(f"no option {option_text!r} in {css}")

    def execute(self, script, args=None):
        return self._s("POST", "/execute/sync", {"script": script, "args": args or []})

    def screenshot(self, path):
        png = base64.b64decode(self._s("GET", "/screenshot"))
        with open(path, "wb") as f:
            f.write(png)

    def quit(self):
        try:
            self._s("DELETE", "")
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
