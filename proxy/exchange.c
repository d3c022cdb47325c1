/* Exchanges: one request and its response, whatever protocol carries them. The
 * downstream codec hands over a parsed request; from here on this file decides: the
 * route and cluster, the breakers, the endpoint (avoiding those that already failed this
 * request), each attempt's timeout, whether a failure is retried and after what backoff,
 * and what health and the balancer learn from each attempt. Codecs only move bytes.
 *
 * Reentrancy rule (as in the codecs): a call into the downstream ops that ends the
 * response (send_end, reply, abort) may reset this exchange and start the connection's
 * next request, so nothing here touches the exchange after such a call. */
#include "proxy/exchange_int.h"
#include "proxy/mirror_int.h"
#include "proxy/route_actions_int.h"
#include "proxy/websocket_int.h"
#include "core/json.h"
#include "core/log.h"
#include "core/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- the state table ------------------------------------------------------------------ */

#define BIT(s) (1u << (s))

/* allowed[from] is the set of states `from` may move to. */
static const unsigned allowed[PF_EX_STATE_COUNT] = {
    /* a request is routed and its first attempt starts (after a fault delay: a backoff),
     * or pilotfish answers it */
    [PF_EX_IDLE] = BIT(PF_EX_WAITING) | BIT(PF_EX_BACKOFF) | BIT(PF_EX_DONE) | BIT(PF_EX_RESOLVING),
    /* discovery found the Service (the first attempt starts), or no answer came in time */
    [PF_EX_RESOLVING] = BIT(PF_EX_WAITING) | BIT(PF_EX_DONE),
    /* a response head arrives (a 101 to an upgrade: a tunnel), the attempt fails into a
     * backoff, or we answer the error */
    [PF_EX_WAITING] =
        BIT(PF_EX_STREAMING) | BIT(PF_EX_TUNNEL) | BIT(PF_EX_BACKOFF) | BIT(PF_EX_DONE),
    /* the next attempt starts, or none can (no endpoint, overloaded, client gone) */
    [PF_EX_BACKOFF] = BIT(PF_EX_WAITING) | BIT(PF_EX_DONE),
    /* the body ends, or it is cut */
    [PF_EX_STREAMING] = BIT(PF_EX_DONE) | BIT(PF_EX_ABORTED),
    /* the connection goes on with its next request */
    [PF_EX_DONE] = BIT(PF_EX_IDLE),
    [PF_EX_ABORTED] = BIT(PF_EX_IDLE),
    /* either side closed, failed or idled out: the connection closes (no next request) */
    [PF_EX_TUNNEL] = BIT(PF_EX_DONE),
};

bool exchange_transition_allowed(pf_exchange_state from, pf_exchange_state to) {
    if ((unsigned)from >= PF_EX_STATE_COUNT || (unsigned)to >= PF_EX_STATE_COUNT)
        return false;
    return (allowed[from] & BIT(to)) != 0;
}

const char *exchange_state_name(pf_exchange_state s) {
    static const char *const names[PF_EX_STATE_COUNT] = {
        [PF_EX_IDLE] = "idle",           [PF_EX_WAITING] = "waiting", [PF_EX_BACKOFF] = "backoff",
        [PF_EX_STREAMING] = "streaming", [PF_EX_DONE] = "done",       [PF_EX_ABORTED] = "aborted",
        [PF_EX_RESOLVING] = "resolving", [PF_EX_TUNNEL] = "tunnel",
    };
    return (unsigned)s < PF_EX_STATE_COUNT ? names[s] : "invalid";
}

void exchange_set_state(pf_exchange *ex, pf_exchange_state to) {
    if (!exchange_transition_allowed(ex->state, to)) {
        /* A codec drove the exchange somewhere its life does not go: continuing would
         * double-answer a client or leak an attempt, so stop here, loudly. */
        log_error("exchange: illegal move from %s to %s", exchange_state_name(ex->state),
                  exchange_state_name(to));
        abort();
    }
    ex->state = to;
}

/* ---- pure decisions ------------------------------------------------------------------ */

/* Whether `name` (len bytes, any case) is one of the route's upgrade protocols. */
static bool upgrade_listed(const pf_config_route *route, const char *name, size_t len) {
    if (!route)
        return len == 9 && strncasecmp(name, "websocket", 9) == 0;
    for (size_t i = 0; i < route->upgrade_count; i++)
        if (strlen(route->upgrades[i]) == len && strncasecmp(route->upgrades[i], name, len) == 0)
            return true;
    return false;
}

const char *exchange_upgrade_refusal(const pf_config_route *route, const char *upgrade, size_t len,
                                     bool has_body) {
    if (has_body)
        return "an upgrade request with a body is not tunnelled";
    /* RFC 9110 7.8: a comma list of protocol["/"version]; the server may pick any, so each
     * must be allowed. */
    size_t i = 0, names = 0;
    while (i < len) {
        while (i < len && (upgrade[i] == ' ' || upgrade[i] == '\t' || upgrade[i] == ','))
            i++;
        size_t start = i;
        while (i < len && upgrade[i] != ',' && upgrade[i] != '/' && upgrade[i] != ' ' &&
               upgrade[i] != '\t')
            i++;
        if (i == start)
            continue;
        names++;
        if (!upgrade_listed(route, upgrade + start, i - start))
            return "the protocol is not in the route's upgrades";
        while (i < len && upgrade[i] != ',')
            i++;
    }
    return names ? NULL : "empty Upgrade header";
}

size_t exchange_route_cluster(const pf_config_route *route, uint64_t random) {
    if (route->weighted_count == 0 || route->total_weight == 0)
        return route->cluster_index;
    return route->clusters[route_share(route, random)].cluster_index;
}

bool exchange_method_idempotent(const char *m) {
    static const char *const idempotent[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; m && i < sizeof idempotent / sizeof idempotent[0]; i++)
        if (strcmp(m, idempotent[i]) == 0)
            return true;
    return false;
}

bool exchange_retry_wanted(const pf_config_retry *retry, pf_failure kind, int status) {
    uint32_t on = retry->on;
    bool gateway = status == 502 || status == 503 || status == 504;
    switch (kind) {
    case PF_FAIL_CONNECT:
        return on & PF_RETRY_CONNECT_FAILURE;
    case PF_FAIL_RESET:
        return on & PF_RETRY_RESET;
    case PF_FAIL_TIMEOUT:
        return on & (PF_RETRY_GATEWAY_ERROR | PF_RETRY_5XX);
    case PF_FAIL_STATUS:
        if (((on & PF_RETRY_5XX) && status >= 500) || ((on & PF_RETRY_GATEWAY_ERROR) && gateway))
            return true;
        for (size_t i = 0; (on & PF_RETRY_STATUS_CODES) && i < retry->status_code_count; i++)
            if (retry->status_codes[i] == status)
                return true;
        return false;
    case PF_FAIL_GRPC:
        switch (status) {
        case PF_GRPC_CANCELLED:
            return on & PF_RETRY_GRPC_CANCELLED;
        case PF_GRPC_DEADLINE_EXCEEDED:
            return on & PF_RETRY_GRPC_DEADLINE_EXCEEDED;
        case PF_GRPC_RESOURCE_EXHAUSTED:
            return on & PF_RETRY_GRPC_RESOURCE_EXHAUSTED;
        case PF_GRPC_INTERNAL:
            return on & PF_RETRY_GRPC_INTERNAL;
        case PF_GRPC_UNAVAILABLE:
            return on & PF_RETRY_GRPC_UNAVAILABLE;
        }
        return false;
    case PF_FAIL_STALE: /* not the policy's business: see exchange_retry_verdict */
    case PF_FAIL_PROTOCOL:
        return false;
    }
    return false;
}

/* A gRPC call that failed to connect or was reset before its answer would end UNAVAILABLE
 * (pilotfish answers 14 then), so "unavailable" names those failures too. */
static bool grpc_local_wanted(const pf_config_retry *retry, pf_failure kind) {
    return (retry->on & PF_RETRY_GRPC_UNAVAILABLE) &&
           (kind == PF_FAIL_CONNECT || kind == PF_FAIL_RESET);
}

bool exchange_grpc_content_type(const char *v, size_t len) {
    static const char lit[] = "application/grpc";
    size_t n = sizeof lit - 1;
    if (len < n || strncasecmp(v, lit, n) != 0)
        return false;
    return len == n || v[n] == '+' || v[n] == ';';
}

int exchange_grpc_status_of_reply(int status, bool overloaded) {
    if (overloaded)
        return PF_GRPC_RESOURCE_EXHAUSTED;
    switch (status) {
    case 400:
    case 414:
        return PF_GRPC_INTERNAL;
    case 401:
        return PF_GRPC_UNAUTHENTICATED;
    case 403:
        return PF_GRPC_PERMISSION_DENIED;
    case 404:
    case 405:
    case 501:
        return PF_GRPC_UNIMPLEMENTED;
    case 408:
    case 504:
        return PF_GRPC_DEADLINE_EXCEEDED;
    case 413:
    case 431:
        return PF_GRPC_RESOURCE_EXHAUSTED;
    case 429:
    case 502:
    case 503:
        return PF_GRPC_UNAVAILABLE;
    }
    return PF_GRPC_UNKNOWN;
}

int exchange_grpc_timeout_parse(const char *v, size_t len, uint64_t *us) {
    /* gRPC over HTTP/2: TimeoutValue is 1-8 ASCII digits, then one unit letter. */
    if (len < 2 || len > 9)
        return PF_EINVAL;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return PF_EINVAL;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H':
        n *= 3600000000ull;
        break;
    case 'M':
        n *= 60000000ull;
        break;
    case 'S':
        n *= 1000000ull;
        break;
    case 'm':
        n *= 1000ull;
        break;
    case 'u':
        break;
    case 'n':
        n = (n + 999) / 1000;
        break;
    default:
        return PF_EINVAL;
    }
    *us = n ? n : 1;
    return PF_OK;
}

void exchange_grpc_timeout_format(char *out, size_t cap, uint64_t us) {
    /* The finest unit whose value fits the 8 digits allowed, rounded up to a whole unit. */
    static const struct {
        uint64_t us;
        char unit;
    } units[] = {{1, 'u'}, {1000, 'm'}, {1000000, 'S'}, {60000000, 'M'}, {3600000000ull, 'H'}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        uint64_t n = (us + units[i].us - 1) / units[i].us;
        if (n <= 99999999u || i + 1 == sizeof units / sizeof units[0]) {
            if (n > 99999999u)
                n = 99999999u;
            snprintf(out, cap, "%llu%c", (unsigned long long)n, units[i].unit);
            return;
        }
    }
}

int exchange_grpc_status_parse(const char *v, size_t len) {
    if (len < 1 || len > 2)
        return -1;
    int code = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        code = code * 10 + (v[i] - '0');
    }
    return code;
}

int exchange_grpc_http_status(int code) {
    switch (code) {
    case PF_GRPC_UNAVAILABLE:
        return 503;
    case PF_GRPC_DEADLINE_EXCEEDED:
        return 504;
    case PF_GRPC_UNKNOWN:
    case PF_GRPC_INTERNAL:
    case PF_GRPC_DATA_LOSS:
        return 500;
    }
    return 200;
}

pf_retry_verdict exchange_retry_verdict(const pf_retry_facts *f) {
    if (f->response_started || !f->replayable || !f->retry)
        return PF_RETRY_NO;
    /* A pooled connection the server had closed, or an HTTP/2 stream it refused or left
     * unprocessed under GOAWAY (RFC 9113 8.7), processed nothing: one free replay, whatever
     * the method. */
    if (f->kind == PF_FAIL_STALE)
        return f->stale_retried ? PF_RETRY_NO : PF_RETRY_YES;
    if (f->not_idempotent)
        return PF_RETRY_NO;
    bool wanted = exchange_retry_wanted(f->retry, f->kind, f->status) ||
                  (f->grpc && grpc_local_wanted(f->retry, f->kind));
    if (!wanted || f->retries >= f->retry->max_retries)
        return PF_RETRY_NO;
    if (f->deadline_us && f->now_us >= f->deadline_us)
        return PF_RETRY_NO;
    /* The budget keeps retries a small share of the traffic, so that a sick cluster is not
     * buried under its own retries; the breaker caps them outright. */
    long budget = f->active_requests * (long)f->budget_percent / 100;
    if (budget < (long)f->budget_min_concurrency)
        budget = (long)f->budget_min_concurrency;
    if (f->other_retries >= budget)
        return PF_RETRY_NO_BUDGET;
    if (f->other_retries >= (long)f->breaker_max_retries)
        return PF_RETRY_NO_BREAKER;
    return PF_RETRY_YES;
}

uint64_t exchange_backoff_cap_ms(const pf_config_retry *retry, unsigned retries) {
    unsigned shift = retries == 0 ? 0 : retries - 1 < 16 ? retries - 1 : 16;
    uint64_t cap = retry->backoff_base_ms << shift;
    return cap > retry->backoff_max_ms ? retry->backoff_max_ms : cap;
}

uint64_t exchange_attempt_timeout_ms(uint64_t per_try_ms, uint64_t response_timeout_ms,
                                     uint64_t deadline_us, uint64_t now_us) {
    uint64_t ms = per_try_ms ? per_try_ms : response_timeout_ms;
    if (deadline_us) {
        uint64_t left = deadline_us > now_us ? (deadline_us - now_us + 999) / 1000 : 1;
        if (left < ms)
            ms = left;
    }
    return ms;
}

bool exchange_avoid_has(const pf_avoid *a, uint64_t hash) {
    for (unsigned k = 0; k < a->count; k++)
        if (a->hash[k] == hash)
            return true;
    return false;
}

void exchange_avoid_add(pf_avoid *a, uint64_t hash) {
    if (exchange_avoid_has(a, hash))
        return;
    if (a->count == PF_AVOID_MAX) {
        memmove(a->hash, a->hash + 1, (PF_AVOID_MAX - 1) * sizeof a->hash[0]);
        a->count--;
    }
    a->hash[a->count++] = hash;
}

/* ---- life cycle ---------------------------------------------------------------------- */

void exchange_init(pf_exchange *ex, pf_worker *w, pf_listener_rt *l, const pf_downstream_ops *down,
                   void *ds, const char *client_ip) {
    memset(ex, 0, sizeof *ex);
    ex->w = w;
    ex->l = l;
    ex->down = down;
    ex->ds = ds;
    ex->client_ip = client_ip;
    ex->up_ops = &upstream_http1_ops;
    ex->grpc_status = ex->grpc_retry = -1;
}

/* Ends the current attempt: the upstream goes back to the pool or closes, and the
 * endpoint's in-flight count drops. */
static void end_attempt(pf_exchange *ex, bool reusable) {
    if (ex->up) {
        ex->up_ops->release(ex->up, reusable);
        ex->up = NULL;
    }
    /* Once per attempt: several paths end an attempt, and the count must not go below. */
    if (ex->counted_ep && ex->ep && ex->ep->stats)
        atomic_fetch_sub_explicit(&ex->ep->stats->active_requests, 1, memory_order_relaxed);
    ex->counted_ep = false;
}

/* Ends the request's share of the cluster's in-flight counts (breakers, retry budget). */
static void end_accounting(pf_exchange *ex) {
    if (ex->counted_active && ex->wc)
        atomic_fetch_sub_explicit(&ex->wc->rt->active_requests, 1, memory_order_relaxed);
    if (ex->counted_retry && ex->wc)
        atomic_fetch_sub_explicit(&ex->wc->rt->active_retries, 1, memory_order_relaxed);
    ex->counted_active = ex->counted_retry = false;
}

/* The tunnel's end: forget it (the streams are the codecs'), and its place in the gauge. */
static void end_tunnel(pf_exchange *ex) {
    if (ex->state == PF_EX_TUNNEL)
        metrics_gauge_add(ex->l->tunnels_active, -1);
    tunnel_free(ex->tunnel);
    ex->tunnel = NULL;
}

/* The exchange no longer points at its cluster's worker state. */
static void drop_cluster(pf_exchange *ex) {
    if (ex->wc)
        ex->wc->requests--;
    ex->wc = NULL;
}

void exchange_free(pf_exchange *ex) {
    on_demand_unpark(ex);
    mirror_drop(ex->mirror);
    ex->mirror = NULL;
    end_tunnel(ex);
    end_attempt(ex, false);
    end_accounting(ex);
    drop_cluster(ex);
    ex->ep = NULL;
    discovery_set_unref(ex->set);
    ex->set = NULL;
    if (ex->replay)
        evbuffer_free(ex->replay);
    ex->replay = NULL;
    if (ex->retry_timer)
        event_free(ex->retry_timer);
    ex->retry_timer = NULL;
    if (ex->idle_timer)
        event_free(ex->idle_timer);
    ex->idle_timer = NULL;
    if (ex->held) {
        http1_head_free(ex->held);
        free(ex->held);
    }
    ex->held = NULL;
    if (ex->req_trailers) {
        http1_head_free(ex->req_trailers);
        free(ex->req_trailers);
    }
    ex->req_trailers = NULL;
    free(ex->rewritten);
    ex->rewritten = NULL;
    proxy_service_routes_free(ex->held_routes);
    ex->held_routes = NULL;
}

void exchange_reset(pf_exchange *ex) {
    on_demand_unpark(ex);
    mirror_drop(ex->mirror); /* the request never completed: no copy */
    ex->mirror = NULL;
    end_tunnel(ex);
    end_attempt(ex, false);
    end_accounting(ex);
    if (ex->state != PF_EX_IDLE)
        exchange_set_state(ex, PF_EX_IDLE);
    ex->up = NULL;
    ex->req.head = NULL;
    ex->method = NULL;
    ex->request_complete = ex->replayable = ex->not_idempotent = ex->stale_retried = ex->upgrade =
        ex->delayed = ex->connect_wait = false;
    ex->attempts = ex->retries = 0;
    ex->status = 0;
    ex->deadline_us = ex->end_us = 0;
    ex->bytes_in = ex->bytes_out = 0;
    ex->route = NULL;
    ex->share = NULL;
    ex->retry = NULL;
    proxy_service_routes_free(ex->held_routes); /* after everything that reads the route */
    ex->held_routes = NULL;
    ex->avoid.count = 0;
    ex->authority = ex->path = NULL;
    ex->authority_len = ex->path_len = 0;
    ex->request_id[0] = '\0';
    ex->traceparent[0] = ex->trace_id[0] = '\0';
    memset(&ex->vars, 0, sizeof ex->vars);
    ex->grpc = ex->overloaded = ex->grpc_reported = ex->holding = false;
    ex->grpc_status = ex->grpc_retry = -1;
    ex->grpc_own_status = 0;
    if (ex->idle_timer)
        evtimer_del(ex->idle_timer);
    drop_cluster(ex);
    ex->ep = NULL;
    discovery_set_unref(ex->set);
    ex->set = NULL;
    if (ex->replay)
        evbuffer_drain(ex->replay, evbuffer_get_length(ex->replay));
    if (ex->req_trailers)
        http1_head_reset(ex->req_trailers);
}

void exchange_begin(pf_exchange *ex, const pf_head *head) {
    ex->start_us = pf_turn_now_us();
    ex->end_us = 0;
    ex->req.head = head;
}

void exchange_describe(pf_exchange *ex, const char *method, const char *authority,
                       size_t authority_len, const char *path, size_t path_len) {
    if (!ex->start_us)
        ex->start_us = pf_turn_now_us();
    ex->method = method;
    ex->authority = authority;
    ex->authority_len = authority_len;
    ex->path = path;
    ex->path_len = path_len;
}

void exchange_log(pf_exchange *ex) {
    pf_listener_rt *l = ex->l;
    /* A response that ended was timed then, in the same loop turn: no second clock read. */
    uint64_t duration = (ex->end_us ? ex->end_us : pf_now_us()) - ex->start_us;
    bool h2 = ex->down == &downstream_h2_ops;
    /* A call pilotfish failed itself went out as HTTP 200 (grpc-status says it all), but it
     * counts as the status it stands for: a timeout is a 5xx of the cluster, not a success. */
    size_t cls = code_class(ex->grpc_own_status ? ex->grpc_own_status : ex->status);
    metrics_inc(l->requests[cls], 1);
    metrics_inc(l->protocol_requests[h2], 1);
    if (ex->grpc_status >= 0)
        metrics_inc(
            l->grpc_calls[ex->grpc_status < PF_GRPC_STATUSES ? ex->grpc_status : PF_GRPC_STATUSES],
            1);
    metrics_observe_us(l->duration[cls], duration);
    if (ex->wc && ex->ep)
        metrics_inc(ex->wc->rt->requests[cls], 1);
    if (ex->ep && ex->ep->stats && ex->w->proxy->per_endpoint)
        atomic_fetch_add_explicit(&ex->ep->stats->responses[cls], 1, memory_order_relaxed);
    if (!ex->w->proxy->alog.enabled || !access_log_sampled(ex->w))
        return;
    const pf_head *h = ex->req.head;
    pf_access_entry e = {
        .method = ex->method ? ex->method : "-", /* the request line never parsed */
        .authority = ex->authority,
        .authority_len = ex->authority_len,
        .path = ex->path ? ex->path
                : h      ? http1_first(h)
                         : "",
        .path_len = ex->path ? ex->path_len
                    : h      ? h->first_len
                             : 0,
        .status = ex->status,
        .bytes_in = ex->bytes_in,
        .bytes_out = ex->bytes_out,
        .duration_us = duration,
        .cluster = ex->wc ? ex->wc->rt->cfg->name : NULL,
        .upstream = ex->ep ? ex->ep->addr.text : NULL,
        .request_id = ex->request_id[0] ? ex->request_id : NULL,
        .trace_id = ex->trace_id[0] ? ex->trace_id : NULL,
        .client = ex->client_ip,
        .protocol = h2 ? "HTTP/2" : "HTTP/1.1",
        .grpc_status = ex->grpc_status,
    };
    access_log_write(ex->w, &e);
}

/* Whether a request head is a gRPC call (RFC-less, gRPC over HTTP/2: by its content-type). */
static bool grpc_request(const pf_head *h) {
    long i = h ? http1_find(h, "content-type", NULL) : -1;
    return i >= 0 && exchange_grpc_content_type(http1_value(h, (size_t)i), h->headers[i].value_len);
}

/* grpc-message: percent-encoded (gRPC over HTTP/2), without the plain-text body's newline. */
static void grpc_message(char *out, size_t cap, const char *body) {
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0, len = strlen(body);
    while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == '\r'))
        len--;
    for (size_t i = 0; i < len && n + 4 < cap; i++) {
        unsigned char ch = (unsigned char)body[i];
        if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
            out[n++] = (char)ch;
        } else {
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    out[n] = '\0';
}

/* A routed request's answer from pilotfish (redirect, direct response, 429, fault abort, or
 * an error of its cluster) gets the route's and weighted cluster's response_headers like an
 * endpoint's response would; framing stays the codec's, and a gRPC answer's grpc-status is
 * added after. Returns the new length of the `n` bytes of lines in `extra`. */
static int edit_reply_lines(pf_exchange *ex, char *extra, size_t cap, int n) {
    const pf_config_header_edits *route = exchange_response_edits(ex);
    const pf_config_header_edits *cluster = route_actions_response_edits(ex);
    if (!route && !cluster)
        return n;
    char edited[512 + PF_LOCATION_MAX];
    size_t len = http1_edit_local_lines(extra, route, cluster, &ex->vars, edited, sizeof edited);
    if (len == 0 || len >= cap) {
        log_debug("response header edits left out of pilotfish's answer (too long) client=%s",
                  ex->client_ip);
        return n;
    }
    memcpy(extra, edited, len + 1);
    return (int)len;
}

void exchange_reply(pf_exchange *ex, int status, const char *body, const char *extra_headers) {
    /* An answer to a failed attempt is the cluster's outcome and counts with the endpoint
     * that failed; one that cuts an attempt short (the client was too slow, or sent a bad
     * body) or preempts the next one is not the endpoint's doing. */
    on_demand_unpark(ex);
    bool interrupted = ex->up != NULL || ex->state == PF_EX_BACKOFF;
    end_attempt(ex, false);
    if (interrupted)
        ex->ep = NULL;
    if (ex->state == PF_EX_BACKOFF)
        evtimer_del(ex->retry_timer);
    exchange_set_state(ex, PF_EX_DONE);
    ex->status = status;
    char extra[512 + PF_LOCATION_MAX] = ""; /* room for a redirect's Location */
    int n = 0;
    if (ex->request_id[0])
        n = snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", ex->request_id);
    if (ex->attempts > 0 && n >= 0 && (size_t)n < sizeof extra)
        n += snprintf(extra + n, sizeof extra - (size_t)n, "x-pilotfish-attempts: %u\r\n",
                      ex->attempts);
    if (extra_headers && n >= 0 && (size_t)n < sizeof extra)
        n += snprintf(extra + n, sizeof extra - (size_t)n, "%s", extra_headers);
    if (n >= 0 && (size_t)n < sizeof extra)
        n = edit_reply_lines(ex, extra, sizeof extra, n);
    if (status >= 400 && status < 500)
        metrics_inc(ex->l->errors_total, 1);
    if (ex->grpc || grpc_request(ex->req.head)) {
        /* gRPC clients read a call's outcome from grpc-status, not from the HTTP status: our
         * answer is a trailers-only response (HTTP 200, no body). A trailers-only failure
         * being retried keeps its own code when no retry could follow. */
        int code = ex->grpc_retry >= 0 ? ex->grpc_retry
                                       : exchange_grpc_status_of_reply(status, ex->overloaded);
        char message[160];
        grpc_message(message, sizeof message, body);
        if (n >= 0 && (size_t)n < sizeof extra)
            snprintf(extra + n, sizeof extra - (size_t)n,
                     "content-type: application/grpc\r\ngrpc-status: %d\r\ngrpc-message: %s\r\n",
                     code, message);
        ex->status = 200;
        ex->grpc_status = code;
        ex->grpc_own_status = status;
        ex->down->reply(ex->ds, 200, NULL, extra);
        return;
    }
    ex->bytes_out += strlen(body); /* body bytes, like a proxied response's */
    ex->down->reply(ex->ds, status, body, extra);
}

void exchange_abort(pf_exchange *ex) {
    end_attempt(ex, false);
    exchange_set_state(ex, PF_EX_ABORTED);
}

static void overloaded(pf_exchange *ex) {
    ex->overloaded = true;
    exchange_reply(ex, 503, "cluster overloaded\n", "x-pilotfish-overloaded: true\r\n");
}

/* ---- routing and attempts ---------------------------------------------------------- */

static void make_request_id(pf_exchange *ex) {
    /* RFC 9562 version 4 layout (8-4-4-4-12 hex, version 4, variant 10), so tools that
     * expect UUIDs accept it. Formatted by hand: this runs on every request. */
    uint64_t bits[2] = {worker_random(ex->w), worker_random(ex->w)};
    bits[0] = (bits[0] & ~0xf000ull) | 0x4000ull;
    bits[1] = (bits[1] & ~(0xc000ull << 48)) | (0x8000ull << 48);
    char hex[32];
    http1_put_hex64(hex, bits[0]);
    http1_put_hex64(hex + 16, bits[1]);
    char *out = ex->request_id;
    memcpy(out, hex, 8);
    out[8] = '-';
    memcpy(out + 9, hex + 8, 4);
    out[13] = '-';
    memcpy(out + 14, hex + 12, 4);
    out[18] = '-';
    memcpy(out + 19, hex + 16, 4);
    out[23] = '-';
    memcpy(out + 24, hex + 20, 12);
    out[36] = '\0';
}

static uint64_t attempt_timeout_ms(const pf_exchange *ex) {
    return exchange_attempt_timeout_ms(ex->retry->per_try_timeout_ms,
                                       ex->wc->rt->cfg->response_timeout_ms, ex->deadline_us,
                                       ex->deadline_us ? pf_now_us() : 0);
}

static uint64_t addr_hash(const pf_endpoint *ep) {
    return balancer_hash(ep->addr.text, strlen(ep->addr.text));
}

static bool is_failed(const pf_exchange *ex, const pf_endpoint *ep) {
    return ep && ex->avoid.count > 0 && exchange_avoid_has(&ex->avoid, addr_hash(ep));
}

/* A healthy endpoint, preferring one other than those that failed this request. A retry
 * that finds no other in the tiers now taking traffic tries the next tier's endpoints,
 * which discovery still calls healthy. */
static const pf_endpoint *pick_endpoint(pf_exchange *ex, pf_endpoint_set *set,
                                        pf_endpoint_set **from) {
    *from = set;
    pf_pick_context key =
        balancer_context(ex->wc->balancer, ex->req.head, ex->client_ip, ex->path, ex->path_len);
    key.avoid = ex->avoid.hash;
    key.avoid_count = ex->avoid.count;
    const pf_endpoint *ep = balancer_pick(ex->wc->balancer, set, &key);
    for (int tries = 0; is_failed(ex, ep) && tries < 4 && set->healthy_count > 1; tries++)
        ep = balancer_pick(ex->wc->balancer, set, &key);
    if (ex->avoid.count == 0 || (ep && !is_failed(ex, ep)))
        return ep;
    pf_endpoint_set *raw = ex->wc->cache.set;
    size_t start = (size_t)worker_random(ex->w);
    for (size_t k = 0; raw && k < raw->count; k++) {
        const pf_endpoint *other = &raw->endpoints[(start + k) % raw->count];
        if (other->healthy && !is_failed(ex, other)) {
            *from = raw;
            return other;
        }
    }
    return ep;
}

/* Hands what the request body has so far (kept for replay) to the new attempt, by
 * reference: an attempt never copies the body kept for the next one. */
static void replay_body(pf_exchange *ex) {
    if (ex->replay && evbuffer_get_length(ex->replay) > 0)
        ex->up_ops->replay_body(ex->up, ex->replay);
}

/* Sends the request to an endpoint. Returns 0, or -1 after pilotfish answered it. */
static int start_attempt(pf_exchange *ex) {
    pf_endpoint_set *set = worker_cluster_set(ex->wc), *from = NULL;
    const pf_endpoint *ep = set ? pick_endpoint(ex, set, &from) : NULL;
    if (!ep) {
        exchange_reply(ex, 503, "no healthy endpoint in the cluster\n", NULL);
        return -1;
    }
    if (ex->set != from) {
        /* ex->ep points into this set: hold it for as long as the attempt lasts. */
        discovery_set_unref(ex->set);
        ex->set = discovery_set_ref(from);
    }
    ex->ep = ep;
    ex->attempt_us = pf_turn_now_us();
    if (ep->stats) {
        atomic_fetch_add_explicit(&ep->stats->active_requests, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&ep->stats->requests_total, 1, memory_order_relaxed);
        ex->counted_ep = true;
    }
    bool over = false;
    ex->vars.upstream = ep->addr.text; /* for request_headers' %UPSTREAM% */
    ex->grpc_retry = -1;
    ex->grpc_reported = false;
    if (ex->grpc && ex->deadline_us) {
        /* The server learns how long the call has left, this attempt's share included. */
        uint64_t now = pf_now_us();
        exchange_grpc_timeout_format(ex->grpc_timeout, sizeof ex->grpc_timeout,
                                     ex->deadline_us > now ? ex->deadline_us - now : 1);
        ex->req.fwd.grpc_timeout = ex->grpc_timeout;
    }
    route_actions_attempt(ex, ep);
    ex->up = ex->up_ops->start(ex, ep, &over);
    if (!ex->up) {
        end_attempt(ex, false);
        ex->ep = NULL;
        if (over)
            overloaded(ex);
        else
            exchange_reply(ex, 503, "cannot open an upstream connection\n", NULL);
        return -1;
    }
    ex->attempts++;
    exchange_set_state(ex, PF_EX_WAITING);
    replay_body(ex);
    if (ex->request_complete)
        ex->up_ops->end_body(ex->up, attempt_timeout_ms(ex));
    return 0;
}

/* W3C Trace Context: a valid traceparent goes on untouched; an invalid one, or none, is
 * replaced by a new trace when tracing.generate is on (its tracestate goes with it). */
static void trace_context(pf_exchange *ex, const pf_head *head) {
    const pf_config_tracing *cfg = &ex->w->proxy->cfg->tracing;
    size_t count = 0;
    long i = http1_find(head, "traceparent", &count);
    const char *v = i >= 0 ? http1_value(head, (size_t)i) : NULL;
    if (v && count == 1 && http1_traceparent_valid(v, head->headers[i].value_len)) {
        memcpy(ex->trace_id, v + 3, 32);
        ex->trace_id[32] = '\0';
        return;
    }
    if (!cfg->generate)
        return;
    http1_traceparent_format(ex->traceparent, worker_random(ex->w), worker_random(ex->w),
                             worker_random(ex->w), cfg->sampled);
    memcpy(ex->trace_id, ex->traceparent + 3, 32);
    ex->trace_id[32] = '\0';
    ex->req.fwd.traceparent = ex->traceparent;
}

/* An upgrade the route allows goes upstream with its headers; any other loses them (as
 * every hop-by-hop header) and the request goes on as a plain one. */
static bool refuse_required_upgrade(pf_exchange *ex, const char *why);

/* Returns false when the request was answered instead (an extended CONNECT refused). */
static bool decide_upgrade(pf_exchange *ex) {
    pf_forward_request *fwd = &ex->req.fwd;
    const char *why = !ex->down->send_upgrade && !ex->down->send_upgrade_end
                          ? "the client's protocol cannot switch"
                          : exchange_upgrade_refusal(ex->route, fwd->upgrade, fwd->upgrade_len,
                                                     fwd->body != PF_BODY_NONE);
    if (!why) {
        ex->upgrade = true;
        return true;
    }
    if (ex->req.websocket_key)
        return refuse_required_upgrade(ex, why);
    char protocol[96];
    pf_json_escape(protocol, sizeof protocol, fwd->upgrade, fwd->upgrade_len);
    log_debug("upgrade refused: headers removed client=%s protocol=\"%s\" reason=\"%s\"",
              ex->client_ip, protocol, why);
    fwd->upgrade = NULL;
    fwd->upgrade_len = 0;
    return true;
}

/* An HTTP/2 client's extended CONNECT has no plain request to fall back to: it is answered
 * 501 with the reason, and logged at info (a client that cannot get its WebSocket is an
 * operator's question). Returns false (answered). */
static bool refuse_required_upgrade(pf_exchange *ex, const char *why) {
    pf_forward_request *fwd = &ex->req.fwd;
    char protocol[96];
    pf_json_escape(protocol, sizeof protocol, fwd->upgrade, fwd->upgrade_len);
    log_info("upgrade refused: extended CONNECT answered 501 client=%s protocol=\"%s\" "
             "reason=\"%s\"",
             ex->client_ip, protocol, why);
    char body[160];
    snprintf(body, sizeof body, "upgrade to \"%s\" refused: %s\n", protocol, why);
    ex->upgrade = false;
    exchange_reply(ex, 501, body, NULL);
    return false;
}

/* stream_idle_timeout: the timer runs at the full timeout and, when it fires before the
 * request went silent for that long, waits out the rest, so bytes moving cost only a
 * timestamp. */
static void on_idle_timer(evutil_socket_t fd, short what, void *arg) {
    pf_exchange *ex = arg;
    uint64_t now = pf_now_us(), idle_us = ex->idle_ms * 1000u;
    if (now - ex->last_active_us < idle_us) {
        struct timeval tv = pf_timeval_ms((idle_us - (now - ex->last_active_us) + 999) / 1000);
        evtimer_add(ex->idle_timer, &tv);
        return;
    }
    log_debug("stream idle timeout client=%s cluster=%s state=%s", ex->client_ip,
              ex->wc ? ex->wc->rt->cfg->name : "-", exchange_state_name(ex->state));
    if (ex->state == PF_EX_WAITING || ex->state == PF_EX_BACKOFF) {
        exchange_reply(ex, 504, "stream idle timeout\n", NULL);
    } else if (ex->state == PF_EX_STREAMING) {
        end_attempt(ex, false);
        exchange_set_state(ex, PF_EX_ABORTED);
        ex->down->abort(ex->ds);
    }
}

/* HTTP/2 streams and gRPC calls may live long (streaming RPCs), past any response timeout:
 * only silence both ways ends them. HTTP/1 requests keep their connection's timeouts. */
static void arm_idle(pf_exchange *ex) {
    if (!ex->grpc && ex->down != &downstream_h2_ops)
        return;
    if (!ex->idle_timer)
        ex->idle_timer = evtimer_new(ex->w->base, on_idle_timer, ex);
    if (!ex->idle_timer)
        return; /* out of memory: the other timeouts still bound the request */
    ex->idle_ms = ex->l->cfg->stream_idle_timeout_ms;
    ex->last_active_us = pf_now_us();
    struct timeval tv = pf_timeval_ms(ex->idle_ms);
    evtimer_add(ex->idle_timer, &tv);
}

static void touch(pf_exchange *ex) {
    if (ex->idle_timer)
        ex->last_active_us = pf_now_us();
}

/* grpc-timeout is the call's deadline (the route's timeout still caps it). */
static void grpc_deadline(pf_exchange *ex) {
    long i = http1_find(ex->req.head, "grpc-timeout", NULL);
    uint64_t us;
    if (i < 0 || exchange_grpc_timeout_parse(http1_value(ex->req.head, (size_t)i),
                                             ex->req.head->headers[i].value_len, &us) != PF_OK)
        return;
    uint64_t deadline = ex->start_us + us;
    if (!ex->deadline_us || deadline < ex->deadline_us)
        ex->deadline_us = deadline;
}

static void route_to_cluster(pf_exchange *ex, const pf_config_route *route, long cluster_index);
static void hold(pf_exchange *ex, uint64_t ms);

/* Takes the request into the cluster in slot `cluster_index` under `retry` (NULL: the
 * cluster's policy): its breaker, its requests in flight, its upstream codec. False when
 * pilotfish answered instead. A discovered Service (`discovered`) is marked as used. */
static bool enter_cluster(pf_exchange *ex, size_t cluster_index, const pf_config_retry *retry,
                          bool discovered) {
    drop_cluster(ex);
    ex->wc = worker_cluster(ex->w, cluster_index);
    if (!ex->wc) {
        exchange_reply(ex, 503, "out of memory\n", NULL);
        return false;
    }
    ex->wc->requests++; /* a removed cluster's state outlives this request (drop_cluster) */
    pf_cluster_rt *rt = ex->wc->rt;
    if (discovered || ex->held_routes)
        proxy_cluster_touch(rt); /* on demand: a used Service is not idle */
    ex->vars.cluster = rt->cfg->name;
    ex->retry = retry ? retry : &rt->cfg->retry;
    if ((uint64_t)atomic_load_explicit(&rt->active_requests, memory_order_relaxed) >=
        rt->cfg->breakers.max_requests) {
        metrics_inc(rt->overflow_requests, 1);
        overloaded(ex);
        return false;
    }
    atomic_fetch_add_explicit(&rt->active_requests, 1, memory_order_relaxed);
    ex->counted_active = true;
    /* The cluster's protocol chooses the upstream codec; "downstream" follows the client. */
    pf_upstream_protocol proto = rt->cfg->protocol;
    if (proto == PF_PROTO_DOWNSTREAM)
        proto = ex->down == &downstream_h2_ops ? PF_PROTO_H2 : PF_PROTO_HTTP1;
    ex->up_ops = proto == PF_PROTO_H2 ? &upstream_h2_ops : &upstream_http1_ops;
    /* Toward HTTP/2 the body is kept for every method (up to retry.buffer_bytes): a stream
     * refused under GOAWAY was never processed and is replayed whatever its method. A policy
     * naming gRPC statuses says the route's calls may be retried (they are all POSTs). */
    ex->not_idempotent = !exchange_method_idempotent(ex->method) && !ex->retry->non_idempotent &&
                         !(ex->grpc && (ex->retry->on & PF_RETRY_GRPC_ANY));
    ex->replayable = !ex->not_idempotent || ex->up_ops == &upstream_h2_ops;
    return true;
}

void exchange_start_mirror(pf_exchange *ex, const pf_exchange_request *req, size_t cluster_index) {
    /* A copy is never retried: it is one more request to a cluster under test. */
    static const pf_config_retry no_retry = {0};
    ex->req = *req;
    if (!enter_cluster(ex, cluster_index, &no_retry, false))
        return;
    ex->replayable = false;
    start_attempt(ex);
}

/* What the request is routed by. */
static pf_route_request route_request(const pf_exchange *ex, const char *host, int port) {
    /* OPTIONS * asks about the server as a whole: it goes where its root would. */
    bool asterisk = ex->path_len == 1 && ex->path[0] == '*';
    const char *target = ex->req.fwd.target;
    const char *query = target ? memchr(target, '?', ex->req.fwd.target_len) : NULL;
    return (pf_route_request){
        .host = host,
        .port = port,
        .path = asterisk ? "/" : ex->path,
        .path_len = ex->path_len,
        .method = ex->method,
        .query = query ? query + 1 : NULL,
        .query_len = query ? ex->req.fwd.target_len - (size_t)(query + 1 - target) : 0,
        .head = ex->req.head,
    };
}

/* The HTTPRoute rule of a discovered Service's port that takes the request: the table is
 * held while the route is in use. NULL after answering 404 when no rule matches. */
static const pf_config_route *rules_route(pf_exchange *ex, const pf_service_routes *services,
                                          const pf_router *rules, const pf_route_request *rq) {
    const pf_config_route *route = router_find_request(rules, rq);
    if (!route) {
        exchange_reply(ex, 404, "no HTTPRoute rule matches this request\n", NULL);
        return NULL;
    }
    ex->held_routes = service_routes_hold(services);
    return route;
}

void exchange_route_service(pf_exchange *ex, const char *host, int port, long cluster_index) {
    if (ex->connect_wait) {
        /* The CONNECT's Service was found: the tunnel is served here, not forwarded. */
        ex->connect_wait = false;
        exchange_set_state(ex, PF_EX_DONE);
        ex->status = 200;
        ex->down->connect_found(ex->ds);
        return;
    }
    const pf_service_routes *services = worker_service_routes(ex->w);
    const pf_router *rules = service_routes_rules(services, host, port);
    if (!rules) {
        route_to_cluster(ex, NULL, cluster_index);
        return;
    }
    pf_route_request rq = route_request(ex, host, port);
    const pf_config_route *route = rules_route(ex, services, rules, &rq);
    if (!route)
        return;
    ex->route = route; /* pilotfish's own answers to it carry its edits */
    if (route_actions_answer(ex, rules, route, &rq))
        return;
    cluster_index = route_actions_cluster(ex, route);
    if (cluster_index < 0 || route_actions_rewrite(ex, &rq) != PF_OK)
        return;
    route_to_cluster(ex, route, cluster_index);
}

void exchange_start(pf_exchange *ex, const pf_exchange_request *req, const char *host, int port) {
    ex->req = *req;
    ex->grpc = grpc_request(req->head);
    trace_context(ex, req->head);
    long id = http1_find(req->head, "x-request-id", NULL);
    if (id >= 0) {
        /* Kept as it came (the log's writers escape it for their format), cut to fit. */
        size_t len = req->head->headers[id].value_len;
        if (len >= sizeof ex->request_id)
            len = sizeof ex->request_id - 1;
        memcpy(ex->request_id, http1_value(req->head, (size_t)id), len);
        ex->request_id[len] = '\0';
        ex->req.fwd.request_id = NULL; /* the client's goes upstream as it came */
    } else {
        make_request_id(ex);
        ex->req.fwd.request_id = ex->request_id;
    }

    /* Configured routes first; then the services discovery found, by authority, through
     * the HTTPRoute rules attached to the Service's port when there are some. */
    pf_route_request rq = route_request(ex, host, port);
    const pf_router *router = ex->l->router; /* once: a reload may swap it */
    const pf_config_route *route = router_find_request(router, &rq);
    const pf_service_routes *services = route ? NULL : worker_service_routes(ex->w);
    const pf_router *rules = services ? service_routes_rules(services, host, port) : NULL;
    ex->vars = (pf_header_vars){.client_ip = ex->client_ip, .request_id = ex->request_id};
    if (rules && !(route = rules_route(ex, services, rules, &rq)))
        return;
    /* The route is known from here: pilotfish's own answers to it carry its edits. */
    ex->route = route;
    if (route && route_actions_answer(ex, rules ? rules : router, route, &rq))
        return;
    long cluster_index =
        route ? route_actions_cluster(ex, route) : service_routes_find(services, host, port);
    if (cluster_index < 0) {
        /* A Service discovery knows is missing; or one it may find (on demand): wait. */
        const char *missing = route ? NULL : service_routes_missing(services, host);
        if (missing)
            exchange_reply(ex, 503, missing, NULL);
        else if (route || service_routes_known(services, host) || !on_demand_park(ex, host, port))
            exchange_reply(ex, 404, "no route for this host and path\n", NULL);
        return;
    }
    if (route && route_actions_rewrite(ex, &rq) != PF_OK)
        return;
    route_to_cluster(ex, route, cluster_index);
}

bool exchange_park_connect(pf_exchange *ex, const char *host, int port) {
    const pf_service_routes *services = worker_service_routes(ex->w);
    if (!ex->down->connect_found || service_routes_known(services, host) ||
        service_routes_missing(services, host) || !on_demand_park(ex, host, port))
        return false;
    ex->connect_wait = true;
    return true;
}

/* The request goes to cluster_index (through `route`, or NULL: a discovered Service). */
static void route_to_cluster(pf_exchange *ex, const pf_config_route *route, long cluster_index) {
    ex->route = route; /* ex->vars were set by exchange_start, before any wait */
    if (route && (route->request_headers.set_count || route->request_headers.add_count ||
                  route->request_headers.remove_count)) {
        ex->req.fwd.edits = &route->request_headers;
        ex->req.fwd.vars = &ex->vars;
    }
    if (ex->req.fwd.upgrade && !decide_upgrade(ex))
        return;
    if (route && route->has_mirror)
        ex->mirror = mirror_new(ex, route);
    if (route && route->timeout_ms)
        ex->deadline_us = ex->start_us + route->timeout_ms * 1000u;
    if (ex->grpc)
        grpc_deadline(ex);
    arm_idle(ex);
    if (!enter_cluster(ex, (size_t)cluster_index, route && route->has_retry ? &route->retry : NULL,
                       !route))
        return;
    if (ex->upgrade && ex->req.websocket_key && ex->up_ops != &upstream_http1_ops) {
        refuse_required_upgrade(ex, "the cluster's upstreams speak HTTP/2; WebSockets need http1");
        return;
    }
    uint64_t hold_ms = route ? route_actions_delay_ms(ex) : 0;
    if (hold_ms)
        hold(ex, hold_ms);
    else
        start_attempt(ex);
}

void exchange_request_body(pf_exchange *ex, const char *at, size_t len) {
    ex->bytes_in += len;
    touch(ex);
    if (ex->state == PF_EX_RESOLVING) {
        /* No cluster yet: kept for the first attempt. Reading stops meanwhile
         * (exchange_request_blocked), so this is at most what one read brought. */
        if (!ex->replay)
            ex->replay = evbuffer_new();
        if (!ex->replay || evbuffer_add(ex->replay, at, len) != 0)
            exchange_reply(ex, 503, "out of memory\n", NULL);
        return;
    }
    if (ex->mirror)
        mirror_body(ex->mirror, at, len);
    if (ex->replayable) {
        /* Kept for a retry while it is no larger than retry.buffer_bytes; past that, no
         * retry. (The head is written again for each attempt, so only the body counts.) */
        if (!ex->replay)
            ex->replay = evbuffer_new();
        size_t kept = ex->replay ? evbuffer_get_length(ex->replay) : 0;
        if (!ex->replay || (kept + len > ex->retry->buffer_bytes && !ex->delayed)) {
            ex->replayable = false;
            if (ex->replay)
                evbuffer_drain(ex->replay, kept);
        } else if (evbuffer_add(ex->replay, at, len) != 0) {
            ex->replayable = false;
        }
    }
    /* Without an upstream: answered locally, or backing off (the replay has it). */
    if (ex->up)
        ex->up_ops->write_body(ex->up, at, len);
}

void exchange_request_end(pf_exchange *ex) {
    ex->request_complete = true;
    if (ex->mirror) { /* the copy goes now, on its own */
        mirror_launch(ex->mirror);
        ex->mirror = NULL;
    }
    if (ex->up)
        ex->up_ops->end_body(ex->up, attempt_timeout_ms(ex));
}

int exchange_request_trailer(pf_exchange *ex, const char *name, size_t name_len, const char *value,
                             size_t value_len) {
    touch(ex);
    if (!ex->req_trailers) {
        ex->req_trailers = calloc(1, sizeof *ex->req_trailers);
        if (!ex->req_trailers)
            return PF_ENOMEM;
        http1_head_init(ex->req_trailers, ex->l->cfg->max_header_bytes, ex->l->cfg->max_headers);
    }
    /* A field that does not fit is dropped whole: a name without its value would go on. */
    pf_head *t = ex->req_trailers;
    size_t count = t->count, len = t->len;
    int rc = http1_head_append_name(t, name, name_len);
    if (rc == PF_OK)
        rc = http1_head_append_value(t, value, value_len);
    if (rc == PF_OK)
        rc = http1_head_finish_value(t);
    if (rc != PF_OK) {
        t->count = count;
        t->len = len;
        t->last_was_value = count > 0;
    }
    return rc;
}

void exchange_request_trailers_too_large(pf_exchange *ex) {
    log_info("request trailers over the limits: the request is cut client=%s listener=%s "
             "max_header_bytes=%zu max_headers=%zu",
             ex->client_ip, ex->l->cfg->name, (size_t)ex->l->cfg->max_header_bytes,
             (size_t)ex->l->cfg->max_headers);
    if (ex->state == PF_EX_STREAMING)
        metrics_inc(ex->l->errors_total, 1);
}

const pf_head *exchange_request_trailers(const pf_exchange *ex) {
    return ex->req_trailers && ex->req_trailers->count > 0 ? ex->req_trailers : NULL;
}

bool exchange_request_blocked(const pf_exchange *ex, size_t limit) {
    return ex->state == PF_EX_BACKOFF || ex->state == PF_EX_RESOLVING ||
           (ex->up && ex->up_ops->output_full(ex->up, limit));
}

void exchange_downstream_writable(pf_exchange *ex) {
    if (ex->up && !ex->down->output_full(ex->ds))
        ex->up_ops->resume(ex->up);
}

/* ---- retries ------------------------------------------------------------------------- */

/* Whether the failure of the current attempt may be answered by another attempt. */
static bool may_retry(pf_exchange *ex, pf_failure kind, int status) {
    if (!ex->retry || !ex->wc)
        return false;
    pf_cluster_rt *rt = ex->wc->rt;
    long retrying = atomic_load_explicit(&rt->active_retries, memory_order_relaxed);
    if (ex->counted_retry)
        retrying--; /* this request already holds its place */
    pf_retry_facts f = {
        .kind = kind,
        .status = status,
        .response_started = ex->state != PF_EX_WAITING,
        .replayable = ex->replayable,
        .not_idempotent = ex->not_idempotent,
        .grpc = ex->grpc,
        .stale_retried = ex->stale_retried,
        .retries = ex->retries,
        .now_us = ex->deadline_us ? pf_now_us() : 0,
        .deadline_us = ex->deadline_us,
        .active_requests = atomic_load_explicit(&rt->active_requests, memory_order_relaxed),
        .other_retries = retrying,
        .retry = ex->retry,
        .budget_percent = rt->cfg->budget_percent,
        .budget_min_concurrency = rt->cfg->budget_min_concurrency,
        .breaker_max_retries = rt->cfg->breakers.max_retries,
    };
    switch (exchange_retry_verdict(&f)) {
    case PF_RETRY_YES:
        return true;
    case PF_RETRY_NO_BUDGET:
        metrics_inc(rt->retry_budget_exhausted, 1);
        ex->overloaded = true;
        return false;
    case PF_RETRY_NO_BREAKER:
        metrics_inc(rt->overflow_retries, 1);
        ex->overloaded = true;
        return false;
    case PF_RETRY_NO:
        break;
    }
    return false;
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg) {
    pf_exchange *ex = arg;
    if (start_attempt(ex) != 0)
        return;
    if (ex->delayed) {
        /* The body kept during the delay went to the attempt; from here on it is kept only
         * as the retry policy says. */
        ex->delayed = false;
        size_t kept = ex->replay ? evbuffer_get_length(ex->replay) : 0;
        if (!ex->delayed_replayable || kept > ex->retry->buffer_bytes) {
            ex->replayable = false;
            if (ex->replay)
                evbuffer_drain(ex->replay, kept);
        }
    }
    ex->down->request_writable(ex->ds, true);
}

/* A fault delay holds the request before its first attempt. The body that arrives
 * meanwhile is kept whatever the retry policy (the codecs stop reading while the exchange
 * backs off, so that is what one read or one stream window held) and goes out when the
 * attempt starts. Without a timer the request goes at once. */
static void hold(pf_exchange *ex, uint64_t ms) {
    if (!ex->retry_timer)
        ex->retry_timer = evtimer_new(ex->w->base, on_retry_timer, ex);
    if (!ex->retry_timer) {
        start_attempt(ex);
        return;
    }
    ex->delayed = true;
    ex->delayed_replayable = ex->replayable;
    ex->replayable = true;
    exchange_set_state(ex, PF_EX_BACKOFF);
    struct timeval tv = pf_timeval_ms(ms);
    evtimer_add(ex->retry_timer, &tv);
}

/* Starts the next attempt after a backoff (none for a dead pooled connection). Returns
 * false when no timer can be had: then the failure is answered instead. */
static bool schedule_retry(pf_exchange *ex, pf_failure kind) {
    if (!ex->retry_timer)
        ex->retry_timer = evtimer_new(ex->w->base, on_retry_timer, ex);
    if (!ex->retry_timer)
        return false;
    if (kind == PF_FAIL_STALE) {
        ex->stale_retried = true;
    } else {
        ex->retries++;
        metrics_inc(ex->wc->rt->retries, 1);
        if (!ex->counted_retry) {
            atomic_fetch_add_explicit(&ex->wc->rt->active_retries, 1, memory_order_relaxed);
            ex->counted_retry = true;
        }
    }
    if (ex->ep)
        exchange_avoid_add(&ex->avoid, addr_hash(ex->ep));
    uint64_t delay = 0;
    if (kind != PF_FAIL_STALE) {
        /* Exponential backoff with full jitter, capped. */
        uint64_t cap = exchange_backoff_cap_ms(ex->retry, ex->retries);
        delay = cap ? worker_random(ex->w) % (cap + 1) : 0;
    }
    exchange_set_state(ex, PF_EX_BACKOFF);
    struct timeval tv = pf_timeval_ms(delay);
    evtimer_add(ex->retry_timer, &tv);
    return true;
}

/* ---- called by upstream codecs -------------------------------------------------------- */

/* Tells passive outlier detection how the attempt on ex->ep went. */
static void report(pf_exchange *ex, pf_health_outcome outcome) {
    if (ex->ep && ex->wc)
        health_report(ex->wc->rt->health, ex->ep, outcome);
}

/* Tells outlier detection and the balancer how the attempt went, as `status`; latency
 * feedback only below 500: a fast failure must not make a failing endpoint look fast. */
static void report_outcome(pf_exchange *ex, int status) {
    report(ex, health_outcome_of_status(status));
    if (ex->ep && status < 500) {
        uint64_t latency_us = pf_turn_now_us() - ex->attempt_us;
        balancer_on_response(ex->wc->balancer, ex->ep, latency_us);
        health_report_latency(ex->wc->rt->health, ex->ep, latency_us);
    }
}

/* A gRPC call's end (its grpc-status known, or the response over): what the call cost and
 * how it ended is the endpoint's outcome, once. */
static void grpc_call_end(pf_exchange *ex) {
    if (ex->grpc_reported)
        return;
    ex->grpc_reported = true;
    report_outcome(ex, exchange_grpc_http_status(ex->grpc_status));
}

/* Whether a call's answer head should wait for the call's first message or status: only
 * while a failing status in its trailers could still be retried (HTTP/2, or HTTP/1 chunked
 * trailers). */
static bool should_hold(const pf_exchange *ex, pf_body_mode upstream_body) {
    return upstream_body != PF_BODY_NONE && ex->replayable && (ex->retry->on & PF_RETRY_GRPC_ANY) &&
           ex->retries < ex->retry->max_retries;
}

/* Keeps a copy of the answer's head (the codec's is borrowed for the call only). */
static bool hold_head(pf_exchange *ex, const pf_head *resp, pf_body_mode body, uint64_t length) {
    if (!ex->held) {
        ex->held = calloc(1, sizeof *ex->held);
        if (!ex->held)
            return false;
        http1_head_init(ex->held, ex->wc->rt->cfg->max_header_bytes, ex->wc->rt->cfg->max_headers);
    }
    http1_head_reset(ex->held);
    int rc = http1_head_append_first(ex->held, http1_first(resp), resp->first_len);
    for (size_t i = 0; rc == PF_OK && i < resp->count; i++) {
        rc = http1_head_append_name(ex->held, http1_name(resp, i), resp->headers[i].name_len);
        if (rc == PF_OK)
            rc =
                http1_head_append_value(ex->held, http1_value(resp, i), resp->headers[i].value_len);
        if (rc == PF_OK)
            rc = http1_head_finish_value(ex->held);
    }
    ex->holding = rc == PF_OK;
    ex->held_body = body;
    ex->held_length = length;
    return ex->holding;
}

/* The held head goes downstream now (a message or the call's end came). Returns false when
 * it could not: the response is then cut. */
static bool send_held(pf_exchange *ex) {
    ex->holding = false;
    ex->status = 200;
    exchange_set_state(ex, PF_EX_STREAMING);
    bool skip = false;
    if (ex->down->send_head(ex->ds, ex->held, 200, ex->held_body, ex->held_length, &skip) == PF_OK)
        return true;
    end_attempt(ex, false);
    exchange_set_state(ex, PF_EX_ABORTED);
    ex->down->abort(ex->ds);
    return false;
}

int exchange_on_response_head(pf_exchange *ex, const pf_head *resp, int status,
                              pf_body_mode upstream_body, uint64_t content_length,
                              bool *skip_body) {
    touch(ex);
    if (ex->req.websocket_key && status >= 200 && status < 300) {
        /* RFC 8441 4: a 2xx to an extended CONNECT says the tunnel is open; an endpoint that
         * answered the handshake with a page did not switch, and its body is no WebSocket. */
        log_debug("upstream answered a WebSocket handshake with %d, not 101 client=%s upstream=%s",
                  status, ex->client_ip, ex->ep ? ex->ep->addr.text : "-");
        return PF_EINVAL;
    }
    if (ex->grpc && status == 200) {
        /* A call with messages is judged by its trailers; a trailers-only one (no message
         * came) by this head, and a failure the policy names is retried. */
        long g = http1_find(resp, "grpc-status", NULL);
        if (g >= 0) {
            ex->grpc_status = exchange_grpc_status_parse(http1_value(resp, (size_t)g),
                                                         resp->headers[g].value_len);
            grpc_call_end(ex);
            bool empty = upstream_body == PF_BODY_NONE ||
                         (upstream_body == PF_BODY_LENGTH && content_length == 0);
            if (empty && ex->grpc_status > 0 && may_retry(ex, PF_FAIL_GRPC, ex->grpc_status)) {
                ex->grpc_retry = ex->grpc_status;
                return PF_RESPONSE_RETRY;
            }
        } else if (should_hold(ex, upstream_body) &&
                   hold_head(ex, resp, upstream_body, content_length)) {
            *skip_body = false;
            return PF_OK;
        }
    } else {
        report_outcome(ex, status);
        if (status >= 500 && may_retry(ex, PF_FAIL_STATUS, status))
            return PF_RESPONSE_RETRY;
    }
    ex->status = status;
    exchange_set_state(ex, PF_EX_STREAMING);
    return ex->down->send_head(ex->ds, resp, status, upstream_body, content_length, skip_body);
}

void exchange_on_response_interim(pf_exchange *ex, const pf_head *resp, int status) {
    ex->down->send_interim(ex->ds, resp, status);
}

void exchange_on_response_body(pf_exchange *ex, const char *at, size_t len) {
    if (ex->holding && !send_held(ex))
        return; /* the first message: the call will not be retried now */
    ex->bytes_out += len;
    touch(ex);
    ex->down->send_body(ex->ds, at, len);
}

int exchange_on_response_trailers(pf_exchange *ex, const pf_head *trailers) {
    long g = ex->grpc ? http1_find(trailers, "grpc-status", NULL) : -1;
    if (g >= 0) {
        ex->grpc_status = exchange_grpc_status_parse(http1_value(trailers, (size_t)g),
                                                     trailers->headers[g].value_len);
        grpc_call_end(ex);
    }
    if (ex->holding) {
        /* No message came before the status: nothing reached the client, a retry may. */
        if (ex->grpc_status > 0 && may_retry(ex, PF_FAIL_GRPC, ex->grpc_status)) {
            ex->holding = false;
            ex->grpc_retry = ex->grpc_status;
            /* The HTTP/2 codec lets the exchange end the attempt from inside its callbacks;
             * the HTTP/1 one ends it once its parser has returned. */
            if (ex->up_ops != &upstream_h2_ops)
                return PF_RESPONSE_RETRY;
            exchange_on_upstream_error(ex, 503, "upstream answered with a retriable grpc-status",
                                       PF_FAIL_GRPC);
            return PF_OK;
        }
        if (!send_held(ex))
            return PF_OK;
    }
    if (ex->down->send_trailers)
        ex->down->send_trailers(ex->ds, trailers);
    return PF_OK;
}

void exchange_on_response_complete(pf_exchange *ex, bool upstream_reusable) {
    if (ex->holding && !send_held(ex))
        return;
    if (ex->grpc && ex->status == 200)
        grpc_call_end(ex); /* without a grpc-status: judged as the HTTP response it was */
    exchange_set_state(ex, PF_EX_DONE);
    ex->end_us = pf_turn_now_us();
    uint64_t took_us = ex->end_us - ex->attempt_us;
    metrics_observe_us(ex->wc->rt->request_duration, took_us);
    if (ex->ep && ex->ep->stats && ex->w->proxy->per_endpoint)
        metrics_observe_us(&ex->ep->stats->duration, took_us);
    end_attempt(ex, upstream_reusable && ex->request_complete);
    ex->down->send_end(ex->ds);
}

void exchange_on_upstream_error(pf_exchange *ex, int status, const char *reason, pf_failure kind) {
    ex->holding = false; /* a held head never went out: the attempt failed before the answer */
    if (kind == PF_FAIL_STATUS && ex->grpc_retry >= 0) {
        kind = PF_FAIL_GRPC; /* the codec dropped a trailers-only failure for its retry */
        status = 503;
    }
    /* A pooled connection the server closed says nothing about the endpoint's health; a
     * status was reported when its head arrived. */
    if (kind != PF_FAIL_STALE && kind != PF_FAIL_STATUS && kind != PF_FAIL_GRPC) {
        report(ex, PF_HEALTH_GATEWAY_FAILURE);
        ex->grpc_reported = true;
    }
    end_attempt(ex, false);
    if (may_retry(ex, kind, kind == PF_FAIL_GRPC ? ex->grpc_retry : status)) {
        const char *failed = ex->ep ? ex->ep->addr.text : "-";
        if (schedule_retry(ex, kind)) {
            log_debug("retrying client=%s cluster=%s failed=%s reason=\"%s\" attempt=%u",
                      ex->client_ip, ex->wc->rt->cfg->name, failed, reason, ex->attempts + 1);
            return;
        }
    }
    if (ex->state == PF_EX_STREAMING) {
        /* Part of the response is out: what was received still goes out; then the close,
         * without a last chunk or the promised length, tells the client it is cut. */
        log_debug("response cut client=%s reason=\"%s\"", ex->client_ip, reason);
        exchange_set_state(ex, PF_EX_ABORTED);
        ex->down->abort(ex->ds);
        return;
    }
    char body[128];
    snprintf(body, sizeof body, "%s\n", reason);
    exchange_reply(ex, status, body, NULL);
}

/* ---- tunnels --------------------------------------------------------------------------- */

/* The tunnel is over: one log line with what went through, the access log entry of the
 * request that opened it, and the connection closes (which frees the exchange). */
static void tunnel_done(void *arg, const char *reason) {
    pf_exchange *ex = arg;
    uint64_t from_client = tunnel_bytes(ex->tunnel, PF_TUNNEL_CLIENT);
    uint64_t from_upstream = tunnel_bytes(ex->tunnel, PF_TUNNEL_UPSTREAM);
    ex->bytes_in += from_client;
    ex->bytes_out += from_upstream;
    log_info("tunnel closed client=%s cluster=%s upstream=%s bytes_from_client=%llu "
             "bytes_from_upstream=%llu duration_ms=%llu reason=\"%s\"",
             ex->client_ip, ex->wc->rt->cfg->name, ex->ep ? ex->ep->addr.text : "-",
             (unsigned long long)from_client, (unsigned long long)from_upstream,
             (unsigned long long)((pf_now_us() - ex->tunnel_us) / 1000), reason);
    end_tunnel(ex);
    /* The endpoint's side closes now: a codec may keep the client's side a little longer (an
     * HTTP/2 stream ends on its connection's next flush), with nothing left to forward. */
    end_attempt(ex, false);
    exchange_set_state(ex, PF_EX_DONE);
    exchange_log(ex);
    ex->down->close(ex->ds);
}

const pf_config_header_edits *exchange_response_edits(const pf_exchange *ex) {
    const pf_config_header_edits *e = ex->route ? &ex->route->response_headers : NULL;
    return e && (e->set_count || e->add_count || e->remove_count) ? e : NULL;
}

const pf_header_vars *exchange_header_vars(const pf_exchange *ex) {
    return &ex->vars;
}

bool exchange_upgrading(const pf_exchange *ex) {
    return ex->upgrade;
}

pf_tunnel *exchange_tunnel(const pf_exchange *ex) {
    return ex->tunnel;
}

int exchange_on_upgrade(pf_exchange *ex, const pf_head *resp) {
    long h = http1_find(resp, "upgrade", NULL);
    if (!ex->upgrade || h < 0 || ex->state != PF_EX_WAITING)
        return PF_EINVAL;
    if (ex->req.websocket_key) {
        /* The key was pilotfish's own (RFC 8441 has none): the answer must be to it. */
        long a = http1_find(resp, "sec-websocket-accept", NULL);
        if (a < 0 || !websocket_accept_matches(ex->req.websocket_key, http1_value(resp, (size_t)a),
                                               resp->headers[a].value_len)) {
            log_debug("upstream 101 refused: Sec-WebSocket-Accept %s client=%s upstream=%s",
                      a < 0 ? "missing" : "does not answer the key", ex->client_ip,
                      ex->ep ? ex->ep->addr.text : "-");
            return PF_EINVAL;
        }
    }
    report(ex, health_outcome_of_status(101));
    if (ex->ep)
        balancer_on_response(ex->wc->balancer, ex->ep, pf_now_us() - ex->attempt_us);
    ex->status = 101;
    ex->tunnel_us = pf_now_us();
    /* The attempt stays counted (cluster and endpoint requests in flight) for as long as
     * the tunnel lasts: least_request and the breakers see tunnels as the load they are. */
    exchange_set_state(ex, PF_EX_TUNNEL);
    metrics_inc(ex->l->tunnels_total, 1);
    metrics_gauge_add(ex->l->tunnels_active, 1);
    bool client_eof = false;
    const pf_tunnel_end_ops *client_ops = &tunnel_stream_end_ops;
    void *client = ex->down->send_upgrade_end
                       ? ex->down->send_upgrade_end(ex->ds, resp, &client_ops, &client_eof)
                       : ex->down->send_upgrade(ex->ds, resp, http1_value(resp, (size_t)h),
                                                resp->headers[h].value_len, &client_eof);
    pf_stream *upstream = ex->up_ops->tunnel_stream(ex->up);
    const pf_config_route *r = ex->route;
    uint64_t idle_ms = r && r->tunnel_idle_timeout_ms ? r->tunnel_idle_timeout_ms
                                                      : ex->l->cfg->tunnel_idle_timeout_ms;
    if (client && upstream)
        ex->tunnel =
            tunnel_new_ends(ex->w->base, client_ops, client, &tunnel_stream_end_ops, upstream,
                            client_eof, ex->l->cfg->buffer_bytes, idle_ms, tunnel_done, ex);
    if (!ex->tunnel) {
        tunnel_done(ex, "out of memory");
        return 0;
    }
    tunnel_start(ex->tunnel);
    return 0;
}

void exchange_on_upstream_writable(pf_exchange *ex) {
    ex->down->request_writable(ex->ds, false);
}

bool exchange_downstream_full(const pf_exchange *ex) {
    return ex->down->output_full(ex->ds);
}

void exchange_wait_for_downstream(pf_exchange *ex) {
    ex->down->wait_for_output(ex->ds);
}

pf_worker *exchange_worker(const pf_exchange *ex) {
    return ex->w;
}

pf_worker_cluster *exchange_cluster(const pf_exchange *ex) {
    return ex->wc;
}

const pf_exchange_request *exchange_request(const pf_exchange *ex) {
    return &ex->req;
}
