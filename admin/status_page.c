/* The admin status page (GET /): one self-contained HTML document rendered here, complete
 * without JavaScript. It reads the same state as /clusters and /stats/prometheus (the
 * proxy's counters, endpoint sets, health verdicts, DNS and Kubernetes status) on the main
 * thread and writes it into a growing evbuffer. A small inline script refreshes it every
 * few seconds while the tab is visible; the Content-Security-Policy allows that script and
 * the inline style by their hashes and nothing else, so text from config or discovery can
 * never run: it is escaped by admin_html_escape and would be inert even if it were not. */
#include "admin/admin_int.h"
#include "core/time.h"

#include <math.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Reloads the page lists (the config API keeps more: GET /config/history). */
#define RELOADS_SHOWN 5

/* Clusters whose not-ready reason names them; the rest are counted. */
#define NOT_READY_NAMES_MAX 5

static const char page_style[] =
    ":root{--bg:#f4f6f8;--card:#fff;--ink:#1d2733;--mute:#5f6b7a;--line:#dde3ea;"
    "--ok:#1e8e4e;--warn:#c77c02;--bad:#c62828;--info:#2962ad}"
    "*{box-sizing:border-box}"
    "body{margin:0;background:var(--bg);color:var(--ink);"
    "font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif}"
    "header{background:#16202c;color:#e8edf3;padding:12px 24px;display:flex;align-items:center;"
    "gap:16px;flex-wrap:wrap}"
    "header h1{font-size:18px;margin:0;font-weight:600;letter-spacing:.02em}"
    "header .ver{color:#9fb0c3}header nav{margin-left:auto;display:flex;gap:14px}"
    "header a{color:#9cc7ff;text-decoration:none}header a:hover{text-decoration:underline}"
    "main{max-width:1240px;margin:0 auto;padding:16px 24px 32px}"
    "h2{font-size:15px;margin:22px 0 8px;display:flex;align-items:center;gap:10px}"
    "h2 .count{color:var(--mute);font-weight:400}"
    ".cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:10px}"
    ".card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:10px 12px}"
    ".card .k{color:var(--mute);font-size:12px;text-transform:uppercase;letter-spacing:.04em}"
    ".card .v{font-size:20px;font-weight:600;margin-top:2px}"
    ".card .sub{color:var(--mute);font-size:12px}"
    ".v.ok{color:var(--ok)}.v.bad{color:var(--bad)}.v.warn{color:var(--warn)}"
    ".why{margin:8px 0 0;padding:8px 12px;background:#fdecea;border:1px solid #f5c2c0;"
    "border-radius:6px;color:#7f1d1d}.why li{margin-left:16px}"
    "table{width:100%;border-collapse:collapse;background:var(--card)}"
    "th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);"
    "vertical-align:middle}"
    "th{font-size:12px;color:var(--mute);font-weight:600;background:#f8fafc}"
    "td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".box{border:1px solid var(--line);border-radius:6px;overflow:hidden}"
    "code,.mono{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:12.5px}"
    "#filter{margin-left:auto;padding:5px 8px;border:1px solid var(--line);border-radius:4px;"
    "width:260px;font:inherit}#shown{color:var(--mute);font-weight:400;font-size:12px}"
    "details.cluster{background:var(--card);border:1px solid var(--line);border-left:4px solid "
    "var(--ok);border-radius:4px;margin:6px 0}"
    "details.cluster.degraded{border-left-color:var(--warn)}"
    "details.cluster.down{border-left-color:var(--bad)}"
    "summary{display:grid;grid-template-columns:minmax(200px,1.5fr) 90px 130px 1.2fr 90px 170px;"
    "gap:10px;align-items:center;padding:7px 10px;cursor:pointer;list-style:none}"
    "summary::-webkit-details-marker{display:none}"
    "summary .cname{font-weight:600;overflow-wrap:anywhere}"
    "summary .cname::before{content:'\\25B8';color:var(--mute);display:inline-block;width:14px}"
    "details[open] summary .cname::before{content:'\\25BE'}"
    ".src{font-size:11px;border-radius:10px;padding:1px 8px;background:#e8eef7;color:var(--info);"
    "justify-self:start}"
    ".eps b{font-variant-numeric:tabular-nums}.st{color:var(--mute);font-size:12px}"
    ".st b{color:var(--ink);font-weight:600;font-variant-numeric:tabular-nums}"
    ".rate{color:var(--mute);font-variant-numeric:tabular-nums}"
    ".down .eps b{color:var(--bad)}.degraded .eps b{color:var(--warn)}"
    ".cbody{padding:0 10px 10px}"
    ".disc{display:flex;flex-wrap:wrap;gap:4px 22px;margin:0 0 8px;font-size:12.5px}"
    ".disc span{color:var(--mute)}.disc .err{color:var(--bad)}"
    ".empty{color:var(--bad);margin:4px 0 0}"
    ".verdict{font-weight:600;white-space:nowrap}"
    ".healthy .verdict{color:var(--ok)}.unchecked .verdict{color:var(--mute)}"
    ".not-ready .verdict,.check-failed .verdict{color:var(--bad)}"
    ".ejected .verdict{color:var(--warn)}.tag{font-size:11px;border-radius:3px;padding:0 5px;"
    "margin-left:6px;background:#fff3d6;color:#7a4d00}"
    ".mix{display:flex;align-items:center;gap:6px;font-size:12px;color:var(--mute)}"
    ".bar{display:block;width:90px;height:8px;border-radius:2px;background:#e5e9ee}"
    ".c1xx,.c3xx{fill:#8aa4c8}.c2xx{fill:var(--ok)}.c4xx{fill:var(--warn)}.c5xx{fill:var(--bad)}"
    ".cother{fill:#777}"
    "footer{color:var(--mute);font-size:12px;margin-top:24px}"
    "#refreshed.err{color:var(--bad)}"
    "tr.refused td{color:var(--bad)}";

static const char page_script[] =
    "(function(){'use strict';"
    "var INTERVAL=5000,LIVE=['live','cluster-count','clusters','rendered'],timer=null,userOpen={};"
    "var filter=document.getElementById('filter'),stamp=document.getElementById('refreshed');"
    "function apply(){var q=filter.value.trim().toLowerCase(),n=0;"
    "document.querySelectorAll('details.cluster').forEach(function(d){"
    "var hit=!q||d.dataset.search.toLowerCase().indexOf(q)>=0;d.hidden=!hit;if(hit)n++;});"
    "document.getElementById('shown').textContent=q?n+' shown':'';}"
    "document.addEventListener('click',function(e){var s=e.target.closest('summary');"
    "if(s&&s.parentElement.matches('details.cluster'))"
    "userOpen[s.parentElement.dataset.name]=!s.parentElement.open;});"
    "function schedule(){if(!timer&&!document.hidden)timer=setTimeout(refresh,INTERVAL);}"
    "function refresh(){timer=null;if(document.hidden)return;"
    "fetch(location.pathname,{cache:'no-store'}).then(function(r){"
    "if(!r.ok)throw new Error('HTTP '+r.status);return r.text();}).then(function(html){"
    "var doc=new DOMParser().parseFromString(html,'text/html');"
    "var parts=LIVE.map(function(id){return doc.getElementById(id);});"
    "if(parts.some(function(p,i){return !p||!document.getElementById(LIVE[i]);}))"
    "throw new Error('unexpected page');"
    "doc.querySelectorAll('details.cluster').forEach(function(d){"
    "if(Object.prototype.hasOwnProperty.call(userOpen,d.dataset.name))"
    "d.open=userOpen[d.dataset.name];});"
    "LIVE.forEach(function(id,i){"
    "document.getElementById(id).replaceWith(document.adoptNode(parts[i]));});apply();"
    "stamp.textContent='updated '+new Date().toLocaleTimeString();stamp.className='';"
    "}).catch(function(e){stamp.textContent='refresh failed: '+e.message;"
    "stamp.className='err';}).finally(schedule);}"
    "document.addEventListener('visibilitychange',function(){"
    "if(document.hidden){clearTimeout(timer);timer=null;"
    "stamp.textContent='refresh paused while the tab is hidden';}else{refresh();}});"
    "filter.hidden=false;filter.addEventListener('input',apply);"
    "stamp.textContent='refreshes every '+INTERVAL/1000+' s';schedule();})();";

/* ---- Content-Security-Policy ---------------------------------------------------------- */

static char csp[512];
static pthread_once_t csp_once = PTHREAD_ONCE_INIT;

/* "'sha256-<base64>'" of `text`, the CSP source for one inline element's exact contents. */
static void hash_source(const char *text, char *buf, size_t len) {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    unsigned char b64[4 * ((SHA256_DIGEST_LENGTH + 2) / 3) + 1];
    SHA256((const unsigned char *)text, strlen(text), digest);
    EVP_EncodeBlock(b64, digest, SHA256_DIGEST_LENGTH);
    snprintf(buf, len, "'sha256-%s'", b64);
}

static void build_csp(void) {
    char style[64], script[64];
    hash_source(page_style, style, sizeof style);
    hash_source(page_script, script, sizeof script);
    snprintf(csp, sizeof csp,
             "default-src 'none'; style-src %s; script-src %s; connect-src 'self'; "
             "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
             style, script);
}

const char *admin_status_csp(void) {
    pthread_once(&csp_once, build_csp);
    return csp;
}

/* ---- writing ------------------------------------------------------------------------------ */

int admin_html_escape(struct evbuffer *out, const char *text) {
    const char *run = text;
    for (const char *p = text;; p++) {
        const char *ref;
        switch (*p) {
        case '&':
            ref = "&amp;";
            break;
        case '<':
            ref = "&lt;";
            break;
        case '>':
            ref = "&gt;";
            break;
        case '"':
            ref = "&quot;";
            break;
        case '\'':
            ref = "&#39;";
            break;
        case '\0':
            ref = NULL;
            break;
        default:
            continue;
        }
        if (p > run && evbuffer_add(out, run, (size_t)(p - run)) != 0)
            return PF_ENOMEM;
        if (!ref)
            return PF_OK;
        if (evbuffer_add(out, ref, strlen(ref)) != 0)
            return PF_ENOMEM;
        run = p + 1;
    }
}

/* The page being written: the first failure sticks, so callers check once at the end. */
typedef struct page {
    struct evbuffer *out;
    bool failed;
    uint64_t now_wall_us;
} page;

/* Markup and numbers only: text from config or discovery goes through put_text. */
static void put(page *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(page *pg, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (!pg->failed && evbuffer_add_vprintf(pg->out, fmt, ap) < 0)
        pg->failed = true;
    va_end(ap);
}

static void put_text(page *pg, const char *text) {
    if (!pg->failed && admin_html_escape(pg->out, text) != PF_OK)
        pg->failed = true;
}

/* "2024-05-01 12:00:30Z", or "never" for 0. */
static void put_time(page *pg, uint64_t wall_us) {
    char buf[40];
    struct tm tm;
    time_t secs = (time_t)(wall_us / 1000000u);
    if (!wall_us || !gmtime_r(&secs, &tm) || !strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm))
        snprintf(buf, sizeof buf, "never");
    put(pg, "<span class=\"mono\">%s</span>", buf);
}

/* A span of time for people: "850 ms", "42 s", "7 min", "3 h 12 min", "4 d 2 h". */
static void put_span_ms(page *pg, uint64_t ms) {
    uint64_t s = ms / 1000;
    if (ms < 1000)
        put(pg, "%llu ms", (unsigned long long)ms);
    else if (s < 120)
        put(pg, "%llu s", (unsigned long long)s);
    else if (s < 3600)
        put(pg, "%llu min", (unsigned long long)(s / 60));
    else if (s < 86400)
        put(pg, "%llu h %llu min", (unsigned long long)(s / 3600),
            (unsigned long long)(s % 3600 / 60));
    else
        put(pg, "%llu d %llu h", (unsigned long long)(s / 86400),
            (unsigned long long)(s % 86400 / 3600));
}

/* A latency in seconds: "0.42 ms", "12.5 ms", "1.30 s"; "> 10 s" past the last bucket. */
static void put_latency(page *pg, double seconds) {
    if (seconds < 0)
        put(pg, "&ndash;");
    else if (isinf(seconds))
        put(pg, "&gt; %g s", pf_histogram_bounds[PF_HISTOGRAM_BUCKETS - 1]);
    else if (seconds < 0.01)
        put(pg, "%.2f ms", seconds * 1e3);
    else if (seconds < 1)
        put(pg, "%.1f ms", seconds * 1e3);
    else
        put(pg, "%.2f s", seconds);
}

static uint64_t sum_requests(const uint64_t requests[PF_PROXY_CODE_CLASSES]) {
    uint64_t total = 0;
    for (size_t i = 0; i < PF_PROXY_CODE_CLASSES; i++)
        total += requests[i];
    return total;
}

/* Requests by status class: a stacked bar (inline SVG, so no style attribute is needed)
 * and the 5xx share in words. */
static void put_status_mix(page *pg, const uint64_t requests[PF_PROXY_CODE_CLASSES]) {
    uint64_t total = sum_requests(requests);
    put(pg, "<span class=\"mix\">");
    if (!total) {
        put(pg, "no requests yet</span>");
        return;
    }
    put(pg, "<svg class=\"bar\" viewBox=\"0 0 1000 10\" preserveAspectRatio=\"none\" "
            "role=\"img\"><title>");
    for (size_t i = 0; i < PF_PROXY_CODE_CLASSES; i++)
        if (requests[i])
            put(pg, "%s: %llu ", proxy_code_class_name(i), (unsigned long long)requests[i]);
    put(pg, "</title>");
    uint64_t x = 0;
    for (size_t i = 0; i < PF_PROXY_CODE_CLASSES; i++) {
        if (!requests[i])
            continue;
        uint64_t w = requests[i] * 1000 / total;
        put(pg, "<rect class=\"c%s\" x=\"%llu\" width=\"%llu\" height=\"10\"/>",
            proxy_code_class_name(i), (unsigned long long)x, (unsigned long long)(w ? w : 1));
        x += w;
    }
    put(pg, "</svg>%.1f%% 5xx</span>", (double)requests[4] * 100.0 / (double)total);
}

/* ---- request rates ------------------------------------------------------------------------ */

int admin_rate_update(admin_rate_meter *m, const uint64_t *totals, const uint64_t *series,
                      size_t count, uint64_t now_us) {
    if (m->newer.at_us && now_us - m->newer.at_us < ADMIN_RATE_WINDOW_US)
        return PF_OK;
    /* The older sample's buffers become the new newer one: no allocation once sized. */
    admin_rate_sample next = m->older;
    if (next.count < count || !next.totals || !next.series) {
        size_t n = count ? count : 1;
        uint64_t *grown = realloc(next.totals, n * sizeof *grown);
        if (!grown)
            return PF_ENOMEM;
        next.totals = grown;
        grown = realloc(next.series, n * sizeof *grown);
        if (!grown) {
            m->older.totals = next.totals; /* kept, and freed, by the older sample */
            return PF_ENOMEM;
        }
        next.series = grown;
    }
    memcpy(next.totals, totals, count * sizeof *totals);
    memcpy(next.series, series, count * sizeof *series);
    next.count = count;
    next.at_us = now_us;
    m->older = m->newer;
    m->newer = next;
    return PF_OK;
}

/* Whether sample s holds entry i's total of this series, taken at least ADMIN_RATE_MIN_US
 * before now. */
static bool sample_tells(const admin_rate_sample *s, size_t i, uint64_t series, uint64_t now_us) {
    return s->at_us && i < s->count && s->series[i] == series &&
           now_us >= s->at_us + ADMIN_RATE_MIN_US;
}

double admin_rate_of(const admin_rate_meter *m, size_t i, uint64_t total, uint64_t series,
                     uint64_t now_us) {
    const admin_rate_sample *base = sample_tells(&m->older, i, series, now_us)   ? &m->older
                                    : sample_tells(&m->newer, i, series, now_us) ? &m->newer
                                                                                 : NULL;
    if (!base || total < base->totals[i])
        return -1;
    return (double)(total - base->totals[i]) * 1e6 / (double)(now_us - base->at_us);
}

void admin_rate_free(admin_rate_meter *m) {
    free(m->older.totals);
    free(m->newer.totals);
    free(m->older.series);
    free(m->newer.series);
    memset(m, 0, sizeof *m);
}

void admin_status_free(pf_admin *admin) {
    admin_rate_free(&admin->cluster_rates);
    admin_rate_free(&admin->listener_rates);
}

static void put_rate(page *pg, double per_second) {
    if (per_second < 0)
        put(pg, "&ndash;");
    else
        put(pg, per_second < 100 ? "%.1f/s" : "%.0f/s", per_second);
}

/* ---- the page's parts --------------------------------------------------------------------- */

typedef enum { RANK_DOWN, RANK_DEGRADED, RANK_HEALTHY } cluster_rank;
static const char *const rank_class[] = {"down", "degraded", "healthy"};

typedef struct cluster_view {
    size_t index;
    const pf_config_cluster *cfg;
    pf_endpoint_set *set; /* a reference, dropped after rendering; NULL before the first */
    pf_health *health;
    cluster_rank rank;
    pf_proxy_cluster_status st;
    double rate; /* requests per second; -1: not known yet */
    bool retired;
} cluster_view;

static int view_order(const void *a, const void *b) {
    const cluster_view *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return strcmp(x->cfg->name, y->cfg->name);
}

/* A list /ready waits for, in the words /ready and the log use. */
static void put_pending(void *arg, const char *what) {
    page *pg = arg;
    put(pg, "<li>");
    put_text(pg, what);
    put(pg, "</li>");
}

static void put_not_ready(page *pg, const pf_admin *admin, const cluster_view *views,
                          size_t count) {
    put(pg, "<ul class=\"why\" id=\"not-ready\">");
    if (proxy_draining(admin->proxy))
        put(pg, "<li>draining: shutting down, new connections are refused</li>");
    if (admin->k8s && !discovery_k8s_synced(admin->k8s))
        discovery_k8s_foreach_pending(admin->k8s, put_pending, pg);
    size_t waiting = 0;
    for (size_t i = 0; i < count; i++) {
        if (views[i].index >= admin->cfg->cluster_count || views[i].set)
            continue;
        if (waiting++ < NOT_READY_NAMES_MAX) {
            put(pg, "<li>cluster <b>");
            put_text(pg, views[i].cfg->name);
            put(pg, "</b>: no endpoint set published yet (discovery has not answered)</li>");
        }
    }
    if (waiting > NOT_READY_NAMES_MAX)
        put(pg, "<li>and %zu more clusters without their first endpoint set</li>",
            waiting - NOT_READY_NAMES_MAX);
    put(pg, "</ul>");
}

static void put_card(page *pg, const char *key, const char *value_class, const char *value,
                     const char *sub) {
    put(pg, "<div class=\"card\"><div class=\"k\">%s</div><div class=\"v %s\">%s</div>", key,
        value_class, value);
    if (sub)
        put(pg, "<div class=\"sub\">%s</div>", sub);
    put(pg, "</div>");
}

/* The running config's version; amber while the latest reload was refused (the file on disk
 * is not what runs). */
static void put_config_card(page *pg, const pf_admin *admin) {
    const pf_admin_config_api *api = &admin->api;
    if (!api->version || !api->history)
        return;
    json_t *history = api->history(api->ctx);
    json_t *refused = api->last_rejected ? api->last_rejected(api->ctx) : NULL;
    const char *applied_at = json_string_value(json_object_get(json_array_get(history, 0), "time"));
    const char *refused_at = json_string_value(json_object_get(refused, "time"));
    bool latest_refused = refused_at && (!applied_at || strcmp(refused_at, applied_at) >= 0);
    char v[32], sub[96];
    snprintf(v, sizeof v, "v%llu", (unsigned long long)api->version(api->ctx));
    if (latest_refused)
        snprintf(sub, sizeof sub, "the latest reload was refused");
    else {
        const char *source =
            json_string_value(json_object_get(json_array_get(history, 0), "source"));
        snprintf(sub, sizeof sub, "from %s", source ? source : "start");
    }
    put_card(pg, "Config", latest_refused ? "warn" : "", v, sub);
    json_decref(history);
    json_decref(refused);
}

static void put_overview(page *pg, const pf_admin *admin, const cluster_view *views, size_t count,
                         bool ready) {
    size_t down = 0, degraded = 0, eps = 0, healthy_eps = 0;
    long in_flight = 0;
    for (size_t i = 0; i < count; i++) {
        down += views[i].rank == RANK_DOWN;
        degraded += views[i].rank == RANK_DEGRADED;
        eps += views[i].set ? views[i].set->count : 0;
        healthy_eps += views[i].set ? views[i].set->healthy_count : 0;
        in_flight += views[i].st.active_requests;
    }
    char v[64], sub[96];
    put(pg, "<div class=\"cards\">");
    put_card(pg, "Status", ready ? "ok" : "bad", ready ? "ready" : "not ready",
             proxy_draining(admin->proxy) ? "draining" : NULL);
    put(pg, "<div class=\"card\"><div class=\"k\">Uptime</div><div class=\"v\" id=\"uptime\">");
    double start = metrics_process_start_time();
    double now = (double)pg->now_wall_us / 1e6;
    put_span_ms(pg, now > start ? (uint64_t)((now - start) * 1000) : 0);
    put(pg, "</div><div class=\"sub\">since ");
    put_time(pg, (uint64_t)(start * 1e6));
    put(pg, "</div></div>");
    snprintf(v, sizeof v, "%zu", count);
    snprintf(sub, sizeof sub, "%zu down, %zu degraded", down, degraded);
    put_card(pg, "Clusters", down ? "bad" : degraded ? "warn" : "ok", v, sub);
    snprintf(v, sizeof v, "%zu / %zu", healthy_eps, eps);
    put_card(pg, "Healthy endpoints", healthy_eps < eps ? "warn" : "ok", v, NULL);
    snprintf(v, sizeof v, "%ld", in_flight);
    snprintf(sub, sizeof sub, "%ld client connections", proxy_active_connections(admin->proxy));
    put_card(pg, "Requests in flight", "", v, sub);
    put_config_card(pg, admin);
    put(pg, "</div>");
}

/* The config version and the latest reloads, newest first, with the latest refused reload
 * among them by time; only in a process with the config API (cmd/reload.c). */
static void put_reload_row(page *pg, json_t *entry, bool refused) {
    put(pg, "<tr class=\"%s\"><td class=\"num\">", refused ? "refused" : "applied");
    if (refused)
        put(pg, "refused");
    else
        put(pg, "%lld", (long long)json_integer_value(json_object_get(entry, "version")));
    put(pg, "</td><td class=\"mono\">");
    put_text(pg, json_string_value(json_object_get(entry, "time")));
    put(pg, "</td><td>");
    put_text(pg, json_string_value(json_object_get(entry, "source")));
    put(pg, "</td><td>");
    if (refused) {
        put(pg, "%lld refused so far; version %lld stays. ",
            (long long)json_integer_value(json_object_get(entry, "count")),
            (long long)json_integer_value(json_object_get(entry, "version")));
        put_text(pg, json_string_value(json_object_get(entry, "error")));
    } else {
        put_text(pg, json_string_value(json_object_get(entry, "summary")));
    }
    put(pg, "</td></tr>");
}

static void put_reloads(page *pg, const pf_admin *admin) {
    const pf_admin_config_api *api = &admin->api;
    if (!api->version || !api->history)
        return;
    json_t *history = api->history(api->ctx);
    json_t *refused = api->last_rejected ? api->last_rejected(api->ctx) : NULL;
    const char *refused_at = refused ? json_string_value(json_object_get(refused, "time")) : NULL;
    size_t n = json_array_size(history);
    put(pg,
        "<h2>Config <span class=\"count\" id=\"config-version\">version %llu</span></h2>"
        "<div class=\"box\"><table id=\"reloads\"><thead><tr><th class=\"num\">Version</th>"
        "<th>Time</th><th>Source</th><th>What changed</th></tr></thead><tbody>",
        (unsigned long long)api->version(api->ctx));
    for (size_t i = 0; i < n && i < RELOADS_SHOWN; i++) {
        json_t *e = json_array_get(history, i);
        const char *at = json_string_value(json_object_get(e, "time"));
        if (refused_at && at && strcmp(refused_at, at) >= 0) { /* ISO 8601: text order */
            put_reload_row(pg, refused, true);
            refused_at = NULL;
        }
        put_reload_row(pg, e, false);
    }
    if (refused_at)
        put_reload_row(pg, refused, true);
    put(pg, "</tbody></table></div>");
    json_decref(history);
    json_decref(refused);
}

static void put_listeners(page *pg, const pf_admin *admin, const pf_proxy_listener_status *sts,
                          const double *rates) {
    const pf_config *cfg = admin->cfg;
    put(pg,
        "<h2>Listeners <span class=\"count\">%zu</span></h2><div class=\"box\"><table "
        "id=\"listeners\"><thead><tr><th>Name</th><th>Address</th><th class=\"num\">Routes"
        "</th><th class=\"num\">Connections</th><th class=\"num\">Requests</th><th class=\"num\">"
        "Rate</th><th>Status "
        "mix</th><th class=\"num\">Rejected</th><th class=\"num\">p50</th><th class=\"num\">"
        "p99</th></tr></thead><tbody>",
        cfg->listener_count);
    for (size_t i = 0; i < cfg->listener_count; i++) {
        const pf_config_listener *l = &cfg->listeners[i];
        const pf_proxy_listener_status *st = &sts[i];
        put(pg, "<tr class=\"listener\"><td><b>");
        put_text(pg, l->name);
        put(pg, "</b></td><td class=\"mono\">");
        put_text(pg, l->addr.text);
        put(pg,
            "</td><td class=\"num\">%zu</td><td class=\"num\">%lld <span class=\"st\">of "
            "%llu</span></td><td class=\"num requests\">%llu</td><td class=\"num rate\">",
            l->route_count, (long long)st->connections_active,
            (unsigned long long)st->connections_total,
            (unsigned long long)sum_requests(st->requests));
        put_rate(pg, rates[i]);
        put(pg, "</td><td>");
        put_status_mix(pg, st->requests);
        put(pg, "</td><td class=\"num\">%llu</td><td class=\"num p50\">",
            (unsigned long long)st->rejected);
        put_latency(pg, st->duration ? metrics_histogram_quantile(st->duration, 0.5) : -1);
        put(pg, "</td><td class=\"num p99\">");
        put_latency(pg, st->duration ? metrics_histogram_quantile(st->duration, 0.99) : -1);
        put(pg, "</td></tr>");
    }
    put(pg, "</tbody></table></div>");
}

/* kubernetes.http_routes: each namespace's HTTPRoute list, as /clusters' http_routes.lists:
 * listed, CRD missing (the kind is not installed: no routes, /ready not held) or waiting
 * for its first list (/ready held). */
typedef struct route_lists_ctx {
    page *pg;
    size_t count;
} route_lists_ctx;

static void put_route_list(void *arg, const pf_k8s_route_list_status *st) {
    route_lists_ctx *c = arg;
    page *pg = c->pg;
    if (!c->count++)
        put(pg, "<h2>HTTPRoute lists</h2><div class=\"box\"><table id=\"http-route-lists\">"
                "<thead><tr><th>Namespace</th><th>List</th><th>Watch</th><th class=\"num\">"
                "Routes</th><th>Last event</th></tr></thead><tbody>");
    const char *list = "listed", *cls = "ok";
    if (strcmp(st->state, "not installed") == 0)
        list = "CRD missing", cls = "warn";
    else if (!st->synced)
        list = "waiting", cls = "bad";
    put(pg, "<tr class=\"route-list\"><td class=\"mono\">");
    put_text(pg, st->namespace[0] ? st->namespace : "all namespaces");
    put(pg, "</td><td class=\"%s\">%s</td><td>%s</td><td class=\"num\">%zu</td><td>", cls, list,
        st->state, st->routes);
    if (st->last_event_wall_us && pg->now_wall_us > st->last_event_wall_us) {
        put_span_ms(pg, (pg->now_wall_us - st->last_event_wall_us) / 1000);
        put(pg, " ago");
    } else {
        put(pg, "none yet");
    }
    put(pg, "</td></tr>");
}

static void put_route_lists(page *pg, const pf_admin *admin) {
    route_lists_ctx c = {pg, 0};
    if (admin->k8s)
        discovery_k8s_foreach_httproute_list(admin->k8s, put_route_list, &c);
    if (c.count)
        put(pg, "</tbody></table></div>");
}

static void put_dns(page *pg, const pf_dns_cluster_status *st) {
    put(pg, "<div class=\"disc\"><div><span>DNS name</span> <b class=\"mono\">");
    put_text(pg, st->name);
    put(pg, "</b> (%s)</div><div><span>last answer</span> ", config_dns_record_name(st->record));
    put_time(pg, st->last_refresh_wall_us);
    if (st->last_refresh_wall_us) {
        put(pg, " (");
        put_span_ms(pg, st->last_refresh_age_ms);
        put(pg, " ago)");
    }
    put(pg, "</div><div><span>TTL</span> ");
    if (st->ttl == UINT32_MAX)
        put(pg, "unknown");
    else
        put(pg, "%u s", st->ttl);
    put(pg, "</div><div><span>sets published</span> %llu</div>", (unsigned long long)st->publishes);
    if (st->last_error[0]) {
        put(pg, "<div class=\"err\"><span>last error</span> ");
        put_text(pg, st->last_error);
        put(pg, " at ");
        put_time(pg, st->last_error_wall_us);
        put(pg, "</div>");
    }
    put(pg, "</div>");
}

static void put_k8s(page *pg, const pf_k8s_cluster_status *st) {
    put(pg, "<div class=\"disc\"><div><span>Service</span> <b class=\"mono\">");
    put_text(pg, st->namespace);
    put(pg, "/");
    put_text(pg, st->service);
    if (st->port[0]) {
        put(pg, ":");
        put_text(pg, st->port);
    }
    put(pg,
        "</b></div><div><span>watch</span> %s%s</div><div><span>resourceVersion</span> "
        "<span class=\"mono\">",
        st->watch_state ? st->watch_state : "unknown", st->synced ? ", synced" : ", not synced");
    put_text(pg, st->resource_version[0] ? st->resource_version : "none");
    put(pg, "</span></div><div><span>last event</span> ");
    if (st->last_event_wall_us) {
        put_span_ms(pg, st->last_event_age_ms);
        put(pg, " ago");
    } else {
        put(pg, "none yet");
    }
    put(pg, "</div><div><span>slices</span> %zu</div>", st->slices);
    if (st->external_name[0]) {
        put(pg, "<div><span>ExternalName</span> <span class=\"mono\">");
        put_text(pg, st->external_name);
        put(pg, "</span></div>");
    }
    if (st->last_error[0]) {
        put(pg, "<div class=\"err\"><span>last error</span> ");
        put_text(pg, st->last_error);
        put(pg, " at ");
        put_time(pg, st->last_error_wall_us);
        put(pg, "</div>");
    }
    put(pg, "</div>");
}

/* Slow start: the endpoint's share ramps over slow_start from the later of when it joined
 * and when it last came back healthy (the balancers' rule, read from the same stats). */
static bool slow_start_left(const pf_config_cluster *cfg, const pf_endpoint *ep, uint64_t now_ms,
                            uint64_t *left_ms) {
    if (!cfg->slow_start_ms || !ep->stats || !ep->healthy)
        return false;
    uint64_t seen = atomic_load_explicit(&ep->stats->first_seen_ms, memory_order_relaxed);
    uint64_t back = atomic_load_explicit(&ep->stats->healthy_since_ms, memory_order_relaxed);
    uint64_t since = seen > back ? seen : back;
    if (since == 0 || now_ms >= since + cfg->slow_start_ms)
        return false;
    *left_ms = since + cfg->slow_start_ms - now_ms;
    return true;
}

static const char *const verdict_class[] = {
    [PF_HEALTH_HEALTHY] = "healthy",     [PF_HEALTH_UNCHECKED] = "unchecked",
    [PF_HEALTH_NOT_READY] = "not-ready", [PF_HEALTH_CHECK_FAILED] = "check-failed",
    [PF_HEALTH_EJECTED] = "ejected",
};
static const char *const verdict_word[] = {
    [PF_HEALTH_HEALTHY] = "healthy",     [PF_HEALTH_UNCHECKED] = "unchecked",
    [PF_HEALTH_NOT_READY] = "not ready", [PF_HEALTH_CHECK_FAILED] = "check failed",
    [PF_HEALTH_EJECTED] = "ejected",
};

static void put_endpoint(page *pg, const cluster_view *v, const pf_endpoint *ep, bool terminating,
                         uint64_t now_ms) {
    char reason[PF_HEALTH_REASON_MAX];
    pf_health_verdict verdict = health_verdict(v->health, ep, reason, sizeof reason);
    put(pg, "<tr class=\"ep %s\" data-address=\"", verdict_class[verdict]);
    put_text(pg, ep->addr.text);
    put(pg, "\"><td class=\"mono\">");
    put_text(pg, ep->addr.text);
    put(pg, "</td><td>");
    put_text(pg, ep->zone[0] ? ep->zone : "\xe2\x80\x93");
    put(pg, "</td><td class=\"num weight\">%u</td><td><span class=\"verdict\">%s</span>",
        ep->weight, verdict_word[verdict]);
    uint64_t left;
    if (terminating)
        put(pg, "<span class=\"tag\">terminating</span>");
    if (slow_start_left(v->cfg, ep, now_ms, &left)) {
        put(pg, "<span class=\"tag\">slow start, ");
        put_span_ms(pg, left);
        put(pg, " left</span>");
    }
    put(pg, "</td><td class=\"reason\">");
    /* A plain "healthy" would only repeat the verdict. */
    put_text(pg, strcmp(reason, "healthy") ? reason : "\xe2\x80\x93");
    put(pg, "</td>");
    uint64_t active = 0, total = 0, failures = 0, ewma = 0;
    if (ep->stats) {
        active = atomic_load_explicit(&ep->stats->active_requests, memory_order_relaxed);
        total = atomic_load_explicit(&ep->stats->requests_total, memory_order_relaxed);
        failures = atomic_load_explicit(&ep->stats->connect_failures_total, memory_order_relaxed);
        ewma = atomic_load_explicit(&ep->stats->ewma_latency_us, memory_order_relaxed);
    }
    put(pg,
        "<td class=\"num active\">%llu</td><td class=\"num requests\">%llu</td>"
        "<td class=\"num\">%llu</td><td class=\"num ewma\">",
        (unsigned long long)active, (unsigned long long)total, (unsigned long long)failures);
    put_latency(pg, ewma ? (double)ewma / 1e6 : -1);
    put(pg, "</td></tr>");
}

static void put_cluster(page *pg, const pf_admin *admin, const cluster_view *v, uint64_t now_ms) {
    pf_dns_cluster_status dns;
    pf_k8s_cluster_status k8s;
    const char *source = "static";
    /* Only clusters that can be DNS or Kubernetes ones are looked up: each lookup walks
     * that source's clusters, and a thousand static clusters should cost nothing. */
    bool is_k8s = admin->k8s &&
                  (v->cfg->kubernetes.service[0] || v->index >= admin->cfg->cluster_count) &&
                  discovery_k8s_cluster_status(admin->k8s, v->cfg->name, &k8s) == PF_OK;
    bool is_dns = !is_k8s && admin->dns && v->cfg->dns.name[0] &&
                  discovery_dns_cluster_status(admin->dns, v->cfg->name, &dns) == PF_OK;
    if (is_k8s)
        source = "kubernetes";
    else if (is_dns)
        source = "dns";
    const pf_proxy_cluster_status *st = &v->st;
    size_t total = v->set ? v->set->count : 0, healthy = v->set ? v->set->healthy_count : 0;

    put(pg, "<details class=\"cluster %s\" data-name=\"", rank_class[v->rank]);
    put_text(pg, v->cfg->name);
    put(pg, "\" data-search=\"");
    put_text(pg, v->cfg->name);
    put(pg, " %s %s\"%s><summary><span class=\"cname\">", source, rank_class[v->rank],
        v->rank == RANK_HEALTHY ? "" : " open");
    put_text(pg, v->cfg->name);
    put(pg,
        "</span><span class=\"src\">%s</span><span class=\"eps\"><b class=\"healthy-count\">"
        "%zu</b> / <span class=\"endpoint-count\">%zu</span> healthy%s</span>",
        source, healthy, total, st->panic ? " <span class=\"tag\">panic</span>" : "");
    put_status_mix(pg, st->requests);
    put(pg,
        "<span class=\"st\">in flight <b class=\"in-flight\">%ld</b></span><span class=\"st\">"
        "requests <b class=\"requests\">%llu</b> <span class=\"rate\">",
        st->active_requests, (unsigned long long)sum_requests(st->requests));
    if (v->rate >= 0) { /* nothing until the page has an earlier sample */
        put(pg, "&middot; ");
        put_rate(pg, v->rate);
    }
    put(pg, "</span></span><span class=\"st\">p50 <b class=\"p50\">");
    put_latency(pg, st->duration ? metrics_histogram_quantile(st->duration, 0.5) : -1);
    put(pg, "</b> p99 <b class=\"p99\">");
    put_latency(pg, st->duration ? metrics_histogram_quantile(st->duration, 0.99) : -1);
    put(pg, "</b></span></summary><div class=\"cbody\">");
    if (is_k8s)
        put_k8s(pg, &k8s);
    else if (is_dns)
        put_dns(pg, &dns);
    put(pg,
        "<div class=\"disc\"><div><span>policy</span> %s</div><div><span>upstream "
        "connections</span> %lld</div><div><span>retries</span> %llu</div></div>",
        config_lb_policy_name(v->cfg->lb_policy), (long long)st->connections_active,
        (unsigned long long)st->retries);
    if (!v->set) {
        put(pg, "<p class=\"empty\">No endpoint set yet: discovery has not answered, requests "
                "get 503.</p></div></details>");
        return;
    }
    if (!total) {
        put(pg, "<p class=\"empty\">No endpoints: discovery published an empty set, requests get "
                "503.</p></div></details>");
        return;
    }
    put(pg, "<table class=\"endpoints\"><thead><tr><th>Address</th><th>Zone</th><th "
            "class=\"num\">Weight</th><th>Health</th><th>Why</th><th class=\"num\">In flight</th>"
            "<th class=\"num\">Requests</th><th class=\"num\">Connect failures</th><th "
            "class=\"num\">EWMA latency</th></tr></thead><tbody>");
    bool terminating = is_k8s && k8s.using_terminating;
    for (size_t k = 0; k < v->set->count; k++)
        put_endpoint(pg, v, &v->set->endpoints[k], terminating, now_ms);
    put(pg, "</tbody></table></div></details>");
}

static void put_head(page *pg, const pf_admin *admin) {
    put(pg,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta "
        "name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>pilotfish "
        "status</title><link rel=\"icon\" href=\"data:,\"><style>%s</style></head><body>"
        "<header><h1>pilotfish</h1><span class=\"ver\" id=\"version\">",
        page_style);
    put_text(pg, admin->version && admin->version[0] ? admin->version : "unknown build");
    put(pg, "</span><span class=\"ver\">admin ");
    put_text(pg, admin->cfg->admin_addr.text);
    put(pg, "</span><nav><a href=\"/clusters\">/clusters</a><a href=\"/config\">/config</a>"
            "<a href=\"/stats/prometheus\">/stats/prometheus</a><a href=\"/ready\">/ready</a>"
            "</nav></header><main>");
}

int admin_status_render(pf_admin *admin, struct evbuffer *out) {
    page pg = {out, false, pf_wall_us()};
    size_t count = proxy_cluster_count(admin->proxy);
    size_t listeners = admin->cfg->listener_count;
    cluster_view *views = calloc(count + 1, sizeof *views);
    uint64_t *totals = calloc((count > listeners ? count : listeners) + 1, sizeof *totals);
    uint64_t *series = calloc((count > listeners ? count : listeners) + 1, sizeof *series);
    pf_proxy_listener_status *lsts = calloc(listeners + 1, sizeof *lsts);
    double *lrates = calloc(listeners + 1, sizeof *lrates);
    if (!views || !totals || !series || !lsts || !lrates) {
        free(views);
        free(totals);
        free(series);
        free(lsts);
        free(lrates);
        return PF_ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        cluster_view *v = &views[i];
        v->index = i;
        /* A removed discovered cluster's slot may be freed already: nothing to read. */
        if ((v->retired = proxy_cluster_retired(admin->proxy, i)))
            continue;
        v->cfg = proxy_cluster_config(admin->proxy, i);
        v->set = discovery_slot_acquire(proxy_cluster_slot(admin->proxy, i));
        v->health = i < admin->health_count ? admin->health[i] : NULL;
        size_t healthy = v->set ? v->set->healthy_count : 0;
        if (!healthy)
            v->rank = RANK_DOWN; /* an empty cluster too: every request gets 503 */
        else if (healthy < v->set->count)
            v->rank = RANK_DEGRADED;
        else
            v->rank = RANK_HEALTHY;
    }
    uint64_t now_us = pf_now_us();
    for (size_t i = 0; i < count; i++) {
        if (views[i].retired)
            continue;
        proxy_cluster_status(admin->proxy, i, &views[i].st);
        totals[i] = sum_requests(views[i].st.requests);
        series[i] = views[i].st.series; /* retired: 0, no cluster's */
    }
    /* A rate needs an earlier sample of the same cluster: a failed update only leaves the
     * rates unknown, and a slot reused by another cluster starts afresh. */
    admin_rate_update(&admin->cluster_rates, totals, series, count, now_us);
    for (size_t i = 0; i < count; i++)
        views[i].rate = admin_rate_of(&admin->cluster_rates, i, totals[i], series[i], now_us);
    for (size_t i = 0; i < listeners; i++) {
        proxy_listener_status(admin->proxy, i, &lsts[i]);
        totals[i] = sum_requests(lsts[i].requests);
        series[i] = lsts[i].series;
    }
    admin_rate_update(&admin->listener_rates, totals, series, listeners, now_us);
    for (size_t i = 0; i < listeners; i++)
        lrates[i] = admin_rate_of(&admin->listener_rates, i, totals[i], series[i], now_us);
    /* Clusters a reload removed keep their index (and their rates above) but are not shown. */
    size_t shown = 0;
    for (size_t i = 0; i < count; i++) {
        if (views[i].retired)
            discovery_set_unref(views[i].set);
        else
            views[shown++] = views[i];
    }
    count = shown;
    qsort(views, count, sizeof *views, view_order);
    bool ready = proxy_ready(admin->proxy) && (!admin->k8s || discovery_k8s_synced(admin->k8s));
    uint64_t now_ms = pf_now_ms();

    put_head(&pg, admin);
    /* The script swaps #live, #cluster-count, #clusters and #rendered on refresh; the rest
     * (the filter box with its focus and text) stays put. */
    put(&pg, "<div id=\"live\">");
    put_overview(&pg, admin, views, count, ready);
    if (!ready)
        put_not_ready(&pg, admin, views, count);
    put_listeners(&pg, admin, lsts, lrates);
    put_route_lists(&pg, admin);
    put_reloads(&pg, admin);
    put(&pg,
        "</div><h2>Clusters <span class=\"count\" id=\"cluster-count\">%zu</span> <span "
        "id=\"shown\"></span>"
        "<input id=\"filter\" type=\"search\" placeholder=\"Filter clusters\" aria-label=\"Filter "
        "clusters\" hidden></h2>",
        count);
    put(&pg, "<div id=\"clusters\">");
    for (size_t i = 0; i < count; i++)
        put_cluster(&pg, admin, &views[i], now_ms);
    if (!count)
        put(&pg, "<p>No clusters.</p>");
    put(&pg, "</div><footer><span id=\"rendered\">Rendered ");
    put_time(&pg, pg.now_wall_us);
    put(&pg,
        "</span> &middot; <span id=\"refreshed\">complete without JavaScript; reload to "
        "update</span></footer></main><script>%s</script></body></html>",
        page_script);
    for (size_t i = 0; i < count; i++)
        discovery_set_unref(views[i].set);
    free(views);
    free(totals);
    free(lsts);
    free(series);
    free(lrates);
    return pg.failed ? PF_ENOMEM : PF_OK;
}
