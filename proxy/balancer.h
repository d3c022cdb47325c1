/* Load balancers: pick one endpoint of a cluster's current endpoint set per request.
 *
 * A pf_balancer belongs to one worker and one cluster, so its state (cursors, current
 * weights, latency averages) needs no lock. It is told which set to pick from on every call
 * and notices a new snapshot by the set's version, rebuilding what it derived from the old
 * one. What the workers of a cluster share lives in its pf_balancer_group: the settings, and
 * the immutable hash tables of ring_hash and maglev, built once per endpoint set by the first
 * worker that needs them. Each policy is a balancer_ops in its own balancer_<policy>.c
 * (see balancer_int.h); this header is the whole interface. */
#ifndef PF_PROXY_BALANCER_H
#define PF_PROXY_BALANCER_H

#include "config/config.h"
#include "discovery/endpoint_set.h"
#include "proxy/http1.h"

typedef struct pf_balancer pf_balancer;
typedef struct pf_balancer_group pf_balancer_group;

/* What a policy may look at besides the set: the request's hash key, and on a retry the
 * endpoint that just failed. */
typedef struct pf_pick_context {
    uint64_t hash;
    bool has_hash; /* false: no key (none configured, or absent); hash policies pick at random */
    /* A retry: balancer_hash() of the address texts of the endpoints that failed this
     * request. Hash policies treat them as unhealthy for this pick, so the key goes to the
     * next endpoint in hash order (the same one every time) instead of back to a failed
     * one. Other policies draw again. */
    const uint64_t *avoid;
    size_t avoid_count;
} pf_pick_context;

/* Creates the shared part of one cluster's balancers from its config (copied). Returns a
 * group with one reference owned by the caller, or NULL when out of memory. Any thread. */
pf_balancer_group *balancer_group_new(const pf_config_cluster *cfg);
/* Drops a reference; the group goes with its last balancer and last holder. Any thread. */
void balancer_group_unref(pf_balancer_group *g);
/* Builds the hash table for `set` (the set the workers will pick from) before the first
 * pick needs it, e.g. on the thread that publishes the set, so that no request waits for
 * the build. A no-op for policies without a table. Any thread. */
void balancer_group_prepare(pf_balancer_group *g, const pf_endpoint_set *set);

/* Creates a balancer of the group's policy for one worker; it holds a reference to the group.
 * NULL when out of memory. Owned by the caller (a worker). */
pf_balancer *balancer_new(pf_balancer_group *g);
void balancer_free(pf_balancer *b);

/* The hash key of a request for the group's hash_on setting (header, cookie, source IP or
 * path); has_hash is false when the policy hashes nothing or the key is absent. `path` is
 * the target without the query. Worker thread of the balancer. */
pf_pick_context balancer_context(const pf_balancer *b, const pf_head *req, const char *client_ip,
                                 const char *path, size_t path_len);

/* Returns a healthy endpoint of `set` (borrowed from the set), or NULL when the set has
 * none. `ctx` may be NULL. Worker thread of the balancer only. */
const pf_endpoint *balancer_pick(pf_balancer *b, const pf_endpoint_set *set,
                                 const pf_pick_context *ctx);

/* Feedback for latency-aware policies: the response head from `ep` (an endpoint a pick of
 * this balancer returned, from this or an older set) came `latency_us` after the request
 * started. A no-op for policies that do not use it. Worker thread of the balancer only. */
void balancer_on_response(pf_balancer *b, const pf_endpoint *ep, uint64_t latency_us);

/* The 64-bit hash used for request keys and table points (stable across runs and hosts,
 * so every sidecar maps a key to the same endpoint). */
uint64_t balancer_hash(const void *data, size_t len);

/* The value of cookie `name` (compared exactly) in the request's Cookie lines: true and
 * the value (borrowed from req) in *value and *len when present. Any thread. */
bool balancer_find_cookie(const pf_head *req, const char *name, const char **value, size_t *len);

/* For tests: a fixed seed for the balancer's random choices, and a clock (monotonic
 * microseconds, default pf_now_us) for EWMA decay and slow start. Call before any pick. */
void balancer_seed(pf_balancer *b, uint64_t seed);
void balancer_group_set_clock(pf_balancer_group *g, uint64_t (*now_us)(void));
/* How many hash tables the group has built so far (tests: one per set, not per worker). */
size_t balancer_group_tables_built(pf_balancer_group *g);

#endif
