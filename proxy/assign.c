/* Load assignment over priorities and zones; see assign.h. Loads are percentages, the
 * way operators reason about failover: a tier with 80% of its endpoints healthy takes
 * min(100, 80 * 1.4) = 100% of the traffic; at 50% healthy it takes 70% and the next
 * tier the other 30%. */
#include "proxy/assign.h"

#include <stdlib.h>
#include <string.h>

#define WEIGHT_SCALE 1000u /* derived weight = load% * weight * WEIGHT_SCALE / tier weight */

static double healthy_load(size_t healthy, size_t total) {
    if (total == 0)
        return 0;
    double load = PF_OVERPROVISIONING * 100.0 * (double)healthy / (double)total;
    return load > 100.0 ? 100.0 : load;
}

/* Splits `load` percent of traffic over the healthy endpoints in `members` (indexes into
 * set) by weight, adding to share[]. */
static void spread(const pf_endpoint_set *set, const size_t *members, size_t n, double load,
                   double *share) {
    uint64_t weight = 0;
    for (size_t k = 0; k < n; k++)
        if (set->endpoints[members[k]].healthy)
            weight += set->endpoints[members[k]].weight;
    for (size_t k = 0; weight && k < n; k++) {
        const pf_endpoint *ep = &set->endpoints[members[k]];
        if (ep->healthy)
            share[members[k]] += load * (double)ep->weight / (double)weight;
    }
}

/* Within one tier: the local zone first, the rest spill over to the other zones. */
static void spread_tier(const pf_endpoint_set *set, const size_t *members, size_t n, double load,
                        const pf_assign_params *params, size_t *scratch, double *share) {
    if (!params->zone_aware || !params->local_zone || !params->local_zone[0]) {
        spread(set, members, n, load, share);
        return;
    }
    size_t local = 0, local_healthy = 0, other = 0;
    size_t *others = scratch + n;
    for (size_t k = 0; k < n; k++) {
        const pf_endpoint *ep = &set->endpoints[members[k]];
        if (strcmp(ep->zone, params->local_zone) == 0) {
            scratch[local++] = members[k];
            local_healthy += ep->healthy;
        } else {
            others[other++] = members[k];
        }
    }
    double local_load = load * healthy_load(local_healthy, local) / 100.0;
    bool others_healthy = false;
    for (size_t k = 0; k < other; k++)
        others_healthy |= set->endpoints[others[k]].healthy;
    if (!others_healthy)
        local_load = local_healthy ? load : 0;
    spread(set, scratch, local, local_load, share);
    spread(set, others, other, load - local_load, share);
}

pf_endpoint_set *assign_derive(pf_endpoint_set *set, const pf_assign_params *params, bool *panic) {
    *panic = false;
    size_t n = set->count;
    bool tiers = false, zones = false;
    for (size_t i = 0; i < n; i++) {
        tiers |= set->endpoints[i].priority != set->endpoints[0].priority;
        zones |= set->endpoints[i].zone[0] != '\0';
    }
    bool zoned = zones && params->zone_aware && params->local_zone && params->local_zone[0];
    /* Panic (RFC-free, proxy practice): too few healthy endpoints left to carry the load. */
    if (n > 0 && set->healthy_count * 100 < (size_t)params->panic_threshold * n) {
        *panic = true;
        uint32_t *weights = malloc(n * sizeof *weights);
        bool *healthy = malloc(n * sizeof *healthy);
        pf_endpoint_set *all = NULL;
        if (weights && healthy) {
            for (size_t i = 0; i < n; i++) {
                weights[i] = set->endpoints[i].weight;
                healthy[i] = true;
            }
            all = discovery_set_derive(set, weights, healthy);
        }
        free(weights);
        free(healthy);
        return all;
    }
    if (!tiers && !zoned)
        return discovery_set_ref(set);

    double *share = calloc(n, sizeof *share);
    size_t *order = malloc(n * sizeof *order);
    size_t *scratch = malloc(2 * n * sizeof *scratch);
    uint32_t *weights = malloc(n * sizeof *weights);
    bool *healthy = malloc(n * sizeof *healthy);
    pf_endpoint_set *derived = NULL;
    if (!share || !order || !scratch || !weights || !healthy)
        goto out;
    /* Tiers in ascending priority; each takes what its health allows of what is left. */
    double left = 100.0;
    uint32_t done_below = 0;
    bool first = true;
    while (left > 0.0001) {
        uint32_t tier = UINT32_MAX;
        for (size_t i = 0; i < n; i++)
            if ((first || set->endpoints[i].priority > done_below) &&
                set->endpoints[i].priority < tier)
                tier = set->endpoints[i].priority;
        if (tier == UINT32_MAX)
            break;
        size_t members = 0, healthy_members = 0;
        for (size_t i = 0; i < n; i++) {
            if (set->endpoints[i].priority == tier) {
                order[members++] = i;
                healthy_members += set->endpoints[i].healthy;
            }
        }
        double load = healthy_load(healthy_members, members);
        if (load > left)
            load = left;
        spread_tier(set, order, members, load, params, scratch, share);
        left -= load;
        done_below = tier;
        first = false;
    }
    /* Not enough health anywhere to reach 100%: scale up what was assigned. */
    double assigned = 100.0 - left;
    for (size_t i = 0; i < n; i++) {
        double s = assigned > 0 ? share[i] * 100.0 / assigned : 0;
        healthy[i] = s > 0;
        weights[i] = healthy[i] ? (uint32_t)(s * WEIGHT_SCALE) + 1 : set->endpoints[i].weight;
    }
    derived = discovery_set_derive(set, weights, healthy);
out:
    free(share);
    free(order);
    free(scratch);
    free(weights);
    free(healthy);
    return derived;
}

void assign_cache_init(pf_assign_cache *cache) {
    memset(cache, 0, sizeof *cache);
    pthread_mutex_init(&cache->lock, NULL);
}

void assign_cache_destroy(pf_assign_cache *cache) {
    discovery_set_unref(cache->source);
    discovery_set_unref(cache->derived);
    pthread_mutex_destroy(&cache->lock);
}

pf_endpoint_set *assign_cache_get(pf_assign_cache *cache, pf_endpoint_set *set,
                                  const pf_assign_params *params, bool *panic) {
    pthread_mutex_lock(&cache->lock);
    if (cache->source != set) {
        pf_endpoint_set *derived = assign_derive(set, params, &cache->panic);
        if (derived) {
            discovery_set_unref(cache->source);
            discovery_set_unref(cache->derived);
            cache->source = discovery_set_ref(set);
            cache->derived = derived;
        }
    }
    pf_endpoint_set *result = discovery_set_ref(cache->derived);
    *panic = cache->panic;
    pthread_mutex_unlock(&cache->lock);
    return result;
}
