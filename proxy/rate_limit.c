/* Token buckets as GCRA: see rate_limit_int.h. A bucket with rate r and size b lets a
 * request through at time t when its "theoretical arrival time" tat is at most
 * t + (b - 1)/r, and then moves tat to max(tat, t) + 1/r. A bucket never used (tat 0) is
 * full. Everything is relaxed atomics: the buckets order nothing else. */
#include "proxy/rate_limit_int.h"
#include "proxy/balancer.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct slot {
    _Atomic uint64_t key; /* hash of the key, never 0; 0: free */
    _Atomic uint64_t tat;
    _Atomic uint64_t used_ns; /* last take, for the eviction */
} slot;

struct pf_rate_limiter {
    uint64_t interval_ns; /* between two tokens */
    uint64_t tolerance_ns;
    bool keyed;
    _Atomic uint64_t tat; /* the one bucket without keys */
    size_t sets;
    slot *slots; /* sets * PF_RATE_WAYS */
};

pf_rate_limiter *rate_limiter_new(const pf_config_rate_limit *cfg) {
    pf_rate_limiter *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    uint64_t rps = cfg->requests_per_second ? cfg->requests_per_second : 1;
    uint64_t burst = cfg->burst ? cfg->burst : rps;
    rl->interval_ns = 1000000000ull / rps;
    rl->tolerance_ns = (burst - 1) * rl->interval_ns;
    rl->keyed = cfg->key != PF_RATE_KEY_NONE;
    if (rl->keyed) {
        rl->sets = (cfg->max_keys + PF_RATE_WAYS - 1) / PF_RATE_WAYS;
        if (rl->sets == 0)
            rl->sets = 1;
        rl->slots = calloc(rl->sets * PF_RATE_WAYS, sizeof *rl->slots);
        if (!rl->slots) {
            free(rl);
            return NULL;
        }
    }
    return rl;
}

void rate_limiter_free(pf_rate_limiter *rl) {
    if (!rl)
        return;
    free(rl->slots);
    free(rl);
}

size_t rate_limiter_capacity(const pf_rate_limiter *rl) {
    return rl->keyed ? rl->sets * PF_RATE_WAYS : 0;
}

/* One GCRA step on a bucket. The compare-and-swap loop ends as soon as no other thread
 * moved the bucket in between: each failure means another request took a token. */
static uint64_t take(_Atomic uint64_t *tat, const pf_rate_limiter *rl, uint64_t now) {
    uint64_t old = atomic_load_explicit(tat, memory_order_relaxed);
    for (;;) {
        uint64_t base = old > now ? old : now;
        if (base - now > rl->tolerance_ns)
            return base - now - rl->tolerance_ns;
        if (atomic_compare_exchange_weak_explicit(tat, &old, base + rl->interval_ns,
                                                  memory_order_relaxed, memory_order_relaxed))
            return 0;
    }
}

/* The slot of `hash` in its set: the one holding it, else a free one or the least recently
 * used, claimed for it with a fresh (full) bucket. NULL only when other threads kept
 * claiming the slots it chose: then the request is not limited, once. */
static slot *find_slot(pf_rate_limiter *rl, uint64_t hash, uint64_t now) {
    slot *set = &rl->slots[(hash >> 3) % rl->sets * PF_RATE_WAYS];
    for (int attempt = 0; attempt < 4; attempt++) {
        slot *victim = NULL;
        uint64_t victim_used = UINT64_MAX, victim_key = 0;
        for (unsigned w = 0; w < PF_RATE_WAYS; w++) {
            uint64_t k = atomic_load_explicit(&set[w].key, memory_order_relaxed);
            if (k == hash)
                return &set[w];
            uint64_t used = k ? atomic_load_explicit(&set[w].used_ns, memory_order_relaxed) : 0;
            if (!victim || used < victim_used) {
                victim = &set[w];
                victim_used = used;
                victim_key = k;
            }
        }
        if (atomic_compare_exchange_strong_explicit(&victim->key, &victim_key, hash,
                                                    memory_order_relaxed, memory_order_relaxed)) {
            atomic_store_explicit(&victim->tat, 0, memory_order_relaxed);
            atomic_store_explicit(&victim->used_ns, now, memory_order_relaxed);
            return victim;
        }
    }
    return NULL;
}

uint64_t rate_limiter_take(pf_rate_limiter *rl, const char *key, size_t len, uint64_t now_ns) {
    if (!rl->keyed)
        return take(&rl->tat, rl, now_ns);
    uint64_t hash = balancer_hash(key ? key : "", key ? len : 0) | 1u;
    slot *s = find_slot(rl, hash, now_ns);
    if (!s)
        return 0;
    atomic_store_explicit(&s->used_ns, now_ns, memory_order_relaxed);
    return take(&s->tat, rl, now_ns);
}
