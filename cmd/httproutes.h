/* Gateway API HTTPRoutes on discovered Services (kubernetes.http_routes): each time the
 * service routes are rebuilt, the HTTPRoutes discovery watches are attached to the ports of
 * the Services their parentRefs name, in the Gateway API's precedence order, with their
 * backendRefs resolved to the discovered clusters. Lives in cmd/ because it joins
 * discovery (the routes, the Service ports) and the proxy (the published table). */
#ifndef PF_CMD_HTTPROUTES_H
#define PF_CMD_HTTPROUTES_H

#include "config/config.h"
#include "core/error.h"
#include "discovery/kubernetes.h"
#include "proxy/proxy.h"

#include <jansson.h>

typedef struct pf_httproutes pf_httproutes;

/* Starts watching HTTPRoutes on `k8s` (before discovery_k8s_start). k8s and kc are borrowed
 * and must outlive the object. Returns NULL with err set. Main thread. */
pf_httproutes *httproutes_new(pf_k8s *k8s, const pf_config_kubernetes *kc, pf_error *err);
void httproutes_free(pf_httproutes *h);

/* Gives the entries of `table` (the discovered Service ports, added before) the rules of
 * the HTTPRoutes attached to them, and remembers what was applied and skipped, and why;
 * new reasons are logged once. Main thread. */
void httproutes_apply(pf_httproutes *h, pf_service_routes *table);

/* Lets backendRefs that name the Service port of a configured Kubernetes cluster
 * (clusters[].kubernetes of cfg, whose clusters `proxy` holds) use that cluster rather than
 * the discovered one. Call before discovery starts; cfg is copied from. 0 or PF_ENOMEM.
 * Main thread. */
int httproutes_use_configured(pf_httproutes *h, pf_proxy *proxy, const pf_config *cfg,
                              pf_error *err);

/* What the last apply did, per HTTPRoute, for /clusters (a new reference). Main thread. */
json_t *httproutes_report(void *h);

#endif
