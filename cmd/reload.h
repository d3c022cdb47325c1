/* Pure decisions of a reload (cmd/reload.c): what a config diff means for each cluster and
 * what cannot change while pilotfish runs. */
#ifndef PF_CMD_RELOAD_H
#define PF_CMD_RELOAD_H

#include "config/config.h"
#include "core/error.h"

#include <stdbool.h>

typedef enum {
    RELOAD_CLUSTER_UNCHANGED,
    RELOAD_CLUSTER_IN_PLACE, /* only settings requests read (timeouts, retry, breakers) or
                                a static cluster's endpoints: the cluster keeps its state */
    RELOAD_CLUSTER_ADDED,    /* added (or, seen from the old config, removed) whole */
    RELOAD_CLUSTER_REPLACED, /* balancer, health or discovery settings: a new cluster */
} reload_cluster_plan;

const char *reload_cluster_plan_name(reload_cluster_plan plan);
/* What `diff` means for the cluster `name`; *endpoints_changed says whether its static
 * endpoints must be published again. Pure. */
reload_cluster_plan reload_plan_cluster(const pf_config_diff *diff, const char *name,
                                        bool *endpoints_changed);
/* Adds to errs one message per change that needs a restart (with its JSON path). `have_dns`:
 * a resolver runs, so new DNS clusters can start. Pure. */
void reload_check_live(const pf_config *from, const pf_config *to, const pf_config_diff *diff,
                       bool have_dns, pf_errlist *errs);

/* The cluster of cfg named `name`, or NULL. Pure. */
const pf_config_cluster *reload_find_cluster(const pf_config *cfg, const char *name);

#endif
