/* Applying a new config to running workers, without refusing a connection or breaking a
 * request in flight.
 *
 * Design. What the workers read from the config is reached through three kinds of stable
 * objects that live as long as the proxy: listener slots (pf_listener_rt, one per
 * listener, PF_LISTENER_SLOTS of them), cluster slots (pf_cluster_rt) and the workers. A reload
 * changes what these point at, never the objects:
 *   - a listener slot's settings (`cfg`) and router are atomic pointers, swapped at commit;
 *     a request looks its route up in the router it loads when it starts, so the next
 *     request of a keep-alive connection follows the new routes;
 *   - a cluster slot's `cfg` is an atomic pointer too; in place changes swap it for a copy
 *     with the new timeouts, retry and breaker settings. The slot keeps its endpoint slot,
 *     pools, balancer (EWMA, slow start) and health (checks, ejections), so an unchanged
 *     or changed-in-place cluster loses nothing. Routes name clusters by slot index: the
 *     router is built with the map from the new config's clusters to slots;
 *   - a listener whose name and address stay keeps its slot and its sockets: nothing is
 *     closed, so no connection is refused. A new one gets a free slot and sockets bound
 *     (one per worker, SO_REUSEPORT) before anything changes, so that a busy address
 *     rejects the reload whole. A removed one is retired: each worker closes its socket
 *     and drains the slot's connections; the slot is reused once they are all gone.
 * Commands reach a worker through its event loop (a queue under a lock and worker_wake),
 * never by touching its state from this thread.
 *
 * What was replaced (the old config, old routers, old cluster settings) may still be in
 * use: a worker may be inside a callback that loaded an old pointer, and a request in
 * flight keeps its route and retry policy until it ends. So it is put in a pf_retired and
 * released by every worker: each worker, on its loop, notes the time, and lets go once no
 * request that began before then is still in progress on it (checked on a timer). A request
 * that begins later looked its route up after the swap, and an idle keep-alive connection
 * holds nothing of a config (its listener slot outlives reloads), so long-lived
 * connections do not keep old configs alive. Once every worker let go, the main thread
 * frees it at the next update (or proxy_reload_reap). At most PF_RETIRED_MAX are
 * outstanding: past that a reload is refused until the requests from before earlier
 * reloads end.
 *
 * A cluster the new config no longer names (removed, or replaced by a new one) rides along
 * with what was replaced: once that is released no request can still find it through an
 * old router, so it goes to proxy_cluster_remove, and each worker lets go of its state
 * (pools, balancer) once its own last request and connection to it ended. Then the caller
 * frees it (proxy_cluster_reclaim) and its slot is reused. */
#include "core/log.h"
#include "core/time.h"
#include "proxy/mirror_int.h"
#include "proxy/proxy_int.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PF_RETIRED_MAX 32
#define HOLD_CHECK_MS 100u

typedef struct pf_retired {
    _Atomic unsigned pending; /* workers that still hold it */
    pf_config *cfg;
    pf_router **routers;
    size_t router_count;
    pf_config_cluster **clusters; /* replaced cluster settings */
    size_t cluster_count;
    size_t *slots; /* listener slots retired with it: free once it is released */
    size_t slot_count;
    size_t *removed; /* clusters the commit removed: proxy_cluster_remove once released */
    size_t removed_count;
    struct pf_retired *next; /* the proxy's outstanding list (main thread) */
} pf_retired;

typedef enum { CMD_LISTEN, CMD_UNLISTEN, CMD_HOLD } cmd_kind;

typedef struct pf_worker_cmd {
    cmd_kind kind;
    pf_listener_rt *l;
    int fd;
    pf_retired *retired;
    struct pf_worker_cmd *next;
} pf_worker_cmd;

typedef struct pf_retired_hold {
    pf_retired *retired;
    uint64_t taken_us; /* requests that began at or before this may use the retired config */
    struct pf_retired_hold *next;
} pf_retired_hold;

/* New and kept listeners of an update, by the next config's listener index. */
typedef struct listener_plan {
    size_t slot;
    bool fresh;      /* a new slot: sockets in fds */
    int *fds;        /* one per worker */
    int claim_fd;    /* the address's claim; -1: none */
    long claim_from; /* a retiring slot at the same address whose claim it takes; -1: none */
} listener_plan;

/* A cluster's new request settings, swapped in at commit. */
typedef struct cluster_swap {
    size_t index;
    pf_config_cluster *cfg;
} cluster_swap;

struct pf_proxy_update {
    pf_proxy *proxy;
    const pf_config *next;
    listener_plan *plans;
    bool *keep; /* per slot: kept by next */
    pf_retired *retired;
    cluster_swap *swaps;
    size_t swap_count;
    size_t *removed; /* clusters no route of `next` names; handed to the retired at commit */
    size_t removed_count;
};

static void retired_free(pf_retired *r) {
    for (size_t i = 0; i < r->router_count; i++)
        router_free(r->routers[i]);
    for (size_t i = 0; i < r->cluster_count; i++)
        free(r->clusters[i]);
    free(r->routers);
    free(r->clusters);
    free(r->slots);
    free(r->removed);
    config_free(r->cfg);
    free(r);
}

/* ---- worker side ---------------------------------------------------------------------- */

static void hold_release(pf_retired_hold *h) {
    atomic_fetch_sub_explicit(&h->retired->pending, 1, memory_order_acq_rel);
    free(h);
}

/* True while a request that began before the hold is in progress on the worker. */
static bool hold_in_use(const pf_worker *w, const pf_retired_hold *h) {
    for (const pf_conn *c = w->conns; c; c = conn_next(c)) {
        uint64_t started = conn_request_start_us(c);
        if (started && started <= h->taken_us)
            return true;
    }
    return mirror_started_before(w, h->taken_us);
}

static void check_holds(pf_worker *w) {
    for (pf_retired_hold **p = &w->holds; *p;) {
        pf_retired_hold *h = *p;
        if (hold_in_use(w, h)) {
            p = &h->next;
            continue;
        }
        *p = h->next;
        hold_release(h);
    }
    if (w->holds && !evtimer_pending(w->hold_timer, NULL)) {
        struct timeval tv = pf_timeval_ms(HOLD_CHECK_MS);
        evtimer_add(w->hold_timer, &tv);
    }
}

static void on_hold_timer(evutil_socket_t fd, short what, void *arg) {
    check_holds(arg);
}

static void take_hold(pf_worker *w, pf_retired *r) {
    pf_retired_hold *h = calloc(1, sizeof *h);
    if (!h) {
        /* Out of memory: holding it for ever is safe, releasing it early is not. */
        log_error("reload: out of memory; a replaced config stays in memory worker=%u", w->id);
        return;
    }
    h->retired = r;
    h->taken_us = pf_now_us();
    h->next = w->holds;
    w->holds = h;
    check_holds(w);
}

static void on_commands(evutil_socket_t fd, short what, void *arg) {
    pf_worker *w = arg;
    pthread_mutex_lock(&w->cmd_lock);
    pf_worker_cmd *cmds = w->cmds;
    w->cmds = NULL;
    pthread_mutex_unlock(&w->cmd_lock);
    while (cmds) {
        pf_worker_cmd *cmd = cmds;
        cmds = cmd->next;
        switch (cmd->kind) {
        case CMD_LISTEN:
            if (atomic_load(&w->proxy->draining)) {
                close(cmd->fd);
            } else if (worker_listen(w, cmd->l, cmd->fd) != PF_OK) {
                log_error("listener %s: worker %u cannot watch its socket: out of memory",
                          cmd->l->cfg->name, w->id);
            }
            break;
        case CMD_UNLISTEN:
            worker_unlisten(w, cmd->l);
            break;
        case CMD_HOLD:
            take_hold(w, cmd->retired);
            break;
        }
        free(cmd);
    }
}

int worker_reload_init(pf_worker *w) {
    pthread_mutex_init(&w->cmd_lock, NULL);
    w->cmd_event = event_new(w->base, -1, 0, on_commands, w);
    w->hold_timer = evtimer_new(w->base, on_hold_timer, w);
    return w->cmd_event && w->hold_timer ? PF_OK : PF_ENOMEM;
}

/* After the worker's thread stopped and its connections are freed. */
void worker_reload_free(pf_worker *w) {
    if (!w->cmd_event)
        return;
    while (w->cmds) { /* never run: sockets not taken are closed, holds released */
        pf_worker_cmd *cmd = w->cmds;
        w->cmds = cmd->next;
        if (cmd->kind == CMD_LISTEN)
            close(cmd->fd);
        else if (cmd->kind == CMD_HOLD)
            atomic_fetch_sub(&cmd->retired->pending, 1);
        free(cmd);
    }
    while (w->holds) {
        pf_retired_hold *h = w->holds;
        w->holds = h->next;
        hold_release(h);
    }
    event_free(w->cmd_event);
    event_free(w->hold_timer);
    pthread_mutex_destroy(&w->cmd_lock);
}

/* Queues commands for worker k; they run in order. Main thread. */
static void send_command(pf_worker *w, pf_worker_cmd *cmd) {
    pthread_mutex_lock(&w->cmd_lock);
    pf_worker_cmd **tail = &w->cmds;
    while (*tail)
        tail = &(*tail)->next;
    *tail = cmd;
    pthread_mutex_unlock(&w->cmd_lock);
    worker_wake(w, PF_WAKE_COMMANDS);
}

/* ---- main thread side --------------------------------------------------------------- */

/* Frees what every worker released; their retired listener slots become free. */
static size_t reap(pf_proxy *proxy) {
    size_t left = 0;
    for (pf_retired **p = &proxy->retired; *p;) {
        pf_retired *r = *p;
        if (atomic_load_explicit(&r->pending, memory_order_acquire) != 0) {
            left++;
            p = &r->next;
            continue;
        }
        *p = r->next;
        /* Every worker closed the slot's sockets before it took its hold. */
        for (size_t i = 0; i < r->slot_count; i++)
            proxy->listeners[r->slots[i]].retiring = false;
        /* No request that could have looked a removed cluster up in an old router is left:
         * the workers may let go of its state as soon as its own last request ends. */
        for (size_t i = 0; i < r->removed_count; i++)
            proxy_cluster_remove(proxy, r->removed[i]);
        retired_free(r);
    }
    atomic_store(&proxy->retired_pending, (long)left);
    return left;
}

/* A slot for a new listener: free ones first, then never used ones. -1: none. */
static long free_slot(pf_proxy *proxy, const bool *taken) {
    size_t used = atomic_load(&proxy->listener_count);
    for (size_t i = 0; i < used; i++) {
        pf_listener_rt *l = &proxy->listeners[i];
        bool released = l->state == PF_LISTENER_RETIRED && !l->retiring &&
                        atomic_load(&l->open_connections) == 0;
        if (!taken[i] && (l->state == PF_LISTENER_FREE || released))
            return (long)i;
    }
    return used < PF_LISTENER_SLOTS ? (long)used : -1;
}

static long live_slot(const pf_proxy *proxy, const char *name) {
    for (size_t i = 0; i < proxy->listener_slot_count; i++) {
        const pf_listener_rt *l = &proxy->listeners[proxy->listener_slot[i]];
        if (strcmp(l->cfg->name, name) == 0)
            return (long)proxy->listener_slot[i];
    }
    return -1;
}

static long live_slot_at(const pf_proxy *proxy, const pf_sockaddr *addr) {
    for (size_t i = 0; i < proxy->listener_slot_count; i++) {
        const pf_listener_rt *l = &proxy->listeners[proxy->listener_slot[i]];
        if (strcmp(l->cfg->addr.text, addr->text) == 0)
            return (long)proxy->listener_slot[i];
    }
    return -1;
}

void proxy_update_free(pf_proxy_update *u) {
    if (!u)
        return;
    for (size_t j = 0; u->plans && j < u->next->listener_count; j++) {
        listener_plan *p = &u->plans[j];
        for (unsigned k = 0; p->fds && k < u->proxy->worker_count; k++)
            if (p->fds[k] >= 0)
                close(p->fds[k]);
        free(p->fds);
        if (p->claim_fd >= 0)
            close(p->claim_fd);
    }
    for (size_t i = 0; i < u->swap_count; i++)
        free(u->swaps[i].cfg);
    free(u->swaps);
    free(u->removed);
    free(u->plans);
    free(u->keep);
    if (u->retired) {
        u->retired->cfg = NULL; /* the caller's still */
        retired_free(u->retired);
    }
    free(u);
}

/* True while a listener a reload removed from `addr` may still have sockets there: the
 * workers close them on their loops, a moment after the commit. */
static bool retiring_at(const pf_proxy *proxy, const pf_sockaddr *addr) {
    size_t used = atomic_load(&proxy->listener_count);
    for (size_t i = 0; i < used; i++) {
        const pf_listener_rt *l = &proxy->listeners[i];
        if (l->state == PF_LISTENER_RETIRED && l->retiring &&
            strcmp(l->cfg->addr.text, addr->text) == 0)
            return true;
    }
    return false;
}

/* Binds a new listener's sockets, one per worker. The probe (no SO_REUSEPORT) refuses an
 * address another process listens on; it is skipped when one of our own listeners is
 * there (being renamed or replaced, or removed by the reload before and still closing),
 * which the probe would see as busy. */
static int bind_new(pf_proxy *proxy, const pf_config_listener *cfg, listener_plan *p,
                    pf_error *err) {
    long own = live_slot_at(proxy, &cfg->addr);
    if (own < 0 && !retiring_at(proxy, &cfg->addr)) {
        int probe = proxy_bind_listener(cfg, true, err);
        if (probe < 0)
            return PF_EIO;
        close(probe);
    }
    p->fds = malloc(proxy->worker_count * sizeof *p->fds);
    if (!p->fds)
        return pf_fail(err, PF_ENOMEM, "out of memory");
    for (unsigned k = 0; k < proxy->worker_count; k++)
        p->fds[k] = -1;
    for (unsigned k = 0; k < proxy->worker_count; k++)
        if ((p->fds[k] = proxy_bind_listener(cfg, false, err)) < 0)
            return PF_EIO;
    p->claim_from = own;
    return own >= 0 ? PF_OK : proxy_claim_address(cfg, &p->claim_fd, err);
}

pf_proxy_update *proxy_update_new(pf_proxy *proxy, const pf_config *next, pf_error *err) {
    if (reap(proxy) >= PF_RETIRED_MAX) {
        pf_fail(err, PF_ELIMIT,
                "%d earlier configs may still be used by requests in progress since; try "
                "again once they end",
                PF_RETIRED_MAX);
        return NULL;
    }
    pf_proxy_update *u = calloc(1, sizeof *u);
    if (!u) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    u->proxy = proxy;
    u->next = next;
    u->plans = calloc(next->listener_count + 1, sizeof *u->plans);
    u->keep = calloc(PF_LISTENER_SLOTS, sizeof *u->keep);
    u->retired = calloc(1, sizeof *u->retired);
    if (!u->plans || !u->keep || !u->retired)
        goto nomem;
    for (size_t j = 0; j < next->listener_count; j++) {
        u->plans[j].claim_fd = -1;
        u->plans[j].claim_from = -1;
    }
    bool taken[PF_LISTENER_SLOTS] = {0};
    for (size_t j = 0; j < next->listener_count; j++) {
        const pf_config_listener *cfg = &next->listeners[j];
        long slot = live_slot(proxy, cfg->name);
        if (slot >= 0 && strcmp(proxy->listeners[slot].cfg->addr.text, cfg->addr.text) == 0) {
            u->plans[j].slot = (size_t)slot;
            u->keep[slot] = taken[slot] = true;
        }
    }
    for (size_t j = 0; j < next->listener_count; j++) {
        const pf_config_listener *cfg = &next->listeners[j];
        listener_plan *p = &u->plans[j];
        long kept = live_slot(proxy, cfg->name);
        if (kept >= 0 && u->keep[kept] && u->plans[j].slot == (size_t)kept &&
            strcmp(proxy->listeners[kept].cfg->addr.text, cfg->addr.text) == 0)
            continue;
        long slot = free_slot(proxy, taken);
        if (slot < 0) {
            pf_fail(err, PF_ELIMIT,
                    "$.listeners[%zu]: no listener slot left (%d, removed listeners "
                    "included until their connections close)",
                    j, PF_LISTENER_SLOTS);
            goto fail;
        }
        taken[slot] = true;
        p->slot = (size_t)slot;
        p->fresh = true;
        if (bind_new(proxy, cfg, p, err) != PF_OK)
            goto fail;
    }
    return u;
nomem:
    pf_fail(err, PF_ENOMEM, "out of memory");
fail:
    proxy_update_free(u);
    return NULL;
}

int proxy_update_cluster(pf_proxy_update *u, size_t index, const pf_config_cluster *cfg) {
    pf_config_cluster *copy = malloc(sizeof *copy);
    cluster_swap *more = realloc(u->swaps, (u->swap_count + 1) * sizeof *more);
    if (more)
        u->swaps = more;
    if (!copy || !more) {
        free(copy);
        return PF_ENOMEM;
    }
    pf_cluster_rt *c = &u->proxy->clusters[index];
    /* Only what requests read changes; the first copy (health, balancer) stays as it is. */
    *copy = *c->owned_cfg;
    copy->connect_timeout_ms = cfg->connect_timeout_ms;
    copy->response_timeout_ms = cfg->response_timeout_ms;
    copy->body_timeout_ms = cfg->body_timeout_ms;
    copy->upstream_idle_timeout_ms = cfg->upstream_idle_timeout_ms;
    copy->max_idle_per_endpoint = cfg->max_idle_per_endpoint;
    copy->retry = cfg->retry;
    copy->breakers = cfg->breakers;
    copy->budget_percent = cfg->budget_percent;
    copy->budget_min_concurrency = cfg->budget_min_concurrency;
    u->swaps[u->swap_count++] = (cluster_swap){index, copy};
    return PF_OK;
}

int proxy_update_remove_cluster(pf_proxy_update *u, size_t index) {
    size_t *more = realloc(u->removed, (u->removed_count + 1) * sizeof *more);
    if (!more)
        return PF_ENOMEM;
    u->removed = more;
    u->removed[u->removed_count++] = index;
    return PF_OK;
}

void proxy_reload_reap(pf_proxy *proxy) {
    reap(proxy);
}

void proxy_update_commit(pf_proxy_update *u, const size_t *cluster_slot, pf_config *retired) {
    pf_proxy *proxy = u->proxy;
    const pf_config *next = u->next;
    pf_retired *r = u->retired;
    size_t *slot_map = calloc(next->listener_count + 1, sizeof *slot_map);
    r->routers = calloc(next->listener_count + 1, sizeof *r->routers);
    r->slots = calloc(proxy->listener_slot_count + 1, sizeof *r->slots);
    r->clusters = calloc(u->swap_count + 1, sizeof *r->clusters);
    if (!slot_map || !r->routers || !r->slots || !r->clusters) {
        /* Nothing changed yet; the caller's config stays running. */
        log_error("reload: out of memory applying the config; the running config stays");
        free(slot_map);
        config_free(retired);
        proxy_update_free(u);
        return;
    }
    for (size_t i = 0; i < u->swap_count; i++) {
        pf_cluster_rt *c = &proxy->clusters[u->swaps[i].index];
        const pf_config_cluster *old = atomic_exchange(&c->cfg, u->swaps[i].cfg);
        if (old != c->owned_cfg) /* the first copy stays with the slot */
            r->clusters[r->cluster_count++] = (pf_config_cluster *)old;
    }
    u->swap_count = 0;
    /* Routers first: a failure leaves the old ones in place for that listener. */
    for (size_t j = 0; j < next->listener_count; j++) {
        listener_plan *p = &u->plans[j];
        pf_listener_rt *l = &proxy->listeners[p->slot];
        pf_router *router = router_new(&next->listeners[j], cluster_slot);
        slot_map[j] = p->slot;
        if (!router) {
            log_error("listener %s: out of memory building its routes; it keeps the old ones",
                      next->listeners[j].name);
            continue;
        }
        if (p->fresh) {
            if (l->state == PF_LISTENER_RETIRED && l->router)
                router_free(l->router); /* its last connection closed: nobody reads it */
            l->cfg = &next->listeners[j];
            l->router = router;
            if (p->claim_from >= 0) {
                p->claim_fd = proxy->listeners[p->claim_from].claim_fd;
                proxy->listeners[p->claim_from].claim_fd = -1;
            }
            l->claim_fd = p->claim_fd;
            p->claim_fd = -1;
            l->retiring = false;
            l->state = PF_LISTENER_LIVE;
            proxy_listener_metrics(proxy->metrics, l);
            if (p->slot >= atomic_load(&proxy->listener_count))
                atomic_store(&proxy->listener_count, p->slot + 1);
        } else {
            r->routers[r->router_count++] = atomic_exchange(&l->router, router);
            l->cfg = &next->listeners[j];
        }
    }
    /* Removed (or moved) listeners stop accepting and drain. */
    for (size_t i = 0; i < proxy->listener_slot_count; i++) {
        size_t s = proxy->listener_slot[i];
        if (u->keep[s])
            continue;
        pf_listener_rt *l = &proxy->listeners[s];
        if (l->claim_fd >= 0)
            close(l->claim_fd);
        l->claim_fd = -1;
        l->state = PF_LISTENER_RETIRED;
        l->retiring = true;
        r->slots[r->slot_count++] = s;
        for (unsigned k = 0; k < proxy->worker_count; k++) {
            pf_worker_cmd *cmd = calloc(1, sizeof *cmd);
            if (!cmd)
                continue; /* that worker keeps accepting there until the next drain */
            cmd->kind = CMD_UNLISTEN;
            cmd->l = l;
            send_command(&proxy->workers[k], cmd);
        }
    }
    for (size_t j = 0; j < next->listener_count; j++) {
        listener_plan *p = &u->plans[j];
        for (unsigned k = 0; p->fresh && k < proxy->worker_count; k++) {
            pf_worker_cmd *cmd = calloc(1, sizeof *cmd);
            if (!cmd) {
                close(p->fds[k]);
                p->fds[k] = -1;
                continue; /* the other workers' sockets take the connections */
            }
            cmd->kind = CMD_LISTEN;
            cmd->l = &proxy->listeners[p->slot];
            cmd->fd = p->fds[k];
            p->fds[k] = -1;
            send_command(&proxy->workers[k], cmd);
        }
    }
    free(proxy->listener_slot);
    proxy->listener_slot = slot_map;
    proxy->listener_slot_count = next->listener_count;
    proxy->cfg = next;
    /* Every worker lets go of what was replaced once its connections from before are gone. */
    r->cfg = retired;
    atomic_store(&r->pending, proxy->worker_count);
    for (unsigned k = 0; k < proxy->worker_count; k++) {
        pf_worker_cmd *cmd = calloc(1, sizeof *cmd);
        if (!cmd) {
            log_error("reload: out of memory; a replaced config stays in memory");
            continue;
        }
        cmd->kind = CMD_HOLD;
        cmd->retired = r;
        send_command(&proxy->workers[k], cmd);
    }
    r->removed = u->removed;
    r->removed_count = u->removed_count;
    u->removed = NULL;
    u->removed_count = 0;
    r->next = proxy->retired;
    proxy->retired = r;
    u->retired = NULL;
    proxy_update_free(u);
}

long proxy_cluster_find(const pf_proxy *proxy, const char *name) {
    size_t n = atomic_load(&proxy->cluster_count);
    for (size_t i = 0; i < n; i++)
        if (!atomic_load(&proxy->clusters[i].retired) &&
            strcmp(proxy->clusters[i].cfg->name, name) == 0)
            return (long)i;
    return -1;
}

bool proxy_cluster_retired(const pf_proxy *proxy, size_t index) {
    return atomic_load(&proxy->clusters[index].retired);
}

/* At proxy_free, after the workers released their holds. */
void proxy_retired_free_all(pf_proxy *proxy) {
    while (proxy->retired) {
        pf_retired *r = proxy->retired;
        proxy->retired = r->next;
        retired_free(r);
    }
}
