/* Unit tests for proxy/router: authority parsing (host, port, IPv6, lower-casing, every
 * malformed form) and route matching (exact, "*.suffix" and "*" hosts, ports, prefix and
 * exact paths, first match wins). Routes are loaded with config_load_string, as pilotfish
 * itself loads them; JSON is written with ' for " (see sq). */
#include "config/config.h"
#include "proxy/router.h"
#include "test/unit/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Turns ' into " so JSON can be written inside C strings. The result lives until the next
 * call. */
static const char *sq(const char *s) {
    static char buf[8192];
    size_t n = strlen(s);
    CU_ASSERT_FATAL(n < sizeof buf);
    for (size_t i = 0; i <= n; i++)
        buf[i] = s[i] == '\'' ? '"' : s[i];
    return buf;
}

/* A loaded config and the router of its only listener. */
typedef struct fixture {
    pf_config *cfg;
    pf_router *router;
} fixture;

/* Loads one listener with `routes` (a JSON array, ' for ") and one empty static cluster per
 * name in the space-separated `clusters`. */
static fixture load_routes(const char *routes, const char *clusters) {
    char json[8192], list[2048] = "";
    size_t len = 0;
    char names[512];
    snprintf(names, sizeof names, "%s", clusters);
    for (char *save = NULL, *name = strtok_r(names, " ", &save); name;
         name = strtok_r(NULL, " ", &save))
        len += (size_t)snprintf(list + len, sizeof list - len, "%s{'name':'%s','endpoints':[]}",
                                len ? "," : "", name);
    snprintf(json, sizeof json,
             "{'listeners':[{'name':'l','address':'127.0.0.1:15001','routes':%s}],"
             "'clusters':[%s]}",
             routes, list);
    fixture f = {0};
    pf_errlist errs = {0};
    int rc = config_load_string(sq(json), "routes.json", &f.cfg, &errs);
    PF_CHECK(rc == PF_OK && f.cfg, "config should load, rc=%d first error: %s", rc,
             errs.count ? errs.items[0] : "(none)");
    pf_errlist_free(&errs);
    CU_ASSERT_FATAL(f.cfg != NULL);
    f.router = router_new(&f.cfg->listeners[0], NULL);
    CU_ASSERT_FATAL(f.router != NULL);
    return f;
}

static void fixture_free(fixture *f) {
    router_free(f->router);
    config_free(f->cfg);
}

/* Routes a request the way conn.c does: the authority is parsed (and lower-cased), the path
 * ends at '?'. Returns the cluster name, "-" when no route matches, or "!bad" when the
 * authority is malformed. An empty authority means the request had none. */
static const char *route(const fixture *f, const char *authority, const char *target) {
    char host[PF_HOST_MAX] = "";
    int port = -1;
    size_t alen = strlen(authority);
    if (alen && router_parse_authority(authority, alen, host, sizeof host, &port) != PF_OK)
        return "!bad";
    const char *q = strchr(target, '?');
    size_t path_len = q ? (size_t)(q - target) : strlen(target);
    long index = router_match(f->router, host, port, target, path_len);
    if (index < 0)
        return "-";
    CU_ASSERT_FATAL((size_t)index < f->cfg->cluster_count);
    return f->cfg->clusters[index].name;
}

typedef struct route_row {
    const char *authority;
    const char *target;
    const char *want;
} route_row;

static void check_rows(const fixture *f, const route_row *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *got = route(f, rows[i].authority, rows[i].target);
        PF_CHECK(strcmp(got, rows[i].want) == 0, "row %zu: Host \"%s\" %s -> %s, want %s", i,
                 rows[i].authority, rows[i].target, got, rows[i].want);
    }
}

/* ---- router_parse_authority --------------------------------------------------------- */

static void test_parse_authority_splits_host_and_port_and_lowercases(void) {
    static const struct {
        const char *in;
        const char *host;
        int port;
    } rows[] = {
        {"example.com", "example.com", -1},
        {"example.com:8080", "example.com", 8080},
        {"Example.COM:80", "example.com", 80},
        {"API.Local", "api.local", -1},
        {"a", "a", -1},
        {"localhost:1", "localhost", 1},
        {"localhost:65535", "localhost", 65535},
        {"localhost:080", "localhost", 80},
        {"127.0.0.1:9000", "127.0.0.1", 9000},
        {"my_host-1.svc.cluster.local", "my_host-1.svc.cluster.local", -1},
        {"[::1]", "[::1]", -1},
        {"[::1]:8080", "[::1]", 8080},
        {"[2001:DB8::A]:443", "[2001:db8::a]", 443},
        {"[fe80::1]", "[fe80::1]", -1},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char host[PF_HOST_MAX];
        memset(host, 'x', sizeof host);
        int port = 12345;
        int rc = router_parse_authority(rows[i].in, strlen(rows[i].in), host, sizeof host, &port);
        PF_CHECK(rc == PF_OK && strcmp(host, rows[i].host) == 0 && port == rows[i].port,
                 "\"%s\": rc=%d host=\"%.*s\" port=%d, want host \"%s\" port %d", rows[i].in, rc,
                 rc == PF_OK ? (int)strnlen(host, sizeof host) : 0, host, port, rows[i].host,
                 rows[i].port);
    }
}

static void test_parse_authority_rejects_malformed(void) {
    static const char *const rows[] = {
        "",                /* empty */
        ":80",             /* no host */
        "host:",           /* empty port */
        "host:0",          /* port 0 */
        "host:65536",      /* one past the last port */
        "host:70000",      /* out of range */
        "host:123456",     /* too many digits */
        "host:abc",        /* not a number */
        "host:8a",         /* trailing junk */
        "host:+80",        /* sign */
        "host:-1",         /* sign */
        "host: 80",        /* space */
        "host:80:90",      /* two ports */
        "ho st",           /* space in host */
        "host\t",          /* tab */
        "user@host",       /* userinfo is not allowed in Host */
        "host/path",       /* slash */
        "ho%41st",         /* percent */
        "*.local",         /* a pattern is not a host */
        "h\xc3\xa9.local", /* non-ASCII */
        "::1",             /* bare IPv6 */
        "[::1",            /* unclosed bracket */
        "[::1]x",          /* junk after the bracket */
        "[::1]:",          /* empty port after the bracket */
        "[::1]:0",         /* port 0 after the bracket */
        "[::1]:99999",     /* out of range after the bracket */
        "[::1]:http",      /* not a number after the bracket */
        "a]b",             /* bracket outside an IP literal */
        "[::1]]",          /* two closing brackets */
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char host[PF_HOST_MAX];
        int port = 12345;
        int rc = router_parse_authority(rows[i], strlen(rows[i]), host, sizeof host, &port);
        PF_CHECK(rc == PF_EINVAL, "\"%s\" should be rejected, got rc=%d host=\"%s\" port=%d",
                 rows[i], rc, rc == PF_OK ? host : "", port);
    }
}

/* RFC 3986 3.2.2: an IP-literal is "[" IPv6address / IPvFuture "]". */
static void test_parse_authority_rejects_ip_literal_that_is_not_ipv6(void) {
    static const char *const rows[] = {"[]", "[]:80", "[example.com]:80", "[g::1]", "[[::1]"};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char host[PF_HOST_MAX];
        int port = 12345;
        int rc = router_parse_authority(rows[i], strlen(rows[i]), host, sizeof host, &port);
        PF_CHECK(rc == PF_EINVAL, "\"%s\" should be rejected, got rc=%d host=\"%s\" port=%d",
                 rows[i], rc, rc == PF_OK ? host : "", port);
    }
}

static void test_parse_authority_rejects_nul_inside(void) {
    char host[PF_HOST_MAX];
    int port;
    CU_ASSERT_EQUAL(router_parse_authority("a\0b.local", 9, host, sizeof host, &port), PF_EINVAL);
    CU_ASSERT_EQUAL(router_parse_authority("a.local:8\0", 10, host, sizeof host, &port), PF_EINVAL);
}

static void test_parse_authority_reads_only_len_bytes(void) {
    /* The authority points into a header buffer; what follows it must not be read. */
    char host[PF_HOST_MAX];
    int port = 0;
    const char *text = "api.local:8080, junk";
    CU_ASSERT_EQUAL(router_parse_authority(text, 9, host, sizeof host, &port), PF_OK);
    CU_ASSERT_STRING_EQUAL(host, "api.local");
    CU_ASSERT_EQUAL(port, -1);
    CU_ASSERT_EQUAL(router_parse_authority(text, 14, host, sizeof host, &port), PF_OK);
    CU_ASSERT_STRING_EQUAL(host, "api.local");
    CU_ASSERT_EQUAL(port, 8080);
}

static void test_parse_authority_rejects_host_longer_than_buffer(void) {
    char text[PF_HOST_MAX + 16], host[PF_HOST_MAX];
    int port;
    /* PF_HOST_MAX - 1 characters fit with their NUL */
    memset(text, 'a', PF_HOST_MAX - 1);
    text[PF_HOST_MAX - 1] = '\0';
    CU_ASSERT_EQUAL(router_parse_authority(text, PF_HOST_MAX - 1, host, sizeof host, &port), PF_OK);
    CU_ASSERT_EQUAL(strlen(host), PF_HOST_MAX - 1);
    /* and with a port the limit is on the host part only */
    memcpy(text + PF_HOST_MAX - 1, ":81", 4);
    CU_ASSERT_EQUAL(router_parse_authority(text, strlen(text), host, sizeof host, &port), PF_OK);
    CU_ASSERT_EQUAL(port, 81);
    /* one more is too long */
    memset(text, 'a', PF_HOST_MAX);
    text[PF_HOST_MAX] = '\0';
    CU_ASSERT_EQUAL(router_parse_authority(text, PF_HOST_MAX, host, sizeof host, &port), PF_EINVAL);
    /* a small caller buffer is honoured too */
    char small[8];
    CU_ASSERT_EQUAL(router_parse_authority("abcdefg", 7, small, sizeof small, &port), PF_OK);
    CU_ASSERT_STRING_EQUAL(small, "abcdefg");
    CU_ASSERT_EQUAL(router_parse_authority("abcdefgh", 8, small, sizeof small, &port), PF_EINVAL);
    CU_ASSERT_EQUAL(router_parse_authority("abcdefgh:80", 11, small, sizeof small, &port),
                    PF_EINVAL);
}

/* ---- router_match -------------------------------------------------------------------- */

static void test_exact_host_matches_only_that_host(void) {
    fixture f = load_routes("[{'match':{'host':'api.local'},'cluster':'api'}]", "api");
    static const route_row rows[] = {
        {"api.local", "/", "api"},    {"api.local:8080", "/x", "api"}, {"API.LOCAL", "/", "api"},
        {"Api.Local:80", "/", "api"}, {"x.api.local", "/", "-"},       {"api.local.evil", "/", "-"},
        {"api.loca", "/", "-"},       {"pi.local", "/", "-"},          {"", "/", "-"},
        {"local", "/", "-"},
    };
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
}

static void test_wildcard_suffix_matches_subdomains_not_the_bare_domain(void) {
    fixture f = load_routes("[{'match':{'host':'*.local'},'cluster':'wild'}]", "wild");
    static const route_row rows[] = {
        {"a.local", "/", "wild"},   {"a.b.local", "/", "wild"}, {"A.B.LOCAL:9", "/", "wild"},
        {"x-1.local", "/", "wild"}, {"local", "/", "-"},        {"alocal", "/", "-"},
        {"a.local.com", "/", "-"},  {"a.locals", "/", "-"},     {"", "/", "-"},
        {"a.notlocal", "/", "-"},
    };
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
}

/* CONNECT's "known service": a route that names the host (and its port, when it names one);
 * routes for any host, with or without a path, do not make a name known. */
static void test_host_known_only_to_routes_that_name_it(void) {
    fixture f = load_routes("[{'match':{'host':'reviews.shop'},'cluster':'r'},"
                            "{'match':{'host':'*.mesh.local:9090','prefix':'/api'},'cluster':'m'},"
                            "{'match':{'host':'*'},'cluster':'any'},"
                            "{'match':{'prefix':'/'},'cluster':'any'}]",
                            "r m any");
    static const struct {
        const char *host;
        int port;
        bool known;
    } rows[] = {
        {"reviews.shop", 9080, true}, {"reviews.shop", 443, true},   {"reviews.shop", -1, true},
        {"a.mesh.local", 9090, true}, {"a.mesh.local", 9091, false}, {"mesh.local", 9090, false},
        {"evil.example", 443, false}, {"127.0.0.1", 22, false},      {"", 80, false},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(router_host_known(f.router, rows[i].host, rows[i].port) == rows[i].known,
                 "row %zu: %s:%d should be %s", i, rows[i].host, rows[i].port,
                 rows[i].known ? "known" : "unknown");
    fixture_free(&f);
}

static void test_star_matches_any_host_and_no_host(void) {
    fixture f = load_routes("[{'match':{'host':'*'},'cluster':'any'}]", "any");
    static const route_row rows[] = {
        {"a.local", "/", "any"},    {"x", "/deep/path", "any"}, {"10.0.0.1:99", "/", "any"},
        {"[::1]:8080", "/", "any"}, {"", "/", "any"},
    };
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
    /* and a route without any host behaves the same */
    f = load_routes("[{'match':{},'cluster':'any'}]", "any");
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
}

static void test_route_port_must_equal_request_port_and_no_port_counts_as_80(void) {
    fixture f = load_routes("[{'match':{'host':'web.local:8080'},'cluster':'p8080'},"
                            "{'match':{'host':'web.local:80'},'cluster':'p80'},"
                            "{'match':{'host':'*.svc:9090'},'cluster':'svc9090'},"
                            "{'match':{'host':'*:7000'},'cluster':'any7000'}]",
                            "p8080 p80 svc9090 any7000");
    static const route_row rows[] = {
        {"web.local:8080", "/", "p8080"},
        {"web.local:80", "/", "p80"},
        {"web.local", "/", "p80"}, /* no port: 80 */
        {"web.local:8081", "/", "-"},
        {"web.local:443", "/", "-"},
        {"a.svc:9090", "/", "svc9090"},
        {"a.svc", "/", "-"},
        {"a.svc:9091", "/", "-"},
        {"anything:7000", "/", "any7000"},
        {"[::1]:7000", "/", "any7000"},
        {"anything", "/", "-"},
        {"", "/", "-"}, /* no Host at all: port 80 as well */
    };
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
}

static void test_route_without_port_matches_every_port(void) {
    fixture f = load_routes("[{'match':{'host':'web.local'},'cluster':'web'}]", "web");
    static const route_row rows[] = {
        {"web.local", "/", "web"},
        {"web.local:1", "/", "web"},
        {"web.local:80", "/", "web"},
        {"web.local:65535", "/", "web"},
    };
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
}

static void test_any_host_with_port_80_matches_requests_without_port(void) {
    fixture f = load_routes("[{'match':{'host':'*:80'},'cluster':'p80'}]", "p80");
    static const route_row rows[] = {
        {"a.local", "/", "p80"},
        {"a.local:80", "/", "p80"},
        {"", "/", "p80"},
        {"a.local:8080", "/", "-"},
    };
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
}

static void test_prefix_path_matches_by_bytes_and_exact_path_only_itself(void) {
    fixture f = load_routes("[{'match':{'path':'/health'},'cluster':'health'},"
                            "{'match':{'prefix':'/api/'},'cluster':'api'},"
                            "{'match':{'prefix':'/static'},'cluster':'static'}]",
                            "health api static");
    static const route_row rows[] = {
        {"h", "/health", "health"},
        {"h", "/health?probe=1", "health"}, /* the query is not part of the path */
        {"h", "/health/", "-"},
        {"h", "/healthz", "-"},
        {"h", "/Health", "-"}, /* paths are case-sensitive */
        {"h", "/heal", "-"},
        {"h", "/api/", "api"},
        {"h", "/api/v1/users", "api"},
        {"h", "/api/?x=1", "api"},
        {"h", "/api", "-"}, /* shorter than the prefix */
        {"h", "/API/", "-"},
        {"h", "/static", "static"},
        {"h", "/static/app.js", "static"},
        {"h", "/staticfiles", "static"}, /* a prefix is bytes, not segments */
        {"h", "/", "-"},
        {"h", "*", "-"},
    };
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
}

static void test_regex_path_must_match_the_whole_path(void) {
    fixture f = load_routes("[{'match':{'regex':'/items/[0-9]+'},'cluster':'item'},"
                            "{'match':{'regex':'/(a+)+$'},'cluster':'evil'}]",
                            "item evil");
    static const route_row rows[] = {
        {"h", "/items/42", "item"}, {"h", "/items/42?x=a", "item"}, /* the query is not part of the
                                                                       path */
        {"h", "/items/42/", "-"},                                   /* anchored at both ends */
        {"h", "/x/items/42", "-"},  {"h", "/items/", "-"},          {"h", "/aaaa", "evil"},
    };
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
}

static void test_default_path_is_prefix_slash(void) {
    fixture f = load_routes("[{'match':{'host':'a.local'},'cluster':'a'}]", "a");
    static const route_row rows[] = {
        {"a.local", "/", "a"},
        {"a.local", "/anything/at/all?q", "a"},
        {"a.local", "*", "-"},
    };
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
}

static void test_first_matching_route_wins(void) {
    fixture f = load_routes("[{'match':{'host':'api.local','prefix':'/v1/'},'cluster':'v1'},"
                            "{'match':{'host':'api.local','path':'/v1/special'},'cluster':'never'},"
                            "{'match':{'host':'*.local','prefix':'/v1/'},'cluster':'wild_v1'},"
                            "{'match':{'host':'api.local'},'cluster':'api'},"
                            "{'match':{'host':'*.local'},'cluster':'wild'},"
                            "{'match':{'prefix':'/'},'cluster':'fallback'},"
                            "{'match':{'host':'late.local'},'cluster':'shadowed'}]",
                            "v1 never wild_v1 api wild fallback shadowed");
    static const route_row rows[] = {
        {"api.local", "/v1/special", "v1"}, /* the exact route comes too late */
        {"api.local", "/v1/x", "v1"},       {"web.local", "/v1/x", "wild_v1"},
        {"api.local", "/v2/x", "api"},      {"web.local", "/v2/x", "wild"},
        {"late.local", "/", "wild"}, /* "*.local" is listed first */
        {"example.com", "/", "fallback"},   {"", "/v1/x", "fallback"},
    };
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
}

static void test_route_hosts_from_config_are_case_insensitive(void) {
    fixture f = load_routes("[{'match':{'host':'API.Example.COM'},'cluster':'api'},"
                            "{'match':{'host':'*.Svc.LOCAL:8080'},'cluster':'svc'}]",
                            "api svc");
    static const route_row rows[] = {
        {"api.example.com", "/", "api"},   {"API.EXAMPLE.COM", "/", "api"},
        {"aPi.eXample.cOm:1", "/", "api"}, {"x.svc.local:8080", "/", "svc"},
        {"X.SVC.LOCAL:8080", "/", "svc"},  {"X.SVC.LOCAL", "/", "-"},
    };
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
}

static void test_ipv6_authority_routes_by_port_and_any_host(void) {
    fixture f = load_routes("[{'match':{'host':'*:8080'},'cluster':'v6port'},"
                            "{'match':{'host':'localhost'},'cluster':'name'},"
                            "{'match':{},'cluster':'rest'}]",
                            "v6port name rest");
    static const route_row rows[] = {
        {"[::1]:8080", "/", "v6port"},
        {"[::1]", "/", "rest"},
        {"[::1]:9", "/", "rest"},
        {"[::1", "/", "!bad"},
    };
    check_rows(&f, rows, ARRAY_LEN(rows));
    fixture_free(&f);
}

static void test_no_route_matches_returns_minus_one(void) {
    fixture f = load_routes("[{'match':{'host':'a.local','path':'/only'},'cluster':'a'}]", "a");
    CU_ASSERT_EQUAL(router_match(f.router, "a.local", -1, "/other", 6), -1);
    CU_ASSERT_EQUAL(router_match(f.router, "b.local", -1, "/only", 5), -1);
    CU_ASSERT_EQUAL(router_match(f.router, "a.local", -1, "/only", 5), 0);
    /* the path is bounded by its length, not by a NUL */
    CU_ASSERT_EQUAL(router_match(f.router, "a.local", -1, "/only/more", 5), 0);
    CU_ASSERT_EQUAL(router_match(f.router, "a.local", -1, "/onl", 4), -1);
    fixture_free(&f);
}

static void test_router_with_no_routes_matches_nothing(void) {
    pf_config_listener l = {0};
    pf_router *r = router_new(&l, NULL);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(router_match(r, "a.local", 80, "/", 1), -1);
    CU_ASSERT_EQUAL(router_match(r, "", -1, "/", 1), -1);
    router_free(r);
}

static void test_hand_built_routes_return_their_cluster_index(void) {
    pf_config_route routes[3];
    memset(routes, 0, sizeof routes);
    routes[0] = (pf_config_route){.host_kind = PF_MATCH_HOST_EXACT,
                                  .host = "a.local",
                                  .host_port = -1,
                                  .path_kind = PF_MATCH_PATH_EXACT,
                                  .path = "/a",
                                  .cluster = "x",
                                  .cluster_index = 7};
    routes[1] = (pf_config_route){.host_kind = PF_MATCH_HOST_SUFFIX,
                                  .host = ".local",
                                  .host_port = 443,
                                  .path_kind = PF_MATCH_PATH_PREFIX,
                                  .path = "/",
                                  .cluster = "y",
                                  .cluster_index = 3};
    routes[2] = (pf_config_route){.host_kind = PF_MATCH_HOST_ANY,
                                  .host = "",
                                  .host_port = -1,
                                  .path_kind = PF_MATCH_PATH_PREFIX,
                                  .path = "/z",
                                  .cluster = "z",
                                  .cluster_index = 0};
    pf_config_listener l = {.routes = routes, .route_count = 3};
    pf_router *r = router_new(&l, NULL);
    CU_ASSERT_FATAL(r != NULL);
    /* the router copied the routes: changing the config afterwards changes nothing */
    memset(routes, 0, sizeof routes);
    CU_ASSERT_EQUAL(router_match(r, "a.local", -1, "/a", 2), 7);
    CU_ASSERT_EQUAL(router_match(r, "b.local", 443, "/a", 2), 3);
    CU_ASSERT_EQUAL(router_match(r, "b.local", -1, "/a", 2), -1);
    CU_ASSERT_EQUAL(router_match(r, "b.local", -1, "/z/1", 4), 0);
    CU_ASSERT_EQUAL(router_match(r, "local", 443, "/a", 2), -1);
    router_free(r);
}

static void test_router_outlives_its_config(void) {
    fixture f = load_routes("[{'match':{'host':'*.local','prefix':'/p/'},'cluster':'a'}]", "a");
    config_free(f.cfg);
    f.cfg = NULL;
    CU_ASSERT_EQUAL(router_match(f.router, "x.local", -1, "/p/q", 4), 0);
    CU_ASSERT_EQUAL(router_match(f.router, "x.local", -1, "/q", 2), -1);
    router_free(f.router);
    router_free(NULL);
}

/* ---- method, headers, query parameters ------------------------------------------------ */

/* A head from "Name: value\n" lines. */
static void make_head(pf_head *h, const char *lines) {
    http1_head_init(h, 256 * 1024, 64);
    char line[512];
    for (const char *p = lines; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        CU_ASSERT_FATAL(n < sizeof line);
        memcpy(line, p, n);
        line[n] = '\0';
        char *colon = strchr(line, ':');
        CU_ASSERT_FATAL(colon != NULL);
        CU_ASSERT_EQUAL(http1_head_append_name(h, line, (size_t)(colon - line)), PF_OK);
        const char *v = colon + 1 + (colon[1] == ' ');
        CU_ASSERT_EQUAL(http1_head_append_value(h, v, strlen(v)), PF_OK);
        CU_ASSERT_EQUAL(http1_head_finish_value(h), PF_OK);
        p = nl ? nl + 1 : p + n;
    }
}

/* Routes method, target (path and query) and header lines; returns the cluster or "-". */
static const char *route_request(const fixture *f, const char *method, const char *target,
                                 const char *headers) {
    pf_head h;
    make_head(&h, headers);
    const char *q = strchr(target, '?');
    pf_route_request rq = {
        .host = "",
        .port = -1,
        .path = target,
        .path_len = q ? (size_t)(q - target) : strlen(target),
        .method = method,
        .query = q ? q + 1 : NULL,
        .query_len = q ? strlen(q + 1) : 0,
        .head = &h,
    };
    const pf_config_route *r = router_find_request(f->router, &rq);
    http1_head_free(&h);
    return r ? f->cfg->clusters[r->cluster_index].name : "-";
}

static void test_method_header_and_query_conditions_all_must_hold(void) {
    fixture f = load_routes(
        "[{'match':{'prefix':'/api/"
        "','method':'POST','headers':[{'name':'X-Env','exact':'canary'}]},"
        "'cluster':'post_canary'},"
        "{'match':{'headers':[{'name':'x-tier','prefix':'gold'},"
        "{'name':'x-debug','present':true,'invert':true}]},'cluster':'gold'},"
        "{'match':{'headers':[{'name':'user-agent','regex':'Mozilla/"
        "[0-9]+\\\\..*'}]},'cluster':'browser'},"
        "{'match':{'headers':[{'name':'x-src','suffix':'.internal'}]},'cluster':'internal'},"
        "{'match':{'headers':[{'name':'x-zone','exact':'a','invert':true}],'prefix':'/z'},"
        "'cluster':'not_a'},"
        "{'match':{'query_params':[{'name':'v','exact':'2'}]},'cluster':'v2'},"
        "{'match':{'query_params':[{'name':'flag','present':true}],'method':'GET'},'cluster':'flag'"
        "},"
        "{'match':{'query_params':[{'name':'id','regex':'[0-9]{3}'}]},'cluster':'id3'},"
        "{'match':{},'cluster':'rest'}]",
        "post_canary gold browser internal not_a v2 flag id3 rest");
    static const struct {
        const char *method, *target, *headers, *want;
    } rows[] = {
        {"POST", "/api/x", "X-Env: canary", "post_canary"},
        {"POST", "/api/x", "x-env: canary", "post_canary"},                /* names ignore case */
        {"POST", "/api/x", "X-Env: Canary", "rest"},                       /* values do not */
        {"GET", "/api/x", "X-Env: canary", "rest"},                        /* method */
        {"POST", "/other", "X-Env: canary", "rest"},                       /* and path, together */
        {"POST", "/api/x", "X-Env: stable\nX-Env: canary", "post_canary"}, /* any line */
        {"GET", "/", "x-tier: golden", "gold"},
        {"GET", "/", "x-tier: golden\nx-debug: 1", "rest"}, /* inverted present: absent */
        {"GET", "/", "x-tier: silver", "rest"},
        {"GET", "/", "User-Agent: Mozilla/5.0 (X11)", "browser"},
        {"GET", "/", "User-Agent: curl Mozilla/5.0", "rest"}, /* the whole value */
        {"GET", "/", "User-Agent: Mozilla/x", "rest"},
        {"GET", "/", "x-src: db.internal", "internal"},
        {"GET", "/", "x-src: internal.example", "rest"},
        {"GET", "/z", "x-zone: b", "not_a"},
        {"GET", "/z", "", "not_a"}, /* absent is "not a" too */
        {"GET", "/z", "x-zone: a", "rest"},
        {"GET", "/p?v=2", "", "v2"},
        {"GET", "/p?a=1&v=2&b", "", "v2"},
        {"GET", "/p?v=20", "", "rest"},
        {"GET", "/p?xv=2", "", "rest"},
        {"GET", "/p?v=1&v=2", "", "v2"}, /* any occurrence */
        {"GET", "/p?flag", "", "flag"},
        {"GET", "/p?flag=", "", "flag"},
        {"POST", "/p?flag", "", "rest"},
        {"GET", "/p?id=123", "", "id3"},
        {"GET", "/p?id=1234", "", "rest"},
        {"GET", "/p?id=12", "", "rest"},
        {"GET", "/p", "", "rest"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        const char *got = route_request(&f, rows[i].method, rows[i].target, rows[i].headers);
        PF_CHECK(strcmp(got, rows[i].want) == 0, "row %zu: %s %s [%s] -> %s, want %s", i,
                 rows[i].method, rows[i].target, rows[i].headers, got, rows[i].want);
    }
    /* without a head or method (router_find), conditions on them do not hold */
    CU_ASSERT_STRING_EQUAL(route(&f, "", "/api/x"), "rest");
    fixture_free(&f);
}

static void test_an_evil_regex_against_a_long_header_gives_up_quickly(void) {
    fixture f = load_routes("[{'match':{'headers':[{'name':'x-evil','regex':'(a+)+$'}]},"
                            "'cluster':'evil'},{'match':{},'cluster':'rest'}]",
                            "evil rest");
    static char value[64 * 1024];
    memset(value, 'a', sizeof value - 2);
    value[sizeof value - 2] = '!'; /* never matches: backtracking tries every split */
    char lines[sizeof value + 16];
    snprintf(lines, sizeof lines, "x-evil: %s", value);
    pf_head h;
    http1_head_init(&h, 256 * 1024, 64);
    CU_ASSERT_EQUAL(http1_head_append_name(&h, "x-evil", 6), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_value(&h, value, strlen(value)), PF_OK);
    CU_ASSERT_EQUAL(http1_head_finish_value(&h), PF_OK);
    pf_route_request rq = {.host = "", .port = -1, .path = "/", .path_len = 1, .head = &h};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const pf_config_route *r = router_find_request(f.router, &rq);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_STRING_EQUAL(f.cfg->clusters[r->cluster_index].name, "rest");
    /* Unbounded, this takes longer than the universe's age; bounded, milliseconds. The
     * bound here is loose so that a loaded machine never fails it. */
    PF_CHECK(seconds < 5.0, "the evil regex took %.3f s", seconds);
    /* and a value it does match still matches */
    http1_head_reset(&h);
    CU_ASSERT_EQUAL(http1_head_append_name(&h, "x-evil", 6), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_value(&h, "aaaa", 4), PF_OK);
    CU_ASSERT_EQUAL(http1_head_finish_value(&h), PF_OK);
    r = router_find_request(f.router, &rq);
    CU_ASSERT_STRING_EQUAL(r ? f.cfg->clusters[r->cluster_index].name : "-", "evil");
    http1_head_free(&h);
    fixture_free(&f);
}

static void test_conditions_outlive_the_config(void) {
    fixture f = load_routes("[{'match':{'headers':[{'name':'x-a','regex':'b+'}],"
                            "'query_params':[{'name':'q','exact':'1'}]},'cluster':'a'}]",
                            "a");
    config_free(f.cfg);
    f.cfg = NULL;
    pf_head h;
    make_head(&h, "x-a: bbb");
    pf_route_request rq = {.host = "",
                           .port = -1,
                           .path = "/",
                           .path_len = 1,
                           .query = "q=1",
                           .query_len = 3,
                           .head = &h};
    CU_ASSERT_PTR_NOT_NULL(router_find_request(f.router, &rq));
    rq.query = "q=2";
    CU_ASSERT_PTR_NULL(router_find_request(f.router, &rq));
    http1_head_free(&h);
    router_free(f.router);
}

/* A reload builds routers with the proxy's cluster indices, which differ from the new
 * config's order once clusters were added and removed. */
static void test_router_maps_config_cluster_indices_to_the_given_slots(void) {
    fixture f = load_routes("[{'match':{'prefix':'/a'},'cluster':'a'},"
                            "{'match':{'prefix':'/b'},'cluster':'b'}]",
                            "a b");
    const size_t slots[] = {7, 3};
    pf_router *mapped = router_new(&f.cfg->listeners[0], slots);
    CU_ASSERT_FATAL(mapped != NULL);
    CU_ASSERT_EQUAL(router_match(mapped, "x", -1, "/a", 2), 7);
    CU_ASSERT_EQUAL(router_match(mapped, "x", -1, "/b", 2), 3);
    CU_ASSERT_EQUAL(router_match(f.router, "x", -1, "/b", 2), 1);
    router_free(mapped);
    router_free(f.router);
    config_free(f.cfg);
}

/* tcp listeners: the first route whose SNI pattern takes the name, else the listener's
 * cluster, else -1; slots map both. */
static void test_sni_routes_pick_the_cluster_else_the_listener_default(void) {
    const char *json =
        "{'listeners':[{'name':'t','address':'127.0.0.1:15001','protocol':'tcp','cluster':'d',"
        "'routes':[{'match':{'sni':'db.test'},'cluster':'a'},"
        "{'match':{'sni':'*.cache.test'},'cluster':'b'},{'match':{'sni':'*'},'cluster':'c'}]},"
        "{'name':'u','address':'127.0.0.1:15002','protocol':'tcp',"
        "'routes':[{'match':{'sni':'db.test'},'cluster':'a'}]},"
        "{'name':'v','address':'127.0.0.1:15003','protocol':'tcp','cluster':'b'}],"
        "'clusters':[{'name':'a','endpoints':[]},{'name':'b','endpoints':[]},"
        "{'name':'c','endpoints':[]},{'name':'d','endpoints':[]}]}";
    pf_config *cfg = NULL;
    pf_errlist errs = {0};
    CU_ASSERT_FATAL(config_load_string(sq(json), "tcp.json", &cfg, &errs) == PF_OK);
    pf_errlist_free(&errs);
    pf_router *t = router_new(&cfg->listeners[0], NULL);
    const size_t slots[] = {10, 11, 12, 13};
    pf_router *mapped = router_new(&cfg->listeners[0], slots);
    pf_router *u = router_new(&cfg->listeners[1], NULL);
    pf_router *v = router_new(&cfg->listeners[2], NULL);
    CU_ASSERT_FATAL(t && mapped && u && v);
    const struct {
        const char *name;
        long t, u;
    } cases[] = {
        {"db.test", 0, 0},     {"x.cache.test", 1, -1}, {"a.b.cache.test", 1, -1},
        {"cache.test", 2, -1}, {"other.test", 2, -1},   {"db.test.evil", 2, -1},
        {NULL, 3, -1}, /* no server name: only the default takes it */
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        PF_CHECK(router_match_sni(t, cases[i].name) == cases[i].t, "t %s: %ld",
                 cases[i].name ? cases[i].name : "(none)", router_match_sni(t, cases[i].name));
        PF_CHECK(router_match_sni(u, cases[i].name) == cases[i].u, "u %s: %ld",
                 cases[i].name ? cases[i].name : "(none)", router_match_sni(u, cases[i].name));
        CU_ASSERT_EQUAL(router_match_sni(mapped, cases[i].name), (long)slots[cases[i].t]);
    }
    CU_ASSERT(router_has_sni_routes(t) && router_has_sni_routes(u) && !router_has_sni_routes(v));
    CU_ASSERT_EQUAL(router_match_sni(v, "db.test"), 1);
    router_free(v);
    router_free(u);
    router_free(mapped);
    router_free(t);
    config_free(cfg);
}

PF_UNIT_MAIN("router", PF_UNIT_TEST(test_sni_routes_pick_the_cluster_else_the_listener_default),
             PF_UNIT_TEST(test_method_header_and_query_conditions_all_must_hold),
             PF_UNIT_TEST(test_an_evil_regex_against_a_long_header_gives_up_quickly),
             PF_UNIT_TEST(test_conditions_outlive_the_config),
             PF_UNIT_TEST(test_parse_authority_splits_host_and_port_and_lowercases),
             PF_UNIT_TEST(test_router_maps_config_cluster_indices_to_the_given_slots),
             PF_UNIT_TEST(test_parse_authority_rejects_malformed),
             PF_UNIT_TEST(test_parse_authority_rejects_ip_literal_that_is_not_ipv6),
             PF_UNIT_TEST(test_parse_authority_rejects_nul_inside),
             PF_UNIT_TEST(test_parse_authority_reads_only_len_bytes),
             PF_UNIT_TEST(test_parse_authority_rejects_host_longer_than_buffer),
             PF_UNIT_TEST(test_exact_host_matches_only_that_host),
             PF_UNIT_TEST(test_wildcard_suffix_matches_subdomains_not_the_bare_domain),
             PF_UNIT_TEST(test_star_matches_any_host_and_no_host),
             PF_UNIT_TEST(test_host_known_only_to_routes_that_name_it),
             PF_UNIT_TEST(test_route_port_must_equal_request_port_and_no_port_counts_as_80),
             PF_UNIT_TEST(test_route_without_port_matches_every_port),
             PF_UNIT_TEST(test_any_host_with_port_80_matches_requests_without_port),
             PF_UNIT_TEST(test_prefix_path_matches_by_bytes_and_exact_path_only_itself),
             PF_UNIT_TEST(test_default_path_is_prefix_slash),
             PF_UNIT_TEST(test_regex_path_must_match_the_whole_path),
             PF_UNIT_TEST(test_first_matching_route_wins),
             PF_UNIT_TEST(test_route_hosts_from_config_are_case_insensitive),
             PF_UNIT_TEST(test_ipv6_authority_routes_by_port_and_any_host),
             PF_UNIT_TEST(test_no_route_matches_returns_minus_one),
             PF_UNIT_TEST(test_router_with_no_routes_matches_nothing),
             PF_UNIT_TEST(test_hand_built_routes_return_their_cluster_index),
             PF_UNIT_TEST(test_router_outlives_its_config),
             PF_UNIT_TEST(test_router_maps_config_cluster_indices_to_the_given_slots))
