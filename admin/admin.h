/* Admin server: an HTML status page, readiness, liveness, Prometheus metrics, cluster state
 * and the effective config, over plain HTTP on its own address (loopback by default). It runs on
 * the main thread's event loop, never on a worker, so a slow scrape cannot delay requests. */
#ifndef PF_ADMIN_H
#define PF_ADMIN_H

#include "config/config.h"
#include "core/error.h"
#include "core/metrics.h"
#include "discovery/dns.h"
#include "discovery/kubernetes.h"
#include "health/health.h"
#include "proxy/proxy.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct pf_admin pf_admin;

/* Binds cfg->admin_addr and serves on `base`. Everything passed is borrowed and must
 * outlive the admin server. Returns NULL with `err` set when the address cannot be bound.
 * Main thread. */
pf_admin *admin_new(struct event_base *base, const pf_config *cfg, pf_proxy *proxy,
                    pf_metrics *metrics, pf_error *err);
/* Lets /clusters say why each endpoint of cluster i is (not) serving, from health[i]
 * (borrowed; must outlive the admin server). Main thread. */
void admin_set_health(pf_admin *admin, pf_health *const *health, size_t count);
/* Lets /clusters show each DNS cluster's name, records, refresh times and last error from
 * `dns` (borrowed, may be NULL; must outlive the admin server). Main thread. */
void admin_set_dns(pf_admin *admin, const pf_dns *dns);
/* Lets /clusters show each Kubernetes cluster's Service, namespace, resourceVersion and last
 * event from `k8s` (borrowed, may be NULL; must outlive the admin server). Main thread. */
void admin_set_kubernetes(pf_admin *admin, const pf_k8s *k8s);
/* Lets /clusters list the Gateway API HTTPRoutes pilotfish applies or skips (and why):
 * report(arg) returns a new reference to a JSON array. Main thread. */
void admin_set_http_routes(pf_admin *admin, json_t *(*report)(void *arg), void *arg);
/* After a reload: /config and the status page show `cfg` (borrowed; it must live until the
 * next call or admin_free). Main thread. */
void admin_set_config(pf_admin *admin, const pf_config *cfg);
typedef enum { PF_ADMIN_PUT_CLUSTER, PF_ADMIN_DELETE_CLUSTER, PF_ADMIN_PUT_ROUTES } pf_admin_edit;

/* What the config API calls into (cmd/ implements it: loading, checking and applying a
 * config is not admin's business). All on the main thread. */
typedef struct pf_admin_config_api {
    /* Loads `body` (a whole config, JSON, NUL-terminated) and validates it; unless
     * check_only, applies it when if_match is 0 or the current version. Returns 0 (*version
     * is the version now), PF_EINVAL with every problem in errs (nothing changed), or
     * PF_ECONFLICT when if_match is no longer the current version (*version is). */
    int (*put)(void *ctx, const char *body, bool check_only, uint64_t if_match, uint64_t *version,
               pf_errlist *errs);
    /* One part of the running config: PUT /clusters/{name} (body: the cluster), DELETE
     * /clusters/{name} (no body), PUT /listeners/{name}/routes (body: the routes array).
     * The result is a new whole config, validated and applied as put does. Returns 0,
     * PF_EINVAL (errs), PF_ECONFLICT (if_match), PF_ENOTFOUND (no such cluster or
     * listener) or PF_EINUSE (a route names the cluster being deleted; errs says which). */
    int (*edit)(void *ctx, pf_admin_edit what, const char *name, const char *body,
                uint64_t if_match, uint64_t *version, pf_errlist *errs);
    uint64_t (*version)(void *ctx);
    /* The latest versions, newest first: [{version, time, source, summary}]. New ref. */
    json_t *(*history)(void *ctx);
    /* The latest refused reload, {count, time, source, error, version} (version: the one
     * that stayed), or NULL when none was refused. New ref. */
    json_t *(*last_rejected)(void *ctx);
    void *ctx;
} pf_admin_config_api;

/* Turns on PUT /config, POST /config/check and GET /config/history (`api` is copied).
 * Main thread. */
void admin_set_config_api(pf_admin *admin, const pf_admin_config_api *api);
/* The build the status page names (static text, e.g. "0.1.0"). Main thread. */
void admin_set_version(pf_admin *admin, const char *version);
void admin_free(pf_admin *admin);

#endif
