/* Router: a listener's ordered routes, matched on host (exact, "*.suffix", optional port)
 * and path (prefix or exact). The first match wins. A router is immutable after
 * router_new, so any worker may use it without locks; a reload builds a new one. */
#ifndef PF_PROXY_ROUTER_H
#define PF_PROXY_ROUTER_H

#include "config/config.h"

#include <stddef.h>

typedef struct pf_router pf_router;

/* Copies the listener's routes. With `cluster_slot`, a route's cluster_index (into the
 * config's clusters) becomes cluster_slot[cluster_index] (the proxy's cluster index, which
 * outlives reloads); NULL keeps them. NULL when out of memory. */
pf_router *router_new(const pf_config_listener *listener, const size_t *cluster_slot);
void router_free(pf_router *router);

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

#endif
