/* Gateway API HTTPRoutes (gateway.networking.k8s.io/v1) as pilotfish routes.
 *
 * An HTTPRoute whose parentRefs name a Service (group "" and kind Service: the mesh, or
 * GAMMA, attachment) says how requests to that Service are routed. Each of its rules'
 * matches becomes one pilotfish route (routes[] of the config, parsed by config/ so that
 * every check and message of a written route applies): matches -> match, filters ->
 * request_headers / response_headers / rewrite / host_rewrite / redirect / mirror, and
 * weighted backendRefs -> clusters, named as auto-discovery names a Service port's cluster
 * ("svc.ns:port"). What pilotfish cannot honour is not approximated: the rule (or the whole
 * route) is kept with the reason it is skipped, for the log and /clusters. Pure: no I/O. */
#ifndef PF_DISCOVERY_KUBERNETES_HTTPROUTE_H
#define PF_DISCOVERY_KUBERNETES_HTTPROUTE_H

#include "config/config.h"
#include "core/error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PF_HTTPROUTE_PARENTS_MAX 32 /* the API's bound on parentRefs */
#define PF_HTTPROUTE_RULES_MAX 16   /* the API's bound on rules */
#define PF_HTTPROUTE_MATCHES_MAX 16 /* matches taken from one rule; more: the rule is skipped */
#define PF_HTTPROUTE_NAME_MAX 254   /* object names are DNS subdomains (253) */
#define PF_HTTPROUTE_HOSTS_MAX 16   /* the API's bound on spec.hostnames */

/* A Service the route attaches to: every port of it, or one (port or sectionName). */
typedef struct pf_httproute_parent {
    char ns[PF_K8S_NAME_MAX];
    char service[PF_K8S_NAME_MAX];
    char port_name[PF_K8S_NAME_MAX]; /* sectionName; "" : not by name */
    int32_t port;                    /* 0: not by number */
} pf_httproute_parent;

/* Where one pilotfish route stands among all routes attached to the same Service port:
 * the Gateway API's precedence, from the match it came from. */
typedef struct pf_httproute_rank {
    uint8_t path;      /* 0 Exact, 1 RegularExpression, 2 PathPrefix */
    uint32_t path_len; /* PathPrefix: its length, the longer first */
    bool method;
    uint32_t headers, query_params; /* the more first */
} pf_httproute_rank;

typedef struct pf_httproute_rule {
    pf_config_route *routes; /* one or two per match, in the rule's order */
    pf_httproute_rank *ranks;
    size_t route_count;
    char skipped[PF_ERROR_MAX]; /* "": applied */
} pf_httproute_rule;

typedef struct pf_httproute {
    char ns[PF_K8S_NAME_MAX];
    char name[PF_HTTPROUTE_NAME_MAX];
    char created[40];           /* metadata.creationTimestamp (RFC 3339, compares as text) */
    char skipped[PF_ERROR_MAX]; /* "": its rules apply (each may still be skipped) */
    pf_httproute_parent parents[PF_HTTPROUTE_PARENTS_MAX];
    size_t parent_count;
    pf_httproute_rule rules[PF_HTTPROUTE_RULES_MAX];
    size_t rule_count;
    /* spec.hostnames, kept only to say they are ignored: for a Service parent the Gateway
     * API (GEP-1294, "hostnames field") says implementations SHOULD NOT infer any
     * functionality from them (it points to a header match on Host instead). */
    char hostnames[PF_HTTPROUTE_HOSTS_MAX][PF_HTTPROUTE_NAME_MAX];
    size_t hostname_count;
} pf_httproute;

/* Translates an HTTPRoute object. Returns 0 with *out (free with discovery_httproute_free)
 * whatever the route asks, with reasons in skipped; PF_EINVAL with err when the object has
 * no metadata.name; PF_ENOMEM. Any thread. */
int discovery_httproute_parse(json_t *obj, pf_httproute **out, pf_error *err);
void discovery_httproute_free(pf_httproute *route);

/* The cluster name auto-discovery gives port `port` of Service ns/service. */
void discovery_httproute_cluster_name(char out[PF_NAME_MAX], const char *ns, const char *service,
                                      int32_t port);

/* Order of two routes for one Service port, by the Gateway API's precedence: rank, then the
 * older HTTPRoute, then "namespace/name" alphabetically, then rule and match order (`a_pos`,
 * `b_pos`). Negative when a comes first. */
int discovery_httproute_compare(const pf_httproute *a, const pf_httproute_rank *ar, size_t a_pos,
                                const pf_httproute *b, const pf_httproute_rank *br, size_t b_pos);

#endif
