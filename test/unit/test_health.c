/* Unit tests for health/: the pure decisions (check thresholds and the first check, status
 * ranges, ejection time growth, cap and decay, max_ejection_percent), then a pf_health on a
 * real event loop between two slots: pass-through without config, discovery and check
 * verdicts combined (TCP checks against a listening and a closed port on 127.0.0.1), and
 * passive ejection from health_report, also from several threads at once. */
#include "config/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"
#include "discovery/endpoint_set.h"
#include "health/health.h"
#include "health/probe_int.h"
#include "health/verdict.h"
#include "test/unit/unit.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ---------------------------------------------------------------------------- */

/* A config whose first cluster has `extra` (JSON, ' for ") after its endpoints; the
 * caller frees it. */
static pf_config *load_cluster(const char *endpoints, const char *extra) {
    char json[4096], *p;
    snprintf(json, sizeof json,
             "{'admin':{'address':'127.0.0.1:9901'},'listeners':[{'name':'main',"
             "'address':'127.0.0.1:15001','routes':[{'match':{},'cluster':'c'}]}],"
             "'clusters':[{'name':'c','endpoints':[%s]%s}]}",
             endpoints, extra);
    for (p = json; *p; p++)
        if (*p == '\'')
            *p = '"';
    pf_config *cfg = NULL;
    pf_errlist errs = {0};
    int rc = config_load_string(json, "t.json", &cfg, &errs);
    PF_CHECK(rc == PF_OK, "config does not load: %s", errs.count ? errs.items[0] : json);
    pf_errlist_free(&errs);
    return cfg;
}

static pf_endpoint endpoint(const char *addr, bool healthy) {
    pf_endpoint ep;
    memset(&ep, 0, sizeof ep);
    pf_error err;
    int rc = config_parse_sockaddr(addr, &ep.addr, &err);
    PF_CHECK(rc == PF_OK, "bad address %s in test: %s", addr, err.msg);
    ep.weight = 1;
    ep.healthy = healthy;
    return ep;
}

static void publish(pf_endpoint_slot *slot, const pf_endpoint *eps, size_t n) {
    discovery_slot_publish(slot, discovery_set_new(eps, n));
}

/* One cluster's health between two slots, on its own event loop. */
typedef struct rig {
    pf_config *cfg;
    struct event_base *base;
    pf_metrics *metrics;
    pf_endpoint_slot *discovered, *effective;
    pf_health *h;
} rig;

static bool rig_init(rig *r, const char *endpoints, const char *extra) {
    memset(r, 0, sizeof *r);
    pf_log_set_level(PF_LOG_ERROR); /* verdict changes log at info and warn */
    r->cfg = load_cluster(endpoints, extra);
    r->base = event_base_new();
    r->metrics = metrics_new();
    r->discovered = discovery_slot_new("c");
    r->effective = discovery_slot_new("c");
    if (!r->cfg || !r->base || !r->metrics || !r->discovered || !r->effective)
        return false;
    pf_error err = {{0}};
    r->h = health_new(r->base, &r->cfg->clusters[0], r->discovered, r->effective, r->metrics, &err);
    PF_CHECK(r->h != NULL, "health_new: %s", err.msg);
    return r->h != NULL;
}

static void rig_free(rig *r) {
    health_free(r->h);
    discovery_slot_free(r->discovered);
    discovery_slot_free(r->effective);
    metrics_free(r->metrics);
    if (r->base)
        event_base_free(r->base);
    config_free(r->cfg);
}

/* The effective endpoint with this address (NULL if absent); *set must be unref'd. */
static const pf_endpoint *effective_ep(rig *r, const char *addr, pf_endpoint_set **set) {
    *set = discovery_slot_acquire(r->effective);
    for (size_t i = 0; *set && i < (*set)->count; i++)
        if (strcmp((*set)->endpoints[i].addr.text, addr) == 0)
            return &(*set)->endpoints[i];
    return NULL;
}

static bool is_healthy(rig *r, const char *addr) {
    pf_endpoint_set *set;
    const pf_endpoint *ep = effective_ep(r, addr, &set);
    bool healthy = ep && ep->healthy;
    discovery_set_unref(set);
    return healthy;
}

static void report(rig *r, const char *addr, pf_health_outcome outcome, int times) {
    pf_endpoint_set *set;
    const pf_endpoint *ep = effective_ep(r, addr, &set);
    PF_CHECK(ep != NULL, "%s not in the effective set", addr);
    for (int i = 0; ep && i < times; i++)
        health_report(r->h, ep, outcome);
    discovery_set_unref(set);
}

static void on_guard(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs the loop until pred(r, arg) holds or timeout_ms passes; returns pred's last value. */
static bool run_until(rig *r, bool (*pred)(rig *, const void *), const void *arg,
                      uint64_t timeout_ms) {
    uint64_t deadline = pf_now_ms() + timeout_ms;
    struct event *guard = evtimer_new(r->base, on_guard, NULL);
    bool ok;
    while (!(ok = pred(r, arg)) && pf_now_ms() < deadline) {
        struct timeval tv = pf_timeval_ms(5);
        evtimer_add(guard, &tv);
        event_base_loop(r->base, EVLOOP_ONCE);
    }
    event_free(guard);
    return ok;
}

static bool pred_healthy(rig *r, const void *addr) {
    return is_healthy(r, addr);
}

static bool pred_unhealthy(rig *r, const void *addr) {
    return !is_healthy(r, addr);
}

/* The "health" text health_describe gives the endpoint. */
static const char *describe(rig *r, const char *addr, char *buf, size_t len, json_t **out) {
    pf_endpoint_set *set;
    const pf_endpoint *ep = effective_ep(r, addr, &set);
    json_t *o = json_object();
    health_describe(r->h, ep, o);
    snprintf(buf, len, "%s", json_string_value(json_object_get(o, "health")));
    discovery_set_unref(set);
    if (out)
        *out = o;
    else
        json_decref(o);
    return buf;
}

/* ---- status ranges ------------------------------------------------------------------------ */

static void test_status_range_parsing(void) {
    static const struct {
        const char *text;
        int lo, hi; /* 0: rejected */
        const char *why;
    } rows[] = {
        {"200-399", 200, 399, NULL},
        {"204", 204, 204, NULL},
        {"100-599", 100, 599, NULL},
        {"200-200", 200, 200, NULL},
        {"2xx", 0, 0, "\"2xx\" is not a status code or range (use e.g. \"200\" or \"200-399\")"},
        {"200-", 0, 0, "is not a status code or range"},
        {"-200", 0, 0, "is not a status code or range"},
        {"200 - 399", 0, 0, "is not a status code or range"},
        {"", 0, 0, "is not a status code or range"},
        {"2000", 0, 0, "is not a status code or range"},
        {"600", 0, 0, "\"600\": status codes are 100-599"},
        {"099-200", 0, 0, "status codes are 100-599"},
        {"200-600", 0, 0, "status codes are 100-599"},
        {"399-200", 0, 0, "\"399-200\" is reversed; write the lower code first (\"200-399\")"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        pf_status_range r = {0, 0};
        pf_error err = {{0}};
        int rc = config_parse_status_range(rows[i].text, &r, &err);
        if (rows[i].lo) {
            PF_CHECK(rc == PF_OK && r.lo == rows[i].lo && r.hi == rows[i].hi,
                     "%s: rc=%d %u-%u (%s)", rows[i].text, rc, r.lo, r.hi, err.msg);
        } else {
            PF_CHECK(rc == PF_EINVAL && strstr(err.msg, rows[i].why), "%s: rc=%d msg=%s",
                     rows[i].text, rc, err.msg);
        }
    }
}

static void test_expected_status_matches_any_range(void) {
    pf_config_health_check hc;
    memset(&hc, 0, sizeof hc);
    hc.expected[0] = (pf_status_range){200, 299};
    hc.expected[1] = (pf_status_range){404, 404};
    hc.expected_count = 2;
    static const struct {
        int status;
        bool ok;
    } rows[] = {{199, false}, {200, true},  {299, true}, {300, false},
                {404, true},  {403, false}, {503, false}};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(health_status_expected(&hc, rows[i].status) == rows[i].ok, "status %d",
                 rows[i].status);
}

static void test_default_expected_statuses_are_200_to_399(void) {
    pf_config *cfg = load_cluster("'127.0.0.1:1'", ",'health_check':{}");
    CU_ASSERT_FATAL(cfg != NULL);
    const pf_config_health_check *hc = &cfg->clusters[0].health_check;
    CU_ASSERT_EQUAL(hc->type, PF_CHECK_HTTP);
    CU_ASSERT_STRING_EQUAL(hc->path, "/healthz");
    CU_ASSERT_TRUE(health_status_expected(hc, 200));
    CU_ASSERT_TRUE(health_status_expected(hc, 399));
    CU_ASSERT_FALSE(health_status_expected(hc, 400));
    CU_ASSERT_FALSE(health_status_expected(hc, 199));
    CU_ASSERT_EQUAL(hc->interval_ms, PF_DEFAULT_CHECK_INTERVAL_MS);
    CU_ASSERT_EQUAL(hc->unhealthy_threshold, 3);
    CU_ASSERT_EQUAL(hc->healthy_threshold, 2);
    CU_ASSERT_TRUE(hc->initial_healthy);
    CU_ASSERT_FALSE(cfg->clusters[0].outlier.enabled);
    config_free(cfg);
}

/* ---- the check state machine ------------------------------------------------------------- */

static pf_config_health_check check_config(uint32_t unhealthy, uint32_t healthy, bool initial) {
    pf_config_health_check hc;
    memset(&hc, 0, sizeof hc);
    hc.type = PF_CHECK_HTTP;
    hc.unhealthy_threshold = unhealthy;
    hc.healthy_threshold = healthy;
    hc.initial_healthy = initial;
    return hc;
}

/* Feeds a string of checks ('p' pass, 'f' fail) and compares the verdict after each with
 * the expected string ('H' healthy, 'U' unhealthy). */
static void run_checks(const pf_config_health_check *hc, const char *checks, const char *want) {
    pf_check_state s;
    health_check_init(&s, hc);
    char got[64] = "";
    for (size_t i = 0; checks[i] && i + 1 < sizeof got; i++) {
        bool was = s.healthy;
        bool changed = health_check_record(&s, hc, checks[i] == 'p');
        PF_CHECK(changed == (was != s.healthy), "%s: step %zu: changed=%d but %d -> %d", checks, i,
                 changed, was, s.healthy);
        got[i] = s.healthy ? 'H' : 'U';
        got[i + 1] = '\0';
    }
    PF_CHECK(strcmp(got, want) == 0,
             "checks %s (unhealthy %u, healthy %u, initial %s): got %s, "
             "want %s",
             checks, hc->unhealthy_threshold, hc->healthy_threshold,
             hc->initial_healthy ? "healthy" : "unhealthy", got, want);
}

static void test_check_thresholds(void) {
    pf_config_health_check hc = check_config(3, 2, true);
    /* after the first check, three failures in a row take it out, two passes bring it back */
    run_checks(&hc, "pfffpp", "HHHUUH");
    run_checks(&hc, "pffpfffp", "HHHHHHUU");
    run_checks(&hc, "pfffpfpp", "HHHUUUUH");
    pf_config_health_check one = check_config(1, 1, true);
    run_checks(&one, "pfpfp", "HUHUH");
}

static void test_first_check_decides_at_once(void) {
    pf_config_health_check healthy = check_config(3, 2, true);
    pf_check_state s;
    health_check_init(&s, &healthy);
    CU_ASSERT_TRUE(s.healthy);
    CU_ASSERT_TRUE(s.pending);
    /* healthy until the first check says otherwise: one failure is enough */
    run_checks(&healthy, "fpp", "UUH");
    run_checks(&healthy, "p", "H");

    pf_config_health_check unhealthy = check_config(3, 2, false);
    health_check_init(&s, &unhealthy);
    CU_ASSERT_FALSE(s.healthy);
    CU_ASSERT_TRUE(s.pending);
    /* unhealthy until proven: one pass is the proof */
    run_checks(&unhealthy, "pfff", "HHHU");
    run_checks(&unhealthy, "fpp", "UUH");
}

static void test_without_checks_an_endpoint_is_always_healthy(void) {
    pf_config_health_check hc;
    memset(&hc, 0, sizeof hc);
    pf_check_state s;
    health_check_init(&s, &hc);
    CU_ASSERT_TRUE(s.healthy);
    CU_ASSERT_FALSE(s.pending);
}

/* ---- ejection arithmetic ----------------------------------------------------------------- */

static void test_ejection_time_grows_with_each_ejection_and_is_capped(void) {
    pf_config_outlier od = {
        .enabled = true, .base_ejection_time_ms = 30000, .max_ejection_time_ms = 300000};
    static const struct {
        uint32_t times;
        uint64_t ms;
    } rows[] = {{0, 30000},   {1, 30000},   {2, 60000},        {3, 90000},          {9, 270000},
                {10, 300000}, {11, 300000}, {1000000, 300000}, {UINT32_MAX, 300000}};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(health_ejection_ms(&od, rows[i].times) == rows[i].ms, "times %u: %llu, want %llu",
                 rows[i].times, (unsigned long long)health_ejection_ms(&od, rows[i].times),
                 (unsigned long long)rows[i].ms);
    pf_config_outlier flat = {.base_ejection_time_ms = 30000, .max_ejection_time_ms = 30000};
    CU_ASSERT_EQUAL(health_ejection_ms(&flat, 5), 30000);
}

static void test_ejection_count_decays_while_back_in_service(void) {
    pf_config_outlier od = {.base_ejection_time_ms = 30000, .max_ejection_time_ms = 300000};
    static const struct {
        uint32_t times;
        uint64_t back_ms;
        uint32_t want;
    } rows[] = {{3, 0, 3},     {3, 29999, 3},  {3, 30000, 2}, {3, 89999, 1},
                {3, 90000, 0}, {3, 999999, 0}, {0, 0, 0},     {UINT32_MAX, 30000, UINT32_MAX - 1}};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(health_ejections_decayed(&od, rows[i].times, rows[i].back_ms) == rows[i].want,
                 "times %u back %llu ms: %u, want %u", rows[i].times,
                 (unsigned long long)rows[i].back_ms,
                 health_ejections_decayed(&od, rows[i].times, rows[i].back_ms), rows[i].want);
}

static const pf_config_outlier_latency latency_cfg = {
    .enabled = true, .factor = 3, .interval_ms = 10000, .min_requests = 10};

static void test_latency_median(void) {
    static const struct {
        size_t n;
        double values[5], want;
    } rows[] = {
        {1, {7}, 7},
        {2, {1000, 10000}, 5500}, /* the mean of the middle two */
        {3, {10000, 1000, 1100}, 1100},
        {4, {4, 1, 3, 2}, 2.5},
        {5, {50, 10, 40, 20, 30}, 30},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        double v[5];
        memcpy(v, rows[i].values, sizeof v);
        double got = health_latency_median(v, rows[i].n);
        PF_CHECK(got == rows[i].want, "row %zu: %g, want %g", i, got, rows[i].want);
    }
}

static void test_latency_average_follows_windows(void) {
    pf_latency_state s = {0};
    health_latency_add(&s, &latency_cfg, 0, 0, 1000); /* nothing measured: nothing changes */
    CU_ASSERT_EQUAL(s.samples, 0);
    CU_ASSERT_FALSE(health_latency_judged(&s, &latency_cfg));
    health_latency_add(&s, &latency_cfg, 9 * 2000, 9, 1000); /* the first window sets it */
    CU_ASSERT_DOUBLE_EQUAL(s.average_us, 2000.0, 1e-9);
    CU_ASSERT_FALSE(health_latency_judged(&s, &latency_cfg)); /* 9 < min_requests */
    health_latency_add(&s, &latency_cfg, 20000, 1, 0);        /* no time passed: no weight */
    CU_ASSERT_DOUBLE_EQUAL(s.average_us, 2000.0, 1e-9);
    CU_ASSERT_TRUE(health_latency_judged(&s, &latency_cfg));
    /* after one time constant (interval / 4) the average has gone 1 - 1/e of the way */
    health_latency_add(&s, &latency_cfg, 100 * 12000, 100, 2500);
    CU_ASSERT_DOUBLE_EQUAL(s.average_us, 2000.0 + 10000.0 * (1.0 - exp(-1.0)), 1e-6);
    /* a long gap: the new window is nearly all of it */
    health_latency_add(&s, &latency_cfg, 1000, 1, 100000);
    CU_ASSERT_DOUBLE_EQUAL(s.average_us, 1000.0, 1e-3);
    CU_ASSERT_EQUAL(s.samples, 111);
}

static void test_latency_slow_for_the_interval_is_due(void) {
    static const struct {
        double average, median;
        uint64_t now;
        bool slow_after, due;
    } steps[] = {
        {2000, 1000, 1000, false, false},  /* 2x: not slow */
        {3000, 1000, 2000, false, false},  /* exactly factor x: not above */
        {3001, 1000, 3000, true, false},   /* slow from now on */
        {9000, 1000, 12999, true, false},  /* 9,999 ms slow: not yet */
        {9000, 1000, 13000, true, true},   /* 10 s: due */
        {2500, 1000, 14000, false, false}, /* fast again: the clock restarts */
        {9000, 1000, 15000, true, false},
        {9000, 4000, 16000, false, false}, /* the median rose: not slow any more */
    };
    pf_latency_state s = {.samples = 100};
    for (size_t i = 0; i < ARRAY_LEN(steps); i++) {
        s.average_us = steps[i].average;
        bool due = health_latency_slow(&s, &latency_cfg, steps[i].median, steps[i].now);
        PF_CHECK(due == steps[i].due, "step %zu: due %d", i, due);
        PF_CHECK((s.slow_since_ms != 0) == steps[i].slow_after, "step %zu: slow since %llu", i,
                 (unsigned long long)s.slow_since_ms);
    }
}

static void test_max_ejection_percent(void) {
    static const struct {
        uint32_t percent;
        size_t endpoints, want;
    } rows[] = {
        {10, 0, 0},  {10, 1, 0},  {100, 1, 0}, /* never the only endpoint */
        {10, 2, 1},  {10, 10, 1}, {10, 19, 1}, /* at least one of two or more */
        {10, 20, 2}, {10, 25, 2}, {50, 4, 2},  {50, 5, 2}, {0, 5, 1}, {100, 3, 3}, {33, 1000, 330},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        pf_config_outlier od = {.max_ejection_percent = rows[i].percent};
        PF_CHECK(health_max_ejected(&od, rows[i].endpoints) == rows[i].want,
                 "%u%% of %zu: %zu, want %zu", rows[i].percent, rows[i].endpoints,
                 health_max_ejected(&od, rows[i].endpoints), rows[i].want);
    }
}

/* ---- a pf_health between two slots -------------------------------------------------------- */

static void test_without_config_sets_pass_through(void) {
    rig r;
    CU_ASSERT_FATAL(rig_init(&r, "'127.0.0.1:1'", ""));
    CU_ASSERT_EQUAL(health_start(r.h), PF_OK);
    CU_ASSERT_EQUAL(discovery_slot_generation(r.effective), 0);
    pf_endpoint eps[] = {endpoint("10.0.0.1:80", true), endpoint("10.0.0.2:80", false)};
    publish(r.discovered, eps, 2);
    CU_ASSERT_EQUAL(discovery_slot_generation(r.effective), 1);
    pf_endpoint_set *d = discovery_slot_acquire(r.discovered);
    pf_endpoint_set *e = discovery_slot_acquire(r.effective);
    CU_ASSERT_TRUE(discovery_set_equal(d, e));
    discovery_set_unref(d);
    discovery_set_unref(e);
    /* an equal set publishes nothing downstream either */
    publish(r.discovered, eps, 2);
    CU_ASSERT_EQUAL(discovery_slot_generation(r.effective), 1);
    /* a removed endpoint is gone from the effective set */
    publish(r.discovered, eps, 1);
    CU_ASSERT_EQUAL(discovery_slot_generation(r.effective), 2);
    e = discovery_slot_acquire(r.effective);
    CU_ASSERT_EQUAL(e->count, 1);
    discovery_set_unref(e);
    char buf[128];
    CU_ASSERT_STRING_EQUAL(describe(&r, "10.0.0.1:80", buf, sizeof buf, NULL), "healthy");
    /* reports without outlier_detection change nothing */
    report(&r, "10.0.0.1:80", PF_HEALTH_GATEWAY_FAILURE, 100);
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    CU_ASSERT_TRUE(is_healthy(&r, "10.0.0.1:80"));
    rig_free(&r);
}

static void test_set_published_before_health_new_is_taken(void) {
    rig r;
    memset(&r, 0, sizeof r);
    r.cfg = load_cluster("'127.0.0.1:1'", "");
    r.base = event_base_new();
    r.metrics = metrics_new();
    r.discovered = discovery_slot_new("c");
    r.effective = discovery_slot_new("c");
    pf_endpoint ep = endpoint("10.0.0.1:80", true);
    publish(r.discovered, &ep, 1);
    pf_error err;
    r.h = health_new(r.base, &r.cfg->clusters[0], r.discovered, r.effective, r.metrics, &err);
    CU_ASSERT_FATAL(r.h != NULL);
    CU_ASSERT_EQUAL(discovery_slot_generation(r.effective), 1);
    CU_ASSERT_TRUE(is_healthy(&r, "10.0.0.1:80"));
    rig_free(&r);
}

/* A listening socket on 127.0.0.1 (accepts pile up in the backlog: a TCP check only
 * connects) and a port where nothing listens. */
static int listen_any(char *addr, size_t len) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
        return -1;
    snprintf(addr, len, "127.0.0.1:%u", ntohs(sa.sin_port));
    return fd;
}

static void closed_port(char *addr, size_t len) {
    int fd = listen_any(addr, len);
    close(fd); /* nothing listens there now; the port stays free for the test's length */
}

static void test_discovery_and_check_verdicts_combine(void) {
    char up[32], down[32];
    int lfd = listen_any(up, sizeof up);
    CU_ASSERT_FATAL(lfd >= 0);
    closed_port(down, sizeof down);
    rig r;
    CU_ASSERT_FATAL(rig_init(&r, "'127.0.0.1:1'",
                             ",'health_check':{'type':'tcp','interval':'20ms','timeout':'500ms',"
                             "'unhealthy_threshold':2,'healthy_threshold':2}"));
    pf_endpoint eps[] = {endpoint(up, true), endpoint(down, true)};
    publish(r.discovered, eps, 2);
    /* healthy until the first check says otherwise */
    CU_ASSERT_TRUE(is_healthy(&r, up));
    CU_ASSERT_TRUE(is_healthy(&r, down));
    char buf[160];
    CU_ASSERT_STRING_EQUAL(describe(&r, down, buf, sizeof buf, NULL),
                           "healthy: pending first check");
    CU_ASSERT_EQUAL(health_start(r.h), PF_OK);
    PF_CHECK(run_until(&r, pred_unhealthy, down, 3000), "%s still healthy", down);
    CU_ASSERT_TRUE(is_healthy(&r, up));
    CU_ASSERT_STRING_EQUAL(describe(&r, down, buf, sizeof buf, NULL),
                           "unhealthy: check failed: connect refused");
    json_t *o;
    describe(&r, up, buf, sizeof buf, &o);
    CU_ASSERT_STRING_EQUAL(buf, "healthy");
    json_t *hc = json_object_get(o, "health_check");
    CU_ASSERT_PTR_NOT_NULL(json_object_get(hc, "last_check"));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(hc, "last_result")), "connected");
    json_decref(o);

    /* discovery takes the passing endpoint out: out, whatever its checks say */
    pf_endpoint not_ready[] = {endpoint(up, false), endpoint(down, true)};
    publish(r.discovered, not_ready, 2);
    CU_ASSERT_FALSE(is_healthy(&r, up));
    CU_ASSERT_STRING_EQUAL(describe(&r, up, buf, sizeof buf, NULL),
                           "unhealthy: not ready in discovery");
    /* and back */
    publish(r.discovered, eps, 2);
    CU_ASSERT_TRUE(is_healthy(&r, up));
    CU_ASSERT_FALSE(is_healthy(&r, down));

    /* the failing endpoint's port starts listening: back after healthy_threshold passes, with
     * healthy_since_ms set for slow start */
    int dfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons((uint16_t)atoi(strchr(down, ':') + 1))};
    int one = 1;
    setsockopt(dfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(dfd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(dfd, 64) == 0) {
        uint64_t before = pf_now_ms();
        PF_CHECK(run_until(&r, pred_healthy, down, 3000), "%s still unhealthy", down);
        pf_endpoint_set *set;
        const pf_endpoint *ep = effective_ep(&r, down, &set);
        CU_ASSERT_FATAL(ep != NULL);
        uint64_t since = atomic_load(&ep->stats->healthy_since_ms);
        PF_CHECK(since >= before && since <= pf_now_ms(),
                 "healthy_since_ms %llu not in [%llu, now]", (unsigned long long)since,
                 (unsigned long long)before);
        discovery_set_unref(set);
    }
    close(dfd);

    /* a removed endpoint's state goes with it; re-added, it starts fresh */
    publish(r.discovered, eps, 1);
    pf_endpoint_set *e = discovery_slot_acquire(r.effective);
    CU_ASSERT_EQUAL(e->count, 1);
    discovery_set_unref(e);
    health_stop(r.h);
    rig_free(&r);
    close(lfd);
}

static void test_unhealthy_until_proven(void) {
    char up[32];
    int lfd = listen_any(up, sizeof up);
    CU_ASSERT_FATAL(lfd >= 0);
    rig r;
    CU_ASSERT_FATAL(
        rig_init(&r, "'127.0.0.1:1'",
                 ",'health_check':{'type':'tcp','interval':'20ms','initial':'unhealthy'}"));
    pf_endpoint ep = endpoint(up, true);
    publish(r.discovered, &ep, 1);
    CU_ASSERT_FALSE(is_healthy(&r, up));
    char buf[128];
    CU_ASSERT_STRING_EQUAL(describe(&r, up, buf, sizeof buf, NULL),
                           "unhealthy: pending first check");
    CU_ASSERT_EQUAL(health_start(r.h), PF_OK);
    PF_CHECK(run_until(&r, pred_healthy, up, 3000), "%s never proven healthy", up);
    rig_free(&r);
    close(lfd);
}

static const char *const three[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"};

static bool rig_three(rig *r, const char *outlier) {
    if (!rig_init(r, "'127.0.0.1:1'", outlier))
        return false;
    pf_endpoint eps[3];
    for (size_t i = 0; i < 3; i++)
        eps[i] = endpoint(three[i], true);
    publish(r->discovered, eps, 3);
    return health_start(r->h) == PF_OK;
}

static double metric(rig *r, const char *needle) {
    char *text = metrics_render(r->metrics);
    const char *at = text ? strstr(text, needle) : NULL;
    double v = at ? atof(at + strlen(needle)) : -1;
    free(text);
    return v;
}

static void test_consecutive_5xx_eject_and_success_resets_the_streak(void) {
    rig r;
    CU_ASSERT_FATAL(rig_three(&r, ",'outlier_detection':{'consecutive_5xx':3,"
                                  "'base_ejection_time':'10s','max_ejection_percent':50}"));
    report(&r, three[0], PF_HEALTH_5XX, 2);
    report(&r, three[0], PF_HEALTH_SUCCESS, 1);
    report(&r, three[0], PF_HEALTH_5XX, 2);
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    CU_ASSERT_TRUE(is_healthy(&r, three[0]));
    report(&r, three[0], PF_HEALTH_5XX, 1);
    /* the third in a row wakes the loop through the eventfd */
    PF_CHECK(run_until(&r, pred_unhealthy, three[0], 1000), "not ejected after 3 x 5xx");
    char buf[160];
    describe(&r, three[0], buf, sizeof buf, NULL);
    PF_CHECK(strncmp(buf, "ejected until ", 14) == 0 && strstr(buf, "Z (3 consecutive 5xx)"),
             "describe: %s", buf);
    CU_ASSERT_EQUAL(metric(&r, "pilotfish_outlier_ejected_endpoints{cluster=\"c\"} "), 1);
    CU_ASSERT_EQUAL(
        metric(&r, "pilotfish_outlier_ejections_total{cluster=\"c\",reason=\"consecutive_5xx\"} "),
        1);
    CU_ASSERT_TRUE(is_healthy(&r, three[1]));
    rig_free(&r);
}

static void test_gateway_failures_have_their_own_threshold(void) {
    rig r;
    CU_ASSERT_FATAL(rig_three(&r, ",'outlier_detection':{'consecutive_5xx':0,"
                                  "'consecutive_gateway_failure':2,'max_ejection_percent':100}"));
    /* a 500 breaks a streak of gateway failures, and 5xx alone are off */
    report(&r, three[0], PF_HEALTH_GATEWAY_FAILURE, 1);
    report(&r, three[0], PF_HEALTH_5XX, 10);
    report(&r, three[0], PF_HEALTH_GATEWAY_FAILURE, 1);
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    CU_ASSERT_TRUE(is_healthy(&r, three[0]));
    report(&r, three[1], PF_HEALTH_GATEWAY_FAILURE, 2);
    PF_CHECK(run_until(&r, pred_unhealthy, three[1], 1000), "not ejected after 2 gateway failures");
    char buf[160];
    PF_CHECK(
        strstr(describe(&r, three[1], buf, sizeof buf, NULL), "(2 consecutive gateway failures)"),
        "describe: %s", buf);
    rig_free(&r);
}

typedef struct count_arg {
    size_t want;
} count_arg;

static bool pred_unhealthy_count(rig *r, const void *arg) {
    const count_arg *c = arg;
    pf_endpoint_set *set = discovery_slot_acquire(r->effective);
    size_t n = set ? set->count - set->healthy_count : 0;
    discovery_set_unref(set);
    return n == c->want;
}

static void test_max_ejection_percent_holds_and_freed_places_are_taken(void) {
    rig r;
    CU_ASSERT_FATAL(rig_three(&r, ",'outlier_detection':{'consecutive_5xx':2,"
                                  "'base_ejection_time':'150ms','max_ejection_time':'10s',"
                                  "'max_ejection_percent':10,'interval':'10ms'}"));
    /* 10% of three is zero, but one may go */
    report(&r, three[0], PF_HEALTH_5XX, 2);
    count_arg one = {1};
    CU_ASSERT_TRUE(run_until(&r, pred_unhealthy_count, &one, 1000));
    CU_ASSERT_FALSE(is_healthy(&r, three[0]));
    report(&r, three[1], PF_HEALTH_5XX, 5);
    /* a few ticks: the second stays in, over the limit */
    uint64_t until = pf_now_ms() + 60;
    while (pf_now_ms() < until)
        event_base_loop(r.base, EVLOOP_ONCE);
    CU_ASSERT_TRUE(is_healthy(&r, three[1]));
    CU_ASSERT_FALSE(is_healthy(&r, three[0]));
    /* the first comes back after its time; the waiting one takes its place at that tick */
    PF_CHECK(run_until(&r, pred_healthy, three[0], 2000), "first never came back");
    CU_ASSERT_TRUE(run_until(&r, pred_unhealthy, three[1], 1000));
    CU_ASSERT_TRUE(is_healthy(&r, three[0]));
    pf_endpoint_set *set;
    const pf_endpoint *ep = effective_ep(&r, three[0], &set);
    CU_ASSERT(ep && atomic_load(&ep->stats->healthy_since_ms) > 0);
    /* its counters start over when it is back */
    CU_ASSERT(ep && atomic_load(&ep->stats->consecutive_5xx) == 0);
    discovery_set_unref(set);
    rig_free(&r);
}

static bool pred_ejections(rig *r, const void *arg) {
    const count_arg *c = arg;
    pf_endpoint_set *set;
    const pf_endpoint *ep = effective_ep(r, three[0], &set);
    json_t *o = json_object();
    health_describe(r->h, ep, o);
    json_int_t n =
        json_integer_value(json_object_get(json_object_get(o, "outlier"), "ejections_total"));
    bool ejected = json_is_true(json_object_get(json_object_get(o, "outlier"), "ejected"));
    json_decref(o);
    discovery_set_unref(set);
    return (size_t)n == c->want && ejected;
}

static void test_ejected_again_for_longer_when_still_bad(void) {
    rig r;
    CU_ASSERT_FATAL(rig_three(&r, ",'outlier_detection':{'consecutive_5xx':1,"
                                  "'base_ejection_time':'100ms','max_ejection_time':'10s',"
                                  "'max_ejection_percent':50,'interval':'10ms'}"));
    uint64_t durations[3];
    for (size_t k = 0; k < 3; k++) {
        report(&r, three[0], PF_HEALTH_5XX, 1);
        count_arg want = {k + 1};
        CU_ASSERT_FATAL(run_until(&r, pred_ejections, &want, 1000));
        uint64_t start = pf_now_ms();
        CU_ASSERT_FATAL(run_until(&r, pred_healthy, three[0], 3000));
        durations[k] = pf_now_ms() - start;
    }
    /* 100 ms, 200 ms, 300 ms, each within a tick and some scheduling slack */
    for (size_t k = 0; k < 3; k++)
        PF_CHECK(durations[k] + 15 >= 100 * (k + 1) && durations[k] <= 100 * (k + 1) + 150,
                 "ejection %zu lasted %llu ms, want about %zu", k + 1,
                 (unsigned long long)durations[k], 100 * (k + 1));
    rig_free(&r);
}

static void test_single_endpoint_is_never_ejected(void) {
    rig r;
    CU_ASSERT_FATAL(rig_init(&r, "'127.0.0.1:1'",
                             ",'outlier_detection':{'consecutive_5xx':1,'max_ejection_percent':100,"
                             "'interval':'10ms'}"));
    CU_ASSERT_EQUAL(health_start(r.h), PF_OK);
    pf_endpoint ep = endpoint("10.0.0.1:80", true);
    publish(r.discovered, &ep, 1);
    report(&r, "10.0.0.1:80", PF_HEALTH_5XX, 10);
    uint64_t until = pf_now_ms() + 40;
    while (pf_now_ms() < until)
        event_base_loop(r.base, EVLOOP_ONCE);
    CU_ASSERT_TRUE(is_healthy(&r, "10.0.0.1:80"));
    rig_free(&r);
}

/* Workers report from their own threads while the loop runs on this one. */
typedef struct reporter {
    rig *r;
    pf_endpoint_set *set;
} reporter;

static void *report_thread(void *arg) {
    reporter *rp = arg;
    for (int i = 0; i < 20000; i++)
        for (size_t k = 0; k < rp->set->count; k++)
            health_report(rp->r->h, &rp->set->endpoints[k],
                          k == 0 ? PF_HEALTH_GATEWAY_FAILURE : PF_HEALTH_SUCCESS);
    return NULL;
}

static void test_reports_from_many_threads_eject_once(void) {
    rig r;
    CU_ASSERT_FATAL(rig_three(&r, ",'outlier_detection':{'consecutive_gateway_failure':5,"
                                  "'base_ejection_time':'10s','interval':'10ms'}"));
    reporter rp = {&r, discovery_slot_acquire(r.effective)};
    pthread_t t[4];
    for (size_t i = 0; i < ARRAY_LEN(t); i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, report_thread, &rp), 0);
    CU_ASSERT_TRUE(run_until(&r, pred_unhealthy, three[0], 3000));
    for (size_t i = 0; i < ARRAY_LEN(t); i++)
        pthread_join(t[i], NULL);
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    discovery_set_unref(rp.set);
    CU_ASSERT_FALSE(is_healthy(&r, three[0]));
    CU_ASSERT_TRUE(is_healthy(&r, three[1]));
    CU_ASSERT_TRUE(is_healthy(&r, three[2]));
    CU_ASSERT_EQUAL(metric(&r, "pilotfish_outlier_ejections_total{cluster=\"c\",reason=\""
                               "consecutive_gateway_failure\"} "),
                    1);
    rig_free(&r);
}

/* grpc.health.v1: HealthCheckRequest {string service = 1}, framed with the 5-byte gRPC
 * prefix (flag 0, big-endian length). */
static void test_grpc_health_request_bytes(void) {
    unsigned char out[300];
    CU_ASSERT_EQUAL(probe_grpc_request_message("", out, sizeof out), 5);
    CU_ASSERT_EQUAL(memcmp(out, "\0\0\0\0\0", 5), 0);
    size_t n = probe_grpc_request_message("pilotfish.test.Echo", out, sizeof out);
    static const unsigned char want[] = "\0\0\0\0\x15\x0a\x13pilotfish.test.Echo";
    CU_ASSERT_EQUAL_FATAL(n, sizeof want - 1);
    CU_ASSERT_EQUAL(memcmp(out, want, n), 0);
    char longest[128];
    memset(longest, 'a', 127);
    longest[127] = '\0';
    CU_ASSERT_EQUAL(probe_grpc_request_message(longest, out, sizeof out), 5 + 2 + 127);
    CU_ASSERT_EQUAL(out[4], 129);
    CU_ASSERT_EQUAL(probe_grpc_request_message(longest, out, 100), 0); /* does not fit */
}

static void test_grpc_health_response_status(void) {
    static const struct {
        const char *bytes;
        size_t len;
        int want;
    } rows[] = {
        {"\0\0\0\0\x02\x08\x01", 7, 1},           /* SERVING */
        {"\0\0\0\0\x02\x08\x02", 7, 2},           /* NOT_SERVING */
        {"\0\0\0\0\x00", 5, 0},                   /* empty: status UNKNOWN (0) */
        {"\0\0\0\0\x05\x12\x01x\x08\x01", 10, 1}, /* an unknown field first, skipped */
        {"\0\0\0\0\x03\x08\x81\x00", 8, 1},       /* a non-minimal varint */
        {"\0\0\0\0\x02\x08", 6, -1},              /* length says more than came */
        {"\0\0\0\0\x01\x08", 6, -1},              /* a field without its value */
        {"\x01\0\0\0\x02\x08\x01", 7, -1},        /* compressed */
        {"\0\0\0", 3, -1},                        /* no prefix */
        {"\0\0\0\0\x02\x0b\x01", 7, -1},          /* wire type 3 (group) */
        {"\0\0\0\0\x03\x12\x05x", 8, -1},         /* a string longer than the message */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        PF_CHECK(probe_grpc_response_status((const unsigned char *)rows[i].bytes, rows[i].len) ==
                     rows[i].want,
                 "row %zu: want %d", i, rows[i].want);
}

PF_UNIT_MAIN("health", PF_UNIT_TEST(test_status_range_parsing),
             PF_UNIT_TEST(test_expected_status_matches_any_range),
             PF_UNIT_TEST(test_default_expected_statuses_are_200_to_399),
             PF_UNIT_TEST(test_check_thresholds), PF_UNIT_TEST(test_first_check_decides_at_once),
             PF_UNIT_TEST(test_without_checks_an_endpoint_is_always_healthy),
             PF_UNIT_TEST(test_ejection_time_grows_with_each_ejection_and_is_capped),
             PF_UNIT_TEST(test_ejection_count_decays_while_back_in_service),
             PF_UNIT_TEST(test_max_ejection_percent), PF_UNIT_TEST(test_latency_median),
             PF_UNIT_TEST(test_latency_average_follows_windows),
             PF_UNIT_TEST(test_latency_slow_for_the_interval_is_due),
             PF_UNIT_TEST(test_without_config_sets_pass_through),
             PF_UNIT_TEST(test_set_published_before_health_new_is_taken),
             PF_UNIT_TEST(test_discovery_and_check_verdicts_combine),
             PF_UNIT_TEST(test_unhealthy_until_proven),
             PF_UNIT_TEST(test_consecutive_5xx_eject_and_success_resets_the_streak),
             PF_UNIT_TEST(test_gateway_failures_have_their_own_threshold),
             PF_UNIT_TEST(test_max_ejection_percent_holds_and_freed_places_are_taken),
             PF_UNIT_TEST(test_ejected_again_for_longer_when_still_bad),
             PF_UNIT_TEST(test_single_endpoint_is_never_ejected),
             PF_UNIT_TEST(test_reports_from_many_threads_eject_once),
             PF_UNIT_TEST(test_grpc_health_request_bytes),
             PF_UNIT_TEST(test_grpc_health_response_status))
