/* Load balancers: pick one endpoint of a cluster's current endpoint set per request.
 *
 * A balancer instance belongs to one worker and one cluster, so its state (cursors,
 * current weights) needs no lock. It is told which set to pick from on every call and
 * notices a new snapshot by the set's version, rebuilding what it derived from the old
 * one. New policies add a pf_balancer_ops in their own file and a line in balancer.c. */
#ifndef PF_PROXY_BALANCER_H
#define PF_PROXY_BALANCER_H

#include "config/config.h"
#include "discovery/endpoint_set.h"

typedef struct pf_balancer pf_balancer;

/* What a policy may look at besides the set; hash keys and client address come here. */
typedef struct pf_pick_context {
    uint64_t hash; /* 0 when the policy needs none */
} pf_pick_context;

/* Creates a balancer for `policy`; NULL when out of memory. Owned by the caller (a worker). */
pf_balancer *balancer_new(pf_lb_policy policy);
void balancer_free(pf_balancer *b);

/* Returns a healthy endpoint of `set` (borrowed from the set), or NULL when the set has
 * none. Worker thread of the balancer only. */
const pf_endpoint *balancer_pick(pf_balancer *b, const pf_endpoint_set *set,
                                 const pf_pick_context *ctx);

#endif
