/* What the balancer suites (test_balancer*.c) share: endpoints written as short specs,
 * sets published through a slot as discovery does (so they carry versions and stats), and
 * balancers with a fixed seed. */
#ifndef PF_TEST_BALANCER_UTIL_H
#define PF_TEST_BALANCER_UTIL_H

#include "config/config.h"
#include "discovery/endpoint_set.h"
#include "proxy/balancer.h"
#include "test/unit/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_TEST_ENDPOINTS 64

/* Endpoints are written "10.0.0.1:80/5" (weight 5) or "10.0.0.1:80/5/down" (unhealthy). */
static inline pf_endpoint endpoint(const char *spec) {
    pf_endpoint ep;
    memset(&ep, 0, sizeof ep);
    char addr[PF_ADDRTEXT_MAX];
    snprintf(addr, sizeof addr, "%s", spec);
    char *slash = strchr(addr, '/');
    ep.weight = 1;
    ep.healthy = true;
    if (slash) {
        *slash = '\0';
        ep.weight = (uint32_t)strtoul(slash + 1, NULL, 10);
        ep.healthy = strstr(slash + 1, "/down") == NULL;
    }
    pf_error err;
    int rc = config_parse_sockaddr(addr, &ep.addr, &err);
    PF_CHECK(rc == PF_OK, "bad address %s in test: %s", addr, err.msg);
    return ep;
}

/* Publishes `n` endpoints into `slot` and returns a reference to the set as published. */
static inline pf_endpoint_set *publish_endpoints(pf_endpoint_slot *slot, const pf_endpoint *eps,
                                                 size_t n) {
    pf_endpoint_set *set = discovery_set_new(eps, n);
    CU_ASSERT_FATAL(set != NULL);
    CU_ASSERT_TRUE(discovery_slot_publish(slot, set));
    pf_endpoint_set *current = discovery_slot_acquire(slot);
    CU_ASSERT_FATAL(current != NULL);
    CU_ASSERT_NOT_EQUAL(current->version, 0);
    return current;
}

/* The same from NULL-terminated specs. */
static inline pf_endpoint_set *publish(pf_endpoint_slot *slot, const char *const *specs) {
    pf_endpoint eps[MAX_TEST_ENDPOINTS];
    size_t n = 0;
    for (; specs[n]; n++) {
        CU_ASSERT_FATAL(n < ARRAY_LEN(eps));
        eps[n] = endpoint(specs[n]);
    }
    return publish_endpoints(slot, eps, n);
}

/* Index of addr in set, or count. */
static inline size_t index_of(const pf_endpoint_set *set, const char *addr) {
    for (size_t i = 0; i < set->count; i++)
        if (strcmp(set->endpoints[i].addr.text, addr) == 0)
            return i;
    return set->count;
}

/* Index of a pick in set (count for NULL); checks that it came from the set. */
static inline size_t pick_index(pf_balancer *b, const pf_endpoint_set *set,
                                const pf_pick_context *ctx) {
    const pf_endpoint *ep = balancer_pick(b, set, ctx);
    if (!ep)
        return set->count;
    PF_CHECK(ep >= set->endpoints && ep < set->endpoints + set->count,
             "pick %p is not an endpoint of the set", (const void *)ep);
    return (size_t)(ep - set->endpoints);
}

/* A request key for tests: the hash of (i, salt). */
static inline uint64_t lb_test_key(uint64_t i, uint64_t salt) {
    uint64_t v[2] = {i, salt};
    return balancer_hash(v, sizeof v);
}

/* A cluster config with every balancing setting at its default. */
static inline pf_config_cluster cluster_config(pf_lb_policy policy) {
    pf_config_cluster cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.name, sizeof cfg.name, "test");
    cfg.lb_policy = policy;
    if (policy == PF_LB_RING_HASH || policy == PF_LB_MAGLEV)
        cfg.hash_on.kind = PF_HASH_SOURCE_IP;
    return cfg;
}

/* A balancer of its own group, seeded with 1; balancer_free releases both. */
static inline pf_balancer *new_balancer_for(const pf_config_cluster *cfg) {
    pf_balancer_group *g = balancer_group_new(cfg);
    CU_ASSERT_FATAL(g != NULL);
    pf_balancer *b = balancer_new(g);
    CU_ASSERT_FATAL(b != NULL);
    balancer_group_unref(g);
    balancer_seed(b, 1);
    return b;
}

static inline pf_balancer *new_balancer(pf_lb_policy policy) {
    pf_config_cluster cfg = cluster_config(policy);
    return new_balancer_for(&cfg);
}

#endif
