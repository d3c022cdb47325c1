/* Ring hash (consistent hashing, Karger et al.; "ketama"): every endpoint puts points on a
 * 64-bit ring, and a request goes to the owner of the first point at or after its key.
 *
 * An endpoint of the highest weight gets hash_table_size points and the others
 * proportionally fewer (at least one), so weights shape the share. A point's place
 * depends only on the endpoint's address and the point's number, and the number of points
 * only on the endpoint's own weight (relative to the heaviest): adding an endpoint moves
 * only the keys that now land on its points (about 1/N), removing one moves only its own.
 * When the owner is unhealthy, or its slow-start ramp does not admit the key yet, the
 * walk goes on clockwise to the next point. The ring covers unhealthy endpoints too, so a
 * health change moves no other key and needs no new table. */
#include "proxy/balancer_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 48 MiB of points at most, whatever the endpoint count and table size. */
#define RING_MAX_POINTS (4u * 1024u * 1024u)

typedef struct ring_point {
    uint64_t hash;
    uint32_t owner;
} ring_point;

static int compare_points(const void *a, const void *b) {
    const ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->owner < y->owner ? -1 : x->owner > y->owner;
}

static lb_table *ring_build(const pf_endpoint_set *set, uint32_t size) {
    uint64_t max_weight = 1, per_max = size ? size : 1, total = 0;
    for (size_t i = 0; i < set->count; i++)
        if (set->endpoints[i].weight > max_weight)
            max_weight = set->endpoints[i].weight;
    /* Endpoints of the highest weight get per_max points; shrink it if that is too many. */
    if ((uint64_t)set->count * per_max > RING_MAX_POINTS)
        per_max = RING_MAX_POINTS / (set->count ? set->count : 1);
    if (per_max == 0)
        per_max = 1;
    for (size_t i = 0; i < set->count; i++)
        total += (per_max * set->endpoints[i].weight + max_weight - 1) / max_weight;
    ring_point *points = malloc((total ? total : 1) * sizeof *points);
    lb_table *t = lb_table_new(total, true);
    if (!points || !t) {
        free(points);
        lb_table_unref(t);
        return NULL;
    }
    size_t n = 0;
    for (size_t i = 0; i < set->count; i++) {
        const pf_endpoint *ep = &set->endpoints[i];
        uint64_t count = (per_max * ep->weight + max_weight - 1) / max_weight;
        char name[PF_ADDRTEXT_MAX + 24];
        for (uint64_t k = 0; k < count; k++) {
            int len = snprintf(name, sizeof name, "%s-%llu", ep->addr.text, (unsigned long long)k);
            points[n].hash = balancer_hash(name, (size_t)len);
            points[n].owner = (uint32_t)i;
            n++;
        }
    }
    qsort(points, n, sizeof *points, compare_points);
    for (size_t k = 0; k < n; k++) {
        t->points[k] = points[k].hash;
        t->owners[k] = points[k].owner;
    }
    free(points);
    return t;
}

static int ring_reset(pf_balancer *b) {
    lb_table_unref(b->state);
    b->state = lb_table_acquire(b->group, b->set);
    return b->state ? PF_OK : PF_ENOMEM;
}

static const pf_endpoint *ring_pick(pf_balancer *b, const pf_pick_context *ctx) {
    const lb_table *t = b->state;
    if (!ctx->has_hash || t->size == 0)
        return &b->set->endpoints[lb_draw_one(b)];
    /* first point >= key, wrapping around to the start */
    size_t lo = 0, hi = t->size;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->points[mid] < ctx->hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* clockwise from there; every endpoint has a point, so a healthy one is met */
    return &b->set->endpoints[lb_first_admitted(b, t->owners, t->size, lo, ctx)];
}

static void ring_free(pf_balancer *b) {
    lb_table_unref(b->state);
    b->state = NULL;
}

const balancer_ops lb_ring_hash_ops = {
    .reset = ring_reset, .pick = ring_pick, .free_state = ring_free, .build_table = ring_build};
