/* Health for one cluster: per-endpoint state (active checks, ejections) kept on the main
 * thread's event loop, turned into the effective endpoint set workers balance over.
 *
 * Flow: the discovered slot changes -> sync_nodes() matches endpoints to their state by address
 * (new ones get state and an immediate check, removed ones lose theirs) -> publish() builds
 * the effective set. A check that flips a verdict, an ejection and its end publish again.
 * Workers never touch this state: health_report() counts on the endpoint's shared stats and
 * wakes the loop through an eventfd, and sweep() decides ejections here. */
#include "health/health.h"
#include "core/log.h"
#include "core/time.h"
#include "health/probe_int.h"
#include "health/verdict.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define REASON_MAX 96
#define CHECK_GRAIN_MS 20

typedef enum { EJECT_5XX, EJECT_GATEWAY, EJECT_LATENCY, EJECT_REASONS } eject_reason;

static const char *const eject_labels[EJECT_REASONS] = {"consecutive_5xx",
                                                        "consecutive_gateway_failure", "latency"};

/* One endpoint's health, found by address; heap-allocated so that the probe and timers
 * pointing at it stay put while the node array is rebuilt. */
typedef struct hnode {
    pf_health *h;
    pf_sockaddr addr;
    bool discovered_healthy;
    /* active checks */
    pf_check_state check;
    probe probe;
    struct event *next_check;
    char *request; /* http: the request bytes for this endpoint (Host may be its address) */
    size_t request_len;
    uint64_t started_ms;         /* when the last check started (monotonic) */
    uint64_t last_check_wall_us; /* 0: none finished yet */
    char last_result[PROBE_DETAIL_MAX];
    char last_failure[PROBE_DETAIL_MAX];
    /* passive outlier ejection */
    bool ejected;
    uint64_t ejected_until_ms, ejected_until_wall_us;
    uint32_t times_ejected; /* at the last ejection; decays from back_since_ms */
    uint64_t back_since_ms;
    uint64_t ejections_total;
    char eject_reason[REASON_MAX];
    /* latency ejection: the average, and whether the last tick found it slow for long enough */
    pf_latency_state latency;
    bool latency_due;
} hnode;

struct pf_health {
    struct event_base *base;
    const pf_config_cluster *cfg;
    const pf_config_health_check *hc;
    const pf_config_outlier *od;
    pf_endpoint_slot *discovered, *effective;
    pf_endpoint_set *view; /* the discovered set the nodes were synced to */
    hnode **nodes;         /* sorted by address text, like endpoint sets */
    size_t count;
    size_t ejected;
    bool started, subscribed;
    uint64_t rng;
    int wake_fd;
    _Atomic bool wake_pending;
    struct event *wake, *tick;
    uint64_t latency_at_ms;   /* when the last latency window was taken */
    double latency_median_us; /* of the judged endpoints at the last tick; 0: too few */
    pf_metrics *metrics;      /* the registry the series below are given back to */
    pf_counter *checks[PROBE_RESULTS];
    pf_counter *ejections[EJECT_REASONS];
    pf_gauge *ejected_gauge;
    pf_health_tls_fn tls; /* checks speak TLS through it; NULL: plaintext */
    void *tls_arg;
};

/* ---- small helpers ------------------------------------------------------------------ */

/* xorshift64*: jitter only needs to spread checks, not to be unpredictable. */
static uint64_t random_below(pf_health *h, uint64_t bound) {
    if (bound == 0)
        return 0;
    h->rng ^= h->rng >> 12;
    h->rng ^= h->rng << 25;
    h->rng ^= h->rng >> 27;
    return (h->rng * 2685821657736338717ull) % bound;
}

/* Binary search by address text in an array sorted like endpoint sets; key(arr, i) is
 * element i's address. Returns the index, or count when absent. */
static size_t addr_index(const void *arr, size_t count, const char *(*key)(const void *, size_t),
                         const char *addr) {
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key(arr, mid), addr);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return count;
}

static const char *node_key(const void *arr, size_t i) {
    return ((hnode *const *)arr)[i]->addr.text;
}

static const char *endpoint_key(const void *arr, size_t i) {
    return ((const pf_endpoint *)arr)[i].addr.text;
}

static hnode *find_node(const pf_health *h, const char *addr) {
    size_t i = addr_index(h->nodes, h->count, node_key, addr);
    return i < h->count ? h->nodes[i] : NULL;
}

static const pf_endpoint *set_find(const pf_endpoint_set *set, const char *addr) {
    if (!set)
        return NULL;
    size_t i = addr_index(set->endpoints, set->count, endpoint_key, addr);
    return i < set->count ? &set->endpoints[i] : NULL;
}

/* Whether health lets the endpoint serve (discovery's own verdict aside). */
static bool node_serving(const hnode *n) {
    return n->check.healthy && !n->ejected;
}

static const char *rfc3339(uint64_t wall_us, char *buf, size_t len) {
    time_t sec = (time_t)(wall_us / 1000000u);
    struct tm tm;
    if (!gmtime_r(&sec, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "%llu", (unsigned long long)sec);
    return buf;
}

static void reset_counters(pf_endpoint_stats *s) {
    if (!s)
        return;
    atomic_store_explicit(&s->consecutive_5xx, 0, memory_order_relaxed);
    atomic_store_explicit(&s->consecutive_gateway_failures, 0, memory_order_relaxed);
}

/* Forgets an endpoint's latency: it is judged afresh (after min_requests) when it serves
 * again, not on what it did before an ejection or a failed check. */
static void reset_latency(hnode *n, pf_endpoint_stats *s) {
    memset(&n->latency, 0, sizeof n->latency);
    n->latency_due = false;
    if (s) {
        atomic_store_explicit(&s->latency_sum_us, 0, memory_order_relaxed);
        atomic_store_explicit(&s->latency_count, 0, memory_order_relaxed);
    }
}

/* ---- publishing ------------------------------------------------------------------------ */

/* Builds the effective set from the discovered one and publishes it (the slot drops it when
 * nothing changed). Endpoints that turn healthy get healthy_since_ms on their stats before
 * the set that serves them is visible, so slow start never sees them without it. */
static void publish(pf_health *h) {
    pf_endpoint_set *view = h->view;
    if (!view)
        return;
    pf_endpoint *eps = malloc((view->count ? view->count : 1) * sizeof *eps);
    if (!eps) {
        log_error("health: effective set not built: out of memory cluster=%s", h->cfg->name);
        return;
    }
    pf_endpoint_set *prev = discovery_slot_acquire(h->effective);
    uint64_t now = pf_now_ms();
    for (size_t i = 0; i < view->count; i++) {
        eps[i] = view->endpoints[i];
        const hnode *n = find_node(h, eps[i].addr.text);
        eps[i].healthy = eps[i].healthy && (!n || node_serving(n));
        const pf_endpoint *before = set_find(prev, eps[i].addr.text);
        if (eps[i].healthy && before && !before->healthy && before->stats)
            atomic_store_explicit(&before->stats->healthy_since_ms, now ? now : 1,
                                  memory_order_relaxed);
    }
    pf_endpoint_set *set = discovery_set_new(eps, view->count);
    free(eps);
    discovery_set_unref(prev);
    if (!set) {
        log_error("health: effective set not built: out of memory cluster=%s", h->cfg->name);
        return;
    }
    discovery_slot_publish(h->effective, set);
}

/* ---- active checks ------------------------------------------------------------------- */

/* Checks due within the same CHECK_GRAIN_MS start together: one wake-up of the loop starts
 * a batch, and their answers tend to come back in the same epoll_wait. With a thousand
 * endpoints a second that is a few dozen wake-ups instead of thousands. The grid is on
 * libevent's cached clock, the one its timers are computed from, so a batch fires at once. */
static void schedule_check(hnode *n, uint64_t delay_ms) {
    struct timeval now;
    uint64_t now_ms = 0;
    if (event_base_gettimeofday_cached(n->h->base, &now) == 0)
        now_ms = (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_usec / 1000u;
    uint64_t at = (now_ms + delay_ms + CHECK_GRAIN_MS - 1) / CHECK_GRAIN_MS * CHECK_GRAIN_MS;
    struct timeval tv = pf_timeval_ms(at - now_ms);
    evtimer_add(n->next_check, &tv);
}

static void on_next_check(evutil_socket_t fd, short what, void *arg) {
    hnode *n = arg;
    pf_health *h = n->h;
    if (probe_busy(&n->probe))
        return;
    n->started_ms = pf_now_ms();
    if (h->hc->type == PF_CHECK_HTTP)
        probe_start(&n->probe, &n->addr, n->request, n->request_len);
    else if (h->hc->type == PF_CHECK_GRPC)
        probe_start(&n->probe, &n->addr, NULL, 0); /* the probe makes the call's bytes */
    else
        probe_start(&n->probe, &n->addr, h->hc->send, h->hc->send_len);
}

static void on_check_done(void *arg, probe_result result, const char *detail) {
    hnode *n = arg;
    pf_health *h = n->h;
    bool passed = result == PROBE_PASS;
    uint64_t now = pf_now_ms();
    if (h->checks[result])
        metrics_inc(h->checks[result], 1);
    n->last_check_wall_us = pf_wall_us();
    snprintf(n->last_result, sizeof n->last_result, "%s", detail);
    if (!passed)
        snprintf(n->last_failure, sizeof n->last_failure, "%s", detail);
    if (health_check_record(&n->check, h->hc, passed)) {
        if (n->check.healthy)
            log_info("health check passing: endpoint back cluster=%s endpoint=%s result=\"%s\"",
                     h->cfg->name, n->addr.text, detail);
        else
            log_warn("health check failing: endpoint out cluster=%s endpoint=%s result=\"%s\" "
                     "failures=%u",
                     h->cfg->name, n->addr.text, detail, n->check.failures);
        publish(h);
    } else if (!passed) {
        log_debug("health check failed cluster=%s endpoint=%s result=\"%s\" failures=%u",
                  h->cfg->name, n->addr.text, detail, n->check.failures);
    }
    /* Checks start every interval (plus jitter) whatever their duration; a check that took
     * longer than that is followed at once. */
    uint64_t wait = h->hc->interval_ms + random_below(h, h->hc->jitter_ms);
    uint64_t spent = now - n->started_ms;
    if (h->started)
        schedule_check(n, wait > spent ? wait - spent : 0);
}

static int build_request(pf_health *h, hnode *n) {
    const char *host = h->hc->host[0] ? h->hc->host : n->addr.text;
    static const char fmt[] =
        "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: pilotfish-health-check\r\n"
        "Accept: */*\r\n\r\n";
    int len = snprintf(NULL, 0, fmt, h->hc->path, host);
    if (len < 0 || !(n->request = malloc((size_t)len + 1)))
        return PF_ENOMEM;
    snprintf(n->request, (size_t)len + 1, fmt, h->hc->path, host);
    n->request_len = (size_t)len;
    return PF_OK;
}

/* ---- nodes ------------------------------------------------------------------------------ */

static void node_free(hnode *n) {
    if (!n)
        return;
    probe_release(&n->probe);
    if (n->next_check)
        event_free(n->next_check);
    free(n->request);
    free(n);
}

static hnode *node_new(pf_health *h, const pf_endpoint *ep) {
    hnode *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->h = h;
    n->addr = ep->addr;
    health_check_init(&n->check, h->hc);
    n->back_since_ms = pf_now_ms();
    n->next_check = evtimer_new(h->base, on_next_check, n);
    if (probe_init(&n->probe, h->base, h->hc, on_check_done, n) != PF_OK || !n->next_check ||
        (h->hc->type == PF_CHECK_HTTP && build_request(h, n) != PF_OK)) {
        node_free(n);
        return NULL;
    }
    n->probe.tls = h->tls;
    n->probe.tls_arg = h->tls_arg;
    return n;
}

void health_set_tls(pf_health *h, pf_health_tls_fn fn, void *arg) {
    h->tls = fn;
    h->tls_arg = arg;
    for (size_t i = 0; i < h->count; i++) {
        probe_cancel(&h->nodes[i]->probe); /* a plaintext connection kept from before */
        h->nodes[i]->probe.tls = fn;
        h->nodes[i]->probe.tls_arg = arg;
    }
}

/* A node leaving the cluster takes its ejection with it. */
static void node_drop(pf_health *h, hnode *n) {
    if (n->ejected) {
        h->ejected--;
        metrics_gauge_add(h->ejected_gauge, -1);
    }
    node_free(n);
}

static bool checks_enabled(const pf_health *h) {
    return h->hc->type != PF_CHECK_NONE;
}

/* New endpoints are checked at once (within the jitter, which spreads a large new set). */
static void schedule_first_check(pf_health *h, hnode *n) {
    if (h->started && checks_enabled(h) && !probe_busy(&n->probe) &&
        !evtimer_pending(n->next_check, NULL))
        schedule_check(n, random_below(h, h->hc->jitter_ms));
}

/* Matches the nodes to the discovered slot's current set by address. Returns true when the
 * set changed. An endpoint whose node cannot be allocated passes through unchecked. */
static bool sync_nodes(pf_health *h) {
    pf_endpoint_set *set = discovery_slot_acquire(h->discovered);
    if (!set || set == h->view) {
        discovery_set_unref(set);
        return false;
    }
    hnode **nodes = calloc(set->count ? set->count : 1, sizeof *nodes);
    if (!nodes) {
        log_error("health: endpoint set not followed: out of memory cluster=%s", h->cfg->name);
        discovery_set_unref(set);
        return false;
    }
    size_t kept = 0, old = 0;
    for (size_t i = 0; i < set->count; i++) {
        const pf_endpoint *ep = &set->endpoints[i];
        /* both sorted by address text: a merge walk */
        while (old < h->count && strcmp(h->nodes[old]->addr.text, ep->addr.text) < 0)
            node_drop(h, h->nodes[old++]);
        hnode *n;
        if (old < h->count && strcmp(h->nodes[old]->addr.text, ep->addr.text) == 0) {
            n = h->nodes[old++];
        } else if (!(n = node_new(h, ep))) {
            log_error("health: endpoint not checked: out of memory cluster=%s endpoint=%s",
                      h->cfg->name, ep->addr.text);
            continue;
        }
        n->discovered_healthy = ep->healthy;
        nodes[kept++] = n;
    }
    while (old < h->count)
        node_drop(h, h->nodes[old++]);
    free(h->nodes);
    h->nodes = nodes;
    h->count = kept;
    discovery_set_unref(h->view);
    h->view = set;
    for (size_t i = 0; i < h->count; i++)
        schedule_first_check(h, h->nodes[i]);
    return true;
}

static void on_discovered(void *arg) {
    pf_health *h = arg;
    if (sync_nodes(h))
        publish(h);
}

/* ---- passive outlier ejection ------------------------------------------------------------ */

static void eject(pf_health *h, hnode *n, pf_endpoint_stats *stats, eject_reason reason,
                  const char *why, uint64_t now) {
    uint32_t times = health_ejections_decayed(h->od, n->times_ejected, now - n->back_since_ms);
    n->times_ejected = times + 1;
    uint64_t ms = health_ejection_ms(h->od, n->times_ejected);
    n->ejected = true;
    n->ejected_until_ms = now + ms;
    n->ejected_until_wall_us = pf_wall_us() + ms * 1000u;
    n->ejections_total++;
    snprintf(n->eject_reason, sizeof n->eject_reason, "%s", why);
    h->ejected++;
    metrics_gauge_add(h->ejected_gauge, 1);
    metrics_inc(h->ejections[reason], 1);
    reset_counters(stats);
    reset_latency(n, stats);
    log_warn("endpoint ejected cluster=%s endpoint=%s reason=\"%s\" ejection_ms=%llu times=%u",
             h->cfg->name, n->addr.text, n->eject_reason, (unsigned long long)ms, n->times_ejected);
}

/* Ends ejections whose time is up, then ejects endpoints over a threshold while the
 * cluster's budget allows. Ends come first so that their places can be taken at once. */
static void sweep(pf_health *h) {
    if (!h->od->enabled)
        return;
    pf_endpoint_set *eff = discovery_slot_acquire(h->effective);
    uint64_t now = pf_now_ms();
    bool changed = false;
    for (size_t i = 0; i < h->count; i++) {
        hnode *n = h->nodes[i];
        if (!n->ejected || now < n->ejected_until_ms)
            continue;
        n->ejected = false;
        n->back_since_ms = now;
        h->ejected--;
        metrics_gauge_add(h->ejected_gauge, -1);
        const pf_endpoint *ep = set_find(eff, n->addr.text);
        reset_counters(ep ? ep->stats : NULL);
        reset_latency(n, ep ? ep->stats : NULL);
        log_info("endpoint back from ejection cluster=%s endpoint=%s times=%u", h->cfg->name,
                 n->addr.text, n->times_ejected);
        changed = true;
    }
    size_t budget = health_max_ejected(h->od, h->view ? h->view->count : 0);
    for (size_t i = 0; eff && i < eff->count; i++) {
        const pf_endpoint *ep = &eff->endpoints[i];
        hnode *n;
        if (!ep->healthy || !ep->stats || !(n = find_node(h, ep->addr.text)) || n->ejected)
            continue;
        uint32_t c5 = atomic_load_explicit(&ep->stats->consecutive_5xx, memory_order_relaxed);
        uint32_t cg =
            atomic_load_explicit(&ep->stats->consecutive_gateway_failures, memory_order_relaxed);
        /* The threshold, not the count, goes into the reason: workers may have added more
         * failures before this loop woke, and the rule is what explains the ejection. */
        eject_reason reason;
        char why[REASON_MAX];
        if (h->od->consecutive_gateway_failure && cg >= h->od->consecutive_gateway_failure) {
            reason = EJECT_GATEWAY;
            snprintf(why, sizeof why, "%u consecutive gateway failures",
                     h->od->consecutive_gateway_failure);
        } else if (h->od->consecutive_5xx && c5 >= h->od->consecutive_5xx) {
            reason = EJECT_5XX;
            snprintf(why, sizeof why, "%u consecutive 5xx", h->od->consecutive_5xx);
        } else if (n->latency_due) {
            reason = EJECT_LATENCY;
            char span[32];
            snprintf(why, sizeof why, "latency %.1fms above %u x the median %.1fms for %s",
                     n->latency.average_us / 1000.0, h->od->latency.factor,
                     h->latency_median_us / 1000.0,
                     pf_duration_format(h->od->latency.interval_ms, span, sizeof span));
        } else {
            continue;
        }
        if (h->ejected >= budget) {
            /* stays a candidate: the next tick tries again */
            log_debug("ejection refused: max_ejection_percent reached cluster=%s endpoint=%s "
                      "ejected=%zu max=%zu",
                      h->cfg->name, ep->addr.text, h->ejected, budget);
            continue;
        }
        eject(h, n, ep->stats, reason, why, now);
        changed = true;
    }
    discovery_set_unref(eff);
    if (changed)
        publish(h);
}

static void on_wake(evutil_socket_t fd, short what, void *arg) {
    pf_health *h = arg;
    uint64_t value;
    while (read(h->wake_fd, &value, sizeof value) < 0 && errno == EINTR)
        ;
    atomic_store_explicit(&h->wake_pending, false, memory_order_relaxed);
    sweep(h);
}

/* Once per outlier tick: takes each serving endpoint's latency window from its shared stats,
 * folds it into the endpoint's average, and marks the endpoints that have been slower than
 * factor x the median of the judged ones for the whole latency interval; sweep() ejects
 * them within the same budget as failing ones. Endpoints that do not serve (ejected, failing
 * checks, not ready) are forgotten and judged afresh when they come back. */
static void latency_tick(pf_health *h) {
    const pf_config_outlier_latency *lat = &h->od->latency;
    pf_endpoint_set *eff = discovery_slot_acquire(h->effective);
    uint64_t now = pf_now_ms();
    uint64_t elapsed = h->latency_at_ms && now > h->latency_at_ms ? now - h->latency_at_ms : 0;
    h->latency_at_ms = now;
    double *values = malloc((h->count ? h->count : 1) * sizeof *values);
    if (!values) {
        log_error("health: latency not judged: out of memory cluster=%s", h->cfg->name);
        discovery_set_unref(eff);
        return;
    }
    size_t judged = 0;
    for (size_t i = 0; i < h->count; i++) {
        hnode *n = h->nodes[i];
        const pf_endpoint *ep = set_find(eff, n->addr.text);
        if (!ep || !ep->stats || !ep->healthy || n->ejected) {
            reset_latency(n, ep ? ep->stats : NULL);
            continue;
        }
        uint64_t sum =
            atomic_exchange_explicit(&ep->stats->latency_sum_us, 0, memory_order_relaxed);
        uint64_t count =
            atomic_exchange_explicit(&ep->stats->latency_count, 0, memory_order_relaxed);
        health_latency_add(&n->latency, lat, sum, count, elapsed);
        if (health_latency_judged(&n->latency, lat))
            values[judged++] = n->latency.average_us;
    }
    discovery_set_unref(eff);
    /* One endpoint alone has no cluster to be slower than. */
    h->latency_median_us = judged >= 2 ? health_latency_median(values, judged) : 0.0;
    free(values);
    for (size_t i = 0; i < h->count; i++) {
        hnode *n = h->nodes[i];
        n->latency_due = judged >= 2 && !n->ejected && health_latency_judged(&n->latency, lat) &&
                         health_latency_slow(&n->latency, lat, h->latency_median_us, now);
        if (judged < 2 || !health_latency_judged(&n->latency, lat))
            n->latency.slow_since_ms = 0;
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    pf_health *h = arg;
    if (h->od->latency.enabled)
        latency_tick(h);
    sweep(h);
}

/* Any thread: the counters are shared atomics, and a success writes only when there is a
 * streak to end, so the common case leaves the cache line shared. */
void health_report(pf_health *h, const pf_endpoint *ep, pf_health_outcome outcome) {
    if (!h || !ep || !ep->stats || !h->od->enabled)
        return;
    pf_endpoint_stats *s = ep->stats;
    uint32_t c5 = 0, cg = 0;
    switch (outcome) {
    case PF_HEALTH_SUCCESS:
        if (atomic_load_explicit(&s->consecutive_5xx, memory_order_relaxed) ||
            atomic_load_explicit(&s->consecutive_gateway_failures, memory_order_relaxed))
            reset_counters(s);
        return;
    case PF_HEALTH_5XX:
        c5 = atomic_fetch_add_explicit(&s->consecutive_5xx, 1, memory_order_relaxed) + 1;
        if (atomic_load_explicit(&s->consecutive_gateway_failures, memory_order_relaxed))
            atomic_store_explicit(&s->consecutive_gateway_failures, 0, memory_order_relaxed);
        break;
    case PF_HEALTH_GATEWAY_FAILURE:
        c5 = atomic_fetch_add_explicit(&s->consecutive_5xx, 1, memory_order_relaxed) + 1;
        cg = atomic_fetch_add_explicit(&s->consecutive_gateway_failures, 1, memory_order_relaxed) +
             1;
        break;
    }
    /* Exactly at the threshold: one wake per streak; a refused ejection is retried by the
     * tick, not by more wakes. */
    if ((c5 && c5 == h->od->consecutive_5xx) || (cg && cg == h->od->consecutive_gateway_failure)) {
        if (!atomic_exchange_explicit(&h->wake_pending, true, memory_order_relaxed)) {
            uint64_t one = 1;
            ssize_t n = write(h->wake_fd, &one, sizeof one);
            (void)n; /* a full counter already wakes the loop */
        }
    }
}

void health_report_latency(pf_health *h, const pf_endpoint *ep, uint64_t latency_us) {
    if (!h || !ep || !ep->stats || !h->od->enabled || !h->od->latency.enabled)
        return;
    atomic_fetch_add_explicit(&ep->stats->latency_sum_us, latency_us, memory_order_relaxed);
    atomic_fetch_add_explicit(&ep->stats->latency_count, 1, memory_order_relaxed);
}

/* ---- life cycle ----------------------------------------------------------------------- */

static void register_metrics(pf_health *h, pf_metrics *m) {
    char labels[PF_NAME_MAX + 64];
    h->metrics = m;
    if (checks_enabled(h)) {
        for (int r = 0; r < PROBE_RESULTS; r++) {
            snprintf(labels, sizeof labels, "cluster=\"%s\",result=\"%s\"", h->cfg->name,
                     probe_result_name((probe_result)r));
            h->checks[r] = metrics_counter(m, "pilotfish_health_checks_total",
                                           "Active health checks finished, by result.", labels);
        }
    }
    if (h->od->enabled) {
        for (int r = 0; r < EJECT_REASONS; r++) {
            if (r == EJECT_LATENCY && !h->od->latency.enabled)
                continue;
            snprintf(labels, sizeof labels, "cluster=\"%s\",reason=\"%s\"", h->cfg->name,
                     eject_labels[r]);
            h->ejections[r] = metrics_counter(m, "pilotfish_outlier_ejections_total",
                                              "Endpoints ejected by outlier detection.", labels);
        }
        snprintf(labels, sizeof labels, "cluster=\"%s\"", h->cfg->name);
        h->ejected_gauge = metrics_gauge(m, "pilotfish_outlier_ejected_endpoints",
                                         "Endpoints ejected by outlier detection now.", labels);
    }
}

pf_health *health_new(struct event_base *base, const pf_config_cluster *cfg,
                      pf_endpoint_slot *discovered, pf_endpoint_slot *effective,
                      pf_metrics *metrics, pf_error *err) {
    pf_health *h = calloc(1, sizeof *h);
    if (!h) {
        pf_fail(err, PF_ENOMEM, "health: out of memory for cluster %s", cfg->name);
        return NULL;
    }
    h->base = base;
    h->cfg = cfg;
    h->hc = &cfg->health_check;
    h->od = &cfg->outlier;
    h->discovered = discovered;
    h->effective = effective;
    h->wake_fd = -1;
    h->rng = (pf_wall_us() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)h) | 1;
    atomic_init(&h->wake_pending, false);
    h->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (h->wake_fd < 0) {
        pf_fail(err, PF_EIO, "health: cluster %s: eventfd: %s", cfg->name, strerror(errno));
        goto fail;
    }
    h->wake = event_new(base, h->wake_fd, EV_READ | EV_PERSIST, on_wake, h);
    h->tick = event_new(base, -1, EV_PERSIST, on_tick, h);
    if (!h->wake || !h->tick) {
        pf_fail(err, PF_ENOMEM, "health: out of memory for cluster %s", cfg->name);
        goto fail;
    }
    register_metrics(h, metrics);
    if ((h->od->enabled && (!h->ejected_gauge || !h->ejections[0] || !h->ejections[1] ||
                            (h->od->latency.enabled && !h->ejections[EJECT_LATENCY]))) ||
        (checks_enabled(h) && !h->checks[0])) {
        pf_fail(err, PF_ENOMEM, "health: out of memory for cluster %s metrics", cfg->name);
        goto fail;
    }
    if (discovery_slot_subscribe(discovered, on_discovered, h) != PF_OK) {
        pf_fail(err, PF_ELIMIT, "health: cluster %s: the discovered slot has %d subscribers",
                cfg->name, PF_SLOT_SUBSCRIBERS_MAX);
        goto fail;
    }
    h->subscribed = true;
    on_discovered(h);
    return h;
fail:
    health_free(h);
    return NULL;
}

int health_start(pf_health *h) {
    h->started = true;
    on_discovered(h); /* anything published between health_new and now */
    for (size_t i = 0; i < h->count; i++)
        schedule_first_check(h, h->nodes[i]);
    if (event_add(h->wake, NULL) < 0)
        return PF_ENOMEM;
    if (h->od->enabled) {
        struct timeval tv = pf_timeval_ms(h->od->interval_ms);
        if (event_add(h->tick, &tv) < 0)
            return PF_ENOMEM;
    }
    return PF_OK;
}

void health_stop(pf_health *h) {
    if (!h)
        return;
    h->started = false;
    for (size_t i = 0; i < h->count; i++) {
        probe_cancel(&h->nodes[i]->probe);
        evtimer_del(h->nodes[i]->next_check);
    }
    if (h->wake)
        event_del(h->wake);
    if (h->tick)
        event_del(h->tick);
}

void health_free(pf_health *h) {
    if (!h)
        return;
    health_stop(h);
    if (h->subscribed)
        discovery_slot_unsubscribe(h->discovered, on_discovered, h);
    for (size_t i = 0; i < h->count; i++)
        node_free(h->nodes[i]);
    free(h->nodes);
    discovery_set_unref(h->view);
    if (h->wake)
        event_free(h->wake);
    if (h->tick)
        event_free(h->tick);
    if (h->wake_fd >= 0)
        close(h->wake_fd);
    /* A removed discovered cluster's series leave the exposition with it. */
    for (int r = 0; r < PROBE_RESULTS; r++)
        metrics_release(h->metrics, h->checks[r]);
    for (int r = 0; r < EJECT_REASONS; r++)
        metrics_release(h->metrics, h->ejections[r]);
    metrics_release(h->metrics, h->ejected_gauge);
    free(h);
}

/* ---- admin ---------------------------------------------------------------------------------- */

static pf_health_verdict describe_status(const pf_health *h, const hnode *n, char *buf,
                                         size_t len) {
    char when[40];
    if (!n->discovered_healthy) {
        snprintf(buf, len, "unhealthy: not ready in discovery");
        return PF_HEALTH_NOT_READY;
    }
    if (!n->check.healthy && n->check.pending) {
        snprintf(buf, len, "unhealthy: pending first check");
        return PF_HEALTH_UNCHECKED;
    }
    if (!n->check.healthy) {
        snprintf(buf, len, "unhealthy: check failed: %s", n->last_failure);
        return PF_HEALTH_CHECK_FAILED;
    }
    if (n->ejected) {
        snprintf(buf, len, "ejected until %s (%s)",
                 rfc3339(n->ejected_until_wall_us, when, sizeof when), n->eject_reason);
        return PF_HEALTH_EJECTED;
    }
    snprintf(buf, len, n->check.pending ? "healthy: pending first check" : "healthy");
    return PF_HEALTH_HEALTHY;
}

pf_health_verdict health_verdict(pf_health *h, const pf_endpoint *ep, char *reason, size_t len) {
    const hnode *n = h && ep ? find_node(h, ep->addr.text) : NULL;
    if (n)
        return describe_status(h, n, reason, len);
    snprintf(reason, len, "%s", ep && ep->healthy ? "healthy" : "unhealthy");
    return ep && ep->healthy ? PF_HEALTH_HEALTHY : PF_HEALTH_NOT_READY;
}

void health_describe(pf_health *h, const pf_endpoint *ep, json_t *into) {
    char status[PF_HEALTH_REASON_MAX], when[40];
    health_verdict(h, ep, status, sizeof status);
    json_object_set_new(into, "health", json_string(status));
    const hnode *n = h && ep ? find_node(h, ep->addr.text) : NULL;
    if (!n)
        return;
    if (checks_enabled(h)) {
        json_t *c = json_object();
        json_object_set_new(c, "last_check",
                            n->last_check_wall_us
                                ? json_string(rfc3339(n->last_check_wall_us, when, sizeof when))
                                : json_null());
        json_object_set_new(c, "last_result",
                            n->last_check_wall_us ? json_string(n->last_result) : json_null());
        json_object_set_new(c, "passes", json_integer(n->check.passes));
        json_object_set_new(c, "failures", json_integer(n->check.failures));
        json_object_set_new(into, "health_check", c);
    }
    if (h->od->enabled) {
        json_t *o = json_object();
        json_object_set_new(o, "ejected", json_boolean(n->ejected));
        json_object_set_new(o, "ejected_until",
                            n->ejected
                                ? json_string(rfc3339(n->ejected_until_wall_us, when, sizeof when))
                                : json_null());
        json_object_set_new(o, "ejections_total", json_integer((json_int_t)n->ejections_total));
        pf_endpoint_stats *s = ep->stats;
        json_object_set_new(
            o, "consecutive_5xx",
            json_integer(s ? atomic_load_explicit(&s->consecutive_5xx, memory_order_relaxed) : 0));
        json_object_set_new(o, "consecutive_gateway_failures",
                            json_integer(s ? atomic_load_explicit(&s->consecutive_gateway_failures,
                                                                  memory_order_relaxed)
                                           : 0));
        if (h->od->latency.enabled) {
            bool judged = health_latency_judged(&n->latency, &h->od->latency);
            json_object_set_new(o, "latency_ms",
                                judged ? json_real(n->latency.average_us / 1000.0) : json_null());
            json_object_set_new(o, "latency_samples", json_integer((json_int_t)n->latency.samples));
        }
        json_object_set_new(into, "outlier", o);
    }
}
