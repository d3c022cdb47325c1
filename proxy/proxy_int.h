/* Private to proxy/: the structs shared by the worker, downstream connection, upstream
 * connection and pool code. Nothing outside proxy/ includes this. */
#ifndef PF_PROXY_INT_H
#define PF_PROXY_INT_H

#include "proxy/assign.h"
#include "proxy/balancer.h"
#include "proxy/http1.h"
#include "proxy/proxy.h"
#include "proxy/router.h"
#include "proxy/tls_int.h"
#include "core/log.h"
#include "core/time.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <llhttp.h>
#include <pthread.h>
#include <stdatomic.h>

#define PF_CODE_CLASSES 6 /* 1xx..5xx, and "other" for codes outside 100-599 */
#define PF_POOL_BUCKETS 64
#define PF_LINGER_MS 2000u    /* how long a closing connection drains unread input */
#define PF_AVOID_MAX 4u       /* failed endpoints a request remembers for its retries */
#define PF_GRPC_STATUSES 17   /* the gRPC status codes 0 (OK) to 16 (UNAUTHENTICATED) */
#define PF_TCP_END_REASONS 12 /* pf_tcp_end (tcp_int.h): why tcp connections end */

typedef struct pf_worker pf_worker;
typedef struct pf_conn pf_conn;
typedef struct pf_upstream pf_upstream;

typedef struct pf_cluster_rt {
    /* The settings requests read now. A reload may swap it for a copy with new timeouts,
     * retry or breaker settings; the old copy lives until no request can hold it. */
    const pf_config_cluster *_Atomic cfg;
    pf_endpoint_slot *slot;
    pf_counter *requests[PF_CODE_CLASSES];
    pf_counter *connect_failures;
    pf_counter *connect_timeouts;
    pf_counter *response_timeouts;
    pf_counter *resets;
    pf_counter *protocol_errors; /* malformed responses, too many interim ones included */
    pf_counter *connections_total;
    pf_counter *pool_reuses;
    pf_counter *retries;
    pf_counter *retry_budget_exhausted;
    pf_histogram *request_duration; /* an attempt's pick to its response's end */
    pf_histogram *connect_duration; /* connect() to connected, new connections only */
    pf_counter *overflow_requests;  /* circuit breakers tripped, by limit */
    pf_counter *overflow_connections;
    pf_counter *overflow_pending;
    pf_counter *overflow_retries;
    pf_gauge *connections_active;      /* also the max_connections breaker's count */
    pf_counter *tcp_connections_total; /* tcp listeners' connections relayed to the cluster */
    pf_gauge *tcp_connections_active;
    pf_counter *tcp_bytes[2]; /* by tunnel side read: [0] from clients, [1] from endpoints */
    /* In flight across all workers, for the breakers and the retry budget. */
    _Atomic long active_requests;
    _Atomic long active_retries;
    _Atomic long pending_requests; /* waiting for an upstream connection to open */
    pf_assign_params assign_params;
    pf_assign_cache assign;       /* the tier/zone/panic view of the current set */
    pf_balancer_group *lb;        /* what the workers' balancers share (settings, hash tables) */
    pf_config_cluster *owned_cfg; /* the first copy: health, balancer and discovery keep it */
    pf_health *health;            /* passive outlier detection; may be NULL */
    pf_tls_client *tls;           /* NULL: plaintext to the endpoints */
    bool at_start;                /* one of the start config's: /ready waits for its set */
    uint64_t series;              /* which cluster the slot holds (proxy_status_series) */
    _Atomic bool retired;
    /* Slot reuse (issue 16): a cluster removed for good is freed once every worker has let
     * go of it. Everything above is reset when the slot is reused; these survive it. */
    _Atomic uint64_t last_used_ms;  /* pf_now_ms() of a recent request, to the second */
    _Atomic uint32_t reclaim_epoch; /* bumped by each removal */
    _Atomic bool reclaim;           /* removed: workers release their state, then it is freed */
    _Atomic unsigned released;      /* workers that let go since the last removal */
} pf_cluster_rt;

/* A listener slot's life (main thread): FREE -> LIVE when a config names it, LIVE ->
 * RETIRED when a reload removes it (workers close its sockets and drain its connections),
 * RETIRED -> FREE once its last connection closed. */
typedef enum {
    PF_LISTENER_FREE,
    PF_LISTENER_LIVE,
    PF_LISTENER_RETIRED,
} pf_listener_state;

/* Listener slots: the config's listeners, plus removed ones still draining. */
#define PF_LISTENER_SLOTS 128

/* Why a worker's listening socket stopped accepting for a while. */
typedef enum {
    PF_PAUSE_MAX_CONNECTIONS,          /* the global max_connections */
    PF_PAUSE_LISTENER_MAX_CONNECTIONS, /* the listener's own max_connections */
    PF_PAUSE_DESCRIPTORS,              /* accept: EMFILE, ENFILE, ENOBUFS or ENOMEM */
    PF_PAUSE_REASONS
} pf_pause_reason;

/* Why pilotfish refused part or all of an HTTP/2 client connection (h2_downstream.c); each
 * is a `reason` of pilotfish_h2_protocol_errors_total. */
typedef enum {
    PF_H2_ERR_RAPID_RESET,        /* streams reset faster than allowed: GOAWAY ENHANCE_YOUR_CALM */
    PF_H2_ERR_SETTINGS_FLOOD,     /* SETTINGS frames faster than allowed: ENHANCE_YOUR_CALM */
    PF_H2_ERR_PING_FLOOD,         /* PING frames faster than allowed: ENHANCE_YOUR_CALM */
    PF_H2_ERR_CONTINUATION_FLOOD, /* a header block in too many CONTINUATION frames */
    PF_H2_ERR_UNREAD_ACKS,        /* ACKs queued for a client that does not read them */
    PF_H2_ERR_HEADER_LIST,        /* decoded fields past max_header_bytes/max_headers: 431 */
    PF_H2_ERR_REFUSED_STREAM,     /* a stream past the advertised concurrency: REFUSED_STREAM */
    PF_H2_ERR_MALFORMED_STREAM,   /* bad pseudo-headers, upper case, length: PROTOCOL_ERROR */
    PF_H2_ERR_STALLED_STREAM,     /* a zero window held past body_timeout: CANCEL */
    PF_H2_ERR_PROTOCOL,           /* any other connection error: GOAWAY (PROTOCOL_ERROR, ...) */
    PF_H2_ERR_REASONS
} pf_h2_error;

/* A listener slot. Connections point at their slot for their whole life, so a slot is
 * stable: a reload swaps its settings and router (atomically: workers read them at any
 * time), and a removed listener's slot is only reused once its last connection closed. */
typedef struct pf_listener_rt {
    const pf_config_listener *_Atomic cfg;
    pf_router *_Atomic router;
    int *fds;     /* one per worker */
    int claim_fd; /* the address's claim while we listen (see claim_address); -1: none */
    pf_counter *requests[PF_CODE_CLASSES];
    pf_counter *connections_total;
    pf_counter *errors_total;    /* bad requests answered 4xx by pilotfish itself */
    pf_counter *rate_limited;    /* requests a route's rate_limit answered 429 */
    pf_counter *faults_delay;    /* requests a route's fault delayed */
    pf_counter *faults_abort;    /* requests a route's fault answered in pilotfish's name */
    pf_counter *mirrors_sent;    /* copies of requests sent to a route's mirror cluster */
    pf_counter *mirrors_dropped; /* copies not sent: body too large, too many in flight */
    pf_counter *accept_pauses[PF_PAUSE_REASONS];
    pf_gauge *connections_active;
    _Atomic long open_connections;           /* the listener's max_connections count */
    pf_histogram *duration[PF_CODE_CLASSES]; /* by the response's status class */
    pf_tls_server *tls;                      /* NULL: plaintext */
    pf_counter *tunnels_total;               /* connections switched to another protocol (101) */
    pf_gauge *tunnels_active;
    pf_counter *protocol_requests[2];             /* HTTP/1.x, HTTP/2 */
    pf_counter *grpc_calls[PF_GRPC_STATUSES + 1]; /* by grpc-status 0-16, and any other */
    pf_counter *h2_errors[PF_H2_ERR_REASONS];
    pf_counter *tcp_closed[PF_TCP_END_REASONS]; /* tcp listeners: connections ended, by why */
    pf_counter *tcp_bytes[2]; /* by tunnel side read: [0] from clients, [1] from endpoints */
    pf_counter *tcp_connect_failures; /* connect attempts that failed or timed out */
    pf_listener_state state;
    bool retiring;   /* RETIRED, and some worker may still accept on it (main thread) */
    uint64_t series; /* which listener the slot holds (proxy_status_series) */
} pf_listener_rt;

/* Idle upstream connections to one endpoint address, per worker and cluster; for TLS, per
 * address and the name the connections verified (a DNS or Kubernetes cluster without
 * tls.sni verifies each request's host, so a connection is only reused for its name). */
#define PF_POOL_NAMES_PER_ENDPOINT 16 /* names kept per address; the oldest goes first */
typedef struct pf_pool_bucket {
    char addr[PF_ADDRTEXT_MAX];
    char name[PF_DNS_NAME_MAX]; /* TLS: the verified name; "" for plaintext */
    pf_upstream *idle;          /* most recently used first */
    size_t idle_count;
    SSL_SESSION *tls_session; /* TLS clusters: the endpoint's latest session, to resume */
    struct pf_pool_bucket *next;
} pf_pool_bucket;

typedef struct pf_worker_cluster {
    pf_cluster_rt *rt;
    pf_set_cache cache;
    pf_endpoint_set *assigned; /* derived from cache's set: what the balancer picks from */
    uint64_t assigned_version;
    pf_balancer *balancer;
    pf_pool_bucket *buckets[PF_POOL_BUCKETS];
    uint64_t pruned_version;   /* the set version the pool was last pruned to */
    struct h2u_conn *h2_conns; /* HTTP/2 upstream connections (h2_upstream.c) */
    /* What still points at this state, so that a removed cluster's is freed only after its
     * last request and connection: exchanges routed to it, upstream connections (HTTP/1
     * and HTTP/2, busy or pooled). Worker thread only. */
    uint32_t requests;
    uint32_t conns;
    uint32_t released_epoch; /* the removal of the slot this worker let go of last */
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

/* What another thread asks of a worker (worker_wake): each runs that worker's event of the
 * same name on its own loop. */
enum {
    PF_WAKE_RESUME = 1u << 0,   /* resume_event */
    PF_WAKE_DRAIN = 1u << 1,    /* drain_event */
    PF_WAKE_COMMANDS = 1u << 2, /* cmd_event */
    PF_WAKE_ROUTES = 1u << 3,   /* resolve_event */
    PF_WAKE_STOP = 1u << 4,     /* leave the loop */
};

struct pf_worker {
    pf_proxy *proxy;
    unsigned id;
    pthread_t thread;
    bool thread_started;
    /* Created without locks: only this worker's thread touches it once the thread runs.
     * Other threads reach it through worker_wake. */
    struct event_base *base;
    int wake_fd;                /* eventfd that worker_wake writes to */
    struct event *wake_event;   /* reads wake_fd and runs what wake_bits ask for */
    _Atomic unsigned wake_bits; /* PF_WAKE_* asked for since the last wake */
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
    /* Commands from the main thread (proxy/reload.c): queued under the lock, run by
     * cmd_event on this worker's loop. */
    pthread_mutex_t cmd_lock;
    struct pf_worker_cmd *cmds;
    struct event *cmd_event;
    struct pf_retired_hold *holds; /* retired configs this worker's connections may use */
    struct pf_mirror *mirrors;     /* copies of requests in flight (mirror.c) */
    unsigned mirror_count;
    struct event *hold_timer;
    /* On demand (proxy/on_demand.c): requests waiting for discovery to find their Service,
     * looked at again whenever the main thread publishes routes (resolve_event). */
    struct pf_resolving *resolving;
    _Atomic long resolving_count;
    struct event *resolve_event;
    /* Closed HTTP/2 client streams kept for the next ones (h2_downstream.c). */
    struct h2_stream *h2_spare;
    unsigned h2_spare_count;
};

/* Frees the worker's spare HTTP/2 streams; worker teardown (h2_downstream.c). */
void h2_worker_free_spares(pf_worker *w);

struct pf_proxy {
    const pf_config *_Atomic cfg; /* the current config; a reload swaps it */
    pf_metrics *metrics;
    pf_cluster_rt *clusters;      /* PF_MAX_CLUSTERS slots; configured ones first */
    _Atomic size_t cluster_count; /* slots ever used: the workers scan up to it */
    size_t static_cluster_count;
    size_t *free_clusters; /* reclaimed slots for proxy_cluster_add to reuse (main thread) */
    size_t free_cluster_count;
    _Atomic long reclaiming; /* removed slots not yet reclaimed: the workers look for them */
    pthread_mutex_t routes_lock;
    pf_service_routes *routes; /* discovered services' routes; NULL: none */
    _Atomic uint64_t routes_generation;
    pf_listener_rt *listeners;     /* PF_LISTENER_SLOTS slots */
    _Atomic size_t listener_count; /* slots ever used: the workers scan up to it */
    size_t *listener_slot;         /* config listener index -> slot, for the current config */
    size_t listener_slot_count;
    _Atomic long retired_pending; /* retired configs not yet released by every worker */
    struct pf_retired *retired;   /* those configs, newest first (main thread) */
    pf_worker *workers;
    unsigned worker_count;
    _Atomic bool started;
    _Atomic bool draining;
    _Atomic long active_connections; /* also the global max_connections count */
    uint32_t max_connections;        /* the global limit: configured or derived */
    _Atomic long paused_acceptors;   /* worker listening sockets FULL or NOFILE now */
    _Atomic uint64_t pause_log_ms;   /* when the last pause was logged */
    _Atomic uint64_t pauses_unlogged;
    pf_log_sink access_sink;   /* stdout or access_log.path, never blocking */
    pf_config_access_log alog; /* the start config's: access_log cannot change on reload */
    bool per_endpoint;         /* stats.per_endpoint of the start config */
    void *endpoint_families;   /* proxy/endpoint_metrics.c's callbacks' arguments */
    pf_on_demand on_demand;    /* want == NULL: off */
    pf_counter *access_log_dropped;
};

/* Asks worker w, from any thread, to run what `what` (PF_WAKE_*) names on its loop. Cheap
 * when the worker has been woken already and has not run yet: one atomic OR. */
void worker_wake(pf_worker *w, unsigned what);

/* Why an attempt failed; decides whether a retry may follow. */
typedef enum {
    PF_FAIL_CONNECT,  /* refused, failed or timed out connecting */
    PF_FAIL_RESET,    /* closed or reset before the response ended */
    PF_FAIL_TIMEOUT,  /* no response head within the attempt's timeout */
    PF_FAIL_STATUS,   /* a response status the retry policy names */
    PF_FAIL_STALE,    /* a pooled connection the server had closed: nothing was processed */
    PF_FAIL_PROTOCOL, /* a malformed response: never retried */
    PF_FAIL_GRPC,     /* a gRPC call answered with a failing grpc-status (the code as status) */
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
/* Whether the cluster's circuit breakers let a new upstream connection open (max_connections,
 * max_pending_requests); counts the overflow when not. For every upstream codec. */
bool upstream_may_connect(pf_worker_cluster *wc);
/* Counts a connection being opened to the cluster: pending until connected, active, total.
 * For every upstream codec. */
void upstream_count_opening(pf_worker_cluster *wc);
/* Closes the worker's idle connections to endpoints not in `set` and frees their pool
 * buckets (issue 16: departed endpoints held descriptors, breaker places and memory). */
void pool_prune(pf_worker_cluster *wc, const pf_endpoint_set *set);
/* Whether `addr` is an endpoint of `set` (sorted by address text). */
bool pool_set_has(const pf_endpoint_set *set, const char *addr);
/* Prunes wc's pool when its endpoint set changed since the last prune. Worker thread. */
void worker_cluster_prune(pf_worker_cluster *wc);

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
    const char *trace_id; /* 32 lowercase hex digits, or NULL */
    const char *client;
    const char *protocol; /* "HTTP/1.1" or "HTTP/2" */
    int grpc_status;      /* a gRPC call's grpc-status; -1: not a call, or none seen */
} pf_access_entry;
/* proxy/endpoint_metrics.c: the stats.per_endpoint series. Returns 0 or PF_ENOMEM. */
int proxy_endpoint_metrics_register(pf_proxy *proxy, pf_metrics *m);

/* Whether this request's line is kept (access_log.sample). Worker thread. */
bool access_log_sampled(pf_worker *w);
void access_log_write(pf_worker *w, const pf_access_entry *e);
/* tcp listeners: one line per connection. */
typedef struct pf_tcp_access_entry {
    const char *listener;
    const char *client;
    const char *sni;      /* NULL: none read */
    const char *cluster;  /* NULL: none chosen */
    const char *upstream; /* NULL: never connected */
    uint64_t bytes_in, bytes_out;
    uint64_t duration_us;
    unsigned attempts;
    const char *reason;
} pf_tcp_access_entry;
void access_log_write_tcp(pf_worker *w, const pf_tcp_access_entry *e);
void access_log_flush(pf_worker *w);

static inline int code_class(int status) {
    return status >= 100 && status < 600 ? status / 100 - 1 : PF_CODE_CLASSES - 1;
}

uint64_t worker_random(pf_worker *w);
/* proxy/proxy.c, for proxy/reload.c: a listening socket for cfg (SO_REUSEPORT, listening),
 * or with `probe` only bound. Returns the fd, or PF_EIO with err set. */
int proxy_bind_listener(const pf_config_listener *cfg, bool probe, pf_error *err);
/* Registers a listener slot's metrics under l->cfg's name (existing series are reused). */
void proxy_listener_metrics(pf_metrics *m, pf_listener_rt *l);
/* proxy/status.c: a number never given before, for a slot that takes a new listener or
 * cluster, so that the status page never takes one's counters for another's. Main thread. */
uint64_t proxy_status_series(void);
/* Worker thread: starts accepting on `fd` (taken) for slot l. Returns 0 or PF_ENOMEM. */
int worker_listen(pf_worker *w, pf_listener_rt *l, int fd);
/* Worker thread: closes this worker's socket of slot l and drains its connections. */
void worker_unlisten(pf_worker *w, pf_listener_rt *l);
/* proxy/reload.c: worker side of commands and holds; set up by worker_init. */
int worker_reload_init(pf_worker *w);
void worker_reload_free(pf_worker *w);
/* Frees the retired configs; after the workers are freed. */
void proxy_retired_free_all(pf_proxy *proxy);
/* proxy/proxy.c: claims cfg's address against other pilotfish processes (see there). */
int proxy_claim_address(const pf_config_listener *cfg, int *claim, pf_error *err);
/* proxy/conn.c: the listener slot a connection came in on. */
pf_listener_rt *conn_listener(const pf_conn *c);
/* proxy/conn.c: pf_now_us() when the request in progress began; 0 between requests. */
uint64_t conn_request_start_us(const pf_conn *c);
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
/* The answer for a Service known to be missing (proxy_service_routes_add_missing), or NULL. */
const char *service_routes_missing(const pf_service_routes *t, const char *host);
/* Whether some port of `host` has a route (a discovered Service asked for another port). */
bool service_routes_known(const pf_service_routes *t, const char *host);
/* The HTTPRoute rules of host:port's entry, or NULL (borrowed from the table). */
const pf_router *service_routes_rules(const pf_service_routes *t, const char *host, int port);
/* One more reference to the table, released with proxy_service_routes_free: a request
 * routed by its rules holds it while its route is in use. */
pf_service_routes *service_routes_hold(const pf_service_routes *t);
/* proxy/on_demand.c: the worker side of waiting requests; set up by worker_init. */
int worker_on_demand_init(pf_worker *w);
void worker_on_demand_free(pf_worker *w);
/* A request was routed to c now: on demand, a cluster in use is not idle. Any thread. */
static inline void proxy_cluster_touch(pf_cluster_rt *c) {
    uint64_t now = pf_now_ms();
    /* Stored at most once a second: the line is shared by every worker. */
    if (now - atomic_load_explicit(&c->last_used_ms, memory_order_relaxed) >= 1000)
        atomic_store_explicit(&c->last_used_ms, now, memory_order_relaxed);
}
/* The set this worker balances over now for a cluster (borrowed; NULL before the first
 * publish): discovery's set with health, tiers, zones and panic applied. */
pf_endpoint_set *worker_cluster_set(pf_worker_cluster *wc);

#endif
