/* The static discovery source: the endpoints written in the config file. */
#ifndef PF_DISCOVERY_STATIC_SOURCE_H
#define PF_DISCOVERY_STATIC_SOURCE_H

#include "config/config.h"
#include "discovery/endpoint_set.h"

/* Builds the cluster's endpoint set from config and publishes it into `slot`.
 * Returns 0 or PF_ENOMEM. Any thread. */
int discovery_static_publish(const pf_config_cluster *cluster, pf_endpoint_slot *slot);

#endif
