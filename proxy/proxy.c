/* Proxy setup and workers: metrics registration, one event loop thread per worker, one
 * SO_REUSEPORT listening socket per listener and worker (the kernel spreads connections),
 * the connection limits and descriptor exhaustion that pause accepting, and the drain that
 * SIGTERM starts. */
#include "core/ev_alloc.h"
#include "core/log.h"
#include "core/random.h"
#include "core/time.h"
#include "proxy/mirror_int.h"
#include "proxy/proxy_int.h"
#include "proxy/tcp_int.h"

#include <assert.h>
#include <errno.h>
#include <event2/thread.h>
#include <limits.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024
#define LOG_FLUSH_MS 200
/* Accepts per wake-up of a listening socket, so one busy listener cannot hold its worker. */
#define ACCEPT_BATCH 64u
/* Out of descriptors, a listening socket waits this long before it tries again, doubling
 * up to the maximum while accept keeps failing; a closed connection retries at once. */
#define ACCEPT_BACKOFF_MIN_MS 10u
#define ACCEPT_BACKOFF_MAX_MS 1000u
/* At most one "not accepting" log line per this interval, over all listeners. */
#define PAUSE_LOG_INTERVAL_MS 10000u

static const char *const pause_reasons[PF_PAUSE_REASONS] = {
    [PF_PAUSE_MAX_CONNECTIONS] = "max_connections",
    [PF_PAUSE_LISTENER_MAX_CONNECTIONS] = "listener_max_connections",
    [PF_PAUSE_DESCRIPTORS] = "descriptors",
};

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

/* Frees the worker's state of a cluster (pools, balancer, cached sets) and forgets it;
 * released_epoch is all that stays. Worker thread, or any thread once the workers stopped. */
static void worker_cluster_free(pf_worker_cluster *wc) {
    if (!wc->rt)
        return;
    pool_free_all(wc);
    discovery_set_unref(wc->assigned);
    discovery_cache_release(&wc->cache);
    balancer_free(wc->balancer);
    uint32_t epoch = wc->released_epoch;
    memset(wc, 0, sizeof *wc);
    wc->released_epoch = epoch;
}

/* Lets go of clusters removed for good (proxy_cluster_remove), each once its last request
 * ended: idle connections close at once, busy ones after their request. The worker first
 * takes the route table published without them, so no later request can reach the slot
 * before it is reused. Worker thread (heartbeat). */
static void worker_release_removed(pf_worker *w) {
    pf_proxy *proxy = w->proxy;
    if (atomic_load_explicit(&proxy->reclaiming, memory_order_acquire) <= 0)
        return;
    worker_service_routes(w);
    size_t n = atomic_load_explicit(&proxy->cluster_count, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        pf_cluster_rt *rt = &proxy->clusters[i];
        if (!atomic_load_explicit(&rt->reclaim, memory_order_acquire))
            continue;
        pf_worker_cluster *wc = &w->clusters[i];
        uint32_t epoch = atomic_load_explicit(&rt->reclaim_epoch, memory_order_acquire);
        if (wc->released_epoch == epoch)
            continue;
        if (wc->rt) {
            if (wc->requests)
                continue;
            pool_free_all(wc); /* closes the idle ones; nothing else is left */
            if (wc->conns)
                continue;
            worker_cluster_free(wc);
        }
        wc->released_epoch = epoch;
        atomic_fetch_add_explicit(&rt->released, 1, memory_order_acq_rel);
    }
}

void worker_cluster_prune(pf_worker_cluster *wc) {
    pf_endpoint_set *raw = discovery_cache_get(&wc->cache);
    if (raw && wc->pruned_version != raw->version) {
        pool_prune(wc, raw);
        wc->pruned_version = raw->version;
    }
}

pf_endpoint_set *worker_cluster_set(pf_worker_cluster *wc) {
    worker_cluster_prune(wc); /* before a pick: departed endpoints' idle connections go */
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

static const char *const tcp_directions[2] = {"from_client", "from_upstream"};

/* tcp (L4) listeners: connections ended by reason, bytes each way, failed connects. */
static void register_tcp_listener_metrics(pf_metrics *m, pf_listener_rt *l) {
    char labels[200];
    for (int i = 0; i < PF_TCP_END_REASONS; i++) {
        snprintf(labels, sizeof labels, "listener=\"%s\",reason=\"%s\"", l->cfg->name,
                 tcp_end_name((pf_tcp_end)i));
        l->tcp_closed[i] =
            metrics_counter(m, "pilotfish_tcp_listener_connections_closed_total",
                            "Connections of a tcp listener that ended, by why.", labels);
    }
    for (int i = 0; i < 2; i++) {
        snprintf(labels, sizeof labels, "listener=\"%s\",direction=\"%s\"", l->cfg->name,
                 tcp_directions[i]);
        l->tcp_bytes[i] =
            metrics_counter(m, "pilotfish_tcp_listener_bytes_total",
                            "Bytes a tcp listener relayed, by where they came from.", labels);
    }
    snprintf(labels, sizeof labels, "listener=\"%s\"", l->cfg->name);
    l->tcp_connect_failures =
        metrics_counter(m, "pilotfish_tcp_listener_connect_failures_total",
                        "Upstream connects of a tcp listener that failed or timed out.", labels);
}

void proxy_listener_metrics(pf_metrics *m, pf_listener_rt *l) {
    char labels[160];
    l->series = proxy_status_series(); /* a new listener in this slot */
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
    l->rate_limited = metrics_counter(m, "pilotfish_rate_limited_requests_total",
                                      "Requests a route's rate_limit answered with 429.", labels);
    char fault[200];
    snprintf(fault, sizeof fault, "listener=\"%s\",kind=\"delay\"", l->cfg->name);
    l->faults_delay = metrics_counter(m, "pilotfish_faults_injected_total",
                                      "Faults a route's fault injected, by kind.", fault);
    snprintf(fault, sizeof fault, "listener=\"%s\",kind=\"abort\"", l->cfg->name);
    l->faults_abort = metrics_counter(m, "pilotfish_faults_injected_total",
                                      "Faults a route's fault injected, by kind.", fault);
    snprintf(fault, sizeof fault, "listener=\"%s\",result=\"sent\"", l->cfg->name);
    l->mirrors_sent = metrics_counter(m, "pilotfish_mirror_requests_total",
                                      "Copies of requests for a route's mirror, by result.", fault);
    snprintf(fault, sizeof fault, "listener=\"%s\",result=\"dropped\"", l->cfg->name);
    l->mirrors_dropped =
        metrics_counter(m, "pilotfish_mirror_requests_total",
                        "Copies of requests for a route's mirror, by result.", fault);
    for (int i = 0; i < PF_PAUSE_REASONS; i++) {
        char paused[200];
        snprintf(paused, sizeof paused, "listener=\"%s\",reason=\"%s\"", l->cfg->name,
                 pause_reasons[i]);
        l->accept_pauses[i] = metrics_counter(
            m, "pilotfish_downstream_accept_pauses_total",
            "Times a worker stopped accepting on a listener (new connections wait in the "
            "kernel's backlog), by reason.",
            paused);
    }
    for (int i = 0; i < PF_CODE_CLASSES; i++) {
        char by_class[200];
        snprintf(by_class, sizeof by_class, "listener=\"%s\",code_class=\"%s\"", l->cfg->name,
                 proxy_code_class_name((size_t)i));
        l->duration[i] = metrics_histogram(
            m, "pilotfish_request_duration_seconds",
            "Time from the first request byte to the response end, by status class.", by_class);
    }
    l->tunnels_total = metrics_counter(m, "pilotfish_tunnels_total",
                                       "Connections switched to another protocol (101), such "
                                       "as WebSockets.",
                                       labels);
    l->tunnels_active =
        metrics_gauge(m, "pilotfish_tunnels_active", "Switched connections open now.", labels);
    static const char *const protocols[2] = {"http1", "h2"};
    for (int i = 0; i < 2; i++) {
        snprintf(labels, sizeof labels, "listener=\"%s\",protocol=\"%s\"", l->cfg->name,
                 protocols[i]);
        l->protocol_requests[i] =
            metrics_counter(m, "pilotfish_downstream_protocol_requests_total",
                            "Requests answered to clients, by the client's protocol.", labels);
    }
    for (int i = 0; i <= PF_GRPC_STATUSES; i++) {
        char code[12];
        snprintf(code, sizeof code, "%d", i);
        snprintf(labels, sizeof labels, "listener=\"%s\",grpc_status=\"%s\"", l->cfg->name,
                 i < PF_GRPC_STATUSES ? code : "other");
        l->grpc_calls[i] = metrics_counter(
            m, "pilotfish_grpc_calls_total",
            "gRPC calls answered to clients, by grpc-status (the upstream's or pilotfish's own).",
            labels);
    }
    static const char *const h2_reasons[PF_H2_ERR_REASONS] = {
        "rapid_reset", "settings_flood", "ping_flood",       "continuation_flood", "unread_acks",
        "header_list", "refused_stream", "malformed_stream", "stalled_stream",     "protocol",
    };
    for (int i = 0; i < PF_H2_ERR_REASONS; i++) {
        char h2l[200];
        snprintf(h2l, sizeof h2l, "listener=\"%s\",reason=\"%s\"", l->cfg->name, h2_reasons[i]);
        l->h2_errors[i] = metrics_counter(
            m, "pilotfish_h2_protocol_errors_total",
            "HTTP/2 client streams or connections refused for breaking the protocol or its "
            "limits, by reason.",
            h2l);
    }
    /* Only tcp listeners relay (and a kept listener's protocol never changes). */
    if (l->cfg->protocol == PF_LISTEN_TCP)
        register_tcp_listener_metrics(m, l);
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
    c->protocol_errors = metrics_counter(
        m, "pilotfish_upstream_protocol_errors_total",
        "Upstream responses refused as malformed (more than 16 interim responses too).", labels);
    c->retries = metrics_counter(m, "pilotfish_upstream_retries_total",
                                 "Attempts after the first, over all requests.", labels);
    c->retry_budget_exhausted =
        metrics_counter(m, "pilotfish_upstream_retry_budget_exhausted_total",
                        "Retries not made because the cluster's retry budget was spent.", labels);
    c->request_duration = metrics_histogram(
        m, "pilotfish_upstream_request_duration_seconds",
        "Time from an attempt's endpoint pick to the end of its response.", labels);
    c->connect_duration =
        metrics_histogram(m, "pilotfish_upstream_connect_duration_seconds",
                          "Time to open a new upstream connection (connect to connected).", labels);
    c->tcp_connections_total =
        metrics_counter(m, "pilotfish_tcp_connections_total",
                        "tcp listener connections relayed to the cluster (connected).", labels);
    c->tcp_connections_active = metrics_gauge(m, "pilotfish_tcp_connections_active",
                                              "tcp listener connections relayed now.", labels);
    for (int i = 0; i < 2; i++) {
        char dir[200];
        snprintf(dir, sizeof dir, "cluster=\"%s\",direction=\"%s\"", c->cfg->name,
                 tcp_directions[i]);
        c->tcp_bytes[i] =
            metrics_counter(m, "pilotfish_tcp_bytes_total",
                            "Bytes relayed for tcp listeners, by where they came from.", dir);
    }
    char breaker[200];
    static const char *const limits[] = {"max_requests", "max_connections", "max_pending_requests",
                                         "max_retries"};
    pf_counter **slots[] = {&c->overflow_requests, &c->overflow_connections, &c->overflow_pending,
                            &c->overflow_retries};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        snprintf(breaker, sizeof breaker, "cluster=\"%s\",breaker=\"%s\"", c->cfg->name, limits[i]);
        *slots[i] = metrics_counter(m, "pilotfish_upstream_overflow_total",
                                    "Requests refused with 503 by a circuit breaker.", breaker);
    }
}

static void emit_endpoint_gauge(void *arg, pf_metric_emit emit, void *emit_ctx) {
    const pf_proxy *proxy = arg;
    char labels[160];
    for (size_t i = 0; i < proxy->cluster_count; i++) {
        if (atomic_load(&proxy->clusters[i].retired))
            continue;
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
        if (atomic_load(&proxy->clusters[i].retired))
            continue;
        snprintf(labels, sizeof labels, "cluster=\"%s\"", proxy->clusters[i].cfg->name);
        emit(emit_ctx, labels, proxy_cluster_panic(proxy, i) ? 1 : 0);
    }
}

static void use_pthreads(void) {
    evthread_use_pthreads();
}

void worker_wake(pf_worker *w, unsigned what) {
    /* Only the first asker since the worker last looked writes: the worker reads the
     * eventfd before it takes the bits, so no request is left without a wake-up. */
    if (atomic_fetch_or(&w->wake_bits, what) == 0) {
        uint64_t one = 1;
        ssize_t n = write(w->wake_fd, &one, sizeof one);
        (void)n; /* EAGAIN: the counter is full, so the worker is woken anyway */
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg) {
    pf_worker *w = arg;
    uint64_t count;
    ssize_t n = read(fd, &count, sizeof count);
    (void)n;
    unsigned bits = atomic_exchange(&w->wake_bits, 0);
    if ((bits & PF_WAKE_RESUME) && w->resume_event)
        event_active(w->resume_event, 0, 0);
    if ((bits & PF_WAKE_DRAIN) && w->drain_event)
        event_active(w->drain_event, 0, 0);
    if ((bits & PF_WAKE_COMMANDS) && w->cmd_event)
        event_active(w->cmd_event, 0, 0);
    if ((bits & PF_WAKE_ROUTES) && w->resolve_event)
        event_active(w->resolve_event, 0, 0);
    if (bits & PF_WAKE_STOP)
        event_base_loopbreak(w->base);
}

static int worker_init(pf_proxy *proxy, pf_worker *w, unsigned id) {
    w->proxy = proxy;
    w->id = id;
    /* The changelist folds an add and a delete of the same event in one loop turn into
     * nothing, which saves epoll_ctl calls as bufferevents toggle their write events. */
    /* No locks: every event and buffer on this base is used by the worker's thread alone
     * (other threads wake it through wake_fd), and a locked base takes and releases its
     * lock around each callback, add and delete, several times per request. */
    struct event_config *ec = event_config_new();
    if (ec) {
        event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
        w->base = event_base_new_with_config(ec);
        event_config_free(ec);
    }
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->base && w->wake_fd >= 0) {
        w->wake_event = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, on_wake, w);
        if (w->wake_event)
            event_add(w->wake_event, NULL);
    }
    /* Room for every cluster there may ever be; untouched entries cost no memory. */
    w->clusters = calloc(PF_MAX_CLUSTERS, sizeof *w->clusters);
    w->accept_ctx = calloc(PF_LISTENER_SLOTS, sizeof *w->accept_ctx);
    if (!w->base || !w->wake_event || !w->clusters || !w->accept_ctx ||
        worker_reload_init(w) != PF_OK || worker_on_demand_init(w) != PF_OK)
        return PF_ENOMEM;
    for (size_t i = 0; i < PF_LISTENER_SLOTS; i++) {
        w->accept_ctx[i].fd = -1;
        w->accept_ctx[i].state = PF_ACCEPT_CLOSED;
    }
    for (size_t i = 0; i < proxy->cluster_count; i++)
        if (!atomic_load(&proxy->clusters[i].retired) && !worker_cluster(w, i))
            return PF_ENOMEM;
    if (getrandom(w->rng, sizeof w->rng, 0) != sizeof w->rng || (w->rng[0] | w->rng[1]) == 0) {
        w->rng[0] = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
        w->rng[1] = 0xbf58476d1ce4e5b9ull + id;
    }
    if (proxy->alog.enabled) {
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

/* Every cluster owns a copy of its settings (endpoints left out: discovery publishes them),
 * so that health, the balancer group and discovery may keep pointing at it while reloads
 * replace the config the copy came from. */
static int cluster_init(pf_proxy *proxy, pf_cluster_rt *c, const pf_config_cluster *from) {
    pf_config_cluster *cfg = malloc(sizeof *cfg);
    if (!cfg)
        return PF_ENOMEM;
    *cfg = *from;
    cfg->endpoints = NULL;
    cfg->endpoint_count = 0;
    c->owned_cfg = cfg;
    c->cfg = cfg;
    c->series = proxy_status_series(); /* a reused slot holds another cluster now */
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

static void release_cluster_metrics(pf_metrics *m, pf_cluster_rt *c) {
    const void *series[] = {c->connections_total,
                            c->connections_active,
                            c->pool_reuses,
                            c->connect_failures,
                            c->connect_timeouts,
                            c->response_timeouts,
                            c->resets,
                            c->protocol_errors,
                            c->retries,
                            c->retry_budget_exhausted,
                            c->request_duration,
                            c->connect_duration,
                            c->overflow_requests,
                            c->overflow_connections,
                            c->overflow_pending,
                            c->overflow_retries,
                            c->tcp_connections_total,
                            c->tcp_connections_active,
                            c->tcp_bytes[0],
                            c->tcp_bytes[1]};
    for (int i = 0; i < PF_CODE_CLASSES; i++)
        metrics_release(m, c->requests[i]);
    for (size_t i = 0; i < sizeof series / sizeof series[0]; i++)
        metrics_release(m, series[i]);
}

/* Frees what cluster_init made; the slot is left zeroed but for the reclaim fields. */
static void cluster_destroy(pf_proxy *proxy, pf_cluster_rt *c) {
    if (c->owned_cfg)
        assign_cache_destroy(&c->assign);
    balancer_group_unref(c->lb);
    discovery_slot_free(c->slot);
    if (c->cfg != c->owned_cfg)
        free((void *)c->cfg);
    free(c->owned_cfg);
    tls_client_free(c->tls);
    release_cluster_metrics(proxy->metrics, c);
    memset(c, 0, offsetof(pf_cluster_rt, retired));
}

/* A cluster added while running: its TLS client (when it speaks TLS) and its state. A TLS
 * cluster replaced by a reload (another health check, policy, ...) keeps speaking TLS; its
 * files are watched for rotation by whoever added it (cmd/: reloads and auto-discovery). */
static int cluster_start(pf_proxy *proxy, pf_cluster_rt *c, const pf_config_cluster *cfg) {
    pf_error err = {{0}};
    pf_tls_client *tls = NULL;
    if (cfg->has_tls && !(tls = tls_client_new(cfg, proxy->worker_count, proxy->metrics, &err))) {
        log_warn("cluster %s: %s", cfg->name, err.msg);
        return PF_EINVAL;
    }
    if (cluster_init(proxy, c, cfg) != PF_OK) {
        tls_client_free(tls);
        return PF_ENOMEM;
    }
    c->tls = tls;
    return PF_OK;
}

long proxy_cluster_add(pf_proxy *proxy, const pf_config_cluster *cfg) {
    size_t count = atomic_load(&proxy->cluster_count);
    /* A reclaimed slot first: the workers scan up to the count, so it stays low. */
    if (proxy->free_cluster_count) {
        size_t index = proxy->free_clusters[proxy->free_cluster_count - 1];
        pf_cluster_rt *c = &proxy->clusters[index];
        int rc = cluster_start(proxy, c, cfg);
        if (rc != PF_OK) {
            cluster_destroy(proxy, c);
            return rc;
        }
        proxy->free_cluster_count--;
        atomic_store(&c->last_used_ms, pf_now_ms());
        /* Requests reach it only through a route table published after this. */
        atomic_store_explicit(&c->retired, false, memory_order_release);
        return (long)index;
    }
    if (count >= PF_MAX_CLUSTERS)
        return PF_ELIMIT;
    pf_cluster_rt *c = &proxy->clusters[count];
    int rc = cluster_start(proxy, c, cfg);
    if (rc != PF_OK)
        return rc;
    atomic_store(&c->last_used_ms, pf_now_ms());
    /* Published last: a worker that sees the new count sees a finished cluster. */
    atomic_store_explicit(&proxy->cluster_count, count + 1, memory_order_release);
    return (long)count;
}

void proxy_cluster_remove(pf_proxy *proxy, size_t index) {
    pf_cluster_rt *c = &proxy->clusters[index];
    if (index >= atomic_load(&proxy->cluster_count) || atomic_load(&c->reclaim))
        return;
    atomic_store(&c->retired, true);
    atomic_store(&c->released, 0);
    atomic_fetch_add_explicit(&c->reclaim_epoch, 1, memory_order_acq_rel);
    atomic_store_explicit(&c->reclaim, true, memory_order_release);
    atomic_fetch_add_explicit(&proxy->reclaiming, 1, memory_order_acq_rel);
}

int proxy_cluster_reclaim(pf_proxy *proxy, size_t index) {
    pf_cluster_rt *c = &proxy->clusters[index];
    if (!atomic_load(&c->reclaim))
        return PF_EINVAL;
    /* Workers that never ran hold nothing and release nothing: their state is freed here. */
    bool running = atomic_load(&proxy->started);
    if (running && atomic_load_explicit(&c->released, memory_order_acquire) < proxy->worker_count)
        return PF_EINUSE;
    for (unsigned k = 0; !running && k < proxy->worker_count; k++)
        if (proxy->workers[k].clusters)
            worker_cluster_free(&proxy->workers[k].clusters[index]);
    cluster_destroy(proxy, c);
    atomic_store(&c->reclaim, false);
    atomic_fetch_sub_explicit(&proxy->reclaiming, 1, memory_order_acq_rel);
    proxy->free_clusters[proxy->free_cluster_count++] = index;
    return PF_OK;
}

/* Health checks of a TLS cluster connect as its requests do: its CA, client certificate
 * (rotation included) and the name tls_check_name picks. */
static SSL *check_ssl(void *arg, int fd, const char *endpoint) {
    pf_cluster_rt *rt = arg;
    char buf[PF_DNS_NAME_MAX];
    const char *name = tls_check_name(rt->owned_cfg, endpoint, buf, sizeof buf);
    return tls_client_check_ssl(rt->tls, fd, name);
}

void proxy_cluster_describe_tls(const pf_proxy *proxy, size_t index, json_t *into) {
    if (index < atomic_load(&proxy->cluster_count) && proxy->clusters[index].tls)
        tls_client_describe(proxy->clusters[index].tls, into);
}

void proxy_cluster_set_health(pf_proxy *proxy, size_t index, pf_health *health) {
    pf_cluster_rt *rt = &proxy->clusters[index];
    rt->health = health;
    if (health && rt->tls && rt->owned_cfg->health_check.tls)
        health_set_tls(health, check_ssl, rt);
}

void proxy_cluster_retire(pf_proxy *proxy, size_t index) {
    if (index < atomic_load(&proxy->cluster_count))
        atomic_store(&proxy->clusters[index].retired, true);
}

/* The global limit: the configured one, or one derived from the open file limit that
 * leaves descriptors for everything that is not a client connection. */
static uint32_t effective_max_connections(const pf_config *cfg) {
    struct rlimit lim;
    uint64_t fds = 1u << 20;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
        fds = lim.rlim_cur;
    uint32_t derived = config_default_max_connections(fds);
    if (!cfg->max_connections)
        return derived;
    if (cfg->max_connections > derived)
        log_warn("max_connections=%u is more than the open file limit (%llu) leaves for clients "
                 "(%u); past that, accepting pauses whenever descriptors run out",
                 cfg->max_connections, (unsigned long long)fds, derived);
    return cfg->max_connections;
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
    proxy->max_connections = effective_max_connections(cfg);
    atomic_init(&proxy->cluster_count, cfg->cluster_count);
    proxy->static_cluster_count = cfg->cluster_count;
    pthread_mutex_init(&proxy->routes_lock, NULL);
    atomic_init(&proxy->listener_count, cfg->listener_count);
    proxy->listener_slot_count = cfg->listener_count;
    proxy->listener_slot = calloc(cfg->listener_count + 1, sizeof *proxy->listener_slot);
    proxy->clusters = cfg->cluster_count <= PF_MAX_CLUSTERS
                          ? calloc(PF_MAX_CLUSTERS, sizeof *proxy->clusters)
                          : NULL;
    proxy->listeners = cfg->listener_count <= PF_LISTENER_SLOTS
                           ? calloc(PF_LISTENER_SLOTS, sizeof *proxy->listeners)
                           : NULL;
    proxy->workers = calloc(proxy->worker_count, sizeof *proxy->workers);
    proxy->free_clusters = calloc(PF_MAX_CLUSTERS, sizeof *proxy->free_clusters);
    if (!proxy->clusters || !proxy->listeners || !proxy->workers || !proxy->listener_slot ||
        !proxy->free_clusters)
        goto nomem;
    for (size_t i = 0; i < cfg->cluster_count; i++) {
        if (cluster_init(proxy, &proxy->clusters[i], &cfg->clusters[i]) != PF_OK)
            goto nomem;
        proxy->clusters[i].at_start = true;
        if (cfg->clusters[i].has_tls &&
            !(proxy->clusters[i].tls =
                  tls_client_new(&cfg->clusters[i], proxy->worker_count, metrics, err))) {
            proxy_free(proxy);
            return NULL;
        }
    }
    for (size_t i = 0; i < cfg->listener_count; i++) {
        pf_listener_rt *l = &proxy->listeners[i];
        l->cfg = &cfg->listeners[i];
        l->router = router_new(l->cfg, NULL);
        l->fds = malloc(proxy->worker_count * sizeof *l->fds);
        if (!l->router || !l->fds)
            goto nomem;
        for (unsigned k = 0; k < proxy->worker_count; k++)
            l->fds[k] = -1;
        l->claim_fd = -1;
        l->state = PF_LISTENER_LIVE;
        proxy->listener_slot[i] = i;
        proxy_listener_metrics(metrics, l);
        if (l->cfg->has_tls &&
            !(l->tls = tls_server_new(l->cfg, proxy->worker_count, metrics, err))) {
            proxy_free(proxy);
            return NULL;
        }
    }
    proxy->alog = cfg->access_log;
    if (cfg->access_log.enabled) {
        proxy->access_log_dropped = metrics_counter(
            metrics, "pilotfish_access_log_dropped_total",
            "Access log lines dropped because the sink took nothing more (nobody reading it).", "");
        if (!proxy->access_log_dropped)
            goto nomem;
        if (!cfg->access_log.path[0]) {
            pf_log_sink_open(&proxy->access_sink, STDOUT_FILENO);
        } else if (pf_log_sink_open_path(&proxy->access_sink, cfg->access_log.path, err) != PF_OK) {
            proxy_free(proxy);
            return NULL;
        }
    }
    metrics_gauge_callback(metrics, "pilotfish_cluster_panic",
                           "1 while a cluster is below its panic threshold and balances over "
                           "every endpoint, healthy or not.",
                           emit_panic_gauge, proxy);
    metrics_gauge_callback(metrics, "pilotfish_cluster_endpoints",
                           "Endpoints in each cluster's current set, by health.",
                           emit_endpoint_gauge, proxy);
    proxy->per_endpoint = cfg->stats.per_endpoint;
    if (proxy->per_endpoint && proxy_endpoint_metrics_register(proxy, metrics) != PF_OK)
        goto nomem;
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
int proxy_bind_listener(const pf_config_listener *cfg, bool probe, pf_error *err) {
    int fd = socket(cfg->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return pf_fail(err, PF_EIO, "listener %s: socket: %s", cfg->name, strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (!probe) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        /* Accepted sockets inherit it: no setsockopt per client connection. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
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

/* ---- accepting ------------------------------------------------------------------------ */

/* One more in `count` unless it is at `limit`. Compare-and-swap keeps a limit exact while
 * every worker admits against the same count. */
static bool take_below(_Atomic long *count, long limit) {
    long n = atomic_load_explicit(count, memory_order_relaxed);
    do {
        if (n >= limit)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(count, &n, n + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

/* Takes a client connection's place under the global and the listener's limits before the
 * accept, so that a connection over a limit stays in the kernel's backlog. Returns -1 when
 * admitted, else the pf_pause_reason of the limit that is full. */
static int admit(pf_proxy *proxy, pf_listener_rt *l) {
    if (!take_below(&proxy->active_connections, (long)proxy->max_connections))
        return PF_PAUSE_MAX_CONNECTIONS;
    long limit = l->cfg->max_connections ? (long)l->cfg->max_connections : LONG_MAX;
    if (!take_below(&l->open_connections, limit)) {
        atomic_fetch_sub_explicit(&proxy->active_connections, 1, memory_order_relaxed);
        return PF_PAUSE_LISTENER_MAX_CONNECTIONS;
    }
    metrics_gauge_add(l->connections_active, 1);
    return -1;
}

static void release(pf_proxy *proxy, pf_listener_rt *l) {
    metrics_gauge_add(l->connections_active, -1);
    atomic_fetch_sub_explicit(&l->open_connections, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&proxy->active_connections, 1, memory_order_relaxed);
}

static bool accept_paused(pf_accept_state s) {
    return s == PF_ACCEPT_FULL || s == PF_ACCEPT_NOFILE;
}

/* The one place a listening socket changes state (see pf_accept_state). Worker thread, or
 * the main thread once the workers are stopped. */
static void accept_set_state(pf_accept_ctx *a, pf_accept_state next) {
    pf_accept_state prev = a->state;
    assert(prev != next && (prev != PF_ACCEPT_CLOSED || next == PF_ACCEPT_ON) &&
           (!accept_paused(prev) || !accept_paused(next)));
    if (prev == PF_ACCEPT_ON)
        event_del(a->readable);
    else if (prev == PF_ACCEPT_NOFILE)
        evtimer_del(a->retry);
    a->state = next;
    if (next == PF_ACCEPT_ON) {
        event_add(a->readable, NULL);
    } else if (next == PF_ACCEPT_NOFILE) {
        struct timeval wait = pf_timeval_ms(a->backoff_ms);
        evtimer_add(a->retry, &wait);
    } else if (next == PF_ACCEPT_CLOSED) {
        close(a->fd);
        a->fd = -1;
    }
    if (accept_paused(prev) != accept_paused(next))
        atomic_fetch_add_explicit(&a->w->proxy->paused_acceptors, accept_paused(next) ? 1 : -1,
                                  memory_order_relaxed);
}

/* At most one line per PAUSE_LOG_INTERVAL_MS over all workers and listeners; the ones left
 * out are counted in the next line (and every pause in the metric). */
static void log_pause(pf_proxy *proxy, const pf_listener_rt *l, pf_pause_reason why, int err) {
    uint64_t now = pf_now_ms();
    uint64_t last = atomic_load_explicit(&proxy->pause_log_ms, memory_order_relaxed);
    if ((last && now - last < PAUSE_LOG_INTERVAL_MS) ||
        !atomic_compare_exchange_strong(&proxy->pause_log_ms, &last, now)) {
        atomic_fetch_add_explicit(&proxy->pauses_unlogged, 1, memory_order_relaxed);
        return;
    }
    unsigned long long more = atomic_exchange(&proxy->pauses_unlogged, 0);
    if (why == PF_PAUSE_DESCRIPTORS)
        log_warn("listener %s: not accepting for now: %s; new connections wait in the kernel's "
                 "backlog until descriptors free up (raise the open file limit or lower "
                 "max_connections) pauses_not_logged=%llu",
                 l->cfg->name, strerror(err), more);
    else
        log_warn("listener %s: not accepting for now: %s %u reached; new connections wait in the "
                 "kernel's backlog until a connection closes pauses_not_logged=%llu",
                 l->cfg->name,
                 why == PF_PAUSE_MAX_CONNECTIONS ? "max_connections"
                                                 : "the listener's max_connections",
                 why == PF_PAUSE_MAX_CONNECTIONS ? proxy->max_connections : l->cfg->max_connections,
                 more);
}

/* Stops accepting until a connection closes (and, out of descriptors, until the backoff
 * timer fires); counted and logged once per episode, not on every retry. */
static void accept_pause(pf_accept_ctx *a, pf_pause_reason why, int err) {
    if (why == PF_PAUSE_DESCRIPTORS) {
        a->backoff_ms = a->backoff_ms ? a->backoff_ms * 2 : ACCEPT_BACKOFF_MIN_MS;
        if (a->backoff_ms > ACCEPT_BACKOFF_MAX_MS)
            a->backoff_ms = ACCEPT_BACKOFF_MAX_MS;
    }
    accept_set_state(a, why == PF_PAUSE_DESCRIPTORS ? PF_ACCEPT_NOFILE : PF_ACCEPT_FULL);
    if (a->episode)
        return;
    a->episode = true;
    metrics_inc(a->l->accept_pauses[why], 1);
    log_pause(a->w->proxy, a->l, why, err);
}

static void on_acceptable(evutil_socket_t fd, short what, void *arg) {
    pf_accept_ctx *a = arg;
    pf_proxy *proxy = a->w->proxy;
    for (unsigned i = 0; i < ACCEPT_BATCH; i++) {
        /* Readable means a client waits for the first accept only: for the others a full
         * limit returns, and the socket, readable again if one waits, pauses then. */
        int full = admit(proxy, a->l);
        if (full >= 0) {
            if (i == 0)
                accept_pause(a, (pf_pause_reason)full, 0);
            return;
        }
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int client = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client < 0) {
            int e = errno;
            release(proxy, a->l);
            /* The listener stays readable while the connection waits: accepting again at
             * once would spin, so it pauses. */
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
                accept_pause(a, PF_PAUSE_DESCRIPTORS, e);
            else if (e == ECONNABORTED || e == EINTR)
                continue;
            else if (e != EAGAIN && e != EWOULDBLOCK)
                log_debug("listener %s: accept: %s", a->l->cfg->name, strerror(e));
            return;
        }
        a->backoff_ms = 0;
        a->episode = false;
        if (conn_accept(a->w, a->l, client, (struct sockaddr *)&ss, (int)len) != PF_OK)
            release(proxy, a->l);
    }
}

static void resume_paused(pf_worker *w) {
    for (size_t i = 0; i < atomic_load(&w->proxy->listener_count); i++)
        if (accept_paused(w->accept_ctx[i].state))
            accept_set_state(&w->accept_ctx[i], PF_ACCEPT_ON);
}

static void on_resume(evutil_socket_t fd, short what, void *arg) {
    resume_paused(arg);
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg) {
    pf_accept_ctx *a = arg;
    if (a->state == PF_ACCEPT_NOFILE)
        accept_set_state(a, PF_ACCEPT_ON);
}

void worker_conn_closed(pf_worker *w, pf_listener_rt *l) {
    pf_proxy *proxy = w->proxy;
    release(proxy, l);
    /* A place (and a descriptor) is free: every paused socket may take it, on any worker.
     * Costs one relaxed load per close while nothing is paused. */
    if (atomic_load_explicit(&proxy->paused_acceptors, memory_order_relaxed) == 0)
        return;
    for (unsigned k = 0; k < proxy->worker_count; k++) {
        if (&proxy->workers[k] == w)
            resume_paused(w);
        else
            worker_wake(&proxy->workers[k], PF_WAKE_RESUME);
    }
}

static void close_acceptor(pf_accept_ctx *a) {
    if (a->state != PF_ACCEPT_CLOSED)
        accept_set_state(a, PF_ACCEPT_CLOSED);
    if (a->readable)
        event_free(a->readable);
    if (a->retry)
        event_free(a->retry);
    a->readable = a->retry = NULL;
}

static void close_acceptors(pf_worker *w) {
    for (size_t i = 0; w->accept_ctx && i < atomic_load(&w->proxy->listener_count); i++)
        close_acceptor(&w->accept_ctx[i]);
}

int worker_listen(pf_worker *w, pf_listener_rt *l, int fd) {
    pf_accept_ctx *a = &w->accept_ctx[l - w->proxy->listeners];
    close_acceptor(a);
    a->w = w;
    a->l = l;
    a->backoff_ms = 0;
    a->episode = false;
    a->readable = event_new(w->base, fd, EV_READ | EV_PERSIST, on_acceptable, a);
    a->retry = evtimer_new(w->base, on_accept_retry, a);
    if (!a->readable || !a->retry) {
        close(fd);
        close_acceptor(a);
        return PF_ENOMEM;
    }
    a->fd = fd;
    accept_set_state(a, PF_ACCEPT_ON);
    return PF_OK;
}

void worker_unlisten(pf_worker *w, pf_listener_rt *l) {
    close_acceptor(&w->accept_ctx[l - w->proxy->listeners]);
    for (pf_conn *c = w->conns, *next; c; c = next) {
        next = conn_next(c);
        if (conn_listener(c) == l)
            conn_drain(c);
    }
}

static void on_drain(evutil_socket_t fd, short what, void *arg) {
    pf_worker *w = arg;
    close_acceptors(w);
    for (pf_conn *c = w->conns, *next; c; c = next) {
        next = conn_next(c);
        conn_drain(c);
    }
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg) {
    pf_worker *w = arg;
    atomic_store_explicit(&w->heartbeat_ms, pf_now_ms(), memory_order_relaxed);
    /* A cluster that gets no requests still lets go of departed endpoints' connections. */
    size_t n = atomic_load_explicit(&w->proxy->cluster_count, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (w->clusters[i].rt)
            worker_cluster_prune(&w->clusters[i]);
    worker_release_removed(w);
}

static void on_log_flush(evutil_socket_t fd, short what, void *arg) {
    pf_worker *w = arg;
    if (w->log_len)
        access_log_flush(w);
}

static void *worker_main(void *arg) {
    pf_worker *w = arg;
    char name[16]; /* "pf-worker-N" in top -H, gdb and /proc/PID/task/TID/comm */
    snprintf(name, sizeof name, "pf-worker-%u", w->id);
    pthread_setname_np(pthread_self(), name);
    /* One loop turn at a time, so the turn clock is read afresh after each wake-up. The
     * loop ends only when on_wake breaks it. */
    pf_turn_clock_start();
    do {
        pf_turn_clock_next();
        if (event_base_loop(w->base, EVLOOP_ONCE | EVLOOP_NO_EXIT_ON_EMPTY) < 0)
            break;
    } while (!event_base_got_break(w->base));
    http1_head_spares_free();
    pf_ev_alloc_thread_free();
    return NULL;
}

/* Two pilotfish started at the same moment could both pass the probe in proxy_start
 * before either listens. An abstract Unix socket named after the address, bound while we
 * listen there, settles it: only one process can hold a name, names live in the network
 * namespace like the ports they stand for, and the kernel drops them with the process.
 * Sets *claim to the socket, or -1 when the kernel offers none (the probe still stands).
 * Returns 0, or PF_EIO when another pilotfish holds the address. */
int proxy_claim_address(const pf_config_listener *cfg, int *claim, pf_error *err) {
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
        if (proxy_claim_address(l->cfg, &l->claim_fd, err) != PF_OK)
            return PF_EIO;
        /* SO_REUSEPORT lets any socket of the same user join a listening port, so a second
         * pilotfish on our address would silently take part of the traffic. A probe without
         * it fails with EADDRINUSE while any socket listens there; its SO_REUSEADDR only
         * lets it past TIME_WAIT connections a previous process left, so restarts work.
         * Every listener is probed before any listens: ours may overlap (0.0.0.0:80 beside
         * 127.0.0.1:80), which SO_REUSEPORT allows among our own sockets. */
        int probe = proxy_bind_listener(l->cfg, true, err);
        if (probe < 0)
            return PF_EIO;
        close(probe);
    }
    for (size_t i = 0; i < proxy->listener_count; i++) {
        pf_listener_rt *l = &proxy->listeners[i];
        for (unsigned k = 0; k < proxy->worker_count; k++) {
            int fd = proxy_bind_listener(l->cfg, false, err);
            if (fd < 0)
                return PF_EIO;
            l->fds[k] = fd;
        }
    }
    for (unsigned k = 0; k < proxy->worker_count; k++) {
        pf_worker *w = &proxy->workers[k];
        for (size_t i = 0; i < proxy->listener_count; i++) {
            int fd = proxy->listeners[i].fds[k];
            proxy->listeners[i].fds[k] = -1; /* the worker's now */
            if (worker_listen(w, &proxy->listeners[i], fd) != PF_OK)
                return pf_fail(err, PF_ENOMEM, "listener %s: cannot watch the socket",
                               proxy->listeners[i].cfg->name);
        }
        w->drain_event = event_new(w->base, -1, 0, on_drain, w);
        w->resume_event = event_new(w->base, -1, 0, on_resume, w);
        w->log_flush_timer = event_new(w->base, -1, EV_PERSIST, on_log_flush, w);
        w->heartbeat_timer = event_new(w->base, -1, EV_PERSIST, on_heartbeat, w);
        if (!w->drain_event || !w->resume_event || !w->log_flush_timer || !w->heartbeat_timer)
            return pf_fail(err, PF_ENOMEM, "out of memory");
        struct timeval beat = pf_timeval_ms(PF_HEARTBEAT_MS);
        event_add(w->heartbeat_timer, &beat);
        atomic_store(&w->heartbeat_ms, pf_now_ms());
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
            worker_wake(&proxy->workers[k], PF_WAKE_DRAIN);
}

unsigned proxy_worker_count(const pf_proxy *proxy) {
    return proxy->worker_count;
}

uint64_t proxy_worker_heartbeat_ms(const pf_proxy *proxy, unsigned k) {
    return atomic_load_explicit(&proxy->workers[k].heartbeat_ms, memory_order_relaxed);
}

long proxy_stalled_worker(const uint64_t *beats, size_t n, uint64_t now_ms, uint64_t limit_ms) {
    long worst = -1;
    uint64_t worst_silence = limit_ms;
    for (size_t k = 0; k < n; k++) {
        /* 0: not started. A beat after `now` was read is a beat, not a silence. */
        if (!beats[k] || beats[k] >= now_ms)
            continue;
        if (now_ms - beats[k] > worst_silence) {
            worst_silence = now_ms - beats[k];
            worst = (long)k;
        }
    }
    return worst;
}

uint32_t proxy_max_connections(const pf_proxy *proxy) {
    return proxy->max_connections;
}

long proxy_active_connections(const pf_proxy *proxy) {
    return atomic_load(&proxy->active_connections);
}

bool proxy_draining(const pf_proxy *proxy) {
    return atomic_load(&proxy->draining);
}

/* A start cluster a reload removed may be freed, its slot reused by another. */
static bool cluster_holds_ready(const pf_proxy *proxy, size_t i) {
    return proxy->clusters[i].at_start && !atomic_load(&proxy->clusters[i].retired) &&
           discovery_slot_generation(proxy->clusters[i].slot) == 0;
}

bool proxy_ready(const pf_proxy *proxy) {
    if (!atomic_load(&proxy->started) || atomic_load(&proxy->draining))
        return false;
    for (size_t i = 0; i < proxy->static_cluster_count; i++)
        if (cluster_holds_ready(proxy, i))
            return false;
    return true;
}

bool proxy_started(const pf_proxy *proxy) {
    return atomic_load(&proxy->started);
}

size_t proxy_foreach_unready_cluster(const pf_proxy *proxy, void (*fn)(void *arg, size_t index),
                                     void *arg) {
    size_t n = 0;
    for (size_t i = 0; i < proxy->static_cluster_count; i++)
        if (cluster_holds_ready(proxy, i)) {
            fn(arg, i);
            n++;
        }
    return n;
}

static void worker_stop(pf_worker *w) {
    if (w->thread_started) {
        worker_wake(w, PF_WAKE_STOP);
        pthread_join(w->thread, NULL);
        w->thread_started = false;
    }
}

/* After every worker stopped and closed its listening sockets: a connection freed here
 * finds nothing paused, so it wakes no other worker. */
static void worker_free(pf_worker *w) {
    while (w->conns)
        conn_free(w->conns);
    mirror_free_all(w);
    if (w->log_buf && w->log_len)
        access_log_flush(w);
    free(w->log_buf);
    free(w->accept_ctx);
    worker_reload_free(w);
    worker_on_demand_free(w);
    for (size_t i = 0; w->clusters && i < w->proxy->cluster_count; i++)
        worker_cluster_free(&w->clusters[i]);
    free(w->clusters);
    h2_worker_free_spares(w);
    proxy_service_routes_free(w->routes);
    if (w->drain_event)
        event_free(w->drain_event);
    if (w->resume_event)
        event_free(w->resume_event);
    if (w->log_flush_timer)
        event_free(w->log_flush_timer);
    if (w->heartbeat_timer)
        event_free(w->heartbeat_timer);
    if (w->wake_event)
        event_free(w->wake_event);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    if (w->base)
        event_base_free(w->base);
}

void proxy_free(pf_proxy *proxy) {
    if (!proxy)
        return;
    for (unsigned k = 0; proxy->workers && k < proxy->worker_count; k++)
        if (proxy->workers[k].proxy)
            worker_stop(&proxy->workers[k]);
    for (unsigned k = 0; proxy->workers && k < proxy->worker_count; k++)
        if (proxy->workers[k].proxy)
            close_acceptors(&proxy->workers[k]);
    for (unsigned k = 0; proxy->workers && k < proxy->worker_count; k++)
        if (proxy->workers[k].proxy)
            worker_free(&proxy->workers[k]);
    free(proxy->workers);
    proxy_retired_free_all(proxy);
    for (size_t i = 0; proxy->listeners && i < proxy->listener_count; i++) {
        pf_listener_rt *l = &proxy->listeners[i];
        for (unsigned k = 0; l->fds && k < proxy->worker_count; k++)
            if (l->fds[k] >= 0)
                close(l->fds[k]);
        free(l->fds);
        if (l->claim_fd >= 0)
            close(l->claim_fd);
        router_free(l->router);
        tls_server_free(l->tls);
    }
    free(proxy->listeners);
    free(proxy->listener_slot);
    free(proxy->endpoint_families);
    pf_log_sink_close(&proxy->access_sink);
    for (size_t i = 0; proxy->clusters && i < proxy->cluster_count; i++)
        cluster_destroy(proxy, &proxy->clusters[i]);
    free(proxy->clusters);
    free(proxy->free_clusters);
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
