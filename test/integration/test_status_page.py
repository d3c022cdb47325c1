"""The admin status page (GET /) as served, and the Prometheus exposition as promtool sees it.
The same page in a real browser is test_status_browser.py."""

import os
import re
import shutil
import subprocess

from harness import (
    PILOTFISH_BIN,
    LOCALHOST,
    closed_port,
    cluster_status,
    k8s_service,
    k8s_slice,
    listener,
    make_config,
    route,
    wait_for,
)
from statuspage import csp_hash, parse_page, three_cluster_config, wait_check_failed


def get_page(pf, path="/"):
    resp = pf.admin("GET", path)
    assert resp.status == 200, resp
    return resp, resp.body.decode()


def clusters_in_page(page):
    return {d.attrs["data-name"]: d for d in page.root.iter("details", "cluster")}


def test_status_page_has_a_strict_csp_that_allows_exactly_its_inline_code(proxy):
    resp, text = get_page(proxy.pf)
    assert resp.header("Content-Type") == "text/html; charset=utf-8"
    assert resp.header("Cache-Control") == "no-store"
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert re.fullmatch(r"render;dur=\d+\.\d{3}", resp.header("Server-Timing"))
    csp = {d.split()[0]: d.split()[1:] for d in resp.header("Content-Security-Policy").split("; ")}
    assert csp["default-src"] == ["'none'"]
    page = parse_page(text)
    assert len(page.scripts) == 1 and len(page.styles) == 1
    assert csp["script-src"] == [csp_hash(page.scripts[0])]
    assert csp["style-src"] == [csp_hash(page.styles[0])]
    assert "unsafe" not in resp.header("Content-Security-Policy")
    # self-contained: nothing is loaded from anywhere but the page itself
    for e in page.root.iter():
        assert "style" not in e.attrs, f"inline style attribute on <{e.tag}>"
        for attr in ("src", "href"):
            value = e.attrs.get(attr)
            if value is not None:
                assert value.startswith(("/", "data:")), f"<{e.tag} {attr}={value}>"
    links = {a.attrs["href"] for a in page.root.iter("a")}
    assert {"/clusters", "/config", "/stats/prometheus"} <= links
    for path in ("/clusters", "/config", "/stats/prometheus"):
        assert proxy.pf.admin("GET", path).status == 200
    # a query string (a cache buster) is the same page; other paths are still 404
    assert proxy.pf.admin("GET", "/?t=1").status == 200
    assert proxy.pf.admin("GET", "/index.html").status == 404
    assert proxy.pf.admin("POST", "/").status == 405


def test_status_page_shows_every_cluster_and_endpoint_with_the_numbers_of_clusters_json(proxy):
    for i in range(7):
        assert proxy.pf.get(f"/v1/{i}", host="api.local").status == 200
    for i in range(3):
        assert proxy.pf.get(f"/page/{i}").status == 200
    _, text = get_page(proxy.pf)
    doc = proxy.pf.admin_json("/clusters")
    page = parse_page(text)
    shown = clusters_in_page(page)
    assert set(shown) == {c["name"] for c in doc["clusters"]} == {"web", "api"}
    for c in doc["clusters"]:
        d = shown[c["name"]]
        assert "healthy" in d.classes and "open" not in d.attrs  # healthy: collapsed
        assert d.find("span", "src").text() == c["source"] == "static"
        rows = {tr.attrs["data-address"]: tr for tr in d.iter("tr", "ep")}
        assert set(rows) == {e["address"] for e in c["endpoints"]}
        for e in c["endpoints"]:
            tr = rows[e["address"]]
            assert "healthy" in tr.classes
            assert int(tr.find("td", "weight").text()) == e["weight"]
            assert int(tr.find("td", "requests").text()) == e["requests_total"]
            assert int(tr.find("td", "active").text()) == e["active_requests"]
        total = sum(e["requests_total"] for e in c["endpoints"])
        assert int(d.find("b", "requests").text()) == total
    assert int(shown["api"].find("b", "requests").text()) == 7
    assert int(shown["web"].find("b", "requests").text()) == 3
    # the listener row: its request count and latency percentiles from the histogram
    (row,) = [tr for tr in page.root.iter("tr", "listener") if "main" in tr.text()]
    assert " ms" in row.text() or " s" in row.text()
    assert re.search(r"\b10\b", row.text())
    assert "0.1.0" in page.root.find("span", "ver").text()
    assert page.root.find("div", "cards") is not None and "ready" in text


def test_status_page_shows_request_rates_once_it_has_an_earlier_sample(proxy):
    def rates():
        page = parse_page(get_page(proxy.pf)[1])
        (row,) = [tr for tr in page.root.iter("tr", "listener") if "main" in tr.text()]
        api = clusters_in_page(page)["api"].find("span", "rate").text()
        return row.find("td", "rate").text(), api

    assert rates() == ("\u2013", "")  # the first render has nothing to compare with

    def counted():
        for i in range(5):
            assert proxy.pf.get(f"/v1/{i}", host="api.local").status == 200
        listener_rate, api_rate = rates()
        api_rate = api_rate.split()[-1] if api_rate else ""  # "\u00b7 3.4/s"
        return listener_rate.endswith("/s") and float(api_rate[:-2]) > 0 and (listener_rate, api_rate)

    listener_rate, api_rate = wait_for(counted, 15, "the page to show request rates", interval=0.3)
    assert float(listener_rate[:-2]) >= float(api_rate[:-2]) > 0


def test_status_page_puts_failing_and_empty_clusters_first_and_says_why(start_backend, start_pilotfish):
    backend = start_backend("b1")
    cfg, dead = three_cluster_config(backend)
    pf = start_pilotfish(cfg)
    wait_check_failed(pf, dead)
    _, text = get_page(pf)
    page = parse_page(text)
    order = [d.attrs["data-name"] for d in page.root.iter("details", "cluster")]
    assert order == ["empty", "payments", "web"]
    shown = clusters_in_page(page)
    assert "down" in shown["empty"].classes and "open" in shown["empty"].attrs
    assert "No endpoints" in shown["empty"].text()
    assert "degraded" in shown["payments"].classes and "open" in shown["payments"].attrs
    assert "healthy" in shown["web"].classes and "open" not in shown["web"].attrs
    rows = {tr.attrs["data-address"]: tr for tr in shown["payments"].iter("tr", "ep")}
    assert "check-failed" in rows[dead].classes
    assert "connect refused" in rows[dead].find("td", "reason").text()
    assert "healthy" in rows[backend.address].classes


def test_status_page_says_why_it_is_not_ready(start_pilotfish, tmp_path):
    # A DNS cluster whose name never resolves keeps pilotfish unready; the page says which.
    cfg = make_config(
        [listener("main", [route("ghost", prefix="/")])],
        [{"name": "ghost", "dns": {"name": "ghost.invalid", "port": 80}}],
        dns={"resolvers": [f"{LOCALHOST}:{closed_port()}"], "timeout": "200ms", "tries": 1},
    )
    pf = start_pilotfish(cfg, wait_ready=False)
    wait_for(lambda: pf.admin("GET", "/").status == 200, 10, "the status page to answer")
    _, text = get_page(pf)
    page = parse_page(text)
    why = page.root.find("ul", "why")
    assert why is not None and "ghost" in why.text(), text
    assert "not ready" in text
    (ghost,) = clusters_in_page(page).values()
    assert ghost.find("span", "src").text() == "dns"
    assert "ghost.invalid" in ghost.text()


MARKUP_NAME = "<img src=x onerror=alert(1)>"


def markup_service_config(k8s, start_backend):
    """A Kubernetes Service whose name is markup, auto-discovered, next to a static cluster."""
    b1 = start_backend("b1")
    k8s.apply(
        k8s_service(MARKUP_NAME, [("http", 80)]),
        k8s_slice("x-1", MARKUP_NAME, b1.port, ["127.0.0.1"]),
    )
    fallback = start_backend("fallback")
    return make_config(
        [listener("main", [route("fallback", host="fallback.local")])],
        [{"name": "fallback", "endpoints": [fallback.address]}],
        kubernetes=k8s.config(auto_discover={"namespaces": ["default"]}),
    )


def test_a_service_named_with_markup_cannot_inject(k8s, start_backend, start_pilotfish):
    pf = start_pilotfish(markup_service_config(k8s, start_backend))
    name = f"{MARKUP_NAME}.default:80"
    wait_for(lambda: cluster_status(pf, name), 10, "the markup-named Service's cluster")
    _, text = get_page(pf)
    assert MARKUP_NAME not in text
    assert "&lt;img src=x onerror=alert(1)&gt;.default:80" in text
    page = parse_page(text)
    assert not list(page.root.iter("img")), "an <img> element came from a Service name"
    assert len(page.scripts) == 1
    shown = clusters_in_page(page)
    assert name in shown  # the attribute decodes back to the real name
    assert shown[name].find("span", "src").text() == "kubernetes"
    assert "watching" in shown[name].text() or "listing" in shown[name].text()


# ---- /stats/prometheus ---------------------------------------------------------------------


def process_start_time(pid):
    """Seconds since the epoch, from the boot time and the process's start in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def test_prometheus_exposition_passes_promtool_with_process_metrics_and_build_info(proxy, tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: install the Debian package prometheus (make deps)"
    for i in range(5):
        assert proxy.pf.get(f"/v1/{i}", host="api.local").status == 200
    assert proxy.pf.get("/").status == 200
    resp = proxy.pf.admin("GET", "/stats/prometheus")
    assert resp.status == 200
    r = subprocess.run([promtool, "check", "metrics"], input=resp.body, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    assert r.returncode == 0, r.stdout.decode()
    samples = {}
    for line in resp.body.decode().splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    version = subprocess.run([PILOTFISH_BIN, "--version"], stdout=subprocess.PIPE,
                             timeout=30).stdout.decode().split()[-1]
    assert samples[f'pilotfish_build_info{{version="{version}"}}'] == 1
    assert samples["process_cpu_seconds_total"] > 0
    assert samples["process_resident_memory_bytes"] > 1 << 20
    with open(f"/proc/{proxy.pf.pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024
    assert abs(samples["process_resident_memory_bytes"] - rss) < max(rss // 2, 8 << 20)
    open_fds = len(os.listdir(f"/proc/{proxy.pf.pid}/fd"))
    assert abs(samples["process_open_fds"] - open_fds) <= 8
    assert samples["process_max_fds"] >= samples["process_open_fds"]
    assert abs(samples["process_start_time_seconds"] - process_start_time(proxy.pf.pid)) < 0.1
    text = resp.body.decode()
    assert "# TYPE process_cpu_seconds_total counter\n" in text


def test_a_cluster_slot_reused_by_another_service_starts_a_fresh_rate(k8s, start_backend,
                                                                       start_pilotfish):
    """The page's rates compare totals with a sample taken earlier, by cluster slot. A Service
    that goes frees its slot and the next one takes it: its first rate must not be computed
    against the old cluster's total (here it would show (40 - 30) / elapsed)."""
    import time

    b = start_backend("b")
    k8s.apply(k8s_service("old", [("http", 80)]), k8s_slice("old-1", "old", b.port, ["127.0.0.1"]))
    pf = start_pilotfish(make_config(
        [listener("main", [])], [],
        kubernetes=k8s.config(auto_discover={"namespaces": ["default"]})))
    for _ in range(30):
        assert pf.get("/", host="old").status == 200
    page = parse_page(get_page(pf)[1])  # the sample rates are computed against
    sampled = time.monotonic()
    assert clusters_in_page(page)["old.default:80"].find("b", "requests").text() == "30"

    def old_freed():
        return not any(labels.get("cluster") == "old.default:80" for _, labels, _ in pf.metrics())

    k8s.apply(("delete", "services", "default", "old"),
              ("delete", "endpointslices", "default", "old-1"))
    wait_for(old_freed, 20, "the old cluster's slot to be freed")
    k8s.apply(k8s_service("new", [("http", 80)]), k8s_slice("new-1", "new", b.port, ["127.0.0.1"]))
    wait_for(lambda: pf.get("/", host="new").status == 200, 20, "the new Service")
    for _ in range(39):
        assert pf.get("/", host="new").status == 200
    # rates need a sample at least a second old: let that second pass, nothing else to wait for
    time.sleep(max(0.0, sampled + 1.2 - time.monotonic()))
    page = parse_page(get_page(pf)[1])
    new = clusters_in_page(page)["new.default:80"]
    assert int(new.find("b", "requests").text()) >= 40  # more than the old one had
    assert new.find("span", "rate").text() == "", new.find("span", "rate").text()


def route_list_rows(pf):
    """{namespace: [List, Watch, Routes]} from the page's HTTPRoute lists table."""
    page = parse_page(get_page(pf)[1])
    rows = {}
    for tr in page.root.iter("tr", "route-list"):
        cells = [td.text() for td in tr.iter("td")]
        rows[cells[0]] = cells[1:4]
    return page, rows


def test_status_page_shows_each_namespaces_httproute_list_state(k8s, start_backend,
                                                                start_pilotfish):
    """Listed, waiting (its list refused, /ready held and the page's not-ready list naming
    it) and CRD missing (the kind deleted from the API server), per namespace."""
    b = start_backend("web")
    k8s.apply(k8s_service("web", [("http", 80)]), k8s_slice("web-1", "web", b.port, ["127.0.0.1"]))
    k8s.control("/forbid", {"pairs": [["httproutes", "shop"]]})
    cfg = make_config([listener("main", [route("none", host="none.local")])],
                      [{"name": "none", "endpoints": []}],
                      kubernetes=k8s.config(auto_discover={"namespaces": ["default", "shop"]},
                                            http_routes=True, http_routes_recheck="1s"))
    pf = start_pilotfish(cfg, wait_ready=False)
    wait_for(lambda: route_list_rows(pf)[1].get("default", [None])[0] == "listed", 10,
             "the default namespace's list")
    page, rows = route_list_rows(pf)
    assert rows["shop"][0] == "waiting" and rows["default"][2] == "0", rows
    why = page.root.find("ul", "why")
    assert why is not None and 'kubernetes: list httproutes in "shop"' in why.text(), why.text()

    k8s.control("/forbid", {"pairs": []})
    wait_for(lambda: route_list_rows(pf)[1]["shop"][0] == "listed", 10, "shop listed")
    pf.wait_ready(10)
    assert parse_page(get_page(pf)[1]).root.find("ul", "why") is None

    k8s.control("/kinds", {"delete": ["httproutes"]})
    wait_for(lambda: {r[0] for r in route_list_rows(pf)[1].values()} == {"CRD missing"}, 15,
             "both lists to find the kind gone")
    assert {r[1] for r in route_list_rows(pf)[1].values()} == {"not installed"}
