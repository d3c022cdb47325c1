/* The pure decisions of a reload (cmd/reload.h): what a config diff means for each cluster,
 * and which changes the running process cannot take. Kept apart from cmd/reload.c so that
 * the unit tests reach them without the process around them. */
#include "cmd/reload.h"

#include <stdio.h>
#include <string.h>

/* Root keys the running process cannot take: the workers and their sockets' limits, the
 * admin server, the resolver and the Kubernetes client are built once at start. */
static const char *const restart_keys[] = {
    "workers", "admin", "max_connections", "access_log", "dns", "kubernetes", "local_zone", "stats",
};

/* A cluster's keys that requests read at the time (proxy_update_cluster swaps them in);
 * "endpoints" of a static cluster is published again. Others replace the cluster. */
static const char *const live_cluster_keys[] = {
    "connect_timeout", "response_timeout", "body_timeout", "idle_timeout", "max_idle_per_endpoint",
    "retry",           "circuit_breakers", "retry_budget", "endpoints",
};

static bool in_list(const char *key, size_t len, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == len && strncmp(list[i], key, len) == 0)
            return true;
    return false;
}

/* The key right after `prefix` in `path` ("$.a.b" after "$." is "a"); its length in *len. */
static const char *key_after(const char *path, size_t prefix_len, size_t *len) {
    const char *k = path + prefix_len;
    if (*k == '.')
        k++;
    *len = strcspn(k, ".[");
    return k;
}

const char *reload_cluster_plan_name(reload_cluster_plan plan) {
    static const char *const names[] = {"unchanged", "in place", "added", "replaced"};
    return names[plan];
}

reload_cluster_plan reload_plan_cluster(const pf_config_diff *diff, const char *name,
                                        bool *endpoints_changed) {
    char prefix[PF_NAME_MAX + 32];
    int n = snprintf(prefix, sizeof prefix, "$.clusters[?@.name==\"%s\"]", name);
    size_t plen = n > 0 && (size_t)n < sizeof prefix ? (size_t)n : 0;
    reload_cluster_plan plan = RELOAD_CLUSTER_UNCHANGED;
    *endpoints_changed = false;
    for (size_t i = 0; plen && i < diff->count; i++) {
        const char *p = diff->items[i].path;
        if (strncmp(p, prefix, plen) != 0 || (p[plen] && p[plen] != '.'))
            continue;
        if (!p[plen])
            return RELOAD_CLUSTER_ADDED; /* added or removed whole */
        size_t len;
        const char *key = key_after(p, plen, &len);
        if (!in_list(key, len, live_cluster_keys,
                     sizeof live_cluster_keys / sizeof live_cluster_keys[0]))
            return RELOAD_CLUSTER_REPLACED;
        if (len == strlen("endpoints") && strncmp(key, "endpoints", len) == 0)
            *endpoints_changed = true;
        plan = RELOAD_CLUSTER_IN_PLACE;
    }
    return plan;
}

static bool uses_discovery(const pf_config_cluster *c) {
    return c->dns.name[0] || c->kubernetes.service[0];
}

const pf_config_cluster *reload_find_cluster(const pf_config *cfg, const char *name) {
    for (size_t i = 0; i < cfg->cluster_count; i++)
        if (strcmp(cfg->clusters[i].name, name) == 0)
            return &cfg->clusters[i];
    return NULL;
}

void reload_check_live(const pf_config *from, const pf_config *to, const pf_config_diff *diff,
                       bool have_dns, pf_errlist *errs) {
    for (size_t i = 0; i < diff->count; i++) {
        size_t len;
        const char *key = key_after(diff->items[i].path, 1, &len);
        if (in_list(key, len, restart_keys, sizeof restart_keys / sizeof restart_keys[0]))
            pf_errlist_add(errs,
                           "%s: %.*s cannot change while pilotfish runs; restart pilotfish to "
                           "apply it (the running config stays)",
                           diff->items[i].path, (int)len, key);
    }
    /* A listener's TLS context is made at start only: a listener whose TLS would change,
     * or a new one with TLS, would otherwise keep (or lack) the old context. A cluster's
     * is made with the cluster: one with new TLS settings is replaced by a new cluster,
     * whose files are watched for rotation from then on. */
    for (size_t i = 0; i < diff->count; i++)
        if (strncmp(diff->items[i].path, "$.listeners", strlen("$.listeners")) == 0 &&
            strstr(diff->items[i].path, "].tls"))
            pf_errlist_add(errs,
                           "%s: TLS settings cannot change while pilotfish runs; restart "
                           "pilotfish to apply them (the running config stays)",
                           diff->items[i].path);
    for (size_t i = 0; i < to->listener_count; i++) {
        bool known = false;
        for (size_t j = 0; j < from->listener_count; j++)
            known = known || strcmp(from->listeners[j].name, to->listeners[i].name) == 0;
        if (to->listeners[i].has_tls && !known)
            pf_errlist_add(errs,
                           "$.listeners[%zu]: a new TLS listener needs a restart; restart "
                           "pilotfish to apply it (the running config stays)",
                           i);
    }
    /* A kept listener's connections were accepted as what it spoke: HTTP keep-alive
     * connections would meet tcp routes (or relays HTTP ones), so the protocol stays. */
    for (size_t i = 0; i < to->listener_count; i++)
        for (size_t j = 0; j < from->listener_count; j++)
            if (strcmp(from->listeners[j].name, to->listeners[i].name) == 0 &&
                from->listeners[j].protocol != to->listeners[i].protocol)
                pf_errlist_add(errs,
                               "$.listeners[%zu].protocol: a listener's protocol cannot change "
                               "while pilotfish runs; give the listener a new name (the old one "
                               "drains) or restart pilotfish (the running config stays)",
                               i);
    /* Clusters whose sources cannot be started or stopped at run time. */
    for (size_t i = 0; i < from->cluster_count; i++) {
        const pf_config_cluster *c = &from->clusters[i];
        const pf_config_cluster *next = reload_find_cluster(to, c->name);
        bool ep;
        reload_cluster_plan plan =
            next ? reload_plan_cluster(diff, c->name, &ep) : RELOAD_CLUSTER_ADDED;
        if (uses_discovery(c) && (!next || plan == RELOAD_CLUSTER_REPLACED))
            pf_errlist_add(errs,
                           "$.clusters[?@.name==\"%s\"]: a %s cluster cannot be %s while "
                           "pilotfish runs (its discovery keeps running); restart pilotfish "
                           "to apply it (the running config stays)",
                           c->name, c->dns.name[0] ? "DNS" : "Kubernetes",
                           next ? "changed this way" : "removed");
    }
    for (size_t i = 0; i < to->cluster_count; i++) {
        const pf_config_cluster *c = &to->clusters[i];
        if (reload_find_cluster(from, c->name) || !uses_discovery(c))
            continue;
        if (c->kubernetes.service[0] || !have_dns)
            pf_errlist_add(errs,
                           "$.clusters[%zu]: a new %s cluster needs a restart (no %s client "
                           "runs yet); restart pilotfish to apply it (the running config "
                           "stays)",
                           i, c->dns.name[0] ? "DNS" : "Kubernetes",
                           c->dns.name[0] ? "DNS" : "Kubernetes");
    }
}
