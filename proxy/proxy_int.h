/* Private to proxy/: the structs shared by the worker, downstream connection, upstream
 * connection and pool code. Nothing outside proxy/ includes this. */
#ifndef PF_PROXY_INT_H
#define PF_PROXY_INT_H

#include "proxy/assign.h"
#include "proxy/balancer.h"
#include "proxy/http1.h"
#include "proxy/proxy.h"
#include "proxy/router.h"
#include "core/log.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <llhttp.h>
#include <pthread.h>
#include <stdatomic.h>

#define PF_CODE_CLASSES 6 /* 1xx..5xx, and "other" for codes outside 100-599 */
#define PF_POOL_BUCKETS 64
#define PF_UPSTREAM_MAX_HEADER_BYTES (64u * 1024u)
#define PF_LINGER_MS 2000u /* how long a closing connection drains unread input */
#define PF_AVOID_MAX 4u    /* failed endpoints a request remembers for its retries */

typedef struct pf_worker pf_worker;
typedef struct pf_conn pf_conn;
typedef struct pf_upstream pf_upstream;

typedef struct pf_cluster_rt {
    const pf_config_cluster *cfg;
    pf_endpoint_slot *slot;
    pf_counter *requests[PF_CODE_CLASSES];
    pf_counter *connect_failures;
    pf_counter *connect_timeouts;
    pf_counter *response_timeouts;
    pf_counter *resets;
    pf_counter *connections_total;
    pf_counter *pool_reuses;
    pf_counter *retries;
    pf_counter *retry_budget_exhausted;
    pf_counter *overflow_requests; /* circuit breakers tripped, by limit */
    pf_counter *overflow_connections;
    pf_counter *overflow_pending;
    pf_counter *overflow_retries;
    pf_gauge *connections_active; /* also the max_connections breaker's count */
    /* In flight across all workers, for the breakers and the retry budget. */
    _Atomic long active_requests;
    _Atomic long active_retries;
    _Atomic long pending_requests; /* waiting for an upstream connection to open */
    pf_assign_params assign_params;
    pf_assign_cache assign;       /* the tier/zone/panic view of the current set */
    pf_balancer_group *lb;        /* what the workers' balancers share (settings, hash tables) */
    pf_config_cluster *owned_cfg; /* run-time clusters own their config copy */
    pf_health *health;            /* passive outlier detection; may be NULL */
    bool retired;
} pf_cluster_rt;

/* Why a worker's listening socket stopped accepting for a while. */
typedef enum {
    PF_PAUSE_MAX_CONNECTIONS,          /* the global max_connections */
    PF_PAUSE_LISTENER_MAX_CONNECTIONS, /* the listener's own max_connections */
    PF_PAUSE_DESCRIPTORS,              /* accept: EMFILE, ENFILE, ENOBUFS or ENOMEM */
    PF_PAUSE_REASONS
} pf_pause_reason;

typedef struct pf_listener_rt {
    const pf_config_listener *cfg;
    pf_router *router;
    int *fds;     /* one per worker */
    int claim_fd; /* the address's claim while we listen (see claim_address); -1: none */
    pf_counter *requests[PF_CODE_CLASSES];
    pf_counter *connections_total;
    pf_counter *errors_total; /* bad requests answered 4xx by pilotfish itself */
    pf_counter *accept_pauses[PF_PAUSE_REASONS];
    pf_gauge *connections_active;
    _Atomic long open_connections; /* the listener's max_connections count */
    pf_histogram *duration;
} pf_listener_rt;

/* Idle upstream connections to one endpoint address, per worker and cluster. */
typedef struct pf_pool_bucket {
    char addr[PF_ADDRTEXT_MAX];
    pf_upstream *idle; /* most recently used first */
    size_t idle_count;
    struct pf_pool_bucket *next;
} pf_pool_bucket;

typedef struct pf_worker_cluster {
    pf_cluster_rt *rt;
    pf_set_cache cache;
    pf_endpoint_set *assigned; /* derived from cache's set: what the balancer picks from */
    uint64_t assigned_version;
    pf_balancer *balancer;
    pf_pool_bucket *buckets[PF_POOL_BUCKETS];
    struct h2u_conn *h2_conns; /* HTTP/2 upstream connections (h2_upstream.c) */
} pf_worker_cluster;

/* A worker's listening socket for one listener. Its life is one state:
 *   ON -> FULL      a connection limit is reached; back ON when a connection closes
 *   ON -> NOFILE    out of descriptors; back ON from a backoff timer or a closed connection
 *   any -> CLOSED   drain or stop; the socket is closed, never to be armed again */
typedef enum {
    PF_ACCEPT_ON,
    PF_ACCEPT_FULL,
    PF_ACCEPT_NOFILE,
    PF_ACCEPT_CLOSED,
} pf_accept_state;

typedef struct pf_accept_ctx {
    pf_worker *w;
    pf_listener_rt *l;
    int fd;
    struct event *readable;
    struct event *retry; /* NOFILE's backoff timer */
    pf_accept_state state;
    uint32_t backoff_ms; /* the next NOFILE wait; 0: no pause since the last accept */
    bool episode;        /* paused since the last accept: the pause is counted already */
} pf_accept_ctx;

struct pf_worker {
    pf_proxy *proxy;
    unsigned id;
    pthread_t thread;
    bool thread_started;
    struct event_base *base;
    pf_accept_ctx *accept_ctx;  /* one per listener config */
    struct event *resume_event; /* a connection closed somewhere: paused listeners retry */
    struct event *drain_event;
    struct event *log_flush_timer;
    pf_worker_cluster *clusters; /* PF_MAX_CLUSTERS slots, filled in on first use */
    pf_service_routes *routes;   /* this worker's reference to the published table */
    uint64_t routes_generation;
    pf_conn *conns; /* every open downstream connection, for drain */
    uint64_t rng[2];
    char *log_buf;
    size_t log_len;
    bool log_blocked; /* stdout was full at the last flush: wait for the timer */
    /* pf_now_ms() at the last tick of the heartbeat timer; read by the admin thread. */
    _Atomic uint64_t heartbeat_ms;
    struct event *heartbeat_timer;
};

struct pf_proxy {
    const pf_config *cfg;
    pf_metrics *metrics;
    pf_cluster_rt *clusters; /* PF_MAX_CLUSTERS slots; configured ones first */
    _Atomic size_t cluster_count;
    size_t static_cluster_count;
    pthread_mutex_t routes_lock;
    pf_service_routes *routes; /* discovered services' routes; NULL: none */
    _Atomic uint64_t routes_generation;
    pf_listener_rt *listeners;
    size_t listener_count;
    pf_worker *workers;
    unsigned worker_count;
    _Atomic bool started;
    _Atomic bool draining;
    _Atomic long active_connections; /* also the global max_connections count */
    uint32_t max_connections;        /* the global limit: configured or derived */
    _Atomic long paused_acceptors;   /* worker listening sockets FULL or NOFILE now */
    _Atomic uint64_t pause_log_ms;   /* when the last pause was logged */
    _Atomic uint64_t pauses_unlogged;
    pf_log_sink access_sink; /* stdout, never blocking */
    pf_counter *access_log_dropped;
};

/* Why an attempt failed; decides whether a retry may follow. */
typedef enum {
    PF_FAIL_CONNECT,  /* refused, failed or timed out connecting */
    PF_FAIL_RESET,    /* closed or reset before the response ended */
    PF_FAIL_TIMEOUT,  /* no response head within the attempt's timeout */
    PF_FAIL_STATUS,   /* a response status the retry policy names */
    PF_FAIL_STALE,    /* a pooled connection the server had closed: nothing was processed */
    PF_FAIL_PROTOCOL, /* a malformed response: never retried */
} pf_failure;

/* exchange_on_response_head's answer when the response should be dropped for a retry. */
#define PF_RESPONSE_RETRY 1

/* proxy/conn.c: a downstream HTTP/1 connection. conn_accept takes `fd` (closed on failure)
 * and returns 0, or PF_ENOMEM. */
int conn_accept(pf_worker *w, pf_listener_rt *l, evutil_socket_t fd, const struct sockaddr *sa,
                int salen);
/* Drain: closes the connection now if idle, else after the response in flight. */
void conn_drain(pf_conn *c);
void conn_free(pf_conn *c);
pf_conn *conn_next(const pf_conn *c);

/* proxy/upstream.c: the worker's idle upstream connections of a cluster, freed. */
void pool_free_all(pf_worker_cluster *wc);

/* proxy/access_log.c */
typedef struct pf_access_entry {
    const char *method;
    const char *authority;
    size_t authority_len;
    const char *path;
    size_t path_len;
    int status;
    uint64_t bytes_in, bytes_out;
    uint64_t duration_us;
    const char *cluster;
    const char *upstream;
    const char *request_id;
    const char *client;
} pf_access_entry;
void access_log_write(pf_worker *w, const pf_access_entry *e);
void access_log_flush(pf_worker *w);

static inline int code_class(int status) {
    return status >= 100 && status < 600 ? status / 100 - 1 : PF_CODE_CLASSES - 1;
}

uint64_t worker_random(pf_worker *w);
/* A downstream connection of listener `l` closed on worker `w`: its place under the
 * connection limits is free again and paused listening sockets may accept. Worker thread. */
void worker_conn_closed(pf_worker *w, pf_listener_rt *l);
/* The worker's state for cluster `index` (< cluster count), created on first use. NULL when
 * out of memory. */
pf_worker_cluster *worker_cluster(pf_worker *w, size_t index);
/* proxy/service_routes.c: the worker's current service routes (borrowed), and a lookup
 * returning the cluster index or -1. */
const pf_service_routes *worker_service_routes(pf_worker *w);
long service_routes_find(const pf_service_routes *t, const char *host, int port);
/* The set this worker balances over now for a cluster (borrowed; NULL before the first
 * publish): discovery's set with health, tiers, zones and panic applied. */
pf_endpoint_set *worker_cluster_set(pf_worker_cluster *wc);

#endif
