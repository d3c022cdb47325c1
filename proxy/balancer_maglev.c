/* Maglev hashing (Eisenbud et al., NSDI 2016, section 3.4): a lookup table of a prime size
 * M in which every endpoint claims slots in the order of its own permutation of 0..M-1,
 * taking turns, until the table is full. A key goes to table[key % M]: one memory read,
 * independent of the endpoint count, and each endpoint owns close to M/N slots.
 *
 * Weights shape the turns as in Envoy: an endpoint of the highest weight claims a slot
 * every round, one of a third of that weight every third round. An endpoint added or
 * removed changes few slots besides its own (the paper measures a few per cent), so about
 * 1/N of keys move. When a slot's owner is unhealthy or not yet admitting the key (slow
 * start), the key probes further slots chosen by rehashing it, the same sequence for the
 * same key; the table covers unhealthy endpoints too, so a health change moves no other
 * key and needs no new table. */
#include "proxy/balancer_int.h"

#include <stdlib.h>
#include <string.h>

/* Probes before giving up on the table and walking the set in order. With a quarter of
 * the endpoints unhealthy, 32 probes all miss with odds of 1 in 10^19. */
#define MAGLEV_PROBES 32u
#define EMPTY UINT32_MAX

typedef struct maglev_entry {
    uint64_t offset, skip, next;
    uint64_t weight, target;
} maglev_entry;

static lb_table *maglev_build(const pf_endpoint_set *set, uint32_t size) {
    uint64_t m = size;
    lb_table *t = lb_table_new(m, false);
    maglev_entry *e = calloc(set->count ? set->count : 1, sizeof *e);
    if (!t || !e) {
        lb_table_unref(t);
        free(e);
        return NULL;
    }
    uint64_t max_weight = 1;
    for (size_t i = 0; i < set->count; i++) {
        const char *addr = set->endpoints[i].addr.text;
        uint64_t h = balancer_hash(addr, strlen(addr));
        e[i].offset = lb_mix(h) % m;
        e[i].skip = m > 1 ? lb_mix(h ^ 0x2545f4914f6cdd1dull) % (m - 1) + 1 : 1;
        e[i].weight = set->endpoints[i].weight;
        if (e[i].weight > max_weight)
            max_weight = e[i].weight;
    }
    for (uint64_t k = 0; k < m; k++)
        t->owners[k] = EMPTY;
    uint64_t filled = 0;
    for (uint64_t round = 1; filled < m && set->count > 0; round++) {
        for (size_t i = 0; i < set->count && filled < m; i++) {
            /* an endpoint of weight w claims a slot in round r once r*w reaches its target */
            if (round * e[i].weight < e[i].target)
                continue;
            e[i].target += max_weight;
            /* M prime and 0 < skip < M: offset + j*skip visits every slot once */
            uint64_t slot = (e[i].offset + e[i].next * e[i].skip) % m;
            while (t->owners[slot] != EMPTY) {
                e[i].next++;
                slot = (e[i].offset + e[i].next * e[i].skip) % m;
            }
            t->owners[slot] = (uint32_t)i;
            e[i].next++;
            filled++;
        }
    }
    free(e);
    return t;
}

static int maglev_reset(pf_balancer *b) {
    lb_table_unref(b->state);
    b->state = lb_table_acquire(b->group, b->set);
    return b->state ? PF_OK : PF_ENOMEM;
}

static bool usable(const pf_balancer *b, size_t i, const pf_pick_context *ctx) {
    return i < b->set->count && b->set->endpoints[i].healthy && !lb_avoided(b, i, ctx) &&
           lb_ramp_admits(b, i, ctx->hash);
}

static const pf_endpoint *maglev_pick(pf_balancer *b, const pf_pick_context *ctx) {
    const lb_table *t = b->state;
    if (!ctx->has_hash || t->size == 0)
        return &b->set->endpoints[lb_draw_one(b)];
    uint64_t key = ctx->hash;
    size_t owner = t->owners[key % t->size];
    if (usable(b, owner, ctx))
        return &b->set->endpoints[owner];
    for (uint64_t probe = 1; probe <= MAGLEV_PROBES; probe++) {
        owner = t->owners[lb_mix(key + probe) % t->size];
        if (usable(b, owner, ctx))
            return &b->set->endpoints[owner];
    }
    /* Still nothing: walk the set from a place fixed by the key. */
    size_t n = b->set->count;
    return &b->set->endpoints[lb_first_admitted(b, NULL, n, (size_t)(key % n), ctx)];
}

static void maglev_free(pf_balancer *b) {
    lb_table_unref(b->state);
    b->state = NULL;
}

const balancer_ops lb_maglev_ops = {.reset = maglev_reset,
                                    .pick = maglev_pick,
                                    .free_state = maglev_free,
                                    .build_table = maglev_build};
