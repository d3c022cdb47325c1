/* Round robin and smooth weighted round robin.
 *
 * Smooth WRR (as in nginx): every pick adds each endpoint's weight to its current weight,
 * picks the largest, and subtracts the total from the winner. Weights 5,1,1 give
 * a,a,b,a,c,a,a instead of a burst of five a's. With equal weights it is plain round
 * robin, which we then do with a cursor alone. The weights are the effective ones, so an
 * endpoint in slow start gets its ramped share. */
#include "proxy/balancer_int.h"

#include <stdlib.h>

typedef struct rr_state {
    int64_t *current; /* one per endpoint of the set */
    size_t cap;
} rr_state;

static int rr_reset(pf_balancer *b) {
    rr_state *s = b->state;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return PF_ENOMEM;
        b->state = s;
    }
    size_t n = b->set->count;
    if (s->cap < n) {
        int64_t *current = realloc(s->current, n * sizeof *current);
        if (!current)
            return PF_ENOMEM;
        s->current = current;
        s->cap = n;
    }
    for (size_t i = 0; i < n; i++)
        s->current[i] = 0;
    return PF_OK;
}

static const pf_endpoint *rr_pick(pf_balancer *b, const pf_pick_context *ctx) {
    const lb_weights *w = &b->weights;
    if (w->equal)
        return lb_next_healthy(b);
    rr_state *s = b->state;
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < b->set->count; i++) {
        if (!w->w[i])
            continue;
        s->current[i] += (int64_t)w->w[i];
        if (best == SIZE_MAX || s->current[i] > s->current[best])
            best = i;
    }
    s->current[best] -= (int64_t)w->total;
    return &b->set->endpoints[best];
}

static void rr_free(pf_balancer *b) {
    rr_state *s = b->state;
    if (s)
        free(s->current);
    free(s);
    b->state = NULL;
}

const balancer_ops lb_round_robin_ops = {.reset = rr_reset, .pick = rr_pick, .free_state = rr_free};
