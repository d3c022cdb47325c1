/* Unit tests for discovery/endpoint_set: building sets (sorting, dedupe, derived counts),
 * comparing them, publishing through a slot (generations, equal sets dropped, references,
 * per-address stats that outlive snapshots), worker caches, and one publisher thread racing
 * one reader thread. Run under ASan for the reference counting (no leak, no use after
 * free); the threaded test is also meant for TSan. */
#include "config/config.h"
#include "discovery/endpoint_set.h"
#include "test/unit/unit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static pf_endpoint endpoint(const char *addr, uint32_t weight, bool healthy) {
    pf_endpoint ep;
    memset(&ep, 0, sizeof ep);
    pf_error err;
    int rc = config_parse_sockaddr(addr, &ep.addr, &err);
    PF_CHECK(rc == PF_OK, "bad address %s in test: %s", addr, err.msg);
    ep.weight = weight;
    ep.healthy = healthy;
    return ep;
}

static uint32_t refs_of(const pf_endpoint_set *set) {
    return atomic_load(&((pf_endpoint_set *)set)->refs);
}

static uint32_t stats_refs(const pf_endpoint *ep) {
    return atomic_load(&ep->stats->refs);
}

/* ---- sets ---------------------------------------------------------------------------- */

static void test_set_is_sorted_by_address_text(void) {
    pf_endpoint eps[] = {endpoint("10.0.0.3:80", 1, true), endpoint("[::1]:81", 1, true),
                         endpoint("10.0.0.1:8080", 1, true), endpoint("10.0.0.10:80", 1, true),
                         endpoint("10.0.0.1:80", 1, true)};
    pf_endpoint_set *set = discovery_set_new(eps, ARRAY_LEN(eps));
    CU_ASSERT_FATAL(set != NULL);
    /* bytes, not numbers: '0' sorts before ':' */
    static const char *const want[] = {"10.0.0.10:80", "10.0.0.1:80", "10.0.0.1:8080",
                                       "10.0.0.3:80", "[::1]:81"};
    CU_ASSERT_EQUAL_FATAL(set->count, ARRAY_LEN(want));
    for (size_t i = 0; i < ARRAY_LEN(want); i++)
        PF_CHECK(strcmp(set->endpoints[i].addr.text, want[i]) == 0, "endpoint %zu: %s, want %s", i,
                 set->endpoints[i].addr.text, want[i]);
    CU_ASSERT_EQUAL(refs_of(set), 1);
    CU_ASSERT_EQUAL(set->version, 0);
    discovery_set_unref(set);
}

static void test_set_keeps_the_first_of_duplicated_addresses(void) {
    /* 10 addresses, each three times with a different weight, in a scrambled order; the
     * weight of the first occurrence in input order must win. */
    enum { ADDRS = 10, COPIES = 3, N = ADDRS * COPIES };
    pf_endpoint eps[N];
    uint32_t first_weight[ADDRS] = {0};
    for (size_t i = 0; i < N; i++) {
        size_t slot = (i * 7) % N; /* 7 is prime to 30: a permutation */
        size_t a = slot % ADDRS;
        char addr[32];
        snprintf(addr, sizeof addr, "10.0.0.1:80%02zu", a);
        eps[i] = endpoint(addr, (uint32_t)(i + 1), true);
        if (!first_weight[a])
            first_weight[a] = (uint32_t)(i + 1);
    }
    pf_endpoint_set *set = discovery_set_new(eps, N);
    CU_ASSERT_FATAL(set != NULL);
    CU_ASSERT_EQUAL_FATAL(set->count, ADDRS);
    for (size_t a = 0; a < ADDRS; a++) {
        char addr[32];
        snprintf(addr, sizeof addr, "10.0.0.1:80%02zu", a);
        PF_CHECK(strcmp(set->endpoints[a].addr.text, addr) == 0, "endpoint %zu: %s, want %s", a,
                 set->endpoints[a].addr.text, addr);
        PF_CHECK(set->endpoints[a].weight == first_weight[a], "%s: weight %u, want %u (first)",
                 addr, set->endpoints[a].weight, first_weight[a]);
    }
    discovery_set_unref(set);
}

static void test_set_counts_healthy_endpoints_and_their_weight(void) {
    pf_endpoint eps[] = {endpoint("10.0.0.1:80", 2, true), endpoint("10.0.0.2:80", 3, false),
                         endpoint("10.0.0.3:80", 5, true), endpoint("10.0.0.4:80", 0, true)};
    pf_endpoint_set *set = discovery_set_new(eps, ARRAY_LEN(eps));
    CU_ASSERT_FATAL(set != NULL);
    CU_ASSERT_EQUAL(set->count, 4);
    CU_ASSERT_EQUAL(set->healthy_count, 3);
    CU_ASSERT_EQUAL(set->endpoints[3].weight, 1); /* weight 0 means 1 */
    CU_ASSERT_EQUAL(set->total_weight, 2 + 5 + 1);
    CU_ASSERT_FALSE(set->equal_weights);
    discovery_set_unref(set);
}

static void test_equal_weights_looks_at_healthy_endpoints_only(void) {
    static const struct {
        uint32_t w[3];
        bool healthy[3];
        bool equal;
    } rows[] = {
        {{1, 1, 1}, {true, true, true}, true},   {{4, 4, 4}, {true, true, true}, true},
        {{1, 2, 1}, {true, true, true}, false},  {{1, 2, 1}, {true, false, true}, true},
        {{7, 2, 2}, {false, true, true}, true},  {{7, 2, 3}, {false, true, true}, false},
        {{0, 1, 1}, {true, true, true}, true},   {{5, 5, 5}, {false, false, false}, true},
        {{3, 9, 3}, {false, true, false}, true},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        pf_endpoint eps[3];
        for (size_t k = 0; k < 3; k++) {
            char addr[32];
            snprintf(addr, sizeof addr, "10.0.0.%zu:80", k + 1);
            eps[k] = endpoint(addr, rows[i].w[k], rows[i].healthy[k]);
        }
        pf_endpoint_set *set = discovery_set_new(eps, 3);
        CU_ASSERT_FATAL(set != NULL);
        PF_CHECK(set->equal_weights == rows[i].equal, "row %zu: equal_weights %d, want %d", i,
                 set->equal_weights, rows[i].equal);
        discovery_set_unref(set);
    }
}

static void test_empty_set(void) {
    pf_endpoint_set *set = discovery_set_new(NULL, 0);
    CU_ASSERT_FATAL(set != NULL);
    CU_ASSERT_EQUAL(set->count, 0);
    CU_ASSERT_EQUAL(set->healthy_count, 0);
    CU_ASSERT_EQUAL(set->total_weight, 0);
    CU_ASSERT_TRUE(set->equal_weights);
    discovery_set_unref(set);
}

static void test_set_new_ignores_stats_pointers_passed_in(void) {
    pf_endpoint_stats bogus;
    pf_endpoint ep = endpoint("10.0.0.1:80", 1, true);
    ep.stats = &bogus;
    pf_endpoint_set *set = discovery_set_new(&ep, 1);
    CU_ASSERT_FATAL(set != NULL);
    CU_ASSERT_PTR_NULL(set->endpoints[0].stats);
    discovery_set_unref(set); /* must not touch &bogus */
}

static void test_set_refs_count_up_and_down(void) {
    pf_endpoint ep = endpoint("10.0.0.1:80", 1, true);
    pf_endpoint_set *set = discovery_set_new(&ep, 1);
    CU_ASSERT_PTR_EQUAL(discovery_set_ref(set), set);
    CU_ASSERT_EQUAL(refs_of(set), 2);
    discovery_set_unref(set);
    CU_ASSERT_EQUAL(refs_of(set), 1);
    CU_ASSERT_PTR_NULL(discovery_set_ref(NULL));
    discovery_set_unref(NULL);
    discovery_set_unref(set); /* freed: ASan reports a leak otherwise */
}

static void test_set_equal_compares_every_attribute(void) {
    pf_endpoint base[] = {endpoint("10.0.0.1:80", 2, true), endpoint("10.0.0.2:80", 1, true)};
    snprintf(base[0].zone, sizeof base[0].zone, "eu-1a");
    pf_endpoint_set *a = discovery_set_new(base, 2);
    pf_endpoint reversed[] = {base[1], base[0]};
    pf_endpoint_set *same = discovery_set_new(reversed, 2);
    CU_ASSERT_TRUE(discovery_set_equal(a, same));
    CU_ASSERT_TRUE(discovery_set_equal(a, a));

    static const char *const what[] = {"weight", "priority", "health", "zone", "address"};
    for (size_t k = 0; k < ARRAY_LEN(what); k++) {
        pf_endpoint changed[] = {base[0], base[1]};
        switch (k) {
        case 0:
            changed[1].weight = 3;
            break;
        case 1:
            changed[1].priority = 1;
            break;
        case 2:
            changed[1].healthy = false;
            break;
        case 3:
            snprintf(changed[0].zone, sizeof changed[0].zone, "eu-1b");
            break;
        case 4:
            changed[1] = endpoint("10.0.0.3:80", 1, true);
            break;
        }
        pf_endpoint_set *b = discovery_set_new(changed, 2);
        PF_CHECK(!discovery_set_equal(a, b), "sets differing in %s compare equal", what[k]);
        PF_CHECK(!discovery_set_equal(b, a), "sets differing in %s compare equal (swapped)",
                 what[k]);
        discovery_set_unref(b);
    }
    pf_endpoint_set *shorter = discovery_set_new(base, 1);
    CU_ASSERT_FALSE(discovery_set_equal(a, shorter));
    CU_ASSERT_FALSE(discovery_set_equal(a, NULL));
    CU_ASSERT_FALSE(discovery_set_equal(NULL, a));
    CU_ASSERT_TRUE(discovery_set_equal(NULL, NULL));
    pf_endpoint_set *e1 = discovery_set_new(NULL, 0), *e2 = discovery_set_new(NULL, 0);
    CU_ASSERT_TRUE(discovery_set_equal(e1, e2));
    /* duplicates do not make a set different */
    pf_endpoint dup[] = {base[0], base[1], base[1]};
    pf_endpoint_set *with_dup = discovery_set_new(dup, 3);
    CU_ASSERT_TRUE(discovery_set_equal(a, with_dup));
    discovery_set_unref(with_dup);
    discovery_set_unref(e1);
    discovery_set_unref(e2);
    discovery_set_unref(shorter);
    discovery_set_unref(same);
    discovery_set_unref(a);
}

/* ---- slots ----------------------------------------------------------------------------- */

static pf_endpoint_set *set_of(const char *addr1, const char *addr2, uint32_t weight) {
    pf_endpoint eps[2];
    size_t n = 0;
    if (addr1)
        eps[n++] = endpoint(addr1, weight, true);
    if (addr2)
        eps[n++] = endpoint(addr2, weight, true);
    pf_endpoint_set *set = discovery_set_new(eps, n);
    CU_ASSERT_FATAL(set != NULL);
    return set;
}

static void test_slot_generation_counts_published_changes_only(void) {
    pf_endpoint_slot *slot = discovery_slot_new("web");
    CU_ASSERT_FATAL(slot != NULL);
    CU_ASSERT_STRING_EQUAL(discovery_slot_name(slot), "web");
    CU_ASSERT_EQUAL(discovery_slot_generation(slot), 0);
    CU_ASSERT_PTR_NULL(discovery_slot_acquire(slot));

    CU_ASSERT_TRUE(discovery_slot_publish(slot, set_of("10.0.0.1:80", NULL, 1)));
    CU_ASSERT_EQUAL(discovery_slot_generation(slot), 1);
    pf_endpoint_set *first = discovery_slot_acquire(slot);
    CU_ASSERT_EQUAL(first->version, 1);

    /* an equal set is dropped: same generation, same current set */
    CU_ASSERT_FALSE(discovery_slot_publish(slot, set_of("10.0.0.1:80", NULL, 1)));
    CU_ASSERT_EQUAL(discovery_slot_generation(slot), 1);
    pf_endpoint_set *still = discovery_slot_acquire(slot);
    CU_ASSERT_PTR_EQUAL(still, first);
    discovery_set_unref(still);

    CU_ASSERT_TRUE(discovery_slot_publish(slot, set_of("10.0.0.1:80", NULL, 2)));
    CU_ASSERT_EQUAL(discovery_slot_generation(slot), 2);
    pf_endpoint_set *second = discovery_slot_acquire(slot);
    CU_ASSERT_EQUAL(second->version, 2);
    CU_ASSERT_EQUAL(second->endpoints[0].weight, 2);
    CU_ASSERT_EQUAL(first->version, 1); /* the old snapshot is unchanged */

    /* an empty set is a change too, and then equal to the next empty one */
    CU_ASSERT_TRUE(discovery_slot_publish(slot, set_of(NULL, NULL, 1)));
    CU_ASSERT_EQUAL(discovery_slot_generation(slot), 3);
    CU_ASSERT_FALSE(discovery_slot_publish(slot, set_of(NULL, NULL, 1)));
    CU_ASSERT_EQUAL(discovery_slot_generation(slot), 3);

    discovery_set_unref(first);
    discovery_set_unref(second);
    discovery_slot_free(slot);
    discovery_slot_free(NULL);
}

static void test_first_publish_of_an_empty_set_is_a_change(void) {
    pf_endpoint_slot *slot = discovery_slot_new("empty");
    CU_ASSERT_TRUE(discovery_slot_publish(slot, set_of(NULL, NULL, 1)));
    CU_ASSERT_EQUAL(discovery_slot_generation(slot), 1);
    pf_endpoint_set *set = discovery_slot_acquire(slot);
    CU_ASSERT_PTR_NOT_NULL(set);
    if (set)
        CU_ASSERT_EQUAL(set->count, 0);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

static void test_acquired_set_outlives_the_next_publish(void) {
    pf_endpoint_slot *slot = discovery_slot_new("refs");
    discovery_slot_publish(slot, set_of("10.0.0.1:80", "10.0.0.2:80", 1));
    pf_endpoint_set *held = discovery_slot_acquire(slot);
    CU_ASSERT_EQUAL(refs_of(held), 2); /* the slot's and ours */
    pf_endpoint_set *again = discovery_slot_acquire(slot);
    CU_ASSERT_EQUAL(refs_of(held), 3);
    discovery_set_unref(again);

    discovery_slot_publish(slot, set_of("10.0.0.3:80", NULL, 1));
    CU_ASSERT_EQUAL(refs_of(held), 1); /* only ours now */
    /* still readable, stats included (ASan would see a use after free) */
    CU_ASSERT_STRING_EQUAL(held->endpoints[1].addr.text, "10.0.0.2:80");
    CU_ASSERT_PTR_NOT_NULL_FATAL(held->endpoints[1].stats);
    atomic_fetch_add(&held->endpoints[1].stats->requests_total, 1);
    discovery_set_unref(held);

    pf_endpoint_set *current = discovery_slot_acquire(slot);
    CU_ASSERT_EQUAL(current->count, 1);
    CU_ASSERT_STRING_EQUAL(current->endpoints[0].addr.text, "10.0.0.3:80");
    discovery_set_unref(current);
    discovery_slot_free(slot);
}

static void test_stats_survive_for_kept_addresses_and_start_fresh_for_new_ones(void) {
    pf_endpoint_slot *slot = discovery_slot_new("stats");
    discovery_slot_publish(slot, set_of("10.0.0.1:80", "10.0.0.2:80", 1));
    pf_endpoint_set *v1 = discovery_slot_acquire(slot);
    pf_endpoint_stats *a = v1->endpoints[0].stats, *b = v1->endpoints[1].stats;
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NOT_EQUAL(a, b);
    atomic_store(&a->requests_total, 7);
    atomic_store(&a->active_requests, 2);
    atomic_store(&b->requests_total, 5);

    /* 10.0.0.2 leaves, 10.0.0.3 arrives, 10.0.0.1 stays (with a new weight) */
    discovery_slot_publish(slot, set_of("10.0.0.1:80", "10.0.0.3:80", 4));
    pf_endpoint_set *v2 = discovery_slot_acquire(slot);
    CU_ASSERT_PTR_EQUAL(v2->endpoints[0].stats, a);
    CU_ASSERT_EQUAL(atomic_load(&v2->endpoints[0].stats->requests_total), 7);
    CU_ASSERT_EQUAL(atomic_load(&v2->endpoints[0].stats->active_requests), 2);
    pf_endpoint_stats *c = v2->endpoints[1].stats;
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_PTR_NOT_EQUAL(c, b);
    CU_ASSERT_EQUAL(atomic_load(&c->requests_total), 0);
    CU_ASSERT_EQUAL(atomic_load(&c->active_requests), 0);
    CU_ASSERT_EQUAL(atomic_load(&c->connect_failures_total), 0);
    /* a: the slot's table, v1 and v2 (the current set) */
    CU_ASSERT_EQUAL(stats_refs(&v2->endpoints[0]), 3);
    /* b: only v1 still uses it */
    CU_ASSERT_EQUAL(stats_refs(&v1->endpoints[1]), 1);
    CU_ASSERT_EQUAL(atomic_load(&b->requests_total), 5);

    /* 10.0.0.2 comes back after having left: new counters, not the old ones */
    discovery_slot_publish(slot, set_of("10.0.0.1:80", "10.0.0.2:80", 4));
    pf_endpoint_set *v3 = discovery_slot_acquire(slot);
    CU_ASSERT_PTR_EQUAL(v3->endpoints[0].stats, a);
    CU_ASSERT_PTR_NOT_EQUAL(v3->endpoints[1].stats, b);
    CU_ASSERT_EQUAL(atomic_load(&v3->endpoints[1].stats->requests_total), 0);

    discovery_set_unref(v1);
    discovery_set_unref(v2);
    discovery_set_unref(v3);
    discovery_slot_free(slot); /* ASan: every stats block freed exactly once */
}

static void test_duplicate_addresses_share_nothing_after_dedupe(void) {
    pf_endpoint_slot *slot = discovery_slot_new("dup");
    pf_endpoint eps[] = {endpoint("10.0.0.1:80", 1, true), endpoint("10.0.0.1:80", 9, true),
                         endpoint("10.0.0.2:80", 1, true)};
    CU_ASSERT_TRUE(discovery_slot_publish(slot, discovery_set_new(eps, 3)));
    pf_endpoint_set *set = discovery_slot_acquire(slot);
    CU_ASSERT_EQUAL_FATAL(set->count, 2);
    CU_ASSERT_PTR_NOT_EQUAL(set->endpoints[0].stats, set->endpoints[1].stats);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

/* ---- caches ---------------------------------------------------------------------------- */

static void test_cache_is_empty_before_the_first_publish(void) {
    pf_endpoint_slot *slot = discovery_slot_new("c");
    pf_set_cache cache;
    discovery_cache_init(&cache, slot);
    CU_ASSERT_PTR_NULL(discovery_cache_get(&cache));
    CU_ASSERT_PTR_NULL(discovery_cache_get(&cache));
    discovery_cache_release(&cache);
    discovery_slot_free(slot);
}

static void test_cache_sees_new_generation_and_drops_old_reference(void) {
    pf_endpoint_slot *slot = discovery_slot_new("c");
    pf_set_cache cache;
    discovery_cache_init(&cache, slot);

    discovery_slot_publish(slot, set_of("10.0.0.1:80", NULL, 1));
    pf_endpoint_set *v1 = discovery_cache_get(&cache);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v1);
    CU_ASSERT_EQUAL(v1->version, 1);
    CU_ASSERT_EQUAL(cache.generation, 1);
    CU_ASSERT_EQUAL(refs_of(v1), 2); /* slot + cache */
    /* no publish, no change: the same set and no new reference */
    CU_ASSERT_PTR_EQUAL(discovery_cache_get(&cache), v1);
    CU_ASSERT_EQUAL(refs_of(v1), 2);

    pf_endpoint_set *watch = discovery_set_ref(v1); /* to look at v1 after the cache drops it */
    discovery_slot_publish(slot, set_of("10.0.0.2:80", NULL, 1));
    CU_ASSERT_EQUAL(refs_of(watch), 2); /* cache + watch: the slot let go */
    pf_endpoint_set *v2 = discovery_cache_get(&cache);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v2);
    CU_ASSERT_EQUAL(v2->version, 2);
    CU_ASSERT_STRING_EQUAL(v2->endpoints[0].addr.text, "10.0.0.2:80");
    CU_ASSERT_EQUAL(refs_of(watch), 1); /* the cache let go too */
    CU_ASSERT_EQUAL(refs_of(v2), 2);
    discovery_set_unref(watch);

    /* a dropped equal publish does not move the cache */
    discovery_slot_publish(slot, set_of("10.0.0.2:80", NULL, 1));
    CU_ASSERT_PTR_EQUAL(discovery_cache_get(&cache), v2);

    /* several publishes between two reads: the cache jumps to the latest */
    discovery_slot_publish(slot, set_of("10.0.0.3:80", NULL, 1));
    discovery_slot_publish(slot, set_of("10.0.0.4:80", NULL, 1));
    pf_endpoint_set *v4 = discovery_cache_get(&cache);
    CU_ASSERT_EQUAL(v4->version, 4);
    CU_ASSERT_STRING_EQUAL(v4->endpoints[0].addr.text, "10.0.0.4:80");

    discovery_cache_release(&cache);
    CU_ASSERT_PTR_NULL(cache.set);
    CU_ASSERT_EQUAL(refs_of(v4), 1);
    discovery_slot_free(slot);
}

static void test_two_caches_on_one_slot_are_independent(void) {
    pf_endpoint_slot *slot = discovery_slot_new("c");
    pf_set_cache w1, w2;
    discovery_cache_init(&w1, slot);
    discovery_cache_init(&w2, slot);
    discovery_slot_publish(slot, set_of("10.0.0.1:80", NULL, 1));
    pf_endpoint_set *s1 = discovery_cache_get(&w1);
    discovery_slot_publish(slot, set_of("10.0.0.2:80", NULL, 1));
    pf_endpoint_set *s2 = discovery_cache_get(&w2);
    CU_ASSERT_EQUAL(s1->version, 1);
    CU_ASSERT_EQUAL(s2->version, 2);
    CU_ASSERT_EQUAL(refs_of(s1), 1); /* only w1 still holds version 1 */
    CU_ASSERT_EQUAL(discovery_cache_get(&w1)->version, 2);
    discovery_cache_release(&w1);
    discovery_cache_release(&w2);
    discovery_slot_free(slot);
}

/* ---- a publisher and a reader ----------------------------------------------------------- */

enum { PUBLISHES = 1000 };

typedef struct race {
    pf_endpoint_slot *slot;
    atomic_bool done;
    /* written by the reader, read after join */
    size_t reads, wrong_version, wrong_shape, went_back, no_stats;
    uint64_t last_version;
} race;

/* Set k has k % 7 + 1 endpoints, all of weight k, so consecutive sets always differ and a
 * reader can check that what it got is one whole snapshot. */
static pf_endpoint_set *race_set(uint64_t k) {
    pf_endpoint eps[8];
    size_t n = (size_t)(k % 7) + 1;
    for (size_t i = 0; i < n; i++) {
        char addr[32];
        snprintf(addr, sizeof addr, "10.0.0.%zu:80", i + 1);
        memset(&eps[i], 0, sizeof eps[i]);
        pf_error err;
        config_parse_sockaddr(addr, &eps[i].addr, &err);
        eps[i].weight = (uint32_t)k;
        eps[i].healthy = true;
    }
    return discovery_set_new(eps, n);
}

static void *publisher(void *arg) {
    race *r = arg;
    for (uint64_t k = 1; k <= PUBLISHES; k++)
        discovery_slot_publish(r->slot, race_set(k));
    atomic_store(&r->done, true);
    return NULL;
}

static void read_once(race *r, pf_set_cache *cache) {
    pf_endpoint_set *set = discovery_cache_get(cache);
    r->reads++;
    if (!set)
        return;
    if (set->version != cache->generation)
        r->wrong_version++;
    if (set->version < r->last_version)
        r->went_back++;
    r->last_version = set->version;
    if (set->count != set->version % 7 + 1 || set->total_weight != set->count * set->version)
        r->wrong_shape++;
    for (size_t i = 0; i < set->count; i++) {
        if (set->endpoints[i].weight != set->version)
            r->wrong_shape++;
        if (!set->endpoints[i].stats)
            r->no_stats++;
        else
            atomic_fetch_add_explicit(&set->endpoints[i].stats->requests_total, 1,
                                      memory_order_relaxed);
    }
}

static void *reader(void *arg) {
    race *r = arg;
    pf_set_cache cache;
    discovery_cache_init(&cache, r->slot);
    while (!atomic_load(&r->done))
        read_once(r, &cache);
    read_once(r, &cache);
    discovery_cache_release(&cache);
    return NULL;
}

static void test_reader_thread_sees_whole_snapshots_while_publisher_publishes(void) {
    race r = {.slot = discovery_slot_new("race")};
    atomic_init(&r.done, false);
    CU_ASSERT_FATAL(r.slot != NULL);
    pthread_t pub, rd;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&rd, NULL, reader, &r), 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&pub, NULL, publisher, &r), 0);
    pthread_join(pub, NULL);
    pthread_join(rd, NULL);
    CU_ASSERT_EQUAL(discovery_slot_generation(r.slot), PUBLISHES);
    PF_CHECK(r.last_version == PUBLISHES, "reader ended at version %llu",
             (unsigned long long)r.last_version);
    PF_CHECK(r.wrong_version == 0 && r.wrong_shape == 0 && r.went_back == 0 && r.no_stats == 0,
             "%zu reads: %zu version != generation, %zu torn sets, %zu went back, %zu no stats",
             r.reads, r.wrong_version, r.wrong_shape, r.went_back, r.no_stats);
    /* 10.0.0.1 is in every set, so its counter saw every read that found a set */
    pf_endpoint_set *last = discovery_slot_acquire(r.slot);
    CU_ASSERT_FATAL(last != NULL);
    CU_ASSERT(atomic_load(&last->endpoints[0].stats->requests_total) > 0);
    CU_ASSERT(atomic_load(&last->endpoints[0].stats->requests_total) <= r.reads);
    discovery_set_unref(last);
    discovery_slot_free(r.slot);
}

/* ---- subscriptions --------------------------------------------------------------------- */

typedef struct watcher {
    pf_endpoint_slot *slot;
    size_t calls;
    uint64_t seen_version; /* of the set acquired inside the callback */
} watcher;

static void on_publish(void *arg) {
    watcher *w = arg;
    w->calls++;
    /* called outside the lock: the slot can be read from here */
    pf_endpoint_set *set = discovery_slot_acquire(w->slot);
    w->seen_version = set ? set->version : 0;
    discovery_set_unref(set);
}

static void test_subscribers_hear_of_changed_publishes_only(void) {
    pf_endpoint_slot *slot = discovery_slot_new("sub");
    watcher a = {.slot = slot}, b = {.slot = slot};
    CU_ASSERT_EQUAL(discovery_slot_subscribe(slot, on_publish, &a), PF_OK);
    CU_ASSERT_EQUAL(discovery_slot_subscribe(slot, on_publish, &b), PF_OK);
    pf_endpoint ep = endpoint("10.0.0.1:80", 1, true);
    discovery_slot_publish(slot, discovery_set_new(&ep, 1));
    CU_ASSERT_EQUAL(a.calls, 1);
    CU_ASSERT_EQUAL(a.seen_version, 1);
    discovery_slot_publish(slot, discovery_set_new(&ep, 1)); /* equal: dropped */
    CU_ASSERT_EQUAL(a.calls, 1);
    ep.weight = 2;
    discovery_slot_publish(slot, discovery_set_new(&ep, 1));
    CU_ASSERT_EQUAL(a.calls, 2);
    CU_ASSERT_EQUAL(a.seen_version, 2);
    discovery_slot_unsubscribe(slot, on_publish, &a);
    discovery_slot_unsubscribe(slot, on_publish, &a); /* absent: no-op */
    ep.weight = 3;
    discovery_slot_publish(slot, discovery_set_new(&ep, 1));
    CU_ASSERT_EQUAL(a.calls, 2);
    CU_ASSERT_EQUAL(b.calls, 3);
    CU_ASSERT_EQUAL(b.seen_version, 3);
    /* a bounded list */
    watcher more[PF_SLOT_SUBSCRIBERS_MAX];
    size_t added = 0;
    while (added < PF_SLOT_SUBSCRIBERS_MAX &&
           discovery_slot_subscribe(slot, on_publish, &more[added]) == PF_OK)
        added++;
    CU_ASSERT_EQUAL(added, PF_SLOT_SUBSCRIBERS_MAX - 1); /* b holds one place */
    CU_ASSERT_EQUAL(discovery_slot_subscribe(slot, on_publish, &a), PF_ELIMIT);
    discovery_slot_free(slot);
}

PF_UNIT_MAIN("endpoint_set", PF_UNIT_TEST(test_set_is_sorted_by_address_text),
             PF_UNIT_TEST(test_set_keeps_the_first_of_duplicated_addresses),
             PF_UNIT_TEST(test_set_counts_healthy_endpoints_and_their_weight),
             PF_UNIT_TEST(test_equal_weights_looks_at_healthy_endpoints_only),
             PF_UNIT_TEST(test_empty_set),
             PF_UNIT_TEST(test_set_new_ignores_stats_pointers_passed_in),
             PF_UNIT_TEST(test_set_refs_count_up_and_down),
             PF_UNIT_TEST(test_set_equal_compares_every_attribute),
             PF_UNIT_TEST(test_slot_generation_counts_published_changes_only),
             PF_UNIT_TEST(test_first_publish_of_an_empty_set_is_a_change),
             PF_UNIT_TEST(test_acquired_set_outlives_the_next_publish),
             PF_UNIT_TEST(test_stats_survive_for_kept_addresses_and_start_fresh_for_new_ones),
             PF_UNIT_TEST(test_duplicate_addresses_share_nothing_after_dedupe),
             PF_UNIT_TEST(test_cache_is_empty_before_the_first_publish),
             PF_UNIT_TEST(test_cache_sees_new_generation_and_drops_old_reference),
             PF_UNIT_TEST(test_two_caches_on_one_slot_are_independent),
             PF_UNIT_TEST(test_reader_thread_sees_whole_snapshots_while_publisher_publishes),
             PF_UNIT_TEST(test_subscribers_hear_of_changed_publishes_only))
