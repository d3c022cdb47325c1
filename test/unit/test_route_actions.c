/* Unit tests for proxy/route_actions: the path a rewrite sends upstream and the Location a
 * redirect answers with, as tables over the seams of path elements, queries, schemes and
 * ports, and results that do not fit. */
#include "config/config.h"
#include "proxy/route_actions_int.h"
#include "test/unit/unit.h"

#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static void test_new_path_replaces_the_matched_prefix_at_element_seams(void) {
    static const struct {
        const char *matched, *replacement, *full, *path, *query, *want;
    } rows[] = {
        {"/foo", "/xyz", "", "/foo/bar", NULL, "/xyz/bar"},
        {"/foo", "/", "", "/foo/bar", NULL, "/bar"},         /* not "//bar" */
        {"/foo", "/", "", "/foo", NULL, "/"},                /* the whole path matched */
        {"/foo/", "/xyz", "", "/foo/bar", NULL, "/xyz/bar"}, /* "/" was a boundary */
        {"/foo/", "/xyz/", "", "/foo/bar", NULL, "/xyz/bar"},
        {"/foo", "/xyz", "", "/foobar", NULL, "/xyzbar"}, /* byte prefix, as matched */
        {"/api/", "/", "", "/api/x", "a=1&b", "/x?a=1&b"},
        {"/api/", "/", "", "/api/x", "", "/x?"},        /* an empty query stays as sent */
        {"/a", "/b", "/full", "/a/x", "q", "/full?q"},  /* full_path wins */
        {NULL, NULL, "/full", "/exact", NULL, "/full"}, /* exact match: full only */
        {"/", "/v2/", "", "/x", NULL, "/v2/x"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char out[64];
        size_t n = route_new_path(rows[i].matched, rows[i].replacement, rows[i].full, rows[i].path,
                                  strlen(rows[i].path), rows[i].query,
                                  rows[i].query ? strlen(rows[i].query) : 0, out, sizeof out);
        PF_CHECK(n == strlen(rows[i].want) && memcmp(out, rows[i].want, n) == 0,
                 "row %zu: want %s, got %.*s", i, rows[i].want, (int)n, out);
    }
    /* a result that does not fit is refused, not cut */
    char small[8];
    CU_ASSERT_EQUAL(route_new_path("/a", "/long-prefix", "", "/a/x", 4, NULL, 0, small, 8), 0);
    CU_ASSERT_EQUAL(route_new_path("/a", "/b", "", "/a/x", 4, "q", 1, small, 6), 6);
}

static void test_redirect_location_from_the_request_and_the_route(void) {
    static const struct {
        const char *scheme, *host, *path, *prefix, *matched;
        uint32_t port;
        const char *req_scheme, *req_host;
        int req_port;
        const char *req_path, *query, *want;
    } rows[] = {
        /* a new scheme drops the request's port: the scheme's default is meant */
        {"https", "", "", "", "/", 0, "http", "shop", 8080, "/a", "x=1", "https://shop/a?x=1"},
        /* no scheme given: the request's, and its port */
        {"", "", "", "", "/", 0, "http", "shop", 8080, "/a", NULL, "http://shop:8080/a"},
        {"", "new", "", "", "/", 0, "http", "shop", -1, "/a", NULL, "http://new/a"},
        {"", "new", "", "", "/", 8443, "http", "shop", 80, "/a", NULL, "http://new:8443/a"},
        /* default ports are left out */
        {"https", "", "", "", "/", 443, "http", "shop", -1, "/a", NULL, "https://shop/a"},
        {"", "", "", "", "/", 0, "http", "shop", 80, "/a", NULL, "http://shop/a"},
        {"", "", "/b", "", "/", 0, "https", "[::1]", 8443, "/a", "q", "https://[::1]:8443/b?q"},
        {"", "", "", "/now/", "/old/", 0, "http", "h", -1, "/old/x/y", NULL, "http://h/now/x/y"},
        {"", "", "", "/", "/old", 0, "http", "h", -1, "/old", NULL, "http://h/"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        pf_config_route r;
        memset(&r, 0, sizeof r);
        r.path_kind = PF_MATCH_PATH_PREFIX;
        snprintf(r.path, sizeof r.path, "%s", rows[i].matched);
        r.has_redirect = true;
        snprintf(r.redirect.scheme, sizeof r.redirect.scheme, "%s", rows[i].scheme);
        snprintf(r.redirect.host, sizeof r.redirect.host, "%s", rows[i].host);
        snprintf(r.redirect.path, sizeof r.redirect.path, "%s", rows[i].path);
        snprintf(r.redirect.prefix, sizeof r.redirect.prefix, "%s", rows[i].prefix);
        r.redirect.port = rows[i].port;
        r.redirect.status = 302;
        char out[128];
        size_t n =
            route_redirect_location(&r, rows[i].req_scheme, rows[i].req_host, rows[i].req_port,
                                    rows[i].req_path, strlen(rows[i].req_path), rows[i].query,
                                    rows[i].query ? strlen(rows[i].query) : 0, out, sizeof out);
        PF_CHECK(n > 0 && strcmp(out, rows[i].want) == 0, "row %zu: want %s, got %s", i,
                 rows[i].want, n ? out : "(nothing)");
    }
    pf_config_route r;
    memset(&r, 0, sizeof r);
    r.path[0] = '/';
    char out[16];
    CU_ASSERT_EQUAL(route_redirect_location(&r, "http", "example.com", -1, "/long/path", 10, NULL,
                                            0, out, sizeof out),
                    0);
    CU_ASSERT_EQUAL(route_redirect_location(&r, "http", "h", -1, "/p", 2, NULL, 0, out, 11), 10);
    CU_ASSERT_STRING_EQUAL(out, "http://h/p");
    CU_ASSERT_EQUAL(route_redirect_location(&r, "http", "h", -1, "/p", 2, NULL, 0, out, 10), 0);
}

PF_UNIT_MAIN("route_actions",
             PF_UNIT_TEST(test_new_path_replaces_the_matched_prefix_at_element_seams),
             PF_UNIT_TEST(test_redirect_location_from_the_request_and_the_route))
