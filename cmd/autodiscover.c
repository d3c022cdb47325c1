/* Auto-discovered Services become proxy clusters and service routes. discovery/ calls back
 * on the main thread when a Service port appears or goes; each change ends with one
 * rebuild of the whole route table, published at once to every worker. Like a configured
 * cluster, each goes discovery -> its discovered slot -> pf_health -> the proxy's slot. */
#include "cmd/autodiscover.h"
#include "core/log.h"
#include "health/health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One discovered cluster. Kept, stopped, after its Service port goes until shutdown:
 * workers may still report into its health, and indexes are never reused, so this is
 * bounded by PF_MAX_CLUSTERS. */
typedef struct discovered {
    pf_config_cluster cfg; /* health's copy, as long as the health lives */
    pf_endpoint_slot *slot;
    pf_health *health;
    struct discovered *next;
} discovered;

struct pf_autodiscover {
    struct event_base *base;
    pf_proxy *proxy;
    pf_k8s *k8s;
    pf_metrics *metrics;
    char domain[PF_DNS_NAME_MAX];
    size_t clusters;
    discovered *all;
    discovered **by_index; /* PF_MAX_CLUSTERS entries */
};

static void discovered_free(discovered *d) {
    health_free(d->health);
    discovery_slot_free(d->slot);
    free(d);
}

static pf_endpoint_slot *on_port_added(void *arg, const pf_k8s_service_port *port,
                                       const pf_config_cluster *cfg, size_t *cookie) {
    pf_autodiscover *ad = arg;
    pf_error err = {{0}};
    /* Without checks or ejection a pf_health passes sets through unchanged: skip it and
     * its memory (a few tens of KiB per cluster, thousands of clusters). */
    if (cfg->health_check.type == PF_CHECK_NONE && !cfg->outlier.enabled) {
        long index = proxy_cluster_add(ad->proxy, cfg);
        if (index < 0) {
            log_error("kubernetes: cannot add cluster=%s: %s (at most %d clusters)", cfg->name,
                      pf_strerror((int)index), PF_MAX_CLUSTERS);
            return NULL;
        }
        *cookie = (size_t)index;
        ad->clusters++;
        return proxy_cluster_slot(ad->proxy, (size_t)index);
    }
    discovered *d = calloc(1, sizeof *d);
    if (!d || !(d->slot = discovery_slot_new(cfg->name))) {
        free(d);
        log_error("kubernetes: out of memory adding cluster=%s", cfg->name);
        return NULL;
    }
    d->cfg = *cfg;
    long index = proxy_cluster_add(ad->proxy, &d->cfg);
    if (index < 0) {
        log_error("kubernetes: cannot add cluster=%s: %s (at most %d clusters)", cfg->name,
                  pf_strerror((int)index), PF_MAX_CLUSTERS);
        discovered_free(d);
        return NULL;
    }
    d->health = health_new(ad->base, &d->cfg, d->slot, proxy_cluster_slot(ad->proxy, (size_t)index),
                           ad->metrics, &err);
    if (!d->health || health_start(d->health) != PF_OK) {
        log_error("kubernetes: cluster=%s: %s", cfg->name, err.msg[0] ? err.msg : "out of memory");
        proxy_cluster_retire(ad->proxy, (size_t)index);
        discovered_free(d);
        return NULL;
    }
    proxy_cluster_set_health(ad->proxy, (size_t)index, d->health);
    d->next = ad->all;
    ad->all = d;
    ad->by_index[index] = d;
    *cookie = (size_t)index;
    ad->clusters++;
    return d->slot;
}

static void on_port_removed(void *arg, const pf_k8s_service_port *port, size_t cookie) {
    pf_autodiscover *ad = arg;
    discovered *d = ad->by_index[cookie];
    /* Requests still routed to it see an empty set (503) until the new table is out. */
    pf_endpoint_set *empty = discovery_set_new(NULL, 0);
    if (empty)
        discovery_slot_publish(d ? d->slot : proxy_cluster_slot(ad->proxy, cookie), empty);
    if (d)
        health_stop(d->health);
    proxy_cluster_retire(ad->proxy, cookie);
    ad->clusters--;
}

typedef struct build_ctx {
    pf_autodiscover *ad;
    pf_service_routes *table;
    size_t entries;
    bool failed;
} build_ctx;

static void add_host(build_ctx *b, const char *host, const pf_k8s_service_port *port,
                     size_t cluster) {
    if (b->failed)
        return;
    int rc = proxy_service_routes_add(b->table, host, port->port, cluster);
    if (rc == PF_OK && port->is_default)
        rc = proxy_service_routes_add(b->table, host, -1, cluster);
    b->entries += port->is_default ? 2 : 1;
    b->failed = rc != PF_OK;
}

/* Every authority a pod may use for the Service (Kubernetes DNS for Services): the short
 * name only inside our own namespace, the qualified ones from anywhere. */
static void add_port(void *arg, const pf_k8s_service_port *port, size_t cookie) {
    build_ctx *b = arg;
    char host[PF_DNS_NAME_MAX * 2];
    if (strcmp(port->namespace, discovery_k8s_namespace(b->ad->k8s)) == 0)
        add_host(b, port->service, port, cookie);
    snprintf(host, sizeof host, "%s.%s", port->service, port->namespace);
    add_host(b, host, port, cookie);
    snprintf(host, sizeof host, "%s.%s.svc", port->service, port->namespace);
    add_host(b, host, port, cookie);
    snprintf(host, sizeof host, "%s.%s.svc.%s", port->service, port->namespace, b->ad->domain);
    add_host(b, host, port, cookie);
}

static void on_changed(void *arg) {
    pf_autodiscover *ad = arg;
    build_ctx b = {.ad = ad, .table = proxy_service_routes_new()};
    if (b.table)
        discovery_k8s_foreach_port(ad->k8s, add_port, &b);
    if (!b.table || b.failed) {
        log_error("kubernetes: out of memory building service routes; keeping the old ones");
        proxy_service_routes_free(b.table);
        return;
    }
    proxy_publish_service_routes(ad->proxy, b.table);
    log_info("kubernetes: service routes published clusters=%zu routes=%zu", ad->clusters,
             b.entries);
}

pf_autodiscover *autodiscover_new(struct event_base *base, pf_proxy *proxy, pf_k8s *k8s,
                                  pf_metrics *metrics, const char *cluster_domain, pf_error *err) {
    pf_autodiscover *ad = calloc(1, sizeof *ad);
    if (!ad || !(ad->by_index = calloc(PF_MAX_CLUSTERS, sizeof *ad->by_index))) {
        free(ad);
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    ad->base = base;
    ad->proxy = proxy;
    ad->k8s = k8s;
    ad->metrics = metrics;
    snprintf(ad->domain, sizeof ad->domain, "%s", cluster_domain);
    pf_k8s_auto_callbacks cb = {.port_added = on_port_added,
                                .port_removed = on_port_removed,
                                .changed = on_changed,
                                .arg = ad};
    if (discovery_k8s_auto_discover(k8s, &cb, err) != PF_OK) {
        autodiscover_free(ad);
        return NULL;
    }
    return ad;
}

void autodiscover_free(pf_autodiscover *ad) {
    if (!ad)
        return;
    while (ad->all) {
        discovered *d = ad->all;
        ad->all = d->next;
        discovered_free(d);
    }
    free(ad->by_index);
    free(ad);
}
