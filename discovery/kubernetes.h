/* Kubernetes discovery: clusters whose endpoints come from the EndpointSlices of a
 * Service, and auto-discovery of every Service of some namespaces.
 *
 * One pf_k8s owns a libcurl multi handle driven by the main thread's event loop (curl's
 * sockets and timer are libevent events; nothing blocks). For each scope it lists then
 * watches Services and EndpointSlices (resourceVersion, bookmarks, 410 -> relist applied
 * as a diff), keeps the objects, and publishes an endpoint set per cluster whenever a
 * cluster's endpoints change. Failures (transport, timeouts, malformed events, stalled
 * streams, 401/403/5xx) never empty a live set: they are logged, counted and retried with
 * capped exponential backoff and full jitter (Retry-After honoured); 410 relists are spread
 * at random over a window. */
#ifndef PF_DISCOVERY_KUBERNETES_H
#define PF_DISCOVERY_KUBERNETES_H

#include "config/config.h"
#include "core/error.h"
#include "core/metrics.h"
#include "discovery/endpoint_set.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The outcome of one API request, c-ares style: 0 is success, each failure has its own
 * code and discovery_k8s_strerror() says it in words. */
typedef enum {
    PF_K8S_OK = 0,
    PF_K8S_EUNAUTHORIZED, /* 401: the token is missing, wrong or expired */
    PF_K8S_EFORBIDDEN,    /* 403: RBAC refused the verb on the resource */
    PF_K8S_EGONE,         /* 410: the resourceVersion was compacted; a relist follows */
    PF_K8S_EHTTP,         /* any other non-2xx status */
    PF_K8S_ETRANSPORT,    /* connect, TLS or read failure */
    PF_K8S_ETIMEOUT,      /* the request took longer than request_timeout */
    PF_K8S_ESTALLED,      /* a watch sent nothing, not even a bookmark, for stall_timeout */
    PF_K8S_EMALFORMED,    /* a body or an event that is not the JSON the API sends */
    PF_K8S_ETOOLONG,      /* a watch line over max_line_bytes or a list over max_list_bytes */
    PF_K8S_ECLOSED,       /* the server ended a watch stream (normal; resumed at once) */
    PF_K8S_ENOMEM,
    PF_K8S_STATUS_COUNT
} pf_k8s_status;

/* A static sentence for a status; "unknown Kubernetes status" for anything else. */
const char *discovery_k8s_strerror(int status);

/* Command-line overrides of $.kubernetes (NULL or "": take the config, then the
 * in-cluster defaults). Borrowed for the call only. */
typedef struct pf_k8s_options {
    const char *kubeconfig; /* else $KUBECONFIG's first file when no API server is set */
    const char *api_server;
    const char *token_file;
    const char *ca_file;
    const char *namespace;
} pf_k8s_options;

typedef struct pf_k8s pf_k8s;

/* Resolves the API server, token, CA and namespace (options, then cfg->kubernetes, then
 * KUBERNETES_SERVICE_HOST/PORT and the service account's files) and registers metrics in
 * `metrics`. base, cfg and metrics are borrowed and must outlive the pf_k8s. Returns NULL
 * with err set (no API server known, curl init failed). Main thread. */
pf_k8s *discovery_k8s_new(struct event_base *base, const pf_config *cfg, const pf_k8s_options *opts,
                          pf_metrics *metrics, pf_error *err);

/* Makes `cluster` (cluster->kubernetes.service set; borrowed) publish into `slot`
 * (borrowed). Before discovery_k8s_start. Returns 0, PF_EINVAL or PF_ENOMEM. Main thread. */
int discovery_k8s_add(pf_k8s *k8s, const pf_config_cluster *cluster, pf_endpoint_slot *slot,
                      pf_error *err);

/* The namespace of clusters that name none, and of the short "svc" authority: the
 * configured one, else the pod's own, else "default". Main thread. */
const char *discovery_k8s_namespace(const pf_k8s *k8s);

/* ---- auto-discovery -------------------------------------------------------------------- */

/* One port of one discovered Service, as the callbacks and discovery_k8s_foreach_port see
 * it. Strings are borrowed for the call. */
typedef struct pf_k8s_service_port {
    const char *namespace;
    const char *service;
    const char *port_name; /* "" when unnamed */
    uint16_t port;         /* the Service port */
    bool is_default;       /* serves requests that name no port: the only port, or "http" */
} pf_k8s_service_port;

typedef struct pf_k8s_auto_callbacks {
    /* A Service port appeared: make a cluster from `cfg` (the auto_discover cluster
     * settings with a name; copy it), return the slot to publish into (borrowed until
     * port_removed) and a cookie for it; NULL to leave the port out. */
    pf_endpoint_slot *(*port_added)(void *arg, const pf_k8s_service_port *port,
                                    const pf_config_cluster *cfg, size_t *cookie);
    /* The port is gone (Service deleted or port removed); nothing is published into its
     * slot afterwards. */
    void (*port_removed)(void *arg, const pf_k8s_service_port *port, size_t cookie);
    /* Ports were added, removed or renamed: rebuild the routes (discovery_k8s_foreach_port). */
    void (*changed)(void *arg);
    void *arg;
} pf_k8s_auto_callbacks;

/* Watches the Services of cfg->kubernetes.auto_discover's namespaces and keeps one cluster
 * per Service port through `cb` (copied). Before discovery_k8s_start. Main thread. */
int discovery_k8s_auto_discover(pf_k8s *k8s, const pf_k8s_auto_callbacks *cb, pf_error *err);

/* Calls fn for every discovered Service port with its cookie. Main thread. */
void discovery_k8s_foreach_port(const pf_k8s *k8s,
                                void (*fn)(void *arg, const pf_k8s_service_port *port,
                                           size_t cookie),
                                void *arg);

/* ---- Gateway API HTTPRoutes (kubernetes.http_routes) ------------------------------------------
 */

struct pf_httproute; /* discovery/kubernetes_httproute.h */

/* Lists and watches gateway.networking.k8s.io/v1 HTTPRoutes in auto_discover's namespaces;
 * each change calls the auto callbacks' `changed`, as a Service port change does. Before
 * discovery_k8s_start. Returns 0 or PF_ENOMEM. Main thread. */
int discovery_k8s_watch_httproutes(pf_k8s *k8s, pf_error *err);

/* Calls fn for every HTTPRoute watched (borrowed for the call). Main thread. */
void discovery_k8s_foreach_httproute(const pf_k8s *k8s,
                                     void (*fn)(void *arg, const struct pf_httproute *route),
                                     void *arg);

/* True once every HTTPRoute list has completed at least once (a 404, the kind not installed,
 * counts: there are none) and the routes were rebuilt from it. Main thread. */
bool discovery_k8s_httproutes_synced(const pf_k8s *k8s);

/* What /clusters shows for the HTTPRoute list of one namespace ("" : all). */
typedef struct pf_k8s_route_list_status {
    const char *namespace;
    const char *state; /* "listing", "watching", "backing off", "idle", "not installed" */
    bool synced;       /* listed at least once, or found not installed */
    size_t routes;
    uint64_t last_event_wall_us; /* the last list or event; 0 before the first */
} pf_k8s_route_list_status;

/* Calls fn for each namespace's HTTPRoute list (st borrowed for the call). Main thread. */
void discovery_k8s_foreach_httproute_list(const pf_k8s *k8s,
                                          void (*fn)(void *arg, const pf_k8s_route_list_status *st),
                                          void *arg);

/* ---- on demand (auto_discover.mode "on_demand") ------------------------------------------- */

/* Parses an authority's host (lower case, no port) as Kubernetes DNS names a Service:
 * svc (in own_namespace), svc.ns, svc.ns.svc, svc.ns.svc.<cluster_domain>. Fills service
 * and ns (PF_K8S_NAME_MAX each) and returns 0, or PF_EINVAL for any other name. Pure; any
 * thread. */
int discovery_k8s_parse_service_host(const char *host, const char *own_namespace,
                                     const char *cluster_domain, char *service, char *ns);

/* Whether auto_discover covers namespace ns. Any thread (reads the config only). */
bool discovery_k8s_namespace_watched(const pf_k8s *k, const char *ns);

/* A request named Service ns/service: starts a list+watch of it (its object by name, its
 * slices by label) unless one runs, and marks it wanted now. Its ports become clusters
 * through the auto callbacks once both lists are in (with their first sets); a missing
 * one shows in discovery_k8s_foreach_missing. Returns 0, PF_EINVAL (not on demand, or a
 * namespace auto_discover does not cover) or PF_ENOMEM. Main thread. */
int discovery_k8s_want(pf_k8s *k, const char *ns, const char *service);

/* Calls fn for each Service asked for on demand that both lists showed absent. Main
 * thread. */
void discovery_k8s_foreach_missing(const pf_k8s *k,
                                   void (*fn)(void *arg, const char *ns, const char *service),
                                   void *arg);

/* Stops watching each on-demand Service whose last use (the latest of its last want and
 * last_used_ms(arg, cookie) over its ports) is idle_timeout old, or negative_ttl for a
 * missing one; their clusters are removed through port_removed. Returns how many. Main
 * thread. */
size_t discovery_k8s_sweep(pf_k8s *k, uint64_t now_ms,
                           uint64_t (*last_used_ms)(void *arg, size_t cookie), void *arg);

/* Service ports that port_added refused (no cluster slot left) are offered again at the
 * next flush: call it when slots were freed. Main thread. */
void discovery_k8s_retry_refused_ports(pf_k8s *k);

/* Watch and list requests open now. Main thread. */
size_t discovery_k8s_watch_count(const pf_k8s *k);

/* ---- life cycle --------------------------------------------------------------------------- */

/* Starts every list and watch; returns at once. A cluster publishes its first set once
 * both its Service and its EndpointSlices have been listed (empty when there are none:
 * the proxy answers 503 meanwhile). Main thread. */
int discovery_k8s_start(pf_k8s *k8s, pf_error *err);

/* True once every list has completed at least once (configured clusters and
 * auto-discovery): /ready waits for it. Main thread. */
bool discovery_k8s_synced(const pf_k8s *k8s);

/* Calls fn with one line for each thing discovery_k8s_synced still waits for, worded as the
 * log words it (`kubernetes: list services in "shop"`), the string borrowed for the call;
 * returns how many. Main thread. */
size_t discovery_k8s_foreach_pending(const pf_k8s *k8s, void (*fn)(void *arg, const char *what),
                                     void *arg);

/* Aborts requests in flight and every timer: nothing is published afterwards. Main thread. */
void discovery_k8s_stop(pf_k8s *k8s);

/* Stops and frees. NULL is a no-op. Main thread. */
void discovery_k8s_free(pf_k8s *k8s);

/* What /clusters shows for one Kubernetes cluster (configured or discovered). */
typedef struct pf_k8s_cluster_status {
    char namespace[PF_K8S_NAME_MAX];
    char service[PF_K8S_NAME_MAX];
    char port[PF_K8S_NAME_MAX];          /* as asked: a name, a number, or "" */
    char resource_version[64];           /* of the EndpointSlice watch */
    char external_name[PF_DNS_NAME_MAX]; /* ExternalName Services: resolved through DNS */
    bool synced;                         /* Service and slices listed at least once */
    const char *watch_state;     /* the slice watch now: "listing", "watching", "backing off" or
                                  * "idle" (static text) */
    uint64_t last_event_wall_us; /* 0 before the first */
    uint64_t last_event_age_ms;
    size_t slices;
    size_t endpoints;       /* published */
    bool using_terminating; /* no ready endpoint: serving terminating ones stand in */
    char last_error[PF_ERROR_MAX];
    uint64_t last_error_wall_us;
    uint64_t publishes;
} pf_k8s_cluster_status;

/* Fills *out for the cluster called `cluster`. Returns 0, or PF_ENOTFOUND. Main thread. */
int discovery_k8s_cluster_status(const pf_k8s *k8s, const char *cluster,
                                 pf_k8s_cluster_status *out);

#endif
