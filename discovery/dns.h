/* DNS discovery: clusters whose endpoints come from A, AAAA or SRV records.
 *
 * One pf_dns owns one c-ares channel driven by the main thread's event loop (c-ares
 * sockets and its timeout are libevent events; nothing blocks, no thread per query). Each
 * DNS cluster publishes into its pf_endpoint_slot whenever its records change; refreshes
 * follow the TTL clamped to the cluster's min/max_refresh. Failures (timeout, SERVFAIL,
 * REFUSED, malformed answers) keep the last good set and retry with backoff; NXDOMAIN or
 * an empty answer empties a live set only after the cluster's hold time. Clusters asking
 * for the same name and type share one query. */
#ifndef PF_DISCOVERY_DNS_H
#define PF_DISCOVERY_DNS_H

#include "config/config.h"
#include "core/error.h"
#include "core/metrics.h"
#include "discovery/endpoint_set.h"

#include <event2/event.h>
#include <stdint.h>

/* The outcome of one resolution, c-ares style: 0 is success, each failure has its own code
 * and discovery_dns_strerror() says it in words. */
typedef enum {
    PF_DNS_OK = 0,
    PF_DNS_ENODATA,      /* the name exists but has no record of the type asked */
    PF_DNS_ENXDOMAIN,    /* the name does not exist */
    PF_DNS_ETIMEOUT,     /* no server answered in time */
    PF_DNS_ESERVFAIL,    /* the server could not answer (rcode 2) */
    PF_DNS_EREFUSED,     /* the server refused (rcode 5) */
    PF_DNS_ECONNREFUSED, /* nothing listens on the server's port */
    PF_DNS_EBADRESP,     /* malformed or truncated answer */
    PF_DNS_ENOMEM,
    PF_DNS_EOTHER,
    PF_DNS_STATUS_COUNT
} pf_dns_status;

/* A static sentence for a status; "unknown DNS status" for anything else. */
const char *discovery_dns_strerror(int status);
/* A short static label for metrics: "ok", "nodata", "nxdomain", "timeout", "servfail",
 * "refused", "connrefused", "malformed", "nomem", "error". */
const char *discovery_dns_status_label(int status);

typedef struct pf_dns pf_dns;

/* Creates the resolver on `base` with cfg->dns (servers, timeout, tries) and registers its
 * metrics in `metrics`. Everything passed is borrowed and must outlive the resolver.
 * Returns NULL with err set (c-ares init failed, bad resolver list). Main thread. */
pf_dns *discovery_dns_new(struct event_base *base, const pf_config *cfg, pf_metrics *metrics,
                          pf_error *err);

/* Makes `cluster` (a cluster with cluster->dns.name set; borrowed) publish into `slot`
 * (borrowed). Before discovery_dns_start, or after it (its queries then go out at once).
 * Clusters are never removed; free the resolver instead. Returns 0, PF_EINVAL (not a DNS
 * cluster) or PF_ENOMEM. Main thread. */
int discovery_dns_add(pf_dns *dns, const pf_config_cluster *cluster, pf_endpoint_slot *slot,
                      pf_error *err);

/* Sends every cluster's first queries; returns at once. A cluster publishes its first set
 * when its name first gets an answer: the records, or an empty set for NXDOMAIN/NODATA
 * (the proxy answers 503 for it meanwhile). Until then the slot stays unpublished and
 * /ready says 503; failures are retried with backoff. Main thread. */
int discovery_dns_start(pf_dns *dns, pf_error *err);

/* Cancels queries in flight and every timer: nothing is published afterwards. Main thread. */
void discovery_dns_stop(pf_dns *dns);

/* Stops and frees. NULL is a no-op. Main thread. */
void discovery_dns_free(pf_dns *dns);

/* One of a cluster's own queries (not SRV targets), as /clusters shows it. */
typedef struct pf_dns_query_status {
    char name[PF_DNS_NAME_MAX];
    const char *type;             /* "A", "AAAA" or "SRV" */
    int last_status;              /* of the latest finished attempt; -1 before the first */
    uint32_t ttl;                 /* seconds, of the latest answer; UINT32_MAX when unknown */
    uint64_t last_answer_wall_us; /* wall clock of the latest answer; 0 before the first */
    int64_t next_refresh_ms;      /* from now; -1 while a query is in flight */
    unsigned failures;            /* failed attempts in a row */
    bool holding;                 /* a negative answer came and the old records still count */
    uint64_t hold_left_ms;        /* while holding */
} pf_dns_query_status;

/* What /clusters shows for one DNS cluster: a copy made on the main thread. */
typedef struct pf_dns_cluster_status {
    char name[PF_DNS_NAME_MAX];
    pf_dns_record record;
    uint16_t port;                  /* 0 for SRV */
    pf_dns_query_status queries[2]; /* A and AAAA for "A+AAAA", else one */
    size_t query_count;
    size_t target_queries;         /* SRV: address queries for targets without glue */
    uint64_t last_refresh_wall_us; /* every query of the cluster answered by then; 0: not yet */
    uint64_t last_refresh_age_ms;
    uint32_t ttl;                  /* minimum over the queries' latest answers */
    char last_error[PF_ERROR_MAX]; /* the latest failure with its name and type; "" if none */
    uint64_t last_error_wall_us;
    uint64_t answer_to_publish_us; /* latest change: from the answer to the published set */
    uint64_t publishes;            /* sets published (changes only) */
} pf_dns_cluster_status;

/* Fills *out for the DNS cluster called `cluster`. Returns 0, or PF_ENOTFOUND when no DNS
 * cluster has that name. Main thread (the thread running the resolver's loop). */
int discovery_dns_cluster_status(const pf_dns *dns, const char *cluster,
                                 pf_dns_cluster_status *out);

#endif
