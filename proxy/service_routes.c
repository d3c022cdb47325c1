/* Service routes: authority -> cluster for clusters discovered at run time. A table is
 * immutable once published and reference counted; workers read it through a generation
 * check like endpoint sets, so a lookup on the request path takes no lock. */
#include "core/error.h"
#include "proxy/proxy_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ROUTE_BUCKETS_MIN 64
#define PORT_MISSING -2 /* the entry of a missing Service: any port */
#define PORT_KNOWN -3   /* every host with a route has one: "this Service exists" */

typedef struct route_entry {
    char *host;
    int port;
    size_t cluster;
    const pf_router *rules; /* HTTPRoutes attached to the Service port; NULL: none */
    char *missing;          /* PORT_MISSING: the answer */
    struct route_entry *next;
} route_entry;

struct pf_service_routes {
    _Atomic uint32_t refs;
    size_t count, bucket_count;
    route_entry **buckets;
    pf_router **rules; /* owned: freed with the table, after the last request using them */
    size_t rule_count;
};

static uint64_t hash_key(const char *host, int port) {
    uint64_t h = 1469598103934665603ull;
    for (const char *p = host; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return (h ^ (uint64_t)(port + 1)) * 1099511628211ull;
}

pf_service_routes *proxy_service_routes_new(void) {
    pf_service_routes *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    atomic_init(&t->refs, 1);
    t->bucket_count = ROUTE_BUCKETS_MIN;
    t->buckets = calloc(t->bucket_count, sizeof *t->buckets);
    if (!t->buckets) {
        free(t);
        return NULL;
    }
    return t;
}

static void grow(pf_service_routes *t) {
    size_t n = t->bucket_count * 2;
    route_entry **buckets = calloc(n, sizeof *buckets);
    if (!buckets)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < t->bucket_count; i++) {
        for (route_entry *e = t->buckets[i], *next; e; e = next) {
            next = e->next;
            size_t b = hash_key(e->host, e->port) % n;
            e->next = buckets[b];
            buckets[b] = e;
        }
    }
    free(t->buckets);
    t->buckets = buckets;
    t->bucket_count = n;
}

static int add_entry(pf_service_routes *t, const char *host, int port, size_t cluster_index);

int proxy_service_routes_add_missing(pf_service_routes *t, const char *host, const char *message) {
    char *copy = strdup(message);
    if (!copy || add_entry(t, host, PORT_MISSING, 0) != PF_OK) {
        free(copy);
        return PF_ENOMEM;
    }
    route_entry *e = t->buckets[hash_key(host, PORT_MISSING) % t->bucket_count];
    while (e->port != PORT_MISSING || strcasecmp(e->host, host) != 0)
        e = e->next;
    free(e->missing);
    e->missing = copy;
    return PF_OK;
}

int proxy_service_routes_add(pf_service_routes *t, const char *host, int port,
                             size_t cluster_index) {
    int rc = add_entry(t, host, port, cluster_index);
    if (rc == PF_OK && port >= -1)
        rc = add_entry(t, host, PORT_KNOWN, 0);
    return rc;
}

static int add_entry(pf_service_routes *t, const char *host, int port, size_t cluster_index) {
    size_t b = hash_key(host, port) % t->bucket_count;
    for (route_entry *e = t->buckets[b]; e; e = e->next) {
        if (e->port == port && strcmp(e->host, host) == 0) {
            e->cluster = cluster_index;
            return PF_OK;
        }
    }
    route_entry *e = calloc(1, sizeof *e);
    if (!e || !(e->host = strdup(host))) {
        free(e);
        return PF_ENOMEM;
    }
    for (char *p = e->host; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    e->port = port;
    e->cluster = cluster_index;
    b = hash_key(e->host, port) % t->bucket_count;
    e->next = t->buckets[b];
    t->buckets[b] = e;
    if (++t->count > t->bucket_count * 2)
        grow(t);
    return PF_OK;
}

void proxy_service_routes_free(pf_service_routes *t) {
    if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < t->bucket_count; i++) {
        for (route_entry *e = t->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e->host);
            free(e->missing);
            free(e);
        }
    }
    for (size_t i = 0; i < t->rule_count; i++)
        router_free(t->rules[i]);
    free(t->rules);
    free(t->buckets);
    free(t);
}

long proxy_service_routes_add_rules(pf_service_routes *t, const pf_config_route *routes,
                                    size_t count) {
    /* A listener of these routes only: router_new copies them and compiles their regexes. */
    pf_config_listener l = {
        .protocol = PF_LISTEN_HTTP, .routes = (pf_config_route *)routes, .route_count = count};
    pf_router **grown = realloc(t->rules, (t->rule_count + 1) * sizeof *grown);
    if (!grown)
        return PF_ENOMEM;
    t->rules = grown;
    pf_router *r = router_new(&l, NULL);
    if (!r)
        return PF_EINVAL;
    t->rules[t->rule_count] = r;
    return (long)t->rule_count++;
}

static route_entry *find_entry(const pf_service_routes *t, const char *host, int port) {
    if (!t)
        return NULL;
    for (route_entry *e = t->buckets[hash_key(host, port) % t->bucket_count]; e; e = e->next)
        if (e->port == port && strcmp(e->host, host) == 0)
            return e;
    return NULL;
}

int proxy_service_routes_use_rules(pf_service_routes *t, const char *host, int port, long id) {
    route_entry *e = find_entry(t, host, port);
    if (!e || id < 0 || (size_t)id >= t->rule_count)
        return PF_ENOTFOUND;
    e->rules = t->rules[id];
    return PF_OK;
}

const pf_router *service_routes_rules(const pf_service_routes *t, const char *host, int port) {
    const route_entry *e = find_entry(t, host, port);
    return e ? e->rules : NULL;
}

pf_service_routes *service_routes_hold(const pf_service_routes *t) {
    pf_service_routes *m = (pf_service_routes *)t;
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

long service_routes_find(const pf_service_routes *t, const char *host, int port) {
    const route_entry *e = find_entry(t, host, port);
    return e ? (long)e->cluster : -1;
}

bool service_routes_known(const pf_service_routes *t, const char *host) {
    return service_routes_find(t, host, PORT_KNOWN) >= 0;
}

const char *service_routes_missing(const pf_service_routes *t, const char *host) {
    if (!t)
        return NULL;
    for (route_entry *e = t->buckets[hash_key(host, PORT_MISSING) % t->bucket_count]; e;
         e = e->next)
        if (e->port == PORT_MISSING && strcmp(e->host, host) == 0)
            return e->missing;
    return NULL;
}

void proxy_publish_service_routes(pf_proxy *proxy, pf_service_routes *table) {
    pthread_mutex_lock(&proxy->routes_lock);
    pf_service_routes *old = proxy->routes;
    proxy->routes = table;
    /* seq_cst, against on_demand_park's count then generation: one of us sees the other */
    atomic_fetch_add(&proxy->routes_generation, 1);
    pthread_mutex_unlock(&proxy->routes_lock);
    proxy_service_routes_free(old);
    /* Requests waiting for a Service look again (on demand). */
    for (unsigned k = 0; atomic_load(&proxy->started) && k < proxy->worker_count; k++) {
        pf_worker *w = &proxy->workers[k];
        if (w->resolve_event && atomic_load(&w->resolving_count))
            worker_wake(w, PF_WAKE_ROUTES);
    }
}

const pf_service_routes *worker_service_routes(pf_worker *w) {
    pf_proxy *proxy = w->proxy;
    uint64_t generation = atomic_load_explicit(&proxy->routes_generation, memory_order_acquire);
    if (generation != w->routes_generation) {
        pthread_mutex_lock(&proxy->routes_lock);
        pf_service_routes *fresh = proxy->routes;
        if (fresh)
            atomic_fetch_add_explicit(&fresh->refs, 1, memory_order_relaxed);
        w->routes_generation =
            atomic_load_explicit(&proxy->routes_generation, memory_order_relaxed);
        pthread_mutex_unlock(&proxy->routes_lock);
        proxy_service_routes_free(w->routes);
        w->routes = fresh;
    }
    return w->routes;
}
