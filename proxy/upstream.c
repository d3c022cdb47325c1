/* The HTTP/1 upstream codec: connections to endpoints, one attempt of an exchange at a
 * time on each. It writes the exchange's request (head, framed body), parses the response
 * with llhttp and hands it to the exchange, then goes back to the worker's pool
 * (keep-alive) or closes. The exchange drives it through upstream_http1_ops.
 *
 * Reentrancy rule: llhttp callbacks only pass data on or set flags. Anything that may
 * free this upstream (completion, errors) happens after llhttp_execute returns, and the
 * code returns at once after handing control to the owner. */
#include "core/log.h"
#include "core/time.h"
#include "proxy/deadline.h"
#include "proxy/exchange_int.h"
#include "proxy/h2_int.h"
#include "proxy/stream.h"
#include "proxy/tls_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Interim (1xx) responses allowed before the final one; more is a protocol error (502). */
#define PF_MAX_INTERIM_RESPONSES 16

typedef enum {
    UP_TIMER_NONE,
    UP_TIMER_CONNECT,
    UP_TIMER_RESPONSE,
    UP_TIMER_BODY, /* inside the response body: the longest pause allowed */
    UP_TIMER_IDLE
} up_timer_kind;

/* Where the attempt on this connection is; one move function checks every change. What
 * the connection itself knows (connected, reused, paused, request_sent) is orthogonal to
 * the response's progress and stays boolean. */
typedef enum {
    UP_IDLE,       /* no attempt: new, or idle in the pool */
    UP_AWAIT_HEAD, /* an exchange owns it; the final response head has not arrived */
    UP_INTERIM,    /* inside a 1xx response; the final head is still to come */
    UP_BODY,       /* the final head went to the exchange; its body follows */
    UP_COMPLETE,   /* the response ended; the exchange is told once llhttp returns */
    UP_TUNNEL,     /* a 101 switched protocols: the exchange's tunnel moves the bytes */
    UP_STATE_COUNT
} up_state;

struct pf_upstream {
    pf_worker *w;
    pf_worker_cluster *wc;
    pf_stream *stream;
    pf_deadline timer; /* its kind in timer_kind */
    up_timer_kind timer_kind;
    llhttp_t parser;
    pf_head resp;
    up_state state;
    pf_exchange *owner; /* the exchange of the attempt; NULL while idle */
    pf_pool_bucket *bucket;
    pf_upstream *next_idle;
    pf_endpoint_stats *stats;
    char addr[PF_ADDRTEXT_MAX];
    unsigned addr_hash;             /* bucket_index(addr): hashed once, not on every release */
    char tls_name[PF_DNS_NAME_MAX]; /* TLS: the name verified (its pool bucket's); else "" */
    SSL_SESSION *tls_session; /* the latest the endpoint sent on this connection, to pass on */
    bool connected;
    bool reused;
    uint32_t requests; /* started on this connection, for max_requests_per_connection */
    bool request_sent;
    bool pending; /* counted in the cluster's pending requests until connected */
    uint64_t connect_start_us;
    uint64_t response_timeout_ms;
    pf_body_mode req_body; /* how the request body in flight is framed */
    int retry_status;      /* a response status the owner wants retried */
    bool got_bytes;
    bool paused;
    bool skip_body;
    bool trailers;         /* resp now collects the chunked body's trailer fields */
    int parse_error;       /* nonzero: 502 after execute returns */
    const char *error_why; /* what was malformed, for the log; NULL: llhttp's reason */
    unsigned interims;     /* 1xx responses to the attempt so far */
};

static const llhttp_settings_t *response_settings(void);
static void pause_reading(pf_upstream *up);

/* allowed[from]: the states `from` may move to. Releasing a connection that will not be
 * reused frees it without a move. */
static const unsigned up_allowed[UP_STATE_COUNT] = {
    [UP_IDLE] = 1u << UP_AWAIT_HEAD,
    [UP_AWAIT_HEAD] = 1u << UP_INTERIM | 1u << UP_BODY | 1u << UP_TUNNEL,
    [UP_INTERIM] = 1u << UP_AWAIT_HEAD,
    [UP_BODY] = 1u << UP_COMPLETE,
    [UP_COMPLETE] = 1u << UP_IDLE,
    [UP_TUNNEL] = 0, /* never reused: released, it closes */
};

static void set_state(pf_upstream *up, up_state to) {
    if (!(up_allowed[up->state] & (1u << to))) {
        /* A response out of order here would reach the wrong exchange: stop loudly. */
        log_error("upstream: illegal move from state %d to %d upstream=%s", up->state, to,
                  up->addr);
        abort();
    }
    up->state = to;
}

/* The final response head went to the exchange (its body may be under way or done). */
static bool head_done(const pf_upstream *up) {
    return up->state == UP_BODY || up->state == UP_COMPLETE;
}

static void timer_set(pf_upstream *up, up_timer_kind kind, uint64_t ms) {
    up->timer_kind = kind;
    deadline_set(&up->timer, ms);
}

static void timer_stop(pf_upstream *up) {
    up->timer_kind = UP_TIMER_NONE;
    deadline_clear(&up->timer);
}

static void end_pending(pf_upstream *up) {
    if (up->pending) {
        up->pending = false;
        atomic_fetch_sub_explicit(&up->wc->rt->pending_requests, 1, memory_order_relaxed);
    }
}

static pf_pool_bucket *bucket_at(pf_worker_cluster *wc, unsigned i, const char *addr,
                                 const char *name, bool create);

/* Hands the connection's latest TLS session to its endpoint and name's bucket, for the
 * next connection to resume (a bucket may go while a connection runs: the connection holds
 * the session meanwhile). */
static void pass_session(pf_upstream *up) {
    if (!up->tls_session)
        return;
    pf_pool_bucket *b =
        up->wc ? bucket_at(up->wc, up->addr_hash, up->addr, up->tls_name, false) : NULL;
    if (b) {
        tls_session_free(b->tls_session);
        b->tls_session = up->tls_session;
    } else {
        tls_session_free(up->tls_session);
    }
    up->tls_session = NULL;
}

static void upstream_free(pf_upstream *up) {
    if (!up)
        return;
    end_pending(up);
    stream_free(up->stream); /* before pass_session: the SSL stores into up->tls_session */
    pass_session(up);
    deadline_free(&up->timer);
    http1_head_free(&up->resp);
    if (up->wc) {
        metrics_gauge_add(up->wc->rt->connections_active, -1);
        up->wc->conns--;
    }
    free(up);
}

static unsigned bucket_index(const char *addr) {
    uint32_t h = 2166136261u;
    for (const char *p = addr; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h % PF_POOL_BUCKETS;
}

static void bucket_free(pf_pool_bucket *b) {
    while (b->idle) {
        pf_upstream *up = b->idle;
        b->idle = up->next_idle;
        up->bucket = NULL;
        upstream_free(up);
    }
    tls_session_free(b->tls_session);
    free(b);
}

/* The bucket of (addr, name), in the chain i = bucket_index(addr). Names come from
 * requests' hosts, so an address keeps at most PF_POOL_NAMES_PER_ENDPOINT of them: a new one
 * beyond that replaces the oldest. */
static pf_pool_bucket *bucket_at(pf_worker_cluster *wc, unsigned i, const char *addr,
                                 const char *name, bool create) {
    size_t same_addr = 0;
    pf_pool_bucket **oldest = NULL;
    for (pf_pool_bucket **at = &wc->buckets[i]; *at; at = &(*at)->next) {
        pf_pool_bucket *b = *at;
        if (strcmp(b->addr, addr) != 0)
            continue;
        if (strcmp(b->name, name) == 0)
            return b;
        same_addr++;
        oldest = at; /* new buckets go first: the last one seen is the oldest */
    }
    if (!create)
        return NULL;
    if (same_addr >= PF_POOL_NAMES_PER_ENDPOINT && oldest) {
        pf_pool_bucket *gone = *oldest;
        *oldest = gone->next;
        bucket_free(gone);
    }
    pf_pool_bucket *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    snprintf(b->addr, sizeof b->addr, "%s", addr);
    snprintf(b->name, sizeof b->name, "%s", name);
    b->next = wc->buckets[i];
    wc->buckets[i] = b;
    return b;
}

static pf_pool_bucket *bucket_for(pf_worker_cluster *wc, const char *addr, const char *name,
                                  bool create) {
    return bucket_at(wc, bucket_index(addr), addr, name, create);
}

static void pool_remove(pf_upstream *up) {
    pf_pool_bucket *b = up->bucket;
    if (!b)
        return;
    for (pf_upstream **p = &b->idle; *p; p = &(*p)->next_idle) {
        if (*p == up) {
            *p = up->next_idle;
            b->idle_count--;
            break;
        }
    }
    up->bucket = NULL;
    up->next_idle = NULL;
}

bool pool_set_has(const pf_endpoint_set *set, const char *addr) {
    size_t lo = 0, hi = set ? set->count : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(set->endpoints[mid].addr.text, addr);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

void pool_prune(pf_worker_cluster *wc, const pf_endpoint_set *set) {
    h2_upstream_prune(wc, set);
    for (unsigned i = 0; i < PF_POOL_BUCKETS; i++) {
        for (pf_pool_bucket **at = &wc->buckets[i]; *at;) {
            pf_pool_bucket *b = *at;
            if (pool_set_has(set, b->addr)) {
                at = &b->next;
                continue;
            }
            /* Departed: its idle connections would only hold descriptors and count against
             * max_connections until idle_timeout. Busy ones close on release. */
            *at = b->next;
            bucket_free(b);
        }
    }
}

void pool_free_all(pf_worker_cluster *wc) {
    h2_upstream_free_all(wc);
    for (unsigned i = 0; i < PF_POOL_BUCKETS; i++) {
        pf_pool_bucket *b = wc->buckets[i];
        wc->buckets[i] = NULL; /* first: freed connections look their bucket up */
        while (b) {
            pf_pool_bucket *next = b->next;
            bucket_free(b);
            b = next;
        }
    }
}

/* Ends the exchange with an error for the owner. Returns nothing: `up` is gone after. */
static void fail(pf_upstream *up, int status, const char *reason, pf_failure kind) {
    pf_exchange *owner = up->owner;
    log_debug("upstream failed cluster=%s upstream=%s status=%d reason=\"%s\"",
              up->wc->rt->cfg->name, up->addr, status, reason);
    exchange_on_upstream_error(owner, status, reason, kind);
}

static void process_input(pf_upstream *up) {
    struct evbuffer *in = stream_input(up->stream);
    while (up->state != UP_COMPLETE && up->state != UP_TUNNEL && !up->parse_error &&
           evbuffer_get_length(in) > 0) {
        /* Interim responses are output too: a client that reads slowly holds them back
         * like the body, within buffer_bytes. */
        if ((head_done(up) || up->interims) && exchange_downstream_full(up->owner)) {
            pause_reading(up);
            exchange_wait_for_downstream(up->owner);
            return;
        }
        struct evbuffer_iovec vec;
        if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
            break;
        up->got_bytes = true;
        llhttp_errno_t rc = llhttp_execute(&up->parser, vec.iov_base, vec.iov_len);
        size_t used = vec.iov_len;
        if (rc != HPE_OK) {
            const char *pos = llhttp_get_error_pos(&up->parser);
            used = pos ? (size_t)(pos - (const char *)vec.iov_base) : 0;
        }
        evbuffer_drain(in, used);
        if (rc == HPE_PAUSED && up->state == UP_AWAIT_HEAD) {
            /* an interim response ended: look at the client's output before the next */
            llhttp_resume(&up->parser);
            continue;
        }
        if (rc == HPE_PAUSED || rc == HPE_PAUSED_UPGRADE)
            break;
        if (rc != HPE_OK && !up->parse_error) {
            log_debug("upstream response malformed cluster=%s upstream=%s error=%s reason=\"%s\"",
                      up->wc->rt->cfg->name, up->addr, llhttp_errno_name(rc),
                      llhttp_get_error_reason(&up->parser));
            up->parse_error = 502;
        }
    }
    if (up->parse_error) {
        if (up->retry_status) {
            fail(up, up->retry_status, "upstream answered with a retriable status", PF_FAIL_STATUS);
        } else {
            metrics_inc(up->wc->rt->protocol_errors, 1);
            fail(up, up->parse_error,
                 up->error_why ? up->error_why : "upstream sent a malformed response",
                 PF_FAIL_PROTOCOL);
        }
        return;
    }
    if (up->state == UP_TUNNEL) {
        /* What follows the 101's head stays in the input for the tunnel. */
        if (exchange_on_upgrade(up->owner, &up->resp) != 0)
            fail(up, 502, "upstream switched protocols without an Upgrade header",
                 PF_FAIL_PROTOCOL);
        return; /* the tunnel may have ended already, with this upstream */
    }
    if (up->state == UP_COMPLETE) {
        /* Bytes after the response mean the upstream is out of step: never reuse it. */
        bool reusable = llhttp_should_keep_alive(&up->parser) && evbuffer_get_length(in) == 0;
        exchange_on_response_complete(up->owner, reusable);
        return;
    }
    /* Mid-body and still reading: each read restarts the body timer. (Paused for a slow
     * client, the upstream is not the one stalling; the timer stays off.) */
    if (head_done(up) && !up->paused)
        timer_set(up, UP_TIMER_BODY, up->wc->rt->cfg->body_timeout_ms);
}

static void on_read(pf_stream *s, void *arg) {
    pf_upstream *up = arg;
    if (up->state == UP_TUNNEL) {
        tunnel_on_read(exchange_tunnel(up->owner), PF_TUNNEL_UPSTREAM);
        return;
    }
    if (up->state == UP_IDLE) {
        /* An idle connection has nothing to say; data here means it is out of step. */
        pool_remove(up);
        upstream_free(up);
        return;
    }
    process_input(up);
}

static void on_write(pf_stream *s, void *arg) {
    pf_upstream *up = arg;
    if (up->state == UP_TUNNEL)
        tunnel_on_write(exchange_tunnel(up->owner), PF_TUNNEL_UPSTREAM);
    else if (up->state != UP_IDLE)
        exchange_on_upstream_writable(up->owner);
}

static void on_event(pf_stream *s, int what, int err, void *arg) {
    pf_upstream *up = arg;
    if (what & PF_STREAM_CONNECTED) {
        up->connected = true;
        metrics_observe_us(up->wc->rt->connect_duration, pf_now_us() - up->connect_start_us);
        end_pending(up);
        if (up->request_sent)
            timer_set(up, UP_TIMER_RESPONSE, up->response_timeout_ms);
        else
            timer_stop(up);
        return;
    }
    if (up->state == UP_TUNNEL) {
        tunnel_on_event(exchange_tunnel(up->owner), PF_TUNNEL_UPSTREAM, what, err);
        return;
    }
    if (up->state == UP_IDLE) {
        pool_remove(up);
        upstream_free(up);
        return;
    }
    if (!up->connected) {
        metrics_inc(up->wc->rt->connect_failures, 1);
        if (up->stats)
            atomic_fetch_add_explicit(&up->stats->connect_failures_total, 1, memory_order_relaxed);
        log_debug("upstream connect failed cluster=%s upstream=%s error=\"%s\"",
                  up->wc->rt->cfg->name, up->addr, strerror(err));
        fail(up, 503, "upstream connect failed", PF_FAIL_CONNECT);
        return;
    }
    if ((what & PF_STREAM_EOF) && head_done(up) && llhttp_message_needs_eof(&up->parser)) {
        /* A close-delimited body (RFC 9112 6.3 rule 8) ends here. */
        process_input(up);
        if (up->state != UP_BODY)
            return;
        llhttp_finish(&up->parser); /* HPE_PAUSED: on_message_complete pauses */
        if (up->state == UP_COMPLETE) {
            exchange_on_response_complete(up->owner, false);
            return;
        }
    }
    metrics_inc(up->wc->rt->resets, 1);
    /* A reused connection that the server closed while it sat idle is the one failure a
     * fresh connection fixes: nothing was answered, so the request was not processed. */
    bool stale = up->reused && !up->got_bytes;
    fail(up, 502,
         head_done(up) ? "upstream closed the connection mid-response"
                       : "upstream closed the connection before responding",
         stale ? PF_FAIL_STALE : PF_FAIL_RESET);
}

static void on_timer(void *arg) {
    pf_upstream *up = arg;
    up_timer_kind kind = up->timer_kind;
    up->timer_kind = UP_TIMER_NONE;
    switch (kind) {
    case UP_TIMER_CONNECT:
        metrics_inc(up->wc->rt->connect_timeouts, 1);
        fail(up, 503, "upstream connect timeout", PF_FAIL_CONNECT);
        return;
    case UP_TIMER_RESPONSE:
        metrics_inc(up->wc->rt->response_timeouts, 1);
        fail(up, 504, "upstream response timeout", PF_FAIL_TIMEOUT);
        return;
    case UP_TIMER_BODY:
        metrics_inc(up->wc->rt->response_timeouts, 1);
        fail(up, 504, "upstream stalled in the middle of the response body", PF_FAIL_TIMEOUT);
        return;
    case UP_TIMER_IDLE:
        pool_remove(up);
        upstream_free(up);
        return;
    case UP_TIMER_NONE:
        return;
    }
}

static pf_upstream *take_idle(pf_worker_cluster *wc, const pf_endpoint *ep, const char *name) {
    pf_pool_bucket *b = bucket_for(wc, ep->addr.text, name, false);
    if (!b || !b->idle)
        return NULL;
    pf_upstream *up = b->idle;
    b->idle = up->next_idle;
    b->idle_count--;
    up->next_idle = NULL;
    up->bucket = NULL;
    return up;
}

/* The name a TLS connection to ep verifies for this request (see tls_upstream_name), in
 * name[PF_DNS_NAME_MAX]; "" for plaintext. */
static void upstream_tls_name(pf_worker_cluster *wc, const pf_endpoint *ep,
                              const pf_exchange_request *req, char *name) {
    name[0] = '\0';
    if (!wc->rt->tls)
        return;
    const char *n = tls_upstream_name(wc->rt->cfg, req->fwd.host, req->fwd.host_len, ep->addr.text,
                                      name, PF_DNS_NAME_MAX);
    if (n != name)
        snprintf(name, PF_DNS_NAME_MAX, "%s", n);
}

/* TLS clusters: the stream speaks TLS to the endpoint, verifying up->tls_name, and resumes
 * the session the endpoint last gave this worker for that name. */
static int start_tls(pf_upstream *up, int fd, const pf_endpoint *ep) {
    pf_worker_cluster *wc = up->wc;
    /* made now (not at release) so that a connection the endpoint closes after one
     * response still has a bucket to leave its session in */
    pf_pool_bucket *b = bucket_for(wc, ep->addr.text, up->tls_name, true);
    SSL *ssl = tls_client_ssl(wc->rt->tls, up->w->id, fd, up->tls_name, b ? b->tls_session : NULL,
                              &up->tls_session);
    if (!ssl)
        return PF_ENOMEM;
    stream_set_tls(up->stream, ssl);
    return PF_OK;
}

static pf_upstream *connect_new(pf_worker *w, pf_worker_cluster *wc, const pf_endpoint *ep,
                                const char *tls_name) {
    pf_upstream *up = calloc(1, sizeof *up);
    if (!up)
        return NULL;
    up->w = w;
    up->wc = wc;
    up->pending = true;
    upstream_count_opening(wc);
    snprintf(up->addr, sizeof up->addr, "%s", ep->addr.text);
    up->addr_hash = bucket_index(up->addr);
    snprintf(up->tls_name, sizeof up->tls_name, "%s", tls_name);
    const pf_config_cluster *cfg = wc->rt->cfg;
    http1_head_init(&up->resp, cfg->max_header_bytes, cfg->max_headers);
    int timer_rc = deadline_init(&up->timer, w->base, on_timer, up);
    int fd = socket(ep->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || timer_rc != PF_OK) {
        if (fd >= 0)
            close(fd);
        upstream_free(up);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    static const pf_stream_callbacks callbacks = {on_read, on_write, on_event};
    up->stream = stream_new(w->base, fd, cfg->buffer_bytes, cfg->buffer_bytes / 2, &callbacks, up);
    if (!up->stream) {
        close(fd);
        upstream_free(up);
        return NULL;
    }
    if (wc->rt->tls && start_tls(up, fd, ep) != PF_OK) {
        upstream_free(up);
        return NULL;
    }
    llhttp_init(&up->parser, HTTP_RESPONSE, response_settings());
    up->parser.data = up;
    timer_set(up, UP_TIMER_CONNECT, wc->rt->cfg->connect_timeout_ms);
    up->connect_start_us = pf_now_us();
    stream_connect(up->stream, (const struct sockaddr *)&ep->addr.ss, ep->addr.len);
    return up;
}

void upstream_count_opening(pf_worker_cluster *wc) {
    wc->conns++; /* until the connection is freed: the gauge's -1 goes with it */
    atomic_fetch_add_explicit(&wc->rt->pending_requests, 1, memory_order_relaxed);
    metrics_gauge_add(wc->rt->connections_active, 1);
    metrics_inc(wc->rt->connections_total, 1);
}

bool upstream_may_connect(pf_worker_cluster *wc) {
    const pf_config_breakers *limits = &wc->rt->cfg->breakers;
    if (atomic_load_explicit(&wc->rt->connections_active->value, memory_order_relaxed) >=
        (int64_t)limits->max_connections) {
        metrics_inc(wc->rt->overflow_connections, 1);
        return false;
    }
    if (atomic_load_explicit(&wc->rt->pending_requests, memory_order_relaxed) >=
        (long)limits->max_pending_requests) {
        metrics_inc(wc->rt->overflow_pending, 1);
        return false;
    }
    return true;
}

static void pause_reading(pf_upstream *up) {
    if (!up->paused) {
        up->paused = true;
        stream_read_enable(up->stream, false);
        if (up->timer_kind == UP_TIMER_BODY)
            timer_stop(up);
    }
}

/* ---- upstream_http1_ops: what the exchange calls ------------------------------------- */

static void release(void *arg, bool reusable);

/* A pooled connection to ep when there is one, else a new one (if the breakers allow),
 * with the exchange's request head queued. */
static void *start(pf_exchange *ex, const pf_endpoint *ep, bool *overloaded) {
    pf_worker_cluster *wc = exchange_cluster(ex);
    char tls_name[PF_DNS_NAME_MAX];
    upstream_tls_name(wc, ep, exchange_request(ex), tls_name);
    pf_upstream *up = take_idle(wc, ep, tls_name);
    if (up) {
        timer_stop(up);
        up->reused = true;
        metrics_inc(wc->rt->pool_reuses, 1);
    } else {
        if (!upstream_may_connect(wc)) {
            *overloaded = true;
            return NULL;
        }
        up = connect_new(exchange_worker(ex), wc, ep, tls_name);
        if (!up)
            return NULL;
    }
    set_state(up, UP_AWAIT_HEAD);
    up->requests++;
    up->owner = ex;
    up->stats = ep->stats;
    up->request_sent = false;
    up->got_bytes = false;
    up->skip_body = false;
    up->parse_error = 0;
    up->error_why = NULL;
    up->interims = 0;
    up->retry_status = 0;
    up->trailers = false;
    http1_head_reset(&up->resp);
    const pf_exchange_request *req = exchange_request(ex);
    up->req_body = req->fwd.body;
    if (http1_write_request_head(stream_output(up->stream), req->head, &req->fwd) != PF_OK) {
        release(up, false);
        return NULL;
    }
    stream_flush(up->stream); /* queued while a new connection connects */
    return up;
}

static void write_body(void *arg, const char *at, size_t len) {
    pf_upstream *up = arg;
    if (up->req_body == PF_BODY_CHUNKED)
        http1_write_chunk(stream_output(up->stream), at, len);
    else
        evbuffer_add(stream_output(up->stream), at, len);
    stream_flush(up->stream);
}

static void replay_body(void *arg, struct evbuffer *body) {
    pf_upstream *up = arg;
    struct evbuffer *out = stream_output(up->stream);
    if (up->req_body != PF_BODY_CHUNKED) {
        http1_add_reference(out, body);
        stream_flush(up->stream);
        return;
    }
    /* One chunk for all of it: the chunk size line, the body by reference, CRLF. */
    char size[24];
    int n = snprintf(size, sizeof size, "%zx\r\n", evbuffer_get_length(body));
    evbuffer_add(out, size, (size_t)n);
    http1_add_reference(out, body);
    evbuffer_add(out, "\r\n", 2);
    stream_flush(up->stream);
}

static void end_body(void *arg, uint64_t timeout_ms) {
    pf_upstream *up = arg;
    if (up->req_body == PF_BODY_CHUNKED) /* the last chunk carries the request's trailers */
        http1_write_last_chunk(stream_output(up->stream), exchange_request_trailers(up->owner));
    stream_flush(up->stream);
    up->request_sent = true;
    up->response_timeout_ms = timeout_ms;
    /* An upstream that answered before the request ended is already timed by its body. */
    if ((up->connected || up->reused) && !head_done(up))
        timer_set(up, UP_TIMER_RESPONSE, timeout_ms);
}

static bool output_full(const void *arg, size_t limit) {
    const pf_upstream *up = arg;
    return evbuffer_get_length(stream_output(up->stream)) >= limit;
}

static void resume(void *arg) {
    pf_upstream *up = arg;
    if (up->paused) {
        up->paused = false;
        stream_read_enable(up->stream, true);
        process_input(up);
    }
}

static void release(void *arg, bool reusable) {
    pf_upstream *up = arg;
    if (!up)
        return;
    up->owner = NULL;
    up->stats = NULL;
    timer_stop(up);
    pf_worker_cluster *wc = up->wc;
    /* Unsent request bytes would go out ahead of the next request, and the rest of a
     * response would answer it: not reusable. */
    if (evbuffer_get_length(stream_output(up->stream)) > 0 || up->state != UP_COMPLETE)
        reusable = false;
    uint32_t max_requests = wc->rt->cfg->max_requests_per_connection;
    if (max_requests && up->requests >= max_requests)
        reusable = false; /* served its share: closed rather than pooled */
    /* An endpoint that left the set gets no pooled connection (nor a bucket again). */
    if (!reusable || atomic_load_explicit(&up->w->proxy->draining, memory_order_relaxed) ||
        wc->rt->cfg->max_idle_per_endpoint == 0 ||
        !pool_set_has(discovery_cache_get(&wc->cache), up->addr)) {
        upstream_free(up);
        return;
    }
    pf_pool_bucket *b = bucket_at(wc, up->addr_hash, up->addr, up->tls_name, true);
    if (!b || b->idle_count >= wc->rt->cfg->max_idle_per_endpoint) {
        upstream_free(up);
        return;
    }
    pass_session(up);
    set_state(up, UP_IDLE);
    llhttp_init(&up->parser, HTTP_RESPONSE, response_settings());
    up->parser.data = up;
    up->paused = false;
    stream_read_enable(up->stream, true);
    up->bucket = b;
    up->next_idle = b->idle;
    b->idle = up;
    b->idle_count++;
    timer_set(up, UP_TIMER_IDLE, wc->rt->cfg->upstream_idle_timeout_ms);
}

static pf_stream *tunnel_stream(void *arg) {
    pf_upstream *up = arg;
    /* The tunnel sets the pace from here; reading may have been paused for the client. */
    up->paused = false;
    return up->stream;
}

const pf_upstream_ops upstream_http1_ops = {
    .start = start,
    .write_body = write_body,
    .replay_body = replay_body,
    .end_body = end_body,
    .output_full = output_full,
    .resume = resume,
    .release = release,
    .tunnel_stream = tunnel_stream,
};

/* ---- llhttp response callbacks ---------------------------------------------------- */

/* An appender's result as an llhttp callback's: a head over the cluster's limits says so. */
static int head_added(pf_upstream *up, int rc) {
    if (rc == PF_ELIMIT)
        up->error_why = "upstream response head over the cluster's max_header_bytes or "
                        "max_headers";
    return rc == PF_OK ? 0 : -1;
}

static int on_status(llhttp_t *p, const char *at, size_t len) {
    pf_upstream *up = p->data;
    return head_added(up, http1_head_append_first(&up->resp, at, len));
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
    pf_upstream *up = p->data;
    if (up->state == UP_BODY && !up->trailers) {
        /* Fields after a chunked body are its trailers; the head went downstream already. */
        http1_head_reset(&up->resp);
        up->trailers = true;
    }
    return head_added(up, http1_head_append_name(&up->resp, at, len));
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
    pf_upstream *up = p->data;
    return head_added(up, http1_head_append_value(&up->resp, at, len));
}

static int on_header_value_complete(llhttp_t *p) {
    pf_upstream *up = p->data;
    return head_added(up, http1_head_finish_value(&up->resp));
}

static int on_headers_complete(llhttp_t *p) {
    pf_upstream *up = p->data;
    int status = p->status_code;
    if (status >= 100 && status < 200) {
        if (status == 101 && exchange_upgrading(up->owner)) {
            /* The switch the request asked for: no body, the rest is the tunnel's. */
            set_state(up, UP_TUNNEL);
            timer_stop(up);
            return 2;
        }
        if (status == 101) {
            /* pilotfish removed Upgrade from the request, so a switch is a broken peer. */
            log_debug("upstream switched protocols unasked cluster=%s upstream=%s",
                      up->wc->rt->cfg->name, up->addr);
            up->parse_error = 502;
            return -1;
        }
        if (++up->interims > PF_MAX_INTERIM_RESPONSES) {
            /* An endless stream of 100 or 102 would hold the request forever. */
            up->parse_error = 502;
            up->error_why = "upstream sent more than 16 interim responses";
            return -1;
        }
        set_state(up, UP_INTERIM);
        exchange_on_response_interim(up->owner, &up->resp, status);
        return 0;
    }
    set_state(up, UP_BODY);
    pf_body_mode mode = http1_response_body_mode(p->flags & F_CHUNKED, p->flags & F_CONTENT_LENGTH);
    bool skip = false;
    int rc =
        exchange_on_response_head(up->owner, &up->resp, status, mode, p->content_length, &skip);
    if (rc == PF_RESPONSE_RETRY) {
        /* The owner retries elsewhere; this response is dropped with its connection. */
        up->retry_status = status;
        up->parse_error = status;
        return -1;
    }
    if (rc != 0) {
        up->parse_error = 502;
        return -1;
    }
    up->skip_body = skip;
    timer_stop(up);
    return skip ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    pf_upstream *up = p->data;
    exchange_on_response_body(up->owner, at, len);
    return 0;
}

static int on_message_complete(llhttp_t *p) {
    pf_upstream *up = p->data;
    if (up->state == UP_TUNNEL)
        return HPE_PAUSED;
    if (up->state == UP_INTERIM) {
        set_state(up, UP_AWAIT_HEAD);
        http1_head_reset(&up->resp);
        return HPE_PAUSED; /* process_input resumes once the client's output has room */
    }
    if (up->trailers && up->resp.count > 0 &&
        exchange_on_response_trailers(up->owner, &up->resp) == PF_RESPONSE_RETRY) {
        /* A gRPC status in the trailers is retried: the attempt ends after the parser. */
        up->retry_status = 503;
        up->parse_error = 503;
        return -1;
    }
    set_state(up, UP_COMPLETE);
    return HPE_PAUSED;
}

static const llhttp_settings_t response_callbacks = {
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static const llhttp_settings_t *response_settings(void) {
    return &response_callbacks;
}
