/* On-demand discovery, the worker's side: a request whose authority matches no route but
 * may name a Service waits (PF_EX_RESOLVING) while the main thread lists and watches that
 * Service. Each route table the main thread publishes wakes the worker, which looks its
 * waiting requests up again: routed, they go on; named missing, 503; neither by the
 * on-demand timeout, 503. Nothing here blocks or takes a lock but the route table's. */
#include "proxy/exchange_int.h"
#include "proxy/proxy_int.h"

#include <stdlib.h>
#include <string.h>

typedef struct pf_resolving {
    pf_exchange *ex;
    char host[PF_HOST_MAX];
    int port;
    struct event *timer;
    struct pf_resolving *prev, *next;
} pf_resolving;

static void on_timeout(evutil_socket_t fd, short what, void *arg) {
    pf_resolving *r = arg;
    pf_exchange *ex = r->ex;
    char body[PF_HOST_MAX + 96];
    snprintf(body, sizeof body, "no answer from service discovery for \"%s\" in time\n", r->host);
    log_debug("on demand: gave up waiting host=%s", r->host);
    exchange_reply(ex, 503, body, NULL); /* unparks */
}

bool on_demand_park(pf_exchange *ex, const char *host, int port) {
    pf_worker *w = ex->w;
    const pf_on_demand *od = &w->proxy->on_demand;
    if (!od->want || !w->resolve_event || strlen(host) >= PF_HOST_MAX || !od->want(od->arg, host))
        return false;
    pf_resolving *r = calloc(1, sizeof *r);
    if (!r || !(r->timer = evtimer_new(w->base, on_timeout, r))) {
        free(r);
        return false;
    }
    r->ex = ex;
    memcpy(r->host, host, strlen(host) + 1);
    r->port = port;
    struct timeval tv = pf_timeval_ms(od->timeout_ms);
    evtimer_add(r->timer, &tv);
    r->next = w->resolving;
    if (w->resolving)
        w->resolving->prev = r;
    w->resolving = r;
    ex->resolving = r;
    exchange_set_state(ex, PF_EX_RESOLVING);
    /* A table published between our lookup and the count going up woke nobody: look. */
    atomic_fetch_add(&w->resolving_count, 1);
    if (atomic_load(&w->proxy->routes_generation) != w->routes_generation)
        event_active(w->resolve_event, 0, 0);
    return true;
}

void on_demand_unpark(pf_exchange *ex) {
    pf_resolving *r = ex->resolving;
    if (!r)
        return;
    pf_worker *w = ex->w;
    if (r->prev)
        r->prev->next = r->next;
    else
        w->resolving = r->next;
    if (r->next)
        r->next->prev = r->prev;
    atomic_fetch_sub(&w->resolving_count, 1);
    event_free(r->timer);
    free(r);
    ex->resolving = NULL;
}

/* The first waiting request the table answers, or NULL. */
static pf_resolving *answered(pf_worker *w, const pf_service_routes *t, long *index,
                              const char **missing) {
    for (pf_resolving *r = w->resolving; r; r = r->next) {
        *index = service_routes_find(t, r->host, r->port);
        *missing = *index < 0 ? service_routes_missing(t, r->host) : NULL;
        if (*index >= 0 || *missing)
            return r;
    }
    return NULL;
}

/* New routes: each waiting request looks its authority up again. Going on with one may
 * close its connection and with it other waiting streams of that connection, so the list
 * is walked again from the start after each (each pass takes one off). */
static void on_routes(evutil_socket_t fd, short what, void *arg) {
    pf_worker *w = arg;
    const pf_service_routes *t = worker_service_routes(w);
    long index;
    const char *missing;
    pf_resolving *r;
    while ((r = answered(w, t, &index, &missing))) {
        pf_exchange *ex = r->ex;
        if (index >= 0) {
            char host[PF_HOST_MAX]; /* unpark frees r */
            int port = r->port;
            memcpy(host, r->host, sizeof host);
            on_demand_unpark(ex);
            exchange_route_service(ex, host, port, index);
        } else {
            exchange_reply(ex, 503, missing, NULL);
        }
    }
}

int worker_on_demand_init(pf_worker *w) {
    w->resolve_event = event_new(w->base, -1, 0, on_routes, w);
    return w->resolve_event ? PF_OK : PF_ENOMEM;
}

void worker_on_demand_free(pf_worker *w) {
    while (w->resolving) /* none: their connections were freed first */
        on_demand_unpark(w->resolving->ex);
    if (w->resolve_event)
        event_free(w->resolve_event);
    w->resolve_event = NULL;
}

void proxy_set_on_demand(pf_proxy *proxy, const pf_on_demand *od) {
    proxy->on_demand = *od;
}

uint64_t proxy_cluster_last_used_ms(const pf_proxy *proxy, size_t index) {
    return atomic_load_explicit(&proxy->clusters[index].last_used_ms, memory_order_relaxed);
}
