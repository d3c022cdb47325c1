/* Route actions: what a matched route does to a request besides choosing its cluster.
 * Some answer it in pilotfish's name (a redirect, a direct response), others change what
 * goes upstream (the path, the Host). The exchange calls them once the route is known;
 * the pure parts (the new path, the Location) are functions of their inputs, unit-tested
 * with tables. */
#ifndef PF_PROXY_ROUTE_ACTIONS_INT_H
#define PF_PROXY_ROUTE_ACTIONS_INT_H

#include "config/config.h"
#include "proxy/router.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct pf_exchange pf_exchange;
typedef struct pf_endpoint pf_endpoint;

/* The path `path` (path_len bytes) with the route's prefix (what match.prefix matched is
 * replaced by `replacement`) or full path applied, then "?query" when query is not NULL.
 * `full` non-empty wins; `replacement` applies otherwise. Writes at most cap bytes (no NUL)
 * and returns the length, or 0 when the result does not fit. */
size_t route_new_path(const char *matched, const char *replacement, const char *full,
                      const char *path, size_t path_len, const char *query, size_t query_len,
                      char *out, size_t cap);

/* The Location of the route's redirect for a request that came with `scheme` ("http" or
 * "https"), `host` (lower-case, brackets kept for IPv6, "" when none), `port` (-1: none
 * named), its path and query (NULL: none). Writes a NUL-terminated text into out and
 * returns its length, or 0 when it does not fit in cap. */
size_t route_redirect_location(const pf_config_route *r, const char *scheme, const char *host,
                               int port, const char *path, size_t path_len, const char *query,
                               size_t query_len, char *out, size_t cap);

/* For a weighted route: the index into its clusters whose share `draw` falls in (draw %
 * the total weight). 0 for any other route. */
size_t route_share(const pf_config_route *r, uint64_t draw);

/* The cluster (config index, or slot) of the request on route `r`; for a weighted route
 * the share drawn at random, or by the hash of the sticky_on value when the request has
 * one, and that share's request header edits go upstream. Worker thread. */
long route_actions_cluster(pf_exchange *ex, const pf_config_route *r);

/* The drawn weighted cluster's response header edits, or NULL. */
const pf_config_header_edits *route_actions_response_edits(const pf_exchange *ex);

/* Answers the request when its route says pilotfish does (its rate limit is reached, a
 * redirect, a direct response): true when it did (the exchange is DONE). `router` is the
 * one `r` came from. Worker thread. */
bool route_actions_answer(pf_exchange *ex, const pf_router *router, const pf_config_route *r,
                          const pf_route_request *rq);

/* How long the route's fault delays the request (0: not at all): its delay drawn by its
 * percent, or what x-pilotfish-fault-delay asks with header_control (capped at
 * PF_FAULT_HEADER_DELAY_MAX_MS). Counted when nonzero. Worker thread. */
uint64_t route_actions_delay_ms(pf_exchange *ex);

/* Applies the route's rewrite and literal host_rewrite to the request that goes upstream.
 * Returns 0, or PF_ENOMEM (the exchange answered 500 or 414). Worker thread. */
int route_actions_rewrite(pf_exchange *ex, const pf_route_request *rq);

/* Before each attempt: host_rewrite "auto" names the endpoint `ep` of the attempt. */
void route_actions_attempt(pf_exchange *ex, const pf_endpoint *ep);

#endif
