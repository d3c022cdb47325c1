/* The data plane: listeners, workers, clusters and the HTTP/1.1 request path.
 *
 * cmd/ builds a pf_proxy from a loaded config, publishes each cluster's first endpoint
 * set through proxy_cluster_slot() (discovery sources keep publishing later), starts it,
 * and on SIGTERM drains it. Each worker thread owns an event loop, its listening sockets
 * (SO_REUSEPORT), its connections and its upstream pools. */
#ifndef PF_PROXY_H
#define PF_PROXY_H

#include "config/config.h"
#include "core/error.h"
#include "core/metrics.h"
#include "discovery/endpoint_set.h"
#include "health/health.h"

#include <stdbool.h>

typedef struct pf_proxy pf_proxy;

/* Builds clusters, routers and workers from `cfg` (borrowed: it must outlive the proxy)
 * and registers metrics in `metrics` (borrowed). Binds nothing yet. Returns NULL with
 * `err` filled on failure. Main thread. */
pf_proxy *proxy_new(const pf_config *cfg, unsigned workers, pf_metrics *metrics, pf_error *err);

/* Binds every listener (one socket per worker) and starts the worker threads; an address
 * another socket already listens on, another pilotfish's included, is refused. Returns 0,
 * or PF_EIO with `err` naming the address that failed. Main thread. */
int proxy_start(pf_proxy *proxy, pf_error *err);

/* Stops accepting, closes idle connections and lets in-flight requests finish (answered
 * with Connection: close). Returns immediately. Any thread. */
void proxy_drain(pf_proxy *proxy);

/* The global limit on client connections: $.max_connections, or derived from the open file
 * limit when the file sets none. Any thread. */
uint32_t proxy_max_connections(const pf_proxy *proxy);

/* Worker heartbeats: each worker's event loop stamps the time every PF_HEARTBEAT_MS, so a
 * worker stuck in one callback (a blocking call, a loop that does not end) falls silent. */
#define PF_HEARTBEAT_MS 500u
/* Silent longer than this, a worker is stalled: /healthz fails and Kubernetes restarts us. */
#define PF_WORKER_STALL_MS 5000u

unsigned proxy_worker_count(const pf_proxy *proxy);
/* pf_now_ms() of worker k's last heartbeat; 0 before proxy_start. Any thread. */
uint64_t proxy_worker_heartbeat_ms(const pf_proxy *proxy, unsigned k);
/* Of n workers whose last heartbeats are beats[] (0: not started), the one silent longest at
 * now_ms if that is more than limit_ms, else -1. Pure. */
long proxy_stalled_worker(const uint64_t *beats, size_t n, uint64_t now_ms, uint64_t limit_ms);

/* Downstream connections still open across all workers. Any thread. */
long proxy_active_connections(const pf_proxy *proxy);

/* True once started, not draining, and every cluster has its first endpoint set. */
bool proxy_ready(const pf_proxy *proxy);
bool proxy_draining(const pf_proxy *proxy);
bool proxy_started(const pf_proxy *proxy);
/* Calls fn with the index of each cluster that proxy_ready still waits for (no first
 * endpoint set yet); returns how many. Any thread. */
size_t proxy_foreach_unready_cluster(const pf_proxy *proxy, void (*fn)(void *arg, size_t index),
                                     void *arg);

/* The access log's file (access_log.path), or NULL when it goes to stdout or is off. */
const char *proxy_access_log_path(const pf_proxy *proxy);
/* Opens the access log's file again by its path, for log rotation (SIGUSR1): lines not yet
 * written go to the new file. Returns 0, or an error with err set (the old file stays).
 * Main thread. */
int proxy_access_log_reopen(pf_proxy *proxy, pf_error *err);

/* Stops the workers (closing whatever is left) and frees everything. Main thread. */
void proxy_free(pf_proxy *proxy);

size_t proxy_cluster_count(const pf_proxy *proxy);
const pf_config_cluster *proxy_cluster_config(const pf_proxy *proxy, size_t index);
/* The slot discovery publishes this cluster's endpoint sets into. Borrowed. */
pf_endpoint_slot *proxy_cluster_slot(const pf_proxy *proxy, size_t index);

/* ---- counters for the admin status page (proxy/status.c) ---------------------------- */

/* Response status classes counted per listener and cluster: 1xx..5xx, then "other". */
#define PF_PROXY_CODE_CLASSES 6
/* "1xx" .. "5xx", "other". */
const char *proxy_code_class_name(size_t code_class);

typedef struct pf_proxy_listener_status {
    uint64_t requests[PF_PROXY_CODE_CLASSES]; /* answered to clients, by status class */
    uint64_t connections_total;
    int64_t connections_active;
    uint64_t rejected;            /* requests pilotfish refused itself with a 4xx */
    const pf_histogram *duration; /* first request byte to response end: &duration_all */
    pf_histogram duration_all;    /* the status classes' histograms added up when read */
    uint64_t series; /* which listener this is: another number, other counters (a rate must
                      * not compare them) */
} pf_proxy_listener_status;

/* Listener `index` of the config (as cfg->listeners). Any thread. */
void proxy_listener_status(const pf_proxy *proxy, size_t index, pf_proxy_listener_status *out);

typedef struct pf_proxy_cluster_status {
    uint64_t requests[PF_PROXY_CODE_CLASSES]; /* sent upstream, by response status class */
    long active_requests;                     /* in flight, all workers */
    int64_t connections_active;
    uint64_t retries;
    bool panic;                   /* balancing over every endpoint: too few are healthy */
    const pf_histogram *duration; /* an attempt's pick to its response's end; borrowed */
    uint64_t series; /* which cluster this is: a reused slot gets a new number, and a rate
                      * must not compare one cluster's counters with another's */
} pf_proxy_cluster_status;

/* Cluster `index` (as proxy_cluster_config). Any thread. */
void proxy_cluster_status(const pf_proxy *proxy, size_t index, pf_proxy_cluster_status *out);
/* ---- clusters and routes discovered at run time (Kubernetes auto-discovery) ---------- */

/* Most clusters a proxy holds, configured and discovered together. */
#define PF_MAX_CLUSTERS 8192

/* Adds a cluster at run time; `cfg` is copied (its endpoints are ignored: publish sets into
 * proxy_cluster_slot). Returns the new index (a reclaimed one first), stable until the
 * cluster is removed, or PF_ELIMIT when PF_MAX_CLUSTERS are in use. Main thread. */
long proxy_cluster_add(pf_proxy *proxy, const pf_config_cluster *cfg);
/* Retires a cluster: no route may name it any more (publish a table or a config without
 * it) and its slot should get an empty set; the index is reused only after
 * proxy_cluster_remove and proxy_cluster_reclaim. Main thread. */
void proxy_cluster_retire(pf_proxy *proxy, size_t index);
/* Retires a cluster for good, after a route table without it was published: each worker
 * lets go of its state once its last request to it ended (its next heartbeat after that),
 * then proxy_cluster_reclaim frees the slot for reuse. Its health must outlive that (the
 * workers report into it). Main thread. */
void proxy_cluster_remove(pf_proxy *proxy, size_t index);
/* Frees a removed cluster's slot (pools, balancer, settings, metrics series) when every
 * worker has let go of it: returns 0, after which its health may be freed and its index
 * comes back from proxy_cluster_add; PF_EINUSE while some worker still holds it (call
 * again later); PF_EINVAL when it was not removed. Main thread. */
int proxy_cluster_reclaim(pf_proxy *proxy, size_t index);

/* When a cluster was last routed to by a discovered Service's route (pf_now_ms(), to the
 * second; its creation counts). Main thread. */
uint64_t proxy_cluster_last_used_ms(const pf_proxy *proxy, size_t index);

/* On-demand discovery: a request whose authority matches no route (configured or service
 * route) may name something discovery finds only when asked. */
typedef struct pf_on_demand {
    /* Worker thread, for the host (lower case, no port) of such a request: returns true
     * when discovery may find it and has been asked to look (must not block; a repeated
     * ask is cheap), false for a name it never finds (the request gets 404 at once). */
    bool (*want)(void *arg, const char *host);
    void *arg;
    uint64_t timeout_ms; /* how long the request waits for a route, then 503 */
} pf_on_demand;

/* Turns on-demand discovery on (od copied): such a request waits, without reading its
 * body further, until a published route table routes its authority (it goes on), names it
 * missing (503 with that table's message) or timeout_ms passes (503). Before proxy_start.
 * Main thread. */
void proxy_set_on_demand(pf_proxy *proxy, const pf_on_demand *od);

/* Service routes: when no configured route matches a request, its authority is looked up
 * here (exact host, lower case, and port; port -1 is the entry for requests that name no
 * port). An immutable table, built by a discovery source and published whole. */
typedef struct pf_service_routes pf_service_routes;
pf_service_routes *proxy_service_routes_new(void);
/* Returns 0, or PF_ENOMEM. A later entry for the same host and port replaces the earlier. */
int proxy_service_routes_add(pf_service_routes *table, const char *host, int port,
                             size_t cluster_index);
/* Marks `host` (any port) as a Service discovery found missing: requests for it get 503
 * with `message` (copied; one line ending in "\n") instead of waiting. Returns 0, or
 * PF_ENOMEM. */
int proxy_service_routes_add_missing(pf_service_routes *table, const char *host,
                                     const char *message);
void proxy_service_routes_free(pf_service_routes *table);
/* HTTPRoute rules (Kubernetes): routes matched, in order, by the requests of the entries
 * given them with proxy_service_routes_use_rules, in place of their plain cluster; a
 * request none matches gets 404. `routes` are copied; their cluster indexes (cluster,
 * weighted clusters, mirror) are the proxy's. Returns the rules' id (>= 0), or PF_ENOMEM /
 * PF_EINVAL (a regex that does not compile). Main thread. */
long proxy_service_routes_add_rules(pf_service_routes *table, const pf_config_route *routes,
                                    size_t count);
/* The entry for host and port (added before) is routed by rules `id`. Returns 0, or
 * PF_ENOTFOUND when there is no such entry. */
int proxy_service_routes_use_rules(pf_service_routes *table, const char *host, int port, long id);
/* Publishes `table` (taking it over) for every worker; the previous one is freed when no
 * worker uses it any more. Any thread. */
void proxy_publish_service_routes(pf_proxy *proxy, pf_service_routes *table);

/* ---- reloading a config (proxy/reload.c) --------------------------------------------- */

typedef struct pf_proxy_update pf_proxy_update;

/* Prepares a move to `next` (borrowed; commit keeps it): matches listeners by name and
 * address, binds the sockets of new or moved ones (so that a busy address fails here, with
 * nothing changed), and finds their slots. Returns NULL with `err` set: an address that
 * cannot be bound, too many listener slots, or earlier configs still held by many open
 * connections. Main thread. */
pf_proxy_update *proxy_update_new(pf_proxy *proxy, const pf_config *next, pf_error *err);
/* Abandons an update: closes what it bound. NULL is a no-op. Main thread. */
void proxy_update_free(pf_proxy_update *u);
/* Cluster `index` takes cfg's request settings (timeouts, retry, breakers, budget; copied)
 * at commit; nothing changes before. Returns 0 or PF_ENOMEM. Main thread. */
int proxy_update_cluster(pf_proxy_update *u, size_t index, const pf_config_cluster *cfg);
/* Applies the update and frees it: next's settings and routes for every listener
 * (cluster_slot[j] is the proxy's index of next->clusters[j]), new listeners accept,
 * removed ones stop accepting and drain. `retired` (taken; may be NULL) is the config
 * being replaced: it is freed once no worker and no connection that could hold a pointer
 * into it remains. Main thread. */
void proxy_update_commit(pf_proxy_update *u, const size_t *cluster_slot, pf_config *retired);
/* Cluster `index` is no longer named by `next` (removed or replaced): at commit it is
 * handed to the replaced config's release, and once every request that began before the
 * commit ended (no old router can lead to it) it is proxy_cluster_remove'd, so that
 * proxy_cluster_reclaim can free its slot later. Call before the commit; retire it (no
 * new endpoints, health stopped) after. Returns 0 or PF_ENOMEM (it then stays retired,
 * unreclaimed). Main thread. */
int proxy_update_remove_cluster(pf_proxy_update *u, size_t index);
/* Frees the replaced configs every worker released, and hands their removed clusters to
 * proxy_cluster_remove. Main thread, e.g. on a timer while clusters wait to be reclaimed. */
void proxy_reload_reap(pf_proxy *proxy);
/* The proxy's index of the live (not retired) cluster named `name`, or -1. Main thread. */
long proxy_cluster_find(const pf_proxy *proxy, const char *name);
/* True once proxy_cluster_retire was called for the cluster. Any thread. */
bool proxy_cluster_retired(const pf_proxy *proxy, size_t index);

/* Where the workers report each attempt's outcome for outlier ejection (borrowed; it
 * must outlive the workers). Main thread, before the cluster takes traffic. */
void proxy_cluster_set_health(pf_proxy *proxy, size_t index, pf_health *health);

/* For a TLS cluster, sets into["tls"]: its endpoints' handshake failures by reason
 * (expired, untrusted, name_mismatch, certificate, handshake) and the last one. Any
 * thread. */
void proxy_cluster_describe_tls(const pf_proxy *proxy, size_t index, json_t *into);

/* True while the cluster balances over every endpoint because too few are healthy. */
bool proxy_cluster_panic(const pf_proxy *proxy, size_t index);

#endif
