/* stats.per_endpoint: series labelled with each endpoint's address. They are read at scrape
 * time from the endpoints' shared stats (discovery attaches one per address), so only the
 * endpoints in a cluster's current set appear: an endpoint that leaves takes its series along
 * and the exposition never grows with time, only with the endpoints there now. The workers
 * update the status classes and the histogram only while the setting is on. */
#include "proxy/proxy_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(PF_ENDPOINT_CODE_CLASSES == PF_CODE_CLASSES, "one list of status classes");

typedef enum {
    EP_REQUESTS,
    EP_DURATION,
    EP_ACTIVE,
    EP_CONNECT_FAILURES,
    EP_HEALTHY,
} ep_series;

typedef struct ep_family {
    const pf_proxy *proxy;
    ep_series which;
} ep_family;

typedef struct ep_emit {
    ep_series which;
    pf_metric_emit emit;
    pf_histogram_emit emit_histogram;
    void *ctx;
} ep_emit;

static uint64_t load(_Atomic uint64_t *v) {
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void emit_endpoint(const ep_emit *e, const char *cluster, const pf_endpoint *ep) {
    char labels[256];
    pf_endpoint_stats *s = ep->stats;
    if (e->which == EP_REQUESTS) {
        for (size_t i = 0; i < PF_CODE_CLASSES; i++) {
            snprintf(labels, sizeof labels, "cluster=\"%s\",endpoint=\"%s\",code_class=\"%s\"",
                     cluster, ep->addr.text, proxy_code_class_name(i));
            e->emit(e->ctx, labels, (double)load(&s->responses[i]));
        }
        return;
    }
    snprintf(labels, sizeof labels, "cluster=\"%s\",endpoint=\"%s\"", cluster, ep->addr.text);
    switch (e->which) {
    case EP_DURATION:
        e->emit_histogram(e->ctx, labels, &s->duration);
        break;
    case EP_ACTIVE:
        e->emit(e->ctx, labels, (double)load(&s->active_requests));
        break;
    case EP_CONNECT_FAILURES:
        e->emit(e->ctx, labels, (double)load(&s->connect_failures_total));
        break;
    case EP_HEALTHY:
        e->emit(e->ctx, labels, ep->healthy ? 1 : 0);
        break;
    case EP_REQUESTS:
        break;
    }
}

/* Every endpoint of every cluster's current set, once: a set is sorted by address, so an
 * address listed twice is next to itself and shares its stats. */
static void walk(const pf_proxy *proxy, const ep_emit *e) {
    size_t n = atomic_load_explicit(&proxy->cluster_count, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        const pf_cluster_rt *c = &proxy->clusters[i];
        if (atomic_load(&c->retired) || !c->cfg)
            continue;
        pf_endpoint_set *set = discovery_slot_acquire(c->slot);
        for (size_t k = 0; set && k < set->count; k++) {
            const pf_endpoint *ep = &set->endpoints[k];
            if (!ep->stats || (k > 0 && set->endpoints[k - 1].stats == ep->stats))
                continue;
            emit_endpoint(e, c->cfg->name, ep);
        }
        discovery_set_unref(set);
    }
}

static void emit_values(void *arg, pf_metric_emit emit, void *ctx) {
    const ep_family *f = arg;
    walk(f->proxy, &(ep_emit){.which = f->which, .emit = emit, .ctx = ctx});
}

static void emit_histograms(void *arg, pf_histogram_emit emit, void *ctx) {
    const ep_family *f = arg;
    walk(f->proxy, &(ep_emit){.which = f->which, .emit_histogram = emit, .ctx = ctx});
}

/* One row per family, in ep_series order. */
static const struct {
    const char *name;
    const char *help;
    enum { FN_COUNTER, FN_GAUGE, FN_HISTOGRAM } kind;
} families[] = {
    [EP_REQUESTS] = {"pilotfish_upstream_endpoint_requests_total",
                     "Requests whose last attempt went to this endpoint, by response status "
                     "class (stats.per_endpoint).",
                     FN_COUNTER},
    [EP_DURATION] = {"pilotfish_upstream_endpoint_request_duration_seconds",
                     "Time from an attempt's endpoint pick to the end of its response, per "
                     "endpoint (stats.per_endpoint).",
                     FN_HISTOGRAM},
    [EP_ACTIVE] = {"pilotfish_upstream_endpoint_active_requests",
                   "Requests in flight to this endpoint (stats.per_endpoint).", FN_GAUGE},
    [EP_CONNECT_FAILURES] = {"pilotfish_upstream_endpoint_connect_failures_total",
                             "Connection attempts to this endpoint refused or failed "
                             "(stats.per_endpoint).",
                             FN_COUNTER},
    [EP_HEALTHY] = {"pilotfish_upstream_endpoint_healthy",
                    "1 while this endpoint is healthy, 0 while not (stats.per_endpoint).",
                    FN_GAUGE},
};

int proxy_endpoint_metrics_register(pf_proxy *proxy, pf_metrics *m) {
    size_t n = sizeof families / sizeof families[0];
    ep_family *f = calloc(n, sizeof *f);
    proxy->endpoint_families = f;
    if (!f)
        return PF_ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        f[i] = (ep_family){proxy, (ep_series)i};
        if (families[i].kind == FN_HISTOGRAM)
            rc |= metrics_histogram_callback(m, families[i].name, families[i].help, emit_histograms,
                                             &f[i]);
        else if (families[i].kind == FN_COUNTER)
            rc |=
                metrics_counter_callback(m, families[i].name, families[i].help, emit_values, &f[i]);
        else
            rc |= metrics_gauge_callback(m, families[i].name, families[i].help, emit_values, &f[i]);
    }
    return rc ? PF_ENOMEM : PF_OK;
}
