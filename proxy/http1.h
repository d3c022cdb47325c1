/* HTTP/1.x codec pieces around llhttp: a bounded store for a message head (target or
 * reason, and headers) collected from llhttp's split callbacks, the hop-by-hop rules, and
 * writers for the heads pilotfish sends. No sockets here: the connection code feeds bytes
 * in and takes evbuffers out, so a second protocol can sit beside this one. */
#ifndef PF_PROXY_HTTP1_H
#define PF_PROXY_HTTP1_H

#include "config/config.h"

#include <event2/buffer.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>

typedef struct pf_header {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
} pf_header;

/* One message head. Memory grows on demand up to `byte_limit` (then PF_ELIMIT) and is
 * kept across messages on the same connection. */
typedef struct pf_head {
    char *buf;
    size_t len, cap, byte_limit;
    pf_header *headers;
    size_t count, cap_headers, max_headers;
    uint32_t first_off, first_len; /* request target or response reason */
    bool last_was_value;
} pf_head;

void http1_head_init(pf_head *h, size_t byte_limit, size_t max_headers);
void http1_head_reset(pf_head *h);
void http1_head_free(pf_head *h);
/* Empties h and gives its buffers back, keeping its limits: for a head that waits long
 * between uses (an idle keep-alive connection), so that waiting costs no memory. */
void http1_head_release(pf_head *h);
/* Frees the calling thread's spare head buffers (kept by http1_head_release for the next
 * head): call when a thread that released heads ends. */
void http1_head_spares_free(void);
/* Appenders for llhttp callbacks; each returns 0 or PF_ELIMIT (bytes or header count). */
int http1_head_append_first(pf_head *h, const char *at, size_t len);
int http1_head_append_name(pf_head *h, const char *at, size_t len);
int http1_head_append_value(pf_head *h, const char *at, size_t len);
/* Trims trailing whitespace from the last value; call from on_header_value_complete.
 * Returns 0, or PF_ELIMIT when an empty value does not fit. */
int http1_head_finish_value(pf_head *h);

static inline const char *http1_name(const pf_head *h, size_t i) {
    return h->buf + h->headers[i].name_off;
}
static inline const char *http1_value(const pf_head *h, size_t i) {
    return h->buf + h->headers[i].value_off;
}
/* "" while the head has no buffer yet: a response with neither reason nor header, a
 * request cut before its target. */
static inline const char *http1_first(const pf_head *h) {
    return h->buf ? h->buf + h->first_off : "";
}

/* Case-insensitive compare of a header name with a NUL-terminated lower-case name. Inline:
 * with a literal name the length is a constant, so a header of another length costs one
 * compare (these run for every header of every request, many times). */
static inline bool http1_name_is(const pf_head *h, size_t i, const char *lower_name) {
    size_t n = __builtin_strlen(lower_name);
    return h->headers[i].name_len == n && strncasecmp(http1_name(h, i), lower_name, n) == 0;
}
/* Index of the first header named `lower_name`, or -1. Also counts matches in *count. */
static inline long http1_find(const pf_head *h, const char *lower_name, size_t *count) {
    long first = -1;
    size_t matches = 0;
    for (size_t i = 0; i < h->count; i++) {
        if (http1_name_is(h, i, lower_name)) {
            if (first < 0)
                first = (long)i;
            matches++;
        }
    }
    if (count)
        *count = matches;
    return first;
}

/* v as 16 lower-case hex digits at out (no NUL). */
void http1_put_hex64(char *out, uint64_t v);

/* An IPv4 address (network byte order) as dotted decimal into out (at least 16 bytes), as
 * inet_ntop writes it, without its printf: every accepted connection formats one. */
void http1_format_ipv4(const void *addr, char *out);

/* Names removed when forwarding either way: RFC 9110 7.6.1 connection-specific fields,
 * plus framing fields (pilotfish writes its own) and the de-facto Proxy-Connection. The
 * names listed in the message's own Connection header are removed too. */
bool http1_is_hop_by_hop(const pf_head *h, size_t i);

typedef enum { PF_BODY_NONE, PF_BODY_LENGTH, PF_BODY_CHUNKED, PF_BODY_EOF } pf_body_mode;

/* ---- pure decisions: functions of their inputs, no connection, no event loop --------
 * The downstream codec calls them on every request, the unit tests with tables and the
 * fuzz harness with whatever it finds. */

/* A request target split into what is forwarded and what is routed on. */
typedef struct pf_target {
    const char *target; /* what goes upstream: origin-form, or "*" */
    size_t target_len;
    bool root_first;       /* write "/" before target: absolute-form with an empty path, "?q" */
    const char *authority; /* absolute-form's authority (overrides Host); NULL otherwise */
    size_t authority_len;
    const char *path; /* the path part, routed on and logged */
    size_t path_len;
} pf_target;

/* Splits the request target `t` (len bytes) of a request whose method is OPTIONS or not.
 * Returns 0 and fills *out (pointers into t or static strings), or PF_EINVAL. */
int http1_parse_target(const char *t, size_t len, bool is_options, pf_target *out);

/* RFC 9110 5.6.2: whether the bytes are all token characters (a valid field name). */
bool http1_is_token(const char *at, size_t len);

/* Whether a header value span is an obs-fold continuation (RFC 9112 5.2). llhttp hands a
 * value in two spans either because a read ended inside it (`prev_ended_read` and
 * `starts_read`), or because it joined a folded line; `value_open`: a span of this value
 * was already seen. */
bool http1_value_is_fold(bool value_open, bool prev_ended_read, bool starts_read);

/* Why the Host header(s) make the request invalid (RFC 9112 3.2: exactly one in HTTP/1.1,
 * none needed with an absolute-form authority), or NULL when they are fine. */
const char *http1_check_host(size_t host_count, int minor, bool has_authority);

/* A W3C traceparent: "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>" */
#define PF_TRACEPARENT_LEN 55
/* Whether `v` is a traceparent to pass on untouched (W3C Trace Context 3.2): lowercase hex,
 * version not ff, trace and parent ids not all zero; version 00 is exactly 55 characters,
 * a later version may carry more after a '-'. Pure. */
bool http1_traceparent_valid(const char *v, size_t len);
/* Writes a version-00 traceparent for trace id `hi`,`lo` and parent id `parent` (all zero
 * ids are replaced by 1) into out[PF_TRACEPARENT_LEN + 1]. Pure. */
void http1_traceparent_format(char *out, uint64_t hi, uint64_t lo, uint64_t parent, bool sampled);
/* RFC 9110 7.8: whether an HTTP/1.`minor` request asks to switch protocols (a Connection
 * header naming "upgrade" and an Upgrade header; HTTP/1.0 cannot). Sets *value and *len to the
 * Upgrade header's value (borrowed from h). */
bool http1_upgrade_requested(const pf_head *h, int minor, const char **value, size_t *len);

/* What header value templates may name (NULL: expands to nothing). */
typedef struct pf_header_vars {
    const char *client_ip, *request_id, *cluster, *upstream;
} pf_header_vars;

/* Expands a value template (%CLIENT_IP%, %REQUEST_ID%, %CLUSTER%, %UPSTREAM%, %% for '%';
 * config/ refused anything else) into out (cap bytes, NUL-terminated, cut to fit). Returns
 * the length written. */
size_t http1_expand_value(const char *template, const pf_header_vars *vars, char *out, size_t cap);

/* What pilotfish adds or rewrites on a forwarded request. */
typedef struct pf_forward_request {
    const char *method;
    const char *target; /* origin-form, or "*" (asterisk-form of OPTIONS) */
    size_t target_len;
    bool root_first;  /* write "/" before target: absolute-form with an empty path, "?q" */
    const char *host; /* Host to send: the client's, or the absolute-form authority */
    size_t host_len;
    const char *client_ip;
    const char *proto;       /* "http" or "https" */
    const char *request_id;  /* generated id, or NULL when the client sent one */
    const char *client_cert; /* x-forwarded-client-cert of a verified TLS client, or NULL */
    /* A traceparent pilotfish made, which replaces the client's traceparent and tracestate
     * (an invalid traceparent voids its tracestate); NULL: the client's go as they came. */
    const char *traceparent;
    pf_body_mode body;
    uint64_t content_length;
    const char *upgrade; /* an allowed Upgrade value: sent with Connection: upgrade; or NULL */
    size_t upgrade_len;
    const pf_config_header_edits *edits; /* the route's request_headers, or NULL */
    /* The weighted cluster's, applied after the route's (a name both set: the cluster's). */
    const pf_config_header_edits *cluster_edits;
    const pf_header_vars *vars; /* for the edits' values */
    /* A gRPC call's remaining time ("100m"), replacing the client's grpc-timeout; or NULL. */
    const char *grpc_timeout;
} pf_forward_request;

/* A message's body mode from its framing: chunked, a length (a request with length 0 has
 * none), or for responses without either, until the connection closes (RFC 9112 6.3). */
pf_body_mode http1_request_body_mode(bool chunked, bool has_length, uint64_t length);
pf_body_mode http1_response_body_mode(bool chunked, bool has_length);

/* How a response is framed toward the client. */
typedef struct pf_response_framing {
    pf_body_mode head_body; /* what the head announces */
    pf_body_mode body;      /* how body bytes are written */
    bool skip_body;         /* the upstream sends no body (HEAD): do not wait for one */
    bool close;             /* the connection must close after this response */
} pf_response_framing;

/* The framing of a response with `status` and upstream body mode `upstream_body`, to a
 * request (HEAD or not) from an HTTP/1.`client_minor` client. */
pf_response_framing http1_response_framing(bool head_request, int status,
                                           pf_body_mode upstream_body, int client_minor);

/* Writes the upstream request head (HTTP/1.1 origin-form, hop-by-hop removed, Host,
 * X-Forwarded-For appended, X-Forwarded-Proto, X-Request-Id). Returns 0 or PF_ENOMEM. */
int http1_write_request_head(struct evbuffer *out, const pf_head *req,
                             const pf_forward_request *fwd);

typedef struct pf_forward_response {
    int status;
    int client_minor; /* client's HTTP/1.x minor version */
    pf_body_mode body;
    uint64_t content_length;
    bool keep_alive;           /* whether the downstream connection stays open after this */
    unsigned attempts;         /* written as x-pilotfish-attempts when nonzero */
    const char *extra_headers; /* complete "Name: value\r\n" lines pilotfish adds, or NULL */
    const char *upgrade;       /* a 101's Upgrade value: sent with Connection: upgrade; or NULL */
    size_t upgrade_len;
    const pf_config_header_edits *edits;         /* the route's response_headers, or NULL */
    const pf_config_header_edits *cluster_edits; /* the weighted cluster's, or NULL */
    const pf_header_vars *vars;
} pf_forward_response;

/* Writes the downstream response head: upstream status and reason, its end-to-end
 * headers, pilotfish's framing and Connection header. Returns 0 or PF_ENOMEM. */
int http1_write_response_head(struct evbuffer *out, const pf_head *resp,
                              const pf_forward_response *fwd);

/* Ends a chunked body: the last chunk, the trailer fields of `trailers` (NULL: none; those
 * that may not be trailers dropped) and the blank line. Returns 0 or PF_ENOMEM. */
int http1_write_last_chunk(struct evbuffer *out, const pf_head *trailers);

/* For codecs that write fields their own way (HTTP/2): whether header edits (a route's,
 * then a weighted cluster's; either may be NULL) set or remove header i of h, which then
 * does not go as it came; and each line they add, its value expanded (valid during the
 * call only). Returns how many lines. */
typedef void (*http1_edit_fn)(void *arg, const char *name, const char *value, size_t len);
bool http1_edits_remove(const pf_config_header_edits *route, const pf_config_header_edits *cluster,
                        const pf_head *h, size_t i);
size_t http1_edit_lines(const pf_config_header_edits *route, const pf_config_header_edits *cluster,
                        const pf_header_vars *vars, http1_edit_fn fn, void *arg);

/* A route's (then a weighted cluster's; either may be NULL) response edits on the
 * "Name: value\r\n" lines of an answer pilotfish makes itself (`lines` may be NULL): a line
 * whose name the edits set or remove is left out, then the edits' lines follow, as on an
 * endpoint's response. Writes into out (cap bytes, NUL-terminated) and returns the length;
 * 0 when the result does not fit (the caller keeps its lines as they were). */
size_t http1_edit_local_lines(const char *lines, const pf_config_header_edits *route,
                              const pf_config_header_edits *cluster, const pf_header_vars *vars,
                              char *out, size_t cap);

/* Whether "Name: value\r\n" lines (or NULL) hold a Content-Type. */
bool http1_lines_have_content_type(const char *lines);

/* Writes a complete short response generated by pilotfish itself: plain text unless
 * extra_headers name a Content-Type; a NULL body: none, and no Content-Type of ours
 * (extra_headers carry it, as for gRPC). */
int http1_write_local_response(struct evbuffer *out, int status, const char *body, bool keep_alive,
                               const char *extra_headers);

/* Standard reason phrase for a status ("Unknown" for codes without one). */
const char *http1_reason(int status);

/* Writes one chunk (size line, data, CRLF); len 0 is a no-op, not the last chunk. */
int http1_write_chunk(struct evbuffer *out, const void *data, size_t len);
/* Appends all of `in` to `out` by reference (its chains are shared, not copied; `in` stays
 * as it is), or by copy when libevent cannot reference it. Returns 0 or PF_ENOMEM. */
int http1_add_reference(struct evbuffer *out, struct evbuffer *in);

#endif
