/* Kubernetes auto-discovery glue: turns the Service ports discovery/ finds into proxy
 * clusters created and retired at run time, and into the service-route table that maps
 * svc, svc.ns, svc.ns.svc and svc.ns.svc.<cluster domain> (with or without a port) to
 * them. Lives in cmd/ because it is the only place that knows both discovery and proxy. */
#ifndef PF_CMD_AUTODISCOVER_H
#define PF_CMD_AUTODISCOVER_H

#include "core/error.h"
#include "core/metrics.h"
#include "discovery/kubernetes.h"
#include "proxy/proxy.h"
#include "proxy/tls_rotation.h"

#include <event2/event.h>

typedef struct pf_autodiscover pf_autodiscover;

/* Registers the callbacks on `k8s` (before discovery_k8s_start and proxy_start). With
 * kc->auto_mode on_demand it also turns the proxy's on-demand discovery on: the Services
 * requests name are watched from the first such request, let go when idle. Each discovered cluster
 * gets a discovered slot and a pf_health like the configured ones (its settings' health
 * checks and outlier detection apply); a removed one's slot, health and metric series are
 * freed once the workers let go of it, and the slot is reused. At most max_clusters slots
 * are held (removed ones until freed). Everything passed is borrowed and must outlive the
 * returned object. Returns NULL with err set. Main thread. */
pf_autodiscover *autodiscover_new(struct event_base *base, pf_proxy *proxy, pf_k8s *k8s,
                                  pf_metrics *metrics, const pf_config_kubernetes *kc,
                                  pf_error *err);
/* Frees every discovered cluster's health: after the workers are gone (they report into
 * it), before the event base. NULL is a no-op. Main thread. */
void autodiscover_free(pf_autodiscover *ad);

/* Discovered TLS clusters have their files watched for rotation by `w` (borrowed; it must
 * outlive ad), from this call on: call it before discovery_k8s_start. Main thread. */
void autodiscover_set_tls_watch(pf_autodiscover *ad, pf_tls_watch *w);

/* The HTTPRoutes applied to discovered Services (kubernetes.http_routes), or NULL. */
struct pf_httproutes *autodiscover_httproutes(pf_autodiscover *ad);

#endif
