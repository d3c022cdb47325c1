/* The HTTP/2 downstream codec: a client connection that spoke the HTTP/2 preface, in
 * plaintext (h2c) or after a TLS handshake that chose ALPN "h2". nghttp2 does the framing, HPACK,
 * flow control and protocol checks; this file maps each stream to one exchange (exchange.c routes,
 * balances and retries it exactly as for HTTP/1) and implements the downstream ops per stream.
 * Upstreams stay HTTP/1: the request fields become an HTTP/1 head (RFC 9113 8.2), and the response
 * head becomes fields.
 *
 * Reentrancy: the ops never drive the session (they only submit and resume); bytes move in
 * flush(), run from an event, so a stream and its exchange are freed only from nghttp2's
 * close callback inside flush() or on_read, never under an exchange call. */
#include "proxy/h2_int.h"
#include "core/time.h"
#include "proxy/exchange_int.h"
#include "proxy/route_actions_int.h"
#include "proxy/tls_int.h"
#include "proxy/websocket_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct h2_stream h2_stream; /* struct tag named in proxy_int.h (the spares) */

/* Frames of one kind a client sent in the current interval (PF_H2_RESET_INTERVAL_MS). */
typedef struct {
    uint64_t start_ms;
    unsigned count;
} h2_rate;

/* Where the connection is in its life; h2_set_state checks every move. */
typedef enum {
    H2_OPEN,   /* serving streams */
    H2_NOTICE, /* draining: the first GOAWAY (maximum stream id) went out */
    H2_GOAWAY, /* the final GOAWAY went out: close once the streams are done */
    H2_FAILED, /* the client broke the protocol: GOAWAY queued, input ignored, closed soon */
    H2_STATE_COUNT
} h2_state;

struct pf_h2_conn {
    pf_conn *conn;
    pf_worker *w;
    pf_listener_rt *l;
    pf_stream *s;
    const char *client_ip;
    nghttp2_session *session;
    struct event *flush_ev; /* moves bytes after the current callback */
    struct event *timer;    /* idle without streams, or the drain notice's wait */
    h2_state state;
    bool lingering; /* FAILED, its GOAWAY out: write side shut, input dropped until EOF */
    h2_stream *streams;
    size_t stream_count;
    h2_rate resets, settings, pings; /* what the client sent in the current interval */
    bool wake;                       /* a stream waiting for output room may go on */
    bool tls;                        /* over TLS (ALPN h2): X-Forwarded-Proto https */
    const char *bound_host;          /* inside a CONNECT tunnel: what every stream is routed as */
    int bound_port;
    char *client_cert; /* TLS: x-forwarded-client-cert of a verified client, else NULL */
};

struct h2_stream {
    pf_h2_conn *h;
    int32_t id;
    h2_stream *prev, *next;
    pf_head req;
    char method[PF_H2_METHOD_MAX];
    char *cookie;    /* joined crumbs, bounded by max_header_bytes */
    char *authority; /* :authority, becomes Host after :path (the head's first) is stored */
    size_t authority_len;
    size_t cookie_len;
    bool has_authority, has_path, has_method;
    int error_status; /* a 4xx decided while the fields arrived */
    bool started;     /* the exchange was started (or answered) */
    bool head_request;
    bool logged;
    bool eof;            /* the response body is complete */
    bool waiting_output; /* the upstream stopped for room in out */
    bool wake;
    size_t unconsumed; /* DATA bytes received but not yet taken upstream */
    uint64_t content_length;
    bool has_length;
    struct evbuffer *out;  /* response body waiting for the data provider */
    struct event *stall;   /* while waiting_output: the client's body_timeout to read on */
    pf_h2_fields trailers; /* sent after the body when count > 0 */
    /* An extended CONNECT (RFC 8441) opening a WebSocket: see "extended CONNECT" below. */
    bool ws;            /* it is one: DATA and END_STREAM are tunnel bytes, not a body */
    bool ws_tunnel;     /* the upstream said 101: the stream is a tunnel side */
    bool ws_client_eof; /* the client ended its side (END_STREAM) */
    bool ws_closing;    /* nghttp2 closed the stream: no RST_STREAM of ours follows */
    char protocol[32];  /* :protocol */
    char ws_key[PF_WS_KEY_LEN + 1]; /* the Sec-WebSocket-Key sent upstream */
    struct evbuffer *ws_in;         /* the client's DATA not yet moved upstream */
    struct event *ws_wrote;         /* the tunnel's on_write, after DATA went out */
    pf_exchange ex;
};

static void count_error(pf_h2_conn *h, pf_h2_error why) {
    metrics_inc(h->l->h2_errors[why], 1);
}

static void schedule_flush(pf_h2_conn *h) {
    event_active(h->flush_ev, 0, 0);
}

static void h2_set_state(pf_h2_conn *h, h2_state to) {
    static const unsigned allowed[H2_STATE_COUNT] = {
        [H2_OPEN] = 1u << H2_NOTICE | 1u << H2_GOAWAY | 1u << H2_FAILED,
        [H2_NOTICE] = 1u << H2_GOAWAY | 1u << H2_FAILED,
        [H2_GOAWAY] = 1u << H2_FAILED,
        [H2_FAILED] = 0,
    };
    if (!(allowed[h->state] & (1u << to))) {
        log_error("h2: illegal move from state %d to %d client=%s", h->state, to, h->client_ip);
        abort();
    }
    h->state = to;
}

/* ---- pure mappings ------------------------------------------------------------------ */

static bool name_eq(const char *name, size_t len, const char *lit) {
    return strlen(lit) == len && memcmp(name, lit, len) == 0;
}

pf_h2_field h2_request_field(const char *name, size_t len, const char *value, size_t vlen) {
    if (len > 0 && name[0] == ':') {
        if (name_eq(name, len, ":method"))
            return PF_H2_FIELD_METHOD;
        if (name_eq(name, len, ":path"))
            return PF_H2_FIELD_PATH;
        if (name_eq(name, len, ":authority"))
            return PF_H2_FIELD_AUTHORITY;
        if (name_eq(name, len, ":scheme"))
            return PF_H2_FIELD_SCHEME;
        if (name_eq(name, len, ":protocol"))
            return PF_H2_FIELD_PROTOCOL;
        return PF_H2_FIELD_DROP;
    }
    if (name_eq(name, len, "cookie"))
        return PF_H2_FIELD_COOKIE;
    if (name_eq(name, len, "host"))
        return PF_H2_FIELD_HOST;
    if (name_eq(name, len, "te") && vlen == 8 && strncasecmp(value, "trailers", 8) == 0)
        return PF_H2_FIELD_KEEP; /* gRPC needs it on an HTTP/2 upstream; HTTP/1 drops it */
    /* RFC 9113 8.2.2: connection-specific fields do not exist in HTTP/2 (nghttp2 already
     * refuses them); "te: trailers" is the one allowed, and it means nothing to HTTP/1. */
    static const char *const drop[] = {"connection", "keep-alive",        "proxy-connection",
                                       "te",         "transfer-encoding", "upgrade"};
    for (size_t k = 0; k < sizeof drop / sizeof drop[0]; k++)
        if (name_eq(name, len, drop[k]))
            return PF_H2_FIELD_DROP;
    return PF_H2_FIELD_KEEP;
}

int h2_cookie_append(char *dst, size_t cap, size_t *len, const char *v, size_t vlen) {
    size_t sep = *len > 0 ? 2 : 0;
    if (*len + sep + vlen > cap)
        return PF_ELIMIT;
    if (sep)
        memcpy(dst + *len, "; ", 2);
    memcpy(dst + *len + sep, v, vlen);
    *len += sep + vlen;
    return PF_OK;
}

int h2_fields_alloc(pf_h2_fields *out, size_t fields, size_t scratch_bytes) {
    /* One block per field list (a response or a request is one): the entries, then the
     * scratch space their names and values point into. */
    memset(out, 0, sizeof *out);
    out->nv = malloc(fields * sizeof *out->nv + scratch_bytes);
    if (!out->nv)
        return PF_ENOMEM;
    out->scratch = (char *)(out->nv + fields);
    return PF_OK;
}

void h2_fields_free(pf_h2_fields *f) {
    free(f->nv); /* the scratch space is in the same block */
    f->nv = NULL;
    f->scratch = NULL;
    f->count = 0;
}

static void add_field(pf_h2_fields *f, char *name, size_t name_len, const char *value,
                      size_t value_len) {
    f->nv[f->count++] =
        (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, name_len, value_len, NGHTTP2_NV_FLAG_NONE};
}

/* Writes v in decimal at dst (up to 20 bytes, no NUL); returns the length. */
static size_t u64_text(char *dst, uint64_t v) {
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t k = 0; k < n; k++)
        dst[k] = tmp[n - 1 - k];
    return n;
}

/* Copies `name` lower-cased to *pos and advances it. */
static char *lower_copy(char **pos, const char *name, size_t len) {
    char *start = *pos;
    for (size_t k = 0; k < len; k++)
        start[k] = (char)(name[k] >= 'A' && name[k] <= 'Z' ? name[k] + 32 : name[k]);
    *pos += len;
    return start;
}

typedef struct {
    pf_h2_fields *out;
    char **pos;
    pf_h2_edit_size size;
} edit_sink;

static void count_edit(void *arg, const char *name, const char *value, size_t len) {
    edit_sink *e = arg;
    e->size.lines++;
    e->size.bytes += strlen(name) + len;
}

static void copy_edit(void *arg, const char *name, const char *value, size_t len) {
    edit_sink *e = arg;
    size_t nlen = strlen(name);
    char *lname = lower_copy(e->pos, name, nlen);
    char *v = *e->pos;
    memcpy(v, value, len);
    *e->pos += len;
    add_field(e->out, lname, nlen, v, len);
}

pf_h2_edit_size h2_edits_size(const pf_config_header_edits *route,
                              const pf_config_header_edits *cluster, const pf_header_vars *vars) {
    edit_sink e = {0};
    http1_edit_lines(route, cluster, vars, count_edit, &e);
    return e.size;
}

void h2_fields_add_edits(pf_h2_fields *f, char **pos, const pf_config_header_edits *route,
                         const pf_config_header_edits *cluster, const pf_header_vars *vars) {
    edit_sink e = {.out = f, .pos = pos};
    http1_edit_lines(route, cluster, vars, copy_edit, &e);
}

int h2_response_fields(pf_h2_fields *out, const pf_head *resp, int status, bool has_length,
                       uint64_t content_length, const char *extra,
                       const pf_forward_response *edits) {
    memset(out, 0, sizeof *out);
    size_t lines = 0, extra_len = extra ? strlen(extra) : 0;
    for (size_t k = 0; k < extra_len; k++)
        lines += extra[k] == '\n';
    size_t head_count = resp ? resp->count : 0, head_bytes = resp ? resp->len : 0;
    pf_h2_edit_size edit = {0};
    if (edits)
        edit = h2_edits_size(edits->edits, edits->cluster_edits, edits->vars);
    /* Names and values are copied: trailers are sent after the upstream's head is gone. */
    if (h2_fields_alloc(out, head_count + lines + edit.lines + 2,
                        2 * head_bytes + extra_len + edit.bytes + 32) != PF_OK)
        return PF_ENOMEM;
    char *pos = out->scratch;
    if (status) {
        /* by hand: snprintf costs more than the rest of a small response's fields */
        pos[0] = (char)('0' + status / 100 % 10);
        pos[1] = (char)('0' + status / 10 % 10);
        pos[2] = (char)('0' + status % 10);
        add_field(out, ":status", 7, pos, 3);
        pos += 3;
    }
    for (size_t i = 0; i < head_count; i++) {
        if (http1_is_hop_by_hop(resp, i))
            continue; /* framing and connection-specific fields (RFC 9113 8.2.2) */
        if (edits && http1_edits_remove(edits->edits, edits->cluster_edits, resp, i))
            continue;
        char *name = lower_copy(&pos, http1_name(resp, i), resp->headers[i].name_len);
        char *value = pos;
        memcpy(value, http1_value(resp, i), resp->headers[i].value_len);
        pos += resp->headers[i].value_len;
        add_field(out, name, resp->headers[i].name_len, value, resp->headers[i].value_len);
    }
    if (edits)
        h2_fields_add_edits(out, &pos, edits->edits, edits->cluster_edits, edits->vars);
    if (has_length) {
        size_t n = u64_text(pos, content_length);
        add_field(out, "content-length", 14, pos, n);
        pos += n;
    }
    /* "Name: value\r\n" lines pilotfish adds. */
    const char *p = extra, *end = extra + extra_len;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon) {
            const char *v = colon + 1, *v_end = line_end;
            while (v < v_end && (*v == ' ' || *v == '\t'))
                v++;
            while (v_end > v && (v_end[-1] == '\r' || v_end[-1] == ' '))
                v_end--;
            char *name = lower_copy(&pos, p, (size_t)(colon - p));
            add_field(out, name, (size_t)(colon - p), v, (size_t)(v_end - v));
        }
        p = eol ? eol + 1 : end;
    }
    return PF_OK;
}

/* ---- streams -------------------------------------------------------------------------- */

static void flush(pf_h2_conn *h);
static int ws_prepare(h2_stream *st, bool end_stream);
static void ws_client_data(h2_stream *st, const uint8_t *data, size_t len);
static void ws_client_end(h2_stream *st);

static h2_stream *stream_get(pf_h2_conn *h, int32_t id) {
    return nghttp2_session_get_stream_user_data(h->session, id);
}

static void log_once(h2_stream *st) {
    if (st->logged)
        return;
    st->logged = true;
    exchange_log(&st->ex);
}

static void idle_timer(pf_h2_conn *h) {
    if (h->state != H2_OPEN)
        return;
    struct timeval tv = pf_timeval_ms(h->l->cfg->idle_timeout_ms);
    evtimer_add(h->timer, &tv);
}

/* Streams come and go by the thousand on a busy worker: a closed one is kept (zeroed but
 * for its request head's buffers) for the next, up to PF_H2_SPARE_STREAMS per worker, so
 * no connection holds any while idle. */
void h2_worker_free_spares(pf_worker *w) {
    while (w->h2_spare) {
        h2_stream *st = w->h2_spare;
        w->h2_spare = st->next;
        http1_head_free(&st->req);
        free(st);
    }
    w->h2_spare_count = 0;
}

static h2_stream *h2s_new(pf_h2_conn *h, int32_t id) {
    h2_stream *st = h->w->h2_spare;
    pf_head req;
    if (st) {
        h->w->h2_spare = st->next;
        h->w->h2_spare_count--;
        req = st->req;
        memset(st, 0, sizeof *st);
        http1_head_reset(&req);
        req.byte_limit = h->l->cfg->max_header_bytes;
        req.max_headers = h->l->cfg->max_headers;
    } else {
        st = calloc(1, sizeof *st);
        if (!st)
            return NULL;
        http1_head_init(&req, h->l->cfg->max_header_bytes, h->l->cfg->max_headers);
    }
    st->req = req;
    st->out = evbuffer_new();
    if (!st->out) {
        http1_head_free(&st->req);
        free(st);
        return NULL;
    }
    st->h = h;
    st->id = id;
    exchange_init(&st->ex, h->w, h->l, &downstream_h2_ops, st, h->client_ip);
    exchange_begin(&st->ex, &st->req);
    st->next = h->streams;
    if (h->streams)
        h->streams->prev = st;
    h->streams = st;
    if (h->stream_count++ == 0)
        evtimer_del(h->timer);
    return st;
}

/* The stream is gone (closed, reset, or the connection ends): a response cut short is
 * logged as such, and the exchange ends whatever attempt it had. */
static void ws_stream_gone(h2_stream *st);

static void h2s_free(h2_stream *st) {
    pf_h2_conn *h = st->h;
    if (st->ws)
        ws_stream_gone(st);
    if (!st->logged && st->ex.state == PF_EX_STREAMING) {
        exchange_abort(&st->ex);
        log_once(st);
    } else if (!st->logged && (st->ex.state == PF_EX_DONE || st->ex.state == PF_EX_ABORTED)) {
        log_once(st);
    }
    exchange_free(&st->ex);
    if (st->prev)
        st->prev->next = st->next;
    else
        h->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    if (--h->stream_count == 0)
        idle_timer(h);
    evbuffer_free(st->out);
    if (st->stall)
        event_free(st->stall);
    h2_fields_free(&st->trailers);
    if (st->ws_in)
        evbuffer_free(st->ws_in);
    if (st->ws_wrote)
        event_free(st->ws_wrote);
    free(st->cookie);
    free(st->authority);
    if (h->w->h2_spare_count < PF_H2_SPARE_STREAMS && st->req.cap <= PF_H2_SPARE_HEAD_BYTES) {
        st->next = h->w->h2_spare;
        h->w->h2_spare = st;
        h->w->h2_spare_count++;
        return;
    }
    http1_head_free(&st->req);
    free(st);
}

static void consume(h2_stream *st) {
    if (st->unconsumed == 0)
        return;
    nghttp2_session_consume_stream(st->h->session, st->id, st->unconsumed);
    st->unconsumed = 0;
    schedule_flush(st->h);
}

/* Takes what the request body needs of the stream's window back only as the upstream
 * takes the bytes: a slow upstream stalls its own stream and no other. */
static void consume_if_room(h2_stream *st) {
    if (st->ex.state == PF_EX_DONE || st->ex.state == PF_EX_ABORTED ||
        !exchange_request_blocked(&st->ex, st->h->l->cfg->buffer_bytes))
        consume(st);
}

static int add_field_to_head(pf_head *head, const char *n, size_t nlen, const char *v,
                             size_t vlen) {
    int rc = http1_head_append_name(head, n, nlen);
    if (rc == PF_OK)
        rc = http1_head_append_value(head, v, vlen);
    if (rc == PF_OK)
        rc = http1_head_finish_value(head);
    return rc;
}

/* Appends :authority as Host, once, after the target. */
static int store_authority(h2_stream *st) {
    if (!st->authority)
        return PF_OK;
    int rc = add_field_to_head(&st->req, "host", 4, st->authority, st->authority_len);
    free(st->authority);
    st->authority = NULL;
    return rc;
}

static void reply(h2_stream *st, int status, const char *body) {
    if (!st->ex.method)
        exchange_describe(&st->ex, st->has_method ? st->method : "-", NULL, 0, NULL, 0);
    exchange_reply(&st->ex, status, body, NULL);
}

/* The request's fields are complete: map them to an HTTP/1 head and start the exchange. */
static void dispatch(h2_stream *st, bool end_stream) {
    pf_h2_conn *h = st->h;
    st->started = true;
    if (!st->error_status && store_authority(st) != PF_OK)
        st->error_status = 431;
    if (st->error_status == 431)
        count_error(h, PF_H2_ERR_HEADER_LIST);
    if (st->error_status) {
        reply(st, st->error_status,
              st->error_status == 431 ? "request header fields too large\n" : "bad request\n");
        return;
    }
    if (st->cookie_len > 0 &&
        add_field_to_head(&st->req, "cookie", 6, st->cookie, st->cookie_len) != PF_OK) {
        count_error(h, PF_H2_ERR_HEADER_LIST);
        reply(st, 431, "request header fields too large\n");
        return;
    }
    if (st->protocol[0] && ws_prepare(st, end_stream) != PF_OK)
        return; /* answered */
    if (strcmp(st->method, "CONNECT") == 0) {
        reply(st, 405,
              "CONNECT over HTTP/2 is not supported (HTTP/1.1 CONNECT to a known service is): "
              "pilotfish is not an open proxy\n");
        return;
    }
    st->head_request = strcmp(st->method, "HEAD") == 0;
    pf_target t;
    if (!st->has_path || http1_parse_target(http1_first(&st->req), st->req.first_len,
                                            strcmp(st->method, "OPTIONS") == 0, &t) != PF_OK) {
        reply(st, 400, "bad request target\n");
        return;
    }
    const char *authority = NULL;
    size_t authority_len = 0;
    long host = http1_find(&st->req, "host", NULL);
    if (host >= 0) {
        authority = http1_value(&st->req, (size_t)host);
        authority_len = st->req.headers[host].value_len;
    }
    exchange_describe(&st->ex, st->method, authority, authority_len, t.path, t.path_len);
    char hostname[PF_HOST_MAX] = "";
    int port = -1;
    if (authority_len > 0 &&
        router_parse_authority(authority, authority_len, hostname, sizeof hostname, &port) != 0) {
        reply(st, 400, "bad authority\n");
        return;
    }
    if (h->bound_host) { /* inside a CONNECT tunnel: routed as the authority it named */
        snprintf(hostname, sizeof hostname, "%s", h->bound_host);
        port = h->bound_port;
    }
    pf_body_mode body = end_stream || st->ws ? PF_BODY_NONE
                        : st->has_length ? http1_request_body_mode(false, true, st->content_length)
                                         : PF_BODY_CHUNKED; /* an HTTP/1 upstream needs framing */
    pf_exchange_request req = {
        .head = &st->req,
        .fwd =
            {
                .method = st->method,
                .target = t.target,
                .target_len = t.target_len,
                .root_first = t.root_first,
                .host = authority ? authority : "",
                .host_len = authority_len,
                .client_ip = h->client_ip,
                .proto = h->tls ? "https" : "http",
                .client_cert = h->client_cert,
                .body = body,
                .content_length = st->content_length,
            },
    };
    if (st->ws) {
        req.fwd.upgrade = st->protocol;
        req.fwd.upgrade_len = strlen(st->protocol);
        req.websocket_key = st->ws_key;
    }
    exchange_start(&st->ex, &req, hostname, port);
    /* The GET that opens the WebSocket upstream has no body: what the client sends on the
     * stream is the tunnel's. */
    if (st->ws && st->ex.state != PF_EX_DONE && st->ex.state != PF_EX_ABORTED)
        exchange_request_end(&st->ex);
}

/* ---- nghttp2 callbacks ---------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *arg) {
    pf_h2_conn *h = arg;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    /* nghttp2 refuses streams past the advertised limit once the client acknowledged our
     * SETTINGS; before that, this bound keeps the count (and memory) where we said. */
    if (h->stream_count >= PF_H2_MAX_STREAMS || h->state != H2_OPEN) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    h2_stream *st = h2s_new(h, frame->hd.stream_id);
    if (!st)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM INTERNAL_ERROR */
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, st);
    return 0;
}

static void ds_abort(void *ds);

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *arg) {
    pf_h2_conn *h = arg;
    h2_stream *st = stream_get(h, frame->hd.stream_id);
    if (st && st->started && frame->headers.cat == NGHTTP2_HCAT_HEADERS &&
        st->ex.state != PF_EX_DONE && st->ex.state != PF_EX_ABORTED) {
        /* The request's trailers (RFC 9113 8.1): kept by the exchange for the upstream, with
         * limits of their own. Past them the request is not sent on without some of its
         * fields: as for HTTP/1, a 400 when no response has started, else the stream is
         * reset; the attempt ends unfinished either way. */
        if (exchange_request_trailer(&st->ex, (const char *)name, namelen, (const char *)value,
                                     valuelen) == PF_ELIMIT) {
            exchange_request_trailers_too_large(&st->ex);
            if (st->ex.state == PF_EX_STREAMING) {
                exchange_abort(&st->ex);
                ds_abort(st);
            } else if (st->ex.state != PF_EX_TUNNEL) {
                exchange_reply(&st->ex, 400,
                               "request trailers over the listener's max_header_bytes or "
                               "max_headers\n",
                               NULL);
            }
        }
        return 0;
    }
    if (!st || st->started || st->error_status)
        return 0;
    const char *n = (const char *)name, *v = (const char *)value;
    int rc = PF_OK;
    pf_h2_field kind = h2_request_field(n, namelen, v, valuelen);
    if (kind != PF_H2_FIELD_METHOD && kind != PF_H2_FIELD_PATH && kind != PF_H2_FIELD_AUTHORITY &&
        kind != PF_H2_FIELD_SCHEME)
        rc = store_authority(st); /* the pseudo-header fields are over (RFC 9113 8.3) */
    if (rc != PF_OK) {
        st->error_status = 431;
        return 0;
    }
    switch (kind) {
    case PF_H2_FIELD_METHOD:
        if (valuelen >= sizeof st->method) {
            st->error_status = 400;
            return 0;
        }
        memcpy(st->method, v, valuelen);
        st->method[valuelen] = '\0';
        st->has_method = true;
        break;
    case PF_H2_FIELD_PATH:
        if (valuelen > h->l->cfg->max_target_bytes) {
            st->error_status = 414;
            return 0;
        }
        rc = http1_head_append_first(&st->req, v, valuelen);
        st->has_path = true;
        break;
    case PF_H2_FIELD_AUTHORITY:
        /* Becomes Host, which is what the HTTP/1 upstream is sent; kept aside when :path
         * may still follow, since the head stores the target first. */
        if (st->has_path && !st->has_authority) {
            rc = add_field_to_head(&st->req, "host", 4, v, valuelen);
            st->has_authority = true;
            break;
        }
        free(st->authority);
        st->authority = malloc(valuelen + 1);
        if (!st->authority || valuelen > h->l->cfg->max_header_bytes) {
            rc = PF_ELIMIT;
            break;
        }
        memcpy(st->authority, v, valuelen);
        st->authority_len = valuelen;
        st->has_authority = true;
        break;
    case PF_H2_FIELD_HOST:
        if (!st->has_authority) /* RFC 9113 8.3.1: :authority wins over Host */
            rc = add_field_to_head(&st->req, "host", 4, v, valuelen);
        break;
    case PF_H2_FIELD_COOKIE:
        if (!st->cookie)
            st->cookie = malloc(h->l->cfg->max_header_bytes);
        rc = st->cookie ? h2_cookie_append(st->cookie, h->l->cfg->max_header_bytes, &st->cookie_len,
                                           v, valuelen)
                        : PF_ELIMIT;
        break;
    case PF_H2_FIELD_PROTOCOL:
        /* nghttp2 accepts it only because we sent SETTINGS_ENABLE_CONNECT_PROTOCOL */
        if (valuelen == 0 || valuelen >= sizeof st->protocol) {
            st->error_status = 400;
            return 0;
        }
        memcpy(st->protocol, v, valuelen);
        st->protocol[valuelen] = '\0';
        break;
    case PF_H2_FIELD_SCHEME:
    case PF_H2_FIELD_DROP:
        break;
    case PF_H2_FIELD_KEEP:
        if (st->protocol[0] && name_eq(n, namelen, "sec-websocket-key"))
            break; /* RFC 8441 5: not used over HTTP/2; the upstream gets pilotfish's own */
        if (name_eq(n, namelen, "content-length")) {
            /* nghttp2 checked the syntax and checks the DATA against it. */
            st->content_length = strtoull(v, NULL, 10);
            st->has_length = true;
        }
        rc = add_field_to_head(&st->req, n, namelen, v, valuelen);
        break;
    }
    if (rc != PF_OK)
        st->error_status = 431; /* bounded by max_header_bytes and max_headers */
    return 0;
}

/* The client broke the protocol or a limit: GOAWAY with `code` (RFC 9113 5.4.1), no more
 * input is read, and the connection closes once the GOAWAY is out or after PF_LINGER_MS
 * (a client that does not read does not hold it open). Counted once per connection. */
static void fail_connection(pf_h2_conn *h, pf_h2_error why, uint32_t code) {
    if (h->state == H2_FAILED)
        return;
    log_debug("h2 connection refused client=%s reason=%d code=%u", h->client_ip, (int)why,
              (unsigned)code);
    count_error(h, why);
    h2_set_state(h, H2_FAILED);
    nghttp2_session_terminate_session(h->session, code);
    struct timeval tv = pf_timeval_ms(PF_LINGER_MS);
    evtimer_add(h->timer, &tv);
    schedule_flush(h);
}

/* Whether one more frame of a kind goes past `limit` per interval. */
static bool over_rate(h2_rate *r, unsigned limit) {
    uint64_t now = pf_now_ms();
    if (now - r->start_ms >= PF_H2_RESET_INTERVAL_MS) {
        r->start_ms = now;
        r->count = 0;
    }
    return ++r->count > limit;
}

/* Rapid reset (CVE-2023-44487): streams opened and cancelled at once cost us an exchange
 * each; SETTINGS and PING floods cost an ACK each (RFC 9113 10.5). Past the limits the
 * client is told to calm down and the connection ends. */
static void count_control(pf_h2_conn *h, const nghttp2_frame *frame) {
    if (frame->hd.type == NGHTTP2_RST_STREAM && over_rate(&h->resets, PF_H2_RESET_LIMIT))
        fail_connection(h, PF_H2_ERR_RAPID_RESET, NGHTTP2_ENHANCE_YOUR_CALM);
    bool ack = frame->hd.flags & NGHTTP2_FLAG_ACK;
    if (frame->hd.type == NGHTTP2_SETTINGS && !ack && over_rate(&h->settings, PF_H2_CONTROL_LIMIT))
        fail_connection(h, PF_H2_ERR_SETTINGS_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
    if (frame->hd.type == NGHTTP2_PING && !ack && over_rate(&h->pings, PF_H2_CONTROL_LIMIT))
        fail_connection(h, PF_H2_ERR_PING_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *arg) {
    pf_h2_conn *h = arg;
    if (frame->hd.type == NGHTTP2_RST_STREAM || frame->hd.type == NGHTTP2_SETTINGS ||
        frame->hd.type == NGHTTP2_PING) {
        count_control(h, frame);
        return 0;
    }
    h2_stream *st = stream_get(h, frame->hd.stream_id);
    if (!st)
        return 0;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (frame->hd.type == NGHTTP2_HEADERS && !st->started)
        dispatch(st, end);
    if (st->ws) {
        if (end && (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA))
            ws_client_end(st);
        return 0;
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) && end &&
        st->ex.state != PF_EX_DONE && st->ex.state != PF_EX_ABORTED)
        exchange_request_end(&st->ex);
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *arg) {
    pf_h2_conn *h = arg;
    /* The connection's window is returned at once: the streams' windows bound it. */
    nghttp2_session_consume_connection(session, len);
    h2_stream *st = stream_get(h, id);
    if (!st)
        return 0;
    if (st->ws) {
        ws_client_data(st, data, len);
        return 0;
    }
    st->unconsumed += len;
    if (st->ex.state != PF_EX_DONE && st->ex.state != PF_EX_ABORTED)
        exchange_request_body(&st->ex, (const char *)data, len);
    consume_if_room(st);
    return 0;
}

/* What nghttp2 refused on its own (RFC 9113 8.1.1 malformed streams, 5.1.2 streams past
 * the limit, connection errors) shows in what goes out: counted there, with ours. */
static void count_sent_error(pf_h2_conn *h, const nghttp2_frame *frame) {
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        if (frame->rst_stream.error_code == NGHTTP2_PROTOCOL_ERROR)
            count_error(h, PF_H2_ERR_MALFORMED_STREAM);
        else if (frame->rst_stream.error_code == NGHTTP2_REFUSED_STREAM && h->state == H2_OPEN)
            count_error(h, PF_H2_ERR_REFUSED_STREAM);
    } else if (frame->hd.type == NGHTTP2_GOAWAY && h->state != H2_FAILED &&
               frame->goaway.error_code != NGHTTP2_NO_ERROR) {
        count_error(h, PF_H2_ERR_PROTOCOL); /* ours went through fail_connection */
    }
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *arg) {
    pf_h2_conn *h = arg;
    count_sent_error(h, frame);
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    h2_stream *st = stream_get(h, frame->hd.stream_id);
    /* RFC 9113 8.1: a complete response to a request still sending its body ends the
     * stream with NO_ERROR, so the client stops sending. */
    if (st && (!st->ex.request_complete || (st->ws && !st->ws_tunnel && !st->ws_client_eof)))
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *arg) {
    pf_h2_conn *h = arg;
    h2_stream *st = stream_get(h, id);
    if (st) {
        nghttp2_session_set_stream_user_data(session, id, NULL);
        h2s_free(st);
    }
    return 0;
}

static ssize_t read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *arg) {
    h2_stream *st = source->ptr;
    int n = evbuffer_remove(st->out, buf, length);
    if (n < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t left = evbuffer_get_length(st->out);
    if (left == 0 && st->eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        /* Trailers end the stream instead of this DATA frame (RFC 9113 8.1). */
        if (st->trailers.count > 0 &&
            nghttp2_submit_trailer(session, id, st->trailers.nv, st->trailers.count) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        h2_fields_free(&st->trailers);
    } else if (n == 0)
        return NGHTTP2_ERR_DEFERRED;
    if (st->ws_tunnel && n > 0)
        event_active(st->ws_wrote, 0, 0); /* the upstream side may send again */
    if (st->waiting_output && left <= st->h->l->cfg->buffer_bytes / 2) {
        st->waiting_output = false;
        evtimer_del(st->stall);
        st->wake = st->h->wake = true;
    }
    return n;
}

/* ---- downstream ops: one stream each ----------------------------------------------------- */

/* `body`: DATA (or trailers) follow; without, HEADERS ends the stream, which is what a
 * gRPC trailers-only response must look like. */
static int submit(h2_stream *st, const pf_head *resp, int status, bool has_length, uint64_t length,
                  const char *extra, const pf_forward_response *edits, bool body) {
    pf_h2_fields f;
    if (h2_response_fields(&f, resp, status, has_length, length, extra, edits) != PF_OK)
        return PF_ENOMEM;
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_body};
    int rc = nghttp2_submit_response(st->h->session, st->id, f.nv, f.count, body ? &dp : NULL);
    h2_fields_free(&f);
    schedule_flush(st->h);
    return rc == 0 ? PF_OK : PF_ENOMEM;
}

static int ds_send_head(void *ds, const pf_head *resp, int status, pf_body_mode upstream_body,
                        uint64_t content_length, bool *skip_body) {
    h2_stream *st = ds;
    pf_response_framing f = http1_response_framing(st->head_request, status, upstream_body, 1);
    *skip_body = f.skip_body;
    bool has_length = f.head_body == PF_BODY_LENGTH && status != 204;
    /* The route's and the weighted cluster's response_headers, as for HTTP/1 clients. */
    pf_forward_response edits = {.edits = exchange_response_edits(&st->ex),
                                 .cluster_edits = route_actions_response_edits(&st->ex),
                                 .vars = exchange_header_vars(&st->ex)};
    return submit(st, resp, status, has_length, content_length, NULL, &edits,
                  upstream_body != PF_BODY_NONE);
}

static void ds_send_interim(void *ds, const pf_head *resp, int status) {
    h2_stream *st = ds;
    if (status == 101)
        return; /* RFC 9113 8.6: no upgrades in HTTP/2 */
    pf_h2_fields f;
    if (h2_response_fields(&f, resp, status, false, 0, NULL, NULL) != PF_OK)
        return;
    nghttp2_submit_headers(st->h->session, NGHTTP2_FLAG_NONE, st->id, NULL, f.nv, f.count, NULL);
    h2_fields_free(&f);
    schedule_flush(st->h);
}

static void ds_send_body(void *ds, const char *at, size_t len) {
    h2_stream *st = ds;
    evbuffer_add(st->out, at, len);
    nghttp2_session_resume_data(st->h->session, st->id);
    schedule_flush(st->h);
}

static void ds_send_end(void *ds) {
    h2_stream *st = ds;
    st->eof = true;
    log_once(st);
    consume(st); /* the rest of an unfinished request body is not read */
    nghttp2_session_resume_data(st->h->session, st->id);
    schedule_flush(st->h);
}

static void ds_reply(void *ds, int status, const char *body, const char *extra_headers) {
    h2_stream *st = ds;
    if (!body) {
        /* No body: one HEADERS frame ends the stream (gRPC's trailers-only response). */
        log_once(st);
        if (submit(st, NULL, status, false, 0, extra_headers, NULL, false) != PF_OK)
            nghttp2_submit_rst_stream(st->h->session, NGHTTP2_FLAG_NONE, st->id,
                                      NGHTTP2_INTERNAL_ERROR);
        consume(st);
        return;
    }
    size_t len = strlen(body);
    char extra[512 + PF_LOCATION_MAX]; /* room for a redirect's Location */
    snprintf(extra, sizeof extra, "%s%s",
             http1_lines_have_content_type(extra_headers) ? "" : "content-type: text/plain\r\n",
             extra_headers ? extra_headers : "");
    evbuffer_add(st->out, body, len);
    st->eof = true;
    log_once(st);
    if (submit(st, NULL, status, true, len, extra, NULL, true) != PF_OK)
        nghttp2_submit_rst_stream(st->h->session, NGHTTP2_FLAG_NONE, st->id,
                                  NGHTTP2_INTERNAL_ERROR);
    consume(st); /* nobody reads the rest of the request body */
}

static void ds_abort(void *ds) {
    h2_stream *st = ds;
    log_once(st);
    /* Only this stream is cut; the connection and its other streams go on. */
    nghttp2_submit_rst_stream(st->h->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    schedule_flush(st->h);
}

static bool ds_output_full(const void *ds) {
    const h2_stream *st = ds;
    return evbuffer_get_length(st->out) >= st->h->l->cfg->buffer_bytes;
}

/* A client that stops reading one stream (a zero window) holds an upstream connection
 * and buffer_bytes: after the listener's body_timeout without progress that stream is
 * cut, as an HTTP/1 connection would be. */
static void on_stall(evutil_socket_t fd, short what, void *arg) {
    h2_stream *st = arg;
    if (st->ex.state != PF_EX_STREAMING)
        return;
    log_debug("h2 client stopped reading a stream client=%s stream=%d", st->h->client_ip,
              (int)st->id);
    count_error(st->h, PF_H2_ERR_STALLED_STREAM);
    exchange_abort(&st->ex);
    log_once(st);
    nghttp2_submit_rst_stream(st->h->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    flush(st->h); /* may free the connection; nothing after this */
}

static void ds_wait_for_output(void *ds) {
    h2_stream *st = ds;
    st->waiting_output = true;
    if (!st->stall)
        st->stall = evtimer_new(st->h->w->base, on_stall, st);
    if (st->stall && !evtimer_pending(st->stall, NULL)) {
        struct timeval tv = pf_timeval_ms(st->h->l->cfg->body_timeout_ms);
        evtimer_add(st->stall, &tv);
    }
}

static void ds_send_trailers(void *ds, const pf_head *trailers) {
    h2_stream *st = ds;
    h2_fields_free(&st->trailers);
    if (h2_response_fields(&st->trailers, trailers, 0, false, 0, NULL, NULL) != PF_OK)
        h2_fields_free(&st->trailers); /* cut to what fits: the body still ends */
}

static void ds_request_writable(void *ds, bool after_retry) {
    consume_if_room(ds);
}

/* ---- extended CONNECT (RFC 8441): a WebSocket on a stream ---------------------------------
 *
 * A stream with :method CONNECT and :protocol websocket is routed and sent upstream as the
 * HTTP/1.1 handshake (GET, Upgrade, pilotfish's own Sec-WebSocket-Key); the upstream's 101
 * becomes :status 200 and the stream one side of a tunnel (tunnel.c): the client's DATA is its
 * input, its response body buffer `out` its output, END_STREAM its half-close. Backpressure:
 * the client's window is returned only as its bytes move upstream (ws_in_drained), and the
 * upstream stops being read while `out` holds buffer_bytes. */

static int ws_refuse(h2_stream *st, int status, const char *body) {
    reply(st, status, body);
    return PF_EINVAL;
}

static void ws_in_drained(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg) {
    h2_stream *st = arg;
    if (info->n_deleted == 0 || st->ws_closing)
        return;
    nghttp2_session_consume_stream(st->h->session, st->id, info->n_deleted);
    schedule_flush(st->h);
}

static void ws_out_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg) {
    h2_stream *st = arg;
    if (info->n_added == 0 || st->ws_closing)
        return;
    nghttp2_session_resume_data(st->h->session, st->id);
    schedule_flush(st->h);
}

/* DATA left the stream's buffer: the upstream side may send again. */
static void ws_on_wrote(evutil_socket_t fd, short what, void *arg) {
    h2_stream *st = arg;
    if (st->ex.state == PF_EX_TUNNEL)
        tunnel_on_write(exchange_tunnel(&st->ex), PF_TUNNEL_CLIENT);
}

/* The fields are in: turns the CONNECT into the GET an HTTP/1.1 WebSocket starts with, or
 * answers it. Returns PF_OK to go on routing it. */
static int ws_prepare(h2_stream *st, bool end_stream) {
    pf_h2_conn *h = st->h;
    if (strcmp(st->method, "CONNECT") != 0)
        return ws_refuse(st, 400, ":protocol is for CONNECT only\n");
    if (end_stream)
        return ws_refuse(st, 400, "an extended CONNECT keeps its stream open\n");
    if (!st->has_path || !st->has_authority)
        return ws_refuse(st, 400, "an extended CONNECT needs :path and :authority\n");
    st->ws_in = evbuffer_new();
    st->ws_wrote = event_new(h->w->base, -1, 0, ws_on_wrote, st);
    if (!st->ws_in || !st->ws_wrote)
        return ws_refuse(st, 503, "out of memory\n");
    websocket_key(worker_random(h->w), worker_random(h->w), st->ws_key);
    int rc = add_field_to_head(&st->req, "sec-websocket-key", 17, st->ws_key, PF_WS_KEY_LEN);
    /* RFC 8441 5 has the client send it; an HTTP/1.1 server needs it (RFC 6455 4.1). */
    if (rc == PF_OK && http1_find(&st->req, "sec-websocket-version", NULL) < 0)
        rc = add_field_to_head(&st->req, "sec-websocket-version", 21, "13", 2);
    if (rc != PF_OK) {
        count_error(h, PF_H2_ERR_HEADER_LIST);
        return ws_refuse(st, 431, "request header fields too large\n");
    }
    st->ws = true;
    memcpy(st->method, "GET", 4); /* routed and sent as an HTTP/1.1 client's handshake */
    evbuffer_add_cb(st->ws_in, ws_in_drained, st);
    return PF_OK;
}

static void ws_client_data(h2_stream *st, const uint8_t *data, size_t len) {
    if (st->ex.state == PF_EX_DONE || st->ex.state == PF_EX_ABORTED ||
        evbuffer_add(st->ws_in, data, len) != 0) {
        /* answered without a tunnel, or the tunnel is over: nobody takes these bytes */
        nghttp2_session_consume_stream(st->h->session, st->id, len);
        schedule_flush(st->h);
        return;
    }
    /* Before the upstream's answer the bytes wait, bounded by the stream's window. */
    if (st->ex.state == PF_EX_TUNNEL)
        tunnel_on_read(exchange_tunnel(&st->ex), PF_TUNNEL_CLIENT);
}

static void ws_client_end(h2_stream *st) {
    st->ws_client_eof = true;
    if (st->ex.state == PF_EX_TUNNEL)
        tunnel_on_event(exchange_tunnel(&st->ex), PF_TUNNEL_CLIENT, PF_STREAM_EOF, 0);
}

/* nghttp2 closed the stream (or the connection ends) while it may still be a tunnel. */
static void ws_stream_gone(h2_stream *st) {
    st->ws_closing = true;
    if (st->ex.state == PF_EX_TUNNEL)
        tunnel_close(exchange_tunnel(&st->ex),
                     st->ws_client_eof ? "client closed the stream" : "client reset the stream");
}

static struct evbuffer *ws_input(void *end) {
    return ((h2_stream *)end)->ws_in;
}

static struct evbuffer *ws_output(void *end) {
    return ((h2_stream *)end)->out;
}

static void ws_flush(void *end) {
    /* Nothing to do: ws_out_added wakes the stream's DATA on every add to its buffer. */
}

static void ws_read_enable(void *end, bool enable) {
    /* Nothing to switch: the stream's window is returned only as bytes move on. */
}

static void ws_shutdown_write(void *end) {
    h2_stream *st = end;
    st->eof = true; /* END_STREAM once `out` is sent (read_body) */
    nghttp2_session_resume_data(st->h->session, st->id);
    schedule_flush(st->h);
}

static const pf_tunnel_end_ops ws_end_ops = {
    .input = ws_input,
    .output = ws_output,
    .flush = ws_flush,
    .read_enable = ws_read_enable,
    .shutdown_write = ws_shutdown_write,
};

static void *ws_send_upgrade_end(void *ds, const pf_head *resp, const pf_tunnel_end_ops **ops,
                                 bool *client_eof) {
    h2_stream *st = ds;
    if (!st->ws)
        return NULL;
    pf_forward_response edits = {.edits = exchange_response_edits(&st->ex),
                                 .cluster_edits = route_actions_response_edits(&st->ex),
                                 .vars = exchange_header_vars(&st->ex)};
    pf_h2_fields f;
    if (h2_response_fields(&f, resp, 200, false, 0, NULL, &edits) != PF_OK)
        return NULL;
    /* RFC 8441 5: the key and its accept are not used over HTTP/2 (the 101's Upgrade and
     * Connection are connection-specific and already left out). */
    size_t kept = 0;
    for (size_t i = 0; i < f.count; i++)
        if (!name_eq((const char *)f.nv[i].name, f.nv[i].namelen, "sec-websocket-accept"))
            f.nv[kept++] = f.nv[i];
    f.count = kept;
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_body};
    int rc = nghttp2_submit_response(st->h->session, st->id, f.nv, f.count, &dp);
    h2_fields_free(&f);
    if (rc != 0)
        return NULL;
    st->ws_tunnel = true;
    evbuffer_add_cb(st->out, ws_out_added, st);
    schedule_flush(st->h);
    *ops = &ws_end_ops;
    *client_eof = st->ws_client_eof;
    return st;
}

/* The tunnel is over and logged: both sides ended, the stream ends as the tunnel did;
 * otherwise (idle timeout, the upstream failed) it is cancelled. */
static void ws_close(void *ds) {
    h2_stream *st = ds;
    st->logged = true;
    if (st->ws_closing)
        return;
    if (st->eof && st->ws_client_eof)
        nghttp2_session_resume_data(st->h->session, st->id);
    else
        nghttp2_submit_rst_stream(st->h->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    schedule_flush(st->h);
}

const pf_downstream_ops downstream_h2_ops = {
    .send_head = ds_send_head,
    .send_interim = ds_send_interim,
    .send_body = ds_send_body,
    .send_end = ds_send_end,
    .reply = ds_reply,
    .abort = ds_abort,
    .output_full = ds_output_full,
    .wait_for_output = ds_wait_for_output,
    .request_writable = ds_request_writable,
    .send_trailers = ds_send_trailers,
    .send_upgrade_end = ws_send_upgrade_end,
    .close = ws_close,
};

/* ---- the connection ------------------------------------------------------------------------ */

/* Moves what nghttp2 has to send into the socket's output, up to buffer_bytes (the rest
 * waits in the streams' buffers and nghttp2's queue until the client reads), wakes the
 * streams that waited for room, and closes the connection once nothing is left to do. */
static void flush(pf_h2_conn *h) {
    struct evbuffer *out = stream_output(h->s);
    size_t limit = h->l->cfg->buffer_bytes, queued = evbuffer_get_length(out);
    /* nghttp2 hands out one frame at a time, and a busy connection has dozens per round
     * (HEADERS and DATA of every finished stream): they are copied into one reserved extent
     * of the output and committed together, one buffer operation instead of one per frame. */
    struct evbuffer_iovec batch = {0};
    size_t used = 0;
    while (queued + used < limit) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->session, &data);
        if (n < 0) {
            log_debug("h2 send failed client=%s error=\"%s\"", h->client_ip,
                      nghttp2_strerror((int)n));
            conn_free(h->conn);
            return;
        }
        if (n == 0)
            break;
        if (used + (size_t)n > batch.iov_len) {
            if (batch.iov_base) {
                batch.iov_len = used;
                evbuffer_commit_space(out, &batch, 1);
                batch = (struct evbuffer_iovec){0};
                queued += used;
                used = 0;
            }
            if ((size_t)n >= PF_H2_SEND_BATCH ||
                evbuffer_reserve_space(out, PF_H2_SEND_BATCH, &batch, 1) < 1) {
                batch = (struct evbuffer_iovec){0};
                evbuffer_add(out, data, (size_t)n); /* a large DATA frame: as it is */
                queued += (size_t)n;
                continue;
            }
        }
        memcpy((char *)batch.iov_base + used, data, (size_t)n);
        used += (size_t)n;
    }
    if (batch.iov_base) {
        batch.iov_len = used;
        evbuffer_commit_space(out, &batch, 1);
    }
    stream_flush(h->s);
    if (h->wake) {
        h->wake = false;
        for (h2_stream *st = h->streams; st; st = st->next) {
            if (st->wake) {
                st->wake = false;
                exchange_downstream_writable(&st->ex);
            }
        }
    }
    if (h->lingering || nghttp2_session_want_read(h->session) ||
        nghttp2_session_want_write(h->session) || evbuffer_get_length(out) > 0)
        return;
    if (h->state == H2_FAILED) {
        /* Closing at once with the client's frames unread would reset the connection, and a
         * reset can destroy the GOAWAY before the client reads why: shut our side and drop
         * its input until it closes or the linger timer (armed when it failed) fires. */
        h->lingering = true;
        stream_shutdown_write(h->s);
        evbuffer_drain(stream_input(h->s), evbuffer_get_length(stream_input(h->s)));
        stream_read_needed(h->s, true);
        stream_read_enable(h->s, true);
        return;
    }
    conn_free(h->conn);
}

static void on_flush(evutil_socket_t fd, short what, void *arg) {
    flush(arg);
}

void h2_conn_on_read(pf_h2_conn *h) {
    struct evbuffer *in = stream_input(h->s);
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec vec;
        if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
            break;
        if (h->state == H2_FAILED) { /* nothing more is read from a client that broke it */
            evbuffer_drain(in, evbuffer_get_length(in));
            break;
        }
        ssize_t n = nghttp2_session_mem_recv(h->session, vec.iov_base, vec.iov_len);
        if (n < 0) {
            log_debug("h2 receive failed client=%s error=\"%s\"", h->client_ip,
                      nghttp2_strerror((int)n));
            if (n == NGHTTP2_ERR_NOMEM || n == NGHTTP2_ERR_CALLBACK_FAILURE) {
                conn_free(h->conn);
                return;
            }
            /* The session keeps its output side: the GOAWAY says why (RFC 9113 5.4.1). */
            if (n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
                fail_connection(h, PF_H2_ERR_CONTINUATION_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
            else if (n == NGHTTP2_ERR_FLOODED)
                fail_connection(h, PF_H2_ERR_UNREAD_ACKS, NGHTTP2_ENHANCE_YOUR_CALM);
            else
                fail_connection(h, PF_H2_ERR_PROTOCOL, NGHTTP2_PROTOCOL_ERROR);
            continue;
        }
        evbuffer_drain(in, (size_t)n);
    }
    flush(h);
}

uint64_t h2_conn_oldest_start_us(const pf_h2_conn *h) {
    uint64_t oldest = 0;
    for (const h2_stream *st = h->streams; st; st = st->next)
        if (st->started && st->ex.start_us && (!oldest || st->ex.start_us < oldest))
            oldest = st->ex.start_us;
    return oldest;
}

void h2_conn_on_write(pf_h2_conn *h) {
    flush(h);
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
    pf_h2_conn *h = arg;
    if (h->state == H2_FAILED) {
        conn_free(h->conn); /* the client did not take its GOAWAY in time */
        return;
    }
    if (h->state == H2_OPEN) {
        /* Idle without streams: say goodbye properly, then close once that is out. */
        h2_set_state(h, H2_GOAWAY);
        nghttp2_session_terminate_session(h->session, NGHTTP2_NO_ERROR);
    } else if (h->state == H2_NOTICE) {
        /* The client had a round trip to see the notice: streams it opened meanwhile
         * are served, later ones are not. */
        h2_set_state(h, H2_GOAWAY);
        nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(h->session), NGHTTP2_NO_ERROR,
                              NULL, 0);
    }
    flush(h);
}

void h2_conn_drain(pf_h2_conn *h) {
    if (h->state != H2_OPEN)
        return;
    h2_set_state(h, H2_NOTICE);
    nghttp2_submit_shutdown_notice(h->session);
    struct timeval tv = pf_timeval_ms(PF_H2_DRAIN_NOTICE_MS);
    evtimer_add(h->timer, &tv);
    schedule_flush(h);
}

pf_h2_conn *h2_conn_new(pf_conn *conn, pf_worker *w, pf_listener_rt *l, pf_stream *s,
                        const char *client_ip, const char *bound_host, int bound_port) {
    pf_h2_conn *h = calloc(1, sizeof *h);
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    if (!h)
        return NULL;
    h->conn = conn;
    h->w = w;
    h->l = l;
    h->s = s;
    h->client_ip = client_ip;
    h->bound_host = bound_host;
    h->bound_port = bound_port;
    h->resets.start_ms = h->settings.start_ms = h->pings.start_ms = pf_now_ms();
    SSL *ssl = stream_ssl(s);
    if (ssl) {
        h->tls = true;
        h->client_cert = tls_client_cert_header(ssl); /* fixed: no renegotiation */
    }
    h->flush_ev = event_new(w->base, -1, 0, on_flush, h);
    h->timer = evtimer_new(w->base, on_timer, h);
    if (!h->flush_ev || !h->timer || nghttp2_session_callbacks_new(&cbs) != 0 ||
        nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    /* CVE-2024-27316: a header block may not go on in CONTINUATION frames for ever. */
    nghttp2_option_set_max_continuations(opt, PF_H2_MAX_CONTINUATIONS);
    /* conn.c's llhttp consumed the preface; window updates follow the upstream's pace. */
    nghttp2_option_set_no_recv_client_magic(opt, 1);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    if (nghttp2_session_server_new2(&h->session, cbs, h, opt) != 0)
        goto fail;
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    cbs = NULL;
    opt = NULL;
    /* Each stream may hold buffer_bytes of request body not yet taken upstream; the
     * connection's window covers all streams at once, so one slow stream stalls only
     * itself. */
    uint32_t window = (uint32_t)l->cfg->buffer_bytes;
    uint64_t conn_window = (uint64_t)window * PF_H2_MAX_STREAMS;
    if (conn_window > 0x7fffffffu)
        conn_window = 0x7fffffffu;
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, PF_H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, l->cfg->max_header_bytes},
        /* RFC 9218: no priority tree, so closed streams are not kept around for it */
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
        /* RFC 8441: clients may open WebSockets with an extended CONNECT */
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    if (nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, settings,
                                sizeof settings / sizeof settings[0]) != 0 ||
        nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)conn_window) != 0)
        goto fail;
    idle_timer(h);
    return h;
fail:
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    h2_conn_free(h);
    return NULL;
}

void h2_conn_free(pf_h2_conn *h) {
    if (!h)
        return;
    while (h->streams) {
        h2_stream *st = h->streams;
        if (h->session)
            nghttp2_session_set_stream_user_data(h->session, st->id, NULL);
        h2s_free(st);
    }
    nghttp2_session_del(h->session);
    if (h->flush_ev)
        event_free(h->flush_ev);
    if (h->timer)
        event_free(h->timer);
    free(h->client_cert);
    free(h);
}
