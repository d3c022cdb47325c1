/* pilotfish configuration: JSON (jansson) turned into plain typed structs.
 * Every validation lives here, and every message names the file, the JSON path and
 * what is wrong, e.g. `pilotfish.json: $.clusters[1].endpoints[0]: port 70000 out of range`.
 * A pf_config is an immutable value once loaded: later modules build runtime objects
 * from it, and a reload is a new pf_config, never an edit of the old one. */
#ifndef PF_CONFIG_H
#define PF_CONFIG_H

#include "core/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Defaults: documented in README.md; change both together. */
#define PF_DEFAULT_ADMIN_ADDRESS "127.0.0.1:9901"
#define PF_DEFAULT_MAX_HEADER_BYTES (64u * 1024u)
#define PF_DEFAULT_MAX_TARGET_BYTES (8u * 1024u)
#define PF_DEFAULT_MAX_HEADERS 128u
#define PF_DEFAULT_HEADER_TIMEOUT_MS 10000u
#define PF_DEFAULT_IDLE_TIMEOUT_MS 60000u
#define PF_DEFAULT_CONNECT_TIMEOUT_MS 1000u
#define PF_DEFAULT_RESPONSE_TIMEOUT_MS 15000u
#define PF_DEFAULT_BODY_TIMEOUT_MS 60000u
#define PF_DEFAULT_TUNNEL_IDLE_TIMEOUT_MS                                                          \
    3600000u /* an upgraded connection with no bytes either way */
#define PF_DEFAULT_STREAM_IDLE_TIMEOUT_MS 300000u /* a request silent both ways */
#define PF_UPGRADES_MAX 8                         /* protocols a route lets a request upgrade to */
#define PF_UPGRADE_NAME_MAX 32
#define PF_DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS 30000u
#define PF_DEFAULT_MAX_IDLE_PER_ENDPOINT 64u
#define PF_DEFAULT_BUFFER_BYTES (64u * 1024u)
/* A response head may carry more lines than a request's (Set-Cookie, tracing, CORS). */
#define PF_DEFAULT_UPSTREAM_MAX_HEADERS 256u
#define PF_DEFAULT_DRAIN_TIMEOUT_MS 15000u
#define PF_DEFAULT_WORKERS 1u
#define PF_MAX_WORKERS 64u
/* Client connections, per listener or in all (0 in pf_config: derived from the open file
 * limit with config_default_max_connections). */
#define PF_MAX_CONNECTIONS_LIMIT 10000000u
/* Descriptors kept back from clients for the admin server, health checks, DNS, the
 * Kubernetes watch, listening sockets and each worker's event loop. */
#define PF_FD_RESERVE 64u
#define PF_DEFAULT_DNS_MIN_REFRESH_MS 1000u
#define PF_DEFAULT_DNS_MAX_REFRESH_MS 300000u
#define PF_DEFAULT_DNS_HOLD_MS 30000u
#define PF_DEFAULT_DNS_TIMEOUT_MS 1000u
#define PF_DEFAULT_DNS_TRIES 3u
#define PF_DNS_MAX_RESOLVERS 8
/* Records taken from one DNS answer (A/AAAA addresses or SRV targets); the rest are dropped
 * with a warning, so one huge answer cannot grow a cluster without bound. */
#define PF_DNS_MAX_RECORDS 1024u

#define PF_NAME_MAX 64     /* listener and cluster names */
#define PF_HOST_MAX 256    /* route host patterns */
#define PF_PATH_MAX 1024   /* route path patterns */
#define PF_ADDRTEXT_MAX 64 /* "[v6]:port" as text */
/* A DNS name as text (253 characters), an optional trailing "." and the NUL. */
#define PF_DNS_NAME_MAX 256

/* A socket address parsed from "ip:port" or "[ipv6]:port". */
typedef struct pf_sockaddr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[PF_ADDRTEXT_MAX]; /* canonical "ip:port" / "[ip]:port" */
} pf_sockaddr;

typedef enum {
    PF_LB_ROUND_ROBIN,
    PF_LB_WEIGHTED_ROUND_ROBIN,
    PF_LB_LEAST_REQUEST,
    PF_LB_LEAST_RESPONSE_TIME, /* also spelled "ewma" */
    PF_LB_RANDOM,
    PF_LB_RING_HASH,
    PF_LB_MAGLEV,
} pf_lb_policy;

/* clusters[].protocol: how pilotfish talks to the cluster's endpoints. */
typedef enum {
    PF_PROTO_HTTP1,      /* HTTP/1.1 */
    PF_PROTO_H2,         /* HTTP/2 with prior knowledge (h2c) */
    PF_PROTO_DOWNSTREAM, /* whatever the client spoke */
} pf_upstream_protocol;

/* Load-balancing settings beside lb_policy; defaults documented in README.md. */
#define PF_DEFAULT_RING_HASH_SIZE 1024u /* ring points of an endpoint of the highest weight */
#define PF_DEFAULT_MAGLEV_SIZE 65537u   /* a prime */
#define PF_DEFAULT_EWMA_DECAY_MS 10000u
#define PF_HASH_NAME_MAX 128 /* header or cookie name to hash on */

/* What ring_hash and maglev hash a request on. */
typedef enum {
    PF_HASH_NONE,
    PF_HASH_HEADER,
    PF_HASH_COOKIE,
    PF_HASH_SOURCE_IP,
    PF_HASH_PATH,
} pf_hash_on_kind;

typedef struct pf_config_hash_on {
    pf_hash_on_kind kind;
    char name[PF_HASH_NAME_MAX]; /* header (lower-case) or cookie (as written) name */
} pf_config_hash_on;

typedef struct pf_config_endpoint {
    pf_sockaddr addr;
    uint32_t weight;   /* 1..10000, default 1 */
    uint32_t priority; /* failover tier, 0 = best; default 0 */
    char zone[PF_NAME_MAX];
} pf_config_endpoint;

/* Retry policy (issue "health, retries, failover"): a cluster's default, which a route
 * may replace whole. */
enum {
    PF_RETRY_CONNECT_FAILURE = 1u << 0, /* connect refused, failed or timed out */
    PF_RETRY_RESET = 1u << 1,           /* connection closed or reset before a response */
    PF_RETRY_GATEWAY_ERROR = 1u << 2,   /* 502, 503, 504 from the upstream, or a per-try timeout */
    PF_RETRY_5XX = 1u << 3,             /* any 5xx, or a per-try timeout */
    PF_RETRY_STATUS_CODES = 1u << 4,    /* the codes in status_codes */
    /* gRPC statuses (grpc-status of a trailers-only response); gRPC calls only */
    PF_RETRY_GRPC_CANCELLED = 1u << 5,          /* 1 CANCELLED */
    PF_RETRY_GRPC_DEADLINE_EXCEEDED = 1u << 6,  /* 4 DEADLINE_EXCEEDED */
    PF_RETRY_GRPC_RESOURCE_EXHAUSTED = 1u << 7, /* 8 RESOURCE_EXHAUSTED */
    PF_RETRY_GRPC_UNAVAILABLE = 1u << 8,        /* 14 UNAVAILABLE, or what pilotfish would
                                                   answer as such: connect failure, reset */
    PF_RETRY_GRPC_INTERNAL = 1u << 9,           /* 13 INTERNAL */
};
#define PF_RETRY_GRPC_ANY                                                                          \
    (PF_RETRY_GRPC_CANCELLED | PF_RETRY_GRPC_DEADLINE_EXCEEDED |                                   \
     PF_RETRY_GRPC_RESOURCE_EXHAUSTED | PF_RETRY_GRPC_UNAVAILABLE | PF_RETRY_GRPC_INTERNAL)
#define PF_RETRY_MAX_STATUS_CODES 16
#define PF_DEFAULT_RETRY_ON (PF_RETRY_CONNECT_FAILURE | PF_RETRY_RESET)
#define PF_DEFAULT_MAX_RETRIES 2u
#define PF_DEFAULT_RETRY_BACKOFF_BASE_MS 25u
#define PF_DEFAULT_RETRY_BACKOFF_MAX_MS 250u
#define PF_DEFAULT_RETRY_BUFFER_BYTES (64u * 1024u)
#define PF_DEFAULT_BUDGET_PERCENT 20u
#define PF_DEFAULT_BUDGET_MIN_CONCURRENCY 10u
#define PF_DEFAULT_MAX_CONNECTIONS 1024u
#define PF_DEFAULT_MAX_PENDING_REQUESTS 1024u
#define PF_DEFAULT_MAX_REQUESTS 1024u
#define PF_DEFAULT_MAX_CONCURRENT_RETRIES 1024u
#define PF_DEFAULT_PANIC_THRESHOLD 50u

typedef struct pf_config_retry {
    uint32_t on; /* PF_RETRY_* bits */
    uint16_t status_codes[PF_RETRY_MAX_STATUS_CODES];
    size_t status_code_count;
    uint32_t max_retries;
    uint64_t per_try_timeout_ms; /* 0: the cluster's response_timeout */
    uint64_t backoff_base_ms, backoff_max_ms;
    bool non_idempotent;   /* also replay POST, PATCH, ... */
    uint32_t buffer_bytes; /* a request body larger than this is never replayed */
} pf_config_retry;

/* Circuit breakers: over a limit, requests get 503 at once. Counted per cluster across
 * workers. */
typedef struct pf_config_breakers {
    uint32_t max_connections;
    uint32_t max_pending_requests; /* requests waiting for an upstream connection */
    uint32_t max_requests;
    uint32_t max_retries; /* retries in flight */
} pf_config_breakers;

/* Active health checking (health/): per cluster, off unless "health_check" is given. */
typedef enum { PF_CHECK_NONE, PF_CHECK_HTTP, PF_CHECK_TCP, PF_CHECK_GRPC } pf_check_type;
#define PF_CHECK_SERVICE_MAX 128 /* grpc: a service name for grpc.health.v1.Health/Check */
#define PF_DEFAULT_CHECK_PATH "/healthz"
#define PF_DEFAULT_CHECK_INTERVAL_MS 5000u
#define PF_DEFAULT_CHECK_TIMEOUT_MS 1000u
#define PF_DEFAULT_CHECK_JITTER_MS 0u
#define PF_DEFAULT_UNHEALTHY_THRESHOLD 3u
#define PF_DEFAULT_HEALTHY_THRESHOLD 2u
#define PF_CHECK_STATUS_RANGES_MAX 16
#define PF_CHECK_PAYLOAD_MAX 256 /* tcp send / expect bytes */

/* An inclusive range of HTTP status codes, "200-399" or "204". */
typedef struct pf_status_range {
    uint16_t lo, hi;
} pf_status_range;

typedef struct pf_config_health_check {
    pf_check_type type;
    char path[PF_PATH_MAX]; /* http: request target */
    char host[PF_HOST_MAX]; /* http: Host header; "" = the endpoint's "ip:port" */
    pf_status_range expected[PF_CHECK_STATUS_RANGES_MAX]; /* http: default 200-399 */
    size_t expected_count;
    uint64_t interval_ms;            /* from one check's start to the next one's */
    uint64_t timeout_ms;             /* connect + exchange */
    uint64_t jitter_ms;              /* a random 0..jitter added to each wait */
    uint32_t unhealthy_threshold;    /* failures in a row that take an endpoint out */
    uint32_t healthy_threshold;      /* passes in a row that bring it back */
    bool initial_healthy;            /* a new endpoint serves until its first check fails */
    char send[PF_CHECK_PAYLOAD_MAX]; /* tcp: bytes written after connect (may hold NULs) */
    size_t send_len;
    char expect[PF_CHECK_PAYLOAD_MAX]; /* tcp: bytes the answer must contain */
    size_t expect_len;
    char service[PF_CHECK_SERVICE_MAX]; /* grpc: the service asked about; "": the server */
    bool tls; /* a TLS cluster's checks speak TLS; false: plaintext (no effect without tls) */
} pf_config_health_check;

/* Passive outlier ejection (health/): off unless "outlier_detection" is given. */
#define PF_DEFAULT_CONSECUTIVE_5XX 5u
#define PF_DEFAULT_CONSECUTIVE_GATEWAY_FAILURE 5u
#define PF_DEFAULT_BASE_EJECTION_MS 30000u
#define PF_DEFAULT_MAX_EJECTION_MS 300000u
#define PF_DEFAULT_MAX_EJECTION_PERCENT 10u
#define PF_DEFAULT_LATENCY_FACTOR 3u
#define PF_DEFAULT_LATENCY_INTERVAL_MS 10000u
#define PF_DEFAULT_LATENCY_MIN_REQUESTS 10u
#define PF_DEFAULT_OUTLIER_INTERVAL_MS 1000u

/* Latency ejection (outlier_detection.latency): off unless the object is given. */
typedef struct pf_config_outlier_latency {
    bool enabled;
    uint32_t factor;       /* slow: an average above factor x the cluster's median */
    uint64_t interval_ms;  /* how long an endpoint stays slow before it is ejected */
    uint32_t min_requests; /* responses measured before an endpoint is judged or counted */
} pf_config_outlier_latency;

typedef struct pf_config_outlier {
    bool enabled;
    uint32_t consecutive_5xx;             /* 0 = this trigger is off */
    uint32_t consecutive_gateway_failure; /* 0 = this trigger is off */
    uint64_t base_ejection_time_ms;       /* times the number of ejections, capped by max */
    uint64_t max_ejection_time_ms;
    uint32_t max_ejection_percent; /* of the cluster's endpoints, but at least one of two+ */
    uint64_t interval_ms;          /* how often ejections end and refused ones are retried */
    pf_config_outlier_latency latency;
} pf_config_outlier;

typedef enum {
    PF_DNS_RECORD_A,
    PF_DNS_RECORD_AAAA,
    PF_DNS_RECORD_A_AAAA,
    PF_DNS_RECORD_SRV
} pf_dns_record;

/* $.clusters[].dns: endpoints come from DNS instead of "endpoints". */
typedef struct pf_config_cluster_dns {
    char name[PF_DNS_NAME_MAX]; /* lower-case; empty: the cluster has static endpoints */
    pf_dns_record record;
    uint16_t port; /* A/AAAA: every address gets this port; SRV: 0 (the records carry ports) */
    uint64_t min_refresh_ms;
    uint64_t max_refresh_ms; /* TTLs are clamped to [min_refresh, max_refresh] */
    uint64_t hold_ms;        /* NXDOMAIN / empty answers empty a live set only after this */
} pf_config_cluster_dns;

/* $.dns: the resolver shared by every DNS cluster. */
typedef struct pf_config_dns {
    pf_sockaddr resolvers[PF_DNS_MAX_RESOLVERS];
    size_t resolver_count; /* 0: the servers of /etc/resolv.conf */
    uint64_t timeout_ms;   /* first try; c-ares doubles it on each retry round */
    uint32_t tries;
} pf_config_dns;

/* Kubernetes discovery (discovery/kubernetes.h). Defaults documented in README.md. */
#define PF_K8S_SERVICEACCOUNT_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define PF_DEFAULT_K8S_CLUSTER_DOMAIN "cluster.local"
#define PF_DEFAULT_K8S_STALL_TIMEOUT_MS 90000u   /* no byte, not even a bookmark, this long */
#define PF_DEFAULT_K8S_REQUEST_TIMEOUT_MS 30000u /* a list page, connect included */
#define PF_DEFAULT_K8S_CONNECT_TIMEOUT_MS 5000u
#define PF_DEFAULT_K8S_BACKOFF_BASE_MS 500u
#define PF_DEFAULT_K8S_BACKOFF_MAX_MS 30000u
#define PF_DEFAULT_K8S_MAX_LINE_BYTES (4u * 1024u * 1024u)  /* one watch event */
#define PF_DEFAULT_K8S_MAX_LIST_BYTES (64u * 1024u * 1024u) /* one list page */
#define PF_DEFAULT_K8S_PAGE_SIZE 500u
#define PF_DEFAULT_K8S_HTTP_ROUTES_RECHECK_MS 60000u /* HTTPRoute CRD not installed: list again */
/* Discovered clusters held at once (removed ones until their slots are freed); the proxy
 * holds at most 8192 clusters in all. */
#define PF_DEFAULT_K8S_AUTO_MAX_CLUSTERS 4096u
#define PF_DEFAULT_K8S_ON_DEMAND_TIMEOUT_MS 2000u /* a first request waits this for its Service */
#define PF_DEFAULT_K8S_NEGATIVE_TTL_MS 5000u      /* a missing Service is not asked again */
#define PF_DEFAULT_K8S_IDLE_TIMEOUT_MS 600000u    /* an unused Service's watches stop */
#define PF_K8S_AUTO_MAX_CLUSTERS_MAX 8192u
/* on_demand: Services of one namespace with watches of their own; past it, one
 * namespace-wide pair of watches serves them all (1-4096). */
#define PF_DEFAULT_K8S_MAX_WATCHES_PER_NAMESPACE 32u
#define PF_K8S_MAX_WATCHES_PER_NAMESPACE_MAX 4096u
#define PF_K8S_NAME_MAX 64   /* a Service, namespace or port name (DNS label, 63) and NUL */
#define PF_K8S_TEXT_MAX 1024 /* URLs and file paths */
#define PF_K8S_MAX_NAMESPACES 64

/* $.clusters[].kubernetes: endpoints from the EndpointSlices of one Service. */
typedef struct pf_config_cluster_k8s {
    char service[PF_K8S_NAME_MAX];   /* "" : the cluster does not use Kubernetes */
    char namespace[PF_K8S_NAME_MAX]; /* "" : $.kubernetes.namespace, else the pod's own */
    char port_name[PF_K8S_NAME_MAX]; /* "http"; "" with port_number, or for "the only port" */
    uint32_t port_number;            /* a Service port; 0 when port_name is used */
} pf_config_cluster_k8s;

/* TLS of a listener ($.listeners[].tls). Files are checked at load (readable, a key that
 * matches its certificate); the proxy loads them again when it starts. */
#define PF_TLS_FILE_MAX 1024
#define PF_TLS_MAX_CERTS 16
#define PF_TLS_MAX_ALPN 4
#define PF_TLS_ALPN_MAX 32 /* one protocol id, e.g. "http/1.1" */
#define PF_TLS_MAX_SANS 16
#define PF_TLS_SAN_MAX 256

typedef enum { PF_TLS_1_2 = 12, PF_TLS_1_3 = 13 } pf_tls_version;
#define PF_DEFAULT_TICKET_ROTATION_MS (3600u * 1000u)
#define PF_TICKET_ROTATION_MIN_MS 1000u

typedef struct pf_config_tls_cert {
    char cert_file[PF_TLS_FILE_MAX]; /* PEM: the certificate, then its chain */
    char key_file[PF_TLS_FILE_MAX];
} pf_config_tls_cert;

/* ALPN protocol ids in preference order. */
typedef struct pf_config_alpn {
    char names[PF_TLS_MAX_ALPN][PF_TLS_ALPN_MAX];
    size_t count;
} pf_config_alpn;

/* Certificate SANs accepted: exact, or a prefix ending in '/' and '*'. */
typedef struct pf_config_sans {
    char names[PF_TLS_MAX_SANS][PF_TLS_SAN_MAX];
    size_t count;
} pf_config_sans;

typedef struct pf_config_listener_tls {
    pf_config_tls_cert *certificates; /* the first is the default for unknown SNI names */
    size_t certificate_count;
    pf_tls_version min_version;
    pf_config_alpn alpn;
    char client_ca_file[PF_TLS_FILE_MAX]; /* "": client certificates are not asked for */
    bool require_client_cert;
    pf_config_sans allowed_client_sans;  /* none: any the CA signed */
    uint64_t session_ticket_rotation_ms; /* a new ticket key this often; tickets live 2x */
} pf_config_listener_tls;

/* TLS toward a cluster's endpoints ($.clusters[].tls). The peer is always verified. */
typedef struct pf_config_cluster_tls {
    char ca_file[PF_TLS_FILE_MAX]; /* "": the system's CAs */
    char sni[PF_DNS_NAME_MAX];     /* "": the request's host (DNS, Kubernetes) or the address */
    pf_config_sans verify_subject_alt_name; /* none: the SNI name must match */
    char cert_file[PF_TLS_FILE_MAX];        /* client certificate (mTLS), with key_file */
    char key_file[PF_TLS_FILE_MAX];
    pf_config_alpn alpn;
} pf_config_cluster_tls;

typedef struct pf_config_cluster {
    char name[PF_NAME_MAX];
    pf_config_retry retry;
    uint32_t budget_percent;         /* retries in flight, as a share of requests in flight */
    uint32_t budget_min_concurrency; /* retries always allowed in flight regardless */
    pf_config_breakers breakers;
    bool zone_aware;
    uint32_t panic_threshold; /* percent healthy below which all endpoints are used */
    pf_lb_policy lb_policy;
    pf_upstream_protocol protocol;
    pf_config_hash_on hash_on; /* ring_hash and maglev; PF_HASH_NONE otherwise */
    uint32_t hash_table_size;  /* ring_hash: points per heaviest endpoint; maglev: prime slots */
    uint64_t ewma_decay_ms;    /* least_response_time */
    uint64_t slow_start_ms;    /* weight ramp of new or recovered endpoints; 0 = off */
    pf_config_endpoint *endpoints;
    size_t endpoint_count;
    uint64_t connect_timeout_ms;
    uint64_t response_timeout_ms;         /* until the response headers are in */
    uint64_t body_timeout_ms;             /* longest pause inside a response body */
    uint64_t upstream_idle_timeout_ms;    /* how long a pooled connection may sit idle */
    uint32_t max_idle_per_endpoint;       /* per worker */
    uint32_t max_requests_per_connection; /* requests or streams per connection; 0: no limit */
    uint32_t max_header_bytes;            /* a response head larger than this: 502 */
    uint32_t max_headers;                 /* more response header lines than this: 502 */
    uint32_t buffer_bytes;                /* read from an upstream connection ahead of parsing */
    pf_config_health_check health_check;
    pf_config_outlier outlier;
    pf_config_cluster_dns dns;        /* dns.name[0] != 0: DNS discovery, no endpoints */
    pf_config_cluster_k8s kubernetes; /* kubernetes.service[0] != 0: EndpointSlices */
    bool has_tls;                     /* false: plaintext */
    pf_config_cluster_tls tls;
} pf_config_cluster;

typedef enum { PF_MATCH_HOST_ANY, PF_MATCH_HOST_EXACT, PF_MATCH_HOST_SUFFIX } pf_host_match;
typedef enum {
    PF_MATCH_PATH_PREFIX,
    PF_MATCH_PATH_EXACT,
    PF_MATCH_PATH_REGEX, /* PCRE2, the whole path; compiled again (and owned) by the router */
} pf_path_match;

/* routes[].match.headers[] and .query_params[]: one condition on a named value. */
typedef enum {
    PF_VALUE_EXACT,
    PF_VALUE_PREFIX,
    PF_VALUE_SUFFIX,
    PF_VALUE_PRESENT,
    PF_VALUE_REGEX, /* PCRE2, the whole value; compiled again (and owned) by the router */
} pf_value_match_kind;

#define PF_MATCH_NAME_MAX 128  /* header or query parameter name */
#define PF_MATCH_VALUE_MAX 512 /* value or pattern */
#define PF_MATCHERS_MAX 16     /* per list (headers, query_params) of a route */
#define PF_METHOD_MAX 24

typedef struct pf_config_value_match {
    char name[PF_MATCH_NAME_MAX]; /* headers: lower-case */
    pf_value_match_kind kind;
    char value[PF_MATCH_VALUE_MAX]; /* "" for PRESENT */
    bool invert;                    /* the condition holds when the match does not */
} pf_config_value_match;

/* routes[].request_headers / .response_headers: edits made as a message is forwarded.
 * Values are templates: %CLIENT_IP%, %REQUEST_ID%, %CLUSTER%, %UPSTREAM%, %% for '%'. */
#define PF_HEADER_EDITS_MAX 16 /* per list (set, add, remove) */
typedef struct pf_config_header_edit {
    char name[PF_MATCH_NAME_MAX]; /* lower-case */
    char value[PF_MATCH_VALUE_MAX];
} pf_config_header_edit;

typedef struct pf_config_header_edits {
    pf_config_header_edit *set; /* replaces every line of the name */
    size_t set_count;
    pf_config_header_edit *add; /* one more line, whatever is there */
    size_t add_count;
    pf_config_header_edit *remove; /* names only */
    size_t remove_count;
} pf_config_header_edits;

/* routes[].clusters[]: a share of the route's requests. */
#define PF_WEIGHTED_CLUSTERS_MAX 8
#define PF_CLUSTER_WEIGHT_MAX 10000
typedef struct pf_config_weighted_cluster {
    char name[PF_NAME_MAX];
    uint32_t weight;      /* 0: none of the traffic (kept for a quick shift back) */
    size_t cluster_index; /* resolved at load */
    pf_config_header_edits request_headers; /* after the route's, on this cluster's requests */
    pf_config_header_edits response_headers;
} pf_config_weighted_cluster;

/* routes[].fault: delays and errors injected for chaos testing. */
#define PF_FAULT_HEADER_DELAY_MAX_MS 60000u /* x-pilotfish-fault-delay is capped at this */
typedef struct pf_config_fault_delay {
    uint64_t duration_ms;
    uint32_t percent; /* of the route's requests, 0-100 */
} pf_config_fault_delay;

typedef struct pf_config_fault_abort {
    uint32_t status;
    uint32_t percent;
} pf_config_fault_abort;

typedef struct pf_config_fault {
    bool has_delay;
    pf_config_fault_delay delay;
    bool has_abort;
    pf_config_fault_abort abort;
    bool header_control; /* x-pilotfish-fault-delay / -abort ask for a fault per request */
} pf_config_fault;

/* routes[].mirror: a copy of each request (of a share of them) to another cluster. */
typedef struct pf_config_mirror {
    char cluster[PF_NAME_MAX];
    size_t cluster_index; /* resolved at load */
    uint32_t percent;     /* 0-100 */
} pf_config_mirror;

/* routes[].sticky_on: what keeps a client on one cluster of a weighted split. */
typedef enum { PF_STICKY_NONE, PF_STICKY_HEADER, PF_STICKY_COOKIE } pf_sticky_kind;

/* routes[].rewrite: the path sent upstream; one of the two is set. */
typedef struct pf_config_rewrite {
    char prefix[PF_PATH_MAX];    /* replaces the part match.prefix matched */
    char full_path[PF_PATH_MAX]; /* replaces the whole path */
} pf_config_rewrite;

/* routes[].redirect: answered by pilotfish with a Location built from the request. */
#define PF_REDIRECT_SCHEME_MAX 8
/* A Location longer than this is not sent: the request gets 414 instead. */
#define PF_LOCATION_MAX 4096
typedef struct pf_config_redirect {
    char scheme[PF_REDIRECT_SCHEME_MAX]; /* "": the request's */
    char host[PF_HOST_MAX];              /* "": the request's */
    uint32_t port;                       /* 0: the request's, or none when scheme is set */
    char path[PF_PATH_MAX];              /* "": see prefix */
    char prefix[PF_PATH_MAX];            /* "": the request's path */
    uint32_t status;                     /* 301, 302, 303, 307 or 308 */
} pf_config_redirect;

/* routes[].direct_response: answered by pilotfish with a fixed response. */
#define PF_DIRECT_BODY_MAX 4096
#define PF_CONTENT_TYPE_MAX 128
typedef struct pf_config_direct_response {
    uint32_t status;
    char body[PF_DIRECT_BODY_MAX]; /* "": none */
    char content_type[PF_CONTENT_TYPE_MAX];
} pf_config_direct_response;

/* routes[].rate_limit: a token bucket per route (or per key), shared by every worker. */
typedef enum { PF_RATE_KEY_NONE, PF_RATE_KEY_CLIENT_IP, PF_RATE_KEY_HEADER } pf_rate_key;
#define PF_RATE_LIMIT_RPS_MAX 1000000u
#define PF_RATE_LIMIT_KEYS_MAX 1000000u
#define PF_DEFAULT_RATE_LIMIT_KEYS 10000u
typedef struct pf_config_rate_limit {
    uint32_t requests_per_second; /* tokens added per second */
    uint32_t burst;               /* the bucket's size; 0: requests_per_second */
    pf_rate_key key;
    char header[PF_HASH_NAME_MAX]; /* PF_RATE_KEY_HEADER: lower-case */
    uint32_t max_keys;             /* buckets kept per route, least recently used evicted */
} pf_config_rate_limit;

typedef struct pf_config_route {
    pf_host_match host_kind;
    char host[PF_HOST_MAX]; /* lower-case; for SUFFIX the part after '*', e.g. ".local" */
    int host_port;          /* -1: any port */
    pf_path_match path_kind;
    char path[PF_PATH_MAX];         /* "/" when no path was given; REGEX: the pattern */
    char method[PF_METHOD_MAX];     /* "" : any */
    pf_config_value_match *headers; /* all must hold; owned by the config */
    size_t header_count;
    pf_config_value_match *query_params;
    size_t query_param_count;
    char cluster[PF_NAME_MAX]; /* "" when clusters[] splits the route */
    size_t cluster_index;      /* index into pf_config.clusters, resolved at load */
    pf_config_weighted_cluster clusters[PF_WEIGHTED_CLUSTERS_MAX];
    size_t weighted_count; /* 0: all requests go to `cluster` */
    uint32_t total_weight; /* sum of the weights, > 0 when weighted_count > 0 */
    bool has_retry;        /* false: the cluster's policy applies */
    pf_config_retry retry;
    uint64_t timeout_ms; /* whole request, all attempts, until the response head; 0: none */
    /* Upgrade protocols (lower-case) a request may switch to through this route. */
    char upgrades[PF_UPGRADES_MAX][PF_UPGRADE_NAME_MAX];
    size_t upgrade_count;
    uint64_t tunnel_idle_timeout_ms; /* 0: the listener's */
    pf_config_header_edits request_headers;
    pf_config_header_edits response_headers;
    /* tcp listeners: the TLS server name (SNI) the route takes; has_sni false on http ones. */
    bool has_sni;
    pf_host_match sni_kind;
    char sni[PF_HOST_MAX]; /* lower-case; for SUFFIX the part after '*', e.g. ".local" */
    bool has_rewrite;
    pf_config_rewrite rewrite;
    char host_rewrite[PF_HOST_MAX]; /* "": the client's Host; "auto": the endpoint's */
    /* A route with a redirect or a direct response sends nothing upstream (no cluster). */
    bool has_redirect;
    pf_config_redirect redirect;
    bool has_direct_response;
    pf_config_direct_response direct_response;
    bool has_rate_limit;
    pf_config_rate_limit rate_limit;
    bool has_fault;
    pf_config_fault fault;
    bool has_mirror;
    pf_config_mirror mirror;
    pf_sticky_kind sticky_kind;
    char sticky_name[PF_HASH_NAME_MAX]; /* header (lower-case) or cookie (as written) */
} pf_config_route;

/* listeners[].protocol: what a listener's connections speak. */
typedef enum {
    PF_LISTEN_HTTP, /* HTTP/1.1 and h2c, routed per request */
    PF_LISTEN_TCP,  /* bytes relayed to a cluster per connection (L4), optionally by SNI */
} pf_listener_protocol;

typedef struct pf_config_listener {
    char name[PF_NAME_MAX];
    pf_sockaddr addr;
    pf_config_route *routes;
    size_t route_count;
    uint32_t max_header_bytes;
    uint32_t max_target_bytes;
    uint32_t max_headers;
    uint32_t buffer_bytes;           /* per direction, before backpressure stops reading */
    uint64_t header_timeout_ms;      /* whole request head must arrive within this */
    uint64_t idle_timeout_ms;        /* downstream keep-alive idle */
    uint64_t body_timeout_ms;        /* longest pause inside a request body */
    uint32_t max_connections;        /* client connections open at once; 0: only the global limit */
    uint64_t tunnel_idle_timeout_ms; /* an upgraded connection with no bytes either way */
    uint64_t stream_idle_timeout_ms; /* a request (HTTP/2 stream, gRPC call) silent both ways */
    bool has_tls;                    /* false: plaintext HTTP/1 */
    pf_config_listener_tls tls;
    pf_listener_protocol protocol;
    char cluster[PF_NAME_MAX]; /* tcp: where connections no route takes go; "": closed */
    size_t cluster_index;      /* into pf_config.clusters, resolved at load when cluster[0] */
} pf_config_listener;

/* $.kubernetes.auto_discover.mode: watch every Service of the namespaces from the start,
 * or only those requests name, from the first such request on. */
typedef enum {
    PF_K8S_WATCH_ALL,
    PF_K8S_ON_DEMAND,
} pf_k8s_auto_mode;

/* $.kubernetes: how to reach the API server, shared by every Kubernetes cluster, and
 * auto-discovery. Empty strings mean "the in-cluster default" (resolved at start). */
typedef struct pf_config_kubernetes {
    bool enabled;                     /* "kubernetes" is given, or a cluster uses it */
    char api_server[PF_K8S_TEXT_MAX]; /* "https://host:port" */
    char token_file[PF_K8S_TEXT_MAX];
    char ca_file[PF_K8S_TEXT_MAX];
    char namespace[PF_K8S_NAME_MAX];
    char cluster_domain[PF_DNS_NAME_MAX];
    bool auto_discover;
    bool all_namespaces;
    char (*namespaces)[PF_K8S_NAME_MAX];
    size_t namespace_count;
    pf_config_cluster *auto_cluster; /* settings of every discovered cluster (name unused) */
    uint32_t auto_max_clusters;      /* slots discovered clusters may hold at once */
    pf_k8s_auto_mode auto_mode;
    uint64_t on_demand_timeout_ms; /* on_demand: how long a first request waits */
    uint64_t negative_ttl_ms;      /* on_demand: how long "no such Service" is believed */
    uint64_t idle_timeout_ms;      /* on_demand: unused this long, a Service is let go */
    /* on_demand: Services of a namespace with watches of their own; past it, one feed */
    uint32_t max_watches_per_namespace;
    uint64_t stall_timeout_ms;
    uint64_t request_timeout_ms;
    uint64_t connect_timeout_ms;
    uint64_t backoff_base_ms, backoff_max_ms;
    uint32_t max_line_bytes;
    uint32_t max_list_bytes;
    uint32_t page_size;
    bool http_routes; /* Gateway API HTTPRoutes attached to discovered Services apply */
    uint64_t http_routes_recheck_ms; /* the HTTPRoute kind is not installed: list again after */
    bool http2; /* lists and watches multiplexed on HTTP/2 when the API server offers it */
} pf_config_kubernetes;

/* $.tracing: W3C trace context on forwarded requests. */
typedef struct pf_config_tracing {
    bool generate; /* a request without a valid traceparent gets a new one */
    bool sampled;  /* the sampled flag of the traceparents pilotfish generates */
} pf_config_tracing;

/* $.stats: what /stats/prometheus adds beyond its bounded default series. */
typedef struct pf_config_stats {
    bool per_endpoint; /* series labelled with each endpoint's address */
} pf_config_stats;

/* $.access_log: one line per request. The fields a line may hold, in their default order. */
typedef enum {
    PF_ALOG_TIME,
    PF_ALOG_CLIENT,
    PF_ALOG_METHOD,
    PF_ALOG_AUTHORITY,
    PF_ALOG_PATH,
    PF_ALOG_STATUS,
    PF_ALOG_BYTES_IN,
    PF_ALOG_BYTES_OUT,
    PF_ALOG_DURATION_MS,
    PF_ALOG_CLUSTER,
    PF_ALOG_UPSTREAM,
    PF_ALOG_REQUEST_ID,
    PF_ALOG_TRACE_ID,
    PF_ALOG_PROTOCOL,
    PF_ALOG_GRPC_STATUS,
    PF_ALOG_FIELD_COUNT
} pf_access_log_field;

typedef enum { PF_ALOG_JSON, PF_ALOG_TEXT } pf_access_log_format;

#define PF_ALOG_SAMPLE_ONE 1000000u /* sample_ppm of "every request" */

typedef struct pf_config_access_log {
    bool enabled;                        /* false: no access log at all */
    int format;                          /* pf_access_log_format */
    uint8_t fields[PF_ALOG_FIELD_COUNT]; /* pf_access_log_field, in line order */
    size_t field_count;                  /* 1 to PF_ALOG_FIELD_COUNT, no repeats */
    char path[PF_K8S_TEXT_MAX];          /* "": stdout */
    uint32_t sample_ppm;                 /* requests logged per million */
} pf_config_access_log;

/* The name of an access log field ("duration_ms"), or NULL out of range. */
const char *config_access_log_field_name(int field);

typedef struct pf_config {
    char *source; /* file name used in messages, owned */
    pf_sockaddr admin_addr;
    char admin_api_token_file[PF_K8S_TEXT_MAX]; /* "": the admin API's writes are off */
    bool admin_write_back;                      /* an API change is written to the config file */
    pf_config_access_log access_log;            /* one line per request */
    uint32_t workers;                           /* 0 = not set in the file; the CLI may override */
    uint64_t drain_timeout_ms;
    uint32_t max_connections;     /* client connections over all listeners; 0: not set */
    char local_zone[PF_NAME_MAX]; /* "" unless set here or by POD_ZONE / NODE_ZONE */
    pf_config_listener *listeners;
    size_t listener_count;
    pf_config_cluster *clusters;
    size_t cluster_count;
    pf_config_dns dns;
    pf_config_kubernetes kubernetes;
    pf_config_tracing tracing;
    pf_config_stats stats;
} pf_config;

/* Loads and validates a config file. On success returns 0 and *out (caller frees with
 * config_free). On failure returns PF_EINVAL, *out is NULL and errs holds one message per
 * problem, each prefixed "<file>: <json path>: ". Any thread. */
int config_load_file(const char *path, pf_config **out, pf_errlist *errs);

/* Same, from a string; `source` names it in messages. */
int config_load_string(const char *json, const char *source, pf_config **out, pf_errlist *errs);

/* Serialises the effective config (defaults filled in) as pretty JSON; caller frees. */
char *config_dump_json(const pf_config *cfg);

/* Parses "ip:port" or "[ipv6]:port" (no names). Returns 0 or PF_EINVAL with a reason. */
int config_parse_sockaddr(const char *text, pf_sockaddr *out, pf_error *err);

const char *config_lb_policy_name(pf_lb_policy policy);
/* "A", "AAAA", "A+AAAA" or "SRV". */
const char *config_dns_record_name(pf_dns_record record);

/* Parses an expected-status item, "200-399" or "204" (codes 100-599). Returns 0 or PF_EINVAL
 * with a reason. */
int config_parse_status_range(const char *text, pf_status_range *out, pf_error *err);

/* The global max_connections when the file sets none, for an open file limit of
 * `fd_limit`: half of what the reserve leaves (a client connection usually holds an upstream
 * connection too), at least 1. Pure. */
uint32_t config_default_max_connections(uint64_t fd_limit);

void config_free(pf_config *cfg);

/* ---- the schema: one table row per key drives parsing, defaults, the dump and the diff ---- */

/* Writes the table defaults of $.clusters[].dns into dns (name "", record A, no port): what a
 * DNS cluster made at run time (an ExternalName Service) starts from. Any thread. */
void config_cluster_dns_defaults(pf_config_cluster_dns *dns);

/* Every key of the schema as a pretty JSON array of {"path", "type", "default", "doc"} (and
 * "min", "max" for integers with fixed bounds),
 * paths written the way README.md's key tables write them ("clusters[].connect_timeout",
 * "health_check.interval"); caller frees. NULL when out of memory. Any thread. */
char *config_schema_json(void);

typedef enum { PF_CHANGE_ADDED, PF_CHANGE_REMOVED, PF_CHANGE_CHANGED } pf_change_kind;

/* One difference between two configs. path is a JSON path (RFC 9535) into the config that
 * has the key: the new one for added and changed keys, the old one for removed keys.
 * Listeners and clusters are matched by name and endpoints by address, so their paths use
 * filter selectors: $.clusters[?@.name=="web"].endpoints[?@.address=="10.0.0.1:80"].weight;
 * routes are matched by position (their order decides), $.listeners[?@.name=="main"].routes[0]. */
typedef struct pf_config_change {
    pf_change_kind kind;
    char *path; /* owned by the diff */
} pf_config_change;

typedef struct pf_config_diff {
    pf_config_change *items;
    size_t count, cap;
} pf_config_diff;

/* Fills out (zeroed by the caller, or reused after config_diff_free) with what changes from
 * `from` to `to`, in schema order: a whole listener, cluster, route or endpoint when it is
 * added or removed, else each key whose effective value (defaults included) differs.
 * Returns 0 or PF_ENOMEM (out then holds what was found so far). Any thread. */
int config_diff(const pf_config *from, const pf_config *to, pf_config_diff *out);

/* Frees the paths and the list; the diff is empty afterwards. NULL is a no-op. */
void config_diff_free(pf_config_diff *diff);

/* "added", "removed" or "changed". */
const char *config_change_kind_name(pf_change_kind kind);

/* Frees the lists of a route's header edits (config_free does it for loaded configs; a
 * router frees its copies). */
void config_header_edits_free(pf_config_header_edits *e);

/* Parses one route (the keys of $.listeners[].routes[]) from JSON text, for routes made at
 * run time (Kubernetes HTTPRoutes). Messages read "source: path.key: ...". Cluster names
 * are left for the caller to resolve (cluster_index, the weighted clusters' and the
 * mirror's stay 0). Returns 0 with *out filled (free its lists with config_route_free), or
 * PF_EINVAL / PF_ENOMEM with the first message in err (*out then holds nothing to free).
 * Any thread. */
int config_parse_route(const char *json, const char *source, const char *path, pf_config_route *out,
                       pf_error *err);

/* Frees the lists a parsed route owns (conditions, header edits). */
void config_route_free(pf_config_route *r);

#endif
