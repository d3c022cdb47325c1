/* The proxy's pure decisions that need no event loop: which worker, if any, is stalled
 * (proxy_stalled_worker, behind /healthz); the pool's bookkeeping of departed endpoints; TLS
 * name checks. */
#include "proxy/proxy.h"
#include "proxy/proxy_int.h"
#include "proxy/tls_int.h"
#include "test/unit/unit.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static void test_stalled_worker_is_the_silent_longest_past_the_limit(void) {
    static const struct {
        uint64_t beats[4];
        size_t n;
        uint64_t now;
        long expect;
    } rows[] = {
        {{0}, 0, 100000, -1},                             /* no workers */
        {{99500, 99000, 99900, 99999}, 4, 100000, -1},    /* all beat within the limit */
        {{95000, 99000}, 2, 100000, -1},                  /* exactly the limit: not yet */
        {{94999, 99000}, 2, 100000, 0},                   /* one past it */
        {{99000, 80000, 90000, 99000}, 4, 100000, 1},     /* two stalled: the longest */
        {{0, 0, 0, 0}, 4, 100000, -1},                    /* not started */
        {{0, 1000, 0, 0}, 4, 100000, 1},                  /* started and silent */
        {{100000, 100500, 99999, 100001}, 4, 100000, -1}, /* beats after now was read */
        {{UINT64_MAX, 1, 0, 0}, 2, UINT64_MAX - 1, 1},    /* no overflow at the ends */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        long got = proxy_stalled_worker(rows[i].beats, rows[i].n, rows[i].now, 5000);
        PF_CHECK(got == rows[i].expect, "row %zu: %ld, expected %ld", i, got, rows[i].expect);
    }
}

static size_t bucket_count(const pf_worker_cluster *wc, const char *addr) {
    size_t n = 0;
    for (unsigned i = 0; i < PF_POOL_BUCKETS; i++)
        for (const pf_pool_bucket *b = wc->buckets[i]; b; b = b->next)
            n += !addr || strcmp(b->addr, addr) == 0;
    return n;
}

/* Issue 16 defect 6: each address ever seen kept its (empty) bucket per worker forever.
 * Buckets of endpoints that left the set go; the others stay. The buckets are laid out by
 * hand, with no connections: pruning does not care in which chain a bucket sits, and ASan's
 * leak check at exit catches a bucket unlinked but not freed. */
static void test_pool_prune_frees_buckets_of_departed_endpoints(void) {
    static const char *const seen[] = {"127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003",
                                       "127.0.0.1:1004", "127.0.0.1:1005"};
    pf_worker_cluster wc;
    memset(&wc, 0, sizeof wc);
    for (size_t i = 0; i < ARRAY_LEN(seen); i++) {
        pf_pool_bucket *b = calloc(1, sizeof *b);
        CU_ASSERT_FATAL(b != NULL);
        snprintf(b->addr, sizeof b->addr, "%s", seen[i]);
        b->next = wc.buckets[i % 2]; /* two chains, several buckets each */
        wc.buckets[i % 2] = b;
    }
    pf_endpoint eps[2];
    memset(eps, 0, sizeof eps);
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_FATAL(config_parse_sockaddr(i ? "127.0.0.1:1004" : "127.0.0.1:1002", &eps[i].addr,
                                              NULL) == PF_OK);
        eps[i].weight = 1;
        eps[i].healthy = true;
    }
    pf_endpoint_set *set = discovery_set_new(eps, 2);
    CU_ASSERT_FATAL(set != NULL);
    pool_prune(&wc, set);
    CU_ASSERT_EQUAL(bucket_count(&wc, NULL), 2);
    CU_ASSERT_EQUAL(bucket_count(&wc, "127.0.0.1:1002"), 1);
    CU_ASSERT_EQUAL(bucket_count(&wc, "127.0.0.1:1004"), 1);
    pf_endpoint_set *empty = discovery_set_new(NULL, 0);
    CU_ASSERT_FATAL(empty != NULL);
    pool_prune(&wc, empty);
    CU_ASSERT_EQUAL(bucket_count(&wc, NULL), 0);
    discovery_set_unref(set);
    discovery_set_unref(empty);
}

/* SNI: exact names without case, and a wildcard standing for exactly one label. */
static void test_tls_certificate_names_match_sni_hosts(void) {
    static const struct {
        const char *name, *host;
        bool match;
    } rows[] = {
        {"api.test", "api.test", true},        {"api.test", "API.Test", true},
        {"api.test", "www.api.test", false},   {"*.api.test", "www.api.test", true},
        {"*.api.test", "WWW.API.TEST", true},  {"*.api.test", "api.test", false},
        {"*.api.test", "a.b.api.test", false}, {"*.api.test", ".api.test", false},
        {"*.api.test", "xapi.test", false},    {"api.test", "api.test.", false},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        PF_CHECK(tls_name_matches(rows[i].name, rows[i].host) == rows[i].match, "row %zu: %s vs %s",
                 i, rows[i].name, rows[i].host);
}

/* allowed_client_sans: exact, or a prefix that ends in a slash and a star. */
static void test_tls_client_san_patterns(void) {
    static const struct {
        const char *pattern, *san;
        bool allowed;
    } rows[] = {
        {"spiffe://mesh/ns/a/sa/web", "spiffe://mesh/ns/a/sa/web", true},
        {"spiffe://mesh/ns/a/sa/web", "spiffe://mesh/ns/a/sa/web2", false},
        {"spiffe://mesh/ns/a/sa/web", "spiffe://mesh/ns/a/sa/we", false},
        {"spiffe://mesh/*", "spiffe://mesh/ns/a/sa/web", true},
        {"spiffe://mesh/*", "spiffe://mesh/", false}, /* the star stands for 1 or more */
        {"spiffe://mesh/*", "spiffe://mesh", false},
        {"spiffe://mesh/*", "spiffe://mesh.evil/x", false},
        {"spiffe://mesh/*", "spiffe://meshx/x", false},
        {"spiffe://mesh/*", "spiffe://mesh/*", true},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        PF_CHECK(tls_san_allowed(rows[i].pattern, rows[i].san, strlen(rows[i].san)) ==
                     rows[i].allowed,
                 "row %zu: %s vs %s", i, rows[i].pattern, rows[i].san);
}

/* The name an upstream TLS connection verifies: sni, else the authority of DNS and
 * Kubernetes clusters, else the endpoint's address; never with a port. */
static void test_tls_upstream_name(void) {
    static const struct {
        const char *sni, *dns, *authority, *endpoint, *expect;
    } rows[] = {
        {"api.test", "", "x.test:8080", "10.0.0.1:443", "api.test"},
        {"", "", "x.test:8080", "10.0.0.1:443", "10.0.0.1"},
        {"", "svc.internal", "x.test:8080", "10.0.0.1:443", "x.test"},
        {"", "svc.internal", "x.test", "10.0.0.1:443", "x.test"},
        {"", "svc.internal", "", "10.0.0.1:443", "10.0.0.1"},
        {"", "", "", "[::1]:443", "::1"},
        {"", "svc.internal", "[fd00::1]:8443", "[::1]:443", "fd00::1"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        pf_config_cluster c;
        memset(&c, 0, sizeof c);
        snprintf(c.tls.sni, sizeof c.tls.sni, "%s", rows[i].sni);
        snprintf(c.dns.name, sizeof c.dns.name, "%s", rows[i].dns);
        char buf[256];
        const char *got = tls_upstream_name(&c, rows[i].authority, strlen(rows[i].authority),
                                            rows[i].endpoint, buf, sizeof buf);
        PF_CHECK(strcmp(got, rows[i].expect) == 0, "row %zu: %s, expected %s", i, got,
                 rows[i].expect);
    }
}

/* The name a health check of a TLS cluster verifies: sni, else the check's host, else the
 * DNS name, else the endpoint's address; never with a port. */
static void test_tls_check_name(void) {
    static const struct {
        const char *sni, *host, *dns, *endpoint, *expect;
    } rows[] = {
        {"api.test", "h.test", "svc.internal", "10.0.0.1:443", "api.test"},
        {"", "h.test:8443", "svc.internal", "10.0.0.1:443", "h.test"},
        {"", "", "svc.internal", "10.0.0.1:443", "svc.internal"},
        {"", "", "", "10.0.0.1:443", "10.0.0.1"},
        {"", "", "", "[::1]:443", "::1"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        pf_config_cluster c;
        memset(&c, 0, sizeof c);
        snprintf(c.tls.sni, sizeof c.tls.sni, "%s", rows[i].sni);
        snprintf(c.health_check.host, sizeof c.health_check.host, "%s", rows[i].host);
        snprintf(c.dns.name, sizeof c.dns.name, "%s", rows[i].dns);
        char buf[256];
        const char *got = tls_check_name(&c, rows[i].endpoint, buf, sizeof buf);
        PF_CHECK(strcmp(got, rows[i].expect) == 0, "row %zu: %s, expected %s", i, got,
                 rows[i].expect);
    }
}

PF_UNIT_MAIN("proxy", PF_UNIT_TEST(test_stalled_worker_is_the_silent_longest_past_the_limit),
             PF_UNIT_TEST(test_pool_prune_frees_buckets_of_departed_endpoints),
             PF_UNIT_TEST(test_tls_certificate_names_match_sni_hosts),
             PF_UNIT_TEST(test_tls_client_san_patterns), PF_UNIT_TEST(test_tls_upstream_name),
             PF_UNIT_TEST(test_tls_check_name))
