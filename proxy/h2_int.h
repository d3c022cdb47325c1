/* Private to proxy/: the HTTP/2 downstream codec (h2_downstream.c). A listener's connection
 * that opens with the HTTP/2 preface (h2c, or after TLS chose ALPN "h2") is handed from
 * conn.c to an h2 connection:
 * one nghttp2 server session over the same pf_stream, each stream one exchange. Also the
 * pure mappings between HTTP/2 field lists and HTTP/1 heads (RFC 9113 8.2, 8.3), which the
 * unit tests call with tables. */
#ifndef PF_PROXY_H2_INT_H
#define PF_PROXY_H2_INT_H

#include "proxy/proxy_int.h"
#include "proxy/stream.h"

#include <nghttp2/nghttp2.h>

#define PF_H2_MAX_STREAMS 100u        /* SETTINGS_MAX_CONCURRENT_STREAMS we advertise */
#define PF_H2_RESET_LIMIT 100u        /* client RST_STREAMs allowed per interval ... */
#define PF_H2_RESET_INTERVAL_MS 1000u /* ... beyond which: GOAWAY ENHANCE_YOUR_CALM */
#define PF_H2_CONTROL_LIMIT 100u      /* client SETTINGS, and PINGs, allowed per interval */
#define PF_H2_MAX_CONTINUATIONS 8u    /* CONTINUATION frames after one HEADERS */
#define PF_H2_DRAIN_NOTICE_MS 1000u   /* from the first GOAWAY of a drain to the final one */
#define PF_H2_METHOD_MAX 32u
#define PF_H2_SPARE_STREAMS 256u     /* closed streams a worker keeps for reuse */
#define PF_H2_SPARE_HEAD_BYTES 4096u /* ... with their request head, if it is this small */
#define PF_H2_SEND_BATCH 16384u      /* frames copied into one output extent per flush */

/* h2_upstream.c: the worker's HTTP/2 upstream connections of a cluster, closed. */
void h2_upstream_free_all(pf_worker_cluster *wc);
/* Connections to endpoints not in `set` take no new streams and close once they have none
 * open: idle ones on their next event turn (within this loop turn), busy ones after their
 * last stream. Worker thread; may be called from inside an exchange callback. */
void h2_upstream_prune(pf_worker_cluster *wc, const pf_endpoint_set *set);

typedef struct pf_h2_conn pf_h2_conn;

/* Takes over a downstream connection whose first bytes were the HTTP/2 preface (already
 * consumed from the input). `conn` owns `s` and frees this object with it (conn_free).
 * `bound_host` (borrowed from conn; NULL: none): inside a CONNECT tunnel, every stream is
 * routed as that host and `bound_port`. Returns the connection or NULL when out of memory.
 * Worker thread. */
pf_h2_conn *h2_conn_new(pf_conn *conn, pf_worker *w, pf_listener_rt *l, pf_stream *s,
                        const char *client_ip, const char *bound_host, int bound_port);
/* Frees the session and every stream (their exchanges end). NULL is a no-op. */
void h2_conn_free(pf_h2_conn *h);
/* The stream callbacks, forwarded by conn.c. Each may free the connection (conn_free). */
void h2_conn_on_read(pf_h2_conn *h);
void h2_conn_on_write(pf_h2_conn *h);
/* Graceful drain: GOAWAY with the maximum stream id, then the final GOAWAY; streams in
 * flight finish, and the connection closes when none is left. */
void h2_conn_drain(pf_h2_conn *h);
/* When the oldest started exchange among the connection's streams began (pf_now_us), or 0
 * when none runs: what holds a config a reload replaced. Worker thread. */
uint64_t h2_conn_oldest_start_us(const pf_h2_conn *h);

/* ---- pure mappings ------------------------------------------------------------------ */

/* What a request field of an HTTP/2 stream becomes for an HTTP/1 upstream. */
typedef enum {
    PF_H2_FIELD_KEEP,      /* forwarded as it is */
    PF_H2_FIELD_METHOD,    /* :method */
    PF_H2_FIELD_PATH,      /* :path */
    PF_H2_FIELD_AUTHORITY, /* :authority, sent as Host */
    PF_H2_FIELD_SCHEME,    /* :scheme, checked and dropped */
    PF_H2_FIELD_COOKIE,    /* joined into one Cookie field (RFC 9113 8.2.3) */
    PF_H2_FIELD_HOST,      /* used only without :authority (RFC 9113 8.3.1) */
    PF_H2_FIELD_DROP,      /* any other pseudo-header, or connection-specific */
    PF_H2_FIELD_PROTOCOL,  /* :protocol of an extended CONNECT (RFC 8441): a WebSocket */
} pf_h2_field;

/* `value` matters for te, which is kept as "te: trailers" only (RFC 9113 8.2.2). */
pf_h2_field h2_request_field(const char *name, size_t len, const char *value, size_t vlen);

/* Appends one cookie crumb to `dst` (holding *len bytes of `cap`), "; " between crumbs.
 * Returns 0 or PF_ELIMIT when it does not fit. */
int h2_cookie_append(char *dst, size_t cap, size_t *len, const char *v, size_t vlen);

/* A response field list for nghttp2, built from an HTTP/1 head. Owns its memory. */
typedef struct pf_h2_fields {
    nghttp2_nv *nv;
    size_t count;
    char *scratch; /* lower-cased names, the status and length digits */
} pf_h2_fields;

/* Builds the HTTP/2 response fields: :status (none when `status` is 0: trailers), the head's
 * end-to-end fields with names in lower case (connection-specific and framing fields dropped, RFC
 * 9113 8.2.2), content-length when `has_length`, and `extra` lines ("Name: value\r\n", or NULL).
 * `resp` may be NULL (pilotfish's own response). `edits` (or NULL): the response header edits
 * (edits, cluster_edits, vars) applied as the HTTP/1 writer applies them. Returns 0 or
 * PF_ENOMEM; free with h2_fields_free. */
int h2_response_fields(pf_h2_fields *out, const pf_head *resp, int status, bool has_length,
                       uint64_t content_length, const char *extra,
                       const pf_forward_response *edits);
/* Room for `fields` entries and `scratch_bytes` of names and values, in one allocation.
 * Returns 0 or PF_ENOMEM. */
int h2_fields_alloc(pf_h2_fields *out, size_t fields, size_t scratch_bytes);
void h2_fields_free(pf_h2_fields *f);
/* Header edits in a field list: first sized (how many fields, how many bytes of names and
 * values), then added at *pos of the scratch space, names lower-cased (RFC 9113 8.2.1). */
typedef struct pf_h2_edit_size {
    size_t lines, bytes;
} pf_h2_edit_size;
pf_h2_edit_size h2_edits_size(const pf_config_header_edits *route,
                              const pf_config_header_edits *cluster, const pf_header_vars *vars);
void h2_fields_add_edits(pf_h2_fields *f, char **pos, const pf_config_header_edits *route,
                         const pf_config_header_edits *cluster, const pf_header_vars *vars);

/* Builds an HTTP/2 request's fields for an upstream from the exchange's request (RFC 9113
 * 8.3.1 pseudo-headers first, :authority from Host, connection-specific fields dropped but
 * "te: trailers", names lower-cased, pilotfish's X-Forwarded-* and X-Request-Id added).
 * Returns 0 or PF_ENOMEM; free with h2_fields_free. */
int h2_request_fields(pf_h2_fields *out, const pf_head *req, const pf_forward_request *fwd);

#endif
