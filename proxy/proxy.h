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

#include <stdbool.h>

typedef struct pf_proxy pf_proxy;

/* Builds clusters, routers and workers from `cfg` (borrowed: it must outlive the proxy)
 * and registers metrics in `metrics` (borrowed). Binds nothing yet. Returns NULL with
 * `err` filled on failure. Main thread. */
pf_proxy *proxy_new(const pf_config *cfg, unsigned workers, pf_metrics *metrics, pf_error *err);

/* Binds every listener (one socket per worker) and starts the worker threads. Returns 0,
 * or PF_EIO with `err` naming the address that failed. Main thread. */
int proxy_start(pf_proxy *proxy, pf_error *err);

/* Stops accepting, closes idle connections and lets in-flight requests finish (answered
 * with Connection: close). Returns immediately. Any thread. */
void proxy_drain(pf_proxy *proxy);

/* Downstream connections still open across all workers. Any thread. */
long proxy_active_connections(const pf_proxy *proxy);

/* True once started, not draining, and every cluster has its first endpoint set. */
bool proxy_ready(const pf_proxy *proxy);
bool proxy_draining(const pf_proxy *proxy);

/* Stops the workers (closing whatever is left) and frees everything. Main thread. */
void proxy_free(pf_proxy *proxy);

size_t proxy_cluster_count(const pf_proxy *proxy);
const pf_config_cluster *proxy_cluster_config(const pf_proxy *proxy, size_t index);
/* The slot discovery publishes this cluster's endpoint sets into. Borrowed. */
pf_endpoint_slot *proxy_cluster_slot(const pf_proxy *proxy, size_t index);
/* True while the cluster balances over every endpoint because too few are healthy. */
bool proxy_cluster_panic(const pf_proxy *proxy, size_t index);

#endif
