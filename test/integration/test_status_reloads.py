"""The status page shows the config version and the recent reloads, applied and refused."""

import copy
import json
import os
import signal

from harness import metric_sum, standard_config, wait_for
from statuspage import parse_page


def write_config(pf, config):
    tmp = pf.config_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config, f)
    os.replace(tmp, pf.config_path)


def reload(pf, config, result):
    before = metric_sum(pf.metrics(), "pilotfish_config_reloads_total", result=result)
    write_config(pf, config)
    os.kill(pf.pid, signal.SIGHUP)
    wait_for(lambda: metric_sum(pf.metrics(), "pilotfish_config_reloads_total", result=result) > before,
             10, f"a reload {result}")


def page(pf):
    resp = pf.admin("GET", "/")
    assert resp.status == 200
    return parse_page(resp.body.decode())


def reload_rows(p):
    table = next(t for t in p.root.iter("table") if t.attrs.get("id") == "reloads")
    return [(r.attrs.get("class"), [td.text().strip() for td in r.iter("td")])
            for r in table.iter("tr") if r.attrs.get("class") in ("applied", "refused")]


def config_card(p):
    card = next(c for c in p.root.iter("div", "card") if c.find("div", "k").text() == "Config")
    return card.find("div", "v"), card.find("div", "sub").text()


def test_status_page_shows_the_config_version_and_recent_reloads(backends, start_pilotfish):
    cfg = standard_config(backends.web1, backends.web2, backends.api)
    pf = start_pilotfish(cfg)
    p = page(pf)
    assert p.root.find("span", "count") is not None
    (cls, cells), = reload_rows(p)
    assert cls == "applied" and cells[0] == "1" and cells[2] == "start", cells
    value, sub = config_card(p)
    assert value.text() == "v1" and sub == "from start"

    changed = copy.deepcopy(cfg)
    changed["clusters"][1]["connect_timeout"] = "2s"
    reload(pf, changed, "applied")
    p = page(pf)
    rows = reload_rows(p)
    assert [r[1][0] for r in rows] == ["2", "1"], rows
    assert rows[0][1][2] == "signal" and "connect_timeout" in rows[0][1][3], rows
    assert config_card(p)[0].text() == "v2"

    # a refused reload: listed first, with its first error shown as text, and the card warns
    broken = copy.deepcopy(changed)
    broken["listeners"][0]["routes"][0]["cluster"] = "<img src=x>"
    reload(pf, broken, "rejected")
    p = page(pf)
    rows = reload_rows(p)
    assert [r[0] for r in rows] == ["refused", "applied", "applied"], rows
    refused = rows[0][1]
    assert refused[0] == "refused" and refused[2] == "signal"
    assert "version 2 stays" in refused[3] and '"<img src=x>"' in refused[3], refused
    assert not list(p.root.iter("img"))
    value, sub = config_card(p)
    assert value.text() == "v2" and "warn" in value.classes and sub == "the latest reload was refused"

    # the next applied reload is newer than the refusal: it goes on top, the card calms down
    reload(pf, cfg, "applied")
    p = page(pf)
    rows = reload_rows(p)
    assert [r[0] for r in rows] == ["applied", "refused", "applied", "applied"], rows
    assert rows[0][1][0] == "3"
    value, sub = config_card(p)
    assert value.text() == "v3" and "warn" not in value.classes and sub == "from signal"
