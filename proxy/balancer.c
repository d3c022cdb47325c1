/* Round robin and smooth weighted round robin.
 *
 * Smooth WRR (as in nginx): every pick adds each endpoint's weight to its current weight,
 * picks the largest, and subtracts the total from the winner. Weights 5,1,1 give
 * a,a,b,a,c,a,a instead of a burst of five a's. With equal weights it is plain round
 * robin, which we then do with a cursor alone. */
#include "proxy/balancer.h"

#include <stdlib.h>

typedef struct balancer_ops {
    void (*reset)(pf_balancer *b, const pf_endpoint_set *set);
    const pf_endpoint *(*pick)(pf_balancer *b, const pf_endpoint_set *set,
                               const pf_pick_context *ctx);
} balancer_ops;

struct pf_balancer {
    const balancer_ops *ops;
    uint64_t set_version; /* set the derived state belongs to; 0 = none */
    size_t cursor;
    int64_t *current; /* smooth WRR current weights, one per endpoint of the set */
    size_t current_len;
};

static const pf_endpoint *pick_next_healthy(pf_balancer *b, const pf_endpoint_set *set) {
    for (size_t tries = 0; tries < set->count; tries++) {
        const pf_endpoint *ep = &set->endpoints[b->cursor++ % set->count];
        if (ep->healthy)
            return ep;
    }
    return NULL;
}

static void rr_reset(pf_balancer *b, const pf_endpoint_set *set) {
    /* Start new sets at a different place per worker, not all at endpoint 0. */
    b->cursor = (size_t)rand();
}

static void swrr_reset(pf_balancer *b, const pf_endpoint_set *set) {
    rr_reset(b, set);
    if (b->current_len < set->count) {
        int64_t *current = realloc(b->current, set->count * sizeof *current);
        if (!current) {
            b->current_len = 0;
            return;
        }
        b->current = current;
        b->current_len = set->count;
    }
    for (size_t i = 0; i < set->count; i++)
        b->current[i] = 0;
}

static const pf_endpoint *swrr_pick(pf_balancer *b, const pf_endpoint_set *set,
                                    const pf_pick_context *ctx) {
    if (set->equal_weights || b->current_len < set->count)
        return pick_next_healthy(b, set);
    const pf_endpoint *best = NULL;
    size_t best_index = 0;
    for (size_t i = 0; i < set->count; i++) {
        const pf_endpoint *ep = &set->endpoints[i];
        if (!ep->healthy)
            continue;
        b->current[i] += ep->weight;
        if (!best || b->current[i] > b->current[best_index]) {
            best = ep;
            best_index = i;
        }
    }
    if (best)
        b->current[best_index] -= (int64_t)set->total_weight;
    return best;
}

static const balancer_ops round_robin_ops = {swrr_reset, swrr_pick};

pf_balancer *balancer_new(pf_lb_policy policy) {
    pf_balancer *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    /* Both names honour weights (a user who writes weights means them); the plain cursor
     * is the fast path smooth WRR itself takes when weights are equal. Policies that
     * follow (least request, hashing) get their own ops here. */
    switch (policy) {
    case PF_LB_ROUND_ROBIN:
    case PF_LB_WEIGHTED_ROUND_ROBIN:
        b->ops = &round_robin_ops;
        break;
    }
    return b;
}

void balancer_free(pf_balancer *b) {
    if (!b)
        return;
    free(b->current);
    free(b);
}

const pf_endpoint *balancer_pick(pf_balancer *b, const pf_endpoint_set *set,
                                 const pf_pick_context *ctx) {
    if (!set || set->healthy_count == 0)
        return NULL;
    if (b->set_version != set->version || b->set_version == 0) {
        b->ops->reset(b, set);
        b->set_version = set->version;
    }
    return b->ops->pick(b, set, ctx);
}
