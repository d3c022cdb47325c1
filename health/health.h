/* Health: active checks (HTTP, TCP) and passive outlier ejection for one cluster.
 *
 * Discovery sources publish raw endpoint sets into the cluster's *discovered* slot. A
 * pf_health watches that slot (discovery_slot_subscribe) and publishes the *effective* set
 * into the slot the workers read: the same endpoints, each `healthy` only when discovery
 * says so AND its active check passes AND it is not ejected. Equal sets publish nothing.
 * Every cluster goes through a pf_health, with or without health config, so the wiring is
 * the same everywhere; without config it passes sets through unchanged.
 *
 * Workers tell health how requests went with health_report(), lock-free on the request
 * path: counters live in the endpoint's shared pf_endpoint_stats, and only crossing an
 * ejection threshold wakes health's event loop (an eventfd), where ejections are decided.
 * Everything else runs on one event loop (the main thread's), without threads. */
#ifndef PF_HEALTH_H
#define PF_HEALTH_H

#include "config/config.h"
#include "core/error.h"
#include "core/metrics.h"
#include "discovery/endpoint_set.h"

#include <event2/event.h>
#include <jansson.h>

typedef struct pf_health pf_health;

/* How one request to an endpoint went, as the proxy saw it. */
typedef enum {
    PF_HEALTH_SUCCESS,         /* a response with status below 500 */
    PF_HEALTH_5XX,             /* a 5xx response other than 502, 503 and 504 */
    PF_HEALTH_GATEWAY_FAILURE, /* connect failure or timeout, reset, response timeout, or
                                * 502/503/504; counts toward consecutive_5xx too */
} pf_health_outcome;

/* The outcome for a response status (the proxy's own 502/503/504 for a failed attempt map
 * to PF_HEALTH_GATEWAY_FAILURE as well). */
static inline pf_health_outcome health_outcome_of_status(int status) {
    if (status >= 502 && status <= 504)
        return PF_HEALTH_GATEWAY_FAILURE;
    return status >= 500 ? PF_HEALTH_5XX : PF_HEALTH_SUCCESS;
}

/* Builds health for cluster `cfg`: subscribes to `discovered`, publishes into `effective`
 * (a set is published at once if `discovered` already has one), registers metrics. All
 * borrowed; each must outlive the pf_health, and `effective`'s readers (the workers) must
 * stop calling health_report before health_free. Runs nothing until health_start. Returns
 * NULL with `err` set on failure. Main thread (the thread of `base`). */
pf_health *health_new(struct event_base *base, const pf_config_cluster *cfg,
                      pf_endpoint_slot *discovered, pf_endpoint_slot *effective,
                      pf_metrics *metrics, pf_error *err);
/* Starts checking every endpoint (at once for each one not checked yet) and the ejection
 * timer. Returns 0 or PF_ENOMEM. Main thread. */
int health_start(pf_health *h);
/* Stops checks in flight and every timer; the last effective set stays published. Main
 * thread. */
void health_stop(pf_health *h);
/* Stops and frees; unsubscribes from the discovered slot and gives its metric series back.
 * NULL is a no-op. Main thread. */
void health_free(pf_health *h);

/* Makes the TLS client of one check: an SSL on the connected socket fd that verifies the
 * endpoint (`endpoint`: its address text) the way requests do. NULL when out of memory.
 * Main thread. */
struct ssl_st;
typedef struct ssl_st *(*pf_health_tls_fn)(void *arg, int fd, const char *endpoint);
/* Checks of this cluster speak TLS through fn (a TLS cluster, unless health_check.tls is
 * false). Main thread, before health_start. */
void health_set_tls(pf_health *h, pf_health_tls_fn fn, void *arg);

/* Records the outcome of one request to `ep`, an endpoint of a set taken from the
 * effective slot (its stats are what this counts on). Lock-free: relaxed atomics, and a
 * wake-up of health's loop (one write to an eventfd) only when a consecutive-failure
 * threshold is crossed. A no-op without outlier_detection or for h == NULL. Any thread. */
void health_report(pf_health *h, const pf_endpoint *ep, pf_health_outcome outcome);

/* Records the latency of one response from `ep` (the time to its response head; only
 * responses below 500, so that a fast error never makes a failing endpoint look fast) for
 * latency ejection: two relaxed atomic adds on the endpoint's shared stats, which health's
 * tick takes and averages. A no-op unless outlier_detection.latency is configured, or for
 * h == NULL. Any thread. */
void health_report_latency(pf_health *h, const pf_endpoint *ep, uint64_t latency_us);

/* Adds to `into` (an endpoint's JSON object in admin /clusters) why the endpoint is or is
 * not serving:
 *   "health": "healthy" | "healthy: pending first check" |
 *             "unhealthy: not ready in discovery" | "unhealthy: pending first check" |
 *             "unhealthy: check failed: HTTP 500" (or "timeout", "connect refused", ...) |
 *             "ejected until 2024-05-01T12:00:30Z (5 consecutive 5xx)"
 *   "health_check": {"last_check": time, "last_result": "HTTP 200", "passes", "failures"}
 *                   (with active checks)
 *   "outlier": {"ejected", "ejected_until", "ejections_total", "consecutive_5xx",
 *               "consecutive_gateway_failures"} (with outlier_detection), and with
 *               outlier_detection.latency "latency_ms" (the average, null until judged)
 *               and "latency_samples"
 * Times are UTC RFC 3339, null when there is none yet. Main thread. */
void health_describe(pf_health *h, const pf_endpoint *ep, json_t *into);

/* Health's verdict on one endpoint, for the admin status page. */
typedef enum {
    PF_HEALTH_HEALTHY,      /* serving (perhaps before its first check, with initial healthy) */
    PF_HEALTH_UNCHECKED,    /* waiting for its first check */
    PF_HEALTH_NOT_READY,    /* discovery says it is not ready */
    PF_HEALTH_CHECK_FAILED, /* its active check fails */
    PF_HEALTH_EJECTED,      /* ejected by outlier detection for a while */
} pf_health_verdict;

#define PF_HEALTH_REASON_MAX 320
/* The verdict on `ep`, with the text /clusters shows as "health" in reason (cut to len):
 * "unhealthy: check failed: HTTP 500", "ejected until ... (consecutive_5xx)". h may be NULL
 * (then only the endpoint's healthy flag counts). Main thread. */
pf_health_verdict health_verdict(pf_health *h, const pf_endpoint *ep, char *reason, size_t len);

#endif
