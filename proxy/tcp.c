/* The tcp (L4) codec: see tcp_int.h. One connection's life is one state:
 *
 *   PEEK -> CONNECTING     the ClientHello named a server (or none, or it is not TLS) and a
 *                          cluster takes it; only when some route matches on SNI
 *   CONNECTING -> CONNECTING   a connect failed: the next endpoint, while nothing was sent
 *   CONNECTING -> RELAY    connected: a tunnel moves the bytes until both sides closed
 *
 * and every state ends in conn_free (via `finish`). Nothing the client sent is passed on
 * before the endpoint's connection is up, so a failed connect can always be retried on
 * another endpoint: the peeked ClientHello and anything after it wait in the client
 * stream's input, which its read limit (buffer_bytes) bounds. */
#include "proxy/tcp_int.h"
#include "core/log.h"
#include "core/time.h"
#include "proxy/exchange_int.h"
#include "proxy/sni.h"
#include "proxy/tunnel_int.h"

#include <errno.h>
#include <stdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Static_assert(PF_TCP_END_COUNT == PF_TCP_END_REASONS, "proxy_int.h sizes the reason counters");

/* Relays read up to this much at once (within buffer_bytes): bulk transfers then cost a
 * quarter of the system calls an HTTP stream's 16 KiB reads would. libevent rounds a
 * chain's size (data and its header) up to a power of two, so a full 64 KiB would take a
 * 128 KiB block, past malloc's mmap threshold: a mmap, page faults and a munmap per read. */
#define TCP_READ_CHUNK (64u * 1024u - 512u)

typedef enum { TCP_PEEK, TCP_CONNECTING, TCP_RELAY, TCP_STATE_COUNT } tcp_state;

static const unsigned tcp_allowed[TCP_STATE_COUNT] = {
    [TCP_PEEK] = 1u << TCP_CONNECTING,
    [TCP_CONNECTING] = 1u << TCP_CONNECTING | 1u << TCP_RELAY,
    [TCP_RELAY] = 0, /* freed when the tunnel ends */
};

struct pf_tcp_conn {
    pf_conn *conn;
    pf_worker *w;
    pf_listener_rt *l;
    pf_stream *client; /* borrowed: conn.c owns it */
    pf_stream *up;     /* the endpoint's connection; NULL between attempts */
    struct event *timer;
    tcp_state state;
    pf_tunnel *tunnel;
    const char *client_ip;
    pf_worker_cluster *wc;
    pf_endpoint_set *set;  /* holds ep */
    const pf_endpoint *ep; /* the endpoint of the current attempt */
    pf_avoid avoid;        /* endpoints whose connect failed */
    unsigned attempts;     /* connects started */
    bool client_eof;       /* the client half-closed before the relay began */
    bool counted_cluster;  /* counted in the cluster's active requests (max_requests) */
    bool counted_ep;       /* counted in ep's active requests (least_request) */
    bool pending;          /* counted in the cluster's pending connects */
    bool counted_relay;    /* counted in the cluster's tcp_connections_active */
    size_t limit;          /* buffer_bytes, read at accept */
    uint64_t idle_ms;      /* idle_timeout, read at accept */
    uint64_t start_us;     /* accepted */
    uint64_t connect_us;   /* the current connect began */
    char sni[PF_SNI_NAME_MAX];
    /* The listener's name, copied: a relay holds no config (see tcp_conn_start_us), and a
     * reload may free the one its listener slot pointed at when it was accepted. */
    char listener[PF_NAME_MAX];
};

static void tcp_set_state(pf_tcp_conn *t, tcp_state to) {
    if (!(tcp_allowed[t->state] & (1u << to))) {
        log_error("tcp: illegal move from state %d to %d client=%s", t->state, to, t->client_ip);
        abort();
    }
    t->state = to;
}

const char *tcp_end_name(pf_tcp_end e) {
    static const char *const names[PF_TCP_END_COUNT] = {
        [PF_TCP_END_CLOSED] = "closed",
        [PF_TCP_END_IDLE] = "idle_timeout",
        [PF_TCP_END_CLIENT_ERROR] = "client_error",
        [PF_TCP_END_UPSTREAM_ERROR] = "upstream_error",
        [PF_TCP_END_NO_ROUTE] = "no_route",
        [PF_TCP_END_NO_ENDPOINT] = "no_endpoint",
        [PF_TCP_END_CONNECT_FAILED] = "connect_failed",
        [PF_TCP_END_OVERFLOW] = "overflow",
        [PF_TCP_END_PEEK_TIMEOUT] = "peek_timeout",
        [PF_TCP_END_BAD_HELLO] = "bad_client_hello",
        [PF_TCP_END_CLIENT_CLOSED] = "client_closed",
        [PF_TCP_END_INTERNAL] = "internal",
    };
    return (unsigned)e < PF_TCP_END_COUNT ? names[e] : "?";
}

/* Ends the current attempt's accounting and closes its connection. */
static void end_attempt(pf_tcp_conn *t) {
    if (t->pending) {
        t->pending = false;
        atomic_fetch_sub_explicit(&t->wc->rt->pending_requests, 1, memory_order_relaxed);
    }
    if (t->up) {
        stream_free(t->up);
        t->up = NULL;
        metrics_gauge_add(t->wc->rt->connections_active, -1);
        t->wc->conns--; /* counted by upstream_count_opening */
    }
    if (t->counted_ep) {
        t->counted_ep = false;
        atomic_fetch_sub_explicit(&t->ep->stats->active_requests, 1, memory_order_relaxed);
    }
}

void tcp_conn_free(pf_tcp_conn *t) {
    if (!t)
        return;
    tunnel_free(t->tunnel);
    if (t->wc)
        end_attempt(t);
    if (t->counted_relay)
        metrics_gauge_add(t->wc->rt->tcp_connections_active, -1);
    if (t->counted_cluster)
        atomic_fetch_sub_explicit(&t->wc->rt->active_requests, 1, memory_order_relaxed);
    if (t->wc)
        t->wc->requests--; /* a removed cluster's state outlives the relay */
    discovery_set_unref(t->set);
    if (t->timer)
        event_free(t->timer);
    free(t);
}

/* The connection's one access-log line and its end counted; then it is freed. */
static void finish(pf_tcp_conn *t, pf_tcp_end why) {
    metrics_inc(t->l->tcp_closed[why], 1);
    uint64_t up = tunnel_bytes(t->tunnel, PF_TUNNEL_CLIENT);
    uint64_t down = tunnel_bytes(t->tunnel, PF_TUNNEL_UPSTREAM);
    const char *cluster = t->wc ? t->wc->rt->cfg->name : NULL;
    const char *endpoint = t->ep && t->state == TCP_RELAY ? t->ep->addr.text : NULL;
    log_debug("tcp connection closed listener=%s client=%s sni=\"%s\" cluster=%s upstream=%s "
              "bytes_from_client=%llu bytes_from_upstream=%llu reason=%s",
              t->listener, t->client_ip, t->sni, cluster ? cluster : "-", endpoint ? endpoint : "-",
              (unsigned long long)up, (unsigned long long)down, tcp_end_name(why));
    pf_tcp_access_entry e = {
        .listener = t->listener,
        .client = t->client_ip,
        .sni = t->sni[0] ? t->sni : NULL,
        .cluster = cluster,
        .upstream = endpoint,
        .bytes_in = up,
        .bytes_out = down,
        .duration_us = pf_now_us() - t->start_us,
        .attempts = t->attempts,
        .reason = tcp_end_name(why),
    };
    if (t->w->proxy->alog.enabled && access_log_sampled(t->w))
        access_log_write_tcp(t->w, &e);
    conn_free(t->conn); /* frees t */
}

static void on_tunnel_done(void *arg, const char *reason) {
    pf_tcp_conn *t = arg;
    pf_tcp_end why = PF_TCP_END_CLOSED;
    if (strcmp(reason, "idle timeout") == 0)
        why = PF_TCP_END_IDLE;
    else if (strcmp(reason, "client connection error") == 0)
        why = PF_TCP_END_CLIENT_ERROR;
    else if (strcmp(reason, "upstream connection error") == 0)
        why = PF_TCP_END_UPSTREAM_ERROR;
    finish(t, why);
}

static void start_relay(pf_tcp_conn *t) {
    tcp_set_state(t, TCP_RELAY);
    evtimer_del(t->timer);
    t->tunnel = tunnel_new(t->w->base, t->client, t->up, t->client_eof, t->limit, t->idle_ms,
                           on_tunnel_done, t);
    if (!t->tunnel) {
        finish(t, PF_TCP_END_INTERNAL);
        return;
    }
    pf_cluster_rt *rt = t->wc->rt;
    tunnel_count_bytes(t->tunnel, PF_TUNNEL_CLIENT, rt->tcp_bytes[PF_TUNNEL_CLIENT],
                       t->l->tcp_bytes[PF_TUNNEL_CLIENT]);
    tunnel_count_bytes(t->tunnel, PF_TUNNEL_UPSTREAM, rt->tcp_bytes[PF_TUNNEL_UPSTREAM],
                       t->l->tcp_bytes[PF_TUNNEL_UPSTREAM]);
    metrics_inc(rt->tcp_connections_total, 1);
    metrics_gauge_add(rt->tcp_connections_active, 1);
    t->counted_relay = true;
    tunnel_start(t->tunnel); /* may end it at once, through on_tunnel_done */
}

static void connect_next(pf_tcp_conn *t);

/* A connect failed or timed out: counted as one (cluster, listener, endpoint, outlier
 * detection), then the next endpoint, while the cluster's retry policy allows. */
static void connect_failed(pf_tcp_conn *t, const char *what, int err) {
    pf_cluster_rt *rt = t->wc->rt;
    metrics_inc(t->l->tcp_connect_failures, 1);
    if (t->ep->stats)
        atomic_fetch_add_explicit(&t->ep->stats->connect_failures_total, 1, memory_order_relaxed);
    health_report(rt->health, t->ep, PF_HEALTH_GATEWAY_FAILURE);
    log_debug("tcp upstream connect failed listener=%s cluster=%s upstream=%s error=\"%s\"",
              t->listener, rt->cfg->name, t->ep->addr.text, err ? strerror(err) : what);
    exchange_avoid_add(&t->avoid, balancer_hash(t->ep->addr.text, strlen(t->ep->addr.text)));
    end_attempt(t);
    const pf_config_retry *retry = &rt->cfg->retry;
    if (!(retry->on & PF_RETRY_CONNECT_FAILURE) || t->attempts > retry->max_retries) {
        finish(t, PF_TCP_END_CONNECT_FAILED);
        return;
    }
    metrics_inc(rt->retries, 1);
    connect_next(t);
}

static void on_up_read(pf_stream *s, void *arg) {
    pf_tcp_conn *t = arg;
    if (t->state == TCP_RELAY)
        tunnel_on_read(t->tunnel, PF_TUNNEL_UPSTREAM);
}

static void on_up_write(pf_stream *s, void *arg) {
    pf_tcp_conn *t = arg;
    if (t->state == TCP_RELAY)
        tunnel_on_write(t->tunnel, PF_TUNNEL_UPSTREAM);
}

static void on_up_event(pf_stream *s, int what, int err, void *arg) {
    pf_tcp_conn *t = arg;
    if (t->state == TCP_RELAY) {
        tunnel_on_event(t->tunnel, PF_TUNNEL_UPSTREAM, what, err);
        return;
    }
    if (what & PF_STREAM_CONNECTED) {
        pf_cluster_rt *rt = t->wc->rt;
        metrics_observe_us(rt->connect_duration, pf_now_us() - t->connect_us);
        if (t->pending) {
            t->pending = false;
            atomic_fetch_sub_explicit(&rt->pending_requests, 1, memory_order_relaxed);
        }
        health_report(rt->health, t->ep, PF_HEALTH_SUCCESS);
        start_relay(t);
        return;
    }
    /* Before the connect completed, an EOF is a refusal like an error. */
    metrics_inc(t->wc->rt->connect_failures, 1);
    connect_failed(t, "connection refused", err);
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
    pf_tcp_conn *t = arg;
    if (t->state == TCP_PEEK) {
        finish(t, PF_TCP_END_PEEK_TIMEOUT);
        return;
    }
    if (t->state == TCP_CONNECTING) {
        metrics_inc(t->wc->rt->connect_timeouts, 1);
        connect_failed(t, "connect timeout", 0);
    }
}

static bool failed_before(const pf_tcp_conn *t, const pf_endpoint *ep) {
    return ep && t->avoid.count > 0 &&
           exchange_avoid_has(&t->avoid, balancer_hash(ep->addr.text, strlen(ep->addr.text)));
}

/* A healthy endpoint for the client, avoiding those that failed this connection: hash
 * policies hash the client's address, so one client keeps reaching the same endpoint. */
static const pf_endpoint *pick(pf_tcp_conn *t, pf_endpoint_set *set, pf_endpoint_set **from) {
    *from = set;
    pf_pick_context key = {.hash = balancer_hash(t->client_ip, strlen(t->client_ip)),
                           .has_hash = true,
                           .avoid = t->avoid.hash,
                           .avoid_count = t->avoid.count};
    const pf_endpoint *ep = balancer_pick(t->wc->balancer, set, &key);
    for (int tries = 0; failed_before(t, ep) && tries < 4 && set->healthy_count > 1; tries++)
        ep = balancer_pick(t->wc->balancer, set, &key);
    if (t->avoid.count == 0 || (ep && !failed_before(t, ep)))
        return ep;
    /* Every endpoint of the tiers taking traffic failed: any other healthy one. */
    pf_endpoint_set *raw = t->wc->cache.set;
    size_t start = (size_t)worker_random(t->w);
    for (size_t k = 0; raw && k < raw->count; k++) {
        const pf_endpoint *other = &raw->endpoints[(start + k) % raw->count];
        if (other->healthy && !failed_before(t, other)) {
            *from = raw;
            return other;
        }
    }
    return NULL;
}

static void connect_next(pf_tcp_conn *t) {
    pf_worker_cluster *wc = t->wc;
    pf_endpoint_set *set = worker_cluster_set(wc), *from = NULL;
    const pf_endpoint *ep = set ? pick(t, set, &from) : NULL;
    if (!ep) {
        finish(t, t->attempts ? PF_TCP_END_CONNECT_FAILED : PF_TCP_END_NO_ENDPOINT);
        return;
    }
    if (!upstream_may_connect(wc)) {
        finish(t, PF_TCP_END_OVERFLOW);
        return;
    }
    if (t->set != from) {
        discovery_set_unref(t->set);
        t->set = discovery_set_ref(from);
    }
    t->ep = ep;
    tcp_set_state(t, TCP_CONNECTING);
    t->attempts++;
    if (ep->stats) {
        /* least_request sees connections: one active request per relayed connection. */
        atomic_fetch_add_explicit(&ep->stats->active_requests, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&ep->stats->requests_total, 1, memory_order_relaxed);
        t->counted_ep = true;
    }
    int fd = socket(ep->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_debug("tcp: socket: %s", strerror(errno));
        finish(t, PF_TCP_END_INTERNAL);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    static const pf_stream_callbacks callbacks = {on_up_read, on_up_write, on_up_event};
    t->up = stream_new(t->w->base, fd, t->limit, t->limit / 2, &callbacks, t);
    if (!t->up) {
        close(fd);
        finish(t, PF_TCP_END_INTERNAL);
        return;
    }
    upstream_count_opening(wc); /* pending, active and total, as for HTTP upstreams */
    t->pending = true;
    /* Nothing is read from the endpoint until the relay starts. */
    stream_read_enable(t->up, false);
    stream_set_read_chunk(t->up, t->limit < TCP_READ_CHUNK ? t->limit : TCP_READ_CHUNK);
    t->connect_us = pf_now_us();
    struct timeval tv = pf_timeval_ms(wc->rt->cfg->connect_timeout_ms);
    evtimer_add(t->timer, &tv);
    stream_connect(t->up, (const struct sockaddr *)&ep->addr.ss, ep->addr.len);
}

/* The cluster for the server name (NULL: none), then the first connect. */
static void route(pf_tcp_conn *t) {
    const pf_router *router = atomic_load(&t->l->router);
    long index = router_match_sni(router, t->sni[0] ? t->sni : NULL);
    if (index < 0) {
        finish(t, PF_TCP_END_NO_ROUTE);
        return;
    }
    t->wc = worker_cluster(t->w, (size_t)index);
    if (!t->wc) {
        finish(t, PF_TCP_END_INTERNAL);
        return;
    }
    t->wc->requests++; /* until tcp_conn_free: the cluster may be removed meanwhile */
    pf_cluster_rt *rt = t->wc->rt;
    if ((uint64_t)atomic_load_explicit(&rt->active_requests, memory_order_relaxed) >=
        rt->cfg->breakers.max_requests) {
        metrics_inc(rt->overflow_requests, 1);
        finish(t, PF_TCP_END_OVERFLOW);
        return;
    }
    atomic_fetch_add_explicit(&rt->active_requests, 1, memory_order_relaxed);
    t->counted_cluster = true;
    connect_next(t);
}

/* Reads the ClientHello so far. Returns true when the connection moved on (routed, or
 * ended). `eof`: the client will send no more. */
static bool peek(pf_tcp_conn *t, bool eof) {
    struct evbuffer *in = stream_input(t->client);
    size_t have = evbuffer_get_length(in);
    size_t max = t->limit < PF_SNI_PEEK_MAX ? t->limit : PF_SNI_PEEK_MAX;
    size_t look = have < max ? have : max;
    const uint8_t *data = look ? evbuffer_pullup(in, (ev_ssize_t)look) : NULL;
    pf_sni_result r = sni_parse(data, look, t->sni, sizeof t->sni);
    if (r == PF_SNI_MORE && look >= max)
        r = PF_SNI_BAD; /* the read limit would stop the rest from coming */
    if (r != PF_SNI_FOUND)
        t->sni[0] = '\0';
    switch (r) {
    case PF_SNI_MORE:
        if (!eof)
            return false;
        finish(t, PF_TCP_END_CLIENT_CLOSED);
        return true;
    case PF_SNI_BAD:
        log_debug("tcp: malformed ClientHello listener=%s client=%s bytes=%zu", t->listener,
                  t->client_ip, look);
        finish(t, PF_TCP_END_BAD_HELLO);
        return true;
    case PF_SNI_FOUND:
    case PF_SNI_NONE:
    case PF_SNI_NOT_TLS:
        evtimer_del(t->timer);
        route(t);
        return true;
    }
    return true;
}

pf_tcp_conn *tcp_conn_new(pf_conn *conn, pf_worker *w, pf_listener_rt *l, pf_stream *client,
                          const char *client_ip) {
    pf_tcp_conn *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->timer = evtimer_new(w->base, on_timer, t);
    if (!t->timer) {
        free(t);
        return NULL;
    }
    const pf_config_listener *cfg = atomic_load(&l->cfg);
    t->conn = conn;
    t->w = w;
    t->l = l;
    t->client = client;
    t->client_ip = client_ip;
    snprintf(t->listener, sizeof t->listener, "%s", cfg->name);
    t->limit = cfg->buffer_bytes;
    t->idle_ms = cfg->idle_timeout_ms;
    t->start_us = pf_now_us();
    t->state = TCP_PEEK;
    stream_set_read_chunk(client, t->limit < TCP_READ_CHUNK ? t->limit : TCP_READ_CHUNK);
    return t;
}

void tcp_conn_start(pf_tcp_conn *t) {
    const pf_router *router = atomic_load(&t->l->router);
    if (!router_has_sni_routes(router)) {
        route(t); /* nothing to peek at: connect at once, the client may wait to speak */
        return;
    }
    struct timeval tv = pf_timeval_ms(atomic_load(&t->l->cfg)->header_timeout_ms);
    evtimer_add(t->timer, &tv);
    peek(t, false);
}

void tcp_conn_on_read(pf_tcp_conn *t) {
    if (t->state == TCP_PEEK)
        peek(t, false);
    else if (t->state == TCP_RELAY)
        tunnel_on_read(t->tunnel, PF_TUNNEL_CLIENT);
    /* CONNECTING: the bytes wait in the input (bounded by its read limit) */
}

void tcp_conn_on_write(pf_tcp_conn *t) {
    if (t->state == TCP_RELAY)
        tunnel_on_write(t->tunnel, PF_TUNNEL_CLIENT);
}

void tcp_conn_on_event(pf_tcp_conn *t, int what, int err) {
    if (t->state == TCP_RELAY) {
        tunnel_on_event(t->tunnel, PF_TUNNEL_CLIENT, what, err);
        return;
    }
    if (what & PF_STREAM_ERROR) {
        finish(t, PF_TCP_END_CLIENT_ERROR);
        return;
    }
    if (what & PF_STREAM_EOF) {
        /* A half-close before the relay: what was sent still goes, then the FIN. */
        t->client_eof = true;
        stream_read_enable(t->client, false);
        if (t->state == TCP_PEEK)
            peek(t, true);
    }
}

/* A relay reads no config: its listener's name is copied and its cluster's settings come
 * from the cluster slot, which outlives reloads. So connections that last for hours (a
 * database pool) hold no replaced config, and never make a reload wait or be refused. */
uint64_t tcp_conn_start_us(const pf_tcp_conn *t) {
    return t->state == TCP_RELAY ? 0 : t->start_us;
}
