/* Private to proxy/: the exchange, one request and its response, apart from the codecs
 * that carry it. A downstream codec (HTTP/1 today: conn.c) parses a request head and
 * starts an exchange; the exchange routes it, picks endpoints, runs the attempts, retries
 * and timeouts, and reports outcomes to health and the balancer; an upstream codec
 * (HTTP/1 today: upstream.c) carries each attempt. The two sides meet only through the
 * two tables of operations below, so a second protocol plugs in on either side without
 * touching routing, balancing or retries. */
#ifndef PF_PROXY_EXCHANGE_INT_H
#define PF_PROXY_EXCHANGE_INT_H

#include "proxy/proxy_int.h"
#include "proxy/stream.h"
#include "proxy/tunnel_int.h"

/* Where an exchange is in its life. Every move goes through exchange_set_state, which
 * aborts on a move the table in exchange.c does not allow. Whether the request body has
 * fully arrived is orthogonal (request_complete), as is the downstream's keep-alive. */
typedef enum pf_exchange_state {
    PF_EX_IDLE,      /* no request yet (or the last one was reset) */
    PF_EX_WAITING,   /* an attempt is in flight: connecting, sending or awaiting the head */
    PF_EX_BACKOFF,   /* the last attempt failed; the next one waits for its backoff */
    PF_EX_STREAMING, /* an upstream response head went downstream; its body follows */
    PF_EX_DONE,      /* a complete response went downstream (the upstream's or our own) */
    PF_EX_ABORTED,   /* the response was cut after it started: the downstream closes */
    PF_EX_TUNNEL,    /* a 101 switched protocols: bytes flow both ways until either closes */
    PF_EX_RESOLVING, /* the authority names a Service discovery is looking up (on demand) */
    PF_EX_STATE_COUNT
} pf_exchange_state;

typedef struct pf_exchange pf_exchange;

/* What the exchange asks of the downstream codec (the side that talks to the client).
 * `ds` is the codec's own object. Called on the worker thread only. */
typedef struct pf_downstream_ops {
    /* Frames and queues an upstream's response head; sets *skip_body when the upstream
     * will send no body (HEAD). Returns 0 or a PF_E* code. */
    int (*send_head)(void *ds, const pf_head *resp, int status, pf_body_mode upstream_body,
                     uint64_t content_length, bool *skip_body);
    /* A 1xx response before the final one. */
    void (*send_interim)(void *ds, const pf_head *resp, int status);
    void (*send_body)(void *ds, const char *at, size_t len);
    /* The response is complete (the exchange is DONE): end it and go on or close. */
    void (*send_end)(void *ds);
    /* A response pilotfish makes itself (the exchange is DONE): status, plain-text body
     * and extra "Name: value\r\n" lines (or NULL). A NULL body: no body and no type of
     * pilotfish's, the extra lines say it all (gRPC's trailers-only). The codec decides whether the
     * connection stays, e.g. not while a request body nobody will read is still coming. */
    void (*reply)(void *ds, int status, const char *body, const char *extra_headers);
    /* The response was cut after it started (the exchange is ABORTED): the only honest
     * signal left is to end the stream or connection without a proper end. */
    void (*abort)(void *ds);
    /* Whether the client's output holds as much as it may (the upstream stops reading),
     * and the call that follows when it does. */
    bool (*output_full)(const void *ds);
    void (*wait_for_output)(void *ds);
    /* The upstream took request bytes (after_retry: a new attempt started): the codec may
     * read more request body. */
    void (*request_writable)(void *ds, bool after_retry);
    /* A 101 with the Upgrade value `upgrade`: queues its head, hands over the client's byte
     * stream for a tunnel (the codec keeps owning it and forwards its events to
     * exchange_tunnel) and says whether the client already half-closed. NULL: no tunnel
     * can be made here. */
    pf_stream *(*send_upgrade)(void *ds, const pf_head *resp, const char *upgrade, size_t len,
                               bool *client_eof);
    /* The tunnel ended (the exchange is DONE and logged): close the connection now. */
    void (*close)(void *ds);
    /* A CONNECT that waited for on-demand discovery (exchange_park_connect) names a Service
     * now (the exchange is DONE, status 200): open the tunnel. NULL: the codec parks none. */
    void (*connect_found)(void *ds);
    /* The response's trailer fields, before send_end; NULL: the codec drops them. */
    void (*send_trailers)(void *ds, const pf_head *trailers);
    /* send_upgrade for a codec whose client side is not a pf_stream (an HTTP/2 stream that
     * opened a WebSocket with an extended CONNECT, RFC 8441): sends what the 101 becomes
     * there and returns the side the tunnel uses, seen through *ops (the codec forwards its
     * events to exchange_tunnel). NULL: no tunnel can be made. */
    void *(*send_upgrade_end)(void *ds, const pf_head *resp, const pf_tunnel_end_ops **ops,
                              bool *client_eof);
} pf_downstream_ops;

/* The request as the exchange forwards it: the downstream's head (borrowed until the
 * exchange is reset) and what pilotfish adds. */
typedef struct pf_exchange_request {
    const pf_head *head;
    pf_forward_request fwd;
    /* An HTTP/2 extended CONNECT (RFC 8441): the Sec-WebSocket-Key pilotfish put in the head,
     * which the upstream's 101 must answer. The upgrade is then the request's whole point: a
     * refused one is answered (501), not dropped. NULL for every other request. */
    const char *websocket_key;
} pf_exchange_request;

/* What the exchange asks of an upstream codec (the side that talks to endpoints). `up` is
 * the codec's own object for one attempt. Called on the worker thread only. */
typedef struct pf_upstream_ops {
    /* Starts an attempt of ex's request on ep: a pooled or new connection, the request
     * head queued. NULL when no connection may open (*overloaded: a breaker said no). */
    void *(*start)(pf_exchange *ex, const pf_endpoint *ep, bool *overloaded);
    /* Queues request body bytes, framed as the request's body mode requires. */
    void (*write_body)(void *up, const char *at, size_t len);
    /* Queues the body received so far, kept for replay, framed the same way; `body` is
     * referenced, not copied, so a retry costs no copy of it (it is not changed after). */
    void (*replay_body)(void *up, struct evbuffer *body);
    /* The request is complete: ends its body and starts the response timeout. */
    void (*end_body)(void *up, uint64_t response_timeout_ms);
    bool (*output_full)(const void *up, size_t limit);
    /* The client's output has room again: read the response on. */
    void (*resume)(void *up);
    /* Ends the attempt: back to the pool when reusable, else closed (a cancel). */
    void (*release)(void *up, bool reusable);
    /* The attempt's byte stream for a tunnel after a 101 (the codec keeps owning it and
     * forwards its events to exchange_tunnel; release() then closes it). */
    pf_stream *(*tunnel_stream)(void *up);
} pf_upstream_ops;

/* The HTTP/1 upstream codec (upstream.c), the HTTP/2 one (h2_upstream.c), and the HTTP/2
 * downstream codec (h2_downstream.c), which clusters with protocol "downstream" follow. */
extern const pf_upstream_ops upstream_http1_ops;
extern const pf_upstream_ops upstream_h2_ops;
extern const pf_downstream_ops downstream_h2_ops;

/* The endpoints an exchange failed on (balancer_hash of their addresses, the latest
 * PF_AVOID_MAX), avoided by its next attempts. */
typedef struct pf_avoid {
    uint64_t hash[PF_AVOID_MAX];
    unsigned count;
} pf_avoid;

/* Embedded in its downstream connection (not opaque): no allocation per request. Only
 * exchange.c writes its fields; codecs read the few they log or frame with. */
struct pf_exchange {
    pf_exchange_state state;
    pf_worker *w;
    struct pf_resolving *resolving; /* RESOLVING: its place in the worker's waiting list */
    pf_listener_rt *l;
    const pf_downstream_ops *down;
    void *ds;
    const pf_upstream_ops *up_ops;
    void *up;                  /* the attempt in flight; NULL between attempts */
    struct event *retry_timer; /* created on the first retry, kept for the connection */
    const char *client_ip;

    pf_exchange_request req;
    const char *method;      /* for the access log */
    bool request_complete;   /* the request (and its body) fully arrived */
    bool replayable;         /* replay holds the whole body received so far */
    bool not_idempotent;     /* kept only for a stream never processed (HTTP/2 upstreams) */
    bool stale_retried;      /* the one free replay after a dead pooled connection was used */
    bool counted_active;     /* in the cluster's requests in flight */
    bool counted_retry;      /* in the cluster's retries in flight */
    bool counted_ep;         /* in ep's requests in flight */
    bool delayed;            /* a fault delay holds the first attempt (BACKOFF) */
    bool delayed_replayable; /* what replayable was before the delay */
    bool upgrade;            /* the request's Upgrade went upstream: a 101 makes a tunnel */
    bool connect_wait;       /* a CONNECT waits (RESOLVING) for its Service, not a route */
    pf_tunnel *tunnel;       /* while TUNNEL */
    uint64_t tunnel_us;      /* when the tunnel started */
    pf_header_vars vars;     /* what the route's header edits may name */
    unsigned attempts;
    unsigned retries;
    int status;
    uint64_t start_us;
    uint64_t deadline_us; /* route timeout; 0: none */
    uint64_t attempt_us;  /* when the attempt in flight picked its endpoint */
    uint64_t end_us;      /* when the response ended (one clock read for metrics and log); 0 */
    uint64_t bytes_in, bytes_out;
    const pf_config_route *route;
    const pf_config_weighted_cluster *share; /* of a weighted route: the one drawn */
    /* route is an HTTPRoute rule of this service routes table: held until the request ends */
    pf_service_routes *held_routes;
    const pf_config_retry *retry;
    pf_avoid avoid;
    const char *authority;
    size_t authority_len;
    const char *path;
    size_t path_len;
    char request_id[40];
    char traceparent[PF_TRACEPARENT_LEN + 1]; /* one pilotfish made, or "" */
    char trace_id[33];                        /* for the access log, or "" */
    pf_worker_cluster *wc;
    pf_endpoint_set *set; /* holds ep's set while ep is used */
    const pf_endpoint *ep;
    struct evbuffer *replay; /* the request body as received, while a retry is possible */
    /* gRPC (content-type application/grpc*): pilotfish's own answers are trailers-only. */
    bool grpc;
    bool overloaded;       /* the answer is a breaker's or the retry budget's: RESOURCE_EXHAUSTED */
    bool grpc_reported;    /* the call's outcome went to outlier detection and the balancer */
    int grpc_status;       /* the call's grpc-status (upstream's or ours); -1: none seen */
    int grpc_own_status;   /* our own answer to a call: the HTTP status it stands for; 0: none */
    int grpc_retry;        /* a trailers-only failure being retried; -1: none */
    char grpc_timeout[24]; /* what goes upstream as grpc-timeout */
    /* A call's answer head held back until its first message or its trailers, so that a
     * failing grpc-status in the trailers can still be retried (HTTP/2 upstreams). */
    bool holding;
    pf_head *held; /* allocated on first use, kept with the exchange */
    pf_body_mode held_body;
    uint64_t held_length;
    /* stream_idle_timeout: checked against the last byte either way, re-armed lazily. */
    struct event *idle_timer;
    uint64_t idle_ms;
    uint64_t last_active_us;
    /* The request's trailer fields (chunked HTTP/1 or HTTP/2), kept for every attempt;
     * allocated on first use, kept with the exchange. */
    pf_head *req_trailers;
    struct pf_mirror *mirror; /* the copy of this request, until the request is complete */
    char *rewritten;          /* the target after the route's rewrite, kept for the connection */
    size_t rewritten_cap;
};

/* ---- life cycle (downstream codec) -------------------------------------------------- */

/* Sets up an exchange embedded in a connection; nothing is allocated. */
void exchange_init(pf_exchange *ex, pf_worker *w, pf_listener_rt *l, const pf_downstream_ops *down,
                   void *ds, const char *client_ip);
/* Frees what the exchange holds, ending any attempt. */
void exchange_free(pf_exchange *ex);
/* Back to IDLE for the next request on the same connection; ends any attempt and the
 * cluster accounting. Buffers are kept. */
void exchange_reset(pf_exchange *ex);
/* A new request head started arriving into `head` (borrowed until the reset); its
 * duration counts from here. */
void exchange_begin(pf_exchange *ex, const pf_head *head);
/* What the access log says of the request, as the codec learns it (method name, and the
 * authority and path it is routed by); the pointers are borrowed until the reset. */
void exchange_describe(pf_exchange *ex, const char *method, const char *authority,
                       size_t authority_len, const char *path, size_t path_len);

/* Starts the exchange for a complete, valid, described request head: request id, route,
 * cluster, breakers, first attempt. `host`/`port` are the parsed authority (host "" and
 * port -1 without one). Whatever happens is reported through the downstream ops (a local
 * reply when nothing can go upstream). */
void exchange_start(pf_exchange *ex, const pf_exchange_request *req, const char *host, int port);
/* Starts a copy of a request (mirror.c) on the cluster in slot `cluster_index`, without
 * routing or retries; `req` and what it points to belong to the caller until the exchange
 * is freed. Answers through the downstream ops like exchange_start. */
void exchange_start_mirror(pf_exchange *ex, const pf_exchange_request *req, size_t cluster_index);
/* Request body bytes, and the request's end. */
void exchange_request_body(pf_exchange *ex, const char *at, size_t len);
void exchange_request_end(pf_exchange *ex);
/* One request trailer field (after the body, before exchange_request_end), copied. Returns
 * 0, or PF_ELIMIT past the listener's max_header_bytes or max_headers for the trailer
 * section (the field is not kept: see exchange_request_trailers_too_large), or PF_ENOMEM. */
int exchange_request_trailer(pf_exchange *ex, const char *name, size_t name_len, const char *value,
                             size_t value_len);
/* The request's trailer section went over its limits after the head went upstream: logged
 * (info) and, when a response is already on its way (no 4xx answer will count it), counted
 * in pilotfish_downstream_rejected_requests_total. The codec then answers 400 or cuts the
 * response, and the attempt ends unfinished. */
void exchange_request_trailers_too_large(pf_exchange *ex);
/* The request's trailer fields for an upstream codec ending the request body, or NULL:
 * none. Borrowed until the exchange is reset. */
const pf_head *exchange_request_trailers(const pf_exchange *ex);
/* Whether the request body should wait: backing off, or the upstream's output holds
 * `limit` bytes or more. */
bool exchange_request_blocked(const pf_exchange *ex, size_t limit);
/* The client's output drained: the response may flow again. */
void exchange_downstream_writable(pf_exchange *ex);

/* Answers the request with pilotfish's own response (also before exchange_start, for a
 * request the codec refused): the exchange is DONE with `status`. */
void exchange_reply(pf_exchange *ex, int status, const char *body, const char *extra_headers);
/* A RESOLVING exchange's Service got its route: routes it to cluster_index as a request
 * matching no configured route, through the HTTPRoute rules of the Service's port when it
 * has some (404 when none matches), and starts the first attempt; a waiting CONNECT gets
 * its tunnel instead. Worker thread. */
void exchange_route_service(pf_exchange *ex, const char *host, int port, long cluster_index);

/* proxy/on_demand.c: a request whose authority matches no route waits (RESOLVING) for
 * discovery to find its Service, up to the proxy's on-demand timeout. Returns true when it
 * is waiting; false when on-demand discovery is off or the host names no Service. */
bool on_demand_park(pf_exchange *ex, const char *host, int port);
/* A CONNECT to host:port that names no known service may name a Service on-demand
 * discovery has not looked up yet: the exchange waits for it like a request (RESOLVING),
 * and once found the codec's connect_found opens the tunnel; a missing Service or the
 * on-demand timeout is answered 503 through reply. Returns false (refuse it) when nothing
 * is being looked up. */
bool exchange_park_connect(pf_exchange *ex, const char *host, int port);
/* Takes the exchange off the waiting list (it is answered, reset or freed). */
void on_demand_unpark(pf_exchange *ex);
/* The downstream gave up on a response that had started (client gone, timeouts): ABORTED. */
void exchange_abort(pf_exchange *ex);
/* Counts and logs the outcome (metrics, access log). Once per request. */
void exchange_log(pf_exchange *ex);

/* ---- called by upstream codecs as the attempt goes --------------------------------- */

/* The response head. Returns 0, PF_RESPONSE_RETRY (drop the response: a retry follows),
 * or a PF_E* code. */
int exchange_on_response_head(pf_exchange *ex, const pf_head *resp, int status,
                              pf_body_mode upstream_body, uint64_t content_length, bool *skip_body);
void exchange_on_response_interim(pf_exchange *ex, const pf_head *resp, int status);
void exchange_on_response_body(pf_exchange *ex, const char *at, size_t len);
/* Trailer fields after the body (HTTP/2, or HTTP/1 chunked); borrowed for the call.
 * Returns 0, or PF_RESPONSE_RETRY (HTTP/1 codec only): a gRPC call failed with a status its
 * retry policy names before any message went out; the codec ends the attempt with
 * exchange_on_upstream_error(.., PF_FAIL_STATUS) once its parser returned, and a retry
 * follows. */
int exchange_on_response_trailers(pf_exchange *ex, const pf_head *trailers);
void exchange_on_response_complete(pf_exchange *ex, bool upstream_reusable);
/* The attempt failed. `status` is what to answer if nothing was sent yet (502/503/504),
 * unless a retry follows. The upstream is released by the call. */
void exchange_on_upstream_error(pf_exchange *ex, int status, const char *reason, pf_failure kind);
/* The upstream's output drained. */
void exchange_on_upstream_writable(pf_exchange *ex);
/* A 101 answered an upgrade request (exchange_upgrading): the attempt becomes a tunnel.
 * Returns 0, or PF_EINVAL when it cannot (no Upgrade header in `resp`, or the request did
 * not ask): the codec then fails the attempt as a malformed response. */
int exchange_on_upgrade(pf_exchange *ex, const pf_head *resp);
/* The route's response header edits (NULL: none) and the values they may name. */
const pf_config_header_edits *exchange_response_edits(const pf_exchange *ex);
const pf_header_vars *exchange_header_vars(const pf_exchange *ex);
/* Whether the request in flight asked upstream to switch protocols. */
bool exchange_upgrading(const pf_exchange *ex);
/* The tunnel of a TUNNEL exchange, whose codecs forward their stream events to it. */
pf_tunnel *exchange_tunnel(const pf_exchange *ex);
/* Whether the client's output is full, and the call when the upstream stopped for it. */
bool exchange_downstream_full(const pf_exchange *ex);
void exchange_wait_for_downstream(pf_exchange *ex);
/* What the upstream codec needs of the cluster and request. */
pf_worker *exchange_worker(const pf_exchange *ex);
pf_worker_cluster *exchange_cluster(const pf_exchange *ex);
const pf_exchange_request *exchange_request(const pf_exchange *ex);

/* ---- pure decisions (unit-tested with tables) ----------------------------------------- */

/* gRPC status codes pilotfish names. */
enum {
    PF_GRPC_OK = 0,
    PF_GRPC_CANCELLED = 1,
    PF_GRPC_UNKNOWN = 2,
    PF_GRPC_DEADLINE_EXCEEDED = 4,
    PF_GRPC_PERMISSION_DENIED = 7,
    PF_GRPC_RESOURCE_EXHAUSTED = 8,
    PF_GRPC_UNIMPLEMENTED = 12,
    PF_GRPC_INTERNAL = 13,
    PF_GRPC_UNAVAILABLE = 14,
    PF_GRPC_DATA_LOSS = 15,
    PF_GRPC_UNAUTHENTICATED = 16,
};

/* Whether a content-type value names gRPC: "application/grpc", alone or followed by "+"
 * (a codec: +proto, +json) or ";" (parameters), in any case. */
bool exchange_grpc_content_type(const char *v, size_t len);
/* The grpc-status of an answer pilotfish makes itself with HTTP `status` (`overloaded`: a
 * breaker or the retry budget said no): 14 for no endpoint, connect failures and resets,
 * 4 for timeouts, 8 for overload, 12 for no route. */
int exchange_grpc_status_of_reply(int status, bool overloaded);
/* A grpc-timeout value (1-8 digits and a unit H, M, S, m, u, n) in microseconds (at least 1).
 * Returns 0 or PF_EINVAL. */
int exchange_grpc_timeout_parse(const char *v, size_t len, uint64_t *us);
/* Formats `us` as a grpc-timeout value (the finest unit that fits 8 digits) into out (at
 * least 16 bytes). */
void exchange_grpc_timeout_format(char *out, size_t cap, uint64_t us);
/* A grpc-status value (decimal 0-99), or -1 when it is not one. */
int exchange_grpc_status_parse(const char *v, size_t len);
/* The HTTP status a call ending with grpc-status `code` counts as for outlier detection
 * and latency: 503 for UNAVAILABLE, 504 for DEADLINE_EXCEEDED, 500 for UNKNOWN, INTERNAL
 * and DATA_LOSS, else 200 (the others are the caller's business, not the endpoint's). */
int exchange_grpc_http_status(int code);

/* Whether the state table allows moving from `from` to `to`. */
bool exchange_transition_allowed(pf_exchange_state from, pf_exchange_state to);
const char *exchange_state_name(pf_exchange_state s);
/* Moves ex to `to`; a move the table forbids is a bug and aborts with both names. */
void exchange_set_state(pf_exchange *ex, pf_exchange_state to);

/* Why a request asking to switch to `upgrade` (an Upgrade header value) may not, or NULL
 * when it may: every protocol it lists is in the route's upgrades (route NULL, a
 * discovered service: "websocket" only), and it has no body. */
const char *exchange_upgrade_refusal(const pf_config_route *route, const char *upgrade, size_t len,
                                     bool has_body);

/* The cluster (index into the config's) a request on `route` goes to: its cluster, or for a
 * weighted route the one whose share `random` falls in (random % total weight). */
size_t exchange_route_cluster(const pf_config_route *route, uint64_t random);

/* RFC 9110 9.2.2: GET, HEAD, OPTIONS, TRACE, PUT and DELETE are idempotent. */
bool exchange_method_idempotent(const char *method);

/* Whether the retry policy names this failure at all (PF_FAIL_GRPC: `status` is the
 * grpc-status). */
bool exchange_retry_wanted(const pf_config_retry *retry, pf_failure kind, int status);

typedef enum {
    PF_RETRY_NO,
    PF_RETRY_YES,
    PF_RETRY_NO_BUDGET,  /* the retry budget is spent */
    PF_RETRY_NO_BREAKER, /* the max_retries breaker is open */
} pf_retry_verdict;

/* Everything a retry decision depends on. */
typedef struct pf_retry_facts {
    pf_failure kind;
    int status;
    bool response_started;
    bool replayable;
    bool not_idempotent; /* only a never-processed attempt (STALE) may be replayed */
    bool grpc;           /* a gRPC call: "unavailable" also names connect failures and resets */
    bool stale_retried;
    unsigned retries;
    uint64_t now_us, deadline_us; /* deadline 0: none */
    long active_requests;         /* the cluster's requests in flight */
    long other_retries;           /* the cluster's retries in flight, not counting this one */
    const pf_config_retry *retry; /* NULL: no policy */
    uint32_t budget_percent, budget_min_concurrency, breaker_max_retries;
} pf_retry_facts;

/* May the failed attempt be followed by another? */
pf_retry_verdict exchange_retry_verdict(const pf_retry_facts *f);
/* The backoff cap before retry number `retries` (1-based): exponential, capped; the delay
 * is drawn uniformly from [0, cap]. */
uint64_t exchange_backoff_cap_ms(const pf_config_retry *retry, unsigned retries);
/* How long an attempt may wait for its response head: the per-try timeout, else the
 * cluster's response timeout, never past the deadline (0: none); at least 1 ms. */
uint64_t exchange_attempt_timeout_ms(uint64_t per_try_ms, uint64_t response_timeout_ms,
                                     uint64_t deadline_us, uint64_t now_us);
bool exchange_avoid_has(const pf_avoid *a, uint64_t hash);
/* Remembers hash; past PF_AVOID_MAX the oldest is forgotten. */
void exchange_avoid_add(pf_avoid *a, uint64_t hash);

#endif
