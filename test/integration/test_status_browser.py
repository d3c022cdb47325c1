"""The admin status page in a real browser: headless Chromium (Debian's chromium) loads it
from a running pilotfish with three clusters (healthy, one endpoint failing its check,
empty), over the DevTools protocol. The test saves a 1280x800 screenshot as
build/status-page.png (the README points there)."""

import os

import pytest

from harness import BUILD, cluster_status, wait_for
from statuspage import (
    CHROMIUM_BIN,
    CSP_VIOLATION,
    VIEWPORT,
    Browser,
    parse_page,
    png_size,
    three_cluster_config,
    wait_check_failed,
)
from test_status_page import MARKUP_NAME, markup_service_config

SCREENSHOT = os.path.join(BUILD, "status-page.png")

# What the page shows of each cluster and endpoint, read from the live DOM.
DOM_STATE = """(() => [...document.querySelectorAll('details.cluster')].map(d => ({
  name: d.dataset.name,
  classes: [...d.classList],
  open: d.open,
  hidden: d.hidden,
  source: d.querySelector('.src').textContent,
  requests: +d.querySelector('b.requests').textContent,
  healthy: +d.querySelector('.healthy-count').textContent,
  total: +d.querySelector('.endpoint-count').textContent,
  endpoints: [...d.querySelectorAll('tr.ep')].map(tr => ({
    address: tr.dataset.address,
    classes: [...tr.classList],
    weight: +tr.querySelector('td.weight').textContent,
    requests: +tr.querySelector('td.requests').textContent,
    reason: tr.querySelector('td.reason').textContent,
    ewma: tr.querySelector('td.ewma').textContent,
  })),
})))()"""


@pytest.fixture
def browser(tmp_path):
    assert os.path.exists(CHROMIUM_BIN), "chromium missing: install the Debian package (make deps)"
    b = Browser(str(tmp_path)).start()
    yield b
    b.stop()


def assert_matches_clusters_json(pf, state):
    doc = {c["name"]: c for c in pf.admin_json("/clusters")["clusters"]}
    assert {c["name"] for c in state} == set(doc)
    for c in state:
        want = doc[c["name"]]
        assert c["source"] == want["source"]
        assert c["total"] == len(want["endpoints"])
        assert c["healthy"] == sum(e["healthy"] for e in want["endpoints"])
        assert c["requests"] == sum(e["requests_total"] for e in want["endpoints"])
        eps = {e["address"]: e for e in want["endpoints"]}
        assert {e["address"] for e in c["endpoints"]} == set(eps)
        for e in c["endpoints"]:
            assert e["weight"] == eps[e["address"]]["weight"]
            assert e["requests"] == eps[e["address"]]["requests_total"]


def three_clusters(start_backend, start_pilotfish):
    backend = start_backend("b1")
    cfg, dead = three_cluster_config(backend)
    pf = start_pilotfish(cfg)
    wait_check_failed(pf, dead)
    for i in range(6):
        assert pf.get(f"/pay/{i}").status == 200
    for i in range(4):
        assert pf.get(f"/page/{i}").status == 200
    assert pf.get("/empty/x").status == 503
    return pf, backend, dead


def test_status_page_in_chromium_shows_the_clusters_health_and_numbers(
    start_backend, start_pilotfish, browser
):
    pf, backend, dead = three_clusters(start_backend, start_pilotfish)
    url = f"http://127.0.0.1:{pf.admin_port}/"
    browser.navigate(url)
    state = browser.evaluate(DOM_STATE)
    assert [c["name"] for c in state] == ["empty", "payments", "web"]  # unhealthy first
    by_name = {c["name"]: c for c in state}
    assert "down" in by_name["empty"]["classes"] and by_name["empty"]["open"]
    assert "degraded" in by_name["payments"]["classes"] and by_name["payments"]["open"]
    assert "healthy" in by_name["web"]["classes"] and not by_name["web"]["open"]
    eps = {e["address"]: e for e in by_name["payments"]["endpoints"]}
    assert "check-failed" in eps[dead]["classes"]
    assert "connect refused" in eps[dead]["reason"]
    assert "healthy" in eps[backend.address]["classes"]
    assert eps[backend.address]["ewma"].endswith(" ms")  # least_response_time measured it
    assert by_name["web"]["requests"] == 4 and by_name["payments"]["requests"] == 6
    assert_matches_clusters_json(pf, state)

    # The script is allowed by the CSP and runs: it shows the filter and refreshes the page.
    assert browser.evaluate("document.getElementById('filter').hidden") is False
    for i in range(3):
        assert pf.get(f"/page/more/{i}").status == 200
    wait_for(lambda: browser.evaluate(DOM_STATE)[2]["requests"] == 7, 30,
             "the page to refresh itself with the new request count", interval=0.2)
    assert browser.evaluate("document.getElementById('refreshed').textContent").startswith("updated")
    assert_matches_clusters_json(pf, browser.evaluate(DOM_STATE))
    # After a refresh the page has request rates too: the screenshot for the README.
    browser.screenshot(SCREENSHOT)
    assert png_size(SCREENSHOT) == VIEWPORT

    # The filter hides what does not match and keeps working across a refresh.
    browser.evaluate("(() => { const f = document.getElementById('filter');"
                     " f.value = 'pay'; f.dispatchEvent(new Event('input')); })()")
    visible = [c["name"] for c in browser.evaluate(DOM_STATE) if not c["hidden"]]
    assert visible == ["payments"]
    assert browser.evaluate("document.getElementById('shown').textContent") == "1 shown"

    browser.settle()
    assert browser.errors() == [], browser.console


def test_status_page_refresh_pauses_while_the_tab_is_hidden(start_backend, start_pilotfish, browser):
    pf, _, _ = three_clusters(start_backend, start_pilotfish)
    browser.navigate(f"http://127.0.0.1:{pf.admin_port}/")
    fetches = "performance.getEntriesByType('resource').filter(e => e.initiatorType === 'fetch').length"
    wait_for(lambda: browser.evaluate(fetches) >= 1, 30, "the first refresh", interval=0.2)
    # Headless tabs are always visible: tell the page it is hidden the way the browser would.
    browser.evaluate("(() => { Object.defineProperty(document, 'hidden', {configurable: true,"
                     " get: () => true}); document.dispatchEvent(new Event('visibilitychange'));"
                     " })()")
    assert "paused" in browser.evaluate("document.getElementById('refreshed').textContent")
    before = browser.evaluate(fetches)
    # Proving that nothing happens needs a window: longer than the 5 s refresh interval.
    browser.settle(6.5)
    assert browser.evaluate(fetches) == before
    browser.evaluate("(() => { Object.defineProperty(document, 'hidden', {configurable: true,"
                     " get: () => false}); document.dispatchEvent(new Event('visibilitychange'));"
                     " })()")
    wait_for(lambda: browser.evaluate(fetches) > before, 10, "a refresh on becoming visible",
             interval=0.1)
    browser.settle()
    assert browser.errors() == [], browser.console


def test_status_page_is_complete_without_javascript(start_backend, start_pilotfish, tmp_path):
    pf, backend, dead = three_clusters(start_backend, start_pilotfish)
    nojs = Browser(str(tmp_path), tag="chromium-nojs", scripts=False).start()
    try:
        nojs.navigate(f"http://127.0.0.1:{pf.admin_port}/")
        dom = nojs.outer_html()
    finally:
        nojs.stop()
    page = parse_page(dom)
    shown = {d.attrs["data-name"]: d for d in page.root.iter("details", "cluster")}
    assert list(shown) == ["empty", "payments", "web"]
    doc = {c["name"]: c for c in pf.admin_json("/clusters")["clusters"]}
    for name, d in shown.items():
        rows = {tr.attrs["data-address"]: tr for tr in d.iter("tr", "ep")}
        assert set(rows) == {e["address"] for e in doc[name]["endpoints"]}
        for e in doc[name]["endpoints"]:
            assert int(rows[e["address"]].find("td", "requests").text()) == e["requests_total"]
    rows = {tr.attrs["data-address"]: tr for tr in shown["payments"].iter("tr", "ep")}
    assert "check-failed" in rows[dead].classes and "healthy" in rows[backend.address].classes
    assert "main" in page.root.find("table").text()  # the listeners
    # The script did not run: the filter stays hidden and the footer says how to update.
    (box,) = [e for e in page.root.iter("input") if e.attrs.get("id") == "filter"]
    assert "hidden" in box.attrs
    assert "reload to update" in dom


def test_a_service_named_with_markup_cannot_inject_in_the_browser(
    k8s, start_backend, start_pilotfish, browser
):
    pf = start_pilotfish(markup_service_config(k8s, start_backend))
    name = f"{MARKUP_NAME}.default:80"
    wait_for(lambda: cluster_status(pf, name), 10, "the markup-named Service's cluster")
    browser.navigate(f"http://127.0.0.1:{pf.admin_port}/")
    assert browser.evaluate("document.images.length") == 0
    assert browser.evaluate("document.scripts.length") == 1
    names = browser.evaluate("[...document.querySelectorAll('details.cluster')]"
                             ".map(d => d.dataset.name)")
    assert name in names
    shown = browser.evaluate("[...document.querySelectorAll('details.cluster .cname')]"
                             ".map(e => e.textContent)")
    assert name in shown  # shown as text, exactly as named
    browser.settle()
    assert browser.errors() == [], browser.console
    assert not [t for _, t in browser.console if CSP_VIOLATION.search(t)]
