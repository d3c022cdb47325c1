/* Router: a listener's ordered routes, matched on host (exact, "*.suffix", optional port),
 * path (prefix or exact), method, headers and query parameters (exact, prefix, suffix,
 * present or a PCRE2 regex, each optionally inverted). The first match wins. A router is immutable
 * after router_new, so any worker may use it without locks; a reload builds a new one. */
#ifndef PF_PROXY_ROUTER_H
#define PF_PROXY_ROUTER_H

#include "config/config.h"
#include "proxy/http1.h"

#include <stddef.h>

typedef struct pf_router pf_router;
typedef struct pf_rate_limiter pf_rate_limiter;

/* A regex gets at most this many backtracking steps (PCRE2's match limit), this depth and
 * this much heap per evaluation; past them the condition does not hold, and neither does
 * any later regex condition for that request. One routing decision evaluates at most
 * PF_REGEX_EVALUATIONS_MAX regexes (value by value); the rest do not hold. */
#define PF_REGEX_MATCH_LIMIT 20000u
#define PF_REGEX_EVALUATIONS_MAX 64u
#define PF_REGEX_DEPTH_LIMIT 1000u
#define PF_REGEX_HEAP_LIMIT_KIB 1024u

/* What a request is routed by. `head` and `method` may be NULL (then routes that need them
 * do not match); `query` is the part after '?' (without it), or NULL. */
typedef struct pf_route_request {
    const char *host; /* lower-case, no port */
    int port;         /* -1: none named */
    const char *path; /* without the query */
    size_t path_len;
    const char *method;
    const char *query;
    size_t query_len;
    const pf_head *head;
} pf_route_request;

/* Copies the listener's routes with their header and query conditions (the router may
 * outlive the config) and compiles their regexes. With `cluster_slot`, a route's
 * cluster_index (into the config's clusters, weighted ones too) becomes
 * cluster_slot[cluster_index] (the proxy's cluster index, which outlives reloads); NULL keeps
 * them. NULL when out of memory or a regex does not compile (config/ checked them). */
pf_router *router_new(const pf_config_listener *listener, const size_t *cluster_slot);
void router_free(pf_router *router);

/* The rate limiter of `route` (one of the router's, with a rate_limit), or NULL. Its
 * buckets change under atomics; the router's other parts do not. Any thread. */
pf_rate_limiter *router_rate_limiter(const pf_router *router, const pf_config_route *route);

/* Splits an authority ("host", "host:port", "[v6]:port") into a lower-cased host (written
 * to host_out, at most host_cap-1 bytes) and a port (-1 when absent). Returns 0, or
 * PF_EINVAL for a malformed authority (bad port, bad characters, too long). */
int router_parse_authority(const char *authority, size_t len, char *host_out, size_t host_cap,
                           int *port_out);

/* Returns the index (into the config's clusters) of the first route that matches, or -1.
 * `host` is lower-case without port; `port` is -1 when the request named none; `path`
 * excludes the query string. Any thread. */
long router_match(const pf_router *router, const char *host, int port, const char *path,
                  size_t path_len);
/* The same, returning the matching route itself (borrowed from the router), or NULL. */
const pf_config_route *router_find(const pf_router *router, const char *host, int port,
                                   const char *path, size_t path_len);
/* Whether a route names `host` (and `port`, when it names one) in its host condition, exactly
 * or as "*.suffix": what makes an authority a known service for CONNECT. Routes without a
 * host condition do not count: they would make every name known. Pure; any thread. */
bool router_host_known(const pf_router *router, const char *host, int port);

/* The first route whose every condition holds for `rq`, or NULL. A pure function of the
 * router and the request; any thread. */
const pf_config_route *router_find_request(const pf_router *router, const pf_route_request *rq);

/* tcp listeners: the cluster (slot index, like router_match) for a connection whose TLS
 * ClientHello named `server_name` (lower-case; NULL: none sent, or not TLS): the first route
 * whose match.sni takes it, else the listener's own cluster, else -1 (close). Any thread. */
long router_match_sni(const pf_router *router, const char *server_name);
/* Whether any route matches on SNI: a tcp connection must then be peeked at first. */
bool router_has_sni_routes(const pf_router *router);
/* Whether `name` (lower-case) fits a host pattern of config/: any, exact, or "*.suffix" (the
 * pattern holds ".suffix"; at least one label must precede it). Pure. */
bool router_name_matches(pf_host_match kind, const char *pattern, const char *name);

#endif
