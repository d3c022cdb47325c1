/* Service routes: authority -> cluster for clusters discovered at run time. A table is
 * immutable once published and reference counted; workers read it through a generation
 * check like endpoint sets, so a lookup on the request path takes no lock. */
#include "core/error.h"
#include "proxy/proxy_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define ROUTE_BUCKETS_MIN 64

typedef struct route_entry {
    char *host;
    int port;
    size_t cluster;
    struct route_entry *next;
} route_entry;

struct pf_service_routes {
    _Atomic uint32_t refs;
    size_t count, bucket_count;
    route_entry **buckets;
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

int proxy_service_routes_add(pf_service_routes *t, const char *host, int port,
                             size_t cluster_index) {
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
            free(e);
        }
    }
    free(t->buckets);
    free(t);
}

long service_routes_find(const pf_service_routes *t, const char *host, int port) {
    if (!t)
        return -1;
    for (route_entry *e = t->buckets[hash_key(host, port) % t->bucket_count]; e; e = e->next)
        if (e->port == port && strcmp(e->host, host) == 0)
            return (long)e->cluster;
    return -1;
}

void proxy_publish_service_routes(pf_proxy *proxy, pf_service_routes *table) {
    pthread_mutex_lock(&proxy->routes_lock);
    pf_service_routes *old = proxy->routes;
    proxy->routes = table;
    atomic_fetch_add_explicit(&proxy->routes_generation, 1, memory_order_release);
    pthread_mutex_unlock(&proxy->routes_lock);
    proxy_service_routes_free(old);
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
