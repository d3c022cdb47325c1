/* Unit tests for the consistent-hash policies of proxy/balancer (ring_hash and maglev, each
 * test run for both): a key stays on one endpoint across picks and workers, one table per
 * set for all workers (built ahead of the first pick when asked), adding or removing an
 * endpoint moves about 1/N of keys, weights shape the share, an unhealthy owner sends its
 * keys to the next in hash order and gets them back, and so does a retry away from the
 * endpoint that failed; keys absent means random picks; and
 * the request keys themselves (header, cookie, source IP, path). */
#include "test/unit/balancer_util.h"

#include <math.h>

static const pf_lb_policy hash_policies[] = {PF_LB_RING_HASH, PF_LB_MAGLEV};

#define KEYS 20000

/* The endpoint index every key 0..KEYS-1 maps to. */
static void map_keys(pf_balancer *b, const pf_endpoint_set *set, size_t *out) {
    for (uint64_t k = 0; k < KEYS; k++) {
        pf_pick_context ctx = {.hash = lb_test_key(k, 0), .has_hash = true};
        out[k] = pick_index(b, set, &ctx);
    }
}

static const char *name_of(pf_lb_policy p) {
    return config_lb_policy_name(p);
}

/* Endpoint specs "10.0.0.<i+1>:80" for i < n, each with `weight`. */
static pf_endpoint_set *publish_n(pf_endpoint_slot *slot, size_t n, unsigned weight) {
    pf_endpoint eps[MAX_TEST_ENDPOINTS];
    CU_ASSERT_FATAL(n <= MAX_TEST_ENDPOINTS);
    for (size_t i = 0; i < n; i++) {
        char spec[64];
        snprintf(spec, sizeof spec, "10.0.0.%zu:80/%u", i + 1, weight);
        eps[i] = endpoint(spec);
    }
    return publish_endpoints(slot, eps, n);
}

static void test_a_key_stays_on_one_endpoint_and_workers_share_one_table(void) {
    for (size_t p = 0; p < ARRAY_LEN(hash_policies); p++) {
        pf_endpoint_slot *slot = discovery_slot_new("sticky");
        pf_endpoint_set *set = publish_n(slot, 5, 1);
        pf_config_cluster cfg = cluster_config(hash_policies[p]);
        pf_balancer_group *g = balancer_group_new(&cfg);
        /* built ahead, as the publisher's thread does, before any worker picks */
        balancer_group_prepare(g, set);
        CU_ASSERT_EQUAL(balancer_group_tables_built(g), 1);
        pf_balancer *w1 = balancer_new(g), *w2 = balancer_new(g);
        balancer_seed(w2, 2);
        static size_t first[KEYS], again[KEYS], other[KEYS];
        map_keys(w1, set, first);
        map_keys(w1, set, again);
        map_keys(w2, set, other);
        size_t differ = 0, per[5] = {0};
        for (size_t k = 0; k < KEYS; k++) {
            differ += first[k] != again[k] || first[k] != other[k];
            per[first[k] % 5]++;
        }
        PF_CHECK(differ == 0, "%s: %zu keys changed endpoint between picks or workers",
                 name_of(hash_policies[p]), differ);
        for (size_t i = 0; i < 5; i++)
            PF_CHECK(per[i] > KEYS / 5 * 0.85 && per[i] < KEYS / 5 * 1.15,
                     "%s: endpoint %zu has %zu of %d keys", name_of(hash_policies[p]), i, per[i],
                     KEYS);
        /* still that one table: both workers took it from the group */
        CU_ASSERT_EQUAL(balancer_group_tables_built(g), 1);
        balancer_free(w1);
        balancer_free(w2);
        balancer_group_unref(g);
        discovery_set_unref(set);
        discovery_slot_free(slot);
    }
}

/* Maps the keys over n, then n+1 endpoints, then n again: returns the share of keys the
 * addition moved; *to_new counts those that moved to the new endpoint, *not_back the keys
 * not on their first endpoint after the removal. */
static double move_on_add(pf_lb_policy policy, size_t n, size_t *to_new, size_t *not_back) {
    pf_endpoint_slot *slot = discovery_slot_new("move");
    pf_balancer *b = new_balancer(policy);
    static size_t before[KEYS], after[KEYS], again[KEYS];
    pf_endpoint_set *small = publish_n(slot, n, 1);
    map_keys(b, small, before);
    pf_endpoint_set *big = publish_n(slot, n + 1, 1);
    map_keys(b, big, after);
    pf_endpoint_set *back = publish_n(slot, n, 1);
    map_keys(b, back, again);
    char newcomer[PF_ADDRTEXT_MAX];
    snprintf(newcomer, sizeof newcomer, "10.0.0.%zu:80", n + 1);
    size_t moved = 0;
    *to_new = *not_back = 0;
    for (size_t k = 0; k < KEYS; k++) {
        const char *was = small->endpoints[before[k]].addr.text;
        const char *now = big->endpoints[after[k]].addr.text;
        if (strcmp(was, now) != 0) {
            moved++;
            *to_new += strcmp(now, newcomer) == 0;
        }
        *not_back += strcmp(was, back->endpoints[again[k]].addr.text) != 0;
    }
    balancer_free(b);
    discovery_set_unref(small);
    discovery_set_unref(big);
    discovery_set_unref(back);
    discovery_slot_free(slot);
    return (double)moved / KEYS;
}

static void test_adding_an_endpoint_moves_about_one_nth_of_keys(void) {
    for (size_t p = 0; p < ARRAY_LEN(hash_policies); p++) {
        for (size_t n = 4; n <= 9; n += 5) {
            size_t to_new, not_back;
            double moved = move_on_add(hash_policies[p], n, &to_new, &not_back);
            double ideal = 1.0 / (double)(n + 1);
            PF_CHECK(fabs(moved - ideal) < 0.25 * ideal,
                     "%s %zu -> %zu endpoints: %.3f of keys moved, ideal %.3f",
                     name_of(hash_policies[p]), n, n + 1, moved, ideal);
            /* ring: every moved key went to the newcomer; maglev: nearly every one */
            size_t moved_keys = (size_t)(moved * KEYS + 0.5);
            double exact = hash_policies[p] == PF_LB_RING_HASH ? 1.0 : 0.9;
            PF_CHECK(to_new >= exact * moved_keys, "%s: %zu of %zu moved keys went to the new one",
                     name_of(hash_policies[p]), to_new, moved_keys);
            /* removing it again restores the old mapping exactly: tables depend on the set */
            PF_CHECK(not_back == 0, "%s: %zu keys not back after the removal",
                     name_of(hash_policies[p]), not_back);
        }
    }
}

static void test_weights_shape_the_share_of_keys(void) {
    for (size_t p = 0; p < ARRAY_LEN(hash_policies); p++) {
        pf_endpoint_slot *slot = discovery_slot_new("weights");
        static const char *const specs[] = {"10.0.0.1:80/1", "10.0.0.2:80/2", "10.0.0.3:80/3",
                                            NULL};
        pf_endpoint_set *set = publish(slot, specs);
        pf_balancer *b = new_balancer(hash_policies[p]);
        static size_t owner[KEYS];
        map_keys(b, set, owner);
        size_t per[3] = {0};
        for (size_t k = 0; k < KEYS; k++)
            per[owner[k]]++;
        for (size_t i = 0; i < 3; i++) {
            double share = (double)per[i] / KEYS, want = (double)(i + 1) / 6.0;
            PF_CHECK(fabs(share - want) < 0.03, "%s: weight %zu has %.3f of keys, want %.3f",
                     name_of(hash_policies[p]), i + 1, share, want);
        }
        balancer_free(b);
        discovery_set_unref(set);
        discovery_slot_free(slot);
    }
}

/* Four endpoints, and the same four with the second one down. */
static const char *const four_up[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80",
                                      NULL};
static const char *const second_down[] = {"10.0.0.1:80", "10.0.0.2:80/1/down", "10.0.0.3:80",
                                          "10.0.0.4:80", NULL};

static void test_unhealthy_owner_sends_its_keys_to_the_next_in_hash_order(void) {
    for (size_t p = 0; p < ARRAY_LEN(hash_policies); p++) {
        pf_endpoint_slot *slot = discovery_slot_new("health");
        pf_config_cluster cfg = cluster_config(hash_policies[p]);
        pf_balancer_group *g = balancer_group_new(&cfg);
        pf_balancer *b = balancer_new(g);
        static const char *const gone[] = {"10.0.0.1:80", "10.0.0.3:80", "10.0.0.4:80", NULL};
        static size_t before[KEYS], during[KEYS], repeat[KEYS], after[KEYS], removed[KEYS];
        pf_endpoint_set *s1 = publish(slot, four_up);
        map_keys(b, s1, before);
        pf_endpoint_set *s2 = publish(slot, second_down);
        map_keys(b, s2, during);
        map_keys(b, s2, repeat);
        pf_endpoint_set *s3 = publish(slot, four_up);
        map_keys(b, s3, after);
        /* health changes only: the table is the same one */
        CU_ASSERT_EQUAL(balancer_group_tables_built(g), 1);
        size_t moved_elsewhere = 0, displaced = 0, spread[4] = {0};
        for (size_t k = 0; k < KEYS; k++) {
            if (before[k] != 1) {
                moved_elsewhere += during[k] != before[k];
            } else {
                displaced++;
                spread[during[k]]++;
            }
            CU_ASSERT_NOT_EQUAL(during[k], 1);
        }
        PF_CHECK(moved_elsewhere == 0, "%s: %zu keys of healthy endpoints moved",
                 name_of(hash_policies[p]), moved_elsewhere);
        PF_CHECK(memcmp(during, repeat, sizeof during) == 0, "%s: displaced keys not sticky",
                 name_of(hash_policies[p]));
        PF_CHECK(memcmp(before, after, sizeof before) == 0, "%s: keys not back on recovery",
                 name_of(hash_policies[p]));
        /* the displaced keys spread over the others rather than all landing on one */
        for (size_t i = 0; i < 4; i++)
            PF_CHECK(i == 1 || spread[i] > displaced / 6, "%s: endpoint %zu took %zu of %zu",
                     name_of(hash_policies[p]), i, spread[i], displaced);
        if (hash_policies[p] == PF_LB_RING_HASH) {
            /* on the ring, "next in hash order" is exactly where the keys go when the
             * endpoint is removed (equal weights: nobody else's points change) */
            pf_endpoint_set *s4 = publish(slot, gone);
            map_keys(b, s4, removed);
            size_t differ = 0;
            for (size_t k = 0; k < KEYS; k++)
                differ += strcmp(s2->endpoints[during[k]].addr.text,
                                 s4->endpoints[removed[k]].addr.text) != 0;
            PF_CHECK(differ == 0, "ring: %zu keys differ between down and removed", differ);
            discovery_set_unref(s4);
        }
        balancer_free(b);
        balancer_group_unref(g);
        discovery_set_unref(s1);
        discovery_set_unref(s2);
        discovery_set_unref(s3);
        discovery_slot_free(slot);
    }
}

/* A retry names the endpoints that failed: the key goes where it would go if they were
 * down (the next in hash order), every time, and keys of other endpoints stay put. */
static void test_a_retry_goes_to_the_next_endpoint_in_hash_order(void) {
    for (size_t p = 0; p < ARRAY_LEN(hash_policies); p++) {
        pf_endpoint_slot *slot = discovery_slot_new("retry");
        pf_config_cluster cfg = cluster_config(hash_policies[p]);
        pf_balancer_group *g = balancer_group_new(&cfg);
        pf_balancer *b = balancer_new(g);
        static size_t first[KEYS], when_down[KEYS], both_down[KEYS];
        const uint64_t second = balancer_hash("10.0.0.2:80", 11);
        const uint64_t second_and_third[] = {second, balancer_hash("10.0.0.3:80", 11)};
        pf_endpoint_set *s1 = publish(slot, four_up);
        map_keys(b, s1, first);
        pf_endpoint_set *s2 = publish(slot, second_down);
        map_keys(b, s2, when_down);
        size_t wrong = 0, unstable = 0, disturbed = 0;
        for (uint64_t k = 0; k < KEYS; k++) {
            pf_pick_context ctx = {
                .hash = lb_test_key(k, 0), .has_hash = true, .avoid = &second, .avoid_count = 1};
            size_t retry = pick_index(b, s1, &ctx);
            unstable += pick_index(b, s1, &ctx) != retry;
            if (first[k] == 1)
                wrong += retry != when_down[k];
            else
                disturbed += retry != first[k];
        }
        PF_CHECK(wrong == 0, "%s: %zu retried keys did not go to the next in hash order",
                 name_of(hash_policies[p]), wrong);
        PF_CHECK(unstable == 0, "%s: %zu retried keys changed endpoint between retries",
                 name_of(hash_policies[p]), unstable);
        PF_CHECK(disturbed == 0, "%s: %zu keys of other endpoints moved on a retry",
                 name_of(hash_policies[p]), disturbed);
        /* a second failure: the key moves on past both, never back to the first */
        static const char *const two_down[] = {"10.0.0.1:80", "10.0.0.2:80/1/down",
                                               "10.0.0.3:80/1/down", "10.0.0.4:80", NULL};
        pf_endpoint_set *s4 = publish(slot, two_down);
        map_keys(b, s4, both_down);
        size_t wrong_twice = 0;
        for (uint64_t k = 0; k < KEYS; k++) {
            pf_pick_context ctx = {.hash = lb_test_key(k, 0),
                                   .has_hash = true,
                                   .avoid = second_and_third,
                                   .avoid_count = 2};
            size_t retry = pick_index(b, s1, &ctx);
            wrong_twice += retry == 1 || retry == 2 ||
                           ((first[k] == 1 || first[k] == 2) && retry != both_down[k]);
        }
        PF_CHECK(wrong_twice == 0, "%s: %zu keys went back to a failed endpoint or off order",
                 name_of(hash_policies[p]), wrong_twice);
        discovery_set_unref(s4);
        /* the failed endpoint is the only healthy one: it is still returned (the proxy
         * decides what to do), not NULL */
        static const char *const alone[] = {"10.0.0.1:80/1/down", "10.0.0.2:80", NULL};
        pf_endpoint_set *s3 = publish(slot, alone);
        pf_pick_context ctx = {
            .hash = lb_test_key(7, 0), .has_hash = true, .avoid = &second, .avoid_count = 1};
        const pf_endpoint *ep = balancer_pick(b, s3, &ctx);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ep);
        CU_ASSERT_STRING_EQUAL(ep->addr.text, "10.0.0.2:80");
        balancer_free(b);
        balancer_group_unref(g);
        discovery_set_unref(s1);
        discovery_set_unref(s2);
        discovery_set_unref(s3);
        discovery_slot_free(slot);
    }
}

static void test_without_a_key_picks_are_random(void) {
    for (size_t p = 0; p < ARRAY_LEN(hash_policies); p++) {
        pf_endpoint_slot *slot = discovery_slot_new("nokey");
        pf_endpoint_set *set = publish_n(slot, 4, 1);
        pf_balancer *b = new_balancer(hash_policies[p]);
        pf_pick_context none = {.hash = 12345, .has_hash = false};
        size_t per[4] = {0};
        for (size_t i = 0; i < 8000; i++)
            per[pick_index(b, set, &none)]++;
        for (size_t i = 0; i < 4; i++)
            PF_CHECK(per[i] > 1800 && per[i] < 2200, "%s: endpoint %zu got %zu of 8000",
                     name_of(hash_policies[p]), i, per[i]);
        balancer_free(b);
        discovery_set_unref(set);
        discovery_slot_free(slot);
    }
}

/* Keys 0..m-1 on a maglev table of m slots hit every slot once: per[i] gets the number of
 * slots endpoint i owns. */
static void count_slots(pf_balancer *b, const pf_endpoint_set *set, uint64_t m, size_t *per) {
    for (size_t i = 0; i < set->count; i++)
        per[i] = 0;
    for (uint64_t k = 0; k < m; k++) {
        pf_pick_context ctx = {.hash = k, .has_hash = true};
        per[pick_index(b, set, &ctx)]++;
    }
}

static void test_maglev_table_is_full_and_even(void) {
    pf_endpoint_slot *slot = discovery_slot_new("maglev");
    pf_endpoint_set *set = publish_n(slot, 7, 1);
    pf_config_cluster cfg = cluster_config(PF_LB_MAGLEV);
    cfg.hash_table_size = 65537;
    pf_balancer *b = new_balancer_for(&cfg);
    size_t per[7];
    count_slots(b, set, 65537, per);
    size_t lo = SIZE_MAX, hi = 0, total = 0;
    for (size_t i = 0; i < 7; i++) {
        lo = per[i] < lo ? per[i] : lo;
        hi = per[i] > hi ? per[i] : hi;
        total += per[i];
    }
    CU_ASSERT_EQUAL(total, 65537);
    /* equal weights take turns: the counts differ by at most one */
    PF_CHECK(hi - lo <= 1, "slots per endpoint from %zu to %zu", lo, hi);
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

static void test_table_size_is_configurable(void) {
    /* a tiny maglev table: 7 slots over 3 endpoints gives 3, 2, 2 */
    pf_endpoint_slot *slot = discovery_slot_new("size");
    pf_endpoint_set *set = publish_n(slot, 3, 1);
    pf_config_cluster cfg = cluster_config(PF_LB_MAGLEV);
    cfg.hash_table_size = 7;
    pf_balancer *b = new_balancer_for(&cfg);
    size_t per[3];
    count_slots(b, set, 7, per);
    size_t sorted_max = per[0] > per[1] ? per[0] : per[1];
    sorted_max = per[2] > sorted_max ? per[2] : sorted_max;
    CU_ASSERT_EQUAL(per[0] + per[1] + per[2], 7);
    CU_ASSERT_EQUAL(sorted_max, 3);
    balancer_free(b);
    /* a ring of one point per endpoint: keys split by three arcs, far from even, while the
     * default 1024 points split them within a few per cent */
    pf_config_cluster ring = cluster_config(PF_LB_RING_HASH);
    ring.hash_table_size = 1;
    pf_balancer *coarse = new_balancer_for(&ring);
    pf_balancer *fine = new_balancer(PF_LB_RING_HASH);
    static size_t a[KEYS], f[KEYS];
    map_keys(coarse, set, a);
    map_keys(fine, set, f);
    double dev_coarse = 0, dev_fine = 0;
    for (size_t i = 0; i < 3; i++) {
        size_t ca = 0, cf = 0;
        for (size_t k = 0; k < KEYS; k++) {
            ca += a[k] == i;
            cf += f[k] == i;
        }
        dev_coarse += fabs((double)ca / KEYS - 1.0 / 3);
        dev_fine += fabs((double)cf / KEYS - 1.0 / 3);
    }
    PF_CHECK(dev_fine < 0.06 && dev_coarse > dev_fine, "deviation %.3f (1 point) vs %.3f",
             dev_coarse, dev_fine);
    balancer_free(coarse);
    balancer_free(fine);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

/* ---- request keys ----------------------------------------------------------------------- */

static void add_header(pf_head *h, const char *name, const char *value) {
    CU_ASSERT_EQUAL(http1_head_append_name(h, name, strlen(name)), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_value(h, value, strlen(value)), PF_OK);
    CU_ASSERT_EQUAL(http1_head_finish_value(h), PF_OK);
}

static pf_pick_context context_for(pf_hash_on_kind kind, const char *name, const pf_head *req,
                                   const char *ip, const char *path) {
    pf_config_cluster cfg = cluster_config(PF_LB_RING_HASH);
    cfg.hash_on.kind = kind;
    snprintf(cfg.hash_on.name, sizeof cfg.hash_on.name, "%s", name);
    pf_balancer *b = new_balancer_for(&cfg);
    pf_pick_context ctx = balancer_context(b, req, ip, path, path ? strlen(path) : 0);
    balancer_free(b);
    return ctx;
}

static uint64_t hash_of(const char *s) {
    return balancer_hash(s, strlen(s));
}

static void test_request_keys_from_header_cookie_source_ip_and_path(void) {
    pf_head req;
    http1_head_init(&req, 8192, 32);
    add_header(&req, "Host", "a.local");
    add_header(&req, "X-User", "alice");
    add_header(&req, "Cookie", "theme=dark; sidx=1");
    add_header(&req, "cookie", "a=1;  sid = s-42 ;b=2");
    add_header(&req, "X-Empty", "");

    static const struct {
        pf_hash_on_kind kind;
        const char *name;
        bool has;
        const char *key;
    } rows[] = {
        {PF_HASH_HEADER, "x-user", true, "alice"},
        {PF_HASH_HEADER, "x-other", false, NULL},
        {PF_HASH_HEADER, "x-empty", true, ""},
        {PF_HASH_COOKIE, "sid", true, "s-42"},   /* second Cookie line, spaces trimmed */
        {PF_HASH_COOKIE, "theme", true, "dark"}, /* first Cookie line */
        {PF_HASH_COOKIE, "SID", false, NULL},    /* cookie names are case-sensitive */
        {PF_HASH_COOKIE, "si", false, NULL},     /* no prefix matches */
        {PF_HASH_SOURCE_IP, "", true, "192.0.2.7"},
        {PF_HASH_PATH, "", true, "/cart/items"},
        {PF_HASH_NONE, "", false, NULL},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        pf_pick_context ctx =
            context_for(rows[i].kind, rows[i].name, &req, "192.0.2.7", "/cart/items");
        PF_CHECK(ctx.has_hash == rows[i].has, "row %zu (%s): has_hash %d", i, rows[i].name,
                 ctx.has_hash);
        if (rows[i].key)
            PF_CHECK(ctx.hash == hash_of(rows[i].key), "row %zu: not the hash of \"%s\"", i,
                     rows[i].key);
    }
    /* no Cookie header at all */
    pf_head bare;
    http1_head_init(&bare, 8192, 32);
    add_header(&bare, "Host", "a.local");
    CU_ASSERT_FALSE(context_for(PF_HASH_COOKIE, "sid", &bare, "192.0.2.7", "/").has_hash);
    /* the hash is stable: the same on every host (little-endian reads) */
    CU_ASSERT_EQUAL(balancer_hash("", 0), balancer_hash("", 0));
    CU_ASSERT_NOT_EQUAL(hash_of("alice"), hash_of("alicf"));
    http1_head_free(&bare);
    http1_head_free(&req);
}

PF_UNIT_MAIN("balancer_hash",
             PF_UNIT_TEST(test_a_key_stays_on_one_endpoint_and_workers_share_one_table),
             PF_UNIT_TEST(test_adding_an_endpoint_moves_about_one_nth_of_keys),
             PF_UNIT_TEST(test_weights_shape_the_share_of_keys),
             PF_UNIT_TEST(test_unhealthy_owner_sends_its_keys_to_the_next_in_hash_order),
             PF_UNIT_TEST(test_a_retry_goes_to_the_next_endpoint_in_hash_order),
             PF_UNIT_TEST(test_without_a_key_picks_are_random),
             PF_UNIT_TEST(test_maglev_table_is_full_and_even),
             PF_UNIT_TEST(test_table_size_is_configurable),
             PF_UNIT_TEST(test_request_keys_from_header_cookie_source_ip_and_path))
