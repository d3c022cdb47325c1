/* The process-wide state main() wires together, shared by cmd/'s files. */
#ifndef PF_CMD_APP_H
#define PF_CMD_APP_H

#include "admin/admin.h"
#include "cmd/autodiscover.h"
#include "config/config.h"
#include "core/metrics.h"
#include "discovery/dns.h"
#include "discovery/kubernetes.h"
#include "health/health.h"
#include "proxy/proxy.h"
#include "proxy/tls_rotation.h"

#include <event2/event.h>

typedef struct app {
    struct event_base *base;
    pf_config *cfg;          /* the running config */
    pf_config *boot_cfg;     /* the first: the resolver and Kubernetes client keep pointing at it */
    const char *config_path; /* NULL in standalone mode */
    bool watch;              /* --watch-config */
    pf_metrics *metrics;
    pf_proxy *proxy;
    pf_admin *admin;
    pf_endpoint_slot **discovered; /* by proxy cluster index: what discovery publishes into */
    pf_health **health;            /* by proxy cluster index: discovered slot -> proxy slot */
    pf_dns *dns;                   /* NULL when no cluster uses DNS */
    pf_k8s *k8s;                   /* NULL when Kubernetes is not used */
    pf_k8s_options k8s_opts;       /* --k8s-* flags */
    pf_autodiscover *autodiscover; /* NULL unless $.kubernetes.auto_discover */
    struct event *sigterm, *sigint, *sighup, *sigusr1, *drain_timer;
    uint64_t drain_deadline_ms;
    int signals_seen;
    struct app_reload *reload; /* cmd/reload.c */
    pf_tls_watch *tls_watch;   /* certificate rotation */
} app;

/* cmd/main.c: creates the discovered slot and health of the proxy's cluster i and starts
 * the health. Returns 0, or an error with err set. Main thread. */
int app_cluster_start(app *a, size_t i, pf_error *err);

/* cmd/reload.c: reload metrics and, with --watch-config, the file watch. Returns 0, or an
 * error with err set. Main thread. */
int app_reload_init(app *a, pf_error *err);
void app_reload_free(app *a);
/* The SIGHUP handler: reloads the config file. */
void app_on_sighup(evutil_socket_t sig, short what, void *arg);
/* Loads, checks and applies the config file; `source` ("signal", "file") is logged.
 * Returns 0 when applied (or unchanged), else an error; every problem is logged. */
int app_reload(app *a, const char *source);

#endif
