/* Least response time: peak EWMA of response latency x (requests in flight + 1), chosen by
 * power of two choices (as Finagle's and Linkerd's "peak EWMA" balancers).
 *
 * Each worker keeps, per endpoint, an exponentially weighted moving average of the time to
 * the response head. "Peak": a latency above the average replaces it at once, so a
 * slowing endpoint loses traffic right away, while recovery decays in over ewma_decay.
 * The average also decays towards zero while nothing is observed, so an endpoint once
 * slow is tried again eventually rather than starved forever. Multiplying by the requests
 * in flight (all workers') makes a fast endpoint that is already busy look as costly as it
 * is. An endpoint with no observation yet gets a neutral score: it is compared on load
 * alone, as if its latency were the other candidate's, so new endpoints are tried. Ties
 * go to the first draw, and draws follow the effective weights. */
#include "proxy/balancer_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct ewma_slot {
    double cost_us; /* the average at stamp_us */
    uint64_t stamp_us;
    bool observed;
} ewma_slot;

typedef struct ewma_state {
    pf_endpoint_set *set; /* the set the slots are indexed by (a reference) */
    ewma_slot *slots;
} ewma_state;

static void ewma_free(pf_balancer *b) {
    ewma_state *s = b->state;
    if (!s)
        return;
    discovery_set_unref(s->set);
    free(s->slots);
    free(s);
    b->state = NULL;
}

/* New slots for b->set; averages of endpoints also in the old set are kept (both sets are
 * sorted by address, so one merge walk pairs them). */
static int ewma_reset(pf_balancer *b) {
    ewma_state *s = b->state;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return PF_ENOMEM;
        b->state = s;
    }
    const pf_endpoint_set *set = b->set;
    ewma_slot *slots = calloc(set->count ? set->count : 1, sizeof *slots);
    if (!slots)
        return PF_ENOMEM;
    size_t j = 0;
    for (size_t i = 0; s->set && i < set->count; i++) {
        while (j < s->set->count &&
               strcmp(s->set->endpoints[j].addr.text, set->endpoints[i].addr.text) < 0)
            j++;
        if (j < s->set->count &&
            strcmp(s->set->endpoints[j].addr.text, set->endpoints[i].addr.text) == 0)
            slots[i] = s->slots[j];
    }
    free(s->slots);
    discovery_set_unref(s->set);
    s->slots = slots;
    s->set = discovery_set_ref(b->set);
    return PF_OK;
}

static double decay_factor(const pf_balancer *b, uint64_t stamp, uint64_t now) {
    double elapsed = now > stamp ? (double)(now - stamp) : 0.0;
    return exp(-elapsed / (double)b->group->ewma_decay_us);
}

static double cost_now(const pf_balancer *b, const ewma_slot *e, uint64_t now) {
    return e->cost_us * decay_factor(b, e->stamp_us, now);
}

static void ewma_on_response(pf_balancer *b, size_t i, uint64_t latency_us, uint64_t now) {
    ewma_state *s = b->state;
    ewma_slot *e = &s->slots[i];
    /* At least 1 us: a zero average would make the endpoint free at any load. */
    double rtt = latency_us ? (double)latency_us : 1.0;
    if (!e->observed || rtt > cost_now(b, e, now)) {
        e->cost_us = rtt;
    } else {
        double keep = decay_factor(b, e->stamp_us, now);
        e->cost_us = e->cost_us * keep + rtt * (1.0 - keep);
    }
    e->stamp_us = now;
    e->observed = true;
    pf_endpoint_stats *stats = b->set->endpoints[i].stats;
    if (stats)
        atomic_store_explicit(&stats->ewma_latency_us, (uint64_t)e->cost_us, memory_order_relaxed);
}

static const pf_endpoint *ewma_pick(pf_balancer *b, const pf_pick_context *ctx) {
    size_t x, y;
    lb_draw_two(b, &x, &y);
    if (x != y) {
        ewma_state *s = b->state;
        const ewma_slot *ex = &s->slots[x], *ey = &s->slots[y];
        /* Weights (and slow-start ramps) act through the draw, not the score: dividing
         * the score by weight too would make the lighter endpoint lose every idle
         * comparison and get no sequential traffic at all. */
        double lx = (double)(lb_active(b, x) + 1);
        double ly = (double)(lb_active(b, y) + 1);
        if (ex->observed && ey->observed) {
            uint64_t now = lb_now_us(b);
            lx *= cost_now(b, ex, now);
            ly *= cost_now(b, ey, now);
        }
        if (ly < lx)
            x = y;
    }
    return &b->set->endpoints[x];
}

const balancer_ops lb_least_response_time_ops = {.reset = ewma_reset,
                                                 .pick = ewma_pick,
                                                 .on_response = ewma_on_response,
                                                 .free_state = ewma_free};
