/* Load assignment: which endpoints of a cluster's set take traffic, and how much, once
 * health is known. Endpoints carry a priority (failover tier) and a zone; traffic stays in
 * the best tier and, when zone-aware, in the local zone, spilling over in proportion as
 * their healthy share drops (overprovisioning factor 1.4). Below the panic threshold every
 * endpoint is used, healthy or not, rather than crushing the few healthy ones.
 *
 * The result is a derived endpoint set (same endpoints, weights scaled by load, healthy
 * flags cleared where no load goes), built once per published snapshot and shared by all
 * workers, so balancers stay unaware of tiers and zones. */
#ifndef PF_PROXY_ASSIGN_H
#define PF_PROXY_ASSIGN_H

#include "config/config.h"
#include "discovery/endpoint_set.h"

#include <pthread.h>

#define PF_OVERPROVISIONING 1.4

typedef struct pf_assign_params {
    uint32_t panic_threshold; /* percent */
    bool zone_aware;
    const char *local_zone; /* "" or NULL: unknown */
} pf_assign_params;

/* Derives the set balancers pick from. Returns a new set (one reference), or a new reference
 * to `set` itself when nothing changes (one tier, no zones, not in panic). `panic` is set
 * when the panic threshold applied. NULL when out of memory. Any thread. */
pf_endpoint_set *assign_derive(pf_endpoint_set *set, const pf_assign_params *params, bool *panic);

/* Shares one derived set per published version between workers. */
typedef struct pf_assign_cache {
    pthread_mutex_t lock;
    pf_endpoint_set *source; /* the set it was derived from */
    pf_endpoint_set *derived;
    bool panic;
} pf_assign_cache;

void assign_cache_init(pf_assign_cache *cache);
void assign_cache_destroy(pf_assign_cache *cache);
/* A reference to the derived set for `set`, building it when `set` is new. Takes a mutex:
 * call once per snapshot per worker, not per request. */
pf_endpoint_set *assign_cache_get(pf_assign_cache *cache, pf_endpoint_set *set,
                                  const pf_assign_params *params, bool *panic);

#endif
