/* Immutable endpoint sets and the slots that publish them to workers. */
#include "discovery/endpoint_set.h"
#include "core/log.h"
#include "core/time.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot_sub {
    pf_slot_callback cb;
    void *arg;
} slot_sub;

struct pf_endpoint_slot {
    pthread_mutex_t lock;
    _Atomic uint64_t generation;
    pf_endpoint_set *current;
    /* Stats by address, kept across snapshots; small clusters dominate, so a sorted array
     * searched by binary search is enough. */
    pf_endpoint_stats **stats;
    char (*stats_keys)[PF_ADDRTEXT_MAX];
    size_t stats_count;
    slot_sub subs[PF_SLOT_SUBSCRIBERS_MAX];
    size_t sub_count;
    char name[PF_NAME_MAX];
};

static void count_healthy(pf_endpoint_set *set) {
    set->healthy_count = 0;
    set->total_weight = 0;
    set->equal_weights = true;
    uint32_t first_weight = 0;
    for (size_t i = 0; i < set->count; i++) {
        const pf_endpoint *ep = &set->endpoints[i];
        if (!ep->healthy)
            continue;
        set->healthy_count++;
        set->total_weight += ep->weight;
        if (!first_weight)
            first_weight = ep->weight;
        else if (ep->weight != first_weight)
            set->equal_weights = false;
    }
}

/* Orders endpoint indexes by address, then by position, so that among duplicates the
 * first one listed wins whatever qsort's stability. */
static int compare_indexes(const void *a, const void *b, void *arg) {
    const pf_endpoint *eps = arg;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int by_addr = strcmp(eps[x].addr.text, eps[y].addr.text);
    if (by_addr)
        return by_addr;
    return x < y ? -1 : x > y;
}

pf_endpoint_set *discovery_set_new(const pf_endpoint *endpoints, size_t count) {
    pf_endpoint_set *set = calloc(1, sizeof *set + count * sizeof(pf_endpoint));
    size_t *order = malloc((count ? count : 1) * sizeof *order);
    if (!set || !order) {
        free(set);
        free(order);
        return NULL;
    }
    atomic_init(&set->refs, 1);
    for (size_t i = 0; i < count; i++)
        order[i] = i;
    qsort_r(order, count, sizeof *order, compare_indexes, (void *)endpoints);
    size_t kept = 0;
    for (size_t k = 0; k < count; k++) {
        const pf_endpoint *ep = &endpoints[order[k]];
        if (kept && strcmp(set->endpoints[kept - 1].addr.text, ep->addr.text) == 0)
            continue;
        set->endpoints[kept] = *ep;
        set->endpoints[kept].stats = NULL;
        if (set->endpoints[kept].weight == 0)
            set->endpoints[kept].weight = 1;
        kept++;
    }
    free(order);
    set->count = kept;
    count_healthy(set);
    return set;
}

pf_endpoint_set *discovery_set_ref(pf_endpoint_set *set) {
    if (set)
        atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
    return set;
}

static void stats_unref(pf_endpoint_stats *stats) {
    if (stats && atomic_fetch_sub_explicit(&stats->refs, 1, memory_order_acq_rel) == 1)
        free(stats);
}

void discovery_set_unref(pf_endpoint_set *set) {
    if (!set || atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < set->count; i++)
        stats_unref(set->endpoints[i].stats);
    free(set);
}

pf_endpoint_set *discovery_set_derive(const pf_endpoint_set *src, const uint32_t *weights,
                                      const bool *healthy) {
    pf_endpoint_set *set = calloc(1, sizeof *set + src->count * sizeof(pf_endpoint));
    if (!set)
        return NULL;
    atomic_init(&set->refs, 1);
    set->version = src->version;
    set->count = src->count;
    for (size_t i = 0; i < src->count; i++) {
        set->endpoints[i] = src->endpoints[i];
        set->endpoints[i].weight = weights[i] ? weights[i] : 1;
        set->endpoints[i].healthy = healthy[i];
        if (set->endpoints[i].stats)
            atomic_fetch_add_explicit(&set->endpoints[i].stats->refs, 1, memory_order_relaxed);
    }
    count_healthy(set);
    return set;
}

bool discovery_set_equal(const pf_endpoint_set *a, const pf_endpoint_set *b) {
    if (!a || !b || a->count != b->count)
        return a == b;
    for (size_t i = 0; i < a->count; i++) {
        const pf_endpoint *x = &a->endpoints[i], *y = &b->endpoints[i];
        if (strcmp(x->addr.text, y->addr.text) != 0 || x->weight != y->weight ||
            x->priority != y->priority || x->healthy != y->healthy ||
            strcmp(x->zone, y->zone) != 0 || strcmp(x->node_name, y->node_name) != 0)
            return false;
    }
    return true;
}

pf_endpoint_slot *discovery_slot_new(const char *name) {
    pf_endpoint_slot *slot = calloc(1, sizeof *slot);
    if (!slot)
        return NULL;
    pthread_mutex_init(&slot->lock, NULL);
    atomic_init(&slot->generation, 0);
    snprintf(slot->name, sizeof slot->name, "%s", name);
    return slot;
}

void discovery_slot_free(pf_endpoint_slot *slot) {
    if (!slot)
        return;
    discovery_set_unref(slot->current);
    for (size_t i = 0; i < slot->stats_count; i++)
        stats_unref(slot->stats[i]);
    free(slot->stats);
    free(slot->stats_keys);
    pthread_mutex_destroy(&slot->lock);
    free(slot);
}

/* Attaches stats to every endpoint of `set` (reusing the slot's by address) and replaces the
 * slot's table with exactly the new set's addresses, so removed endpoints' stats go away
 * once no snapshot uses them. Called with the lock held. */
static int attach_stats(pf_endpoint_slot *slot, pf_endpoint_set *set) {
    pf_endpoint_stats **stats = calloc(set->count ? set->count : 1, sizeof *stats);
    char(*keys)[PF_ADDRTEXT_MAX] = calloc(set->count ? set->count : 1, sizeof *keys);
    if (!stats || !keys) {
        free(stats);
        free(keys);
        return PF_ENOMEM;
    }
    size_t old = 0;
    for (size_t i = 0; i < set->count; i++) {
        const char *addr = set->endpoints[i].addr.text;
        /* Both lists are sorted by address: a merge walk finds the survivors. */
        while (old < slot->stats_count && strcmp(slot->stats_keys[old], addr) < 0)
            old++;
        pf_endpoint_stats *s;
        if (old < slot->stats_count && strcmp(slot->stats_keys[old], addr) == 0) {
            s = slot->stats[old];
            atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
        } else {
            s = calloc(1, sizeof *s);
            if (!s) {
                for (size_t j = 0; j < i; j++)
                    stats_unref(stats[j]);
                free(stats);
                free(keys);
                return PF_ENOMEM;
            }
            atomic_init(&s->refs, 1);
            atomic_init(&s->first_seen_ms, slot->stats_count ? pf_now_ms() : 0);
        }
        stats[i] = s;
        snprintf(keys[i], PF_ADDRTEXT_MAX, "%s", addr);
    }
    for (size_t i = 0; i < set->count; i++) {
        set->endpoints[i].stats = stats[i];
        atomic_fetch_add_explicit(&stats[i]->refs, 1, memory_order_relaxed);
    }
    for (size_t i = 0; i < slot->stats_count; i++)
        stats_unref(slot->stats[i]);
    free(slot->stats);
    free(slot->stats_keys);
    slot->stats = stats;
    slot->stats_keys = keys;
    slot->stats_count = set->count;
    return PF_OK;
}

bool discovery_slot_publish(pf_endpoint_slot *slot, pf_endpoint_set *set) {
    slot_sub subs[PF_SLOT_SUBSCRIBERS_MAX];
    pthread_mutex_lock(&slot->lock);
    uint64_t generation = atomic_load_explicit(&slot->generation, memory_order_relaxed);
    if (generation > 0 && discovery_set_equal(slot->current, set)) {
        pthread_mutex_unlock(&slot->lock);
        discovery_set_unref(set);
        return false;
    }
    if (attach_stats(slot, set) != PF_OK) {
        pthread_mutex_unlock(&slot->lock);
        log_error("endpoint set not published: out of memory cluster=%s", slot->name);
        discovery_set_unref(set);
        return false;
    }
    set->version = generation + 1;
    pf_endpoint_set *old = slot->current;
    slot->current = set;
    atomic_store_explicit(&slot->generation, generation + 1, memory_order_release);
    /* Copied under the lock, called outside it: a subscriber reads the slot it watches. */
    size_t sub_count = slot->sub_count;
    memcpy(subs, slot->subs, sub_count * sizeof subs[0]);
    pthread_mutex_unlock(&slot->lock);
    log_debug("endpoint set published cluster=%s version=%llu endpoints=%zu healthy=%zu",
              slot->name, (unsigned long long)(generation + 1), set->count, set->healthy_count);
    discovery_set_unref(old);
    for (size_t i = 0; i < sub_count; i++)
        subs[i].cb(subs[i].arg);
    return true;
}

int discovery_slot_subscribe(pf_endpoint_slot *slot, pf_slot_callback cb, void *arg) {
    int rc = PF_ELIMIT;
    pthread_mutex_lock(&slot->lock);
    if (slot->sub_count < PF_SLOT_SUBSCRIBERS_MAX) {
        slot->subs[slot->sub_count].cb = cb;
        slot->subs[slot->sub_count].arg = arg;
        slot->sub_count++;
        rc = PF_OK;
    }
    pthread_mutex_unlock(&slot->lock);
    return rc;
}

void discovery_slot_unsubscribe(pf_endpoint_slot *slot, pf_slot_callback cb, void *arg) {
    pthread_mutex_lock(&slot->lock);
    for (size_t i = 0; i < slot->sub_count; i++) {
        if (slot->subs[i].cb == cb && slot->subs[i].arg == arg) {
            memmove(&slot->subs[i], &slot->subs[i + 1],
                    (slot->sub_count - i - 1) * sizeof slot->subs[0]);
            slot->sub_count--;
            break;
        }
    }
    pthread_mutex_unlock(&slot->lock);
}

pf_endpoint_set *discovery_slot_acquire(pf_endpoint_slot *slot) {
    pthread_mutex_lock(&slot->lock);
    pf_endpoint_set *set = discovery_set_ref(slot->current);
    pthread_mutex_unlock(&slot->lock);
    return set;
}

uint64_t discovery_slot_generation(const pf_endpoint_slot *slot) {
    return atomic_load_explicit(&slot->generation, memory_order_acquire);
}

const char *discovery_slot_name(const pf_endpoint_slot *slot) {
    return slot->name;
}

void discovery_cache_init(pf_set_cache *cache, pf_endpoint_slot *slot) {
    cache->slot = slot;
    cache->generation = 0;
    cache->set = NULL;
}

void discovery_cache_release(pf_set_cache *cache) {
    discovery_set_unref(cache->set);
    cache->set = NULL;
    cache->generation = 0;
}

void discovery_cache_refresh(pf_set_cache *cache) {
    pthread_mutex_lock(&cache->slot->lock);
    pf_endpoint_set *fresh = discovery_set_ref(cache->slot->current);
    cache->generation = atomic_load_explicit(&cache->slot->generation, memory_order_relaxed);
    pthread_mutex_unlock(&cache->slot->lock);
    discovery_set_unref(cache->set);
    cache->set = fresh;
}
