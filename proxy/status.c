/* Read-only views of the proxy's counters for admin's status page: relaxed loads of the
 * same atomics /stats/prometheus renders, so the page and the metrics agree. */
#include "proxy/proxy_int.h"

_Static_assert(PF_PROXY_CODE_CLASSES == PF_CODE_CLASSES, "one list of status classes");

static const char *const class_names[PF_CODE_CLASSES] = {"1xx", "2xx", "3xx",
                                                         "4xx", "5xx", "other"};

const char *proxy_code_class_name(size_t code_class) {
    return code_class < PF_CODE_CLASSES ? class_names[code_class] : "other";
}

/* Slots are reused (removed clusters, replaced listeners): each new occupant gets the next
 * number. Starts at 1, so 0 is never a live one. */
static _Atomic uint64_t last_series;

uint64_t proxy_status_series(void) {
    return atomic_fetch_add_explicit(&last_series, 1, memory_order_relaxed) + 1;
}

static uint64_t counter_value(const pf_counter *c) {
    return c ? atomic_load_explicit(&c->value, memory_order_relaxed) : 0;
}

static int64_t gauge_value(const pf_gauge *g) {
    return g ? atomic_load_explicit(&g->value, memory_order_relaxed) : 0;
}

void proxy_listener_status(const pf_proxy *proxy, size_t index, pf_proxy_listener_status *out) {
    const pf_listener_rt *l = &proxy->listeners[proxy->listener_slot[index]];
    for (size_t i = 0; i < PF_CODE_CLASSES; i++)
        out->requests[i] = counter_value(l->requests[i]);
    out->connections_total = counter_value(l->connections_total);
    out->connections_active = gauge_value(l->connections_active);
    out->rejected = counter_value(l->errors_total);
    /* the listener's histogram is kept by status class for the exposition; the page wants
     * one over all requests */
    pf_histogram *all = &out->duration_all;
    for (size_t b = 0; b < PF_HISTOGRAM_BUCKETS; b++)
        atomic_init(&all->buckets[b], 0);
    atomic_init(&all->count, 0);
    atomic_init(&all->sum_us, 0);
    for (size_t i = 0; i < PF_CODE_CLASSES; i++) {
        const pf_histogram *h = l->duration[i];
        if (!h)
            continue;
        for (size_t b = 0; b < PF_HISTOGRAM_BUCKETS; b++)
            atomic_fetch_add_explicit(&all->buckets[b],
                                      atomic_load_explicit(&h->buckets[b], memory_order_relaxed),
                                      memory_order_relaxed);
        atomic_fetch_add_explicit(&all->count,
                                  atomic_load_explicit(&h->count, memory_order_relaxed),
                                  memory_order_relaxed);
        atomic_fetch_add_explicit(&all->sum_us,
                                  atomic_load_explicit(&h->sum_us, memory_order_relaxed),
                                  memory_order_relaxed);
    }
    out->duration = all;
    out->series = l->series;
}

void proxy_cluster_status(const pf_proxy *proxy, size_t index, pf_proxy_cluster_status *out) {
    const pf_cluster_rt *c = &proxy->clusters[index];
    for (size_t i = 0; i < PF_CODE_CLASSES; i++)
        out->requests[i] = counter_value(c->requests[i]);
    out->active_requests = atomic_load_explicit(&c->active_requests, memory_order_relaxed);
    out->connections_active = gauge_value(c->connections_active);
    out->retries = counter_value(c->retries);
    out->duration = c->request_duration;
    out->panic = proxy_cluster_panic(proxy, index);
    out->series = c->series;
}
