/* Static source: config endpoints become one endpoint set, published once at start (and
 * again on reload). Static endpoints are healthy until health checking says otherwise. */
#include "discovery/static_source.h"

#include <stdlib.h>
#include <string.h>

int discovery_static_publish(const pf_config_cluster *cluster, pf_endpoint_slot *slot) {
    pf_endpoint *eps = calloc(cluster->endpoint_count ? cluster->endpoint_count : 1, sizeof *eps);
    if (!eps)
        return PF_ENOMEM;
    for (size_t i = 0; i < cluster->endpoint_count; i++) {
        const pf_config_endpoint *src = &cluster->endpoints[i];
        eps[i].addr = src->addr;
        eps[i].weight = src->weight;
        eps[i].priority = src->priority;
        eps[i].healthy = true;
        memcpy(eps[i].zone, src->zone, sizeof eps[i].zone);
    }
    pf_endpoint_set *set = discovery_set_new(eps, cluster->endpoint_count);
    free(eps);
    if (!set)
        return PF_ENOMEM;
    discovery_slot_publish(slot, set);
    return PF_OK;
}
