/* Route actions: see route_actions_int.h. Paths are built byte by byte into buffers whose
 * size is checked first; a result that does not fit is refused, never cut. */
#include "proxy/route_actions_int.h"
#include "core/log.h"
#include "core/time.h"
#include "proxy/balancer.h"
#include "proxy/exchange_int.h"
#include "proxy/rate_limit_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct out_buf {
    char *at;
    size_t len, cap;
    bool full;
} out_buf;

static void put(out_buf *o, const char *s, size_t n) {
    if (o->full || n > o->cap - o->len) {
        o->full = true;
        return;
    }
    memcpy(o->at + o->len, s, n);
    o->len += n;
}

static void puts_(out_buf *o, const char *s) {
    put(o, s, strlen(s));
}

/* The prefix replacement at the seam of path elements: "/foo" -> "/xyz" makes "/foo/bar"
 * "/xyz/bar", "/foo" -> "/" makes it "/bar" (not "//bar"), and "/foo/" -> "/xyz" makes it
 * "/xyz/bar" (the matched "/" was an element boundary). */
static void put_path(out_buf *o, const char *matched, const char *replacement, const char *full,
                     const char *path, size_t path_len) {
    if (full && full[0]) {
        puts_(o, full);
        return;
    }
    size_t ml = matched ? strlen(matched) : 0;
    if (!replacement || !replacement[0] || ml > path_len) {
        put(o, path, path_len);
        return;
    }
    const char *rest = path + ml;
    size_t rest_len = path_len - ml;
    size_t rl = strlen(replacement);
    bool slash_r = replacement[rl - 1] == '/', slash_rest = rest_len > 0 && rest[0] == '/';
    put(o, replacement, rl);
    if (slash_r && slash_rest) {
        rest++;
        rest_len--;
    } else if (!slash_r && !slash_rest && rest_len > 0 && ml > 0 && matched[ml - 1] == '/') {
        put(o, "/", 1);
    }
    put(o, rest, rest_len);
}

size_t route_new_path(const char *matched, const char *replacement, const char *full,
                      const char *path, size_t path_len, const char *query, size_t query_len,
                      char *out, size_t cap) {
    out_buf o = {.at = out, .cap = cap};
    put_path(&o, matched, replacement, full, path, path_len);
    if (query) {
        put(&o, "?", 1);
        put(&o, query, query_len);
    }
    return o.full ? 0 : o.len;
}

size_t route_redirect_location(const pf_config_route *r, const char *scheme, const char *host,
                               int port, const char *path, size_t path_len, const char *query,
                               size_t query_len, char *out, size_t cap) {
    const pf_config_redirect *rd = &r->redirect;
    if (cap == 0)
        return 0;
    out_buf o = {.at = out, .cap = cap - 1};
    /* RFC 9110 10.2.2 allows a relative Location, but clients and caches handle the
     * absolute form everywhere. A new scheme drops the request's port (its default port is
     * meant), as a new host does not. */
    const char *s = rd->scheme[0] ? rd->scheme : scheme;
    long p = rd->port ? (long)rd->port : rd->scheme[0] ? -1 : port;
    if ((p == 80 && strcmp(s, "http") == 0) || (p == 443 && strcmp(s, "https") == 0))
        p = -1;
    puts_(&o, s);
    puts_(&o, "://");
    puts_(&o, rd->host[0] ? rd->host : host);
    if (p > 0) {
        char num[16];
        snprintf(num, sizeof num, ":%ld", p);
        puts_(&o, num);
    }
    const char *matched = r->path_kind == PF_MATCH_PATH_PREFIX ? r->path : NULL;
    put_path(&o, matched, rd->prefix, rd->path, path, path_len);
    if (query) {
        put(&o, "?", 1);
        put(&o, query, query_len);
    }
    if (o.full)
        return 0;
    out[o.len] = '\0';
    return o.len;
}

static void redirect(pf_exchange *ex, const pf_config_route *r, const pf_route_request *rq) {
    if (!r->redirect.host[0] && (!rq->host || !rq->host[0])) {
        exchange_reply(ex, 400, "a redirect needs the request's Host\n", NULL);
        return;
    }
    char extra[PF_LOCATION_MAX + 16];
    static const char head[] = "Location: ";
    memcpy(extra, head, sizeof head - 1);
    size_t cap = PF_LOCATION_MAX + 1,
           n = route_redirect_location(r, ex->req.fwd.proto ? ex->req.fwd.proto : "http", rq->host,
                                       rq->port, rq->path, rq->path_len, rq->query, rq->query_len,
                                       extra + sizeof head - 1, cap);
    if (n == 0) {
        log_debug("redirect refused: Location longer than %d bytes client=%s", PF_LOCATION_MAX,
                  ex->client_ip);
        exchange_reply(ex, 414, "the redirect's Location would be too long\n", NULL);
        return;
    }
    memcpy(extra + sizeof head - 1 + n, "\r\n", 3);
    exchange_reply(ex, (int)r->redirect.status, "", extra);
}

static void direct_response(pf_exchange *ex, const pf_config_route *r) {
    const pf_config_direct_response *d = &r->direct_response;
    char extra[PF_CONTENT_TYPE_MAX + 32];
    snprintf(extra, sizeof extra, "Content-Type: %s\r\n", d->content_type);
    exchange_reply(ex, (int)d->status, d->body, extra);
}

/* Whether the route's rate limit turned the request away (answered 429 with Retry-After,
 * in whole seconds, at least 1: RFC 9110 10.2.3). */
static bool rate_limited(pf_exchange *ex, const pf_router *router, const pf_config_route *r) {
    pf_rate_limiter *rl = router_rate_limiter(router, r);
    if (!rl)
        return false;
    const char *key = NULL;
    size_t len = 0;
    if (r->rate_limit.key == PF_RATE_KEY_CLIENT_IP) {
        key = ex->client_ip;
        len = key ? strlen(key) : 0;
    } else if (r->rate_limit.key == PF_RATE_KEY_HEADER) {
        /* Requests without the header share the bucket of the empty key. */
        long i = ex->req.head ? http1_find(ex->req.head, r->rate_limit.header, NULL) : -1;
        if (i >= 0) {
            key = http1_value(ex->req.head, (size_t)i);
            len = ex->req.head->headers[i].value_len;
        }
    }
    /* Now, not the request's start: workers take from one bucket, and the older a time is
     * next to the others' the more it looks like a burst. */
    uint64_t wait_ns = rate_limiter_take(rl, key, len, pf_now_us() * 1000u);
    if (wait_ns == 0)
        return false;
    metrics_inc(ex->l->rate_limited, 1);
    char extra[48];
    snprintf(extra, sizeof extra, "Retry-After: %llu\r\n",
             (unsigned long long)((wait_ns + 999999999u) / 1000000000u));
    ex->overloaded = true; /* a gRPC call is told RESOURCE_EXHAUSTED, as for a breaker */
    exchange_reply(ex, 429, "rate limit exceeded\n", extra);
    return true;
}

/* Whether a fault applies to this request: drawn by its share (0-100). */
static bool drawn(pf_exchange *ex, uint32_t percent) {
    return percent >= 100 || (percent > 0 && worker_random(ex->w) % 100 < percent);
}

/* The value of request header `name` as a number (digits only, at most 9 of them), or -1. */
static long header_number(const pf_exchange *ex, const char *name, char *text, size_t cap) {
    long i = ex->req.head ? http1_find(ex->req.head, name, NULL) : -1;
    if (i < 0)
        return -1;
    size_t len = ex->req.head->headers[i].value_len;
    if (len == 0 || len >= cap)
        return -1;
    memcpy(text, http1_value(ex->req.head, (size_t)i), len);
    text[len] = '\0';
    long n = 0;
    for (size_t k = 0; k < len; k++) {
        if (text[k] < '0' || text[k] > '9' || k >= 9)
            return -1;
        n = n * 10 + (text[k] - '0');
    }
    return n;
}

/* fault.abort: the route's status at its share, or the one x-pilotfish-fault-abort asks. */
static bool fault_abort(pf_exchange *ex, const pf_config_route *r) {
    if (!r->has_fault)
        return false;
    const pf_config_fault *f = &r->fault;
    char text[16];
    long asked =
        f->header_control ? header_number(ex, "x-pilotfish-fault-abort", text, sizeof text) : -1;
    int status = asked >= 200 && asked <= 599                  ? (int)asked
                 : f->has_abort && drawn(ex, f->abort.percent) ? (int)f->abort.status
                                                               : 0;
    if (!status)
        return false;
    metrics_inc(ex->l->faults_abort, 1);
    exchange_reply(ex, status, "fault injected\n", "x-pilotfish-fault: abort\r\n");
    return true;
}

uint64_t route_actions_delay_ms(pf_exchange *ex) {
    const pf_config_route *r = ex->route;
    if (!r || !r->has_fault)
        return 0;
    const pf_config_fault *f = &r->fault;
    uint64_t ms = 0;
    char text[32];
    long i = f->header_control && ex->req.head
                 ? http1_find(ex->req.head, "x-pilotfish-fault-delay", NULL)
                 : -1;
    size_t len = i >= 0 ? ex->req.head->headers[i].value_len : 0;
    if (len > 0 && len < sizeof text) {
        /* "250" (milliseconds) or a duration such as "250ms" or "1s" */
        memcpy(text, http1_value(ex->req.head, (size_t)i), len);
        text[len] = '\0';
        long n = header_number(ex, "x-pilotfish-fault-delay", text, sizeof text);
        if (n >= 0)
            ms = (uint64_t)n;
        else if (pf_duration_parse(text, &ms) != PF_OK)
            ms = 0;
        if (ms > PF_FAULT_HEADER_DELAY_MAX_MS)
            ms = PF_FAULT_HEADER_DELAY_MAX_MS;
    }
    if (!ms && f->has_delay && drawn(ex, f->delay.percent))
        ms = f->delay.duration_ms;
    if (ms)
        metrics_inc(ex->l->faults_delay, 1);
    return ms;
}

bool route_actions_answer(pf_exchange *ex, const pf_router *router, const pf_config_route *r,
                          const pf_route_request *rq) {
    if (rate_limited(ex, router, r) || fault_abort(ex, r))
        return true;
    if (r->has_redirect) {
        redirect(ex, r, rq);
        return true;
    }
    if (r->has_direct_response) {
        direct_response(ex, r);
        return true;
    }
    return false;
}

size_t route_share(const pf_config_route *r, uint64_t draw) {
    if (r->weighted_count == 0 || r->total_weight == 0)
        return 0;
    uint64_t point = draw % r->total_weight;
    for (size_t i = 0; i < r->weighted_count; i++) {
        if (point < r->clusters[i].weight)
            return i;
        point -= r->clusters[i].weight;
    }
    return r->weighted_count - 1; /* not reached */
}

static bool has_edits(const pf_config_header_edits *e) {
    return e->set_count || e->add_count || e->remove_count;
}

long route_actions_cluster(pf_exchange *ex, const pf_config_route *r) {
    if (r->weighted_count == 0 || r->total_weight == 0)
        return (long)r->cluster_index;
    const char *key = NULL;
    size_t len = 0;
    if (r->sticky_kind == PF_STICKY_HEADER) {
        long i = http1_find(ex->req.head, r->sticky_name, NULL);
        if (i >= 0) {
            key = http1_value(ex->req.head, (size_t)i);
            len = ex->req.head->headers[i].value_len;
        }
    } else if (r->sticky_kind == PF_STICKY_COOKIE &&
               !balancer_find_cookie(ex->req.head, r->sticky_name, &key, &len)) {
        key = NULL;
    }
    /* The same value always lands on the same share while the weights stay. */
    uint64_t draw = key ? balancer_hash(key, len) : worker_random(ex->w);
    ex->share = &r->clusters[route_share(r, draw)];
    if (has_edits(&ex->share->request_headers)) {
        ex->req.fwd.cluster_edits = &ex->share->request_headers;
        ex->req.fwd.vars = &ex->vars;
    }
    return (long)ex->share->cluster_index;
}

const pf_config_header_edits *route_actions_response_edits(const pf_exchange *ex) {
    return ex->share && has_edits(&ex->share->response_headers) ? &ex->share->response_headers
                                                                : NULL;
}

int route_actions_rewrite(pf_exchange *ex, const pf_route_request *rq) {
    const pf_config_route *r = ex->route;
    pf_forward_request *fwd = &ex->req.fwd;
    if (r->host_rewrite[0] && strcmp(r->host_rewrite, "auto") != 0) {
        fwd->host = r->host_rewrite;
        fwd->host_len = strlen(r->host_rewrite);
    }
    /* The asterisk-form of OPTIONS names no path. */
    if (!r->has_rewrite || (fwd->target_len == 1 && fwd->target[0] == '*'))
        return PF_OK;
    size_t need = rq->path_len + PF_PATH_MAX + rq->query_len + 2;
    if (ex->rewritten_cap < need) {
        char *buf = realloc(ex->rewritten, need);
        if (!buf) {
            exchange_reply(ex, 500, "out of memory\n", NULL);
            return PF_ENOMEM;
        }
        ex->rewritten = buf;
        ex->rewritten_cap = need;
    }
    const char *matched = r->path_kind == PF_MATCH_PATH_PREFIX ? r->path : NULL;
    size_t n = route_new_path(matched, r->rewrite.prefix, r->rewrite.full_path, rq->path,
                              rq->path_len, rq->query, rq->query_len, ex->rewritten, need);
    fwd->target = ex->rewritten;
    fwd->target_len = n;
    fwd->root_first = false;
    return PF_OK;
}

void route_actions_attempt(pf_exchange *ex, const pf_endpoint *ep) {
    const pf_config_route *r = ex->route;
    if (!r || strcmp(r->host_rewrite, "auto") != 0)
        return;
    /* A DNS cluster's endpoints share the name they were resolved from; others are known by
     * their address only. */
    const pf_config_cluster *c = ex->wc->rt->cfg;
    const char *host = c->dns.name[0] ? c->dns.name : ep->addr.text;
    size_t len = strlen(host);
    if (c->dns.name[0] && len > 1 && host[len - 1] == '.')
        len--;
    ex->req.fwd.host = host;
    ex->req.fwd.host_len = len;
}
