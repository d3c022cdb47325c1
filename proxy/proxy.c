/* Proxy setup and workers: metrics registration, one event loop thread per worker, one
 * SO_REUSEPORT listening socket per listener and worker (the kernel spreads connections),
 * and the drain that SIGTERM starts. */
#include "core/log.h"
#include "core/random.h"
#include "proxy/proxy_int.h"

#include <errno.h>
#include <event2/thread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024
#define LOG_FLUSH_MS 200

uint64_t worker_random(pf_worker *w) {
    return pf_xorshift128p(w->rng); /* per worker: no shared state on the request path */
}

pf_worker_cluster *worker_cluster(pf_worker *w, size_t index) {
    pf_worker_cluster *wc = &w->clusters[index];
    if (wc->rt)
        return wc;
    pf_cluster_rt *rt = &w->proxy->clusters[index];
    wc->balancer = balancer_new(rt->lb);
    if (!wc->balancer)
        return NULL;
    discovery_cache_init(&wc->cache, rt->slot);
    wc->rt = rt;
    return wc;
}

pf_endpoint_set *worker_cluster_set(pf_worker_cluster *wc) {
    pf_endpoint_set *raw = discovery_cache_get(&wc->cache);
    if (!raw)
        return NULL;
    if (wc->assigned_version != raw->version || !wc->assigned) {
        bool panic;
        discovery_set_unref(wc->assigned);
        wc->assigned = assign_cache_get(&wc->rt->assign, raw, &wc->rt->assign_params, &panic);
        wc->assigned_version = raw->version;
    }
    return wc->assigned ? wc->assigned : raw;
}

static void register_listener_metrics(pf_metrics *m, pf_listener_rt *l) {
    char labels[160];
    for (int i = 0; i < PF_CODE_CLASSES; i++) {
        snprintf(labels, sizeof labels, "listener=\"%s\",code_class=\"%s\"", l->cfg->name,
                 proxy_code_class_name((size_t)i));
        l->requests[i] = metrics_counter(m, "pilotfish_downstream_requests_total",
                                         "Requests answered to clients, by status class.", labels);
    }
    snprintf(labels, sizeof labels, "listener=\"%s\"", l->cfg->name);
    l->connections_total = metrics_counter(m, "pilotfish_downstream_connections_total",
                                           "Client connections accepted.", labels);
    l->connections_active = metrics_gauge(m, "pilotfish_downstream_connections_active",
                                          "Client connections open now.", labels);
    l->errors_total = metrics_counter(m, "pilotfish_downstream_rejected_requests_total",
                                      "Requests pilotfish refused itself with a 4xx.", labels);
    l->duration =
        metrics_histogram(m, "pilotfish_request_duration_seconds",
                          "Time from the first request byte to the response end.", labels);
}

static void register_cluster_metrics(pf_metrics *m, pf_cluster_rt *c) {
    char labels[160];
    for (int i = 0; i < PF_CODE_CLASSES; i++) {
        snprintf(labels, sizeof labels, "cluster=\"%s\",code_class=\"%s\"", c->cfg->name,
                 proxy_code_class_name((size_t)i));
        c->requests[i] =
            metrics_counter(m, "pilotfish_upstream_requests_total",
                            "Requests sent to a cluster, by response status class.", labels);
    }
    snprintf(labels, sizeof labels, "cluster=\"%s\"", c->cfg->name);
    c->connections_total = metrics_counter(m, "pilotfish_upstream_connections_total",
                                           "Upstream connections opened.", labels);
    c->connections_active =
        metrics_gauge(m, "pilotfish_upstream_connections_active",
                      "Upstream connections open now (busy or pooled).", labels);
    c->pool_reuses = metrics_counter(m, "pilotfish_upstream_pool_reuses_total",
                                     "Requests sent on a pooled keep-alive connection.", labels);
    c->connect_failures =
        metrics_counter(m, "pilotfish_upstream_connect_failures_total",
                        "Upstream connection attempts refused or failed.", labels);
    c->connect_timeouts = metrics_counter(m, "pilotfish_upstream_connect_timeouts_total",
                                          "Upstream connection attempts that timed out.", labels);
    c->response_timeouts = metrics_counter(
        m, "pilotfish_upstream_response_timeouts_total",
        "Responses whose head came too late or whose body stalled (body_timeout).", labels);
    c->resets = metrics_counter(m, "pilotfish_upstream_resets_total",
                                "Upstream connections closed before the response ended.", labels);
    c->retries = metrics_counter(m, "pilotfish_upstream_retries_total",
                                 "Attempts after the first, over all requests.", labels);
    c->retry_budget_exhausted =
        metrics_counter(m, "pilotfish_upstream_retry_budget_exhausted_total",
                        "Retries not made because the cluster's retry budget was spent.", labels);
    char breaker[200];
    static const char *const limits[] = {"max_requests", "max_connections", "max_retries"};
    pf_counter **slots[] = {&c->overflow_requests, &c->overflow_connections, &c->overflow_retries};
    for (size_t i = 0; i < 3; i++) {
        snprintf(breaker, sizeof breaker, "cluster=\"%s\",breaker=\"%s\"", c->cfg->name, limits[i]);
        *slots[i] = metrics_counter(m, "pilotfish_upstream_overflow_total",
                                    "Requests refused with 503 by a circuit breaker.", breaker);
    }
}

static void emit_endpoint_gauge(void *arg, pf_metric_emit emit, void *emit_ctx) {
    const pf_proxy *proxy = arg;
    char labels[160];
    for (size_t i = 0; i < proxy->cluster_count; i++) {
        pf_endpoint_set *set = discovery_slot_acquire(proxy->clusters[i].slot);
        size_t total = set ? set->count : 0, healthy = set ? set->healthy_count : 0;
        discovery_set_unref(set);
        snprintf(labels, sizeof labels, "cluster=\"%s\",health=\"healthy\"",
                 proxy->clusters[i].cfg->name);
        emit(emit_ctx, labels, (double)healthy);
        snprintf(labels, sizeof labels, "cluster=\"%s\",health=\"unhealthy\"",
                 proxy->clusters[i].cfg->name);
        emit(emit_ctx, labels, (double)(total - healthy));
    }
}

bool proxy_cluster_panic(const pf_proxy *proxy, size_t index) {
    pf_assign_cache *cache = &proxy->clusters[index].assign;
    pthread_mutex_lock(&cache->lock);
    bool panic = cache->panic && cache->source;
    pthread_mutex_unlock(&cache->lock);
    return panic;
}

static void emit_panic_gauge(void *arg, pf_metric_emit emit, void *emit_ctx) {
    const pf_proxy *proxy = arg;
    char labels[160];
    for (size_t i = 0; i < proxy->cluster_count; i++) {
        snprintf(labels, sizeof labels, "cluster=\"%s\"", proxy->clusters[i].cfg->name);
        emit(emit_ctx, labels, proxy_cluster_panic(proxy, i) ? 1 : 0);
    }
}

static void use_pthreads(void) {
    evthread_use_pthreads();
}

static int worker_init(pf_proxy *proxy, pf_worker *w, unsigned id) {
    w->proxy = proxy;
    w->id = id;
    /* The changelist folds an add and a delete of the same event in one loop turn into
     * nothing, which saves epoll_ctl calls as bufferevents toggle their write events. */
    struct event_config *ec = event_config_new();
    if (ec) {
        event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        w->base = event_base_new_with_config(ec);
        event_config_free(ec);
    }
    /* Room for every cluster there may ever be; untouched entries cost no memory. */
    w->clusters = calloc(PF_MAX_CLUSTERS, sizeof *w->clusters);
    w->listeners = calloc(proxy->listener_count, sizeof *w->listeners);
    w->accept_ctx = calloc(proxy->listener_count, sizeof *w->accept_ctx);
    if (!w->base || !w->clusters || !w->listeners || !w->accept_ctx)
        return PF_ENOMEM;
    for (size_t i = 0; i < proxy->cluster_count; i++)
        if (!worker_cluster(w, i))
            return PF_ENOMEM;
    if (getrandom(w->rng, sizeof w->rng, 0) != sizeof w->rng || (w->rng[0] | w->rng[1]) == 0) {
        w->rng[0] = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
        w->rng[1] = 0xbf58476d1ce4e5b9ull + id;
    }
    if (proxy->cfg->access_log) {
        w->log_buf = malloc(64u * 1024u);
        if (!w->log_buf)
            return PF_ENOMEM;
    }
    return PF_OK;
}

/* A set was published for a ring_hash or maglev cluster: its hash table is built now, on
 * the publisher's thread, for the set the workers will pick from, so that no request waits
 * for the build (a worker that gets there first builds it instead; either way, once). */
static void prepare_hash_table(void *arg) {
    pf_cluster_rt *c = arg;
    pf_endpoint_set *raw = discovery_slot_acquire(c->slot);
    bool panic;
    pf_endpoint_set *set =
        raw ? assign_cache_get(&c->assign, raw, &c->assign_params, &panic) : NULL;
    balancer_group_prepare(c->lb, set ? set : raw);
    discovery_set_unref(set);
    discovery_set_unref(raw);
}

static int cluster_init(pf_proxy *proxy, pf_cluster_rt *c, const pf_config_cluster *cfg) {
    c->cfg = cfg;
    assign_cache_init(&c->assign);
    c->assign_params.panic_threshold = cfg->panic_threshold;
    c->assign_params.zone_aware = cfg->zone_aware;
    c->assign_params.local_zone = proxy->cfg->local_zone;
    c->slot = discovery_slot_new(cfg->name);
    c->lb = balancer_group_new(cfg);
    if (!c->slot || !c->lb)
        return PF_ENOMEM;
    /* Without a subscription (all taken) the first pick builds the table: slower, not wrong. */
    if (cfg->lb_policy == PF_LB_RING_HASH || cfg->lb_policy == PF_LB_MAGLEV)
        discovery_slot_subscribe(c->slot, prepare_hash_table, c);
    register_cluster_metrics(proxy->metrics, c);
    return PF_OK;
}

long proxy_cluster_add(pf_proxy *proxy, const pf_config_cluster *cfg) {
    size_t index = atomic_load(&proxy->cluster_count);
    if (index >= PF_MAX_CLUSTERS)
        return PF_ELIMIT;
    pf_cluster_rt *c = &proxy->clusters[index];
    c->owned_cfg = malloc(sizeof *c->owned_cfg);
    if (!c->owned_cfg)
        return PF_ENOMEM;
    *c->owned_cfg = *cfg;
    c->owned_cfg->endpoints = NULL;
    c->owned_cfg->endpoint_count = 0;
    if (cluster_init(proxy, c, c->owned_cfg) != PF_OK)
        return PF_ENOMEM;
    /* Published last: a worker that sees the new count sees a finished cluster. */
    atomic_store_explicit(&proxy->cluster_count, index + 1, memory_order_release);
    return (long)index;
}

void proxy_cluster_set_health(pf_proxy *proxy, size_t index, pf_health *health) {
    proxy->clusters[index].health = health;
}

void proxy_cluster_retire(pf_proxy *proxy, size_t index) {
    if (index >= proxy->static_cluster_count && index < atomic_load(&proxy->cluster_count))
        proxy->clusters[index].retired = true;
}

pf_proxy *proxy_new(const pf_config *cfg, unsigned workers, pf_metrics *metrics, pf_error *err) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, use_pthreads);
    pf_proxy *proxy = calloc(1, sizeof *proxy);
    if (!proxy) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    proxy->cfg = cfg;
    proxy->metrics = metrics;
    proxy->worker_count = workers ? workers : 1;
    atomic_init(&proxy->cluster_count, cfg->cluster_count);
    proxy->static_cluster_count = cfg->cluster_count;
    pthread_mutex_init(&proxy->routes_lock, NULL);
    proxy->listener_count = cfg->listener_count;
    proxy->clusters = cfg->cluster_count <= PF_MAX_CLUSTERS
                          ? calloc(PF_MAX_CLUSTERS, sizeof *proxy->clusters)
                          : NULL;
    proxy->listeners = calloc(cfg->listener_count, sizeof *proxy->listeners);
    proxy->workers = calloc(proxy->worker_count, sizeof *proxy->workers);
    if (!proxy->clusters || !proxy->listeners || !proxy->workers)
        goto nomem;
    for (size_t i = 0; i < cfg->cluster_count; i++)
        if (cluster_init(proxy, &proxy->clusters[i], &cfg->clusters[i]) != PF_OK)
            goto nomem;
    for (size_t i = 0; i < cfg->listener_count; i++) {
        pf_listener_rt *l = &proxy->listeners[i];
        l->cfg = &cfg->listeners[i];
        l->router = router_new(l->cfg);
        l->fds = malloc(proxy->worker_count * sizeof *l->fds);
        if (!l->router || !l->fds)
            goto nomem;
        for (unsigned k = 0; k < proxy->worker_count; k++)
            l->fds[k] = -1;
        l->claim_fd = -1;
        register_listener_metrics(metrics, l);
    }
    metrics_gauge_callback(metrics, "pilotfish_cluster_panic",
                           "1 while a cluster is below its panic threshold and balances over "
                           "every endpoint, healthy or not.",
                           emit_panic_gauge, proxy);
    metrics_gauge_callback(metrics, "pilotfish_cluster_endpoints",
                           "Endpoints in each cluster's current set, by health.",
                           emit_endpoint_gauge, proxy);
    for (unsigned k = 0; k < proxy->worker_count; k++)
        if (worker_init(proxy, &proxy->workers[k], k) != PF_OK)
            goto nomem;
    return proxy;
nomem:
    pf_fail(err, PF_ENOMEM, "out of memory while building the proxy");
    proxy_free(proxy);
    return NULL;
}

/* Returns a socket on cfg's address: listening and shared with the other workers' sockets
 * (SO_REUSEPORT), or with `probe` only bound and shared with nobody. */
static int bind_listener(const pf_config_listener *cfg, bool probe, pf_error *err) {
    int fd = socket(cfg->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return pf_fail(err, PF_EIO, "listener %s: socket: %s", cfg->name, strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (!probe)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&cfg->addr.ss, cfg->addr.len) < 0 ||
        (!probe && listen(fd, LISTEN_BACKLOG) < 0)) {
        int e = errno;
        close(fd);
        return pf_fail(err, PF_EIO, "listener %s: cannot listen on %s: %s%s", cfg->name,
                       cfg->addr.text, strerror(e),
                       e == EADDRINUSE ? "; another process (another pilotfish?) listens there: "
                                         "stop it or choose another address"
                                       : "");
    }
    return fd;
}

static void on_accept(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg) {
    pf_accept_ctx *ctx = arg;
    conn_accept(ctx->w, ctx->l, fd, sa, salen);
}

static void on_accept_error(struct evconnlistener *listener, void *arg) {
    /* EMFILE and friends: say so, and keep the listener; the loop retries. */
    log_warn("accept failed error=\"%s\"", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void on_drain(evutil_socket_t fd, short what, void *arg) {
    pf_worker *w = arg;
    for (size_t i = 0; i < w->proxy->listener_count; i++) {
        if (w->listeners[i]) {
            evconnlistener_free(w->listeners[i]);
            w->listeners[i] = NULL;
        }
    }
    for (pf_conn *c = w->conns, *next; c; c = next) {
        next = conn_next(c);
        conn_drain(c);
    }
}

static void on_log_flush(evutil_socket_t fd, short what, void *arg) {
    pf_worker *w = arg;
    if (w->log_len)
        access_log_flush(w);
}

static void *worker_main(void *arg) {
    pf_worker *w = arg;
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* Two pilotfish started at the same moment could both pass the probe in proxy_start
 * before either listens. An abstract Unix socket named after the address, bound while we
 * listen there, settles it: only one process can hold a name, names live in the network
 * namespace like the ports they stand for, and the kernel drops them with the process.
 * Sets *claim to the socket, or -1 when the kernel offers none (the probe still stands).
 * Returns 0, or PF_EIO when another pilotfish holds the address. */
static int claim_address(const pf_config_listener *cfg, int *claim, pf_error *err) {
    *claim = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*claim < 0)
        return PF_OK;
    struct sockaddr_un name = {.sun_family = AF_UNIX};
    int n = snprintf(name.sun_path + 1, sizeof name.sun_path - 1, "pilotfish/listen/%s",
                     cfg->addr.text);
    size_t path_len =
        1 + ((size_t)n < sizeof name.sun_path - 1 ? (size_t)n : sizeof name.sun_path - 2);
    if (bind(*claim, (const struct sockaddr *)&name,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len)) == 0)
        return PF_OK;
    int e = errno;
    close(*claim);
    *claim = -1;
    if (e == EADDRINUSE)
        return pf_fail(err, PF_EIO,
                       "listener %s: cannot listen on %s: another pilotfish is starting or "
                       "listening there: stop it or choose another address",
                       cfg->name, cfg->addr.text);
    log_warn("listener %s: no start-up claim on %s (%s); relying on the bind probe", cfg->name,
             cfg->addr.text, strerror(e));
    return PF_OK;
}

int proxy_start(pf_proxy *proxy, pf_error *err) {
    for (size_t i = 0; i < proxy->listener_count; i++) {
        pf_listener_rt *l = &proxy->listeners[i];
        if (claim_address(l->cfg, &l->claim_fd, err) != PF_OK)
            return PF_EIO;
        /* SO_REUSEPORT lets any socket of the same user join a listening port, so a second
         * pilotfish on our address would silently take part of the traffic. A probe without
         * it fails with EADDRINUSE while any socket listens there; its SO_REUSEADDR only
         * lets it past TIME_WAIT connections a previous process left, so restarts work.
         * Every listener is probed before any listens: ours may overlap (0.0.0.0:80 beside
         * 127.0.0.1:80), which SO_REUSEPORT allows among our own sockets. */
        int probe = bind_listener(l->cfg, true, err);
        if (probe < 0)
            return PF_EIO;
        close(probe);
    }
    for (size_t i = 0; i < proxy->listener_count; i++) {
        pf_listener_rt *l = &proxy->listeners[i];
        for (unsigned k = 0; k < proxy->worker_count; k++) {
            int fd = bind_listener(l->cfg, false, err);
            if (fd < 0)
                return PF_EIO;
            l->fds[k] = fd;
        }
    }
    for (unsigned k = 0; k < proxy->worker_count; k++) {
        pf_worker *w = &proxy->workers[k];
        for (size_t i = 0; i < proxy->listener_count; i++) {
            pf_accept_ctx *ctx = &w->accept_ctx[i];
            ctx->w = w;
            ctx->l = &proxy->listeners[i];
            w->listeners[i] = evconnlistener_new(w->base, on_accept, ctx, LEV_OPT_CLOSE_ON_FREE, 0,
                                                 proxy->listeners[i].fds[k]);
            if (!w->listeners[i]) {
                return pf_fail(err, PF_EIO, "listener %s: cannot watch the socket",
                               proxy->listeners[i].cfg->name);
            }
            proxy->listeners[i].fds[k] = -1; /* owned by the evconnlistener now */
            evconnlistener_set_error_cb(w->listeners[i], on_accept_error);
        }
        w->drain_event = event_new(w->base, -1, 0, on_drain, w);
        w->log_flush_timer = event_new(w->base, -1, EV_PERSIST, on_log_flush, w);
        if (!w->drain_event || !w->log_flush_timer)
            return pf_fail(err, PF_ENOMEM, "out of memory");
        struct timeval flush = {0, LOG_FLUSH_MS * 1000};
        if (w->log_buf)
            event_add(w->log_flush_timer, &flush);
    }
    for (unsigned k = 0; k < proxy->worker_count; k++) {
        pf_worker *w = &proxy->workers[k];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            return pf_fail(err, PF_EIO, "cannot start worker thread %u", k);
        w->thread_started = true;
    }
    atomic_store(&proxy->started, true);
    return PF_OK;
}

/* The workers stop listening when they drain: from then on a successor may take the
 * addresses. Main thread. */
static void release_claims(pf_proxy *proxy) {
    for (size_t i = 0; proxy->listeners && i < proxy->listener_count; i++) {
        if (proxy->listeners[i].claim_fd >= 0)
            close(proxy->listeners[i].claim_fd);
        proxy->listeners[i].claim_fd = -1;
    }
}

void proxy_drain(pf_proxy *proxy) {
    if (atomic_exchange(&proxy->draining, true))
        return;
    release_claims(proxy);
    for (unsigned k = 0; k < proxy->worker_count; k++)
        if (proxy->workers[k].drain_event)
            event_active(proxy->workers[k].drain_event, 0, 0);
}

long proxy_active_connections(const pf_proxy *proxy) {
    return atomic_load(&proxy->active_connections);
}

bool proxy_draining(const pf_proxy *proxy) {
    return atomic_load(&proxy->draining);
}

bool proxy_ready(const pf_proxy *proxy) {
    if (!atomic_load(&proxy->started) || atomic_load(&proxy->draining))
        return false;
    for (size_t i = 0; i < proxy->static_cluster_count; i++)
        if (discovery_slot_generation(proxy->clusters[i].slot) == 0)
            return false;
    return true;
}

static void worker_free(pf_worker *w, size_t listener_count) {
    if (w->thread_started) {
        event_base_loopbreak(w->base);
        pthread_join(w->thread, NULL);
    }
    while (w->conns)
        conn_free(w->conns);
    if (w->log_buf && w->log_len)
        access_log_flush(w);
    free(w->log_buf);
    for (size_t i = 0; w->listeners && i < listener_count; i++) {
        if (w->listeners[i])
            evconnlistener_free(w->listeners[i]);
    }
    free(w->listeners);
    free(w->accept_ctx);
    for (size_t i = 0; w->clusters && i < w->proxy->cluster_count; i++) {
        if (!w->clusters[i].rt)
            continue;
        pool_free_all(&w->clusters[i]);
        discovery_set_unref(w->clusters[i].assigned);
        discovery_cache_release(&w->clusters[i].cache);
        balancer_free(w->clusters[i].balancer);
    }
    free(w->clusters);
    proxy_service_routes_free(w->routes);
    if (w->drain_event)
        event_free(w->drain_event);
    if (w->log_flush_timer)
        event_free(w->log_flush_timer);
    if (w->base)
        event_base_free(w->base);
}

void proxy_free(pf_proxy *proxy) {
    if (!proxy)
        return;
    for (unsigned k = 0; proxy->workers && k < proxy->worker_count; k++)
        if (proxy->workers[k].proxy)
            worker_free(&proxy->workers[k], proxy->listener_count);
    free(proxy->workers);
    for (size_t i = 0; proxy->listeners && i < proxy->listener_count; i++) {
        pf_listener_rt *l = &proxy->listeners[i];
        for (unsigned k = 0; l->fds && k < proxy->worker_count; k++)
            if (l->fds[k] >= 0)
                close(l->fds[k]);
        free(l->fds);
        if (l->claim_fd >= 0)
            close(l->claim_fd);
        router_free(l->router);
    }
    free(proxy->listeners);
    for (size_t i = 0; proxy->clusters && i < proxy->cluster_count; i++) {
        if (proxy->clusters[i].cfg)
            assign_cache_destroy(&proxy->clusters[i].assign);
        balancer_group_unref(proxy->clusters[i].lb);
        discovery_slot_free(proxy->clusters[i].slot);
        free(proxy->clusters[i].owned_cfg);
    }
    free(proxy->clusters);
    proxy_service_routes_free(proxy->routes);
    pthread_mutex_destroy(&proxy->routes_lock);
    free(proxy);
}

size_t proxy_cluster_count(const pf_proxy *proxy) {
    return proxy->cluster_count;
}

const pf_config_cluster *proxy_cluster_config(const pf_proxy *proxy, size_t index) {
    return proxy->clusters[index].cfg;
}

pf_endpoint_slot *proxy_cluster_slot(const pf_proxy *proxy, size_t index) {
    return proxy->clusters[index].slot;
}
