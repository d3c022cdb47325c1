"""Helpers for the admin status page tests: an HTML reader for the page as served, the
three-cluster setup the page tests share, and headless Chromium driven over the DevTools
protocol (python3-websockets) on 127.0.0.1.

Chromium is started as its own process with a fresh profile directory, reaches only
127.0.0.1, and is stopped by PID. Every wait is a bounded poll."""

import asyncio
import base64
import hashlib
import html.parser
import json
import os
import re
import shutil
import signal
import subprocess

from harness import (
    LOCALHOST,
    HarnessError,
    _tail,
    closed_port,
    cluster,
    listener,
    make_config,
    route,
    wait_for,
)

CHROMIUM_BIN = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_TIMEOUT = 60.0  # seconds for one browser step; generous for a loaded 2-core machine
VIEWPORT = (1280, 800)


# ---- the page as served ----------------------------------------------------------------


class Element:
    def __init__(self, tag, attrs, parent):
        self.tag = tag
        self.attrs = dict(attrs)
        self.parent = parent
        self.children = []
        self.text_parts = []

    @property
    def classes(self):
        return set(self.attrs.get("class", "").split())

    def text(self):
        return "".join(self.text_parts + [c.text() for c in self.children])

    def iter(self, tag=None, cls=None):
        for c in self.children:
            if (tag is None or c.tag == tag) and (cls is None or cls in c.classes):
                yield c
            yield from c.iter(tag, cls)

    def find(self, tag=None, cls=None):
        return next(self.iter(tag, cls), None)


class PageParser(html.parser.HTMLParser):
    """The served HTML as a tree of Elements (void elements closed at once)."""

    VOID = {"meta", "link", "input", "br", "img", "hr", "rect", "source", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {}, None)
        self.cur = self.root
        self.scripts = []  # text of every <script>
        self.styles = []

    def handle_starttag(self, tag, attrs):
        e = Element(tag, attrs, self.cur)
        self.cur.children.append(e)
        if tag not in self.VOID:
            self.cur = e

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Element(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        e = self.cur
        while e is not self.root and e.tag != tag:
            e = e.parent
        if e is not self.root:
            self.cur = e.parent

    def handle_data(self, data):
        self.cur.text_parts.append(data)
        if self.cur.tag == "script":
            self.scripts.append(data)
        elif self.cur.tag == "style":
            self.styles.append(data)


def parse_page(text):
    p = PageParser()
    p.feed(text)
    p.close()
    return p


def csp_hash(text):
    """The CSP source that allows an inline element whose contents are exactly text."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# ---- the three clusters: healthy, one endpoint failing its check, empty ----------------------


def three_cluster_config(backend):
    """'web' (one healthy endpoint), 'payments' (backend plus a closed port whose HTTP check
    fails, in two zones, balanced by least response time) and 'empty' (no endpoint)."""
    dead = f"{LOCALHOST}:{closed_port()}"
    main = listener(
        "main",
        [route("payments", prefix="/pay/"), route("empty", prefix="/empty/"), route("web", prefix="/")],
    )
    check = {"type": "http", "path": "/", "interval": "200ms", "timeout": "1s"}
    return make_config(
        [main],
        [
            cluster("web", [backend.address]),
            cluster(
                "payments",
                [{"address": backend.address, "zone": "zone-a", "weight": 3},
                 {"address": dead, "zone": "zone-b"}],
                health_check=check,
                lb_policy="least_response_time",
            ),
            cluster("empty", []),
        ],
    ), dead


def wait_check_failed(pf, dead):
    """Until /clusters says the closed port failed its check."""

    def failed():
        for c in pf.admin_json("/clusters")["clusters"]:
            for e in c["endpoints"]:
                if e["address"] == dead and e["health"].startswith("unhealthy: check failed"):
                    return True
        return False

    wait_for(failed, 10, f"{dead} to fail its health check")


# ---- headless Chromium -------------------------------------------------------------------


def chromium_args(profile, *extra):
    return [
        CHROMIUM_BIN,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
        *extra,
    ]


def stop_group(proc, grace=5):
    """Stops a process started with start_new_session=True and the helpers it forked (the
    browser's renderer and utility processes): SIGTERM to its group, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; give the rest of the group a moment, bounded
            wait_for(lambda: not _group_alive(proc.pid), grace, "chromium's helpers to exit")
            break
        except HarnessError:
            continue


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


class Browser:
    """Chromium with the DevTools protocol on a port it picks; one page, driven with CDP."""

    def __init__(self, workdir, tag="chromium", scripts=True):
        self.extra = [] if scripts else ["--blink-settings=scriptEnabled=false"]
        self.loads = 0
        self.frame_url = self.loaded_url = None
        self.profile = os.path.join(workdir, f"{tag}-profile")
        self.err_path = os.path.join(workdir, f"{tag}.err")
        self.proc = None
        self.ws_url = None
        self.console = []  # (level, text) from Runtime.consoleAPICalled and Log.entryAdded
        self.exceptions = []  # Runtime.exceptionThrown details
        self._ws = None
        self._next_id = 0
        self._loop = asyncio.new_event_loop()

    def start(self):
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                chromium_args(self.profile, *self.extra, "--remote-debugging-port=0",
                              "--remote-debugging-address=127.0.0.1", "about:blank"),
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

        def listening():
            if self.proc.poll() is not None:
                raise HarnessError(f"chromium exited {self.proc.returncode}: {_tail(self.err_path)}")
            # Chromium writes the port it chose to DevToolsActivePort in the profile.
            try:
                with open(os.path.join(self.profile, "DevToolsActivePort")) as f:
                    lines = f.read().split()
            except FileNotFoundError:
                return None
            return int(lines[0]) if len(lines) >= 2 else None

        port = wait_for(listening, BROWSER_TIMEOUT, "chromium's DevTools port", interval=0.1)

        def page_target():
            from harness import http_request

            resp = http_request(port, "GET", "/json/list", timeout=5.0)
            pages = [t for t in json.loads(resp.body) if t.get("type") == "page"]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        self.ws_url = wait_for(page_target, BROWSER_TIMEOUT, "chromium's page target", interval=0.1)
        self._run(self._connect())
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                  deviceScaleFactor=1, mobile=False)
        return self

    # -- protocol
    def _run(self, coro):
        return self._loop.run_until_complete(asyncio.wait_for(coro, BROWSER_TIMEOUT))

    async def _connect(self):
        import websockets

        self._ws = await websockets.connect(self.ws_url, max_size=64 << 20, ping_interval=None)

    def _note_event(self, msg):
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append((params["type"], text))
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.console.append((entry["level"], f"{entry.get('source')}: {entry['text']}"))
        elif method == "Runtime.exceptionThrown":
            self.exceptions.append(params["exceptionDetails"])
        elif method == "Page.frameNavigated" and not params["frame"].get("parentId"):
            self.frame_url = params["frame"]["url"]
        elif method == "Page.loadEventFired":
            self.loads += 1
            self.loaded_url = self.frame_url
        return method

    async def _call(self, method, params):
        self._next_id += 1
        my_id = self._next_id
        await self._ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await self._ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise HarnessError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._note_event(msg)

    def call(self, method, **params):
        return self._run(self._call(method, params))

    async def _drain(self, seconds):
        try:
            while True:
                self._note_event(json.loads(await asyncio.wait_for(self._ws.recv(), seconds)))
        except asyncio.TimeoutError:
            pass

    # -- what the tests use
    async def _navigate(self, url):
        # The load event of this navigation, not a late one of about:blank before it.
        before = self.loads
        await self._call("Page.navigate", {"url": url})
        while self.loads == before or self.loaded_url != url:
            self._note_event(json.loads(await self._ws.recv()))

    def navigate(self, url):
        """Loads url and waits (bounded) for its load event."""
        self._run(self._navigate(url))

    def outer_html(self):
        """The document as the browser built it (the DOM domain works without JavaScript)."""
        root = self.call("DOM.getDocument", depth=0)["root"]["nodeId"]
        return self.call("DOM.getOuterHTML", nodeId=root)["outerHTML"]

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise HarnessError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def settle(self, seconds=0.3):
        """Reads the events that arrived meanwhile (console messages, exceptions)."""
        self._run(self._drain(seconds))

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def errors(self):
        """Console errors and warnings, CSP violations among them, and uncaught exceptions."""
        bad = [f"{lvl}: {text}" for lvl, text in self.console if lvl in ("error", "warning", "assert")]
        bad += [f"exception: {e.get('text')} {e.get('exception', {}).get('description', '')}"
                for e in self.exceptions]
        return bad

    def stop(self):
        if self._ws is not None:
            try:
                self._run(self._ws.close())
            except Exception:  # the browser may already be gone; it is stopped next anyway
                pass
        if self.proc is not None:
            stop_group(self.proc)
        self._loop.close()


def png_size(path):
    """(width, height) from a PNG's IHDR."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise HarnessError(f"{path} is not a PNG")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


CSP_VIOLATION = re.compile(r"Content Security Policy|Refused to (execute|apply|load|connect)", re.I)
