/* Auto-discovered Services become proxy clusters and service routes. discovery/ calls back
 * on the main thread when a Service port appears or goes; each change ends with one
 * rebuild of the whole route table, published at once to every worker. Like a configured
 * cluster, each goes discovery -> its discovered slot -> pf_health -> the proxy's slot. */
#include "cmd/autodiscover.h"
#include "cmd/httproutes.h"
#include "core/log.h"
#include "core/time.h"
#include "health/health.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* How often removed clusters are checked for reclaiming: about the workers' heartbeat,
 * which is when they let go of them. */
#define RECLAIM_INTERVAL_MS 250
/* Services asked for by workers and not yet taken by the main thread; past it a request's
 * ask is dropped (it waits out on_demand_timeout), counted. */
#define WANT_QUEUE 1024

/* One discovered cluster with health checks or outlier detection. Kept, stopped, after its
 * Service port goes until every worker let go of its slot (they may still report into its
 * health); then freed with the slot, which is reused. */
typedef struct discovered {
    pf_config_cluster cfg; /* health's copy, as long as the health lives */
    pf_endpoint_slot *slot;
    pf_health *health;
} discovered;

/* A removed cluster's slot on its way back: RETIRED until a route table without it is out,
 * RECLAIMING until the workers let go of it. */
typedef enum { SLOT_LIVE, SLOT_RETIRED, SLOT_RECLAIMING } slot_state;

struct pf_autodiscover {
    struct event_base *base;
    pf_proxy *proxy;
    pf_k8s *k8s;
    pf_metrics *metrics;
    char domain[PF_DNS_NAME_MAX];
    size_t clusters; /* live */
    size_t slots;    /* live, retired and reclaiming: what max_clusters bounds */
    size_t max_slots;
    discovered **by_index; /* PF_MAX_CLUSTERS entries; NULL for clusters without health */
    size_t *removed;       /* indexes RETIRED or RECLAIMING, PF_MAX_CLUSTERS entries */
    uint8_t *state;        /* slot_state by index */
    size_t removed_count;
    struct event *reclaim_timer;
    bool limit_logged;
    /* on_demand: workers queue the Services requests name; an eventfd wakes the main
     * thread, which starts their watches. A sweep lets unused ones go. */
    const pf_config_kubernetes *kc;
    pthread_mutex_t want_lock;
    bool want_lock_made;
    char (*wants)[2 * PF_K8S_NAME_MAX]; /* "ns/service" */
    size_t want_count;
    int want_fd;
    struct event *want_event;
    struct event *sweep_timer;
    pf_counter *wants_dropped;
    pf_httproutes *httproutes; /* kubernetes.http_routes */
    pf_tls_watch *tls_watch;   /* certificate rotation of discovered TLS clusters */
};

static void discovered_free(discovered *d) {
    if (!d)
        return;
    health_free(d->health);
    discovery_slot_free(d->slot);
    free(d);
}

/* A discovered cluster that speaks TLS has its files watched like a configured one; the
 * watch shares one stat per file among all the clusters made from the template. Without
 * memory for it the cluster still serves, on the files it started with. */
static void watch_tls(pf_autodiscover *ad, size_t index) {
    if (tls_watch_add_cluster(ad->tls_watch, index) != PF_OK)
        log_warn("kubernetes: cluster=%s: out of memory watching its TLS files; they are not "
                 "reloaded when they change",
                 proxy_cluster_config(ad->proxy, index)->name);
}

static pf_endpoint_slot *on_port_added(void *arg, const pf_k8s_service_port *port,
                                       const pf_config_cluster *cfg, size_t *cookie) {
    pf_autodiscover *ad = arg;
    pf_error err = {{0}};
    /* Removed clusters hold their slots until the workers let go; the limit counts them. */
    if (ad->slots >= ad->max_slots) {
        if (!ad->limit_logged)
            log_error("kubernetes: cannot add cluster=%s: max_clusters=%zu reached (removed "
                      "ones included until freed); raise kubernetes.auto_discover.max_clusters",
                      cfg->name, ad->max_slots);
        ad->limit_logged = true;
        return NULL;
    }
    ad->limit_logged = false;
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
        ad->slots++;
        ad->state[index] = SLOT_LIVE;
        watch_tls(ad, (size_t)index);
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
        ad->slots++; /* freed for reuse like a removed one */
        ad->state[index] = SLOT_RETIRED;
        ad->removed[ad->removed_count++] = (size_t)index;
        return NULL;
    }
    proxy_cluster_set_health(ad->proxy, (size_t)index, d->health);
    watch_tls(ad, (size_t)index);
    ad->by_index[index] = d;
    ad->state[index] = SLOT_LIVE;
    *cookie = (size_t)index;
    ad->clusters++;
    ad->slots++;
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
    tls_watch_remove_cluster(ad->tls_watch, cookie); /* before its slot can be freed */
    proxy_cluster_retire(ad->proxy, cookie);
    ad->clusters--;
    ad->state[cookie] = SLOT_RETIRED;
    ad->removed[ad->removed_count++] = cookie;
}

/* Frees the slots every worker let go of; they come back from proxy_cluster_add. */
static void on_reclaim(evutil_socket_t fd, short what, void *arg) {
    pf_autodiscover *ad = arg;
    size_t kept = 0;
    for (size_t i = 0; i < ad->removed_count; i++) {
        size_t index = ad->removed[i];
        if (ad->state[index] != SLOT_RECLAIMING ||
            proxy_cluster_reclaim(ad->proxy, index) != PF_OK) {
            ad->removed[kept++] = index;
            continue;
        }
        discovered_free(ad->by_index[index]); /* the workers are done reporting into it */
        ad->by_index[index] = NULL;
        ad->state[index] = SLOT_LIVE;
        ad->slots--;
    }
    bool freed = kept < ad->removed_count;
    ad->removed_count = kept;
    if (freed)
        discovery_k8s_retry_refused_ports(ad->k8s); /* a Service left out gets its slot */
    bool waiting = false;
    for (size_t i = 0; i < kept && !waiting; i++)
        waiting = ad->state[ad->removed[i]] == SLOT_RECLAIMING;
    if (waiting) {
        struct timeval tv = {0, RECLAIM_INTERVAL_MS * 1000};
        evtimer_add(ad->reclaim_timer, &tv);
    }
}

/* The routes just published name no retired cluster: their slots may go back. */
static void start_reclaim(pf_autodiscover *ad) {
    bool any = false;
    for (size_t i = 0; i < ad->removed_count; i++) {
        size_t index = ad->removed[i];
        if (ad->state[index] != SLOT_RETIRED)
            continue;
        proxy_cluster_remove(ad->proxy, index);
        ad->state[index] = SLOT_RECLAIMING;
        any = true;
    }
    if (any && !evtimer_pending(ad->reclaim_timer, NULL)) {
        struct timeval tv = {0, RECLAIM_INTERVAL_MS * 1000};
        evtimer_add(ad->reclaim_timer, &tv);
    }
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

/* A Service asked for on demand that does not exist: its names answer 503 at once. */
static void add_missing(void *arg, const char *ns, const char *service) {
    build_ctx *b = arg;
    char host[PF_DNS_NAME_MAX * 2], msg[PF_K8S_NAME_MAX * 2 + 64];
    snprintf(msg, sizeof msg, "service \"%s\" not found in namespace \"%s\"\n", service, ns);
    const char *forms[] = {"%s.%s", "%s.%s.svc", "%s.%s.svc.%s"};
    if (strcmp(ns, discovery_k8s_namespace(b->ad->k8s)) == 0 && !b->failed)
        b->failed = proxy_service_routes_add_missing(b->table, service, msg) != PF_OK;
    for (size_t i = 0; i < sizeof forms / sizeof forms[0] && !b->failed; i++) {
        snprintf(host, sizeof host, forms[i], service, ns, b->ad->domain);
        b->failed = proxy_service_routes_add_missing(b->table, host, msg) != PF_OK;
    }
}

static void on_changed(void *arg) {
    pf_autodiscover *ad = arg;
    build_ctx b = {.ad = ad, .table = proxy_service_routes_new()};
    if (b.table) {
        discovery_k8s_foreach_port(ad->k8s, add_port, &b);
        discovery_k8s_foreach_missing(ad->k8s, add_missing, &b);
    }
    if (b.table && !b.failed && ad->httproutes)
        httproutes_apply(ad->httproutes, b.table);
    if (!b.table || b.failed) {
        log_error("kubernetes: out of memory building service routes; keeping the old ones");
        proxy_service_routes_free(b.table);
        return;
    }
    proxy_publish_service_routes(ad->proxy, b.table);
    start_reclaim(ad);
    log_info("kubernetes: service routes published clusters=%zu routes=%zu", ad->clusters,
             b.entries);
}

/* ---- on demand ------------------------------------------------------------------------------ */

/* Worker thread: a request's host matched no route. Queued for the main thread when it is a
 * Service name of a namespace we may watch. */
static bool on_want(void *arg, const char *host) {
    pf_autodiscover *ad = arg;
    char service[PF_K8S_NAME_MAX], ns[PF_K8S_NAME_MAX], key[2 * PF_K8S_NAME_MAX];
    if (discovery_k8s_parse_service_host(host, discovery_k8s_namespace(ad->k8s), ad->domain,
                                         service, ns) != PF_OK ||
        !discovery_k8s_namespace_watched(ad->k8s, ns))
        return false;
    snprintf(key, sizeof key, "%s/%s", ns, service);
    bool queued = false, dropped = false;
    pthread_mutex_lock(&ad->want_lock);
    for (size_t i = 0; i < ad->want_count && !queued; i++)
        queued = strcmp(ad->wants[i], key) == 0;
    if (!queued && ad->want_count < WANT_QUEUE)
        memcpy(ad->wants[ad->want_count++], key, sizeof key);
    else if (!queued)
        dropped = true;
    pthread_mutex_unlock(&ad->want_lock);
    if (dropped)
        metrics_inc(ad->wants_dropped, 1);
    uint64_t one = 1;
    if (!queued && !dropped && write(ad->want_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_debug("kubernetes: on-demand wake-up failed: %s", strerror(errno));
    return true;
}

static void on_wants(evutil_socket_t fd, short what, void *arg) {
    pf_autodiscover *ad = arg;
    uint64_t n;
    if (read(ad->want_fd, &n, sizeof n) < 0 && errno != EAGAIN)
        return;
    char key[2 * PF_K8S_NAME_MAX];
    for (;;) {
        pthread_mutex_lock(&ad->want_lock);
        bool any = ad->want_count > 0;
        if (any)
            memcpy(key, ad->wants[--ad->want_count], sizeof key);
        pthread_mutex_unlock(&ad->want_lock);
        if (!any)
            break;
        char *slash = strchr(key, '/');
        *slash = '\0';
        int rc = discovery_k8s_want(ad->k8s, key, slash + 1);
        if (rc != PF_OK)
            log_warn("kubernetes: cannot watch service=%s namespace=%s: %s", slash + 1, key,
                     pf_strerror(rc));
    }
}

static uint64_t cluster_last_used(void *arg, size_t cookie) {
    pf_autodiscover *ad = arg;
    return proxy_cluster_last_used_ms(ad->proxy, cookie);
}

static struct timeval sweep_interval(const pf_config_kubernetes *kc) {
    uint64_t ms =
        (kc->idle_timeout_ms < kc->negative_ttl_ms ? kc->idle_timeout_ms : kc->negative_ttl_ms) / 4;
    return pf_timeval_ms(ms < 100 ? 100 : ms > 5000 ? 5000 : ms);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg) {
    pf_autodiscover *ad = arg;
    discovery_k8s_sweep(ad->k8s, pf_now_ms(), cluster_last_used, ad);
    struct timeval tv = sweep_interval(ad->kc);
    evtimer_add(ad->sweep_timer, &tv);
}

static int start_on_demand(pf_autodiscover *ad) {
    ad->wants = calloc(WANT_QUEUE, sizeof *ad->wants);
    ad->want_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!ad->wants || ad->want_fd < 0 || pthread_mutex_init(&ad->want_lock, NULL) != 0)
        return PF_ENOMEM;
    ad->want_lock_made = true;
    ad->want_event = event_new(ad->base, ad->want_fd, EV_READ | EV_PERSIST, on_wants, ad);
    ad->sweep_timer = evtimer_new(ad->base, on_sweep, ad);
    ad->wants_dropped = metrics_counter(
        ad->metrics, "pilotfish_kubernetes_on_demand_dropped_total",
        "Requests for a Service not yet watched whose ask found the queue full (they wait "
        "out on_demand_timeout).",
        "");
    if (!ad->want_event || !ad->sweep_timer || event_add(ad->want_event, NULL) != 0)
        return PF_ENOMEM;
    struct timeval tv = sweep_interval(ad->kc);
    evtimer_add(ad->sweep_timer, &tv);
    pf_on_demand od = {.want = on_want, .arg = ad, .timeout_ms = ad->kc->on_demand_timeout_ms};
    proxy_set_on_demand(ad->proxy, &od);
    return PF_OK;
}

pf_autodiscover *autodiscover_new(struct event_base *base, pf_proxy *proxy, pf_k8s *k8s,
                                  pf_metrics *metrics, const pf_config_kubernetes *kc,
                                  pf_error *err) {
    pf_autodiscover *ad = calloc(1, sizeof *ad);
    if (ad)
        ad->want_fd = -1;
    if (!ad || !(ad->by_index = calloc(PF_MAX_CLUSTERS, sizeof *ad->by_index)) ||
        !(ad->removed = calloc(PF_MAX_CLUSTERS, sizeof *ad->removed)) ||
        !(ad->state = calloc(PF_MAX_CLUSTERS, sizeof *ad->state)) ||
        !(ad->reclaim_timer = evtimer_new(base, on_reclaim, ad))) {
        autodiscover_free(ad);
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    ad->kc = kc;
    ad->max_slots = kc->auto_max_clusters;
    ad->base = base;
    ad->proxy = proxy;
    ad->k8s = k8s;
    ad->metrics = metrics;
    snprintf(ad->domain, sizeof ad->domain, "%s", kc->cluster_domain);
    if (kc->auto_mode == PF_K8S_ON_DEMAND && start_on_demand(ad) != PF_OK) {
        autodiscover_free(ad);
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    if (kc->http_routes && !(ad->httproutes = httproutes_new(k8s, kc, err))) {
        autodiscover_free(ad);
        return NULL;
    }
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

void autodiscover_set_tls_watch(pf_autodiscover *ad, pf_tls_watch *w) {
    ad->tls_watch = w;
}

pf_httproutes *autodiscover_httproutes(pf_autodiscover *ad) {
    return ad ? ad->httproutes : NULL;
}

void autodiscover_free(pf_autodiscover *ad) {
    if (!ad)
        return;
    for (size_t i = 0; ad->by_index && i < PF_MAX_CLUSTERS; i++)
        discovered_free(ad->by_index[i]);
    if (ad->reclaim_timer)
        event_free(ad->reclaim_timer);
    if (ad->want_event)
        event_free(ad->want_event);
    if (ad->sweep_timer)
        event_free(ad->sweep_timer);
    if (ad->want_fd >= 0)
        close(ad->want_fd);
    if (ad->want_lock_made)
        pthread_mutex_destroy(&ad->want_lock);
    free(ad->wants);
    httproutes_free(ad->httproutes);
    free(ad->by_index);
    free(ad->removed);
    free(ad->state);
    free(ad);
}
