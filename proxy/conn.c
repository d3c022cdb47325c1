/* The HTTP/1 downstream codec: a client connection. It reads requests with llhttp,
 * checks them, and hands each to the connection's exchange (exchange.c), which routes,
 * balances and retries; it writes the responses the exchange gives back, in order. The
 * exchange reaches this file only through the downstream ops at the end.
 *
 * One request is in flight per connection. Pipelined requests wait in the input buffer:
 * on_message_complete pauses the parser, and it resumes only when the response is done,
 * so responses leave in request order. Bodies stream through in both directions with
 * backpressure: reading from one side stops while the other side's output holds more than
 * the listener's buffer_bytes.
 *
 * A connection whose first bytes are the HTTP/2 preface (llhttp stops on it by itself, so
 * HTTP/1 pays nothing for the check) is handed to h2_downstream.c, which then owns the
 * stream's traffic; this struct stays its owner for the worker's list and the limits. A
 * tcp listener's connection is handed to tcp.c the same way, at accept. */
#include "core/json.h"
#include "core/log.h"
#include "core/time.h"
#include "proxy/deadline.h"
#include "proxy/exchange_int.h"
#include "proxy/route_actions_int.h"
#include "proxy/h2_int.h"
#include "proxy/stream.h"
#include "proxy/tcp_int.h"
#include "proxy/tls_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

typedef enum {
    TIMER_NONE,
    TIMER_HEADER,
    TIMER_BODY, /* the client is sending a request body: the longest pause allowed */
    TIMER_SEND, /* output waits for the client to read it: the longest pause allowed */
    TIMER_IDLE,
    TIMER_LINGER
} conn_timer_kind;

/* Where the connection is in its life; conn_set_state checks every move. Facts about the
 * client or the parser (client_eof, read_paused, parser_paused, draining, keep_alive) are
 * orthogonal and stay booleans; the request in flight is the exchange's. */
typedef enum {
    CONN_IDLE,      /* between requests (or before the first) */
    CONN_REQUEST,   /* a request's head started arriving; it is read or answered */
    CONN_CLOSING,   /* no more requests: close once the output is flushed */
    CONN_LINGERING, /* write side shut, discarding input until EOF or timeout */
    CONN_TUNNEL,    /* switched protocols: the exchange's tunnel moves the bytes until it ends */
    CONN_STATE_COUNT
} conn_state;

struct pf_conn {
    pf_worker *w;
    pf_listener_rt *l;
    pf_stream *stream;
    pf_deadline timer; /* one per connection, its kind in timer_kind */
    conn_timer_kind timer_kind;
    llhttp_t parser;
    pf_head req;
    char client_ip[INET6_ADDRSTRLEN];
    char *client_cert; /* TLS: x-forwarded-client-cert of a verified client, else NULL */
    bool client_cert_read;
    pf_conn *prev, *next;

    conn_state state;
    bool client_eof;  /* the client half-closed; answer what is in flight, then close */
    bool read_paused; /* the exchange takes no request body for now */
    bool parser_paused;
    bool paused_for_upgrade;
    bool draining;
    /* the request in flight said the client closes after it */
    bool client_closes;
    bool dispatched; /* a request was dispatched: the HTTP/2 preface may no longer come */
    bool value_ended_at_chunk_end;
    const char *chunk_start, *chunk_end; /* the bytes llhttp is executing now */

    /* The request in flight: its HTTP/1 framing here, everything else in the exchange. */
    bool keep_alive;
    int error_status; /* a 4xx decided inside an llhttp callback */
    const char *error_reason;
    int minor;
    llhttp_method_t method;
    bool method_known; /* the request line's method was parsed: else it is logged as "-" */
    pf_body_mode req_body;
    /* A chunked body's trailer section: a header section of its own (RFC 9110 6.5), with
     * the head's limits counted apart, in a head of its own made when one comes (growing
     * the request head's buffer would move what the exchange points at in it). */
    pf_head *trailers;
    bool in_trailers; /* the head is complete: fields from now on are trailers */
    pf_body_mode resp_body;
    bool body_ended; /* the chunked response's last chunk (with trailers) is written */
    pf_exchange ex;  /* embedded: no allocation per request */
    pf_h2_conn *h2;  /* the connection speaks HTTP/2: everything above is unused */
    /* A CONNECT to a known service turned this connection into one bound to that
     * authority: every request in it is routed by bound_host/bound_port. */
    bool connect_accepted; /* the 200 goes out once llhttp is done with the CONNECT */
    char *bound_host;
    int bound_port;
    uint64_t tunnel_start_us;         /* the CONNECT's start, for its access-log line */
    uint64_t tunnel_in0, tunnel_out0; /* the stream's byte counts when the tunnel began */
    pf_tcp_conn *tcp; /* a tcp listener's connection: relayed, everything above is unused */
};

static const llhttp_settings_t *request_settings(void);
static void process_input(pf_conn *c);

static const unsigned conn_allowed[CONN_STATE_COUNT] = {
    [CONN_IDLE] = 1u << CONN_REQUEST | 1u << CONN_CLOSING,
    [CONN_REQUEST] = 1u << CONN_IDLE | 1u << CONN_CLOSING | 1u << CONN_TUNNEL,
    [CONN_CLOSING] = 1u << CONN_LINGERING,
    [CONN_LINGERING] = 0,
    [CONN_TUNNEL] = 0, /* freed when the tunnel ends */
};

static void conn_set_state(pf_conn *c, conn_state to) {
    if (!(conn_allowed[c->state] & (1u << to))) {
        /* e.g. a request read after the connection decided to close: a bug, stop here */
        log_error("conn: illegal move from state %d to %d client=%s", c->state, to, c->client_ip);
        abort();
    }
    c->state = to;
}

static bool closing(const pf_conn *c) {
    return c->state == CONN_CLOSING || c->state == CONN_LINGERING;
}

static void timer_set(pf_conn *c, conn_timer_kind kind, uint64_t ms) {
    c->timer_kind = kind;
    deadline_set(&c->timer, ms);
}

static void timer_stop(pf_conn *c) {
    c->timer_kind = TIMER_NONE;
    deadline_clear(&c->timer);
}

static struct evbuffer *output(pf_conn *c) {
    return stream_output(c->stream);
}

/* Every downstream op that adds to the output ends here (stream_flush's contract). */
static void flush(pf_conn *c) {
    stream_flush(c->stream);
}

/* Whether the exchange has an attempt or a response under way. */
static bool in_flight(const pf_conn *c) {
    return c->ex.state == PF_EX_WAITING || c->ex.state == PF_EX_BACKOFF ||
           c->ex.state == PF_EX_STREAMING || c->ex.state == PF_EX_RESOLVING;
}

/* Whether any of a response went out. */
static bool response_started(const pf_conn *c) {
    return c->ex.state == PF_EX_STREAMING || c->ex.state == PF_EX_DONE ||
           c->ex.state == PF_EX_ABORTED;
}

static void drop_trailers(pf_conn *c) {
    if (c->trailers)
        http1_head_free(c->trailers);
    free(c->trailers);
    c->trailers = NULL;
}

/* Where a header field llhttp reports goes: the request head, or after the body its
 * trailer section (made on the first field). NULL when out of memory. */
static pf_head *fields_of(pf_conn *c) {
    if (!c->in_trailers)
        return &c->req;
    if (!c->trailers && (c->trailers = malloc(sizeof *c->trailers)) != NULL)
        http1_head_init(c->trailers, c->l->cfg->max_header_bytes, c->l->cfg->max_headers);
    return c->trailers;
}

static void reset_request(pf_conn *c) {
    exchange_reset(&c->ex);
    c->error_status = 0;
    c->error_reason = NULL;
    c->req_body = c->resp_body = PF_BODY_NONE;
    c->body_ended = false;
    c->method_known = false;
    c->in_trailers = false;
    drop_trailers(c);
    http1_head_reset(&c->req);
}

/* A CONNECT tunnel's own access-log line when it ends: its authority, the bytes it carried
 * each way after the 200 and how long it lasted, sampled like the rest. The requests inside
 * have lines of their own. */
static void log_tunnel(pf_conn *c) {
    pf_worker *w = c->w;
    if (!w->proxy->alog.enabled || !access_log_sampled(w))
        return;
    uint64_t in, out;
    stream_bytes(c->stream, &in, &out);
    char authority[PF_HOST_MAX + 16];
    bool v6 = strchr(c->bound_host, ':') != NULL;
    int n = snprintf(authority, sizeof authority, v6 ? "[%s]:%d" : "%s:%d", c->bound_host,
                     c->bound_port);
    pf_access_entry e = {
        .method = "CONNECT",
        .authority = authority,
        .authority_len = n > 0 && (size_t)n < sizeof authority ? (size_t)n : 0,
        .path = "",
        .status = 200,
        .bytes_in = in - c->tunnel_in0,
        .bytes_out = out - c->tunnel_out0,
        .duration_us = pf_now_us() - c->tunnel_start_us,
        .client = c->client_ip,
        .protocol = "HTTP/1.1",
        .grpc_status = -1,
    };
    access_log_write(w, &e);
}

void conn_free(pf_conn *c) {
    if (!c)
        return;
    if (c->tunnel_start_us)
        log_tunnel(c);
    h2_conn_free(c->h2);
    tcp_conn_free(c->tcp);
    exchange_free(&c->ex);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    stream_free(c->stream);
    deadline_free(&c->timer);
    free(c->client_cert);
    free(c->bound_host);
    http1_head_free(&c->req);
    drop_trailers(c);
    worker_conn_closed(c->w, c->l);
    free(c);
}

/* Closing politely (RFC 9112 9.6): flush, shut our write side, then read and drop what
 * the client still sends for a while, so a reset does not destroy the response it has
 * not read yet. */
static void begin_linger(pf_conn *c) {
    conn_set_state(c, CONN_LINGERING);
    /* A client that said it closes sends nothing more (RFC 9112 9.6), so with nothing unread
     * there is nothing a reset could destroy: close now, as it asked, without waiting for
     * its FIN. TLS still says close_notify first. */
    if (c->client_closes && !c->l->tls && evbuffer_get_length(stream_input(c->stream)) == 0) {
        conn_free(c);
        return;
    }
    stream_shutdown_write(c->stream);
    evbuffer_drain(stream_input(c->stream), evbuffer_get_length(stream_input(c->stream)));
    if (c->client_eof) {
        conn_free(c);
        return;
    }
    stream_read_needed(c->stream, true);
    stream_read_enable(c->stream, true);
    timer_set(c, TIMER_LINGER, PF_LINGER_MS);
}

/* The client has body_timeout to take what is still in the output; whatever timer ran
 * for the request (head, body) has no say once we close. */
static void start_close(pf_conn *c) {
    if (c->state == CONN_LINGERING)
        return; /* already past flushing */
    if (c->state != CONN_CLOSING)
        conn_set_state(c, CONN_CLOSING);
    if (evbuffer_get_length(output(c)) == 0)
        begin_linger(c);
    else
        timer_set(c, TIMER_SEND, c->l->cfg->body_timeout_ms);
}

/* No more requests on this connection: stop reading and close after the output. */
static void close_after_response(pf_conn *c) {
    c->keep_alive = false;
    stream_read_enable(c->stream, false);
    start_close(c);
}

/* The request and its response are both done: log, and go on with the next request or
 * close. */
static void request_done(pf_conn *c) {
    exchange_log(&c->ex);
    bool keep = c->keep_alive && !closing(c) && !c->draining;
    reset_request(c);
    if (!keep) {
        start_close(c);
        return;
    }
    conn_set_state(c, CONN_IDLE);
    stream_read_needed(c->stream, true); /* the next request */
    /* Nothing of the next request yet: an idle connection holds no head buffers (glibc's
     * per-thread cache makes the next request's allocation cheap). */
    if (evbuffer_get_length(stream_input(c->stream)) == 0)
        http1_head_release(&c->req);
    if (c->parser_paused) {
        c->parser_paused = false;
        if (c->paused_for_upgrade)
            llhttp_resume_after_upgrade(&c->parser);
        else
            llhttp_resume(&c->parser);
        c->paused_for_upgrade = false;
    }
    if (evbuffer_get_length(stream_input(c->stream)) == 0 && c->client_eof) {
        start_close(c);
        return;
    }
    timer_set(c, TIMER_IDLE, c->l->cfg->idle_timeout_ms);
    process_input(c);
}

/* A request that cannot go on: answer (when nothing was sent yet) and close. */
static void reject(pf_conn *c, int status, const char *body) {
    c->keep_alive = false;
    /* Refused before dispatch: the method is known once llhttp has parsed it. */
    if (!c->ex.method && c->method_known)
        exchange_describe(&c->ex, llhttp_method_name(c->method), NULL, 0, NULL, 0);
    if (!response_started(c)) {
        exchange_reply(&c->ex, status, body, NULL); /* ds_reply logs and closes */
        return;
    }
    if (c->ex.state == PF_EX_STREAMING)
        exchange_abort(&c->ex); /* the upstream's response goes no further */
    close_after_response(c);
}

/* CONNECT (RFC 9110 9.3.6) is accepted only to an authority a route names by host or a
 * discovered service answers to, and pilotfish never dials it: the tunnel is served here as
 * a connection bound to that authority (HTTP/1.1 or h2c inside), each request routed and
 * balanced as any other. That is what a gRPC client behind http_proxy needs, and it never
 * makes pilotfish an open proxy. */
static void bind_authority(pf_conn *c, const char *host, int port);

static void accept_connect(pf_conn *c) {
    const char *target = http1_first(&c->req);
    size_t len = c->req.first_len;
    exchange_describe(&c->ex, "CONNECT", target, len, NULL, 0);
    char host[PF_HOST_MAX];
    int port = -1;
    if (c->bound_host) {
        reject(c, 405, "CONNECT inside a CONNECT tunnel is not supported\n");
        return;
    }
    if (router_parse_authority(target, len, host, sizeof host, &port) != 0 || port <= 0) {
        reject(c, 400, "CONNECT needs host:port\n");
        return;
    }
    if (c->req_body != PF_BODY_NONE) {
        reject(c, 400, "CONNECT with a body\n");
        return;
    }
    if (!router_host_known(c->l->router, host, port) &&
        service_routes_find(worker_service_routes(c->w), host, port) < 0) {
        c->keep_alive = false; /* any answer but the 200 closes the connection */
        if (exchange_park_connect(&c->ex, host, port)) {
            log_debug("CONNECT waits for on-demand discovery client=%s host=%s", c->client_ip,
                      host);
            return; /* the parser stays paused after the CONNECT until the answer */
        }
        log_debug("CONNECT refused client=%s authority=\"%.*s\"", c->client_ip, (int)len, target);
        reject(c, 403,
               "CONNECT is accepted only to a service pilotfish routes to; pilotfish is not an "
               "open proxy\n");
        return;
    }
    bind_authority(c, host, port);
}

/* The CONNECT is accepted: the connection is bound to host:port once llhttp is done with the
 * CONNECT (start_bound). */
static void bind_authority(pf_conn *c, const char *host, int port) {
    c->bound_host = strdup(host);
    if (!c->bound_host) {
        reject(c, 503, "out of memory\n");
        return;
    }
    c->bound_port = port;
    c->connect_accepted = true;
    c->tunnel_start_us = c->ex.start_us ? c->ex.start_us : pf_now_us();
}

/* After the CONNECT's head: the 200, and the connection starts afresh inside the tunnel,
 * where the first bytes may be the HTTP/2 preface. */
static void start_bound(pf_conn *c) {
    static const char established[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    c->connect_accepted = false;
    evbuffer_add(output(c), established, sizeof established - 1);
    flush(c);
    /* The tunnel's bytes: what follows the 200 out, and what followed the CONNECT in. */
    stream_bytes(c->stream, &c->tunnel_in0, &c->tunnel_out0);
    c->tunnel_in0 -= evbuffer_get_length(stream_input(c->stream));
    c->tunnel_out0 += evbuffer_get_length(output(c));
    log_debug("CONNECT accepted client=%s authority=%s:%d", c->client_ip, c->bound_host,
              c->bound_port);
    reset_request(c);
    conn_set_state(c, CONN_IDLE);
    c->dispatched = false;
    c->parser_paused = c->paused_for_upgrade = false;
    llhttp_init(&c->parser, HTTP_REQUEST, request_settings());
    c->parser.data = c;
    timer_set(c, TIMER_IDLE, c->l->cfg->idle_timeout_ms);
}

/* Checks the head, describes the request to the exchange and starts it. Anything wrong
 * with the request itself is answered here, before the exchange routes it. */
static void dispatch(pf_conn *c) {
    c->dispatched = true;
    c->method = (llhttp_method_t)llhttp_get_method(&c->parser);
    c->minor = c->parser.http_minor;
    c->client_closes = !llhttp_should_keep_alive(&c->parser);
    c->keep_alive = !c->client_closes && !c->draining;
    c->req_body = http1_request_body_mode(
        c->parser.flags & F_CHUNKED, c->parser.flags & F_CONTENT_LENGTH, c->parser.content_length);
    const char *method = llhttp_method_name(c->method);
    exchange_describe(&c->ex, method, NULL, 0, NULL, 0);

    if (c->parser.http_major != 1 || c->parser.http_minor > 1) {
        reject(c, 505, "HTTP version not supported\n");
        return;
    }
    if (c->method == HTTP_CONNECT) {
        accept_connect(c);
        return;
    }
    pf_target t;
    if (http1_parse_target(http1_first(&c->req), c->req.first_len, c->method == HTTP_OPTIONS, &t) !=
        PF_OK) {
        reject(c, 400, "bad request target\n");
        return;
    }
    const char *authority = t.authority;
    size_t authority_len = t.authority_len;
    exchange_describe(&c->ex, method, authority, authority_len, t.path, t.path_len);
    size_t host_count;
    long host_index = http1_find(&c->req, "host", &host_count);
    const char *host_problem = http1_check_host(host_count, c->minor, authority != NULL);
    if (host_problem) {
        char body[64];
        snprintf(body, sizeof body, "%s\n", host_problem);
        reject(c, 400, body);
        return;
    }
    if (!authority && host_index >= 0) {
        authority = http1_value(&c->req, (size_t)host_index);
        authority_len = c->req.headers[host_index].value_len;
        exchange_describe(&c->ex, method, authority, authority_len, t.path, t.path_len);
    }
    char host[PF_HOST_MAX];
    host[0] = '\0'; /* not `= ""`: that zeroes all of it, on every request */
    int port = -1;
    if (authority_len > 0 &&
        router_parse_authority(authority, authority_len, host, sizeof host, &port) != 0) {
        reject(c, 400, "bad authority\n");
        return;
    }
    if (c->bound_host) { /* inside a CONNECT tunnel: routed as the authority it named */
        snprintf(host, sizeof host, "%s", c->bound_host);
        port = c->bound_port;
    }
    SSL *ssl = stream_ssl(c->stream);
    if (ssl && !c->client_cert_read) {
        c->client_cert =
            tls_client_cert_header(ssl); /* once: it cannot change (no renegotiation) */
        c->client_cert_read = true;
    }
    pf_exchange_request req = {
        .head = &c->req,
        .fwd =
            {
                .method = method,
                .target = t.target,
                .target_len = t.target_len,
                .root_first = t.root_first,
                .host = authority ? authority : "",
                .host_len = authority_len,
                .client_ip = c->client_ip,
                .proto = ssl ? "https" : "http",
                .client_cert = c->client_cert,
                .body = c->req_body,
                .content_length = c->parser.content_length,
            },
    };
    /* The exchange decides whether the route allows it; else the headers are dropped. */
    http1_upgrade_requested(&c->req, c->minor, &req.fwd.upgrade, &req.fwd.upgrade_len);
    exchange_start(&c->ex, &req, host, port);
}

/* ---- llhttp request callbacks ------------------------------------------------------ */

static int on_message_begin(llhttp_t *p) {
    pf_conn *c = p->data;
    conn_set_state(c, CONN_REQUEST);
    exchange_begin(&c->ex, &c->req);
    if (c->timer_kind != TIMER_HEADER)
        timer_set(c, TIMER_HEADER, c->l->cfg->header_timeout_ms);
    return 0;
}

static int on_method_complete(llhttp_t *p) {
    pf_conn *c = p->data;
    c->method = (llhttp_method_t)llhttp_get_method(p);
    c->method_known = true;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
    pf_conn *c = p->data;
    if (c->req.first_len + len > c->l->cfg->max_target_bytes) {
        c->error_status = 414;
        return -1;
    }
    if (http1_head_append_first(&c->req, at, len) != PF_OK) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
    pf_conn *c = p->data;
    /* RFC 9110 5.6.2 token characters; llhttp lets some others through in field names. */
    if (!http1_is_token(at, len)) {
        c->error_status = 400;
        c->error_reason = "invalid character in a header name";
        return -1;
    }
    pf_head *h = fields_of(c);
    if (!h || http1_head_append_name(h, at, len) != PF_OK) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
    pf_conn *c = p->data;
    /* llhttp joins obs-fold continuation lines into the value as a second span; RFC 9112
     * 5.2 lets us reject a fold, and a proxy must never pass one on. */
    pf_head *h = fields_of(c);
    if (!h) {
        c->error_status = 431;
        return -1;
    }
    if (http1_value_is_fold(h->last_was_value, c->value_ended_at_chunk_end, at == c->chunk_start)) {
        c->error_status = 400;
        c->error_reason = "obsolete line folding in a header";
        return -1;
    }
    c->value_ended_at_chunk_end = at + len == c->chunk_end;
    if (http1_head_append_value(h, at, len) != PF_OK) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_header_value_complete(llhttp_t *p) {
    pf_conn *c = p->data;
    pf_head *h = fields_of(c);
    if (!h || http1_head_finish_value(h) != PF_OK) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p) {
    pf_conn *c = p->data;
    timer_stop(c);
    c->in_trailers = true;
    dispatch(c);
    return closing(c) ? -1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    pf_conn *c = p->data;
    exchange_request_body(&c->ex, at, len);
    return 0;
}

static int on_message_complete(llhttp_t *p) {
    pf_conn *c = p->data;
    if (c->timer_kind == TIMER_BODY)
        timer_stop(c);
    if (c->connect_accepted) /* a tunnel's CONNECT has no exchange to end */
        return HPE_PAUSED;
    /* llhttp reports a chunked body's trailer fields like head fields: they went into the
     * trailer section, which the exchange keeps for the upstream (a retry sends them too). */
    const pf_head *t = c->trailers;
    for (size_t i = 0; t && i < t->count; i++)
        exchange_request_trailer(&c->ex, http1_name(t, i), t->headers[i].name_len,
                                 http1_value(t, i), t->headers[i].value_len);
    drop_trailers(c);
    exchange_request_end(&c->ex);
    return HPE_PAUSED;
}

static const llhttp_settings_t request_callbacks = {
    .on_message_begin = on_message_begin,
    .on_method_complete = on_method_complete,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static const llhttp_settings_t *request_settings(void) {
    return &request_callbacks;
}

/* ---- input ------------------------------------------------------------------------ */

static void parse_failed(pf_conn *c, llhttp_errno_t rc) {
    if (closing(c))
        return; /* dispatch already answered and started closing */
    int status = c->error_status ? c->error_status : 400;
    if (status == 431 && c->in_trailers) {
        /* The head went upstream and the body after it: a 431 now would answer for a
         * request the upstream is handling. The attempt is cut (its connection closed, so
         * the upstream never sees the request end); the client gets a 400 that says why
         * when no response has started, else the response is cut; the connection closes. */
        exchange_request_trailers_too_large(&c->ex);
        reject(c, 400, "request trailers over the listener's max_header_bytes or max_headers\n");
        return;
    }
    if (status == 400)
        log_debug("bad request client=%s error=%s reason=\"%s\"", c->client_ip,
                  llhttp_errno_name(rc), llhttp_get_error_reason(&c->parser));
    char body[160];
    const char *reason = c->error_reason ? c->error_reason
                         : status == 400 ? llhttp_get_error_reason(&c->parser)
                                         : http1_reason(status);
    snprintf(body, sizeof body, "%s\n", reason);
    if (c->state == CONN_IDLE)
        exchange_begin(&c->ex, &c->req);
    reject(c, status, body);
}

/* While a request body streams through, every bit of progress restarts the body timer:
 * a read from the client, or (when reading is paused because the upstream is not keeping
 * up) the upstream taking more. Whoever is paused when it fires is the one that stalled.
 * A backoff between attempts is nobody's stall. */
static void watch_body_progress(pf_conn *c) {
    bool streaming = c->ex.state != PF_EX_IDLE && c->ex.state != PF_EX_BACKOFF &&
                     c->ex.state != PF_EX_RESOLVING && !c->ex.request_complete && !closing(c);
    if (streaming && (c->timer_kind == TIMER_NONE || c->timer_kind == TIMER_BODY))
        timer_set(c, TIMER_BODY, c->l->cfg->body_timeout_ms);
    else if (!streaming && c->timer_kind == TIMER_BODY)
        timer_stop(c);
}

/* llhttp matched the whole HTTP/2 connection preface as the first request (RFC 9113 3.4):
 * from here on the connection is HTTP/2 with prior knowledge. */
static void start_h2(pf_conn *c) {
    timer_stop(c);
    c->h2 = h2_conn_new(c, c->w, c->l, c->stream, c->client_ip, c->bound_host, c->bound_port);
    if (!c->h2) {
        conn_free(c);
        return;
    }
    h2_conn_on_read(c->h2); /* what followed the preface; may free c */
}

static void process_input(pf_conn *c) {
    struct evbuffer *in = stream_input(c->stream);
    size_t limit = c->l->cfg->buffer_bytes;
    while (!closing(c) && !c->parser_paused && evbuffer_get_length(in) > 0) {
        /* Waiting to retry, or the upstream is not keeping up: the client waits too. */
        if (exchange_request_blocked(&c->ex, limit)) {
            c->read_paused = true;
            stream_read_enable(c->stream, false);
            watch_body_progress(c);
            return;
        }
        if (c->state == CONN_IDLE && c->timer_kind == TIMER_IDLE)
            timer_set(c, TIMER_HEADER, c->l->cfg->header_timeout_ms);
        struct evbuffer_iovec vec;
        if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
            break;
        c->chunk_start = vec.iov_base;
        c->chunk_end = c->chunk_start + vec.iov_len;
        llhttp_errno_t rc = llhttp_execute(&c->parser, vec.iov_base, vec.iov_len);
        size_t used = vec.iov_len;
        if (rc != HPE_OK) {
            const char *pos = llhttp_get_error_pos(&c->parser);
            used = pos ? (size_t)(pos - (const char *)vec.iov_base) : vec.iov_len;
        }
        evbuffer_drain(in, used);
        if ((rc == HPE_PAUSED || rc == HPE_PAUSED_UPGRADE) && c->connect_accepted) {
            start_bound(c);
            continue;
        }
        if (rc == HPE_PAUSED || rc == HPE_PAUSED_UPGRADE) {
            c->parser_paused = true;
            c->paused_for_upgrade = rc == HPE_PAUSED_UPGRADE;
            if (c->ex.state == PF_EX_DONE) {
                request_done(c);
                return;
            }
            /* Nothing more is read until the response is done; a connection that closes
             * after it need never be registered with epoll. */
            if (rc == HPE_PAUSED)
                stream_read_needed(c->stream, false);
            break;
        }
        if (rc == HPE_PAUSED_H2_UPGRADE && !c->dispatched) {
            start_h2(c);
            return;
        }
        if (rc != HPE_OK) {
            parse_failed(c, rc);
            return;
        }
    }
    if (c->read_paused && !exchange_request_blocked(&c->ex, limit)) {
        c->read_paused = false;
        stream_read_enable(c->stream, true);
    }
    watch_body_progress(c);
}

static void on_read(pf_stream *s, void *arg) {
    pf_conn *c = arg;
    if (c->tcp) {
        tcp_conn_on_read(c->tcp);
        return;
    }
    if (c->h2) {
        h2_conn_on_read(c->h2);
        return;
    }
    if (c->state == CONN_TUNNEL) {
        tunnel_on_read(exchange_tunnel(&c->ex), PF_TUNNEL_CLIENT);
        return;
    }
    if (c->state == CONN_LINGERING) {
        struct evbuffer *in = stream_input(s);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    process_input(c);
}

static void on_write(pf_stream *s, void *arg) {
    pf_conn *c = arg;
    if (c->tcp) {
        tcp_conn_on_write(c->tcp);
        return;
    }
    if (c->h2) {
        h2_conn_on_write(c->h2);
        return;
    }
    if (c->state == CONN_TUNNEL) {
        tunnel_on_write(exchange_tunnel(&c->ex), PF_TUNNEL_CLIENT);
        return;
    }
    if (c->state == CONN_LINGERING)
        return;
    if (c->state == CONN_CLOSING) {
        if (evbuffer_get_length(output(c)) == 0)
            begin_linger(c);
        else
            timer_set(c, TIMER_SEND, c->l->cfg->body_timeout_ms); /* the client reads on */
        return;
    }
    if (c->timer_kind == TIMER_SEND)
        timer_stop(c);
    exchange_downstream_writable(&c->ex);
}

static void on_event(pf_stream *s, int what, int err, void *arg) {
    pf_conn *c = arg;
    if (c->tcp) {
        tcp_conn_on_event(c->tcp, what, err);
        return;
    }
    if (c->state == CONN_TUNNEL) {
        tunnel_on_event(exchange_tunnel(&c->ex), PF_TUNNEL_CLIENT, what, err);
        return;
    }
    /* An HTTP/2 client that closes has nothing left to be answered on. */
    if (c->h2 || c->state == CONN_LINGERING || (what & PF_STREAM_ERROR)) {
        conn_free(c);
        return;
    }
    /* EOF: the client half-closed. What it asked for completely is still answered. */
    c->client_eof = true;
    if (c->ex.request_complete && in_flight(c))
        return;
    if (c->parser_paused && evbuffer_get_length(stream_input(c->stream)) > 0)
        return;
    conn_free(c);
}

/* A response cut short by the client side: logged once, as what it was. */
static void abort_response(pf_conn *c) {
    exchange_abort(&c->ex);
    exchange_log(&c->ex);
}

static void on_timer(void *arg) {
    pf_conn *c = arg;
    conn_timer_kind kind = c->timer_kind;
    c->timer_kind = TIMER_NONE;
    switch (kind) {
    case TIMER_HEADER:
        if (c->state == CONN_REQUEST) {
            log_debug("request head timeout client=%s", c->client_ip);
            reject(c, 408, "request head not received in time\n");
        } else {
            conn_free(c);
        }
        return;
    case TIMER_BODY:
        if (c->ex.state == PF_EX_STREAMING)
            abort_response(c); /* an upstream's response, cut: reject() logs only its own */
        if (c->read_paused) {
            log_debug("upstream stopped reading the request body client=%s", c->client_ip);
            reject(c, 504, "upstream stopped reading the request body\n");
        } else {
            log_debug("request body timeout client=%s", c->client_ip);
            reject(c, 408, "request body not received in time\n");
        }
        return;
    case TIMER_SEND:
        log_debug("client stopped reading client=%s", c->client_ip);
        if (!closing(c) && c->ex.state == PF_EX_STREAMING)
            abort_response(c);
        conn_free(c);
        return;
    case TIMER_IDLE:
    case TIMER_LINGER:
        conn_free(c);
        return;
    case TIMER_NONE:
        return;
    }
}

/* ---- downstream ops: what the exchange asks of this codec ------------------------------ */

static int ds_send_head(void *ds, const pf_head *resp, int status, pf_body_mode upstream_body,
                        uint64_t content_length, bool *skip_body) {
    pf_conn *c = ds;
    pf_response_framing f =
        http1_response_framing(c->method == HTTP_HEAD, status, upstream_body, c->minor);
    c->resp_body = f.body;
    *skip_body = f.skip_body;
    if (f.close || !c->ex.request_complete || c->draining || c->client_eof)
        c->keep_alive = false;
    pf_forward_response fwd = {.status = status,
                               .client_minor = c->minor,
                               .body = f.head_body,
                               .content_length = content_length,
                               .keep_alive = c->keep_alive,
                               .attempts = c->ex.attempts,
                               .edits = exchange_response_edits(&c->ex),
                               .cluster_edits = route_actions_response_edits(&c->ex),
                               .vars = exchange_header_vars(&c->ex)};
    int rc = http1_write_response_head(output(c), resp, &fwd);
    flush(c);
    return rc;
}

static void ds_send_interim(void *ds, const pf_head *resp, int status) {
    pf_conn *c = ds;
    /* 1xx responses go to HTTP/1.1 clients only (RFC 9110 15.2). */
    if (c->minor < 1)
        return;
    pf_forward_response fwd = {.status = status, .client_minor = 1, .keep_alive = true};
    http1_write_response_head(output(c), resp, &fwd);
    flush(c);
}

static void ds_send_body(void *ds, const char *at, size_t len) {
    pf_conn *c = ds;
    if (c->resp_body == PF_BODY_CHUNKED)
        http1_write_chunk(output(c), at, len);
    else
        evbuffer_add(output(c), at, len);
    flush(c);
}

/* Trailers go in a chunked response's last chunk; other framings have no room for them. */
static void ds_send_trailers(void *ds, const pf_head *trailers) {
    pf_conn *c = ds;
    if (c->resp_body != PF_BODY_CHUNKED || c->body_ended)
        return;
    http1_write_last_chunk(output(c), trailers);
    c->body_ended = true;
    flush(c);
}

static void ds_send_end(void *ds) {
    pf_conn *c = ds;
    if (c->resp_body == PF_BODY_CHUNKED && !c->body_ended)
        http1_write_last_chunk(output(c), NULL);
    flush(c);
    if (!c->ex.request_complete) {
        /* The upstream answered before the whole body arrived; the rest of the body is
         * not worth reading, and without it the connection cannot be reused. */
        exchange_log(&c->ex);
        reset_request(c);
        close_after_response(c);
        return;
    }
    if (c->read_paused) {
        c->read_paused = false;
        stream_read_enable(c->stream, true);
    }
    request_done(c);
}

/* A CONNECT that waited for on-demand discovery names a Service now: the connection is
 * bound to it as if it had been known at once, and what the client sent after the CONNECT
 * is read inside the tunnel. */
static void ds_connect_found(void *ds) {
    pf_conn *c = ds;
    char host[PF_HOST_MAX];
    int port = -1;
    if (router_parse_authority(http1_first(&c->req), c->req.first_len, host, sizeof host, &port) !=
            0 ||
        !(c->bound_host = strdup(host))) {
        close_after_response(c); /* cannot happen but out of memory: the target parsed before */
        return;
    }
    c->bound_port = port;
    c->tunnel_start_us = c->ex.start_us ? c->ex.start_us : pf_now_us();
    log_debug("CONNECT found its Service client=%s host=%s", c->client_ip, host);
    start_bound(c);
    if (c->read_paused) {
        c->read_paused = false;
        stream_read_enable(c->stream, true);
    }
    process_input(c);
}

/* pilotfish's own answer. Without a request body still to come the connection stays
 * usable; with one, reading a body nobody wants is not worth it, so we close. */
static void ds_reply(void *ds, int status, const char *body, const char *extra_headers) {
    pf_conn *c = ds;
    if (!c->ex.request_complete && c->req_body != PF_BODY_NONE)
        c->keep_alive = false;
    http1_write_local_response(output(c), status, body, c->keep_alive, extra_headers);
    flush(c);
    if (!c->keep_alive || closing(c)) {
        exchange_log(&c->ex);
        close_after_response(c);
        return;
    }
    if (c->parser_paused)
        request_done(c);
}

static void ds_abort(void *ds) {
    pf_conn *c = ds;
    exchange_log(&c->ex);
    close_after_response(c);
}

static bool ds_output_full(const void *ds) {
    const pf_conn *c = ds;
    return evbuffer_get_length(stream_output(c->stream)) >= c->l->cfg->buffer_bytes;
}

/* The upstream stopped reading because the client's output is full: the client now has the
 * listener's body_timeout to take some of it, or the connection closes. */
static void ds_wait_for_output(void *ds) {
    pf_conn *c = ds;
    if (c->timer_kind == TIMER_NONE)
        timer_set(c, TIMER_SEND, c->l->cfg->body_timeout_ms);
}

static void ds_request_writable(void *ds, bool after_retry) {
    pf_conn *c = ds;
    /* After a plain drain, wait for half the room, so reads are not resumed byte by byte. */
    size_t limit = after_retry ? c->l->cfg->buffer_bytes : c->l->cfg->buffer_bytes / 2 + 1;
    if (c->read_paused && !exchange_request_blocked(&c->ex, limit)) {
        c->read_paused = false;
        stream_read_enable(c->stream, true);
        process_input(c);
    } else if (after_retry) {
        process_input(c);
    }
}

/* A 101: its head goes out with the upstream's Upgrade value, and the connection is the
 * tunnel's from here (no timers of ours, no parsing: the bytes are another protocol's). */
static pf_stream *ds_send_upgrade(void *ds, const pf_head *resp, const char *upgrade, size_t len,
                                  bool *client_eof) {
    pf_conn *c = ds;
    timer_stop(c);
    conn_set_state(c, CONN_TUNNEL);
    pf_forward_response fwd = {.status = 101,
                               .client_minor = 1,
                               .keep_alive = true,
                               .upgrade = upgrade,
                               .upgrade_len = len};
    int rc = http1_write_response_head(output(c), resp, &fwd);
    flush(c);
    if (rc != PF_OK)
        return NULL;
    c->read_paused = false;
    stream_read_needed(c->stream, true);
    *client_eof = c->client_eof;
    return c->stream;
}

static void ds_close(void *ds) {
    conn_free(ds);
}

static const pf_downstream_ops downstream_http1_ops = {
    .send_head = ds_send_head,
    .send_interim = ds_send_interim,
    .send_body = ds_send_body,
    .send_end = ds_send_end,
    .send_trailers = ds_send_trailers,
    .connect_found = ds_connect_found,
    .reply = ds_reply,
    .abort = ds_abort,
    .output_full = ds_output_full,
    .wait_for_output = ds_wait_for_output,
    .request_writable = ds_request_writable,
    .send_upgrade = ds_send_upgrade,
    .close = ds_close,
};

/* ---- lifecycle -------------------------------------------------------------------- */

int conn_accept(pf_worker *w, pf_listener_rt *l, evutil_socket_t fd, const struct sockaddr *sa,
                int salen) {
    pf_conn *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return PF_ENOMEM;
    }
    c->w = w;
    c->l = l;
    static const pf_stream_callbacks callbacks = {on_read, on_write, on_event};
    c->stream =
        stream_new(w->base, fd, l->cfg->buffer_bytes, l->cfg->buffer_bytes / 2, &callbacks, c);
    int timer_rc = deadline_init(&c->timer, w->base, on_timer, c);
    SSL *ssl = c->stream && l->tls ? tls_server_ssl(l->tls, w->id, fd) : NULL;
    if (ssl)
        stream_set_tls(c->stream, ssl);
    if (!c->stream || timer_rc != PF_OK || (l->tls && !ssl)) {
        if (c->stream)
            stream_free(c->stream);
        else
            evutil_closesocket(fd);
        deadline_free(&c->timer);
        free(c);
        return PF_ENOMEM;
    }
    /* TCP_NODELAY comes from the listening socket (proxy_bind_listener): Linux copies it. */
    if (sa->sa_family == AF_INET)
        http1_format_ipv4(&((const struct sockaddr_in *)sa)->sin_addr, c->client_ip);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->client_ip,
                  sizeof c->client_ip);
    http1_head_init(&c->req, l->cfg->max_header_bytes, l->cfg->max_headers);
    exchange_init(&c->ex, w, l, &downstream_http1_ops, c, c->client_ip);
    llhttp_init(&c->parser, HTTP_REQUEST, request_settings());
    c->parser.data = c;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    metrics_inc(l->connections_total, 1);
    if (l->cfg->protocol == PF_LISTEN_TCP) {
        /* Relayed as bytes from here; tcp.c bounds the wait with its own timers. */
        c->tcp = tcp_conn_new(c, w, l, c->stream, c->client_ip);
        if (!c->tcp) {
            conn_free(c);
            return PF_ENOMEM;
        }
        tcp_conn_start(c->tcp); /* may free c */
        return PF_OK;
    }
    timer_set(c, TIMER_HEADER, l->cfg->header_timeout_ms);
    return PF_OK;
}

pf_conn *conn_next(const pf_conn *c) {
    return c->next;
}

void conn_drain(pf_conn *c) {
    c->draining = true;
    if (c->tcp)
        return; /* a relay runs until either side closes, or drain_timeout ends the process */
    if (c->h2) {
        h2_conn_drain(c->h2);
        return;
    }
    if (c->state == CONN_IDLE)
        start_close(c);
}

pf_listener_rt *conn_listener(const pf_conn *c) {
    return c->l;
}

uint64_t conn_request_start_us(const pf_conn *c) {
    if (c->tcp)
        return tcp_conn_start_us(c->tcp);
    if (c->h2)
        return h2_conn_oldest_start_us(c->h2);
    /* A tunnel still refers to the route and cluster it started on. */
    return c->state == CONN_REQUEST || c->state == CONN_TUNNEL ? c->ex.start_us : 0;
}
