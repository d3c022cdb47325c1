/* Private to the balancer files: the ops table each policy implements, the balancer and
 * group structs, and what policies share: random numbers, effective weights (slow start
 * applied), weighted draws, and the hash tables cached in the group for every worker. */
#ifndef PF_PROXY_BALANCER_INT_H
#define PF_PROXY_BALANCER_INT_H

#include "proxy/balancer.h"

#include <pthread.h>
#include <stdatomic.h>

/* Effective weight = endpoint weight x ramp in per mille, so that a ramping endpoint's
 * share stays an integer. A new endpoint starts at LB_RAMP_MIN (10%, as Envoy's default
 * min_weight_percent): at zero it would get no request at all for a while. */
#define LB_RAMP_FULL 1000u
#define LB_RAMP_MIN 100u

/* Builds a table for `set` with the group's hash_table_size; NULL when out of memory. */
typedef struct lb_table lb_table;
typedef lb_table *(*lb_table_builder)(const pf_endpoint_set *set, uint32_t size);

typedef struct balancer_ops {
    /* Derives the policy's state from b->set, a new set; b->weights is already computed.
     * Returns 0, or PF_ENOMEM: picks then fall back to a plain rotation until the next
     * set. State carried over from older sets must say itself which set it belongs to. */
    int (*reset)(pf_balancer *b);
    /* Only called when b->set has a healthy endpoint. */
    const pf_endpoint *(*pick)(pf_balancer *b, const pf_pick_context *ctx);
    /* Endpoint `index` of b->set answered after latency_us; NULL when unused. */
    void (*on_response)(pf_balancer *b, size_t index, uint64_t latency_us, uint64_t now_us);
    void (*free_state)(pf_balancer *b);
    lb_table_builder build_table; /* hash policies only */
} balancer_ops;

extern const balancer_ops lb_round_robin_ops;
extern const balancer_ops lb_least_request_ops;
extern const balancer_ops lb_least_response_time_ops;
extern const balancer_ops lb_random_ops;
extern const balancer_ops lb_ring_hash_ops;
extern const balancer_ops lb_maglev_ops;

/* An immutable lookup table of a hash policy, shared by the workers through the group. */
struct lb_table {
    _Atomic uint32_t refs;
    uint64_t fingerprint; /* of the addresses and weights it was built from */
    size_t endpoint_count;
    size_t size;
    uint64_t *points; /* ring_hash: point hashes, ascending; maglev: NULL */
    uint32_t *owners; /* endpoint index (into the set) of each point or slot */
};

struct pf_balancer_group {
    _Atomic uint32_t refs;
    const balancer_ops *ops;
    pf_config_hash_on hash_on;
    uint32_t table_size;
    uint64_t ewma_decay_us;
    uint64_t slow_start_us;
    uint64_t (*now_us)(void);
    pthread_mutex_t lock; /* guards table and tables_built; never taken on a pick */
    lb_table *table;      /* the latest table built, handed to the next worker that asks */
    size_t tables_built;
};

/* Effective weights over b->set: weight x ramp, 0 for unhealthy endpoints. */
typedef struct lb_weights {
    uint64_t *w;
    uint64_t *cum; /* cum[i] = w[0] + ... + w[i], for weighted draws */
    size_t cap;
    uint64_t total;
    bool equal;   /* every healthy endpoint has the same effective weight */
    bool ramping; /* some endpoint is inside its slow-start window */
    uint64_t next_update_us;
} lb_weights;

struct pf_balancer {
    pf_balancer_group *group;
    const balancer_ops *ops;
    pf_endpoint_set *set; /* a reference to the set the state below was derived from */
    uint64_t set_version;
    uint64_t rng[2];
    lb_weights weights;
    bool fallback; /* the policy's state could not be built: rotate instead */
    size_t cursor;
    void *state; /* the policy's own, freed by ops->free_state */
};

/* Plain rotation over the healthy endpoints of b->set (NULL when there is none). */
const pf_endpoint *lb_next_healthy(pf_balancer *b);
uint64_t lb_random(pf_balancer *b);
uint64_t lb_now_us(const pf_balancer *b);
/* A 64-bit finalizer (splitmix64): spreads any integer over all bits. */
uint64_t lb_mix(uint64_t x);

/* Index of the endpoint whose cumulative weight range holds r (r < weights.total). */
size_t lb_draw(const pf_balancer *b, uint64_t r);
/* A healthy endpoint drawn by effective weight. */
size_t lb_draw_one(pf_balancer *b);
/* Two healthy endpoints drawn by effective weight without replacement (the same index
 * twice only when a single endpoint has weight). */
void lb_draw_two(pf_balancer *b, size_t *first, size_t *second);
/* Requests in flight to endpoint i, over all workers. */
uint64_t lb_active(const pf_balancer *b, size_t i);

/* Whether key may use ramping endpoint i: true for a share of keys that grows with the
 * ramp, the same keys every time, so hash policies ramp without losing stickiness. */
bool lb_ramp_admits(const pf_balancer *b, size_t i, uint64_t key);

/* Whether endpoint i is one ctx asks to avoid (it failed this request already). */
bool lb_avoided(const pf_balancer *b, size_t i, const pf_pick_context *ctx);

/* Walks endpoint indexes order[start], order[start + 1], ... (wrapping; order NULL: the
 * set's own order) and returns the first healthy, not avoided one that admits ctx's key,
 * else the first healthy one not avoided, else the avoided one when it is the only healthy
 * endpoint: "the next in hash order" for the hash policies. SIZE_MAX when none is. */
size_t lb_first_admitted(const pf_balancer *b, const uint32_t *order, size_t len, size_t start,
                         const pf_pick_context *ctx);

/* A reference to the group's table for `set`, building it (once for all workers) when the
 * cached one belongs to other endpoints. NULL when out of memory. */
lb_table *lb_table_acquire(pf_balancer_group *g, const pf_endpoint_set *set);
lb_table *lb_table_new(size_t size, bool with_points);
void lb_table_unref(lb_table *t);

#endif
