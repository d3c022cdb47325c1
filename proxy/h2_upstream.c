/* The HTTP/2 upstream codec (clusters[].protocol "h2", or "downstream" for HTTP/2
 * clients): per worker and cluster, connections to each endpoint (prior knowledge in
 * plaintext, ALPN "h2" with the cluster's TLS), each
 * carrying up to the peer's SETTINGS_MAX_CONCURRENT_STREAMS streams at once; one stream is
 * one attempt of an exchange, driven through upstream_h2_ops.
 *
 * Reentrancy: exchange calls made from nghttp2 callbacks may release the stream (detach
 * it) or start another attempt, but never free a connection: connections are freed only
 * from the top of an event (read, write, timer, flush), after nghttp2 returned. A detached
 * stream stays allocated until nghttp2 closes it, so its data provider never reads freed
 * memory. */
#include "core/log.h"
#include "core/time.h"
#include "proxy/exchange_int.h"
#include "proxy/h2_int.h"
#include "proxy/tls_int.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct h2u_conn h2u_conn;
typedef struct h2u_stream h2u_stream;

struct h2u_stream {
    h2u_conn *c;
    pf_exchange *ex; /* NULL once released: the stream waits for nghttp2 to close it */
    int32_t id;
    h2u_stream *prev, *next;
    struct evbuffer *body; /* request body waiting for the data provider */
    bool body_end;
    bool head_done; /* the final response head went to the exchange */
    bool got_bytes;
    bool paused;   /* the client's output is full: the window is not returned */
    bool writable; /* request bytes went out: tell the exchange after the send */
    size_t unconsumed;
    int status;
    pf_head resp;
    struct event *timer; /* response timeout */
    uint64_t response_timeout_ms;
};

struct h2u_conn {
    pf_worker *w;
    pf_worker_cluster *wc;
    char addr[PF_ADDRTEXT_MAX];
    pf_stream *s;
    nghttp2_session *session;
    struct event *flush_ev;
    struct event *timer; /* connect timeout, then idle timeout while no stream is open */
    bool connected;
    bool writable;     /* some stream's st->writable is set */
    bool alpn_refused; /* TLS ended without ALPN "h2": fails as a connect failure */
    bool pending;      /* counted in the cluster's pending requests until connected */
    uint64_t connect_start_us;
    bool goaway;            /* no new streams: the peer said GOAWAY, or we are closing */
    bool spent;             /* max_requests_per_connection streams started: closes when idle */
    uint32_t started;       /* streams started on it */
    int32_t goaway_last_id; /* streams above it were never processed (RFC 9113 6.8) */
    bool closing;           /* freed at the end of the current event */
    bool departed;          /* its endpoint left the set: closed once no stream is open */
    size_t active;          /* streams open, released or not */
    h2u_stream *streams;
    h2u_conn *prev, *next;
};

static void conn_free_h2u(h2u_conn *c);

static void schedule(h2u_conn *c) {
    event_active(c->flush_ev, 0, 0);
}

/* ---- request fields ----------------------------------------------------------------- */

static char *lower_into(char **pos, const char *name, size_t len) {
    char *start = *pos;
    for (size_t k = 0; k < len; k++)
        start[k] = (char)(name[k] >= 'A' && name[k] <= 'Z' ? name[k] + 32 : name[k]);
    *pos += len;
    return start;
}

static void nv_add(pf_h2_fields *f, const char *name, size_t nlen, const char *value, size_t vlen) {
    f->nv[f->count++] =
        (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, nlen, vlen, NGHTTP2_NV_FLAG_NONE};
}

/* A field of the client's that does not go upstream as it came: framing and connection
 * fields (te: trailers excepted), what pilotfish says itself (Host as :authority,
 * X-Forwarded-Proto, X-Forwarded-Client-Cert: a client's own would be a forged identity,
 * a replaced traceparent or grpc-timeout), and what the header edits set or remove. */
static bool not_forwarded(const pf_head *req, size_t i, const pf_forward_request *fwd) {
    bool te_trailers = http1_name_is(req, i, "te") && req->headers[i].value_len == 8 &&
                       strncasecmp(http1_value(req, i), "trailers", 8) == 0;
    if ((!te_trailers && http1_is_hop_by_hop(req, i)) || http1_name_is(req, i, "host") ||
        http1_name_is(req, i, "x-forwarded-proto") ||
        http1_name_is(req, i, "x-forwarded-client-cert") ||
        http1_edits_remove(fwd->edits, fwd->cluster_edits, req, i))
        return true;
    if (fwd->traceparent &&
        (http1_name_is(req, i, "traceparent") || http1_name_is(req, i, "tracestate")))
        return true;
    return fwd->grpc_timeout && http1_name_is(req, i, "grpc-timeout"); /* the time left, below */
}

int h2_request_fields(pf_h2_fields *out, const pf_head *req, const pf_forward_request *fwd) {
    memset(out, 0, sizeof *out);
    size_t count = req ? req->count : 0;
    pf_h2_edit_size edits = h2_edits_size(fwd->edits, fwd->cluster_edits, fwd->vars);
    /* Room for every name lower-cased, the path with its "/", X-Forwarded-For joined with
     * the client, the length digits, the edits' lines. */
    size_t scratch = (req ? req->len : 0) + fwd->target_len + 2 + 64 + 64 + edits.bytes;
    if (h2_fields_alloc(out, count + edits.lines + 12, scratch + (req ? req->len : 0)) != PF_OK)
        return PF_ENOMEM;
    char *pos = out->scratch;
    nv_add(out, ":method", 7, fwd->method, strlen(fwd->method));
    nv_add(out, ":scheme", 7, "http", 4);
    nv_add(out, ":authority", 10, fwd->host, fwd->host_len);
    char *path = pos;
    if (fwd->root_first)
        *pos++ = '/';
    memcpy(pos, fwd->target, fwd->target_len);
    pos += fwd->target_len;
    nv_add(out, ":path", 5, path, (size_t)(pos - path));
    char *xff = NULL;
    size_t xff_len = 0;
    for (size_t i = 0; i < count; i++) {
        const char *name = http1_name(req, i);
        size_t nlen = req->headers[i].name_len;
        if (not_forwarded(req, i, fwd))
            continue;
        if (http1_name_is(req, i, "x-forwarded-for")) {
            if (!xff) { /* the first one, with the client appended below */
                xff = pos;
                memcpy(pos, http1_value(req, i), req->headers[i].value_len);
                pos += req->headers[i].value_len;
                xff_len = req->headers[i].value_len;
            }
            continue;
        }
        char *lname = lower_into(&pos, name, nlen);
        nv_add(out, lname, nlen, http1_value(req, i), req->headers[i].value_len);
    }
    /* X-Forwarded-For: the client's list with this client appended (or just the client). */
    size_t ip_len = strlen(fwd->client_ip);
    if (xff) {
        memcpy(pos, ", ", 2);
        memcpy(pos + 2, fwd->client_ip, ip_len);
        pos += 2 + ip_len;
        xff_len += 2 + ip_len;
        nv_add(out, "x-forwarded-for", 15, xff, xff_len);
    } else {
        nv_add(out, "x-forwarded-for", 15, fwd->client_ip, ip_len);
    }
    h2_fields_add_edits(out, &pos, fwd->edits, fwd->cluster_edits, fwd->vars);
    nv_add(out, "x-forwarded-proto", 17, fwd->proto, strlen(fwd->proto));
    if (fwd->client_cert)
        nv_add(out, "x-forwarded-client-cert", 23, fwd->client_cert, strlen(fwd->client_cert));
    if (fwd->traceparent)
        nv_add(out, "traceparent", 11, fwd->traceparent, strlen(fwd->traceparent));
    if (fwd->request_id)
        nv_add(out, "x-request-id", 12, fwd->request_id, strlen(fwd->request_id));
    if (fwd->grpc_timeout)
        nv_add(out, "grpc-timeout", 12, fwd->grpc_timeout, strlen(fwd->grpc_timeout));
    if (fwd->body == PF_BODY_LENGTH) {
        int n = snprintf(pos, 21, "%llu", (unsigned long long)fwd->content_length);
        nv_add(out, "content-length", 14, pos, (size_t)n);
        pos += n;
    }
    return PF_OK;
}

/* ---- streams ------------------------------------------------------------------------ */

static h2u_stream *get_stream(h2u_conn *c, int32_t id) {
    return nghttp2_session_get_stream_user_data(c->session, id);
}

static void stream_unlink_free(h2u_stream *st) {
    h2u_conn *c = st->c;
    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    c->active--;
    if (st->timer)
        event_free(st->timer);
    evbuffer_free(st->body);
    http1_head_free(&st->resp);
    free(st);
}

/* The attempt on st failed: the exchange decides (retry or answer) and releases st. */
static void fail(h2u_stream *st, int status, const char *reason, pf_failure kind) {
    pf_exchange *ex = st->ex;
    if (!ex)
        return;
    log_debug("h2 upstream failed cluster=%s upstream=%s stream=%d status=%d reason=\"%s\"",
              st->c->wc->rt->cfg->name, st->c->addr, (int)st->id, status, reason);
    exchange_on_upstream_error(ex, status, reason, kind);
}

static void on_stream_timer(evutil_socket_t fd, short what, void *arg) {
    h2u_stream *st = arg;
    h2u_conn *c = st->c;
    metrics_inc(c->wc->rt->response_timeouts, 1);
    fail(st, 504, "upstream response timeout", PF_FAIL_TIMEOUT);
    schedule(c);
}

/* ---- nghttp2 client callbacks --------------------------------------------------------- */

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *arg) {
    h2u_conn *c = arg;
    h2u_stream *st = get_stream(c, frame->hd.stream_id);
    if (!st || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        st->status = 0;
        for (size_t k = 0; k < valuelen && k < 3; k++)
            st->status = st->status * 10 + (value[k] - '0');
        return 0;
    }
    if (namelen > 0 && name[0] == ':')
        return 0;
    int rc = http1_head_append_name(&st->resp, (const char *)name, namelen);
    if (rc == PF_OK)
        rc = http1_head_append_value(&st->resp, (const char *)value, valuelen);
    if (rc == PF_OK)
        rc = http1_head_finish_value(&st->resp);
    return rc == PF_OK ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST: too large */
}

static void response_head(h2u_stream *st, bool end_stream) {
    pf_exchange *ex = st->ex;
    if (st->status >= 100 && st->status < 200) {
        exchange_on_response_interim(ex, &st->resp, st->status);
        http1_head_reset(&st->resp);
        return;
    }
    st->head_done = true;
    evtimer_del(st->timer);
    long cl = http1_find(&st->resp, "content-length", NULL);
    uint64_t length = cl >= 0 ? strtoull(http1_value(&st->resp, (size_t)cl), NULL, 10) : 0;
    pf_body_mode mode = end_stream ? PF_BODY_NONE : cl >= 0 ? PF_BODY_LENGTH : PF_BODY_CHUNKED;
    if (end_stream && cl >= 0)
        mode = PF_BODY_LENGTH; /* HEAD, or an empty body with its length said */
    bool skip = false;
    int rc = exchange_on_response_head(ex, &st->resp, st->status, mode, length, &skip);
    if (rc == PF_RESPONSE_RETRY) {
        fail(st, st->status, "upstream answered with a retriable status", PF_FAIL_STATUS);
        return;
    }
    if (rc != PF_OK) {
        fail(st, 502, "response head could not be forwarded", PF_FAIL_PROTOCOL);
        return;
    }
    if (end_stream && st->ex)
        exchange_on_response_complete(st->ex, true);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *arg) {
    h2u_conn *c = arg;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        /* No new streams here; nghttp2 closes those above last_stream_id with
         * REFUSED_STREAM, and on_stream_close replays them elsewhere. */
        c->goaway = true;
        if (frame->goaway.last_stream_id < c->goaway_last_id)
            c->goaway_last_id = frame->goaway.last_stream_id;
        return 0;
    }
    h2u_stream *st = get_stream(c, frame->hd.stream_id);
    if (!st || !st->ex)
        return 0;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    st->got_bytes = true;
    if (frame->hd.type == NGHTTP2_HEADERS) {
        if (!st->head_done) {
            response_head(st, end);
            return 0;
        }
        /* Trailers: the response head's fields are no longer needed. */
        exchange_on_response_trailers(st->ex, &st->resp);
        if (end && st->ex)
            exchange_on_response_complete(st->ex, true);
        return 0;
    }
    if (frame->hd.type == NGHTTP2_DATA && end && st->head_done)
        exchange_on_response_complete(st->ex, true);
    return 0;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *arg) {
    h2u_conn *c = arg;
    h2u_stream *st = get_stream(c, frame->hd.stream_id);
    if (st && st->head_done)
        http1_head_reset(&st->resp); /* trailers follow: the head was forwarded */
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *arg) {
    h2u_conn *c = arg;
    nghttp2_session_consume_connection(session, len);
    h2u_stream *st = get_stream(c, id);
    if (!st || !st->ex || !st->head_done) {
        nghttp2_session_consume_stream(session, id, len);
        return 0;
    }
    exchange_on_response_body(st->ex, (const char *)data, len);
    st->unconsumed += len;
    if (st->ex && exchange_downstream_full(st->ex)) {
        /* The stream's window stays closed until the client takes what it has. */
        st->paused = true;
        exchange_wait_for_downstream(st->ex);
    } else {
        nghttp2_session_consume_stream(session, id, st->unconsumed);
        st->unconsumed = 0;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *arg) {
    h2u_conn *c = arg;
    h2u_stream *st = get_stream(c, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(session, id, NULL);
    if (st->ex) {
        if (error_code == NGHTTP2_REFUSED_STREAM && !st->head_done)
            /* RFC 9113 8.7: never processed (GOAWAY above it, or refused): a replay on
             * another connection is safe and is not the endpoint's failure. */
            fail(st, 502, "upstream refused the stream", PF_FAIL_STALE);
        else {
            metrics_inc(c->wc->rt->resets, 1);
            fail(st, 502,
                 st->head_done ? "upstream reset the stream mid-response"
                               : "upstream reset the stream before responding",
                 PF_FAIL_RESET);
        }
    }
    stream_unlink_free(st);
    return 0;
}

/* The request's trailer fields as a HEADERS frame that ends the stream (RFC 9113 8.1).
 * Returns whether it was queued (nghttp2 copies the fields). */
static bool submit_request_trailers(nghttp2_session *session, int32_t id, const pf_head *trailers) {
    pf_h2_fields f;
    if (!trailers || h2_response_fields(&f, trailers, 0, false, 0, NULL, NULL) != PF_OK)
        return false;
    bool queued = f.count > 0 && nghttp2_submit_trailer(session, id, f.nv, f.count) == 0;
    h2_fields_free(&f);
    return queued;
}

static ssize_t read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *arg) {
    h2u_stream *st = source->ptr;
    int n = evbuffer_remove(st->body, buf, length);
    if (n < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (evbuffer_get_length(st->body) == 0 && (st->body_end || !st->ex)) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->ex && submit_request_trailers(session, id, exchange_request_trailers(st->ex)))
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM; /* the trailers' HEADERS ends it */
    } else if (n == 0)
        return NGHTTP2_ERR_DEFERRED;
    if (n > 0 && st->ex)
        st->writable = st->c->writable = true; /* told after mem_send returns (flush_h2u) */
    return n;
}

/* ---- connections -------------------------------------------------------------------- */

static void end_pending(h2u_conn *c) {
    if (c->pending) {
        c->pending = false;
        atomic_fetch_sub_explicit(&c->wc->rt->pending_requests, 1, memory_order_relaxed);
    }
}

/* Every stream still attached fails (`connect`: the connection never opened), then the
 * connection is freed. Called only from the top of an event. */
static void conn_fail(h2u_conn *c, bool connect, const char *reason) {
    c->closing = true;
    c->goaway = true;
    for (h2u_stream *st = c->streams; st; st = st->next) {
        if (!st->ex)
            continue;
        /* Only a GOAWAY says a stream was never processed; without one, a stream that
         * got no answer may still have been served, so its replay is the policy's call. */
        if (connect)
            fail(st, 503, reason, PF_FAIL_CONNECT);
        else
            fail(st, 502, reason, st->id > c->goaway_last_id ? PF_FAIL_STALE : PF_FAIL_RESET);
    }
    conn_free_h2u(c);
}

static void idle_or_not(h2u_conn *c) {
    if (c->active == 0 && c->connected && c->departed) {
        conn_free_h2u(c); /* like a pooled HTTP/1 connection to a departed endpoint */
        return;
    }
    if (c->active == 0 && c->connected) {
        struct timeval tv = pf_timeval_ms(c->wc->rt->cfg->upstream_idle_timeout_ms);
        evtimer_add(c->timer, &tv);
    }
}

/* Moves nghttp2's frames into the socket's output; frees the connection once the peer
 * and we are done with it. */
static void flush_h2u(h2u_conn *c) {
    if (c->alpn_refused) {
        metrics_inc(c->wc->rt->connect_failures, 1);
        conn_fail(c, true, "upstream did not choose HTTP/2 (ALPN)");
        return;
    }
    if (!c->connected)
        return; /* queued until the connect completes */
    struct evbuffer *out = stream_output(c->s);
    while (evbuffer_get_length(out) < PF_DEFAULT_BUFFER_BYTES) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0) {
            conn_fail(c, false, "upstream HTTP/2 session failed");
            return;
        }
        if (n == 0)
            break;
        evbuffer_add(out, data, (size_t)n);
    }
    stream_flush(c->s);
    /* Only request bodies make streams writable: most flushes have nothing to walk. */
    for (h2u_stream *st = c->writable ? c->streams : NULL; st; st = st->next) {
        if (st->writable) {
            st->writable = false;
            if (st->ex)
                exchange_on_upstream_writable(st->ex);
        }
    }
    c->writable = false;
    if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session) &&
        evbuffer_get_length(out) == 0) {
        conn_fail(c, false, "upstream closed the HTTP/2 connection");
        return;
    }
    if (c->spent && c->active == 0) {
        conn_fail(c, false, "connection served max_requests_per_connection"); /* no stream left */
        return;
    }
    idle_or_not(c);
}

static void on_flush(evutil_socket_t fd, short what, void *arg) {
    flush_h2u(arg);
}

static void on_read(pf_stream *s, void *arg) {
    h2u_conn *c = arg;
    struct evbuffer *in = stream_input(s);
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec vec;
        if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
            break;
        ssize_t n = nghttp2_session_mem_recv(c->session, vec.iov_base, vec.iov_len);
        if (n < 0) {
            log_debug("h2 upstream receive failed upstream=%s error=\"%s\"", c->addr,
                      nghttp2_strerror((int)n));
            conn_fail(c, false, "upstream sent malformed HTTP/2");
            return;
        }
        evbuffer_drain(in, (size_t)n);
    }
    flush_h2u(c);
}

static void on_write(pf_stream *s, void *arg) {
    flush_h2u(arg);
}

/* RFC 9113 3.3: over TLS, HTTP/2 is spoken only when ALPN chose "h2" (no prior knowledge
 * there). An endpoint that chose nothing or another protocol would read frames as garbage. */
static bool alpn_agreed(h2u_conn *c) {
    SSL *ssl = stream_ssl(c->s);
    if (!ssl)
        return true;
    const unsigned char *proto = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl, &proto, &len);
    if (len == 2 && memcmp(proto, "h2", 2) == 0)
        return true;
    log_info("upstream TLS did not choose h2 cluster=%s upstream=%s alpn=\"%.*s\"",
             c->wc->rt->cfg->name, c->addr, (int)len, len ? (const char *)proto : "");
    return false;
}

static void on_event(pf_stream *s, int what, int err, void *arg) {
    h2u_conn *c = arg;
    if (what & PF_STREAM_CONNECTED) {
        if (!alpn_agreed(c)) {
            /* failed from the flush event: the stream may not be freed from this callback */
            c->alpn_refused = true;
            schedule(c);
            return;
        }
        c->connected = true;
        metrics_observe_us(c->wc->rt->connect_duration, pf_now_us() - c->connect_start_us);
        end_pending(c);
        evtimer_del(c->timer);
        flush_h2u(c);
        return;
    }
    if (!c->connected) {
        metrics_inc(c->wc->rt->connect_failures, 1);
        conn_fail(c, true, "upstream connect failed");
        return;
    }
    conn_fail(c, false, "upstream closed the HTTP/2 connection");
}

static void on_conn_timer(evutil_socket_t fd, short what, void *arg) {
    h2u_conn *c = arg;
    if (!c->connected) {
        metrics_inc(c->wc->rt->connect_timeouts, 1);
        conn_fail(c, true, "upstream connect timeout");
        return;
    }
    if (c->active == 0)
        conn_free_h2u(c); /* idle: nothing to tell anyone */
}

static void conn_free_h2u(h2u_conn *c) {
    if (c->prev)
        c->prev->next = c->next;
    else if (c->wc->h2_conns == c)
        c->wc->h2_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    /* Streams the exchanges released wait for nghttp2 no more. */
    while (c->streams) {
        h2u_stream *st = c->streams;
        if (st->ex) /* cannot happen after conn_fail; never leave an exchange dangling */
            fail(st, 502, "upstream connection closed", PF_FAIL_RESET);
        stream_unlink_free(st);
    }
    end_pending(c);
    nghttp2_session_del(c->session);
    stream_free(c->s);
    if (c->flush_ev)
        event_free(c->flush_ev);
    if (c->timer)
        event_free(c->timer);
    metrics_gauge_add(c->wc->rt->connections_active, -1);
    c->wc->conns--;
    free(c);
}

void h2_upstream_prune(pf_worker_cluster *wc, const pf_endpoint_set *set) {
    for (h2u_conn *c = wc->h2_conns; c; c = c->next) {
        if (c->departed || c->closing || pool_set_has(set, c->addr))
            continue;
        /* Freed from the top of an event only (see the file's comment): the flush event
         * frees it if idle; a busy one goes when its last stream closes. */
        c->departed = true;
        c->goaway = true;
        schedule(c);
    }
}

void h2_upstream_free_all(pf_worker_cluster *wc) {
    while (wc->h2_conns)
        conn_fail(wc->h2_conns, false, "pilotfish is stopping");
}

/* The cluster's TLS with ALPN "h2" alone, verifying the name the cluster says. Sessions are
 * not resumed across HTTP/2 connections: they are few and long-lived. */
static int start_tls(h2u_conn *c, int fd, const pf_endpoint *ep, const pf_exchange_request *req) {
    static const unsigned char h2_alpn[] = {2, 'h', '2'};
    char buf[PF_DNS_NAME_MAX];
    const char *name = tls_upstream_name(c->wc->rt->cfg, req->fwd.host, req->fwd.host_len,
                                         ep->addr.text, buf, sizeof buf);
    SSL *ssl = tls_client_ssl(c->wc->rt->tls, c->w->id, fd, name, NULL, NULL);
    if (!ssl)
        return PF_ENOMEM;
    if (SSL_set_alpn_protos(ssl, h2_alpn, sizeof h2_alpn) != 0) {
        SSL_free(ssl);
        return PF_ENOMEM;
    }
    stream_set_tls(c->s, ssl);
    return PF_OK;
}

static h2u_conn *conn_open(pf_worker *w, pf_worker_cluster *wc, const pf_endpoint *ep,
                           const pf_exchange_request *req) {
    h2u_conn *c = calloc(1, sizeof *c);
    nghttp2_session_callbacks *cbs = NULL;
    if (!c)
        return NULL;
    c->w = w;
    c->wc = wc;
    c->goaway_last_id = INT32_MAX;
    c->pending = true;
    upstream_count_opening(wc);
    snprintf(c->addr, sizeof c->addr, "%s", ep->addr.text);
    c->flush_ev = event_new(w->base, -1, 0, on_flush, c);
    c->timer = evtimer_new(w->base, on_conn_timer, c);
    int fd = socket(ep->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || !c->flush_ev || !c->timer)
        goto fail_fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    static const pf_stream_callbacks callbacks = {on_read, on_write, on_event};
    c->s = stream_new(w->base, fd, wc->rt->cfg->buffer_bytes, wc->rt->cfg->buffer_bytes / 2,
                      &callbacks, c);
    if (!c->s)
        goto fail_fd;
    if (wc->rt->tls && start_tls(c, fd, ep, req) != PF_OK) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option *opt = NULL;
    if (nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1); /* no priorities: nothing to keep them for */
    int rc = nghttp2_session_client_new2(&c->session, cbs, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    cbs = NULL;
    if (rc != 0)
        goto fail;
    /* Each stream may hold the default buffer of response body the client has not taken;
     * the connection's window covers all streams so that one slow client stalls only its
     * stream. */
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, PF_DEFAULT_BUFFER_BYTES},
    };
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 2) != 0 ||
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                              PF_DEFAULT_BUFFER_BYTES * PF_H2_MAX_STREAMS) != 0)
        goto fail;
    c->next = wc->h2_conns;
    if (c->next)
        c->next->prev = c;
    wc->h2_conns = c;
    struct timeval tv = pf_timeval_ms(wc->rt->cfg->connect_timeout_ms);
    evtimer_add(c->timer, &tv);
    c->connect_start_us = pf_now_us();
    stream_connect(c->s, (const struct sockaddr *)&ep->addr.ss, ep->addr.len);
    return c;
fail_fd:
    if (fd >= 0)
        close(fd);
fail:
    nghttp2_session_callbacks_del(cbs);
    end_pending(c);
    nghttp2_session_del(c->session);
    stream_free(c->s);
    if (c->flush_ev)
        event_free(c->flush_ev);
    if (c->timer)
        event_free(c->timer);
    metrics_gauge_add(wc->rt->connections_active, -1);
    wc->conns--;
    free(c);
    return NULL;
}

/* A connection to ep with room for one more stream: the peer's limit, and ours. */
static h2u_conn *find_conn(pf_worker_cluster *wc, const pf_endpoint *ep) {
    for (h2u_conn *c = wc->h2_conns; c; c = c->next) {
        if (c->goaway || c->spent || c->closing || strcmp(c->addr, ep->addr.text) != 0)
            continue;
        uint32_t peer = nghttp2_session_get_remote_settings(
            c->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        size_t limit = peer < PF_H2_MAX_STREAMS ? peer : PF_H2_MAX_STREAMS;
        if (c->active < limit)
            return c;
    }
    return NULL;
}

/* ---- upstream_h2_ops ------------------------------------------------------------------ */

static void *start(pf_exchange *ex, const pf_endpoint *ep, bool *overloaded) {
    pf_worker_cluster *wc = exchange_cluster(ex);
    h2u_conn *c = find_conn(wc, ep);
    if (c) {
        metrics_inc(wc->rt->pool_reuses, 1);
    } else {
        if (!upstream_may_connect(wc)) {
            *overloaded = true;
            return NULL;
        }
        c = conn_open(exchange_worker(ex), wc, ep, exchange_request(ex));
        if (!c)
            return NULL;
    }
    h2u_stream *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->c = c;
    st->ex = ex;
    st->body = evbuffer_new();
    st->timer = evtimer_new(c->w->base, on_stream_timer, st);
    const pf_config_cluster *cfg = c->wc->rt->cfg;
    http1_head_init(&st->resp, cfg->max_header_bytes, cfg->max_headers);
    const pf_exchange_request *req = exchange_request(ex);
    pf_h2_fields f;
    if (!st->body || !st->timer || h2_request_fields(&f, req->head, &req->fwd) != PF_OK) {
        if (st->body)
            evbuffer_free(st->body);
        if (st->timer)
            event_free(st->timer);
        http1_head_free(&st->resp);
        free(st);
        return NULL;
    }
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_body};
    int32_t id = nghttp2_submit_request(c->session, NULL, f.nv, f.count,
                                        req->fwd.body == PF_BODY_NONE ? NULL : &dp, st);
    h2_fields_free(&f);
    if (id < 0) {
        evbuffer_free(st->body);
        event_free(st->timer);
        http1_head_free(&st->resp);
        free(st);
        return NULL;
    }
    st->id = id;
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    c->active++;
    uint32_t max_requests = wc->rt->cfg->max_requests_per_connection;
    if (max_requests && ++c->started >= max_requests)
        c->spent = true; /* takes no more streams; closes when these are done */
    if (c->connected)
        evtimer_del(c->timer); /* no longer idle */
    schedule(c);
    return st;
}

static void write_body(void *arg, const char *at, size_t len) {
    h2u_stream *st = arg;
    evbuffer_add(st->body, at, len);
    nghttp2_session_resume_data(st->c->session, st->id);
    schedule(st->c);
}

static void replay_body(void *arg, struct evbuffer *body) {
    h2u_stream *st = arg;
    http1_add_reference(st->body, body);
    nghttp2_session_resume_data(st->c->session, st->id);
    schedule(st->c);
}

static void end_body(void *arg, uint64_t response_timeout_ms) {
    h2u_stream *st = arg;
    st->body_end = true;
    nghttp2_session_resume_data(st->c->session, st->id);
    /* response_timeout ends at the response head: a bidirectional call whose client ends
     * its side after the server answered is timed by nothing but its silence. */
    if (!st->head_done) {
        struct timeval tv = pf_timeval_ms(response_timeout_ms);
        evtimer_add(st->timer, &tv);
    }
    schedule(st->c);
}

static bool output_full(const void *arg, size_t limit) {
    const h2u_stream *st = arg;
    return evbuffer_get_length(st->body) >= limit;
}

static void resume(void *arg) {
    h2u_stream *st = arg;
    if (st->paused) {
        st->paused = false;
        nghttp2_session_consume_stream(st->c->session, st->id, st->unconsumed);
        st->unconsumed = 0;
        schedule(st->c);
    }
}

/* The attempt ends. A stream still open is cancelled (its connection and other streams go
 * on); the stream itself is freed when nghttp2 closes it. */
static void release(void *arg, bool reusable) {
    h2u_stream *st = arg;
    st->ex = NULL;
    evtimer_del(st->timer);
    if (!reusable && nghttp2_session_get_stream_user_data(st->c->session, st->id) == st)
        nghttp2_submit_rst_stream(st->c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    schedule(st->c);
}

const pf_upstream_ops upstream_h2_ops = {
    .start = start,
    .write_body = write_body,
    .replay_body = replay_body,
    .end_body = end_body,
    .output_full = output_full,
    .resume = resume,
    .release = release,
};
