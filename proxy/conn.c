/* Downstream connections: read requests with llhttp, route them, pick an endpoint, hand
 * them to an upstream connection, and write responses back in order.
 *
 * One request is in flight per connection. Pipelined requests wait in the input buffer:
 * on_message_complete pauses the parser, and it resumes only when the response is done,
 * so responses leave in request order. Bodies stream through in both directions with
 * backpressure: reading from one side stops while the other side's output holds more than
 * the listener's buffer_bytes. */
#include "core/json.h"
#include "core/log.h"
#include "core/time.h"
#include "proxy/proxy_int.h"
#include "proxy/stream.h"

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
    TIMER_LINGER,
    TIMER_RETRY
} conn_timer_kind;

struct pf_conn {
    pf_worker *w;
    pf_listener_rt *l;
    pf_stream *stream;
    struct event *timer;
    conn_timer_kind timer_kind;
    llhttp_t parser;
    pf_head req;
    char client_ip[INET6_ADDRSTRLEN];
    pf_conn *prev, *next;

    bool closing;     /* no more requests: close once the output is flushed */
    bool lingering;   /* write side shut, discarding input until EOF or timeout */
    bool client_eof;  /* the client half-closed; answer what is in flight, then close */
    bool read_paused; /* the upstream output is full */
    bool parser_paused;
    bool paused_for_upgrade;
    bool draining;
    bool value_ended_at_chunk_end;
    const char *chunk_start, *chunk_end; /* the bytes llhttp is executing now */

    /* The request in flight. */
    bool in_request;
    bool dispatched;
    bool req_complete;
    bool resp_started;
    bool resp_complete;
    bool keep_alive;
    bool replayable;     /* c->replay holds everything sent upstream so far */
    bool stale_retried;  /* the one free replay after a dead pooled connection was used */
    bool counted_active; /* in the cluster's requests in flight */
    bool counted_retry;  /* in the cluster's retries in flight */
    bool counted_ep;     /* in c->ep's requests in flight */
    unsigned attempts;
    unsigned retries;
    uint64_t deadline_us; /* route timeout; 0: none */
    const pf_config_route *route;
    const pf_config_retry *retry;
    /* balancer_hash of the endpoints this request failed on (the latest few), avoided by
     * the next attempts */
    uint64_t failed[PF_AVOID_MAX];
    unsigned failed_count;
    int error_status; /* a 4xx decided inside an llhttp callback */
    const char *error_reason;
    int status;
    int minor;
    llhttp_method_t method;
    bool method_known; /* the request line's method was parsed: else it is logged as "-" */
    pf_body_mode req_body;
    pf_body_mode resp_body;
    uint64_t start_us;
    uint64_t attempt_us; /* when the attempt in flight picked its endpoint */
    uint64_t bytes_in, bytes_out;
    const char *authority;
    size_t authority_len;
    const char *path;
    size_t path_len;
    char request_id[40];
    pf_worker_cluster *wc;
    pf_endpoint_set *set;
    const pf_endpoint *ep;
    pf_upstream *up;
    struct evbuffer *replay; /* head and body as sent upstream, while a retry is possible */
};

static const llhttp_settings_t *request_settings(void);
static void process_input(pf_conn *c);
static void retry_now(pf_conn *c);

static void timer_set(pf_conn *c, conn_timer_kind kind, uint64_t ms) {
    c->timer_kind = kind;
    struct timeval tv = pf_timeval_ms(ms);
    evtimer_add(c->timer, &tv);
}

static void timer_stop(pf_conn *c) {
    c->timer_kind = TIMER_NONE;
    evtimer_del(c->timer);
}

static struct evbuffer *output(pf_conn *c) {
    return stream_output(c->stream);
}

bool conn_output_full(const pf_conn *c) {
    return evbuffer_get_length(stream_output(c->stream)) >= c->l->cfg->buffer_bytes;
}

static void reset_request(pf_conn *c) {
    c->in_request = c->dispatched = c->req_complete = false;
    c->resp_started = c->resp_complete = false;
    c->replayable = c->stale_retried = false;
    c->attempts = c->retries = 0;
    c->deadline_us = 0;
    c->route = NULL;
    c->retry = NULL;
    c->failed_count = 0;
    c->error_status = c->status = 0;
    c->error_reason = NULL;
    c->req_body = c->resp_body = PF_BODY_NONE;
    c->bytes_in = c->bytes_out = 0;
    c->method_known = false;
    c->authority = c->path = NULL;
    c->authority_len = c->path_len = 0;
    c->request_id[0] = '\0';
    c->wc = NULL;
    c->ep = NULL;
    discovery_set_unref(c->set);
    c->set = NULL;
    if (c->replay)
        evbuffer_drain(c->replay, evbuffer_get_length(c->replay));
    http1_head_reset(&c->req);
}

/* Ends the current attempt: the upstream goes back to the pool or closes, and the
 * endpoint's in-flight count drops. */
static void end_attempt(pf_conn *c, bool reusable) {
    if (c->up) {
        upstream_release(c->up, reusable);
        c->up = NULL;
    }
    /* Once per attempt: several paths end an attempt, and the count must not go below. */
    if (c->counted_ep && c->ep && c->ep->stats)
        atomic_fetch_sub_explicit(&c->ep->stats->active_requests, 1, memory_order_relaxed);
    c->counted_ep = false;
}

/* Ends the request's share of the cluster's in-flight counts (breakers, retry budget). */
static void end_accounting(pf_conn *c) {
    if (c->counted_active && c->wc)
        atomic_fetch_sub_explicit(&c->wc->rt->active_requests, 1, memory_order_relaxed);
    if (c->counted_retry && c->wc)
        atomic_fetch_sub_explicit(&c->wc->rt->active_retries, 1, memory_order_relaxed);
    c->counted_active = c->counted_retry = false;
}

void conn_free(pf_conn *c) {
    if (!c)
        return;
    end_attempt(c, false);
    end_accounting(c);
    c->ep = NULL;
    discovery_set_unref(c->set);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->replay)
        evbuffer_free(c->replay);
    stream_free(c->stream);
    event_free(c->timer);
    http1_head_free(&c->req);
    worker_conn_closed(c->w, c->l);
    free(c);
}

/* Closing politely (RFC 9112 9.6): flush, shut our write side, then read and drop what
 * the client still sends for a while, so a reset does not destroy the response it has
 * not read yet. */
static void begin_linger(pf_conn *c) {
    c->lingering = true;
    stream_shutdown_write(c->stream);
    evbuffer_drain(stream_input(c->stream), evbuffer_get_length(stream_input(c->stream)));
    if (c->client_eof) {
        conn_free(c);
        return;
    }
    stream_read_enable(c->stream, true);
    timer_set(c, TIMER_LINGER, PF_LINGER_MS);
}

/* The client has body_timeout to take what is still in the output; whatever timer ran
 * for the request (head, body) has no say once we close. */
static void start_close(pf_conn *c) {
    c->closing = true;
    if (evbuffer_get_length(output(c)) == 0)
        begin_linger(c);
    else
        timer_set(c, TIMER_SEND, c->l->cfg->body_timeout_ms);
}

void conn_wait_for_client(pf_conn *c) {
    if (c->timer_kind == TIMER_NONE)
        timer_set(c, TIMER_SEND, c->l->cfg->body_timeout_ms);
}

static void log_request(pf_conn *c) {
    pf_listener_rt *l = c->l;
    uint64_t duration = pf_now_us() - c->start_us;
    metrics_inc(l->requests[code_class(c->status)], 1);
    metrics_observe_us(l->duration, duration);
    if (c->wc && c->ep)
        metrics_inc(c->wc->rt->requests[code_class(c->status)], 1);
    if (!c->w->proxy->cfg->access_log)
        return;
    pf_access_entry e = {
        .method = c->method_known ? llhttp_method_name(c->method) : "-",
        .authority = c->authority,
        .authority_len = c->authority_len,
        .path = c->path ? c->path : http1_first(&c->req),
        .path_len = c->path ? c->path_len : c->req.first_len,
        .status = c->status,
        .bytes_in = c->bytes_in,
        .bytes_out = c->bytes_out,
        .duration_us = duration,
        .cluster = c->wc ? c->wc->rt->cfg->name : NULL,
        .upstream = c->ep ? c->ep->addr.text : NULL,
        .request_id = c->request_id[0] ? c->request_id : NULL,
        .client = c->client_ip,
    };
    access_log_write(c->w, &e);
}

/* The request and its response are both done: log, and go on with the next request or
 * close. */
static void request_done(pf_conn *c) {
    log_request(c);
    end_attempt(c, false);
    end_accounting(c);
    c->ep = NULL;
    bool keep = c->keep_alive && !c->closing && !c->draining;
    reset_request(c);
    if (!keep) {
        start_close(c);
        return;
    }
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

/* Answers the request in flight with a response pilotfish made itself. */
static void local_reply_with(pf_conn *c, int status, const char *body, bool keep_alive,
                             const char *more_headers) {
    if (!keep_alive)
        c->keep_alive = false;
    char extra[192] = "";
    int n = 0;
    if (c->request_id[0])
        n = snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", c->request_id);
    if (c->attempts > 0 && n >= 0 && (size_t)n < sizeof extra)
        n += snprintf(extra + n, sizeof extra - (size_t)n, "x-pilotfish-attempts: %u\r\n",
                      c->attempts);
    if (more_headers && n >= 0 && (size_t)n < sizeof extra)
        snprintf(extra + n, sizeof extra - (size_t)n, "%s", more_headers);
    if (http1_write_local_response(output(c), status, body, c->keep_alive, extra) == PF_OK)
        c->bytes_out += strlen(body); /* body bytes, like a proxied response's */
    c->status = status;
    c->resp_started = c->resp_complete = true;
    if (status >= 400 && status < 500)
        metrics_inc(c->l->errors_total, 1);
}

static void local_reply(pf_conn *c, int status, const char *body, bool keep_alive) {
    local_reply_with(c, status, body, keep_alive, NULL);
}

/* A request that cannot go on: answer (when nothing was sent yet) and close. */
static void reject(pf_conn *c, int status, const char *body) {
    end_attempt(c, false);
    c->ep = NULL;
    if (!c->resp_started) {
        local_reply(c, status, body, false);
        if (!c->in_request)
            c->method = HTTP_GET;
        log_request(c);
    }
    c->closing = true;
    c->keep_alive = false;
    stream_read_enable(c->stream, false);
    start_close(c);
}

static void make_request_id(pf_conn *c) {
    /* RFC 9562 version 4 layout (8-4-4-4-12 hex, version 4, variant 10), so tools that
     * expect UUIDs accept it. Formatted by hand: this runs on every request. */
    static const char hex[] = "0123456789abcdef";
    uint64_t bits[2] = {worker_random(c->w), worker_random(c->w)};
    bits[0] = (bits[0] & ~0xf000ull) | 0x4000ull;
    bits[1] = (bits[1] & ~(0xc000ull << 48)) | (0x8000ull << 48);
    char *out = c->request_id;
    for (int half = 0; half < 2; half++) {
        for (int nibble = 15; nibble >= 0; nibble--) {
            int pos = half * 16 + (15 - nibble);
            if (pos == 8 || pos == 12 || pos == 16 || pos == 20)
                *out++ = '-';
            *out++ = hex[(bits[half] >> (nibble * 4)) & 0xf];
        }
    }
    *out = '\0';
}

/* Splits the request target: origin-form "/p?q"; absolute-form "http://authority/p?q"
 * whose authority overrides Host (RFC 9112 3.2.2), where an empty path ("http://h?q")
 * goes upstream as "/?q" (*root_first), or as "*" for OPTIONS without a query (3.2.4); or
 * the asterisk-form of OPTIONS, "*". A fragment is never part of a request (RFC 9110
 * 4.2.5): forwarding one would hand the upstream a target it may read differently. */
static int parse_target(pf_conn *c, const char **target, size_t *target_len, bool *root_first) {
    const char *t = http1_first(&c->req);
    size_t len = c->req.first_len;
    *root_first = false;
    if (memchr(t, '#', len))
        return -1;
    if (len > 0 && t[0] == '/') {
        *target = t;
        *target_len = len;
    } else if (len == 1 && t[0] == '*' && c->method == HTTP_OPTIONS) {
        *target = t;
        *target_len = 1;
    } else if (len > 7 && strncasecmp(t, "http://", 7) == 0) {
        const char *auth = t + 7;
        size_t rest = len - 7, alen = 0;
        while (alen < rest && auth[alen] != '/' && auth[alen] != '?' && auth[alen] != '#')
            alen++;
        if (alen == 0 || memchr(auth, '@', alen))
            return -1; /* userinfo is not allowed in http URIs (RFC 9110 4.2.4) */
        c->authority = auth;
        c->authority_len = alen;
        *target = alen < rest ? auth + alen : c->method == HTTP_OPTIONS ? "*" : "/";
        *target_len = alen < rest ? rest - alen : 1;
        *root_first = **target == '?';
    } else {
        return -1;
    }
    c->path = *root_first ? "/" : *target;
    c->path_len = *root_first ? 1 : strcspn(*target, "?#");
    if (c->path_len > *target_len)
        c->path_len = *target_len;
    return 0;
}

/* A request answered by pilotfish itself. Without a body the connection stays usable;
 * with one, reading a body nobody wants is not worth it, so we close. */
static int answer_locally(pf_conn *c, int status, const char *body, bool has_body) {
    if (has_body) {
        reject(c, status, body);
        return -1;
    }
    local_reply(c, status, body, true);
    return 0;
}

static bool method_is_idempotent(llhttp_method_t m) {
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_TRACE ||
           m == HTTP_PUT || m == HTTP_DELETE;
}

static void copy_buffer(struct evbuffer *dst, struct evbuffer *src) {
    size_t len = evbuffer_get_length(src);
    evbuffer_add(dst, evbuffer_pullup(src, (ev_ssize_t)len), len);
}

static int overloaded(pf_conn *c, bool has_body) {
    if (has_body) {
        /* Answered, logged, then closed like any rejected request with a body. */
        local_reply_with(c, 503, "cluster overloaded\n", false, "x-pilotfish-overloaded: true\r\n");
        log_request(c);
        reject(c, 503, "");
        return -1;
    }
    local_reply_with(c, 503, "cluster overloaded\n", true, "x-pilotfish-overloaded: true\r\n");
    return 0;
}

/* How long this attempt may wait for its response head: the per-try timeout, else the
 * cluster's response timeout, never past the route's deadline. */
static uint64_t attempt_timeout_ms(const pf_conn *c) {
    uint64_t ms = c->retry->per_try_timeout_ms ? c->retry->per_try_timeout_ms
                                               : c->wc->rt->cfg->response_timeout_ms;
    if (c->deadline_us) {
        uint64_t now = pf_now_us();
        uint64_t left = c->deadline_us > now ? (c->deadline_us - now + 999) / 1000 : 1;
        if (left < ms)
            ms = left;
    }
    return ms;
}

static uint64_t addr_hash(const pf_endpoint *ep) {
    return balancer_hash(ep->addr.text, strlen(ep->addr.text));
}

static bool is_failed(const pf_conn *c, const pf_endpoint *ep) {
    if (!ep || c->failed_count == 0)
        return false;
    uint64_t h = addr_hash(ep);
    for (unsigned k = 0; k < c->failed_count; k++)
        if (c->failed[k] == h)
            return true;
    return false;
}

/* Remembers ep as failed for this request; past PF_AVOID_MAX the oldest is forgotten. */
static void remember_failed(pf_conn *c, const pf_endpoint *ep) {
    if (!ep || is_failed(c, ep))
        return;
    if (c->failed_count == PF_AVOID_MAX) {
        memmove(c->failed, c->failed + 1, (PF_AVOID_MAX - 1) * sizeof *c->failed);
        c->failed_count--;
    }
    c->failed[c->failed_count++] = addr_hash(ep);
}

/* A healthy endpoint, preferring one other than the endpoint that just failed. A retry
 * that finds no other in the tiers now taking traffic tries the next tier's endpoints,
 * which discovery still calls healthy. */
static const pf_endpoint *pick_endpoint(pf_conn *c, pf_endpoint_set *set, pf_endpoint_set **from) {
    *from = set;
    pf_pick_context key =
        balancer_context(c->wc->balancer, &c->req, c->client_ip, c->path, c->path_len);
    key.avoid = c->failed;
    key.avoid_count = c->failed_count;
    const pf_endpoint *ep = balancer_pick(c->wc->balancer, set, &key);
    for (int tries = 0; is_failed(c, ep) && tries < 4 && set->healthy_count > 1; tries++)
        ep = balancer_pick(c->wc->balancer, set, &key);
    if (c->failed_count == 0 || (ep && !is_failed(c, ep)))
        return ep;
    pf_endpoint_set *raw = c->wc->cache.set;
    size_t start = (size_t)worker_random(c->w);
    for (size_t k = 0; raw && k < raw->count; k++) {
        const pf_endpoint *other = &raw->endpoints[(start + k) % raw->count];
        if (other->healthy && !is_failed(c, other)) {
            *from = raw;
            return other;
        }
    }
    return ep;
}

/* Sends the request (what c->replay holds) to an endpoint. Returns 0, or -1 after
 * answering locally and closing. */
static int start_attempt(pf_conn *c, bool has_body) {
    pf_endpoint_set *set = worker_cluster_set(c->wc), *from = NULL;
    const pf_endpoint *ep = set ? pick_endpoint(c, set, &from) : NULL;
    if (!ep)
        return answer_locally(c, 503, "no healthy endpoint in the cluster\n", has_body);
    if (c->set != from) {
        /* c->ep points into this set: hold it for as long as the attempt lasts. */
        discovery_set_unref(c->set);
        c->set = discovery_set_ref(from);
    }
    c->ep = ep;
    c->attempt_us = pf_now_us();
    if (ep->stats) {
        atomic_fetch_add_explicit(&ep->stats->active_requests, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&ep->stats->requests_total, 1, memory_order_relaxed);
        c->counted_ep = true;
    }
    bool reused = false, over = false;
    c->up = upstream_acquire(c->w, c->wc, ep, c, &reused, &over);
    if (!c->up) {
        end_attempt(c, false);
        c->ep = NULL;
        if (over)
            return overloaded(c, has_body);
        return answer_locally(c, 503, "cannot open an upstream connection\n", has_body);
    }
    c->attempts++;
    /* A request that will never be replayed hands its head over (chains move, no copy). */
    if (c->replayable)
        copy_buffer(upstream_output(c->up), c->replay);
    else
        evbuffer_add_buffer(upstream_output(c->up), c->replay);
    if (c->req_complete)
        upstream_request_sent(c->up, attempt_timeout_ms(c));
    return 0;
}

static int dispatch(pf_conn *c) {
    c->dispatched = true;
    c->method = (llhttp_method_t)llhttp_get_method(&c->parser);
    c->minor = c->parser.http_minor;
    c->keep_alive = llhttp_should_keep_alive(&c->parser) && !c->draining;
    if (c->parser.flags & F_CHUNKED)
        c->req_body = PF_BODY_CHUNKED;
    else if ((c->parser.flags & F_CONTENT_LENGTH) && c->parser.content_length > 0)
        c->req_body = PF_BODY_LENGTH;
    uint64_t content_length = c->parser.content_length;
    bool has_body = c->req_body != PF_BODY_NONE;

    if (c->parser.http_major != 1 || c->parser.http_minor > 1) {
        reject(c, 505, "HTTP version not supported\n");
        return -1;
    }
    if (c->method == HTTP_CONNECT) {
        reject(c, 405, "CONNECT is not supported: pilotfish is not an open proxy\n");
        return -1;
    }
    const char *target;
    size_t target_len;
    bool root_first;
    if (parse_target(c, &target, &target_len, &root_first) != 0) {
        reject(c, 400, "bad request target\n");
        return -1;
    }
    size_t host_count;
    long host_index = http1_find(&c->req, "host", &host_count);
    if (host_count > 1 || (host_count == 0 && c->minor == 1 && !c->authority)) {
        /* RFC 9112 3.2: exactly one Host in HTTP/1.1. */
        reject(c, 400, host_count ? "more than one Host header\n" : "missing Host header\n");
        return -1;
    }
    if (!c->authority && host_index >= 0) {
        c->authority = http1_value(&c->req, (size_t)host_index);
        c->authority_len = c->req.headers[host_index].value_len;
    }
    char host[PF_HOST_MAX] = "";
    int port = -1;
    if (c->authority_len > 0 &&
        router_parse_authority(c->authority, c->authority_len, host, sizeof host, &port) != 0) {
        reject(c, 400, "bad authority\n");
        return -1;
    }
    size_t request_id_count;
    long request_id_index = http1_find(&c->req, "x-request-id", &request_id_count);
    const char *generated_id = NULL;
    if (request_id_index >= 0) {
        pf_json_escape(c->request_id, sizeof c->request_id,
                       http1_value(&c->req, (size_t)request_id_index),
                       c->req.headers[request_id_index].value_len);
    } else {
        make_request_id(c);
        generated_id = c->request_id;
    }

    /* Configured routes first; then the services discovery found, by authority. */
    /* OPTIONS * asks about the server as a whole: it goes where its root would. */
    bool asterisk = c->path_len == 1 && c->path[0] == '*';
    const pf_config_route *route =
        router_find(c->l->router, host, port, asterisk ? "/" : c->path, c->path_len);
    long cluster_index = route ? (long)route->cluster_index
                               : service_routes_find(worker_service_routes(c->w), host, port);
    if (cluster_index < 0)
        return answer_locally(c, 404, "no route for this host and path\n", has_body);
    c->route = route;
    c->wc = worker_cluster(c->w, (size_t)cluster_index);
    if (!c->wc)
        return answer_locally(c, 503, "out of memory\n", has_body);
    pf_cluster_rt *rt = c->wc->rt;
    c->retry = route && route->has_retry ? &route->retry : &rt->cfg->retry;
    if (route && route->timeout_ms)
        c->deadline_us = c->start_us + route->timeout_ms * 1000u;
    if ((uint64_t)atomic_load_explicit(&rt->active_requests, memory_order_relaxed) >=
        rt->cfg->breakers.max_requests) {
        metrics_inc(rt->overflow_requests, 1);
        return overloaded(c, has_body);
    }
    atomic_fetch_add_explicit(&rt->active_requests, 1, memory_order_relaxed);
    c->counted_active = true;

    pf_forward_request fwd = {
        .method = llhttp_method_name(c->method),
        .target = target,
        .target_len = target_len,
        .root_first = root_first,
        .host = c->authority ? c->authority : "",
        .host_len = c->authority_len,
        .client_ip = c->client_ip,
        .proto = "http",
        .request_id = generated_id,
        .body = c->req_body,
        .content_length = content_length,
    };
    if (!c->replay)
        c->replay = evbuffer_new();
    if (!c->replay)
        return answer_locally(c, 503, "out of memory\n", has_body);
    http1_write_request_head(c->replay, &c->req, &fwd);
    c->replayable = method_is_idempotent(c->method) || c->retry->non_idempotent;
    return start_attempt(c, has_body);
}

/* ---- llhttp request callbacks ------------------------------------------------------ */

static int on_message_begin(llhttp_t *p) {
    pf_conn *c = p->data;
    c->in_request = true;
    c->start_us = pf_now_us();
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

/* RFC 9110 5.6.2 token characters; llhttp lets some others through in field names. */
static bool is_token(const char *at, size_t len) {
    static const char extra[] = "!#$%&'*+-.^_`|~";
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)at[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch && strchr(extra, ch))))
            return false;
    }
    return true;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
    pf_conn *c = p->data;
    if (!is_token(at, len)) {
        c->error_status = 400;
        c->error_reason = "invalid character in a header name";
        return -1;
    }
    if (http1_head_append_name(&c->req, at, len) != PF_OK) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
    pf_conn *c = p->data;
    /* llhttp joins obs-fold continuation lines into the value as a second span. A value
     * legitimately arrives in two spans only when a read ended inside it; any other gap
     * is a fold, which RFC 9112 5.2 lets us reject and a proxy must never pass on. */
    if (c->req.last_was_value && !(c->value_ended_at_chunk_end && at == c->chunk_start)) {
        c->error_status = 400;
        c->error_reason = "obsolete line folding in a header";
        return -1;
    }
    c->value_ended_at_chunk_end = at + len == c->chunk_end;
    if (http1_head_append_value(&c->req, at, len) != PF_OK) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_header_value_complete(llhttp_t *p) {
    pf_conn *c = p->data;
    if (http1_head_finish_value(&c->req) != PF_OK) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p) {
    pf_conn *c = p->data;
    timer_stop(c);
    return dispatch(c) == 0 ? 0 : -1;
}

static void write_body(struct evbuffer *out, pf_body_mode mode, const char *at, size_t len) {
    if (mode == PF_BODY_CHUNKED)
        http1_write_chunk(out, at, len);
    else
        evbuffer_add(out, at, len);
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    pf_conn *c = p->data;
    c->bytes_in += len;
    if (c->replayable) {
        /* Kept for a retry while it is small enough; past the limit, no retry. */
        size_t kept = evbuffer_get_length(c->replay);
        if (kept + len > c->retry->buffer_bytes + 16 * 1024) {
            c->replayable = false;
            evbuffer_drain(c->replay, kept);
        } else {
            write_body(c->replay, c->req_body, at, len);
        }
    }
    if (c->up)
        write_body(upstream_output(c->up), c->req_body, at, len);
    return 0; /* without an upstream: answered locally, or waiting to retry */
}

static int on_message_complete(llhttp_t *p) {
    pf_conn *c = p->data;
    c->req_complete = true;
    if (c->timer_kind == TIMER_BODY)
        timer_stop(c);
    if (c->req_body == PF_BODY_CHUNKED) {
        if (c->replayable)
            evbuffer_add(c->replay, "0\r\n\r\n", 5);
        if (c->up)
            evbuffer_add(upstream_output(c->up), "0\r\n\r\n", 5);
    }
    if (c->up)
        upstream_request_sent(c->up, attempt_timeout_ms(c));
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
    if (c->closing)
        return; /* dispatch already answered and started closing */
    int status = c->error_status ? c->error_status : 400;
    if (status == 400)
        log_debug("bad request client=%s error=%s reason=\"%s\"", c->client_ip,
                  llhttp_errno_name(rc), llhttp_get_error_reason(&c->parser));
    char body[160];
    const char *reason = c->error_reason ? c->error_reason
                         : status == 400 ? llhttp_get_error_reason(&c->parser)
                                         : http1_reason(status);
    snprintf(body, sizeof body, "%s\n", reason);
    if (!c->in_request)
        c->start_us = pf_now_us();
    reject(c, status, body);
}

/* While a request body streams through, every bit of progress restarts the body timer:
 * a read from the client, or (when reading is paused because the upstream is not keeping
 * up) the upstream taking more. Whoever is paused when it fires is the one that stalled. */
static void watch_body_progress(pf_conn *c) {
    bool streaming = c->dispatched && !c->req_complete && !c->closing;
    if (streaming && (c->timer_kind == TIMER_NONE || c->timer_kind == TIMER_BODY))
        timer_set(c, TIMER_BODY, c->l->cfg->body_timeout_ms);
    else if (!streaming && c->timer_kind == TIMER_BODY)
        timer_stop(c);
}

static void process_input(pf_conn *c) {
    struct evbuffer *in = stream_input(c->stream);
    while (!c->closing && !c->parser_paused && evbuffer_get_length(in) > 0) {
        /* Waiting to retry, or the upstream is not keeping up: the client waits too. */
        if (c->timer_kind == TIMER_RETRY ||
            (c->up && upstream_output_full(c->up, c->l->cfg->buffer_bytes))) {
            c->read_paused = true;
            stream_read_enable(c->stream, false);
            watch_body_progress(c);
            return;
        }
        if (!c->in_request && c->timer_kind == TIMER_IDLE)
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
        if (rc == HPE_PAUSED || rc == HPE_PAUSED_UPGRADE) {
            c->parser_paused = true;
            c->paused_for_upgrade = rc == HPE_PAUSED_UPGRADE;
            if (c->resp_complete) {
                request_done(c);
                return;
            }
            break;
        }
        if (rc != HPE_OK) {
            parse_failed(c, rc);
            return;
        }
    }
    if (c->read_paused && c->timer_kind != TIMER_RETRY &&
        !(c->up && upstream_output_full(c->up, c->l->cfg->buffer_bytes))) {
        c->read_paused = false;
        stream_read_enable(c->stream, true);
    }
    watch_body_progress(c);
}

static void on_read(pf_stream *s, void *arg) {
    pf_conn *c = arg;
    if (c->lingering) {
        struct evbuffer *in = stream_input(s);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    process_input(c);
}

static void on_write(pf_stream *s, void *arg) {
    pf_conn *c = arg;
    if (c->lingering)
        return;
    if (c->closing) {
        if (evbuffer_get_length(output(c)) == 0)
            begin_linger(c);
        else
            timer_set(c, TIMER_SEND, c->l->cfg->body_timeout_ms); /* the client reads on */
        return;
    }
    if (c->timer_kind == TIMER_SEND)
        timer_stop(c);
    if (c->up && !conn_output_full(c))
        upstream_resume_reading(c->up);
}

static void on_event(pf_stream *s, int what, int err, void *arg) {
    pf_conn *c = arg;
    if (c->lingering || (what & PF_STREAM_ERROR)) {
        conn_free(c);
        return;
    }
    /* EOF: the client half-closed. What it asked for completely is still answered. */
    c->client_eof = true;
    if (c->dispatched && c->req_complete && !c->resp_complete)
        return;
    if (c->parser_paused && evbuffer_get_length(stream_input(c->stream)) > 0)
        return;
    conn_free(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
    pf_conn *c = arg;
    conn_timer_kind kind = c->timer_kind;
    c->timer_kind = TIMER_NONE;
    switch (kind) {
    case TIMER_HEADER:
        if (c->in_request) {
            log_debug("request head timeout client=%s", c->client_ip);
            reject(c, 408, "request head not received in time\n");
        } else {
            conn_free(c);
        }
        return;
    case TIMER_BODY:
        if (c->resp_started && !c->resp_complete)
            log_request(c); /* an upstream's response, cut: reject() logs only its own */
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
        if (!c->closing && c->resp_started && !c->resp_complete)
            log_request(c);
        conn_free(c);
        return;
    case TIMER_IDLE:
    case TIMER_LINGER:
        conn_free(c);
        return;
    case TIMER_RETRY:
        retry_now(c);
        return;
    case TIMER_NONE:
        return;
    }
}

/* ---- called by upstream.c --------------------------------------------------------- */

/* Whether the failure of the current attempt may be answered by another attempt. */
static bool may_retry(pf_conn *c, pf_failure kind, int status) {
    if (c->resp_started || !c->replayable || !c->retry)
        return false;
    if (kind == PF_FAIL_STALE)
        return !c->stale_retried;
    uint32_t on = c->retry->on;
    bool gateway = status == 502 || status == 503 || status == 504;
    bool wanted = false;
    switch (kind) {
    case PF_FAIL_CONNECT:
        wanted = on & PF_RETRY_CONNECT_FAILURE;
        break;
    case PF_FAIL_RESET:
        wanted = on & PF_RETRY_RESET;
        break;
    case PF_FAIL_TIMEOUT:
        wanted = on & (PF_RETRY_GATEWAY_ERROR | PF_RETRY_5XX);
        break;
    case PF_FAIL_STATUS:
        wanted =
            ((on & PF_RETRY_5XX) && status >= 500) || ((on & PF_RETRY_GATEWAY_ERROR) && gateway);
        for (size_t i = 0;
             !wanted && (on & PF_RETRY_STATUS_CODES) && i < c->retry->status_code_count; i++)
            wanted = c->retry->status_codes[i] == status;
        break;
    default:
        break;
    }
    if (!wanted || c->retries >= c->retry->max_retries)
        return false;
    if (c->deadline_us && pf_now_us() >= c->deadline_us)
        return false;
    /* The budget keeps retries a small share of the traffic, so that a sick cluster is not
     * buried under its own retries; the breaker caps them outright. */
    pf_cluster_rt *rt = c->wc->rt;
    long active = atomic_load_explicit(&rt->active_requests, memory_order_relaxed);
    long retrying = atomic_load_explicit(&rt->active_retries, memory_order_relaxed);
    if (c->counted_retry)
        retrying--; /* this request already holds its place */
    long budget = active * (long)rt->cfg->budget_percent / 100;
    if (budget < (long)rt->cfg->budget_min_concurrency)
        budget = (long)rt->cfg->budget_min_concurrency;
    if (retrying >= budget) {
        metrics_inc(rt->retry_budget_exhausted, 1);
        return false;
    }
    if (retrying >= (long)rt->cfg->breakers.max_retries) {
        metrics_inc(rt->overflow_retries, 1);
        return false;
    }
    return true;
}

/* Starts the next attempt after a backoff (none for a dead pooled connection). */
static void schedule_retry(pf_conn *c, pf_failure kind) {
    if (kind == PF_FAIL_STALE) {
        c->stale_retried = true;
    } else {
        c->retries++;
        metrics_inc(c->wc->rt->retries, 1);
        if (!c->counted_retry) {
            atomic_fetch_add_explicit(&c->wc->rt->active_retries, 1, memory_order_relaxed);
            c->counted_retry = true;
        }
    }
    remember_failed(c, c->ep);
    uint64_t delay = 0;
    if (kind != PF_FAIL_STALE) {
        /* Exponential backoff with full jitter, capped. */
        uint64_t cap = c->retry->backoff_base_ms << (c->retries - 1 < 16 ? c->retries - 1 : 16);
        if (cap > c->retry->backoff_max_ms)
            cap = c->retry->backoff_max_ms;
        delay = cap ? worker_random(c->w) % (cap + 1) : 0;
    }
    timer_set(c, TIMER_RETRY, delay);
}

static void retry_now(pf_conn *c) {
    if (start_attempt(c, c->req_body != PF_BODY_NONE) != 0)
        return;
    if (c->resp_complete && c->parser_paused) {
        request_done(c); /* answered locally (no endpoint, overloaded) */
        return;
    }
    if (c->read_paused && c->up && !upstream_output_full(c->up, c->l->cfg->buffer_bytes)) {
        c->read_paused = false;
        stream_read_enable(c->stream, true);
    }
    process_input(c);
}

/* Tells passive outlier detection how the attempt on c->ep went. */
static void report(pf_conn *c, pf_health_outcome outcome) {
    if (c->ep && c->wc)
        health_report(c->wc->rt->health, c->ep, outcome);
}

int conn_on_response_head(pf_conn *c, pf_upstream *up, int status, pf_body_mode upstream_body,
                          uint64_t content_length, bool *skip_body) {
    report(c, health_outcome_of_status(status));
    /* Latency feedback; a fast 5xx must not make a failing endpoint look fast. */
    if (c->ep && status < 500)
        balancer_on_response(c->wc->balancer, c->ep, pf_now_us() - c->attempt_us);
    if (status >= 500 && may_retry(c, PF_FAIL_STATUS, status))
        return PF_RESPONSE_RETRY;
    c->status = status;
    bool no_body = c->method == HTTP_HEAD || status == 204 || status == 304;
    pf_forward_response fwd = {.status = status,
                               .client_minor = c->minor,
                               .content_length = content_length,
                               .attempts = c->attempts};
    if (no_body) {
        /* Framing headers of a HEAD or 304 describe the body that was not sent. */
        fwd.body = upstream_body == PF_BODY_LENGTH ? PF_BODY_LENGTH : PF_BODY_NONE;
        c->resp_body = PF_BODY_NONE;
        *skip_body = c->method == HTTP_HEAD;
    } else if (upstream_body == PF_BODY_LENGTH) {
        fwd.body = c->resp_body = PF_BODY_LENGTH;
    } else if (c->minor >= 1) {
        fwd.body = c->resp_body = PF_BODY_CHUNKED;
    } else {
        /* An HTTP/1.0 client knows no chunking: the body ends when we close. */
        fwd.body = c->resp_body = PF_BODY_EOF;
        c->keep_alive = false;
    }
    if (!c->req_complete || c->draining || c->client_eof)
        c->keep_alive = false;
    fwd.keep_alive = c->keep_alive;
    c->resp_started = true;
    return http1_write_response_head(output(c), upstream_response_head(up), &fwd);
}

void conn_on_response_interim(pf_conn *c, pf_upstream *up, int status) {
    /* 1xx responses go to HTTP/1.1 clients only (RFC 9110 15.2). */
    if (c->minor < 1)
        return;
    pf_forward_response fwd = {.status = status, .client_minor = 1, .keep_alive = true};
    http1_write_response_head(output(c), upstream_response_head(up), &fwd);
}

void conn_on_response_body(pf_conn *c, const char *at, size_t len) {
    c->bytes_out += len;
    if (c->resp_body == PF_BODY_CHUNKED)
        http1_write_chunk(output(c), at, len);
    else
        evbuffer_add(output(c), at, len);
}

void conn_on_response_complete(pf_conn *c, bool upstream_reusable) {
    if (c->resp_body == PF_BODY_CHUNKED)
        evbuffer_add(output(c), "0\r\n\r\n", 5);
    c->resp_complete = true;
    end_attempt(c, upstream_reusable && c->req_complete);
    if (!c->req_complete) {
        /* The upstream answered before the whole body arrived; the rest of the body is
         * not worth reading, and without it the connection cannot be reused. */
        c->keep_alive = false;
        c->closing = true;
        log_request(c);
        end_accounting(c);
        c->ep = NULL;
        stream_read_enable(c->stream, false);
        start_close(c);
        return;
    }
    if (c->read_paused) {
        c->read_paused = false;
        stream_read_enable(c->stream, true);
    }
    request_done(c);
}

void conn_on_upstream_error(pf_conn *c, int status, const char *reason, pf_failure kind) {
    /* A pooled connection the server closed says nothing about the endpoint's health; a
     * status was reported when its head arrived. */
    if (kind != PF_FAIL_STALE && kind != PF_FAIL_STATUS)
        report(c, PF_HEALTH_GATEWAY_FAILURE);
    end_attempt(c, false);
    if (may_retry(c, kind, status)) {
        log_debug("retrying client=%s cluster=%s failed=%s reason=\"%s\" attempt=%u", c->client_ip,
                  c->wc->rt->cfg->name, c->ep ? c->ep->addr.text : "-", reason, c->attempts + 1);
        schedule_retry(c, kind);
        return;
    }
    if (c->resp_started) {
        /* Part of the response is out: the only honest signal left is to cut it. */
        /* What was received still goes out; then the close, without a last chunk or the
         * promised length, tells the client the response is incomplete. */
        log_debug("response cut client=%s reason=\"%s\"", c->client_ip, reason);
        log_request(c);
        c->keep_alive = false;
        stream_read_enable(c->stream, false);
        start_close(c);
        return;
    }
    char body[128];
    snprintf(body, sizeof body, "%s\n", reason);
    if (!c->req_complete) {
        reject(c, status, body);
        return;
    }
    local_reply(c, status, body, true);
    if (c->parser_paused)
        request_done(c);
}

void conn_on_upstream_writable(pf_conn *c) {
    if (c->read_paused && !upstream_output_full(c->up, c->l->cfg->buffer_bytes / 2 + 1)) {
        c->read_paused = false;
        stream_read_enable(c->stream, true);
        process_input(c);
    }
}

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
    c->timer = evtimer_new(w->base, on_timer, c);
    if (!c->stream || !c->timer) {
        if (c->stream)
            stream_free(c->stream);
        else
            evutil_closesocket(fd);
        if (c->timer)
            event_free(c->timer);
        free(c);
        return PF_ENOMEM;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->client_ip,
                  sizeof c->client_ip);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->client_ip,
                  sizeof c->client_ip);
    http1_head_init(&c->req, l->cfg->max_header_bytes, l->cfg->max_headers);
    llhttp_init(&c->parser, HTTP_REQUEST, request_settings());
    c->parser.data = c;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    metrics_inc(l->connections_total, 1);
    timer_set(c, TIMER_HEADER, l->cfg->header_timeout_ms);
    return PF_OK;
}

pf_conn *conn_next(const pf_conn *c) {
    return c->next;
}

void conn_drain(pf_conn *c) {
    c->draining = true;
    if (!c->in_request && !c->closing)
        start_close(c);
}

pf_listener_rt *conn_listener(const pf_conn *c) {
    return c->l;
}

uint64_t conn_request_start_us(const pf_conn *c) {
    return c->in_request ? c->start_us : 0;
}
