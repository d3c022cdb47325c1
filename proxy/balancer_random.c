/* Random: each pick draws an endpoint with probability proportional to its effective
 * weight. No state beyond the balancer's own generator and weights, so nothing to reset;
 * with many workers or many proxies it spreads load without any coordination. */
#include "proxy/balancer_int.h"

static int random_reset(pf_balancer *b) {
    return PF_OK;
}

static const pf_endpoint *random_pick(pf_balancer *b, const pf_pick_context *ctx) {
    return &b->set->endpoints[lb_draw_one(b)];
}

const balancer_ops lb_random_ops = {.reset = random_reset, .pick = random_pick};
