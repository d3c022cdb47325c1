/* Endpoint sets: the contract between discovery sources and balancers.
 *
 * A source (static config today; DNS and Kubernetes later) builds a pf_endpoint_set and
 * publishes it into the cluster's pf_endpoint_slot. A set is immutable and reference
 * counted. Workers read through a pf_set_cache: on the request path that costs one atomic
 * load of the slot's generation; only when the generation moved does the worker take the
 * slot's mutex (once per publish per worker) to swap its reference. The old set is freed by
 * whoever drops the last reference.
 *
 * Per-endpoint counters (pf_endpoint_stats) outlive snapshots: the slot keeps one per
 * address, so an endpoint present in two consecutive sets keeps its counters. */
#ifndef PF_DISCOVERY_ENDPOINT_SET_H
#define PF_DISCOVERY_ENDPOINT_SET_H

#include "config/config.h"
#include "core/metrics.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Counters shared by every worker for one endpoint of one cluster. */
#define PF_ENDPOINT_CODE_CLASSES 6

typedef struct pf_endpoint_stats {
    _Atomic uint64_t active_requests;
    _Atomic uint64_t requests_total;
    _Atomic uint64_t connect_failures_total;
    _Atomic uint32_t refs;
    /* Passive outlier detection (health/): failures in a row that workers reported through
     * health_report(); any success resets both. */
    _Atomic uint32_t consecutive_5xx;
    _Atomic uint32_t consecutive_gateway_failures;
    /* Latency ejection (health/): response latencies workers reported through
     * health_report_latency() since health last took them (it swaps both to 0 each tick).
     * Two separate atomics: a sample read between the two adds lands its sum in one window
     * and its count in the next, which the average absorbs. */
    _Atomic uint64_t latency_sum_us;
    _Atomic uint64_t latency_count;
    /* pf_now_ms() when health last turned the endpoint from unhealthy back to healthy (for
     * slow start); 0 when it has not been down since it appeared. */
    _Atomic uint64_t healthy_since_ms;
    /* pf_now_ms() when the endpoint joined the slot; 0 when it came while the slot had no
     * endpoint (the first set): then there is nobody to shield it from, and slow start,
     * which ramps from the later of this and healthy_since_ms, leaves it alone. */
    _Atomic uint64_t first_seen_ms;
    /* least_response_time: the latency average (us) as the worker that saw the latest
     * response computed it; 0 until measured. For the admin status page only. */
    _Atomic uint64_t ewma_latency_us;
    /* stats.per_endpoint (proxy/): the responses by status class (1xx..5xx, other) and the
     * attempts' durations, updated only while that is on. */
    _Atomic uint64_t responses[PF_ENDPOINT_CODE_CLASSES];
    pf_histogram duration;
} pf_endpoint_stats;

/* Public because balancers walk endpoints on every request. Fields never change after
 * the set is published. */
typedef struct pf_endpoint {
    pf_sockaddr addr;
    uint32_t weight;   /* >= 1 */
    uint32_t priority; /* failover tier, 0 = best */
    bool healthy;      /* discovery's and health checking's verdicts combined */
    char zone[PF_NAME_MAX];
    char node_name[PF_NAME_MAX]; /* Kubernetes nodeName, cut to fit; "" when unknown */
    pf_endpoint_stats *stats;    /* attached by discovery_slot_publish */
} pf_endpoint;

/* Public for inline access on the hot path; treat as read-only. */
typedef struct pf_endpoint_set {
    _Atomic uint32_t refs;
    uint64_t version; /* the slot generation it was published as */
    size_t count;
    size_t healthy_count;
    uint64_t total_weight;   /* over healthy endpoints */
    bool equal_weights;      /* all healthy endpoints have the same weight */
    pf_endpoint endpoints[]; /* sorted by address text, so equal sets compare equal */
} pf_endpoint_set;

typedef struct pf_endpoint_slot pf_endpoint_slot;

/* Builds a set from `count` endpoints (copied; stats pointers ignored). Duplicated
 * addresses keep the first. Returns a set with one reference owned by the caller, or NULL
 * when out of memory. Any thread. */
pf_endpoint_set *discovery_set_new(const pf_endpoint *endpoints, size_t count);
pf_endpoint_set *discovery_set_ref(pf_endpoint_set *set);
void discovery_set_unref(pf_endpoint_set *set);
/* A copy of `src` (same endpoints, stats and version) with each endpoint's weight and
 * healthy flag replaced by weights[i] and healthy[i]; for views derived from a published
 * set, such as failover tiers. Returns a set with one reference, or NULL. Any thread. */
pf_endpoint_set *discovery_set_derive(const pf_endpoint_set *src, const uint32_t *weights,
                                      const bool *healthy);
/* True when both sets hold the same endpoints with the same attributes. */
bool discovery_set_equal(const pf_endpoint_set *a, const pf_endpoint_set *b);

/* A slot is owned by its cluster; name is used in logs. Returns NULL on allocation failure. */
pf_endpoint_slot *discovery_slot_new(const char *name);
void discovery_slot_free(pf_endpoint_slot *slot);
/* Publishes `set`, taking over the caller's reference. A set equal to the current one is
 * dropped and nothing changes (returns false); otherwise returns true. Any thread. */
bool discovery_slot_publish(pf_endpoint_slot *slot, pf_endpoint_set *set);
/* A new reference to the current set (NULL before the first publish). Takes the mutex:
 * not for the request path; use a pf_set_cache there. Any thread. */
pf_endpoint_set *discovery_slot_acquire(pf_endpoint_slot *slot);
/* 0 until the first publish, then increments once per published change. */
uint64_t discovery_slot_generation(const pf_endpoint_slot *slot);
const char *discovery_slot_name(const pf_endpoint_slot *slot);

/* Subscribers learn that a slot changed: health/ watches the slot discovery publishes into
 * and derives the slot workers read. */
#define PF_SLOT_SUBSCRIBERS_MAX 4
typedef void (*pf_slot_callback)(void *arg);
/* Calls cb(arg) after every publish that changed the slot (not for an equal set), on the
 * publisher's thread, after the new set is visible and outside the slot's lock, so cb may
 * acquire the slot. Returns 0, or PF_ELIMIT past PF_SLOT_SUBSCRIBERS_MAX. Call (un)subscribe
 * from the publishers' thread, or before publishing starts. */
int discovery_slot_subscribe(pf_endpoint_slot *slot, pf_slot_callback cb, void *arg);
/* Removes a subscription made with the same cb and arg; no-op when absent. */
void discovery_slot_unsubscribe(pf_endpoint_slot *slot, pf_slot_callback cb, void *arg);

/* A worker's view of one slot. Owned by one thread, never shared. */
typedef struct pf_set_cache {
    pf_endpoint_slot *slot;
    uint64_t generation;
    pf_endpoint_set *set;
} pf_set_cache;

void discovery_cache_init(pf_set_cache *cache, pf_endpoint_slot *slot);
void discovery_cache_release(pf_set_cache *cache);
/* Refreshes the cache from the slot (slow path). */
void discovery_cache_refresh(pf_set_cache *cache);
/* The worker's current set (may be NULL before the first publish). Borrowed: valid until
 * the next call on this cache. */
static inline pf_endpoint_set *discovery_cache_get(pf_set_cache *cache) {
    if (discovery_slot_generation(cache->slot) != cache->generation)
        discovery_cache_refresh(cache);
    return cache->set;
}

#endif
