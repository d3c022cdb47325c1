/* Least request by power of two choices (Mitzenmacher; as Envoy and Finagle do it).
 *
 * Draw two different endpoints by weight and send the request to the one with fewer
 * requests in flight relative to its weight. Scanning for the global minimum instead
 * herds: every worker (and every sequential request) sees the same minimum and piles onto
 * it, which with few endpoints is the same endpoint again and again. Two random choices
 * never pick the most loaded endpoint while keeping the maximum load close to the mean.
 * Ties go to the first draw, which is itself random, so idle endpoints share requests by
 * weight. The counts are the shared per-endpoint ones: all workers' requests, not just
 * this worker's. */
#include "proxy/balancer_int.h"

static int lr_reset(pf_balancer *b) {
    return PF_OK;
}

static const pf_endpoint *lr_pick(pf_balancer *b, const pf_pick_context *ctx) {
    size_t x, y;
    lb_draw_two(b, &x, &y);
    if (x != y) {
        /* active/weight compared without division: ax/wx > ay/wy <=> ax*wy > ay*wx. Weights
         * are below 2^24 and requests in flight far below 2^32, so nothing overflows. */
        const uint64_t *w = b->weights.w;
        uint64_t cx = lb_active(b, x) * w[y];
        uint64_t cy = lb_active(b, y) * w[x];
        if (cy < cx)
            x = y;
    }
    return &b->set->endpoints[x];
}

const balancer_ops lb_least_request_ops = {.reset = lr_reset, .pick = lr_pick};
