/* Route matching. Host patterns were lower-cased and validated by config/; regexes were
 * checked there and are compiled here, once per router, with limits so that no pattern and
 * no input can hold a worker: PCRE2 backtracks, and a pattern such as (a+)+$ against a long
 * header would otherwise take exponential time. */
#include "proxy/router.h"
#include "core/log.h"
#include "proxy/rate_limit_int.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* The compiled regexes of one route, by condition index (NULL for other kinds). */
typedef struct compiled_route {
    pcre2_code *path_re; /* match.regex */
    pcre2_code *header_re[PF_MATCHERS_MAX];
    pcre2_code *query_re[PF_MATCHERS_MAX];
    pf_rate_limiter *limiter; /* with a rate_limit; a reload starts with full buckets */
} compiled_route;

struct pf_router {
    size_t count;
    long tcp_default; /* tcp listeners: the cluster of connections no route takes; -1: none */
    pcre2_match_context *limits; /* read-only while matching: shared by all workers */
    compiled_route *compiled;
    pf_config_route routes[];
};

static pcre2_code *compile(const char *pattern) {
    int code;
    PCRE2_SIZE offset;
    /* The whole value must match, as for exact. */
    return pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED, &code, &offset, NULL);
}

static int compile_all(const pf_config_value_match *m, size_t n, pcre2_code **out) {
    for (size_t i = 0; i < n && i < PF_MATCHERS_MAX; i++)
        if (m[i].kind == PF_VALUE_REGEX && !(out[i] = compile(m[i].value)))
            return PF_EINVAL;
    return PF_OK;
}

static pf_config_value_match *copy_conditions(const pf_config_value_match *m, size_t n) {
    if (n == 0)
        return NULL;
    pf_config_value_match *copy = malloc(n * sizeof *copy);
    if (copy)
        memcpy(copy, m, n * sizeof *copy);
    return copy;
}

static pf_config_header_edit *copy_edits(const pf_config_header_edit *e, size_t n) {
    if (n == 0)
        return NULL;
    pf_config_header_edit *copy = malloc(n * sizeof *copy);
    if (copy)
        memcpy(copy, e, n * sizeof *copy);
    return copy;
}

/* Copies the lists of `from` into `to`; false when out of memory (to then holds what was
 * copied, for config_header_edits_free). */
static bool copy_header_edits(pf_config_header_edits *to, const pf_config_header_edits *from) {
    *to = *from;
    to->set = copy_edits(from->set, from->set_count);
    to->add = copy_edits(from->add, from->add_count);
    to->remove = copy_edits(from->remove, from->remove_count);
    return (!from->set_count || to->set) && (!from->add_count || to->add) &&
           (!from->remove_count || to->remove);
}

pf_router *router_new(const pf_config_listener *listener, const size_t *cluster_slot) {
    pf_router *r = calloc(1, sizeof *r + listener->route_count * sizeof(pf_config_route));
    if (!r)
        return NULL;
    r->count = listener->route_count;
    r->tcp_default = -1;
    if (listener->protocol == PF_LISTEN_TCP && listener->cluster[0])
        r->tcp_default =
            (long)(cluster_slot ? cluster_slot[listener->cluster_index] : listener->cluster_index);
    if (r->count)
        memcpy(r->routes, listener->routes, r->count * sizeof(pf_config_route));
    for (size_t i = 0; i < r->count; i++) { /* until copied below */
        r->routes[i].headers = r->routes[i].query_params = NULL;
        memset(&r->routes[i].request_headers, 0, sizeof r->routes[i].request_headers);
        memset(&r->routes[i].response_headers, 0, sizeof r->routes[i].response_headers);
        for (size_t w = 0; w < PF_WEIGHTED_CLUSTERS_MAX; w++) {
            pf_config_weighted_cluster *c = &r->routes[i].clusters[w];
            memset(&c->request_headers, 0, sizeof c->request_headers);
            memset(&c->response_headers, 0, sizeof c->response_headers);
        }
    }
    r->compiled = calloc(r->count ? r->count : 1, sizeof *r->compiled);
    r->limits = pcre2_match_context_create(NULL);
    if (!r->compiled || !r->limits)
        goto fail;
    pcre2_set_match_limit(r->limits, PF_REGEX_MATCH_LIMIT);
    pcre2_set_depth_limit(r->limits, PF_REGEX_DEPTH_LIMIT);
    pcre2_set_heap_limit(r->limits, PF_REGEX_HEAP_LIMIT_KIB);
    for (size_t i = 0; i < r->count; i++) {
        pf_config_route *route = &r->routes[i];
        const pf_config_route *from = &listener->routes[i];
        /* The router outlives its config (a reload frees the old one): own the lists. */
        route->headers = copy_conditions(from->headers, from->header_count);
        route->query_params = copy_conditions(from->query_params, from->query_param_count);
        bool edits = copy_header_edits(&route->request_headers, &from->request_headers) &&
                     copy_header_edits(&route->response_headers, &from->response_headers);
        for (size_t w = 0; edits && w < route->weighted_count; w++)
            edits = copy_header_edits(&route->clusters[w].request_headers,
                                      &from->clusters[w].request_headers) &&
                    copy_header_edits(&route->clusters[w].response_headers,
                                      &from->clusters[w].response_headers);
        if ((route->header_count && !route->headers) ||
            (route->query_param_count && !route->query_params) || !edits) {
            route->header_count = route->query_param_count = 0;
            goto fail;
        }
        if (route->has_rate_limit &&
            !(r->compiled[i].limiter = rate_limiter_new(&route->rate_limit)))
            goto fail;
        if (route->path_kind == PF_MATCH_PATH_REGEX &&
            !(r->compiled[i].path_re = compile(route->path)))
            goto fail;
        if (compile_all(route->headers, route->header_count, r->compiled[i].header_re) != PF_OK ||
            compile_all(route->query_params, route->query_param_count, r->compiled[i].query_re) !=
                PF_OK)
            goto fail;
    }
    /* Reloads keep clusters in slots that outlive configs: routes name slots. */
    for (size_t i = 0; cluster_slot && i < r->count; i++) {
        pf_config_route *route = &r->routes[i];
        if (route->cluster[0]) /* a redirect or a direct response has none */
            route->cluster_index = cluster_slot[route->cluster_index];
        if (route->has_mirror)
            route->mirror.cluster_index = cluster_slot[route->mirror.cluster_index];
        for (size_t w = 0; w < route->weighted_count; w++)
            route->clusters[w].cluster_index = cluster_slot[route->clusters[w].cluster_index];
    }
    return r;
fail:
    router_free(r);
    return NULL;
}

void router_free(pf_router *router) {
    if (!router)
        return;
    for (size_t i = 0; i < router->count; i++) {
        free(router->routes[i].headers);
        free(router->routes[i].query_params);
        config_header_edits_free(&router->routes[i].request_headers);
        config_header_edits_free(&router->routes[i].response_headers);
        for (size_t w = 0; w < router->routes[i].weighted_count; w++) {
            config_header_edits_free(&router->routes[i].clusters[w].request_headers);
            config_header_edits_free(&router->routes[i].clusters[w].response_headers);
        }
    }
    for (size_t i = 0; router->compiled && i < router->count; i++) {
        pcre2_code_free(router->compiled[i].path_re);
        for (size_t k = 0; k < PF_MATCHERS_MAX; k++) {
            pcre2_code_free(router->compiled[i].header_re[k]);
            pcre2_code_free(router->compiled[i].query_re[k]);
        }
        rate_limiter_free(router->compiled[i].limiter);
    }
    free(router->compiled);
    pcre2_match_context_free(router->limits);
    free(router);
}

pf_rate_limiter *router_rate_limiter(const pf_router *router, const pf_config_route *route) {
    if (!router || route < router->routes || route >= router->routes + router->count)
        return NULL;
    return router->compiled[route - router->routes].limiter;
}

/* ASCII by hand: what isalnum says in the C locale, without its table lookup per call. */
static bool valid_host_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

int router_parse_authority(const char *authority, size_t len, char *host_out, size_t host_cap,
                           int *port_out) {
    const char *host = authority;
    size_t host_len = len;
    const char *port_text = NULL;
    size_t port_len = 0;
    if (len > 0 && authority[0] == '[') {
        const char *close = memchr(authority, ']', len);
        if (!close)
            return PF_EINVAL;
        host_len = (size_t)(close - authority) + 1;
        if (host_len < len) {
            if (authority[host_len] != ':')
                return PF_EINVAL;
            port_text = authority + host_len + 1;
            port_len = len - host_len - 1;
        }
    } else {
        const char *colon = memchr(authority, ':', len);
        if (colon) {
            host_len = (size_t)(colon - authority);
            port_text = colon + 1;
            port_len = len - host_len - 1;
        }
    }
    if (host_len == 0 || host_len >= host_cap)
        return PF_EINVAL;
    if (host[0] == '[') {
        /* An IP-literal (RFC 3986 3.2.2): brackets around an IPv6 address, nothing else. */
        char literal[INET6_ADDRSTRLEN];
        struct in6_addr ignored;
        size_t inner = host_len - 2;
        if (host_len < 3 || inner >= sizeof literal)
            return PF_EINVAL;
        memcpy(literal, host + 1, inner);
        literal[inner] = '\0';
        if (inet_pton(AF_INET6, literal, &ignored) != 1)
            return PF_EINVAL;
    }
    for (size_t i = 0; i < host_len; i++) {
        unsigned char c = (unsigned char)host[i];
        if (!(valid_host_char(c) || (host[0] == '[' && (c == ':' || c == '[' || c == ']'))))
            return PF_EINVAL;
        /* ASCII only (valid_host_char): no locale lookup per character */
        host_out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    host_out[host_len] = '\0';
    *port_out = -1;
    if (port_text) {
        if (port_len == 0 || port_len > 5)
            return PF_EINVAL;
        int port = 0;
        for (size_t i = 0; i < port_len; i++) {
            if (!isdigit((unsigned char)port_text[i]))
                return PF_EINVAL;
            port = port * 10 + (port_text[i] - '0');
        }
        if (port < 1 || port > 65535)
            return PF_EINVAL;
        *port_out = port;
    }
    return PF_OK;
}

static bool host_matches(const pf_config_route *route, const char *host, int port) {
    if (route->host_port >= 0 && route->host_port != (port < 0 ? 80 : port))
        return false;
    switch (route->host_kind) {
    case PF_MATCH_HOST_ANY:
        return true;
    case PF_MATCH_HOST_EXACT:
        return strcmp(route->host, host) == 0;
    case PF_MATCH_HOST_SUFFIX: {
        /* "*.local" matches "a.local" and "a.b.local", never "local" itself. */
        size_t hl = strlen(host), sl = strlen(route->host);
        return hl > sl && strcmp(host + hl - sl, route->host) == 0;
    }
    }
    return false;
}

static bool path_matches(const pf_config_route *route, const char *path, size_t path_len) {
    size_t rl = strlen(route->path);
    if (route->path_kind == PF_MATCH_PATH_EXACT)
        return rl == path_len && memcmp(route->path, path, rl) == 0;
    return rl <= path_len && memcmp(route->path, path, rl) == 0;
}

/* Whether `value` satisfies one condition (before its invert). A regex that hits a limit,
 * or meets a value that is not UTF-8, does not match. */
/* What one routing decision may still spend on regexes: each evaluation is bounded by the
 * match limits, and their number by this, so a request with many long header lines
 * against many regex conditions stays cheap too. Once one evaluation hits a limit the
 * request is hostile or the pattern unfit: no further regex holds for it. */
typedef struct regex_budget {
    unsigned left;
    bool gave_up;
} regex_budget;

static bool value_matches(const pf_router *r, const pf_config_value_match *m, pcre2_code *re,
                          const char *value, size_t len, regex_budget *budget) {
    size_t vl = strlen(m->value);
    switch (m->kind) {
    case PF_VALUE_EXACT:
        return len == vl && memcmp(value, m->value, vl) == 0;
    case PF_VALUE_PREFIX:
        return len >= vl && memcmp(value, m->value, vl) == 0;
    case PF_VALUE_SUFFIX:
        return len >= vl && memcmp(value + len - vl, m->value, vl) == 0;
    case PF_VALUE_PRESENT:
        return true;
    case PF_VALUE_REGEX:
        break;
    }
    if (budget->gave_up || budget->left == 0)
        return false;
    budget->left--;
    /* One small allocation per evaluation: a per-thread buffer would outlive its thread. */
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md || !re) {
        pcre2_match_data_free(md);
        return false;
    }
    int rc = pcre2_match(re, (PCRE2_SPTR)value, len, 0, 0, md, r->limits);
    pcre2_match_data_free(md);
    if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT)
        log_debug("route regex gave up at its limit name=%s value_bytes=%zu", m->name, len);
    return rc >= 0;
}

/* Any header of the name satisfies the condition (a repeated header is several values). */
static bool header_holds(const pf_router *r, const pf_config_value_match *m, pcre2_code *re,
                         const pf_head *head, regex_budget *budget) {
    bool found = false;
    for (size_t i = 0; head && !found && i < head->count; i++)
        if (http1_name_is(head, i, m->name))
            found =
                value_matches(r, m, re, http1_value(head, i), head->headers[i].value_len, budget);
    return found != m->invert;
}

/* Any parameter of the name ("a=1&b&a=2": a is "1" and "2", b is ""), compared as sent
 * (no percent-decoding). */
static bool query_holds(const pf_router *r, const pf_config_value_match *m, pcre2_code *re,
                        const char *q, size_t len, regex_budget *budget) {
    bool found = false;
    size_t nl = strlen(m->name), i = 0;
    while (q && !found && i < len) {
        size_t start = i;
        while (i < len && q[i] != '&')
            i++;
        const char *pair = q + start, *eq = memchr(pair, '=', i - start);
        size_t name_len = eq ? (size_t)(eq - pair) : i - start;
        if (name_len == nl && memcmp(pair, m->name, nl) == 0) {
            const char *value = eq ? eq + 1 : pair + name_len;
            found = value_matches(r, m, re, value, (size_t)(q + i - value), budget);
        }
        i++;
    }
    return found != m->invert;
}

static bool route_matches(const pf_router *r, size_t index, const pf_route_request *rq,
                          regex_budget *budget) {
    const pf_config_route *route = &r->routes[index];
    if (!host_matches(route, rq->host, rq->port))
        return false;
    if (route->path_kind == PF_MATCH_PATH_REGEX) {
        /* The same bounded evaluation as a header regex, on the whole path. */
        static const pf_config_value_match path_re = {.name = ":path", .kind = PF_VALUE_REGEX};
        if (!value_matches(r, &path_re, r->compiled[index].path_re, rq->path, rq->path_len, budget))
            return false;
    } else if (!path_matches(route, rq->path, rq->path_len)) {
        return false;
    }
    if (route->method[0] && (!rq->method || strcmp(route->method, rq->method) != 0))
        return false;
    for (size_t k = 0; k < route->header_count; k++)
        if (!header_holds(r, &route->headers[k], r->compiled[index].header_re[k], rq->head, budget))
            return false;
    for (size_t k = 0; k < route->query_param_count; k++)
        if (!query_holds(r, &route->query_params[k], r->compiled[index].query_re[k], rq->query,
                         rq->query_len, budget))
            return false;
    return true;
}

const pf_config_route *router_find_request(const pf_router *router, const pf_route_request *rq) {
    regex_budget budget = {.left = PF_REGEX_EVALUATIONS_MAX};
    for (size_t i = 0; i < router->count; i++)
        if (route_matches(router, i, rq, &budget))
            return &router->routes[i];
    return NULL;
}

bool router_host_known(const pf_router *router, const char *host, int port) {
    for (size_t i = 0; i < router->count; i++)
        if (router->routes[i].host_kind != PF_MATCH_HOST_ANY &&
            host_matches(&router->routes[i], host, port))
            return true;
    return false;
}

const pf_config_route *router_find(const pf_router *router, const char *host, int port,
                                   const char *path, size_t path_len) {
    pf_route_request rq = {.host = host, .port = port, .path = path, .path_len = path_len};
    return router_find_request(router, &rq);
}

long router_match(const pf_router *router, const char *host, int port, const char *path,
                  size_t path_len) {
    const pf_config_route *route = router_find(router, host, port, path, path_len);
    return route ? (long)route->cluster_index : -1;
}

/* Server names compare without case (RFC 6066 3, DNS names); the name is lower-cased by the
 * caller, the patterns by config/. */
bool router_name_matches(pf_host_match kind, const char *pattern, const char *name) {
    switch (kind) {
    case PF_MATCH_HOST_ANY:
        return true;
    case PF_MATCH_HOST_EXACT:
        return name && strcmp(pattern, name) == 0;
    case PF_MATCH_HOST_SUFFIX: {
        /* "*.local" takes "a.local" and "a.b.local", not "local" or ".local" */
        size_t n = name ? strlen(name) : 0, m = strlen(pattern);
        return n > m && strcmp(name + n - m, pattern) == 0;
    }
    }
    return false;
}

long router_match_sni(const pf_router *router, const char *server_name) {
    for (size_t i = 0; i < router->count; i++) {
        const pf_config_route *r = &router->routes[i];
        if (r->has_sni && server_name && router_name_matches(r->sni_kind, r->sni, server_name))
            return (long)r->cluster_index;
    }
    return router->tcp_default;
}

bool router_has_sni_routes(const pf_router *router) {
    for (size_t i = 0; i < router->count; i++)
        if (router->routes[i].has_sni)
            return true;
    return false;
}
