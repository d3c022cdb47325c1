/* Auto-discovered Services become proxy clusters and service routes. discovery/ calls back
 * on the main thread when a Service port appears or goes; each change ends with one
 * rebuild of the whole route table, published at once to every worker. */
#include "cmd/autodiscover.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pf_autodiscover {
    pf_proxy *proxy;
    pf_k8s *k8s;
    char domain[PF_DNS_NAME_MAX];
    size_t clusters;
};

static pf_endpoint_slot *on_port_added(void *arg, const pf_k8s_service_port *port,
                                       const pf_config_cluster *cfg, size_t *cookie) {
    pf_autodiscover *ad = arg;
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

static void on_port_removed(void *arg, const pf_k8s_service_port *port, size_t cookie) {
    pf_autodiscover *ad = arg;
    /* Requests still routed to it see an empty set (503) until the new table is out. */
    pf_endpoint_set *empty = discovery_set_new(NULL, 0);
    if (empty)
        discovery_slot_publish(proxy_cluster_slot(ad->proxy, cookie), empty);
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

pf_autodiscover *autodiscover_new(pf_proxy *proxy, pf_k8s *k8s, const char *cluster_domain,
                                  pf_error *err) {
    pf_autodiscover *ad = calloc(1, sizeof *ad);
    if (!ad) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    ad->proxy = proxy;
    ad->k8s = k8s;
    snprintf(ad->domain, sizeof ad->domain, "%s", cluster_domain);
    pf_k8s_auto_callbacks cb = {.port_added = on_port_added,
                                .port_removed = on_port_removed,
                                .changed = on_changed,
                                .arg = ad};
    if (discovery_k8s_auto_discover(k8s, &cb, err) != PF_OK) {
        free(ad);
        return NULL;
    }
    return ad;
}

void autodiscover_free(pf_autodiscover *ad) {
    free(ad);
}
