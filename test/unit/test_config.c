/* Unit tests for config/: loading, defaults, every validation message (path and reason),
 * address and duration parsing, and the dump that must load back to the same config.
 * JSON in the tables is written with ' for " (see sq) so that rows stay readable. */
#include "config/config.h"
#include "core/time.h"
#include "test/unit/unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const char example_json[] =
    "{\n"
    "  \"admin\": {\"address\": \"127.0.0.1:9901\"},\n"
    "  \"listeners\": [{\"name\": \"main\", \"address\": \"127.0.0.1:15001\",\n"
    "    \"routes\": [{\"match\": {\"host\": \"api.local\", \"prefix\": \"/v1/\"}, \"cluster\": "
    "\"api\"},\n"
    "               {\"match\": {\"prefix\": \"/\"}, \"cluster\": \"web\"}]}],\n"
    "  \"clusters\": [\n"
    "    {\"name\": \"web\", \"lb_policy\": \"round_robin\",\n"
    "     \"endpoints\": [\"127.0.0.1:8081\", {\"address\": \"127.0.0.1:8082\", \"weight\": 2}]},\n"
    "    {\"name\": \"api\", \"endpoints\": [\"127.0.0.1:8083\"], \"connect_timeout\": "
    "\"250ms\"}]\n"
    "}\n";

/* Turns ' into " so JSON can be written inside C strings without a wall of escapes. The
 * result lives until the next call. */
static const char *sq(const char *s) {
    static char buf[8192];
    size_t n = strlen(s);
    CU_ASSERT_FATAL(n < sizeof buf);
    for (size_t i = 0; i <= n; i++)
        buf[i] = s[i] == '\'' ? '"' : s[i];
    return buf;
}

/* All messages on one line each, for failure reports. */
static const char *joined(const pf_errlist *errs) {
    static char buf[8192];
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < errs->count && len < sizeof buf; i++) {
        int n = snprintf(buf + len, sizeof buf - len, "\n      [%zu] %s", i, errs->items[i]);
        if (n < 0)
            break;
        len += (size_t)n;
    }
    return errs->count ? buf : " (no errors)";
}

static bool has_error(const pf_errlist *errs, const char *needle) {
    for (size_t i = 0; i < errs->count; i++)
        if (strstr(errs->items[i], needle))
            return true;
    return false;
}

static pf_config *load_ok(const char *json) {
    pf_config *cfg = NULL;
    pf_errlist errs = {0};
    int rc = config_load_string(json, "x.json", &cfg, &errs);
    PF_CHECK(rc == PF_OK && cfg, "config should load, rc=%d:%s", rc, joined(&errs));
    pf_errlist_free(&errs);
    return cfg;
}

static uint16_t port_of(const pf_sockaddr *a) {
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

/* ---- the example and the defaults --------------------------------------------------- */

static void test_example_loads_with_every_field_and_default(void) {
    pf_config *cfg = load_ok(example_json);
    CU_ASSERT_FATAL(cfg != NULL);

    CU_ASSERT_STRING_EQUAL(cfg->source, "x.json");
    CU_ASSERT_STRING_EQUAL(cfg->admin_addr.text, "127.0.0.1:9901");
    CU_ASSERT_EQUAL(cfg->admin_addr.ss.ss_family, AF_INET);
    CU_ASSERT_EQUAL(port_of(&cfg->admin_addr), 9901);
    CU_ASSERT_TRUE(cfg->access_log.enabled);
    CU_ASSERT_EQUAL(cfg->access_log.format, PF_ALOG_JSON);
    CU_ASSERT_EQUAL(cfg->access_log.field_count, PF_ALOG_FIELD_COUNT);
    CU_ASSERT_EQUAL(cfg->access_log.sample_ppm, PF_ALOG_SAMPLE_ONE);
    CU_ASSERT_STRING_EQUAL(cfg->access_log.path, "");
    CU_ASSERT_EQUAL(cfg->workers, 0);
    CU_ASSERT_EQUAL(cfg->drain_timeout_ms, PF_DEFAULT_DRAIN_TIMEOUT_MS);

    CU_ASSERT_EQUAL_FATAL(cfg->listener_count, 1);
    const pf_config_listener *l = &cfg->listeners[0];
    CU_ASSERT_STRING_EQUAL(l->name, "main");
    CU_ASSERT_STRING_EQUAL(l->addr.text, "127.0.0.1:15001");
    CU_ASSERT_EQUAL(l->addr.len, sizeof(struct sockaddr_in));
    CU_ASSERT_EQUAL(port_of(&l->addr), 15001);
    CU_ASSERT_EQUAL(l->max_header_bytes, PF_DEFAULT_MAX_HEADER_BYTES);
    CU_ASSERT_EQUAL(l->max_target_bytes, PF_DEFAULT_MAX_TARGET_BYTES);
    CU_ASSERT_EQUAL(l->max_headers, PF_DEFAULT_MAX_HEADERS);
    CU_ASSERT_EQUAL(l->buffer_bytes, PF_DEFAULT_BUFFER_BYTES);
    CU_ASSERT_EQUAL(l->header_timeout_ms, PF_DEFAULT_HEADER_TIMEOUT_MS);
    CU_ASSERT_EQUAL(l->body_timeout_ms, PF_DEFAULT_BODY_TIMEOUT_MS);
    CU_ASSERT_EQUAL(l->stream_idle_timeout_ms, 300000);
    CU_ASSERT_EQUAL(l->idle_timeout_ms, PF_DEFAULT_IDLE_TIMEOUT_MS);

    CU_ASSERT_EQUAL_FATAL(l->route_count, 2);
    const pf_config_route *r0 = &l->routes[0], *r1 = &l->routes[1];
    CU_ASSERT_EQUAL(r0->host_kind, PF_MATCH_HOST_EXACT);
    CU_ASSERT_STRING_EQUAL(r0->host, "api.local");
    CU_ASSERT_EQUAL(r0->host_port, -1);
    CU_ASSERT_EQUAL(r0->path_kind, PF_MATCH_PATH_PREFIX);
    CU_ASSERT_STRING_EQUAL(r0->path, "/v1/");
    CU_ASSERT_STRING_EQUAL(r0->cluster, "api");
    CU_ASSERT_EQUAL(r0->cluster_index, 1);
    CU_ASSERT_EQUAL(r1->host_kind, PF_MATCH_HOST_ANY);
    CU_ASSERT_STRING_EQUAL(r1->host, "");
    CU_ASSERT_EQUAL(r1->host_port, -1);
    CU_ASSERT_EQUAL(r1->path_kind, PF_MATCH_PATH_PREFIX);
    CU_ASSERT_STRING_EQUAL(r1->path, "/");
    CU_ASSERT_STRING_EQUAL(r1->cluster, "web");
    CU_ASSERT_EQUAL(r1->cluster_index, 0);

    CU_ASSERT_EQUAL_FATAL(cfg->cluster_count, 2);
    const pf_config_cluster *web = &cfg->clusters[0], *api = &cfg->clusters[1];
    CU_ASSERT_STRING_EQUAL(web->name, "web");
    CU_ASSERT_EQUAL(web->lb_policy, PF_LB_ROUND_ROBIN);
    CU_ASSERT_EQUAL(web->connect_timeout_ms, PF_DEFAULT_CONNECT_TIMEOUT_MS);
    CU_ASSERT_EQUAL(web->response_timeout_ms, PF_DEFAULT_RESPONSE_TIMEOUT_MS);
    CU_ASSERT_EQUAL(web->body_timeout_ms, PF_DEFAULT_BODY_TIMEOUT_MS);
    CU_ASSERT_EQUAL(web->upstream_idle_timeout_ms, PF_DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS);
    CU_ASSERT_EQUAL(web->max_idle_per_endpoint, PF_DEFAULT_MAX_IDLE_PER_ENDPOINT);
    CU_ASSERT_EQUAL(web->max_header_bytes, 65536);
    CU_ASSERT_EQUAL(web->max_headers, 256);
    CU_ASSERT_EQUAL(web->buffer_bytes, 65536);
    CU_ASSERT_EQUAL_FATAL(web->endpoint_count, 2);
    CU_ASSERT_STRING_EQUAL(web->endpoints[0].addr.text, "127.0.0.1:8081");
    CU_ASSERT_EQUAL(port_of(&web->endpoints[0].addr), 8081);
    CU_ASSERT_EQUAL(web->endpoints[0].weight, 1);
    CU_ASSERT_EQUAL(web->endpoints[0].priority, 0);
    CU_ASSERT_STRING_EQUAL(web->endpoints[0].zone, "");
    CU_ASSERT_STRING_EQUAL(web->endpoints[1].addr.text, "127.0.0.1:8082");
    CU_ASSERT_EQUAL(web->endpoints[1].weight, 2);
    CU_ASSERT_EQUAL(web->endpoints[1].priority, 0);

    CU_ASSERT_STRING_EQUAL(api->name, "api");
    CU_ASSERT_EQUAL(api->lb_policy, PF_LB_ROUND_ROBIN);
    CU_ASSERT_EQUAL(api->connect_timeout_ms, 250);
    CU_ASSERT_EQUAL(api->response_timeout_ms, PF_DEFAULT_RESPONSE_TIMEOUT_MS);
    CU_ASSERT_EQUAL_FATAL(api->endpoint_count, 1);
    CU_ASSERT_STRING_EQUAL(api->endpoints[0].addr.text, "127.0.0.1:8083");
    config_free(cfg);
}

static void test_every_option_set_is_taken(void) {
    pf_config *cfg = load_ok(
        sq("{'admin':{'address':'[::1]:9000'},'access_log':false,'workers':4,"
           "'drain_timeout':'30s',"
           "'listeners':[{'name':'edge-1.a_b','address':'0.0.0.0:8080','max_header_bytes':2048,"
           "'max_target_bytes':1024,'max_headers':16,'buffer_bytes':8192,"
           "'header_timeout':'2s','idle_timeout':'1m','body_timeout':'30s',"
           "'routes':[{'match':{'host':'*.Example.COM:8443','path':'/healthz'},'cluster':'b'}]}],"
           "'clusters':[{'name':'b','lb_policy':'weighted_round_robin','connect_timeout':'1.5s',"
           "'response_timeout':'1h','idle_timeout':'90s','max_idle_per_endpoint':0,"
           "'body_timeout':'2m','max_header_bytes':4096,'max_headers':32,'buffer_bytes':16384,"
           "'endpoints':[{'address':'[::1]:81','weight':10000,'priority':127,'zone':'eu-1a'},"
           "'10.0.0.1:80']}]}"));
    CU_ASSERT_FATAL(cfg != NULL);
    CU_ASSERT_STRING_EQUAL(cfg->admin_addr.text, "[::1]:9000");
    CU_ASSERT_EQUAL(cfg->admin_addr.ss.ss_family, AF_INET6);
    CU_ASSERT_FALSE(cfg->access_log.enabled);
    CU_ASSERT_EQUAL(cfg->workers, 4);
    CU_ASSERT_EQUAL(cfg->drain_timeout_ms, 30000);
    const pf_config_listener *l = &cfg->listeners[0];
    CU_ASSERT_STRING_EQUAL(l->name, "edge-1.a_b");
    CU_ASSERT_EQUAL(l->max_header_bytes, 2048);
    CU_ASSERT_EQUAL(l->max_target_bytes, 1024);
    CU_ASSERT_EQUAL(l->max_headers, 16);
    CU_ASSERT_EQUAL(l->buffer_bytes, 8192);
    CU_ASSERT_EQUAL(l->header_timeout_ms, 2000);
    CU_ASSERT_EQUAL(l->idle_timeout_ms, 60000);
    CU_ASSERT_EQUAL(l->body_timeout_ms, 30000);
    CU_ASSERT_EQUAL(l->routes[0].host_kind, PF_MATCH_HOST_SUFFIX);
    CU_ASSERT_STRING_EQUAL(l->routes[0].host, ".example.com");
    CU_ASSERT_EQUAL(l->routes[0].host_port, 8443);
    CU_ASSERT_EQUAL(l->routes[0].path_kind, PF_MATCH_PATH_EXACT);
    CU_ASSERT_STRING_EQUAL(l->routes[0].path, "/healthz");
    const pf_config_cluster *c = &cfg->clusters[0];
    CU_ASSERT_EQUAL(c->lb_policy, PF_LB_WEIGHTED_ROUND_ROBIN);
    CU_ASSERT_EQUAL(c->connect_timeout_ms, 1500);
    CU_ASSERT_EQUAL(c->response_timeout_ms, 3600000);
    CU_ASSERT_EQUAL(c->body_timeout_ms, 120000);
    CU_ASSERT_EQUAL(c->upstream_idle_timeout_ms, 90000);
    CU_ASSERT_EQUAL(c->max_idle_per_endpoint, 0);
    CU_ASSERT_EQUAL(c->max_header_bytes, 4096);
    CU_ASSERT_EQUAL(c->max_headers, 32);
    CU_ASSERT_EQUAL(c->buffer_bytes, 16384);
    CU_ASSERT_STRING_EQUAL(c->endpoints[0].addr.text, "[::1]:81");
    CU_ASSERT_EQUAL(c->endpoints[0].weight, 10000);
    CU_ASSERT_EQUAL(c->endpoints[0].priority, 127);
    CU_ASSERT_STRING_EQUAL(c->endpoints[0].zone, "eu-1a");
    CU_ASSERT_EQUAL(c->endpoints[1].weight, 1);
    config_free(cfg);
}

static void test_empty_static_cluster_is_allowed(void) {
    pf_config *cfg = load_ok(sq("{'listeners':[{'name':'m','address':'127.0.0.1:1',"
                                "'routes':[{'match':{},'cluster':'later'}]}],"
                                "'clusters':[{'name':'later','endpoints':[]}]}"));
    CU_ASSERT_FATAL(cfg != NULL);
    CU_ASSERT_EQUAL(cfg->clusters[0].endpoint_count, 0);
    CU_ASSERT_PTR_NULL(cfg->clusters[0].endpoints);
    config_free(cfg);
}

/* ---- route matches ------------------------------------------------------------------- */

static void test_route_host_and_path_forms(void) {
    static const struct {
        const char *match; /* the "match" object */
        pf_host_match host_kind;
        const char *host;
        int port;
        pf_path_match path_kind;
        const char *path;
    } rows[] = {
        {"{}", PF_MATCH_HOST_ANY, "", -1, PF_MATCH_PATH_PREFIX, "/"},
        {"{'host':'api.local'}", PF_MATCH_HOST_EXACT, "api.local", -1, PF_MATCH_PATH_PREFIX, "/"},
        {"{'host':'API.Local'}", PF_MATCH_HOST_EXACT, "api.local", -1, PF_MATCH_PATH_PREFIX, "/"},
        {"{'host':'api.local:8443'}", PF_MATCH_HOST_EXACT, "api.local", 8443, PF_MATCH_PATH_PREFIX,
         "/"},
        {"{'host':'*.local'}", PF_MATCH_HOST_SUFFIX, ".local", -1, PF_MATCH_PATH_PREFIX, "/"},
        {"{'host':'*.a-b.local:80'}", PF_MATCH_HOST_SUFFIX, ".a-b.local", 80, PF_MATCH_PATH_PREFIX,
         "/"},
        {"{'host':'*'}", PF_MATCH_HOST_ANY, "", -1, PF_MATCH_PATH_PREFIX, "/"},
        {"{'host':'*:8080'}", PF_MATCH_HOST_ANY, "", 8080, PF_MATCH_PATH_PREFIX, "/"},
        {"{'host':'10.0.0.1'}", PF_MATCH_HOST_EXACT, "10.0.0.1", -1, PF_MATCH_PATH_PREFIX, "/"},
        {"{'prefix':'/v1/'}", PF_MATCH_HOST_ANY, "", -1, PF_MATCH_PATH_PREFIX, "/v1/"},
        {"{'path':'/healthz'}", PF_MATCH_HOST_ANY, "", -1, PF_MATCH_PATH_EXACT, "/healthz"},
        {"{'path':'/'}", PF_MATCH_HOST_ANY, "", -1, PF_MATCH_PATH_EXACT, "/"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char json[1024];
        snprintf(json, sizeof json,
                 "{'listeners':[{'name':'m','address':'127.0.0.1:1',"
                 "'routes':[{'match':%s,'cluster':'c'}]}],"
                 "'clusters':[{'name':'c','endpoints':[]}]}",
                 rows[i].match);
        pf_config *cfg = load_ok(sq(json));
        if (!PF_CHECK(cfg != NULL, "row %zu: %s", i, rows[i].match))
            continue;
        const pf_config_route *r = &cfg->listeners[0].routes[0];
        PF_CHECK(r->host_kind == rows[i].host_kind && strcmp(r->host, rows[i].host) == 0 &&
                     r->host_port == rows[i].port && r->path_kind == rows[i].path_kind &&
                     strcmp(r->path, rows[i].path) == 0,
                 "row %zu: %s gave host_kind=%d host=\"%s\" port=%d path_kind=%d path=\"%s\"", i,
                 rows[i].match, r->host_kind, r->host, r->host_port, r->path_kind, r->path);
        config_free(cfg);
    }
}

/* ---- broken configs: every message names the path and the reason --------------------- */

/* A valid frame to break one piece at a time. */
#define LST(name, addr, cluster, extra)                                                            \
    "{'name':'" name "','address':'" addr "','routes':[{'match':{},'cluster':'" cluster            \
    "'}]" extra "}"
#define LMAIN(extra) LST("main", "127.0.0.1:15001", "web", extra)
#define CL(name, eps, extra) "{'name':'" name "','endpoints':[" eps "]" extra "}"
#define CWEB(extra) CL("web", "'127.0.0.1:8081'", extra)
#define CFG(top, listeners, clusters)                                                              \
    "{" top "'listeners':[" listeners "],'clusters':[" clusters "]}"
#define EP(eps) CFG("", LMAIN(""), CL("web", eps, ""))
#define TCPL(extra) "{'name':'db','address':'127.0.0.1:15002','protocol':'tcp'" extra "}"
#define ROUTE(route)                                                                               \
    CFG("", "{'name':'main','address':'127.0.0.1:15001','routes':[" route "]}", CWEB(""))
#define MATCH(m) ROUTE("{'match':" m ",'cluster':'web'}")
#define DNSC(d) CFG("", LMAIN(""), "{'name':'web','dns':{" d "}}")
#define DNSR(d) CFG("'dns':{" d "},", LMAIN(""), CWEB(""))
#define L62 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define LB(extra) CFG("", LMAIN(""), CWEB(",'lb_policy':'maglev'," extra))
#define HC(x) CFG("", LMAIN(""), CWEB(",'health_check':{" x "}"))
#define OD(x) CFG("", LMAIN(""), CWEB(",'outlier_detection':{" x "}"))
#define K8C(k, extra) CFG("", LMAIN(""), "{'name':'web','kubernetes':{" k "}" extra "}")
#define K8S(k) CFG("'kubernetes':{" k "},", LMAIN(""), CWEB(""))

static const struct {
    const char *json;
    const char *expect; /* a substring of the one message: "x.json: <path>: <reason>" */
} broken[] = {
    /* top level */
    {"[]", "x.json: $: expected object, found array"},
    {"{'listeners':{},'clusters':[]}", "x.json: $.listeners: expected array, found object"},
    {"{'clusters':[" CWEB("") "]}", "x.json: $: missing required key \"listeners\""},
    {"{'listeners':[" LMAIN("") "]}", "x.json: $: missing required key \"clusters\""},
    {CFG("", "", CWEB("")), "x.json: $.listeners: must not be empty"},
    {CFG("'worker':2,", LMAIN(""), CWEB("")),
     "x.json: $: unknown key \"worker\"; known keys: admin, access_log, workers, drain_timeout, "
     "listeners, clusters"},
    {CFG("'workers':0,", LMAIN(""), CWEB("")), "x.json: $.workers: 0 out of range (1-64)"},
    {CFG("'workers':65,", LMAIN(""), CWEB("")), "x.json: $.workers: 65 out of range (1-64)"},
    {CFG("'workers':1.5,", LMAIN(""), CWEB("")),
     "x.json: $.workers: expected integer, found number"},
    {CFG("'max_connections':0,", LMAIN(""), CWEB("")),
     "x.json: $.max_connections: 0 out of range (1-10000000)"},
    {CFG("'max_connections':'many',", LMAIN(""), CWEB("")),
     "x.json: $.max_connections: expected integer, found string"},
    {CFG("", LMAIN(",'max_connections':10000001"), CWEB("")),
     "x.json: $.listeners[0].max_connections: 10000001 out of range (1-10000000)"},
    {CFG("'access_log':'yes',", LMAIN(""), CWEB("")),
     "x.json: $.access_log: expected boolean or object, found string"},
    {CFG("'drain_timeout':'forever',", LMAIN(""), CWEB("")),
     "x.json: $.drain_timeout: \"forever\" is not a duration (use e.g. \"250ms\", \"5s\")"},
    {CFG("'admin':'127.0.0.1:9901',", LMAIN(""), CWEB("")),
     "x.json: $.admin: expected object, found string"},
    {CFG("'admin':{'adress':'127.0.0.1:9901'},", LMAIN(""), CWEB("")),
     "x.json: $.admin: unknown key \"adress\"; known keys: address"},
    {CFG("'admin':{'address':'127.0.0.1:0'},", LMAIN(""), CWEB("")),
     "x.json: $.admin.address: port 0 out of range (1-65535)"},
    {CFG("'admin':{'address':'localhost:9901'},", LMAIN(""), CWEB("")),
     "x.json: $.admin.address: \"localhost:9901\" is not an IP address; listen addresses take IP "
     "literals"},

    /* listeners */
    {CFG("", LMAIN(",'max_header':1"), CWEB("")),
     "x.json: $.listeners[0]: unknown key \"max_header\"; known keys: name, address, routes, "
     "max_header_bytes"},
    {CFG("", "{'address':'127.0.0.1:1','routes':[{'match':{},'cluster':'web'}]}", CWEB("")),
     "x.json: $.listeners[0]: missing required key \"name\""},
    {CFG("", "{'name':'main','routes':[{'match':{},'cluster':'web'}]}", CWEB("")),
     "x.json: $.listeners[0]: missing required key \"address\""},
    {CFG("", LST("main listener", "127.0.0.1:1", "web", ""), CWEB("")),
     "x.json: $.listeners[0].name: name \"main listener\" has invalid character ' '"},
    {CFG("", LST("", "127.0.0.1:1", "web", ""), CWEB("")),
     "x.json: $.listeners[0].name: name is empty"},
    {CFG("", LST("a\\nb", "127.0.0.1:1", "web", ""), CWEB("")),
     "x.json: $.listeners[0].name: name \"a\\u000ab\" has invalid character 0x0a"},
    {CFG("",
         LST("x123456789x123456789x123456789x123456789x123456789x123456789x123", "127.0.0.1:1",
             "web", ""),
         CWEB("")),
     "x.json: $.listeners[0].name: name \"x1234"},
    {CFG("", LST("main", "localhost:80", "web", ""), CWEB("")),
     "x.json: $.listeners[0].address: \"localhost:80\" is not an IP address"},
    {CFG("", LST("main", "127.0.0.1", "web", ""), CWEB("")),
     "x.json: $.listeners[0].address: \"127.0.0.1\" has no port"},
    {CFG("", LST("main", "127.0.0.1:9901", "web", ""), CWEB("")),
     "x.json: $.listeners[0].address: 127.0.0.1:9901 is also the admin address"},
    {CFG("", LMAIN("") "," LST("main", "127.0.0.1:15002", "web", ""), CWEB("")),
     "x.json: $.listeners[1].name: duplicate listener name \"main\" (also $.listeners[0])"},
    {CFG("", LMAIN("") "," LST("other", "127.0.0.1:15001", "web", ""), CWEB("")),
     "x.json: $.listeners[1].address: 127.0.0.1:15001 is already used by $.listeners[0] "
     "(\"main\")"},
    {CFG("", "{'name':'main','address':'127.0.0.1:1','routes':[]}", CWEB("")),
     "x.json: $.listeners[0].routes: must not be empty"},
    {CFG("", "{'name':'main','address':'127.0.0.1:1','routes':{}}", CWEB("")),
     "x.json: $.listeners[0].routes: expected array, found object"},
    {CFG("", LMAIN(",'max_header_bytes':100"), CWEB("")),
     "x.json: $.listeners[0].max_header_bytes: 100 out of range (1024-1048576)"},
    {CFG("", LMAIN(",'max_target_bytes':32"), CWEB("")),
     "x.json: $.listeners[0].max_target_bytes: 32 out of range (64-65536)"},
    {CFG("", LMAIN(",'max_headers':2000"), CWEB("")),
     "x.json: $.listeners[0].max_headers: 2000 out of range (8-1024)"},
    {CFG("", LMAIN(",'buffer_bytes':'64k'"), CWEB("")),
     "x.json: $.listeners[0].buffer_bytes: expected integer, found string"},
    {CFG("", LMAIN(",'buffer_bytes':1024"), CWEB("")),
     "x.json: $.listeners[0].buffer_bytes: 1024 out of range (4096-16777216)"},
    {CFG("", LMAIN(",'max_header_bytes':2048,'max_target_bytes':4096"), CWEB("")),
     "x.json: $.listeners[0].max_target_bytes: 4096 exceeds max_header_bytes (2048)"},
    {CFG("", LMAIN(",'header_timeout':'fast'"), CWEB("")),
     "x.json: $.listeners[0].header_timeout: \"fast\" is not a duration"},
    {CFG("", LMAIN(",'body_timeout':60"), CWEB("")),
     "x.json: $.listeners[0].body_timeout: 60 is not a duration; durations are strings with a "
     "unit (use e.g. \"250ms\", \"5s\")"},
    {CFG("", LMAIN(""), CWEB(",'body_timeout':'0s'")),
     "x.json: $.clusters[0].body_timeout: \"0s\" must be greater than zero"},
    {CFG("", LMAIN(",'idle_timeout':'0ms'"), CWEB("")),
     "x.json: $.listeners[0].idle_timeout: \"0ms\" must be greater than zero"},

    /* routes */
    {ROUTE("'web'"), "x.json: $.listeners[0].routes[0]: expected object, found string"},
    {ROUTE("{'cluster':'web'}"),
     "x.json: $.listeners[0].routes[0]: missing required key \"match\""},
    {ROUTE("{'match':{}}"), "x.json: $.listeners[0].routes[0]: missing required key \"cluster\""},
    {ROUTE("{'match':{},'cluster':'wbe'}"),
     "x.json: $.listeners[0].routes[0].cluster: unknown cluster \"wbe\"; defined clusters: web"},
    {CFG("",
         "{'name':'main','address':'127.0.0.1:1','routes':[{'match':{},'cluster':'web'},"
         "{'match':{},'cluster':'wbe'}]}",
         CWEB("") "," CL("api", "", "")),
     "x.json: $.listeners[0].routes[1].cluster: unknown cluster \"wbe\"; defined clusters: web, "
     "api"},
    {CFG("", LMAIN(""), ""),
     "x.json: $.listeners[0].routes[0].cluster: unknown cluster \"web\"; no clusters are "
     "defined"},
    {ROUTE("{'match':{},'cluster':'web','weight':1}"),
     "x.json: $.listeners[0].routes[0]: unknown key \"weight\"; known keys: match, cluster"},
    {MATCH("{'hots':'a.local'}"),
     "x.json: $.listeners[0].routes[0].match: unknown key \"hots\"; known keys: host, prefix, "
     "path"},
    {MATCH("[]"), "x.json: $.listeners[0].routes[0].match: expected object, found array"},
    {MATCH("{'prefix':'/a','path':'/b'}"),
     "x.json: $.listeners[0].routes[0].match: \"prefix\" and \"path\" exclude each other"},
    {MATCH("{'path':'/a','regex':'/b'}"),
     "x.json: $.listeners[0].routes[0].match: \"path\" and \"regex\" exclude each other"},
    {MATCH("{'regex':'/a('}"),
     "x.json: $.listeners[0].routes[0].match.regex: bad regex at offset 3: missing closing "
     "parenthesis"},
    {MATCH("{'regex':''}"),
     "x.json: $.listeners[0].routes[0].match.regex: \"\": expected a pattern of 1-1023 "
     "characters"},
    {MATCH("{'prefix':'v1/'}"),
     "x.json: $.listeners[0].routes[0].match.prefix: \"v1/\" must start with \"/\""},
    {MATCH("{'path':'/a b'}"),
     "x.json: $.listeners[0].routes[0].match.path: \"/a b\" contains a space or control"},
    {MATCH("{'host':'api_x.local'}"),
     "x.json: $.listeners[0].routes[0].match.host: host \"api_x.local\" has invalid character "
     "'_'"},
    {MATCH("{'host':'a.*.local'}"),
     "x.json: $.listeners[0].routes[0].match.host: host \"a.*.local\": \"*\" is only allowed "
     "alone or as a leading \"*.\""},
    {MATCH("{'host':'*.'}"),
     "x.json: $.listeners[0].routes[0].match.host: host \"*.\" needs a domain after \"*.\""},
    {MATCH("{'host':''}"), "x.json: $.listeners[0].routes[0].match.host: host \"\" is empty"},
    {MATCH("{'host':'a..local'}"),
     "x.json: $.listeners[0].routes[0].match.host: host \"a..local\" has an empty label"},
    {MATCH("{'host':'api.local:0'}"),
     "x.json: $.listeners[0].routes[0].match.host: host \"api.local:0\": port 0 out of range "
     "(1-65535)"},
    {MATCH("{'host':'api.local:http'}"),
     "x.json: $.listeners[0].routes[0].match.host: host \"api.local:http\": invalid port "
     "\"http\""},
    {MATCH("{'host':7}"), "x.json: $.listeners[0].routes[0].match.host: expected string, found "
                          "integer"},

    /* clusters */
    {CFG("", LMAIN(""), CWEB(",'endpoint':[]")),
     "x.json: $.clusters[0]: unknown key \"endpoint\"; known keys: name, lb_policy, endpoints, "
     "connect_timeout, response_timeout, idle_timeout, max_idle_per_endpoint"},
    {CFG("", LMAIN(""), "{'endpoints':[]}," CWEB("")),
     "x.json: $.clusters[0]: missing required key \"name\""},
    {CFG("", LMAIN(""), "{'name':'web'}"),
     "x.json: $.clusters[0]: missing required key \"endpoints\""},
    {CFG("", LMAIN(""), "{'name':'web','endpoints':'127.0.0.1:80'}"),
     "x.json: $.clusters[0].endpoints: expected array, found string"},
    {CFG("", LMAIN(""), "null," CWEB("")), "x.json: $.clusters[0]: expected object, found null"},
    {CFG("", LST("main", "127.0.0.1:1", "we b", ""), CL("we b", "", "")),
     "x.json: $.clusters[0].name: name \"we b\" has invalid character ' '"},
    {CFG("", LMAIN(""), CWEB("") "," CWEB("")),
     "x.json: $.clusters[1].name: duplicate cluster name \"web\" (also $.clusters[0])"},
    {CFG("", LMAIN(""), CWEB(",'lb_policy':'fastest'")),
     "x.json: $.clusters[0].lb_policy: unknown lb_policy \"fastest\"; known policies: "
     "round_robin, weighted_round_robin, least_request, least_response_time, random, ring_hash, "
     "maglev, ewma"},
    {CFG("", LMAIN(""), CWEB(",'connect_timeout':'250'")),
     "x.json: $.clusters[0].connect_timeout: \"250\" is not a duration (use e.g. \"250ms\", "
     "\"5s\")"},
    {CFG("", LMAIN(""), CWEB(",'response_timeout':5")),
     "x.json: $.clusters[0].response_timeout: 5 is not a duration; durations are strings with a "
     "unit"},
    {CFG("", LMAIN(""), CWEB(",'idle_timeout':'0s'")),
     "x.json: $.clusters[0].idle_timeout: \"0s\" must be greater than zero"},
    {CFG("", LMAIN(""), CWEB(",'connect_timeout':true")),
     "x.json: $.clusters[0].connect_timeout: expected a duration string (e.g. \"5s\"), found "
     "boolean"},
    {CFG("", LMAIN(""), CWEB(",'max_idle_per_endpoint':-1")),
     "x.json: $.clusters[0].max_idle_per_endpoint: -1 out of range (0-100000)"},
    {CFG("", LMAIN(""), CWEB(",'max_header_bytes':1023")),
     "x.json: $.clusters[0].max_header_bytes: 1023 out of range (1024-1048576)"},
    {CFG("", LMAIN(""), CWEB(",'max_headers':1025")),
     "x.json: $.clusters[0].max_headers: 1025 out of range (8-1024)"},
    {CFG("", LMAIN(""), CWEB(",'buffer_bytes':4095")),
     "x.json: $.clusters[0].buffer_bytes: 4095 out of range (4096-16777216)"},

    /* load balancing */
    {CFG("", LMAIN(""), CWEB(",'lb_policy':'ring_hash'")),
     "x.json: $.clusters[0]: lb_policy \"ring_hash\" needs \"hash_on\": {\"header\": NAME}, "
     "{\"cookie\": NAME}, {\"source_ip\": true} or {\"path\": true}"},
    {CFG("", LMAIN(""), CWEB(",'hash_on':{'header':'x-user'}")),
     "x.json: $.clusters[0].hash_on: hash_on is used only by ring_hash and maglev, not by "
     "lb_policy \"round_robin\""},
    {LB("'hash_on':'x-user'"), "x.json: $.clusters[0].hash_on: expected object, found string"},
    {LB("'hash_on':{}"),
     "x.json: $.clusters[0].hash_on: empty; give one of {\"header\": NAME}, {\"cookie\": NAME}, "
     "{\"source_ip\": true}, {\"path\": true}"},
    {LB("'hash_on':{'headers':'x'}"),
     "x.json: $.clusters[0].hash_on: unknown key \"headers\"; known keys: header, cookie, "
     "source_ip, path"},
    {LB("'hash_on':{'header':'x','cookie':'y'}"),
     "x.json: $.clusters[0].hash_on: \"header\" and \"cookie\" exclude each other; hash on one"},
    {LB("'hash_on':{'header':''}"), "x.json: $.clusters[0].hash_on.header: header name is empty"},
    {LB("'hash_on':{'header':'x user'}"),
     "x.json: $.clusters[0].hash_on.header: header name \"x user\" has invalid character ' '; "
     "names are tokens (RFC 9110 5.6.2)"},
    {LB("'hash_on':{'header':1}"),
     "x.json: $.clusters[0].hash_on.header: expected string, found integer"},
    {LB("'hash_on':{'cookie':'a;b'}"),
     "x.json: $.clusters[0].hash_on.cookie: cookie name \"a;b\" has invalid character ';'"},
    {LB("'hash_on':{'source_ip':false}"),
     "x.json: $.clusters[0].hash_on.source_ip: expected true, found false (write "
     "{\"source_ip\": true} to hash on it)"},
    {LB("'hash_on':{'path':'/x'}"),
     "x.json: $.clusters[0].hash_on.path: expected true, found string (write {\"path\": true} "
     "to hash on it)"},
    {CFG("", LMAIN(""), CWEB(",'hash_table_size':1024")),
     "x.json: $.clusters[0].hash_table_size: hash_table_size is used only by ring_hash and "
     "maglev, not by lb_policy \"round_robin\""},
    {LB("'hash_on':{'path':true},'hash_table_size':65536"),
     "x.json: $.clusters[0].hash_table_size: 65536 is not a prime; maglev needs a prime table "
     "size (nearest primes: 65521, 65537)"},
    {LB("'hash_on':{'path':true},'hash_table_size':1"),
     "x.json: $.clusters[0].hash_table_size: 1 out of range (2-5000011)"},
    {CFG("", LMAIN(""),
         CL("web", "'127.0.0.1:1','127.0.0.1:2','127.0.0.1:3'",
            ",'lb_policy':'maglev','hash_on':{'path':true},'hash_table_size':2")),
     "x.json: $.clusters[0].hash_table_size: table size 2 is smaller than the 3 endpoints; use a "
     "prime of at least 100 per endpoint, e.g. 307"},
    {CFG("", LMAIN(""),
         CWEB(",'lb_policy':'ring_hash','hash_on':{'path':true},'hash_table_size':0")),
     "x.json: $.clusters[0].hash_table_size: 0 out of range (1-65536)"},
    {CFG("", LMAIN(""),
         CWEB(",'lb_policy':'ring_hash','hash_on':{'path':true},'hash_table_size':'1k'")),
     "x.json: $.clusters[0].hash_table_size: expected integer, found string"},
    {CFG("", LMAIN(""), CWEB(",'ewma_decay':'10s'")),
     "x.json: $.clusters[0].ewma_decay: ewma_decay is used only by least_response_time, not by "
     "lb_policy \"round_robin\""},
    {CFG("", LMAIN(""), CWEB(",'lb_policy':'ewma','ewma_decay':'0s'")),
     "x.json: $.clusters[0].ewma_decay: \"0s\" must be greater than zero"},
    {CFG("", LMAIN(""), CWEB(",'slow_start':30")),
     "x.json: $.clusters[0].slow_start: 30 is not a duration; durations are strings with a unit"},
    {CFG("", LMAIN(""), CWEB(",'lb_policy':'random','slow_start':'soon'")),
     "x.json: $.clusters[0].slow_start: \"soon\" is not a duration"},

    /* endpoints */
    {EP("'127.0.0.1:70000'"), "x.json: $.clusters[0].endpoints[0]: port 70000 out of range "
                              "(1-65535)"},
    {EP("'127.0.0.1:0'"), "x.json: $.clusters[0].endpoints[0]: port 0 out of range (1-65535)"},
    {EP("'127.0.0.1:'"), "x.json: $.clusters[0].endpoints[0]: missing port after \":\""},
    {EP("'127.0.0.1:http'"), "x.json: $.clusters[0].endpoints[0]: invalid port \"http\""},
    {EP("'foo:80'"), "x.json: $.clusters[0].endpoints[0]: \"foo:80\" is not an IP address; "
                     "static endpoints take IP literals (use DNS discovery for names)"},
    {EP("'127.0.0.1'"), "x.json: $.clusters[0].endpoints[0]: \"127.0.0.1\" has no port"},
    {EP("'10.0.0.300:80'"),
     "x.json: $.clusters[0].endpoints[0]: \"10.0.0.300\" is not a valid IPv4 address"},
    {EP("'::1:80'"), "x.json: $.clusters[0].endpoints[0]: \"::1:80\": IPv6 addresses need "
                     "brackets"},
    {EP("'[::1]'"), "x.json: $.clusters[0].endpoints[0]: \"[::1]\" has no port"},
    {EP("'[::1:80'"), "x.json: $.clusters[0].endpoints[0]: \"[::1:80\": missing \"]\""},
    {EP("'[::g]:80'"), "x.json: $.clusters[0].endpoints[0]: \"::g\" is not an IPv6 address"},
    {EP("''"), "x.json: $.clusters[0].endpoints[0]: address is empty"},
    {EP("8081"), "x.json: $.clusters[0].endpoints[0]: expected string or object, found integer"},
    {EP("'127.0.0.1:8081','127.0.0.1:8082','127.0.0.1:8081'"),
     "x.json: $.clusters[0].endpoints[2]: duplicate endpoint 127.0.0.1:8081 (also "
     "$.clusters[0].endpoints[0])"},
    {EP("'[::1]:80',{'address':'[0:0::1]:80'}"),
     "x.json: $.clusters[0].endpoints[1]: duplicate endpoint [::1]:80 (also "
     "$.clusters[0].endpoints[0])"},
    {EP("{'weight':2}"), "x.json: $.clusters[0].endpoints[0]: missing required key \"address\""},
    {EP("{'address':'127.0.0.1:70000'}"),
     "x.json: $.clusters[0].endpoints[0].address: port 70000 out of range (1-65535)"},
    {EP("{'address':'127.0.0.1:1','weight':0}"),
     "x.json: $.clusters[0].endpoints[0].weight: 0 out of range (1-10000)"},
    {EP("{'address':'127.0.0.1:1','weight':10001}"),
     "x.json: $.clusters[0].endpoints[0].weight: 10001 out of range (1-10000)"},
    {EP("{'address':'127.0.0.1:1','priority':128}"),
     "x.json: $.clusters[0].endpoints[0].priority: 128 out of range (0-127)"},
    {EP("{'address':'127.0.0.1:1','zone':'x123456789x123456789x123456789x123456789x123456789"
        "x123456789x123'}"),
     "x.json: $.clusters[0].endpoints[0].zone: zone \"x1234"},
    {EP("{'address':'127.0.0.1:1','zone':1}"),
     "x.json: $.clusters[0].endpoints[0].zone: expected string, found integer"},
    {EP("{'address':'127.0.0.1:1','wieght':2}"),
     "x.json: $.clusters[0].endpoints[0]: unknown key \"wieght\"; known keys: address, weight, "
     "priority, zone"},

    /* DNS discovery */
    {CFG("", LMAIN(""), "{'name':'web','endpoints':[],'dns':{'name':'a.internal','port':80}}"),
     "x.json: $.clusters[0]: \"endpoints\" and \"dns\" exclude each other; use one"},
    {CFG("", LMAIN(""), "{'name':'web'}"),
     "x.json: $.clusters[0]: missing required key \"endpoints\" (or \"dns\" for endpoints from "
     "DNS)"},
    {CFG("", LMAIN(""), "{'name':'web','dns':'a.internal'}"),
     "x.json: $.clusters[0].dns: expected object, found string"},
    {DNSC("'port':80"), "x.json: $.clusters[0].dns: missing required key \"name\""},
    {DNSC("'name':'a.internal'"),
     "x.json: $.clusters[0].dns: missing required key \"port\" (the port of every address the "
     "name has)"},
    {DNSC("'name':'_http._tcp.a.internal','record':'SRV','port':80"),
     "x.json: $.clusters[0].dns.port: SRV records carry their own ports; remove \"port\""},
    {DNSC("'name':'a.internal','port':0"),
     "x.json: $.clusters[0].dns.port: 0 out of range (1-65535)"},
    {DNSC("'name':'a.internal','port':'80'"),
     "x.json: $.clusters[0].dns.port: expected integer, found string"},
    {DNSC("'name':'a.internal','port':80,'record':'MX'"),
     "x.json: $.clusters[0].dns.record: unknown record \"MX\"; known records: A, AAAA, A+AAAA, "
     "SRV"},
    {DNSC("'name':'a.internal','port':80,'record':'srv'"),
     "x.json: $.clusters[0].dns.record: unknown record \"srv\""},
    {DNSC("'name':'a.internal:80','port':80"),
     "x.json: $.clusters[0].dns.name: name \"a.internal:80\" has invalid character ':'; give the "
     "port in \"port\""},
    {DNSC("'name':'a b.internal','port':80"),
     "x.json: $.clusters[0].dns.name: name \"a b.internal\" has invalid character ' '; DNS names "
     "use A-Z a-z 0-9 - _ ."},
    {DNSC("'name':'10.0.0.1','port':80"),
     "x.json: $.clusters[0].dns.name: \"10.0.0.1\" is an IP address, not a name; list it in "
     "\"endpoints\" instead"},
    {DNSC("'name':'','port':80"), "x.json: $.clusters[0].dns.name: name is empty"},
    {DNSC("'name':'a..internal','port':80"),
     "x.json: $.clusters[0].dns.name: name \"a..internal\" has an empty label"},
    {DNSC("'name':'.internal','port':80"),
     "x.json: $.clusters[0].dns.name: name \".internal\" has an empty label"},
    {DNSC("'name':'" L62 "xx.internal','port':80"),
     "x.json: $.clusters[0].dns.name: name \"xxxxxxxxxx"},
    {DNSC("'name':'" L62 "." L62 "." L62 "." L62 ".xx','port':80"), "(254 characters, max 253)"},
    {DNSC("'name':7,'port':80"), "x.json: $.clusters[0].dns.name: expected string, found integer"},
    {DNSC("'name':'a.internal','port':80,'min_refresh':'50ms'"),
     "x.json: $.clusters[0].dns.min_refresh: 50ms is below 100ms; refreshing that often floods "
     "the resolver"},
    {DNSC("'name':'a.internal','port':80,'min_refresh':'10s','max_refresh':'5s'"),
     "x.json: $.clusters[0].dns.max_refresh: 5s is less than min_refresh (10s)"},
    {DNSC("'name':'a.internal','port':80,'max_refresh':'0s'"),
     "x.json: $.clusters[0].dns.max_refresh: \"0s\" must be greater than zero"},
    {DNSC("'name':'a.internal','port':80,'hold':'soon'"),
     "x.json: $.clusters[0].dns.hold: \"soon\" is not a duration"},
    {DNSC("'name':'a.internal','port':80,'hold':30"),
     "x.json: $.clusters[0].dns.hold: 30 is not a duration; durations are strings with a unit"},
    {DNSC("'name':'a.internal','port':80,'ttl':5"),
     "x.json: $.clusters[0].dns: unknown key \"ttl\"; known keys: name, port, record, "
     "min_refresh, max_refresh, hold"},
    {DNSR("'resolvers':[]"),
     "x.json: $.dns.resolvers: must not be empty; leave \"resolvers\" out to use the servers of "
     "/etc/resolv.conf"},
    {DNSR("'resolvers':'127.0.0.1:53'"), "x.json: $.dns.resolvers: expected array, found string"},
    {DNSR("'resolvers':['127.0.0.1']"), "x.json: $.dns.resolvers[0]: \"127.0.0.1\" has no port"},
    {DNSR("'resolvers':['ns1.internal:53']"),
     "x.json: $.dns.resolvers[0]: \"ns1.internal:53\" is not an IP address"},
    {DNSR("'resolvers':[53]"), "x.json: $.dns.resolvers[0]: expected string, found integer"},
    {DNSR("'resolvers':['127.0.0.1:53','[::1]:53','127.0.0.1:053']"),
     "x.json: $.dns.resolvers[2]: duplicate resolver \"127.0.0.1:53\" (also $.dns.resolvers[0])"},
    {DNSR("'resolvers':['10.0.0.1:53','10.0.0.2:53','10.0.0.3:53','10.0.0.4:53','10.0.0.5:53',"
          "'10.0.0.6:53','10.0.0.7:53','10.0.0.8:53','10.0.0.9:53']"),
     "x.json: $.dns.resolvers: 9 resolvers; at most 8 are allowed"},
    {DNSR("'tries':0"), "x.json: $.dns.tries: 0 out of range (1-10)"},
    {DNSR("'timeout':'0s'"), "x.json: $.dns.timeout: \"0s\" must be greater than zero"},
    {DNSR("'servers':[]"),
     "x.json: $.dns: unknown key \"servers\"; known keys: resolvers, timeout, tries"},
    {CFG("'dns':[],", LMAIN(""), CWEB("")), "x.json: $.dns: expected object, found array"},

    /* health checks and outlier detection */
    {HC("'interval':5"),
     "x.json: $.clusters[0].health_check.interval: 5 is not a duration; durations are strings "
     "with a unit"},
    {HC("'interval':'0s'"),
     "x.json: $.clusters[0].health_check.interval: \"0s\" must be greater than zero"},
    {HC("'timeout':'soon'"),
     "x.json: $.clusters[0].health_check.timeout: \"soon\" is not a duration"},
    {HC("'type':'udp'"),
     "x.json: $.clusters[0].health_check.type: unknown type \"udp\"; known types: http, tcp"},
    {HC("'path':'healthz'"),
     "x.json: $.clusters[0].health_check.path: \"healthz\" must start with \"/\""},
    {HC("'host':'a b'"),
     "x.json: $.clusters[0].health_check.host: host \"a b\" has a space, control or non-ASCII "
     "character"},
    {HC("'expected_statuses':['200-600']"),
     "x.json: $.clusters[0].health_check.expected_statuses[0]: \"200-600\": status codes are "
     "100-599"},
    {HC("'expected_statuses':[200,'399-200']"),
     "x.json: $.clusters[0].health_check.expected_statuses[1]: \"399-200\" is reversed; write "
     "the lower code first (\"200-399\")"},
    {HC("'expected_statuses':['2xx']"),
     "x.json: $.clusters[0].health_check.expected_statuses[0]: \"2xx\" is not a status code or "
     "range (use e.g. \"200\" or \"200-399\")"},
    {HC("'expected_statuses':[]"),
     "x.json: $.clusters[0].health_check.expected_statuses: give 1 to 16 codes or ranges"},
    {HC("'expected_statuses':[true]"),
     "x.json: $.clusters[0].health_check.expected_statuses[0]: expected string or integer, found "
     "boolean"},
    {HC("'unhealthy_threshold':0"),
     "x.json: $.clusters[0].health_check.unhealthy_threshold: 0 out of range (1-1000)"},
    {HC("'healthy_threshold':1001"),
     "x.json: $.clusters[0].health_check.healthy_threshold: 1001 out of range (1-1000)"},
    {HC("'initial':'up'"),
     "x.json: $.clusters[0].health_check.initial: unknown initial state \"up\"; use \"healthy\""},
    {HC("'type':'tcp','path':'/x'"),
     "x.json: $.clusters[0].health_check.path: applies to http checks only; this check's type is "
     "\"tcp\""},
    {HC("'send':'PING'"),
     "x.json: $.clusters[0].health_check.send: applies to tcp checks only; this check's type is "
     "\"http\""},
    {HC("'service':'shop.Cart'"),
     "x.json: $.clusters[0].health_check.service: applies to grpc checks only; this check's type "
     "is \"http\""},
    {HC("'type':'grpc','service':1"),
     "x.json: $.clusters[0].health_check.service: expected string, found integer"},
    {HC("'type':'grpc','path':'/x'"),
     "x.json: $.clusters[0].health_check.path: applies to http checks only; this check's type is "
     "\"grpc\""},
    {HC("'type':'tcp','expect':''"),
     "x.json: $.clusters[0].health_check.expect: 0 bytes; give 1 to 255"},
    {HC("'intervall':'1s'"),
     "x.json: $.clusters[0].health_check: unknown key \"intervall\"; known keys: type, path, "
     "host, expected_statuses, interval"},
    {CFG("", LMAIN(""), CWEB(",'health_check':true")),
     "x.json: $.clusters[0].health_check: expected object, found boolean"},
    {OD("'consecutive_5xx':-1"),
     "x.json: $.clusters[0].outlier_detection.consecutive_5xx: -1 out of range (0-100000)"},
    {OD("'max_ejection_percent':101"),
     "x.json: $.clusters[0].outlier_detection.max_ejection_percent: 101 out of range (0-100)"},
    {OD("'base_ejection_time':'30s','max_ejection_time':'10s'"),
     "x.json: $.clusters[0].outlier_detection.max_ejection_time: 10s is shorter than "
     "base_ejection_time (30s)"},
    {OD("'base_ejection_time':30"),
     "x.json: $.clusters[0].outlier_detection.base_ejection_time: 30 is not a duration"},
    {OD("'interval':'0ms'"),
     "x.json: $.clusters[0].outlier_detection.interval: \"0ms\" must be greater than zero"},
    {OD("'consecutive_errors':5"),
     "x.json: $.clusters[0].outlier_detection: unknown key \"consecutive_errors\"; known keys: "
     "consecutive_5xx, consecutive_gateway_failure"},

    /* kubernetes */
    {K8C("'service':'web','port':'http'", ",'endpoints':[]"),
     "x.json: $.clusters[0]: \"kubernetes\" excludes \"endpoints\" and \"dns\"; use one source"},
    {K8C("'port':'http'", ""),
     "x.json: $.clusters[0].kubernetes: missing required key \"service\""},
    {K8C("'service':'Web'", ""),
     "x.json: $.clusters[0].kubernetes.service: service \"Web\" has invalid character 'W'; "
     "Kubernetes names use a-z 0-9 and '-' inside"},
    {K8C("'service':'web-'", ""),
     "x.json: $.clusters[0].kubernetes.service: service \"web-\" has invalid character '-'"},
    {K8C("'service':'" L62 "xx'", ""),
     "x.json: $.clusters[0].kubernetes.service: service \"" L62 "xx\" must have 1-63 characters"},
    {K8C("'service':'web','namespace':'a_b'", ""),
     "x.json: $.clusters[0].kubernetes.namespace: namespace \"a_b\" has invalid character '_'"},
    {K8C("'service':'web','port':70000", ""),
     "x.json: $.clusters[0].kubernetes.port: 70000 out of range (1-65535)"},
    {K8C("'service':'web','port':'a-very-long-port-name'", ""),
     "x.json: $.clusters[0].kubernetes.port: port name \"a-very-long-port-name\" must have 1-15 "
     "characters"},
    {K8C("'service':'web','port':true", ""),
     "x.json: $.clusters[0].kubernetes.port: expected a port name (e.g. \"http\") or number, "
     "found boolean"},
    {K8C("'service':'web','labels':{}", ""),
     "x.json: $.clusters[0].kubernetes: unknown key \"labels\"; known keys: service, namespace, "
     "port"},
    {CFG("'kubernetes':[],", LMAIN(""), CWEB("")),
     "x.json: $.kubernetes: expected object, found array"},
    {K8S("'api_server':'http://10.0.0.1:6443'"),
     "x.json: $.kubernetes.api_server: \"http://10.0.0.1:6443\" must start with https:// (the API "
     "server is always reached over verified TLS)"},
    {K8S("'token_file':''"), "x.json: $.kubernetes.token_file: \"\" must have 1-1023 characters"},
    {K8S("'stall_timeout':90"),
     "x.json: $.kubernetes.stall_timeout: 90 is not a duration; durations are strings with a unit"},
    {K8S("'backoff':{'base':'1s','max':'100ms'}"),
     "x.json: $.kubernetes.backoff.max: 100ms is less than base (1s)"},
    {K8S("'max_line_bytes':100"),
     "x.json: $.kubernetes.max_line_bytes: 100 out of range (4096-268435456)"},
    {K8S("'page_size':0"), "x.json: $.kubernetes.page_size: 0 out of range (1-10000)"},
    {K8S("'http_routes':true"),
     "x.json: $.kubernetes.http_routes: applies HTTPRoutes to auto-discovered Services; set "
     "kubernetes.auto_discover too"},
    {K8S("'http_routes':'yes'"),
     "x.json: $.kubernetes.http_routes: expected boolean, found string"},
    {K8S("'http_routes_recheck':'0s'"),
     "x.json: $.kubernetes.http_routes_recheck: \"0s\" must be greater than zero"},
    {K8S("'http_routes_recheck':5"),
     "x.json: $.kubernetes.http_routes_recheck: 5 is not a duration; durations are strings "
     "with a unit"},
    {K8S("'http2':'on'"), "x.json: $.kubernetes.http2: expected boolean, found string"},
    {K8S("'cluster_domain':'cluster..local'"),
     "x.json: $.kubernetes.cluster_domain: name \"cluster..local\" has an empty label"},
    {K8S("'auto_discover':{}"), "x.json: $.kubernetes.auto_discover: missing required key "
                                "\"namespaces\" (a list, or \"all\")"},
    {K8S("'auto_discover':{'namespaces':'some'}"),
     "x.json: $.kubernetes.auto_discover.namespaces: expected a non-empty list of namespaces or "
     "\"all\""},
    {K8S("'auto_discover':{'namespaces':['shop','shop']}"),
     "x.json: $.kubernetes.auto_discover.namespaces[1]: duplicate namespace \"shop\""},
    {K8S("'auto_discover':{'namespaces':['Shop']}"),
     "x.json: $.kubernetes.auto_discover.namespaces[0]: namespace \"Shop\" has invalid character"},
    {K8S("'auto_discover':{'namespaces':'all','cluster':{'name':'x'}}"),
     "x.json: $.kubernetes.auto_discover.cluster: \"name\" is set by auto-discovery; remove it"},
    {K8S("'auto_discover':{'namespaces':'all','cluster':{'connect_timeout':'0s'}}"),
     "x.json: $.kubernetes.auto_discover.cluster.connect_timeout: \"0s\" must be greater than "
     "zero"},
    {CFG("", LMAIN(""), CWEB(",'max_requests_per_connection':-1")),
     "x.json: $.clusters[0].max_requests_per_connection: -1 out of range (0-1000000000)"},
    {CFG("", LMAIN(""), CWEB(",'tls':{'alpn':['h2']}")),
     "x.json: $.clusters[0].tls.alpn[0]: \"h2\" is offered by HTTP/2 connections themselves"},
    {CFG("", LMAIN(""), CWEB(",'protocol':'h2','tls':{'alpn':['h3']}")),
     "x.json: $.clusters[0].tls.alpn[0]: unknown protocol \"h3\" (known: \"h2\", \"http/1.1\")"},
    {CFG("", LMAIN(""),
         CWEB(",'tls':{'verify_subject_alt_name':['n0','n1','n2','n3','n4','n5','n6','n7','n8','n9'"
              ",'n10','n11','n12','n13','n14','n15','n16']}")),
     "x.json: $.clusters[0].tls.verify_subject_alt_name: at most 16 names"},
    {CFG("", LMAIN(""), CWEB(",'tls':{'verify_subject_alt_name':['spiffe://a*b']}")),
     "x.json: $.clusters[0].tls.verify_subject_alt_name[0]: \"spiffe://a*b\": '*' may only end a "
     "prefix, as in \"spiffe://domain/*\""},
    {CFG("", LMAIN(""), CWEB(",'tls':{'alpn':[]}")),
     "x.json: $.clusters[0].tls.alpn: give 1 to 4 protocols"},
    {CFG("", LMAIN(""), CWEB(",'tls':{'alpn':'http/1.1'}")),
     "x.json: $.clusters[0].tls.alpn: expected array, found string"},
    {K8S("'watch':true"),
     "x.json: $.kubernetes: unknown key \"watch\"; known keys: api_server, token_file, ca_file, "
     "namespace, cluster_domain, auto_discover"},
};

static void test_broken_configs_name_path_and_reason(void) {
    for (size_t i = 0; i < ARRAY_LEN(broken); i++) {
        pf_config *cfg = (pf_config *)1; /* must be reset to NULL on failure */
        pf_errlist errs = {0};
        int rc = config_load_string(sq(broken[i].json), "x.json", &cfg, &errs);
        PF_CHECK(rc == PF_EINVAL && cfg == NULL, "row %zu: rc=%d for %s", i, rc, broken[i].json);
        PF_CHECK(has_error(&errs, broken[i].expect),
                 "row %zu: no message contains\n      %s\n    got:%s", i, broken[i].expect,
                 joined(&errs));
        /* one mistake, one message: no cascades */
        PF_CHECK(errs.count == 1, "row %zu: expected one message, got:%s", i, joined(&errs));
        for (size_t j = 0; j < errs.count; j++)
            PF_CHECK(strncmp(errs.items[j], "x.json: $", 9) == 0 && !strchr(errs.items[j], '\n'),
                     "row %zu: message not \"<file>: <path>: ...\" on one line: %s", i,
                     errs.items[j]);
        if (rc == PF_OK)
            config_free(cfg);
        pf_errlist_free(&errs);
    }
}

static void test_all_errors_are_collected_in_one_run(void) {
    const char *json =
        sq("{'workers':0,"
           "'listeners':[{'name':'main','address':'127.0.0.1:15001',"
           "'routes':[{'match':{'prefix':'x'},'cluster':'wbe'}]}],"
           "'clusters':[{'name':'web','lb_policy':'fastest',"
           "'endpoints':['127.0.0.1:70000',{'address':'127.0.0.1:1','weight':0}]}]}");
    static const char *const expect[] = {
        "x.json: $.workers: 0 out of range (1-64)",
        "x.json: $.listeners[0].routes[0].match.prefix: \"x\" must start with \"/\"",
        "x.json: $.clusters[0].lb_policy: unknown lb_policy \"fastest\"",
        "x.json: $.clusters[0].endpoints[0]: port 70000 out of range (1-65535)",
        "x.json: $.clusters[0].endpoints[1].weight: 0 out of range (1-10000)",
        "x.json: $.listeners[0].routes[0].cluster: unknown cluster \"wbe\"; defined clusters: web",
    };
    pf_config *cfg = NULL;
    pf_errlist errs = {0};
    CU_ASSERT_EQUAL(config_load_string(json, "x.json", &cfg, &errs), PF_EINVAL);
    CU_ASSERT_PTR_NULL(cfg);
    PF_CHECK(errs.count == ARRAY_LEN(expect), "expected %zu messages, got:%s", ARRAY_LEN(expect),
             joined(&errs));
    /* in this order: top level, listeners, clusters, then cross-references */
    for (size_t i = 0; i < ARRAY_LEN(expect) && i < errs.count; i++)
        PF_CHECK(strstr(errs.items[i], expect[i]) != NULL, "message %zu: want %s, got:%s", i,
                 expect[i], joined(&errs));
    pf_errlist_free(&errs);
}

static void test_json_syntax_error_has_line_and_column(void) {
    pf_config *cfg = NULL;
    pf_errlist errs = {0};
    const char *json =
        "{\n  \"admin\": {\"address\": \"127.0.0.1:9901\"},\n  \"listeners\": [,]\n}";
    CU_ASSERT_EQUAL(config_load_string(json, "pilotfish.json", &cfg, &errs), PF_EINVAL);
    CU_ASSERT_PTR_NULL(cfg);
    CU_ASSERT_EQUAL_FATAL(errs.count, 1);
    PF_CHECK(strncmp(errs.items[0], "pilotfish.json:3:17: JSON syntax error: ", 40) == 0, "got %s",
             errs.items[0]);
    pf_errlist_free(&errs);

    /* jansson would keep the last of two equal keys; a silent overwrite hides typos */
    CU_ASSERT_EQUAL(config_load_string("{\"workers\": 1,\n\"workers\": 2}", "d.json", &cfg, &errs),
                    PF_EINVAL);
    CU_ASSERT_EQUAL_FATAL(errs.count, 1);
    PF_CHECK(strstr(errs.items[0], "d.json:2:") == errs.items[0] &&
                 strstr(errs.items[0], "duplicate object key"),
             "got %s", errs.items[0]);
    pf_errlist_free(&errs);

    CU_ASSERT_EQUAL(config_load_string("", "e.json", &cfg, &errs), PF_EINVAL);
    CU_ASSERT_EQUAL_FATAL(errs.count, 1);
    PF_CHECK(strstr(errs.items[0], "e.json:1:0: JSON syntax error: ") == errs.items[0], "got %s",
             errs.items[0]);
    pf_errlist_free(&errs);
}

static void test_errlist_may_be_null(void) {
    pf_config *cfg = NULL;
    CU_ASSERT_EQUAL(config_load_string("[]", "x.json", &cfg, NULL), PF_EINVAL);
    CU_ASSERT_PTR_NULL(cfg);
    CU_ASSERT_EQUAL(config_load_string(example_json, NULL, &cfg, NULL), PF_OK);
    CU_ASSERT_PTR_NOT_NULL(cfg);
    config_free(cfg);
}

/* ---- durations and addresses --------------------------------------------------------- */

static void test_duration_parse_and_format(void) {
    static const struct {
        const char *text;
        bool ok;
        uint64_t ms;
    } rows[] = {
        {"250ms", true, 250}, {"5s", true, 5000},  {"1m", true, 60000}, {"1h", true, 3600000},
        {"1.5s", true, 1500}, {".5s", true, 500},  {"1us", true, 1},    {"1500us", true, 2},
        {"0s", true, 0},      {"0ms", true, 0},    {"", false, 0},      {"250", false, 0},
        {"5 s", false, 0},    {"-1s", false, 0},   {"s", false, 0},     {"5sec", false, 0},
        {"1d", false, 0},     {"abc", false, 0},   {"5S", false, 0},    {" 5s", false, 0},
        {"5s ", false, 0},    {"1e20h", false, 0}, {"inf", false, 0},   {"ms", false, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        uint64_t ms = 12345;
        int rc = pf_duration_parse(rows[i].text, &ms);
        if (rows[i].ok)
            PF_CHECK(rc == PF_OK && ms == rows[i].ms, "\"%s\": rc=%d ms=%llu, want %llu",
                     rows[i].text, rc, (unsigned long long)ms, (unsigned long long)rows[i].ms);
        else
            PF_CHECK(rc == PF_EINVAL, "\"%s\" should be rejected, got %llu ms", rows[i].text,
                     (unsigned long long)ms);
    }

    static const struct {
        uint64_t ms;
        const char *text;
    } fmt[] = {{0, "0ms"},     {250, "250ms"}, {1500, "1500ms"}, {5000, "5s"},
               {90000, "90s"}, {60000, "1m"},  {3600000, "1h"},  {5400000, "90m"}};
    for (size_t i = 0; i < ARRAY_LEN(fmt); i++) {
        char buf[32];
        uint64_t back = 0;
        pf_duration_format(fmt[i].ms, buf, sizeof buf);
        PF_CHECK(strcmp(buf, fmt[i].text) == 0, "%llu ms: got \"%s\", want \"%s\"",
                 (unsigned long long)fmt[i].ms, buf, fmt[i].text);
        PF_CHECK(pf_duration_parse(buf, &back) == PF_OK && back == fmt[i].ms,
                 "\"%s\" does not parse back to %llu", buf, (unsigned long long)fmt[i].ms);
    }
}

static void test_sockaddr_parse(void) {
    static const struct {
        const char *text;
        int family;
        uint16_t port;
        const char *canonical;
    } good[] = {
        {"127.0.0.1:8081", AF_INET, 8081, "127.0.0.1:8081"},
        {"0.0.0.0:1", AF_INET, 1, "0.0.0.0:1"},
        {"10.1.2.3:65535", AF_INET, 65535, "10.1.2.3:65535"},
        {"127.0.0.1:080", AF_INET, 80, "127.0.0.1:80"},
        {"[::1]:8081", AF_INET6, 8081, "[::1]:8081"},
        {"[::]:80", AF_INET6, 80, "[::]:80"},
        {"[0:0:0:0:0:0:0:1]:80", AF_INET6, 80, "[::1]:80"},
        {"[FE80::A]:443", AF_INET6, 443, "[fe80::a]:443"},
        {"[::ffff:1.2.3.4]:80", AF_INET6, 80, "[::ffff:1.2.3.4]:80"},
    };
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        pf_sockaddr sa;
        pf_error err = {{0}};
        int rc = config_parse_sockaddr(good[i].text, &sa, &err);
        if (!PF_CHECK(rc == PF_OK, "\"%s\": %s", good[i].text, err.msg))
            continue;
        PF_CHECK(sa.ss.ss_family == good[i].family && port_of(&sa) == good[i].port &&
                     strcmp(sa.text, good[i].canonical) == 0 &&
                     sa.len == (good[i].family == AF_INET ? sizeof(struct sockaddr_in)
                                                          : sizeof(struct sockaddr_in6)),
                 "\"%s\": family=%d port=%u text=%s len=%u", good[i].text, sa.ss.ss_family,
                 port_of(&sa), sa.text, (unsigned)sa.len);
    }

    static const struct {
        const char *text;
        const char *expect;
    } bad[] = {
        {"", "address is empty"},
        {"127.0.0.1", "\"127.0.0.1\" has no port"},
        {"127.0.0.1:", "missing port after \":\""},
        {"127.0.0.1:0", "port 0 out of range (1-65535)"},
        {"127.0.0.1:70000", "port 70000 out of range (1-65535)"},
        {"127.0.0.1:99999999999999999999999", "port 99999999999999999999... out of range"},
        {"127.0.0.1:8o", "invalid port \"8o\""},
        {"127.0.0.1:-1", "invalid port \"-1\""},
        {"localhost:80", "\"localhost:80\" is not an IP address; use an IP literal"},
        {":80", "\":80\" is not an IP address"},
        {"1.2.3.4.5:80", "\"1.2.3.4.5\" is not a valid IPv4 address"},
        {"::1", "\"::1\": IPv6 addresses need brackets and a port"},
        {"[::1]", "\"[::1]\" has no port"},
        {"[::1", "missing \"]\""},
        {"[::1]x80", "expected \":\" and a port after \"]\""},
        {"[1.2.3.4]:80", "\"1.2.3.4\" is not an IPv6 address"},
        {"[fe80::1%eth0]:80", "is not an IPv6 address"},
        {"[1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc:dddd]:80", "is too long"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        pf_sockaddr sa;
        memset(&sa, 0x5a, sizeof sa);
        pf_error err = {{0}};
        int rc = config_parse_sockaddr(bad[i].text, &sa, &err);
        PF_CHECK(rc == PF_EINVAL && strstr(err.msg, bad[i].expect),
                 "\"%s\": rc=%d, message \"%s\" lacks \"%s\"", bad[i].text, rc, err.msg,
                 bad[i].expect);
        PF_CHECK(((unsigned char *)&sa)[0] == 0x5a, "\"%s\": output written on failure",
                 bad[i].text);
    }
}

/* ---- dump ---------------------------------------------------------------------------- */

static bool addr_eq(const pf_sockaddr *a, const pf_sockaddr *b) {
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0 && strcmp(a->text, b->text) == 0;
}

/* Every field except the source name, which says where the text came from. */
static bool config_eq(const pf_config *a, const pf_config *b) {
    if (!addr_eq(&a->admin_addr, &b->admin_addr) ||
        memcmp(&a->access_log, &b->access_log, sizeof a->access_log) != 0 ||
        a->workers != b->workers || a->drain_timeout_ms != b->drain_timeout_ms ||
        a->listener_count != b->listener_count || a->cluster_count != b->cluster_count)
        return false;
    for (size_t i = 0; i < a->listener_count; i++) {
        const pf_config_listener *x = &a->listeners[i], *y = &b->listeners[i];
        if (strcmp(x->name, y->name) || !addr_eq(&x->addr, &y->addr) ||
            x->route_count != y->route_count || x->max_header_bytes != y->max_header_bytes ||
            x->max_target_bytes != y->max_target_bytes || x->max_headers != y->max_headers ||
            x->buffer_bytes != y->buffer_bytes || x->header_timeout_ms != y->header_timeout_ms ||
            x->idle_timeout_ms != y->idle_timeout_ms || x->body_timeout_ms != y->body_timeout_ms)
            return false;
        for (size_t j = 0; j < x->route_count; j++) {
            const pf_config_route *p = &x->routes[j], *q = &y->routes[j];
            if (p->host_kind != q->host_kind || strcmp(p->host, q->host) ||
                p->host_port != q->host_port || p->path_kind != q->path_kind ||
                strcmp(p->path, q->path) || strcmp(p->cluster, q->cluster) ||
                p->cluster_index != q->cluster_index)
                return false;
        }
    }
    for (size_t i = 0; i < a->cluster_count; i++) {
        const pf_config_cluster *x = &a->clusters[i], *y = &b->clusters[i];
        if (strcmp(x->name, y->name) || x->lb_policy != y->lb_policy ||
            x->endpoint_count != y->endpoint_count ||
            x->connect_timeout_ms != y->connect_timeout_ms ||
            x->response_timeout_ms != y->response_timeout_ms ||
            x->body_timeout_ms != y->body_timeout_ms ||
            x->upstream_idle_timeout_ms != y->upstream_idle_timeout_ms ||
            x->max_idle_per_endpoint != y->max_idle_per_endpoint ||
            x->max_header_bytes != y->max_header_bytes || x->max_headers != y->max_headers ||
            x->buffer_bytes != y->buffer_bytes)
            return false;
        for (size_t j = 0; j < x->endpoint_count; j++) {
            const pf_config_endpoint *p = &x->endpoints[j], *q = &y->endpoints[j];
            if (!addr_eq(&p->addr, &q->addr) || p->weight != q->weight ||
                p->priority != q->priority || strcmp(p->zone, q->zone))
                return false;
        }
    }
    return true;
}

static void check_round_trip(const char *json) {
    pf_config *first = load_ok(json);
    CU_ASSERT_FATAL(first != NULL);
    char *dump = config_dump_json(first);
    CU_ASSERT_FATAL(dump != NULL);

    pf_config *second = NULL;
    pf_errlist errs = {0};
    int rc = config_load_string(dump, "dump.json", &second, &errs);
    PF_CHECK(rc == PF_OK, "dump does not load:%s\n%s", joined(&errs), dump);
    if (second) {
        PF_CHECK(config_eq(first, second), "dump loads to a different config:\n%s", dump);
        char *again = config_dump_json(second);
        PF_CHECK(again && strcmp(dump, again) == 0, "second dump differs:\n%s\n---\n%s", dump,
                 again ? again : "(null)");
        free(again);
    }
    pf_errlist_free(&errs);
    config_free(second);
    config_free(first);
    free(dump);
}

static void test_dump_round_trips(void) {
    check_round_trip(example_json);
    check_round_trip(
        sq("{'admin':{'address':'[::1]:9000'},'access_log':false,'workers':64,"
           "'drain_timeout':'0ms','max_connections':5000,"
           "'listeners':[{'name':'a','address':'[::]:8080','max_header_bytes':1048576,"
           "'max_connections':100,"
           "'max_target_bytes':65536,'max_headers':8,'buffer_bytes':16777216,"
           "'header_timeout':'1us','idle_timeout':'2h','body_timeout':'5m',"
           "'routes':[{'match':{'host':'*.Example.COM:8443','path':'/healthz'},'cluster':'b'},"
           "{'match':{'host':'*:81','prefix':'/x'},'cluster':'b'},"
           "{'match':{'host':'exact.local'},'cluster':'c'}]},"
           "{'name':'b','address':'127.0.0.1:8081','routes':[{'match':{},'cluster':'c'}]}],"
           "'clusters':[{'name':'b','lb_policy':'weighted_round_robin','connect_timeout':'1.5s',"
           "'response_timeout':'1h','idle_timeout':'90s','max_idle_per_endpoint':100000,"
           "'max_header_bytes':2048,'max_headers':1024,'buffer_bytes':4096,"
           "'endpoints':[{'address':'[::1]:81','weight':10000,'priority':127,'zone':'eu-1a'},"
           "'10.0.0.1:80']},{'name':'c','endpoints':[]}]}"));
}

static void test_health_options_are_taken_and_dumped(void) {
    static const char json[] =
        "{'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':[{'match':{},"
        "'cluster':'a'}]}],'clusters':["
        "{'name':'a','endpoints':['127.0.0.1:1'],'health_check':{'type':'http','path':'/ready?x=1',"
        "'host':'svc.local','expected_statuses':['200-299',204,'418'],'interval':'2s',"
        "'timeout':'250ms','jitter':'100ms','unhealthy_threshold':4,'healthy_threshold':1,"
        "'initial':'unhealthy'},'outlier_detection':{'consecutive_5xx':7,"
        "'consecutive_gateway_failure':0,'base_ejection_time':'10s','max_ejection_time':'1m',"
        "'max_ejection_percent':50,'interval':'500ms'}},"
        "{'name':'b','endpoints':['127.0.0.1:2'],'health_check':{'type':'tcp',"
        "'send':'PING\\r\\n','expect':'PONG'},"
        "'outlier_detection':{'base_ejection_time':'10m'}},"
        "{'name':'c','endpoints':['127.0.0.1:3']}]}";
    pf_config *cfg = load_ok(sq(json));
    CU_ASSERT_FATAL(cfg != NULL);
    const pf_config_health_check *a = &cfg->clusters[0].health_check;
    CU_ASSERT_EQUAL(a->type, PF_CHECK_HTTP);
    CU_ASSERT_STRING_EQUAL(a->path, "/ready?x=1");
    CU_ASSERT_STRING_EQUAL(a->host, "svc.local");
    CU_ASSERT_EQUAL_FATAL(a->expected_count, 3);
    CU_ASSERT(a->expected[0].lo == 200 && a->expected[0].hi == 299);
    CU_ASSERT(a->expected[1].lo == 204 && a->expected[1].hi == 204);
    CU_ASSERT(a->expected[2].lo == 418 && a->expected[2].hi == 418);
    CU_ASSERT_EQUAL(a->interval_ms, 2000);
    CU_ASSERT_EQUAL(a->timeout_ms, 250);
    CU_ASSERT_EQUAL(a->jitter_ms, 100);
    CU_ASSERT_EQUAL(a->unhealthy_threshold, 4);
    CU_ASSERT_EQUAL(a->healthy_threshold, 1);
    CU_ASSERT_FALSE(a->initial_healthy);
    const pf_config_outlier *ao = &cfg->clusters[0].outlier;
    CU_ASSERT_TRUE(ao->enabled);
    CU_ASSERT_EQUAL(ao->consecutive_5xx, 7);
    CU_ASSERT_EQUAL(ao->consecutive_gateway_failure, 0);
    CU_ASSERT_EQUAL(ao->base_ejection_time_ms, 10000);
    CU_ASSERT_EQUAL(ao->max_ejection_time_ms, 60000);
    CU_ASSERT_EQUAL(ao->max_ejection_percent, 50);
    CU_ASSERT_EQUAL(ao->interval_ms, 500);

    const pf_config_health_check *b = &cfg->clusters[1].health_check;
    CU_ASSERT_EQUAL(b->type, PF_CHECK_TCP);
    CU_ASSERT_EQUAL(b->send_len, 6);
    CU_ASSERT(memcmp(b->send, "PING\r\n", 6) == 0);
    CU_ASSERT_EQUAL(b->expect_len, 4);
    const pf_config_outlier *bo = &cfg->clusters[1].outlier;
    CU_ASSERT_EQUAL(bo->consecutive_5xx, PF_DEFAULT_CONSECUTIVE_5XX);
    CU_ASSERT_EQUAL(bo->consecutive_gateway_failure, PF_DEFAULT_CONSECUTIVE_GATEWAY_FAILURE);
    CU_ASSERT_EQUAL(bo->max_ejection_percent, PF_DEFAULT_MAX_EJECTION_PERCENT);
    /* an unset cap follows a base longer than the default cap */
    CU_ASSERT_EQUAL(bo->max_ejection_time_ms, 600000);

    CU_ASSERT_EQUAL(cfg->clusters[2].health_check.type, PF_CHECK_NONE);
    CU_ASSERT_FALSE(cfg->clusters[2].outlier.enabled);

    char *dump = config_dump_json(cfg);
    CU_ASSERT_FATAL(dump != NULL);
    static const char *const want[] = {
        "\"200-299\"",
        "\"204\"",
        "\"418\"",
        "\"initial\": \"unhealthy\"",
        "\"jitter\": \"100ms\"",
        "\"send\": \"PING\\r\\n\"",
        "\"max_ejection_time\": \"10m\"",
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++)
        PF_CHECK(strstr(dump, want[i]) != NULL, "dump lacks %s:\n%s", want[i], dump);
    free(dump);
    config_free(cfg);
    check_round_trip(sq(json));
}

static void test_dump_shows_effective_values(void) {
    pf_config *cfg = load_ok(example_json);
    CU_ASSERT_FATAL(cfg != NULL);
    char *dump = config_dump_json(cfg);
    CU_ASSERT_FATAL(dump != NULL);
    static const char *const want[] = {
        "\"address\": \"127.0.0.1:9901\"",
        "\"format\": \"json\"",
        "\"sample\": 1.0",
        "\"drain_timeout\": \"15s\"",
        "\"max_header_bytes\": 65536",
        "\"header_timeout\": \"10s\"",
        "\"idle_timeout\": \"1m\"",
        "\"host\": \"api.local\"",
        "\"prefix\": \"/v1/\"",
        "\"host\": \"*\"",
        "\"lb_policy\": \"round_robin\"",
        "\"connect_timeout\": \"250ms\"",
        "\"weight\": 2",
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++)
        PF_CHECK(strstr(dump, want[i]) != NULL, "dump lacks %s:\n%s", want[i], dump);
    PF_CHECK(strstr(dump, "\"workers\"") == NULL, "unset workers must not be dumped:\n%s", dump);
    free(dump);
    config_free(cfg);
    CU_ASSERT_PTR_NULL(config_dump_json(NULL));
}

/* ---- files --------------------------------------------------------------------------- */

static void test_load_file_missing_says_why(void) {
    pf_config *cfg = (pf_config *)1;
    pf_errlist errs = {0};
    CU_ASSERT_EQUAL(config_load_file("/nonexistent/pilotfish.json", &cfg, &errs), PF_EINVAL);
    CU_ASSERT_PTR_NULL(cfg);
    CU_ASSERT_EQUAL_FATAL(errs.count, 1);
    CU_ASSERT_STRING_EQUAL(errs.items[0],
                           "/nonexistent/pilotfish.json: cannot read: No such file or directory");
    pf_errlist_free(&errs);

    CU_ASSERT_EQUAL(config_load_file("/tmp", &cfg, &errs), PF_EINVAL);
    CU_ASSERT_EQUAL_FATAL(errs.count, 1);
    CU_ASSERT_STRING_EQUAL(errs.items[0], "/tmp: cannot read: Is a directory");
    pf_errlist_free(&errs);
}

static char *write_temp(const char *text) {
    char tmpl[] = "/tmp/pf_test_config_XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0)
        return NULL;
    size_t n = strlen(text);
    bool ok = write(fd, text, n) == (ssize_t)n;
    close(fd);
    if (!ok) {
        unlink(tmpl);
        return NULL;
    }
    return strdup(tmpl);
}

static void test_load_file_reads_a_real_file(void) {
    char *path = write_temp(example_json);
    CU_ASSERT_FATAL(path != NULL);
    pf_config *cfg = NULL;
    pf_errlist errs = {0};
    int rc = config_load_file(path, &cfg, &errs);
    PF_CHECK(rc == PF_OK && cfg, "rc=%d:%s", rc, joined(&errs));
    if (cfg) {
        CU_ASSERT_STRING_EQUAL(cfg->source, path);
        CU_ASSERT_EQUAL(cfg->cluster_count, 2);
    }
    config_free(cfg);
    pf_errlist_free(&errs);
    unlink(path);
    free(path);

    /* messages from a file carry the path as given */
    path = write_temp(sq("{'listeners':[],'clusters':[]}"));
    CU_ASSERT_FATAL(path != NULL);
    CU_ASSERT_EQUAL(config_load_file(path, &cfg, &errs), PF_EINVAL);
    CU_ASSERT_EQUAL_FATAL(errs.count, 1);
    char want[256];
    snprintf(want, sizeof want, "%s: $.listeners: must not be empty", path);
    PF_CHECK(strncmp(errs.items[0], want, strlen(want)) == 0, "got %s", errs.items[0]);
    pf_errlist_free(&errs);
    unlink(path);
    free(path);
}

/* ---- load balancing ------------------------------------------------------------------ */

static bool lb_settings_eq(const pf_config_cluster *x, const pf_config_cluster *y) {
    return x->lb_policy == y->lb_policy && x->hash_on.kind == y->hash_on.kind &&
           strcmp(x->hash_on.name, y->hash_on.name) == 0 &&
           x->hash_table_size == y->hash_table_size && x->ewma_decay_ms == y->ewma_decay_ms &&
           x->slow_start_ms == y->slow_start_ms;
}

static void test_load_balancing_options_are_taken_and_dumped(void) {
    const char *json =
        sq("{'listeners':[{'name':'m','address':'127.0.0.1:1',"
           "'routes':[{'match':{},'cluster':'a'}]}],'clusters':["
           "{'name':'a','lb_policy':'least_request','slow_start':'30s','endpoints':[]},"
           "{'name':'b','lb_policy':'ewma','endpoints':[]},"
           "{'name':'c','lb_policy':'least_response_time','ewma_decay':'2s','endpoints':[]},"
           "{'name':'d','lb_policy':'random','endpoints':[]},"
           "{'name':'e','lb_policy':'ring_hash','hash_on':{'header':'X-User'},'endpoints':[]},"
           "{'name':'f','lb_policy':'ring_hash','hash_on':{'cookie':'SID'},"
           "'hash_table_size':160,'endpoints':[]},"
           "{'name':'g','lb_policy':'maglev','hash_on':{'source_ip':true},'endpoints':[]},"
           "{'name':'h','lb_policy':'maglev','hash_on':{'path':true},'hash_table_size':131071,"
           "'endpoints':['127.0.0.1:1']},"
           "{'name':'i','endpoints':[]}]}");
    static const struct {
        pf_lb_policy policy;
        pf_hash_on_kind kind;
        const char *name;
        uint32_t table;
        uint64_t decay_ms, slow_ms;
    } want[] = {
        {PF_LB_LEAST_REQUEST, PF_HASH_NONE, "", 0, 0, 30000},
        {PF_LB_LEAST_RESPONSE_TIME, PF_HASH_NONE, "", 0, PF_DEFAULT_EWMA_DECAY_MS, 0},
        {PF_LB_LEAST_RESPONSE_TIME, PF_HASH_NONE, "", 0, 2000, 0},
        {PF_LB_RANDOM, PF_HASH_NONE, "", 0, 0, 0},
        {PF_LB_RING_HASH, PF_HASH_HEADER, "x-user", PF_DEFAULT_RING_HASH_SIZE, 0, 0},
        {PF_LB_RING_HASH, PF_HASH_COOKIE, "SID", 160, 0, 0},
        {PF_LB_MAGLEV, PF_HASH_SOURCE_IP, "", PF_DEFAULT_MAGLEV_SIZE, 0, 0},
        {PF_LB_MAGLEV, PF_HASH_PATH, "", 131071, 0, 0},
        {PF_LB_ROUND_ROBIN, PF_HASH_NONE, "", 0, 0, 0},
    };
    pf_config *cfg = load_ok(json);
    CU_ASSERT_FATAL(cfg != NULL);
    CU_ASSERT_EQUAL_FATAL(cfg->cluster_count, ARRAY_LEN(want));
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        const pf_config_cluster *c = &cfg->clusters[i];
        PF_CHECK(c->lb_policy == want[i].policy && c->hash_on.kind == want[i].kind &&
                     strcmp(c->hash_on.name, want[i].name) == 0 &&
                     c->hash_table_size == want[i].table && c->ewma_decay_ms == want[i].decay_ms &&
                     c->slow_start_ms == want[i].slow_ms,
                 "cluster %s: policy %d hash %d \"%s\" table %u decay %llu slow %llu", c->name,
                 c->lb_policy, c->hash_on.kind, c->hash_on.name, c->hash_table_size,
                 (unsigned long long)c->ewma_decay_ms, (unsigned long long)c->slow_start_ms);
    }
    char *dump = config_dump_json(cfg);
    CU_ASSERT_FATAL(dump != NULL);
    static const char *const in_dump[] = {
        "\"lb_policy\": \"least_response_time\"",
        "\"ewma_decay\": \"10s\"",
        "\"hash_on\": {\n        \"header\": \"x-user\"",
        "\"hash_table_size\": 1024",
        "\"slow_start\": \"30s\"",
    };
    for (size_t i = 0; i < ARRAY_LEN(in_dump); i++)
        PF_CHECK(strstr(dump, in_dump[i]) != NULL, "dump lacks %s:\n%s", in_dump[i], dump);
    pf_config *again = load_ok(dump);
    CU_ASSERT_FATAL(again != NULL);
    for (size_t i = 0; i < cfg->cluster_count; i++)
        PF_CHECK(lb_settings_eq(&cfg->clusters[i], &again->clusters[i]),
                 "cluster %s: balancing settings differ after a dump round trip",
                 cfg->clusters[i].name);
    config_free(again);
    free(dump);
    config_free(cfg);
    check_round_trip(json);

    static const char *const names[] = {"round_robin",   "weighted_round_robin",
                                        "least_request", "least_response_time",
                                        "random",        "ring_hash",
                                        "maglev"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        CU_ASSERT_STRING_EQUAL(config_lb_policy_name((pf_lb_policy)i), names[i]);
}

static void test_dns_clusters_are_taken_and_dumped(void) {
    static const char json[] =
        "{'dns':{'resolvers':['127.0.0.1:5353','[::1]:53'],'timeout':'2s','tries':5},"
        "'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':[{'match':{},"
        "'cluster':'a'}]}],'clusters':["
        "{'name':'a','dns':{'name':'Backend.Internal.','port':8080,'record':'A+AAAA',"
        "'min_refresh':'500ms','max_refresh':'1m','hold':'0s'}},"
        "{'name':'b','dns':{'name':'_http._tcp.backend.internal','record':'SRV'}},"
        "{'name':'c','dns':{'name':'c.internal','port':80}},"
        "{'name':'d','endpoints':['127.0.0.1:1']}]}";
    pf_config *cfg = load_ok(sq(json));
    CU_ASSERT_FATAL(cfg != NULL);
    CU_ASSERT_EQUAL_FATAL(cfg->dns.resolver_count, 2);
    CU_ASSERT_STRING_EQUAL(cfg->dns.resolvers[0].text, "127.0.0.1:5353");
    CU_ASSERT_STRING_EQUAL(cfg->dns.resolvers[1].text, "[::1]:53");
    CU_ASSERT_EQUAL(cfg->dns.timeout_ms, 2000);
    CU_ASSERT_EQUAL(cfg->dns.tries, 5);
    const pf_config_cluster_dns *a = &cfg->clusters[0].dns, *b = &cfg->clusters[1].dns,
                                *c = &cfg->clusters[2].dns, *d = &cfg->clusters[3].dns;
    CU_ASSERT_STRING_EQUAL(a->name, "backend.internal."); /* lower-case, still absolute */
    CU_ASSERT_EQUAL(a->record, PF_DNS_RECORD_A_AAAA);
    CU_ASSERT_EQUAL(a->port, 8080);
    CU_ASSERT_EQUAL(a->min_refresh_ms, 500);
    CU_ASSERT_EQUAL(a->max_refresh_ms, 60000);
    CU_ASSERT_EQUAL(a->hold_ms, 0);
    CU_ASSERT_EQUAL(cfg->clusters[0].endpoint_count, 0);
    CU_ASSERT_EQUAL(b->record, PF_DNS_RECORD_SRV);
    CU_ASSERT_EQUAL(b->port, 0);
    CU_ASSERT_EQUAL(c->record, PF_DNS_RECORD_A);
    CU_ASSERT_EQUAL(c->min_refresh_ms, PF_DEFAULT_DNS_MIN_REFRESH_MS);
    CU_ASSERT_EQUAL(c->max_refresh_ms, PF_DEFAULT_DNS_MAX_REFRESH_MS);
    CU_ASSERT_EQUAL(c->hold_ms, PF_DEFAULT_DNS_HOLD_MS);
    CU_ASSERT_STRING_EQUAL(d->name, "");
    CU_ASSERT_STRING_EQUAL(config_dns_record_name(PF_DNS_RECORD_A_AAAA), "A+AAAA");
    CU_ASSERT_STRING_EQUAL(config_dns_record_name((pf_dns_record)9), "unknown");

    char *dump = config_dump_json(cfg);
    CU_ASSERT_FATAL(dump != NULL);
    static const char *const want[] = {
        "\"resolvers\": [\n      \"127.0.0.1:5353\",\n      \"[::1]:53\"\n    ]",
        "\"tries\": 5",
        "\"record\": \"A+AAAA\"",
        "\"hold\": \"0ms\"",
        "\"max_refresh\": \"5m\"",
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++)
        PF_CHECK(strstr(dump, want[i]) != NULL, "dump lacks %s:\n%s", want[i], dump);
    free(dump);
    config_free(cfg);
    check_round_trip(sq(json));

    /* without $.dns the resolver's defaults apply (servers from /etc/resolv.conf) */
    cfg = load_ok(example_json);
    CU_ASSERT_FATAL(cfg != NULL);
    CU_ASSERT_EQUAL(cfg->dns.resolver_count, 0);
    CU_ASSERT_EQUAL(cfg->dns.timeout_ms, PF_DEFAULT_DNS_TIMEOUT_MS);
    CU_ASSERT_EQUAL(cfg->dns.tries, PF_DEFAULT_DNS_TRIES);
    config_free(cfg);
}

static void test_kubernetes_config_is_taken_and_dumped(void) {
    static const char json[] =
        "{'kubernetes':{'api_server':'https://10.0.0.1:6443','token_file':'/t','ca_file':'/ca',"
        "'namespace':'shop','cluster_domain':'corp.example','stall_timeout':'30s',"
        "'backoff':{'base':'100ms','max':'5s'},'max_line_bytes':65536,'page_size':50,"
        "'http_routes':true,'http_routes_recheck':'2m','http2':false,'auto_discover':{'namespaces':"
        "['shop','default'],'max_clusters':64,'"
        "mode':'on_demand',"
        "'on_demand_timeout':'1s','negative_ttl':'3s','idle_timeout':'2m',"
        "'max_watches_per_namespace':8,"
        "'cluster':{'connect_timeout':'300ms','lb_policy':'least_request'}}},"
        "'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':[{'match':{},"
        "'cluster':'reviews'}]}],"
        "'clusters':[{'name':'reviews','kubernetes':{'service':'reviews','port':9080}},"
        "{'name':'ratings','kubernetes':{'service':'ratings','namespace':'default',"
        "'port':'http'}},{'name':'any','kubernetes':{'service':'any'}}]}";
    pf_config *cfg = load_ok(sq(json));
    CU_ASSERT_FATAL(cfg != NULL);
    const pf_config_kubernetes *k = &cfg->kubernetes;
    CU_ASSERT(k->enabled && k->auto_discover && !k->all_namespaces);
    CU_ASSERT_STRING_EQUAL(k->api_server, "https://10.0.0.1:6443");
    CU_ASSERT_STRING_EQUAL(k->namespace, "shop");
    CU_ASSERT_STRING_EQUAL(k->cluster_domain, "corp.example");
    CU_ASSERT_EQUAL(k->stall_timeout_ms, 30000);
    CU_ASSERT_EQUAL(k->backoff_base_ms, 100);
    CU_ASSERT_EQUAL(k->backoff_max_ms, 5000);
    CU_ASSERT_EQUAL(k->max_line_bytes, 65536);
    CU_ASSERT_EQUAL(k->max_list_bytes, PF_DEFAULT_K8S_MAX_LIST_BYTES);
    CU_ASSERT_EQUAL(k->page_size, 50);
    CU_ASSERT(k->http_routes);
    CU_ASSERT_EQUAL(k->http_routes_recheck_ms, 120000);
    CU_ASSERT(!k->http2);
    CU_ASSERT_EQUAL(k->namespace_count, 2);
    CU_ASSERT_STRING_EQUAL(k->namespaces[1], "default");
    CU_ASSERT_EQUAL(k->auto_max_clusters, 64);
    CU_ASSERT_EQUAL(k->auto_mode, PF_K8S_ON_DEMAND);
    CU_ASSERT_EQUAL(k->on_demand_timeout_ms, 1000);
    CU_ASSERT_EQUAL(k->negative_ttl_ms, 3000);
    CU_ASSERT_EQUAL(k->idle_timeout_ms, 120000);
    CU_ASSERT_EQUAL(k->max_watches_per_namespace, 8);
    CU_ASSERT_FATAL(k->auto_cluster != NULL);
    CU_ASSERT_EQUAL(k->auto_cluster->connect_timeout_ms, 300);
    CU_ASSERT_EQUAL(k->auto_cluster->lb_policy, PF_LB_LEAST_REQUEST);
    CU_ASSERT_STRING_EQUAL(cfg->clusters[0].kubernetes.service, "reviews");
    CU_ASSERT_EQUAL(cfg->clusters[0].kubernetes.port_number, 9080);
    CU_ASSERT_STRING_EQUAL(cfg->clusters[0].kubernetes.namespace, "");
    CU_ASSERT_STRING_EQUAL(cfg->clusters[1].kubernetes.port_name, "http");
    CU_ASSERT_STRING_EQUAL(cfg->clusters[1].kubernetes.namespace, "default");
    CU_ASSERT_EQUAL(cfg->clusters[2].kubernetes.port_number, 0);
    CU_ASSERT_EQUAL(cfg->clusters[0].endpoint_count, 0);
    config_free(cfg);
    check_round_trip(sq(json));
    check_round_trip(sq("{'kubernetes':{'auto_discover':{'namespaces':'all'}},"
                        "'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':"
                        "[{'match':{},'cluster':'web'}]}],'clusters':[{'name':'web',"
                        "'endpoints':[]}]}"));

    /* without $.kubernetes: in-cluster defaults, resolved at start */
    cfg = load_ok(example_json);
    CU_ASSERT_FATAL(cfg != NULL);
    CU_ASSERT(!cfg->kubernetes.enabled && !cfg->kubernetes.auto_discover);
    CU_ASSERT_STRING_EQUAL(cfg->kubernetes.cluster_domain, "cluster.local");
    CU_ASSERT_EQUAL(cfg->kubernetes.stall_timeout_ms, PF_DEFAULT_K8S_STALL_TIMEOUT_MS);
    CU_ASSERT_EQUAL(cfg->kubernetes.auto_max_clusters, PF_DEFAULT_K8S_AUTO_MAX_CLUSTERS);
    CU_ASSERT_EQUAL(cfg->kubernetes.auto_mode, PF_K8S_WATCH_ALL);
    CU_ASSERT(!cfg->kubernetes.http_routes);
    CU_ASSERT_EQUAL(cfg->kubernetes.http_routes_recheck_ms, PF_DEFAULT_K8S_HTTP_ROUTES_RECHECK_MS);
    CU_ASSERT(cfg->kubernetes.http2);
    CU_ASSERT_EQUAL(cfg->kubernetes.on_demand_timeout_ms, PF_DEFAULT_K8S_ON_DEMAND_TIMEOUT_MS);
    CU_ASSERT_EQUAL(cfg->kubernetes.negative_ttl_ms, PF_DEFAULT_K8S_NEGATIVE_TTL_MS);
    CU_ASSERT_EQUAL(cfg->kubernetes.idle_timeout_ms, PF_DEFAULT_K8S_IDLE_TIMEOUT_MS);
    CU_ASSERT_EQUAL(cfg->kubernetes.max_watches_per_namespace,
                    PF_DEFAULT_K8S_MAX_WATCHES_PER_NAMESPACE);
    config_free(cfg);
}

/* ---- every type path of the tables: wrong type, out of bounds, unknown key -------------- */

#define RT(r) CFG("", LMAIN(""), CWEB(",'retry':{" r "}"))
#define RR(r) ROUTE("{'match':{},'cluster':'web','retry':{" r "}}")

/* Each row's whole message, exactly: the type and bounds messages come from the schema
 * engine for every key of a type, so one row per type and object is the contract. */
static const struct {
    const char *json;
    const char *message;
} exact[] = {
    /* booleans */
    {CFG("", LMAIN(""), CWEB(",'zone_aware':1")),
     "x.json: $.clusters[0].zone_aware: expected boolean, found integer"},
    {RT("'retry_non_idempotent':'yes'"),
     "x.json: $.clusters[0].retry.retry_non_idempotent: expected boolean, found string"},
    {CFG("'access_log':null,", LMAIN(""), CWEB("")),
     "x.json: $.access_log: expected boolean or object, found null"},
    {CFG("'access_log':{'fields':['time','status','latency']},", LMAIN(""), CWEB("")),
     "x.json: $.access_log.fields[2]: unknown field \"latency\"; known fields: time, client, "
     "method, authority, path, status, bytes_in, bytes_out, duration_ms, cluster, upstream, "
     "request_id, trace_id, protocol, grpc_status"},
    {CFG("'access_log':{'fields':['status','path','status']},", LMAIN(""), CWEB("")),
     "x.json: $.access_log.fields[2]: field \"status\" is listed twice"},
    {CFG("'access_log':{'fields':[]},", LMAIN(""), CWEB("")),
     "x.json: $.access_log.fields: empty; list at least one field"},
    {CFG("'access_log':{'fields':'status'},", LMAIN(""), CWEB("")),
     "x.json: $.access_log.fields: expected array, found string"},
    {CFG("'access_log':{'fields':[7]},", LMAIN(""), CWEB("")),
     "x.json: $.access_log.fields[0]: expected string, found integer"},
    {CFG("'access_log':{'sample':1.5},", LMAIN(""), CWEB("")),
     "x.json: $.access_log.sample: 1.5 out of range (0.0-1.0: the share of requests logged)"},
    {CFG("'access_log':{'sample':-0.1},", LMAIN(""), CWEB("")),
     "x.json: $.access_log.sample: -0.1 out of range (0.0-1.0: the share of requests logged)"},
    {CFG("'access_log':{'sample':'all'},", LMAIN(""), CWEB("")),
     "x.json: $.access_log.sample: expected a number from 0.0 to 1.0, found string"},
    {CFG("'access_log':{'format':'combined'},", LMAIN(""), CWEB("")),
     "x.json: $.access_log.format: unknown format \"combined\"; known formats: json, text"},
    /* integers: type, both bounds */
    {CFG("'workers':99999999999,", LMAIN(""), CWEB("")),
     "x.json: $.workers: 99999999999 out of range (1-64)"},
    {CFG("'workers':-1,", LMAIN(""), CWEB("")), "x.json: $.workers: -1 out of range (1-64)"},
    {CFG("'workers':true,", LMAIN(""), CWEB("")),
     "x.json: $.workers: expected integer, found boolean"},
    {EP("{'address':'127.0.0.1:1','priority':1.0}"),
     "x.json: $.clusters[0].endpoints[0].priority: expected integer, found number"},
    {RT("'max_retries':11"), "x.json: $.clusters[0].retry.max_retries: 11 out of range (0-10)"},
    {RR("'buffer_bytes':16777217"),
     "x.json: $.listeners[0].routes[0].retry.buffer_bytes: 16777217 out of range (0-16777216)"},
    {CFG("", LMAIN(""), CWEB(",'retry_budget':{'percent':101}")),
     "x.json: $.clusters[0].retry_budget.percent: 101 out of range (0-100)"},
    {CFG("", LMAIN(""), CWEB(",'retry_budget':{'min_concurrency':100001}")),
     "x.json: $.clusters[0].retry_budget.min_concurrency: 100001 out of range (0-100000)"},
    {CFG("", LMAIN(""), CWEB(",'circuit_breakers':{'max_connections':0}")),
     "x.json: $.clusters[0].circuit_breakers.max_connections: 0 out of range (1-1000000)"},
    {CFG("", LMAIN(""), CWEB(",'circuit_breakers':{'max_retries':1000001}")),
     "x.json: $.clusters[0].circuit_breakers.max_retries: 1000001 out of range (0-1000000)"},
    {CFG("", LMAIN(""), CWEB(",'panic_threshold':'50%'")),
     "x.json: $.clusters[0].panic_threshold: expected integer, found string"},
    {HC("'healthy_threshold':0"),
     "x.json: $.clusters[0].health_check.healthy_threshold: 0 out of range (1-1000)"},
    {OD("'consecutive_gateway_failure':100001"),
     "x.json: $.clusters[0].outlier_detection.consecutive_gateway_failure: 100001 out of range "
     "(0-100000)"},
    {DNSR("'tries':11"), "x.json: $.dns.tries: 11 out of range (1-10)"},
    {K8S("'max_list_bytes':65535"),
     "x.json: $.kubernetes.max_list_bytes: 65535 out of range (65536-1073741824)"},
    {K8S("'page_size':10001"), "x.json: $.kubernetes.page_size: 10001 out of range (1-10000)"},
    {K8C("'service':'web','port':0", ""),
     "x.json: $.clusters[0].kubernetes.port: 0 out of range (1-65535)"},
    /* durations: every wrong shape, zero where a positive one is needed */
    {CFG("'drain_timeout':1.5,", LMAIN(""), CWEB("")),
     "x.json: $.drain_timeout: 1.5 is not a duration; durations are strings with a unit (use "
     "e.g. \"250ms\", \"5s\")"},
    {CFG("'drain_timeout':null,", LMAIN(""), CWEB("")),
     "x.json: $.drain_timeout: expected a duration string (e.g. \"5s\"), found null"},
    {CFG("'drain_timeout':['5s'],", LMAIN(""), CWEB("")),
     "x.json: $.drain_timeout: expected a duration string (e.g. \"5s\"), found array"},
    {CFG("'drain_timeout':'-5s',", LMAIN(""), CWEB("")),
     "x.json: $.drain_timeout: \"-5s\" is not a duration (use e.g. \"250ms\", \"5s\")"},
    {RT("'per_try_timeout':'0s'"),
     "x.json: $.clusters[0].retry.per_try_timeout: \"0s\" must be greater than zero"},
    {RT("'backoff':{'base':'0ms'}"),
     "x.json: $.clusters[0].retry.backoff.base: \"0ms\" must be greater than zero"},
    {RT("'backoff':{'base':'1s','max':'10ms'}"),
     "x.json: $.clusters[0].retry.backoff: max (10ms) is less than base (1000ms)"},
    {ROUTE("{'match':{},'cluster':'web','timeout':'0s'}"),
     "x.json: $.listeners[0].routes[0].timeout: \"0s\" must be greater than zero"},
    {HC("'jitter':'-1ms'"),
     "x.json: $.clusters[0].health_check.jitter: \"-1ms\" is not a duration (use e.g. \"250ms\", "
     "\"5s\")"},
    {OD("'max_ejection_time':'0s'"),
     "x.json: $.clusters[0].outlier_detection.max_ejection_time: \"0s\" must be greater than "
     "zero"},
    {DNSC("'name':'a.internal','port':80,'min_refresh':'0s'"),
     "x.json: $.clusters[0].dns.min_refresh: \"0s\" must be greater than zero"},
    {K8S("'request_timeout':'1 s'"),
     "x.json: $.kubernetes.request_timeout: \"1 s\" is not a duration (use e.g. \"250ms\", "
     "\"5s\")"},
    {K8S("'backoff':{'max':'0s'}"),
     "x.json: $.kubernetes.backoff.max: \"0s\" must be greater than zero"},
    /* strings: type, length */
    {K8S("'ca_file':7"), "x.json: $.kubernetes.ca_file: expected string, found integer"},
    {K8S("'api_server':''"), "x.json: $.kubernetes.api_server: \"\" must have 1-1023 characters"},
    {K8S("'namespace':''"), "x.json: $.kubernetes.namespace: namespace \"\" must have 1-63 "
                            "characters"},
    {CFG("'local_zone':5,", LMAIN(""), CWEB("")),
     "x.json: $.local_zone: expected string, found integer"},
    {ROUTE("{'match':{},'cluster':''}"),
     "x.json: $.listeners[0].routes[0].cluster: cluster name is empty"},
    {ROUTE("{'match':{},'cluster':5}"),
     "x.json: $.listeners[0].routes[0].cluster: expected string, found integer"},
    /* choices */
    {HC("'type':5"), "x.json: $.clusters[0].health_check.type: expected string, found integer"},
    {CFG("", LMAIN(""), CWEB(",'lb_policy':'Random'")),
     "x.json: $.clusters[0].lb_policy: unknown lb_policy \"Random\"; known policies: round_robin, "
     "weighted_round_robin, least_request, least_response_time, random, ring_hash, maglev, ewma"},
    {DNSC("'name':'a.internal','port':80,'record':1"),
     "x.json: $.clusters[0].dns.record: expected string, found integer"},
    {RT("'on':['timeout']"),
     "x.json: $.clusters[0].retry.on[0]: unknown retry condition \"timeout\"; known conditions: "
     "connect-failure, reset, gateway-error, 5xx, retriable-status-codes, cancelled, "
     "deadline-exceeded, resource-exhausted, unavailable, internal"},
    {RT("'on':'5xx'"), "x.json: $.clusters[0].retry.on: expected array, found string"},
    {RT("'on':['retriable-status-codes']"),
     "x.json: $.clusters[0].retry.status_codes: \"retriable-status-codes\" is in \"on\" but no "
     "status_codes are given"},
    {ROUTE("{'match':{},'cluster':'web','upgrades':['websocket','web socket']}"),
     "x.json: $.listeners[0].routes[0].upgrades[1]: expected a protocol name such as "
     "\"websocket\" (1-31 token characters)"},
    {ROUTE("{'match':{},'cluster':'web','upgrades':[7]}"),
     "x.json: $.listeners[0].routes[0].upgrades[0]: expected string, found integer"},
    {ROUTE("{'match':{},'cluster':'web','upgrades':['a','b','c','d','e','f','g','h','i']}"),
     "x.json: $.listeners[0].routes[0].upgrades: at most 8 upgrade protocols"},
    {ROUTE("{'match':{},'cluster':'web','tunnel_idle_timeout':'0s'}"),
     "x.json: $.listeners[0].routes[0].tunnel_idle_timeout: \"0s\" must be greater than zero"},
    {MATCH("{'headers':[{'name':'x-a','exact':'1','caseless':true}]}"),
     "x.json: $.listeners[0].routes[0].match.headers[0].caseless: unknown key; known: name, "
     "exact, prefix, suffix, present, regex, invert"},
    {MATCH("{'headers':[{'exact':'1'}]}"),
     "x.json: $.listeners[0].routes[0].match.headers[0]: \"name\" is required"},
    {MATCH("{'headers':[{'name':'x a','present':true}]}"),
     "x.json: $.listeners[0].routes[0].match.headers[0].name: expected a header name (1-127 "
     "token characters)"},
    {MATCH("{'query_params':[{'name':'q','present':false}]}"),
     "x.json: $.listeners[0].routes[0].match.query_params[0].present: only true makes sense; use "
     "\"invert\": true for absent"},
    {MATCH("{'headers':[{'name':'x','regex':'a{2,1}'}]}"),
     "x.json: $.listeners[0].routes[0].match.headers[0].regex: bad regex at offset 5: numbers "
     "out of order in {} quantifier"},
    {MATCH("{'method':'GET '}"), "x.json: $.listeners[0].routes[0].match.method: expected an "
                                 "upper-case method name such as \"GET\" (1-23 characters)"},
    {ROUTE("{'match':{},'cluster':'web','clusters':[{'name':'web','weight':1}]}"),
     "x.json: $.listeners[0].routes[0]: \"cluster\" and \"clusters\" exclude each other; use one"},
    {ROUTE("{'match':{},'clusters':[{'name':'web','weight':0}]}"),
     "x.json: $.listeners[0].routes[0].clusters: the weights add up to 0; at least one cluster "
     "needs a share"},
    {ROUTE("{'match':{},'clusters':[{'name':'web','weight':10001}]}"),
     "x.json: $.listeners[0].routes[0].clusters[0].weight: 10001 out of range (0-10000)"},
    {ROUTE("{'match':{},'clusters':[{'name':'web','weight':1},{'name':'nope','weight':1}]}"),
     "x.json: $.listeners[0].routes[0].clusters[1].name: unknown cluster \"nope\""},
    {ROUTE("{'match':{},'clusters':[{'name':'web'}]}"),
     "x.json: $.listeners[0].routes[0].clusters[0]: \"name\" and \"weight\" are required"},
    {ROUTE("{'match':{},'clusters':[]}"),
     "x.json: $.listeners[0].routes[0].clusters: expected 1-8 clusters, found 0"},
    {ROUTE("{'match':{},'clusters':[{'name':'web','weight':1,'request_headers':"
           "{'set':{'Host':'x'}}}]}"),
     "x.json: $.listeners[0].routes[0].clusters[0].request_headers.set.Host: \"host\" is a "
     "hop-by-hop, framing or Host header, which pilotfish writes itself"},
    {ROUTE("{'match':{},'clusters':[{'name':'web','weight':1,'labels':1}]}"),
     "x.json: $.listeners[0].routes[0].clusters[0].labels: unknown key; known: name, weight, "
     "request_headers, response_headers"},
    {ROUTE("{'match':{},'cluster':'web','sticky_on':{'header':'x-user'}}"),
     "x.json: $.listeners[0].routes[0].sticky_on: keeps a client on one cluster of \"clusters\", "
     "which this route does not have"},
    {ROUTE("{'match':{},'clusters':[{'name':'web','weight':1}],'sticky_on':{'header':'a',"
           "'cookie':'b'}}"),
     "x.json: $.listeners[0].routes[0].sticky_on: expected {\"header\": NAME} or {\"cookie\": "
     "NAME}"},
    {ROUTE("{'match':{},'clusters':[{'name':'web','weight':1}],'sticky_on':{'cookie':'a;b'}}"),
     "x.json: $.listeners[0].routes[0].sticky_on.cookie: cookie name \"a;b\" has invalid "
     "character ';'; names are tokens (RFC 9110 5.6.2)"},
    /* rewrites, redirects, direct responses, and what they exclude */
    {ROUTE("{'match':{},'cluster':'web','direct_response':{'status':200}}"),
     "x.json: $.listeners[0].routes[0]: \"cluster\" and \"direct_response\" exclude each other; "
     "use one"},
    {ROUTE("{'match':{},'redirect':{},'timeout':'1s'}"),
     "x.json: $.listeners[0].routes[0].timeout: a route with \"redirect\" sends nothing upstream; "
     "remove one of the two"},
    {ROUTE("{'match':{},'direct_response':{'status':200},'host_rewrite':'a'}"),
     "x.json: $.listeners[0].routes[0].host_rewrite: a route with \"direct_response\" sends "
     "nothing upstream; remove one of the two"},
    {ROUTE("{'match':{'path':'/a'},'cluster':'web','rewrite':{'prefix':'/b'}}"),
     "x.json: $.listeners[0].routes[0].rewrite.prefix: needs a prefix match (match.prefix); with "
     "match.path use \"full_path\""},
    {ROUTE("{'match':{},'cluster':'web','rewrite':{}}"),
     "x.json: $.listeners[0].routes[0].rewrite: expected one of \"prefix\" and \"full_path\", "
     "found neither"},
    {ROUTE("{'match':{},'cluster':'web','rewrite':{'full_path':'/a b'}}"),
     "x.json: $.listeners[0].routes[0].rewrite.full_path: expected a path starting with \"/\" "
     "(visible ASCII, no \"?\" or \"#\")"},
    {ROUTE("{'match':{},'redirect':{'status':305}}"),
     "x.json: $.listeners[0].routes[0].redirect.status: 305 is no redirect status; use 301, 302, "
     "303, 307 or 308"},
    {ROUTE("{'match':{},'redirect':{'status':200}}"),
     "x.json: $.listeners[0].routes[0].redirect.status: 200 out of range (301-308)"},
    {ROUTE("{'match':{},'redirect':{'host':'a/b'}}"),
     "x.json: $.listeners[0].routes[0].redirect.host: expected a host name or IP address"},
    {ROUTE("{'match':{},'redirect':{'path':'/a','prefix':'/b'}}"),
     "x.json: $.listeners[0].routes[0].redirect: \"path\" and \"prefix\" exclude each other; "
     "use one"},
    {ROUTE("{'match':{},'cluster':'web','rate_limit':{'requests_per_second':1,'key':7}}"),
     "x.json: $.listeners[0].routes[0].rate_limit.key: expected \"none\", \"client_ip\" or "
     "{\"header\": NAME}, found integer"},
    {ROUTE("{'match':{},'cluster':'web','rate_limit':{'requests_per_second':1,'key':"
           "{'header':'x','cookie':'y'}}}"),
     "x.json: $.listeners[0].routes[0].rate_limit.key: expected \"none\", \"client_ip\" or "
     "{\"header\": NAME}, found object"},
    {ROUTE("{'match':{},'cluster':'web','rate_limit':{'requests_per_second':1,'key':"
           "{'header':''}}}"),
     "x.json: $.listeners[0].routes[0].rate_limit.key.header: header name is empty"},
    {ROUTE("{'match':{},'cluster':'web','fault':{'header_control':false}}"),
     "x.json: $.listeners[0].routes[0].fault: injects nothing; give \"delay\", \"abort\" or "
     "\"header_control\": true"},
    {ROUTE("{'match':{},'direct_response':{'status':200},'fault':{'header_control':true}}"),
     "x.json: $.listeners[0].routes[0].fault: a route with \"direct_response\" sends nothing "
     "upstream; remove one of the two"},
    {ROUTE("{'match':{},'cluster':'web','mirror':{'cluster':'nope'}}"),
     "x.json: $.listeners[0].routes[0].mirror.cluster: unknown cluster \"nope\""},
    {ROUTE("{'match':{},'redirect':{},'mirror':{'cluster':'web'}}"),
     "x.json: $.listeners[0].routes[0].mirror: a route with \"redirect\" sends nothing upstream; "
     "remove one of the two"},
    {ROUTE("{'match':{},'direct_response':{'status':100}}"),
     "x.json: $.listeners[0].routes[0].direct_response.status: 100 out of range (200-599)"},
    {ROUTE("{'match':{},'direct_response':{'status':200,'content_type':'a\\nb'}}"),
     "x.json: $.listeners[0].routes[0].direct_response.content_type: expected a media type "
     "(visible ASCII)"},
    {RT("'status_codes':[404]"),
     "x.json: $.clusters[0].retry.status_codes[0]: 404 is not a retriable status (500-599)"},
    {HC("'initial':true"), "x.json: $.clusters[0].health_check.initial: expected string, found "
                           "boolean"},
    /* addresses */
    {CFG("'admin':{'address':9901},", LMAIN(""), CWEB("")),
     "x.json: $.admin.address: expected string, found integer"},
    {EP("{'address':['127.0.0.1:1']}"),
     "x.json: $.clusters[0].endpoints[0].address: expected string, found array"},
    /* objects: type, unknown key, required key */
    {RT("'backoff':'25ms'"), "x.json: $.clusters[0].retry.backoff: expected object, found string"},
    {CFG("", LMAIN(""), CWEB(",'retry':[]")),
     "x.json: $.clusters[0].retry: expected object, found array"},
    {ROUTE("{'match':{},'cluster':'web','retry':true}"),
     "x.json: $.listeners[0].routes[0].retry: expected object, found boolean"},
    {CFG("", LMAIN(""), CWEB(",'retry_budget':20")),
     "x.json: $.clusters[0].retry_budget: expected object, found integer"},
    {CFG("", LMAIN(""), CWEB(",'circuit_breakers':null")),
     "x.json: $.clusters[0].circuit_breakers: expected object, found null"},
    {CFG("", LMAIN(""), CWEB(",'outlier_detection':[]")),
     "x.json: $.clusters[0].outlier_detection: expected object, found array"},
    {K8S("'backoff':'1s'"), "x.json: $.kubernetes.backoff: expected object, found string"},
    {K8S("'auto_discover':true"),
     "x.json: $.kubernetes.auto_discover: expected object, found boolean"},
    {RT("'tries':3"),
     "x.json: $.clusters[0].retry: unknown key \"tries\"; known keys: on, status_codes, "
     "max_retries, per_try_timeout, backoff, retry_non_idempotent, buffer_bytes"},
    {RT("'on':['unavailable','UNAVAILABLE']"),
     "x.json: $.clusters[0].retry.on[1]: unknown retry condition \"UNAVAILABLE\"; known "
     "conditions: connect-failure, reset, gateway-error, 5xx, retriable-status-codes, cancelled, "
     "deadline-exceeded, resource-exhausted, unavailable, internal"},
    {CFG("", LMAIN(",'stream_idle_timeout':'0s'"), CWEB("")),
     "x.json: $.listeners[0].stream_idle_timeout: \"0s\" must be greater than zero"},
    {RR("'backoff':{'min':'1s'}"),
     "x.json: $.listeners[0].routes[0].retry.backoff: unknown key \"min\"; known keys: base, max"},
    {CFG("", LMAIN(""), CWEB(",'retry_budget':{'ratio':1}")),
     "x.json: $.clusters[0].retry_budget: unknown key \"ratio\"; known keys: percent, "
     "min_concurrency"},
    {CFG("", LMAIN(""), CWEB(",'circuit_breakers':{'max_conns':1}")),
     "x.json: $.clusters[0].circuit_breakers: unknown key \"max_conns\"; known keys: "
     "max_connections, max_pending_requests, max_requests, max_retries"},
    {K8S("'backoff':{'factor':2}"),
     "x.json: $.kubernetes.backoff: unknown key \"factor\"; known keys: base, max"},
    {K8S("'auto_discover':{'namespaces':'all','labels':{}}"),
     "x.json: $.kubernetes.auto_discover: unknown key \"labels\"; known keys: namespaces, "
     "cluster, max_clusters, mode, on_demand_timeout, negative_ttl, idle_timeout, "
     "max_watches_per_namespace"},
    {K8S("'auto_discover':{'namespaces':'all','mode':'lazy'}"),
     "x.json: $.kubernetes.auto_discover.mode: unknown mode \"lazy\"; known modes: watch_all, "
     "on_demand"},
    {K8S("'auto_discover':{'namespaces':'all','negative_ttl':'0s'}"),
     "x.json: $.kubernetes.auto_discover.negative_ttl: \"0s\" must be greater than zero"},
    {K8S("'auto_discover':{'namespaces':'all','max_clusters':0}"),
     "x.json: $.kubernetes.auto_discover.max_clusters: 0 out of range (1-8192)"},
    {K8S("'auto_discover':{'namespaces':'all','max_watches_per_namespace':0}"),
     "x.json: $.kubernetes.auto_discover.max_watches_per_namespace: 0 out of range (1-4096)"},
    {K8S("'auto_discover':{'namespaces':'all','cluster':[]}"),
     "x.json: $.kubernetes.auto_discover.cluster: expected object, found array"},
    {LB("'hash_on':5"), "x.json: $.clusters[0].hash_on: expected object, found integer"},
    {CFG("", LMAIN(""), CWEB(",'lb_policy':'ewma','ewma_decay':true")),
     "x.json: $.clusters[0].ewma_decay: expected a duration string (e.g. \"5s\"), found boolean"},
    {HC("'type':'tcp','send':5"),
     "x.json: $.clusters[0].health_check.send: expected string, found integer"},
    {LB("'hash_on':{'query':'q'}"),
     "x.json: $.clusters[0].hash_on: unknown key \"query\"; known keys: header, cookie, "
     "source_ip, path"},
    {DNSC("'port':80,'record':'A'"), "x.json: $.clusters[0].dns: missing required key \"name\""},
    /* arrays: type, element type */
    {CFG("", LMAIN(""), "{'name':'web','endpoints':{}}"),
     "x.json: $.clusters[0].endpoints: expected array, found object"},
    {"{'listeners':[7],'clusters':[]}", "x.json: $.listeners[0]: expected object, found integer"},
    {"{'listeners':[" LMAIN("") "],'clusters':'web'}",
     "x.json: $.clusters: expected array, found string"},
    {CFG("", LMAIN(""), CWEB(",'health_check':{'expected_statuses':'200'}")),
     "x.json: $.clusters[0].health_check.expected_statuses: expected array, found string"},
    {DNSR("'resolvers':['127.0.0.1:53',{}]"),
     "x.json: $.dns.resolvers[1]: expected string, found object"},
    /* tcp listeners: HTTP's keys, a route's HTTP keys, sni on http listeners */
    {CFG("", TCPL(",'cluster':'web','max_headers':8"), CWEB("")),
     "x.json: $.listeners[0].max_headers: an HTTP setting; a tcp listener reads no HTTP (remove "
     "it, or use protocol \"http\")"},
    {CFG("", TCPL(",'cluster':'web','tunnel_idle_timeout':'1s'"), CWEB("")),
     "x.json: $.listeners[0].tunnel_idle_timeout: an HTTP setting; a tcp listener reads no HTTP "
     "(remove it, or use protocol \"http\")"},
    {CFG("", TCPL(""), CWEB("")),
     "x.json: $.listeners[0]: a tcp listener needs \"cluster\", \"routes\" (by SNI) or both"},
    {CFG("", TCPL(",'routes':[{'match':{},'cluster':'web'}]"), CWEB("")),
     "x.json: $.listeners[0].routes[0].match: missing required key \"sni\" (a tcp route matches "
     "the TLS server name)"},
    {CFG("", TCPL(",'routes':[{'match':{'sni':'a.test','prefix':'/'},'cluster':'web'}]"), CWEB("")),
     "x.json: $.listeners[0].routes[0].match.prefix: not for tcp listeners: a tcp route matches "
     "the TLS server name only (\"sni\")"},
    {CFG("", TCPL(",'routes':[{'match':{'sni':'a.test'},'cluster':'web','timeout':'1s'}]"),
         CWEB("")),
     "x.json: $.listeners[0].routes[0].timeout: not for tcp listeners: a tcp route has "
     "\"match\": {\"sni\": ...} and \"cluster\""},
    {CFG("", TCPL(",'routes':[{'match':{'sni':'a.test:443'},'cluster':'web'}]"), CWEB("")),
     "x.json: $.listeners[0].routes[0].match.sni: server name \"a.test:443\" has a port; SNI "
     "carries a name only, e.g. \"db.local\""},
    {CFG("", TCPL(",'cluster':'nope'"), CWEB("")),
     "x.json: $.listeners[0].cluster: unknown cluster \"nope\""},
    {CFG("", "{'name':'db','address':'127.0.0.1:15002','protocol':'udp','cluster':'web'}",
         CWEB("")),
     "x.json: $.listeners[0].protocol: unknown protocol \"udp\"; known protocols: http, tcp"},
    {CFG("", LMAIN(",'cluster':'web'"), CWEB("")),
     "x.json: $.listeners[0].cluster: only tcp listeners have a cluster of their own; an http "
     "listener's routes name theirs (or set \"protocol\": \"tcp\")"},
    {ROUTE("{'match':{'sni':'a.test'},'cluster':'web'}"),
     "x.json: $.listeners[0].routes[0].match.sni: sni is matched on tcp listeners only; an http "
     "listener matches the Host with \"host\""},
};

/* A tcp listener: its cluster and SNI routes load, and its dump loads again (HTTP's keys
 * stay out of it). */
static void test_tcp_listener_loads_and_round_trips(void) {
    const char *json = sq(CFG("",
                              TCPL(",'cluster':'web','idle_timeout':'30m','routes':["
                                   "{'match':{'sni':'DB.test'},'cluster':'api'},"
                                   "{'match':{'sni':'*.cache.test'},'cluster':'web'}]"),
                              CWEB("") "," CL("api", "'127.0.0.1:8082'", "")));
    pf_config *cfg = load_ok(json);
    CU_ASSERT_FATAL(cfg != NULL);
    const pf_config_listener *l = &cfg->listeners[0];
    CU_ASSERT_EQUAL(l->protocol, PF_LISTEN_TCP);
    CU_ASSERT_STRING_EQUAL(l->cluster, "web");
    CU_ASSERT_EQUAL(l->cluster_index, 0);
    CU_ASSERT_EQUAL(l->idle_timeout_ms, 30u * 60u * 1000u);
    CU_ASSERT_FATAL(l->route_count == 2);
    CU_ASSERT(l->routes[0].has_sni && l->routes[0].sni_kind == PF_MATCH_HOST_EXACT);
    CU_ASSERT_STRING_EQUAL(l->routes[0].sni, "db.test");
    CU_ASSERT_EQUAL(l->routes[0].cluster_index, 1);
    CU_ASSERT(l->routes[1].sni_kind == PF_MATCH_HOST_SUFFIX);
    CU_ASSERT_STRING_EQUAL(l->routes[1].sni, ".cache.test");
    config_free(cfg);
    check_round_trip(json);
    check_round_trip(sq(CFG("", TCPL(",'cluster':'web'"), CWEB(""))));
}

static void test_every_type_path_has_its_exact_message(void) {
    for (size_t i = 0; i < ARRAY_LEN(exact); i++) {
        pf_config *cfg = NULL;
        pf_errlist errs = {0};
        int rc = config_load_string(sq(exact[i].json), "x.json", &cfg, &errs);
        PF_CHECK(rc == PF_EINVAL && cfg == NULL, "row %zu: rc=%d for %s", i, rc, exact[i].json);
        PF_CHECK(errs.count == 1 && strcmp(errs.items[0], exact[i].message) == 0,
                 "row %zu: want exactly\n      %s\n    got:%s", i, exact[i].message, joined(&errs));
        config_free(cfg);
        pf_errlist_free(&errs);
    }
}

/* The zero a few durations allow, and the bounds themselves, load. */
static void test_bounds_and_zero_durations_load(void) {
    pf_config *cfg = load_ok(
        sq(CFG("'workers':64,'drain_timeout':'0s',",
               LMAIN(",'max_headers':8,'max_header_bytes':"
                     "1048576,'max_target_bytes':64"),
               CL("web", "{'address':'127.0.0.1:1','weight':10000,'priority':127}",
                  ",'slow_start':'0s','panic_threshold':0,'max_idle_per_endpoint':100000,"
                  "'max_requests_per_connection':1000000000,"
                  "'retry':{'max_retries':0,'buffer_bytes':0},"
                  "'retry_budget':{'percent':100,'min_concurrency':0},"
                  "'circuit_breakers':{'max_connections':1000000,'max_retries':0},"
                  "'health_check':{'jitter':'0ms','healthy_threshold':1000},"
                  "'outlier_detection':{'consecutive_5xx':0,'max_ejection_percent':100}"))));
    CU_ASSERT_FATAL(cfg != NULL);
    const pf_config_cluster *c = &cfg->clusters[0];
    CU_ASSERT_EQUAL(cfg->workers, 64);
    CU_ASSERT_EQUAL(cfg->drain_timeout_ms, 0);
    CU_ASSERT_EQUAL(cfg->listeners[0].max_headers, 8);
    CU_ASSERT_EQUAL(cfg->listeners[0].max_header_bytes, 1048576);
    CU_ASSERT_EQUAL(c->endpoints[0].weight, 10000);
    CU_ASSERT_EQUAL(c->retry.max_retries, 0);
    CU_ASSERT_EQUAL(c->retry.buffer_bytes, 0);
    CU_ASSERT_EQUAL(c->budget_percent, 100);
    CU_ASSERT_EQUAL(c->breakers.max_connections, 1000000);
    CU_ASSERT_EQUAL(c->breakers.max_retries, 0);
    CU_ASSERT_EQUAL(c->health_check.jitter_ms, 0);
    CU_ASSERT_EQUAL(c->health_check.healthy_threshold, 1000);
    CU_ASSERT_EQUAL(c->outlier.consecutive_5xx, 0);
    config_free(cfg);
}

/* A config with every object of the schema present once, to break one key at a time. */
static const char every_object_json[] =
    "{'admin':{'address':'127.0.0.1:9901'},'dns':{'timeout':'1s'},'tracing':{'generate':true},"
    "'access_log':{'format':'text'},'stats':{'per_endpoint':false},"
    "'kubernetes':{'backoff':{'base':'1s'},'auto_discover':{'namespaces':'all'}},"
    "'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':[{'match':{'prefix':'/'},"
    "'cluster':'web','retry':{'backoff':{'base':'25ms'}},'rewrite':{'prefix':'/'},"
    "'rate_limit':{'requests_per_second':1},"
    "'fault':{'delay':{'duration':'1s'},'abort':{'status':503}},'mirror':{'cluster':'web'}},"
    "{'match':{'prefix':'/r'},'redirect':{}},{'match':{},'direct_response':{'status':200}}],"
    "'tls':{'certificates':[{'cert_file':'test/unit/data/tls.crt',"
    "'key_file':'test/unit/data/tls.key'}]}}],"
    "'clusters':[{'name':'web','endpoints':[{'address':'127.0.0.1:8081'}],"
    "'retry':{'backoff':{'base':'25ms'}},'retry_budget':{},'circuit_breakers':{},"
    "'health_check':{},'outlier_detection':{'latency':{}}},"
    "{'name':'d','dns':{'name':'d.internal','port':80},'tls':{'sni':'d.test'}},"
    "{'name':'k','kubernetes':{'service':'k'}}]}";

/* Where each object of the schema (its doc name) is in every_object_json. */
static const struct {
    const char *doc;
    const char *steps; /* object keys, and array indexes as digits, separated by "/" */
    const char *path;  /* the same as a JSON path */
} object_at[] = {
    {"", "", "$"},
    {"admin", "admin", "$.admin"},
    {"listeners[]", "listeners/0", "$.listeners[0]"},
    {"routes[]", "listeners/0/routes/0", "$.listeners[0].routes[0]"},
    {"listeners[].tls", "listeners/0/tls", "$.listeners[0].tls"},
    {"listeners[].tls.certificates[]", "listeners/0/tls/certificates/0",
     "$.listeners[0].tls.certificates[0]"},
    {"routes[].match", "listeners/0/routes/0/match", "$.listeners[0].routes[0].match"},
    {"retry", "listeners/0/routes/0/retry", "$.listeners[0].routes[0].retry"},
    {"routes[].rewrite", "listeners/0/routes/0/rewrite", "$.listeners[0].routes[0].rewrite"},
    {"routes[].redirect", "listeners/0/routes/1/redirect", "$.listeners[0].routes[1].redirect"},
    {"routes[].rate_limit", "listeners/0/routes/0/rate_limit",
     "$.listeners[0].routes[0].rate_limit"},
    {"routes[].fault", "listeners/0/routes/0/fault", "$.listeners[0].routes[0].fault"},
    {"routes[].mirror", "listeners/0/routes/0/mirror", "$.listeners[0].routes[0].mirror"},
    {"routes[].fault.delay", "listeners/0/routes/0/fault/delay",
     "$.listeners[0].routes[0].fault.delay"},
    {"routes[].fault.abort", "listeners/0/routes/0/fault/abort",
     "$.listeners[0].routes[0].fault.abort"},
    {"routes[].direct_response", "listeners/0/routes/2/direct_response",
     "$.listeners[0].routes[2].direct_response"},
    {"retry.backoff", "clusters/0/retry/backoff", "$.clusters[0].retry.backoff"},
    {"clusters[]", "clusters/0", "$.clusters[0]"},
    {"endpoints[]", "clusters/0/endpoints/0", "$.clusters[0].endpoints[0]"},
    {"retry_budget", "clusters/0/retry_budget", "$.clusters[0].retry_budget"},
    {"circuit_breakers", "clusters/0/circuit_breakers", "$.clusters[0].circuit_breakers"},
    {"health_check", "clusters/0/health_check", "$.clusters[0].health_check"},
    {"outlier_detection", "clusters/0/outlier_detection", "$.clusters[0].outlier_detection"},
    {"outlier_detection.latency", "clusters/0/outlier_detection/latency",
     "$.clusters[0].outlier_detection.latency"},
    {"clusters[].dns", "clusters/1/dns", "$.clusters[1].dns"},
    {"clusters[].tls", "clusters/1/tls", "$.clusters[1].tls"},
    {"clusters[].kubernetes", "clusters/2/kubernetes", "$.clusters[2].kubernetes"},
    {"dns", "dns", "$.dns"},
    {"kubernetes", "kubernetes", "$.kubernetes"},
    {"kubernetes.backoff", "kubernetes/backoff", "$.kubernetes.backoff"},
    {"kubernetes.auto_discover", "kubernetes/auto_discover", "$.kubernetes.auto_discover"},
    {"tracing", "tracing", "$.tracing"},
    {"access_log", "access_log", "$.access_log"},
    {"stats", "stats", "$.stats"},
};

static json_t *walk_steps(json_t *root, const char *steps) {
    char buf[128], *save = NULL;
    snprintf(buf, sizeof buf, "%s", steps);
    json_t *at = root;
    for (char *step = strtok_r(buf, "/", &save); at && step; step = strtok_r(NULL, "/", &save))
        at = (step[0] >= '0' && step[0] <= '9') ? json_array_get(at, (size_t)atoi(step))
                                                : json_object_get(at, step);
    return at;
}

/* Loads root as text and returns whether one of its messages is exactly want. */
static bool fails_with(json_t *root, const char *want, const pf_errlist **got) {
    static pf_errlist errs;
    pf_errlist_free(&errs);
    char *text = json_dumps(root, 0);
    pf_config *cfg = NULL;
    int rc = text ? config_load_string(text, "x.json", &cfg, &errs) : PF_ENOMEM;
    free(text);
    config_free(cfg);
    *got = &errs;
    if (rc != PF_EINVAL)
        return false;
    for (size_t i = 0; i < errs.count; i++)
        if (strcmp(errs.items[i], want) == 0)
            return true;
    return false;
}

/* Generated from the schema listing, so a key added later is covered at once: every key of
 * a checked type given a value of the wrong type has the type message at its path, and
 * every object refuses an unknown key with its known keys in table order. */
static void test_every_schema_key_refuses_the_wrong_type(void) {
    static const struct {
        const char *type;
        const char *bad_json;
        const char *message;
    } wrong[] = {
        {"boolean", "1", "expected boolean, found integer"},
        {"integer", "\"1\"", "expected integer, found string"},
        {"duration", "true", "expected a duration string (e.g. \"5s\"), found boolean"},
        {"string", "7", "expected string, found integer"},
        {"address", "7", "expected string, found integer"},
        {"object", "7", "expected object, found integer"},
        {"array", "7", "expected array, found integer"},
    };
    json_t *base = json_loads(sq(every_object_json), 0, NULL);
    CU_ASSERT_FATAL(base != NULL);
    pf_config *ok = load_ok(sq(every_object_json));
    CU_ASSERT_FATAL(ok != NULL);
    config_free(ok);
    char *schema_text = config_schema_json();
    json_t *schema = schema_text ? json_loads(schema_text, 0, NULL) : NULL;
    free(schema_text);
    CU_ASSERT_FATAL(json_is_array(schema));

    size_t i, keys_checked = 0;
    json_t *row;
    json_array_foreach(schema, i, row) {
        const char *path = json_string_value(json_object_get(row, "path"));
        const char *type = json_string_value(json_object_get(row, "type"));
        const char *dot = strrchr(path, '.');
        char doc[96];
        snprintf(doc, sizeof doc, "%.*s", dot ? (int)(dot - path) : 0, path);
        const char *key = dot ? dot + 1 : path;
        /* keys judged by another key first, in the same object: by lb_policy (round_robin
         * here) or by the check's type (http here); their type messages are in broken[] */
        static const char *const judged_first[] = {
            "clusters[].hash_on", "clusters[].hash_table_size", "clusters[].ewma_decay",
            "health_check.send",  "health_check.expect",        "health_check.service"};
        bool skip = false;
        for (size_t j = 0; j < ARRAY_LEN(judged_first); j++)
            skip = skip || strcmp(path, judged_first[j]) == 0;
        if (skip)
            continue;
        size_t o = 0, w = 0;
        while (o < ARRAY_LEN(object_at) && strcmp(object_at[o].doc, doc) != 0)
            o++;
        while (w < ARRAY_LEN(wrong) && strcmp(wrong[w].type, type) != 0)
            w++;
        if (!PF_CHECK(o < ARRAY_LEN(object_at), "`%s`: no place for object \"%s\" in the test",
                      path, doc) ||
            w == ARRAY_LEN(wrong)) /* custom values have their rows in exact[] */
            continue;
        json_t *root = json_deep_copy(base);
        json_object_set_new(walk_steps(root, object_at[o].steps), key,
                            json_loads(wrong[w].bad_json, JSON_DECODE_ANY, NULL));
        char want[512];
        if (strcmp(object_at[o].path, "$") == 0)
            snprintf(want, sizeof want, "x.json: $.%s: %s", key, wrong[w].message);
        else
            snprintf(want, sizeof want, "x.json: %s.%s: %s", object_at[o].path, key,
                     wrong[w].message);
        const pf_errlist *got = NULL;
        bool failed = fails_with(root, want, &got);
        PF_CHECK(failed, "`%s`: want\n      %s\n    got:%s", path, want, joined(got));
        keys_checked++;
        json_decref(root);
    }
    CU_ASSERT(keys_checked > 80);

    /* every integer with fixed bounds refuses one below and one above them */
    size_t bounds_checked = 0;
    json_array_foreach(schema, i, row) {
        json_t *min = json_object_get(row, "min"), *max = json_object_get(row, "max");
        const char *path = json_string_value(json_object_get(row, "path"));
        const char *dot = strrchr(path, '.');
        char doc[96];
        snprintf(doc, sizeof doc, "%.*s", dot ? (int)(dot - path) : 0, path);
        const char *key = dot ? dot + 1 : path;
        size_t o = 0;
        while (o < ARRAY_LEN(object_at) && strcmp(object_at[o].doc, doc) != 0)
            o++;
        if (!min || !max || o == ARRAY_LEN(object_at))
            continue;
        json_int_t outside[] = {json_integer_value(min) - 1, json_integer_value(max) + 1};
        for (size_t b = 0; b < ARRAY_LEN(outside); b++) {
            json_t *root = json_deep_copy(base);
            json_object_set_new(walk_steps(root, object_at[o].steps), key,
                                json_integer(outside[b]));
            char want[512];
            snprintf(want, sizeof want,
                     "x.json: %s%s%s: %" JSON_INTEGER_FORMAT " out of range (%" JSON_INTEGER_FORMAT
                     "-%" JSON_INTEGER_FORMAT ")",
                     object_at[o].path, ".", key, outside[b], json_integer_value(min),
                     json_integer_value(max));
            const pf_errlist *got = NULL;
            bool failed = fails_with(root, want, &got);
            PF_CHECK(failed, "`%s`: want\n      %s\n    got:%s", path, want, joined(got));
            bounds_checked++;
            json_decref(root);
        }
    }
    CU_ASSERT(bounds_checked >= 2 * 25);

    for (size_t o = 0; o < ARRAY_LEN(object_at); o++) {
        {
            char known[1024] = "";
            size_t len = 0;
            json_array_foreach(schema, i, row) {
                const char *path = json_string_value(json_object_get(row, "path"));
                size_t n = strlen(object_at[o].doc);
                const char *key = n ? path + n + 1 : path;
                if ((n && (strncmp(path, object_at[o].doc, n) != 0 || path[n] != '.')) ||
                    strchr(key, '.'))
                    continue;
                int k = snprintf(known + len, sizeof known - len, "%s%s", len ? ", " : "", key);
                len += k > 0 ? (size_t)k : 0;
            }
            json_t *root = json_deep_copy(base);
            json_object_set_new(walk_steps(root, object_at[o].steps), "bogus", json_true());
            const pf_errlist *got = NULL;
            char want[2048];
            snprintf(want, sizeof want, "x.json: %s: unknown key \"bogus\"; known keys: %s",
                     object_at[o].path, known);
            fails_with(root, want, &got);
            /* a long list is cut with ", ..." at 256 characters: compare up to the cut */
            bool found = false;
            for (size_t m = 0; m < got->count && !found; m++) {
                const char *msg = got->items[m];
                size_t cut = strlen(msg);
                if (cut > 3 && strcmp(msg + cut - 3, "...") == 0)
                    cut -= 3;
                found = strncmp(msg, want, cut) == 0 && cut > strlen(object_at[o].path) + 40;
            }
            PF_CHECK(found, "object %s: want\n      %s\n    got:%s", object_at[o].doc, want,
                     joined(got));
            json_decref(root);
        }
    }
    json_decref(schema);
    json_decref(base);
}

/* ---- diff ---------------------------------------------------------------------------- */

/* The base of every diff row: one listener, two routes, one static cluster. */
#define DIFF_BASE                                                                                  \
    "{'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':["                          \
    "{'match':{'prefix':'/api/'},'cluster':'api'},{'match':{},'cluster':'web'}]}],"                \
    "'clusters':[{'name':'web','endpoints':['127.0.0.1:8081',"                                     \
    "{'address':'127.0.0.1:8082','weight':2}]},{'name':'api','endpoints':['127.0.0.1:8083']}]}"
#define LMAIN_P "$.listeners[?@.name=='main']"
#define CWEB_P "$.clusters[?@.name=='web']"

static const struct {
    const char *what;
    const char *to;   /* the new config; the old one is DIFF_BASE */
    const char *want; /* "kind path" lines joined by "\n", in order; "" for no change */
} diff_rows[] = {
    {"identical", DIFF_BASE, ""},
    {"a default written out changes nothing",
     "{'listeners':[{'name':'main','address':'127.0.0.1:15001','idle_timeout':'60s','routes':["
     "{'match':{'prefix':'/api/','host':'*'},'cluster':'api'},{'match':{'prefix':'/'},"
     "'cluster':'web'}]}],'clusters':[{'name':'web','connect_timeout':'1s','endpoints':["
     "{'address':'127.0.0.1:8081','weight':1},{'address':'127.0.0.1:8082','weight':2}]},"
     "{'name':'api','lb_policy':'round_robin','endpoints':['127.0.0.1:8083']}],"
     "'access_log':true,'dns':{'tries':3}}",
     ""},
    {"clusters and endpoints in another order are the same",
     "{'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':["
     "{'match':{'prefix':'/api/'},'cluster':'api'},{'match':{},'cluster':'web'}]}],"
     "'clusters':[{'name':'api','endpoints':['127.0.0.1:8083']},{'name':'web','endpoints':["
     "{'address':'127.0.0.1:8082','weight':2},'127.0.0.1:8081']}]}",
     ""},
    {"a cluster timeout",
     "{'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':["
     "{'match':{'prefix':'/api/'},'cluster':'api'},{'match':{},'cluster':'web'}]}],"
     "'clusters':[{'name':'web','connect_timeout':'250ms','endpoints':['127.0.0.1:8081',"
     "{'address':'127.0.0.1:8082','weight':2}]},{'name':'api','endpoints':['127.0.0.1:8083']}]}",
     "changed " CWEB_P ".connect_timeout"},
    {"an endpoint's weight, one added, one removed",
     "{'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':["
     "{'match':{'prefix':'/api/'},'cluster':'api'},{'match':{},'cluster':'web'}]}],"
     "'clusters':[{'name':'web','endpoints':[{'address':'127.0.0.1:8081','weight':3},"
     "'127.0.0.1:8084']},{'name':'api','endpoints':['127.0.0.1:8083']}]}",
     "removed " CWEB_P ".endpoints[?@.address=='127.0.0.1:8082']\n"
     "changed " CWEB_P ".endpoints[?@.address=='127.0.0.1:8081'].weight\n"
     "added " CWEB_P ".endpoints[?@.address=='127.0.0.1:8084']"},
    {"a cluster added, one removed, a route moved to it",
     "{'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':["
     "{'match':{'prefix':'/api/'},'cluster':'v2'},{'match':{},'cluster':'web'}]}],"
     "'clusters':[{'name':'web','endpoints':['127.0.0.1:8081',"
     "{'address':'127.0.0.1:8082','weight':2}]},{'name':'v2','endpoints':['127.0.0.1:8085']}]}",
     "changed " LMAIN_P ".routes[0].cluster\n"
     "removed $.clusters[?@.name=='api']\n"
     "added $.clusters[?@.name=='v2']"},
    {"a route added, a match from prefix to path",
     "{'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':["
     "{'match':{'path':'/api/'},'cluster':'api'},{'match':{},'cluster':'web'},"
     "{'match':{'host':'x.local'},'cluster':'web','timeout':'5s'}]}],"
     "'clusters':[{'name':'web','endpoints':['127.0.0.1:8081',"
     "{'address':'127.0.0.1:8082','weight':2}]},{'name':'api','endpoints':['127.0.0.1:8083']}]}",
     "removed " LMAIN_P ".routes[0].match.prefix\n"
     "added " LMAIN_P ".routes[0].match.path\n"
     "added " LMAIN_P ".routes[2]"},
    {"a route removed",
     "{'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':["
     "{'match':{},'cluster':'web'}]}],"
     "'clusters':[{'name':'web','endpoints':['127.0.0.1:8081',"
     "{'address':'127.0.0.1:8082','weight':2}]},{'name':'api','endpoints':['127.0.0.1:8083']}]}",
     "changed " LMAIN_P ".routes[0].match.prefix\n"
     "changed " LMAIN_P ".routes[0].cluster\n"
     "removed " LMAIN_P ".routes[1]"},
    {"a listener's address, another listener added, top-level keys",
     "{'workers':2,'drain_timeout':'1s','listeners':[{'name':'main','address':'127.0.0.1:15002',"
     "'routes':[{'match':{'prefix':'/api/'},'cluster':'api'},{'match':{},'cluster':'web'}]},"
     "{'name':'edge','address':'127.0.0.1:15003','routes':[{'match':{},'cluster':'web'}]}],"
     "'clusters':[{'name':'web','endpoints':['127.0.0.1:8081',"
     "{'address':'127.0.0.1:8082','weight':2}]},{'name':'api','endpoints':['127.0.0.1:8083']}]}",
     "added $.workers\n"
     "changed $.drain_timeout\n"
     "changed " LMAIN_P ".address\n"
     "added $.listeners[?@.name=='edge']"},
    {"a retry policy, a health check and DNS in place of endpoints",
     "{'dns':{'resolvers':['127.0.0.1:53']},"
     "'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':["
     "{'match':{'prefix':'/api/'},'cluster':'api','retry':{'max_retries':1}},"
     "{'match':{},'cluster':'web'}]}],"
     "'clusters':[{'name':'web','endpoints':['127.0.0.1:8081',"
     "{'address':'127.0.0.1:8082','weight':2}],'retry':{'backoff':{'base':'50ms'}},"
     "'health_check':{'interval':'1s'}},{'name':'api','dns':{'name':'api.internal','port':80}}]}",
     "added " LMAIN_P ".routes[0].retry\n"
     "changed " CWEB_P ".retry.backoff.base\n"
     "added " CWEB_P ".health_check\n"
     "removed $.clusters[?@.name=='api'].endpoints\n"
     "added $.clusters[?@.name=='api'].dns\n"
     "added $.dns.resolvers"},
    {"kubernetes given",
     "{'kubernetes':{'namespace':'shop'},"
     "'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':["
     "{'match':{'prefix':'/api/'},'cluster':'api'},{'match':{},'cluster':'web'}]}],"
     "'clusters':[{'name':'web','endpoints':['127.0.0.1:8081',"
     "{'address':'127.0.0.1:8082','weight':2}]},{'name':'api','endpoints':['127.0.0.1:8083']}]}",
     "added $.kubernetes"},
};

static void test_diff_reports_what_changed_by_path(void) {
    pf_config *from = load_ok(sq(DIFF_BASE));
    CU_ASSERT_FATAL(from != NULL);
    for (size_t i = 0; i < ARRAY_LEN(diff_rows); i++) {
        pf_config *to = load_ok(sq(diff_rows[i].to));
        if (!PF_CHECK(to != NULL, "row %zu (%s) does not load", i, diff_rows[i].what))
            continue;
        pf_config_diff diff = {0};
        char got[4096] = "";
        size_t len = 0;
        CU_ASSERT_EQUAL(config_diff(from, to, &diff), PF_OK);
        for (size_t j = 0; j < diff.count && len < sizeof got; j++) {
            int n = snprintf(got + len, sizeof got - len, "%s%s %s", j ? "\n" : "",
                             config_change_kind_name(diff.items[j].kind), diff.items[j].path);
            len += n > 0 ? (size_t)n : 0;
        }
        PF_CHECK(strcmp(got, sq(diff_rows[i].want)) == 0,
                 "row %zu (%s):\n    want:\n%s\n    got:\n%s", i, diff_rows[i].what,
                 sq(diff_rows[i].want), got);
        /* the other way round, every added is removed and every removed added */
        pf_config_diff back = {0};
        CU_ASSERT_EQUAL(config_diff(to, from, &back), PF_OK);
        PF_CHECK(back.count == diff.count, "row %zu (%s): %zu changes forward, %zu back", i,
                 diff_rows[i].what, diff.count, back.count);
        static const pf_change_kind reverse[] = {[PF_CHANGE_ADDED] = PF_CHANGE_REMOVED,
                                                 [PF_CHANGE_REMOVED] = PF_CHANGE_ADDED,
                                                 [PF_CHANGE_CHANGED] = PF_CHANGE_CHANGED};
        for (size_t j = 0; j < back.count; j++) {
            size_t m = 0;
            while (m < diff.count && strcmp(diff.items[m].path, back.items[j].path) != 0)
                m++;
            PF_CHECK(m < diff.count && diff.items[m].kind == reverse[back.items[j].kind],
                     "row %zu (%s): %s %s back has no %s forward", i, diff_rows[i].what,
                     config_change_kind_name(back.items[j].kind), back.items[j].path,
                     config_change_kind_name(reverse[back.items[j].kind]));
        }
        config_diff_free(&back);
        config_diff_free(&diff);
        CU_ASSERT_EQUAL(diff.count, 0);
        config_free(to);
    }
    config_free(from);
    config_diff_free(NULL);
    CU_ASSERT_STRING_EQUAL(config_change_kind_name(PF_CHANGE_CHANGED), "changed");
}

/* A DNS cluster made at run time starts from the schema's defaults, as a written one. */
static void test_cluster_dns_defaults_are_the_tables(void) {
    pf_config_cluster_dns d;
    memset(&d, 0x5a, sizeof d);
    config_cluster_dns_defaults(&d);
    CU_ASSERT_STRING_EQUAL(d.name, "");
    CU_ASSERT_EQUAL(d.record, PF_DNS_RECORD_A);
    CU_ASSERT_EQUAL(d.port, 0x5a5a); /* not a table default: the caller sets it */
    CU_ASSERT_EQUAL(d.min_refresh_ms, PF_DEFAULT_DNS_MIN_REFRESH_MS);
    CU_ASSERT_EQUAL(d.max_refresh_ms, PF_DEFAULT_DNS_MAX_REFRESH_MS);
    CU_ASSERT_EQUAL(d.hold_ms, PF_DEFAULT_DNS_HOLD_MS);
    pf_config *cfg = load_ok(sq("{'listeners':[{'name':'m','address':'127.0.0.1:1','routes':["
                                "{'match':{},'cluster':'c'}]}],'clusters':[{'name':'c',"
                                "'dns':{'name':'c.internal','port':80}}]}"));
    CU_ASSERT_FATAL(cfg != NULL);
    const pf_config_cluster_dns *w = &cfg->clusters[0].dns;
    CU_ASSERT(w->record == d.record && w->min_refresh_ms == d.min_refresh_ms &&
              w->max_refresh_ms == d.max_refresh_ms && w->hold_ms == d.hold_ms);
    config_free(cfg);
}

/* ---- the schema and README.md ---------------------------------------------------------- */

#define README_KEYS_MAX 512
#define README_KEY_MAX 96

typedef struct readme_key {
    char path[README_KEY_MAX];
    char def[256]; /* the default cell, without backticks; "" when the row names several keys */
} readme_key;

/* README.md from the repository root (where make runs the tests), else from beside this
 * file's path as the compiler saw it. Caller frees. */
static char *read_readme(void) {
    static const char *const tries[] = {"README.md", "test/unit/../../README.md"};
    for (size_t i = 0; i < ARRAY_LEN(tries); i++) {
        FILE *f = fopen(tries[i], "rb");
        if (!f)
            continue;
        char *buf = malloc(1024 * 1024);
        size_t n = buf ? fread(buf, 1, 1024 * 1024 - 1, f) : 0;
        fclose(f);
        if (buf)
            buf[n] = '\0';
        return buf;
    }
    return NULL;
}

/* Copies the next `token` of [p, end) into out; returns the position after it, or NULL. */
static const char *next_code(const char *p, const char *end, char *out, size_t max) {
    const char *open = memchr(p, '`', (size_t)(end - p));
    const char *close = open ? memchr(open + 1, '`', (size_t)(end - open - 1)) : NULL;
    if (!close)
        return NULL;
    size_t n = (size_t)(close - open - 1);
    snprintf(out, max, "%.*s", (int)(n < max ? n : max - 1), open + 1);
    return close + 1;
}

/* The keys README.md's key tables document: the first cell of each row of a table headed
 * "| key | default | meaning |". Each `code` span in it is a key path; one starting with
 * "." is a sibling of the key before it ("`listeners[].name`, `.address`"), and a trailing
 * "[]" names the array itself. */
static size_t readme_keys(const char *text, readme_key *keys, size_t max) {
    size_t count = 0;
    bool in_table = false;
    char prev[README_KEY_MAX] = "";
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        if (!eol)
            eol = line + strlen(line);
        if (strncmp(line, "| key | default | meaning |", 27) == 0) {
            in_table = true;
        } else if (line[0] != '|') {
            in_table = false;
        } else if (in_table && strncmp(line, "| ---", 5) != 0) {
            const char *cell_end = memchr(line + 1, '|', (size_t)(eol - line - 1));
            const char *def_end =
                cell_end ? memchr(cell_end + 1, '|', (size_t)(eol - cell_end - 1)) : NULL;
            size_t first = count;
            char tok[README_KEY_MAX];
            for (const char *p = line + 1;
                 cell_end && count < max && (p = next_code(p, cell_end, tok, sizeof tok));) {
                readme_key *k = &keys[count++];
                const char *dot = strrchr(prev, '.');
                if (tok[0] == '.' && dot) {
                    if (snprintf(k->path, sizeof k->path, "%.*s%s", (int)(dot - prev), prev, tok) >=
                        (int)sizeof k->path)
                        k->path[0] = '\0'; /* no key is that long: reported as unknown */
                } else
                    snprintf(k->path, sizeof k->path, "%s", tok);
                size_t n = strlen(k->path);
                if (n > 2 && strcmp(k->path + n - 2, "[]") == 0)
                    k->path[n - 2] = '\0';
                snprintf(prev, sizeof prev, "%s", k->path);
                k->def[0] = '\0';
            }
            if (count == first + 1 && def_end) {
                size_t o = 0;
                for (const char *p = cell_end + 1; p < def_end && o + 1 < sizeof keys[first].def;
                     p++)
                    if (*p != '`')
                        keys[first].def[o++] = *p;
                keys[first].def[o] = '\0';
            }
        }
        line = *eol ? eol + 1 : eol;
    }
    return count;
}

static const readme_key *find_readme_key(const readme_key *keys, size_t n, const char *path) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].path, path) == 0)
            return &keys[i];
    return NULL;
}

/* Whether the README's default cell says the schema's default: durations by value ("60s"
 * is "1m"), the rest as text within the cell. Objects and arrays, and defaults in words
 * ("the cluster's"), are described in prose there and not compared. */
static bool default_documented(const char *type, const char *schema_def, const char *cell) {
    uint64_t want_ms, got_ms;
    char first[64];
    if (strcmp(type, "object") == 0 || strcmp(type, "array") == 0 || strchr(schema_def, ' '))
        return true;
    if (strcmp(type, "duration") == 0 && pf_duration_parse(schema_def, &want_ms) == PF_OK &&
        sscanf(cell, " %63s", first) == 1 && pf_duration_parse(first, &got_ms) == PF_OK)
        return want_ms == got_ms;
    return strstr(cell, schema_def) != NULL;
}

/* The docs cannot drift: every key of the schema has a row in README.md's key tables, every
 * key there is one the schema has, and a row that documents one key gives its default. */
static void test_readme_lists_exactly_the_schema_keys(void) {
    static readme_key keys[README_KEYS_MAX];
    char *text = read_readme();
    if (!PF_CHECK(text != NULL, "README.md not found; run the test from the repository root"))
        return;
    size_t n = readme_keys(text, keys, README_KEYS_MAX);
    free(text);
    CU_ASSERT(n > 50 && n < README_KEYS_MAX);

    char *schema_text = config_schema_json();
    CU_ASSERT_FATAL(schema_text != NULL);
    json_error_t jerr;
    json_t *schema = json_loads(schema_text, 0, &jerr);
    free(schema_text);
    CU_ASSERT_FATAL(json_is_array(schema));
    size_t i;
    json_t *row;
    json_array_foreach(schema, i, row) {
        const char *path = json_string_value(json_object_get(row, "path"));
        const char *def = json_string_value(json_object_get(row, "default"));
        const char *type = json_string_value(json_object_get(row, "type"));
        const readme_key *k = find_readme_key(keys, n, path);
        if (!PF_CHECK(k != NULL, "README.md's key tables lack `%s` (default %s: %s)", path, def,
                      json_string_value(json_object_get(row, "doc"))))
            continue;
        PF_CHECK(!k->def[0] || default_documented(type, def, k->def),
                 "README.md: `%s` defaults to \"%s\", the row says \"%s\"", path, def, k->def);
    }
    for (size_t j = 0; j < n; j++) {
        bool known = false;
        json_array_foreach(schema, i, row) {
            known =
                known || strcmp(json_string_value(json_object_get(row, "path")), keys[j].path) == 0;
        }
        PF_CHECK(known, "README.md documents `%s`, which is no key of the schema", keys[j].path);
    }
    json_decref(schema);
}

static void test_schema_listing_has_every_key_once(void) {
    char *text = config_schema_json();
    CU_ASSERT_FATAL(text != NULL);
    json_t *schema = json_loads(text, 0, NULL);
    free(text);
    CU_ASSERT_FATAL(json_is_array(schema));
    size_t i, j;
    json_t *a, *b;
    json_array_foreach(schema, i, a) {
        const char *path = json_string_value(json_object_get(a, "path"));
        PF_CHECK(path && *path && json_string_length(json_object_get(a, "doc")) > 0 &&
                     json_string_length(json_object_get(a, "default")) > 0,
                 "row %zu: path, doc and default are required", i);
        json_array_foreach(schema, j, b) {
            if (j > i)
                PF_CHECK(strcmp(path, json_string_value(json_object_get(b, "path"))) != 0,
                         "`%s` is listed twice", path);
        }
    }
    json_decref(schema);
}

static void test_small_helpers(void) {
    config_free(NULL);
    CU_ASSERT_STRING_EQUAL(config_lb_policy_name(PF_LB_ROUND_ROBIN), "round_robin");
    CU_ASSERT_STRING_EQUAL(config_lb_policy_name(PF_LB_WEIGHTED_ROUND_ROBIN),
                           "weighted_round_robin");
    CU_ASSERT_STRING_EQUAL(config_lb_policy_name((pf_lb_policy)99), "unknown");
}

/* access_log: a boolean or an object; the object's settings load, dump and load back. */
static void test_access_log_object_is_taken_and_dumped(void) {
    pf_config *cfg =
        load_ok(sq(CFG("'access_log':{'format':'text','fields':['status','path','trace_id'],"
                       "'path':'/var/log/pf.log','sample':0.25},",
                       LMAIN(""), CWEB(""))));
    CU_ASSERT_FATAL(cfg != NULL);
    const pf_config_access_log *a = &cfg->access_log;
    CU_ASSERT_TRUE(a->enabled);
    CU_ASSERT_EQUAL(a->format, PF_ALOG_TEXT);
    CU_ASSERT_EQUAL(a->field_count, 3);
    CU_ASSERT_EQUAL(a->fields[0], PF_ALOG_STATUS);
    CU_ASSERT_EQUAL(a->fields[1], PF_ALOG_PATH);
    CU_ASSERT_EQUAL(a->fields[2], PF_ALOG_TRACE_ID);
    CU_ASSERT_STRING_EQUAL(a->path, "/var/log/pf.log");
    CU_ASSERT_EQUAL(a->sample_ppm, 250000);
    char *dump = config_dump_json(cfg);
    CU_ASSERT_FATAL(dump != NULL);
    PF_CHECK(strstr(dump, "\"fields\": [\n      \"status\",\n      \"path\",\n      "
                          "\"trace_id\"\n    ]") != NULL,
             "dump: %s", dump);
    pf_config *again = load_ok(dump);
    CU_ASSERT_FATAL(again != NULL);
    CU_ASSERT_EQUAL(memcmp(&again->access_log, a, sizeof *a), 0);
    config_free(again);
    free(dump);
    config_free(cfg);

    /* an empty object is on with every default; false dumps as false and loads back off */
    cfg = load_ok(sq(CFG("'access_log':{},", LMAIN(""), CWEB(""))));
    CU_ASSERT_FATAL(cfg != NULL);
    CU_ASSERT_TRUE(cfg->access_log.enabled && cfg->access_log.format == PF_ALOG_JSON &&
                   cfg->access_log.field_count == PF_ALOG_FIELD_COUNT &&
                   cfg->access_log.sample_ppm == PF_ALOG_SAMPLE_ONE);
    config_free(cfg);
    cfg = load_ok(sq(CFG("'access_log':{'sample':0},", LMAIN(""), CWEB(""))));
    CU_ASSERT_FATAL(cfg != NULL);
    CU_ASSERT_EQUAL(cfg->access_log.sample_ppm, 0);
    config_free(cfg);
    cfg = load_ok(sq(CFG("'access_log':false,", LMAIN(""), CWEB(""))));
    CU_ASSERT_FATAL(cfg != NULL);
    dump = config_dump_json(cfg);
    CU_ASSERT_FATAL(dump != NULL);
    PF_CHECK(strstr(dump, "\"access_log\": false") != NULL, "dump: %s", dump);
    free(dump);
    config_free(cfg);
    for (int f = 0; f < PF_ALOG_FIELD_COUNT; f++)
        CU_ASSERT_PTR_NOT_NULL(config_access_log_field_name(f));
    CU_ASSERT_PTR_NULL(config_access_log_field_name(PF_ALOG_FIELD_COUNT));
}

static void test_max_connections_taken_and_derived(void) {
    pf_config *cfg = load_ok(sq("{'max_connections':5000,'listeners':[{'name':'m',"
                                "'address':'127.0.0.1:1','max_connections':70,"
                                "'routes':[{'match':{},'cluster':'c'}]},"
                                "{'name':'n','address':'127.0.0.1:2','routes':[{'match':{},"
                                "'cluster':'c'}]}],'clusters':[{'name':'c','endpoints':[]}]}"));
    if (!cfg)
        return;
    CU_ASSERT_EQUAL(cfg->max_connections, 5000);
    CU_ASSERT_EQUAL(cfg->listeners[0].max_connections, 70);
    CU_ASSERT_EQUAL(cfg->listeners[1].max_connections, 0); /* only the global limit */
    config_free(cfg);
    /* Half of what the reserve (64, or a tenth of the limit when larger) leaves. */
    static const struct {
        uint64_t fds;
        uint32_t expect;
    } rows[] = {
        {0, 1},      {64, 1},       {66, 1},           {256, 96},
        {1024, 461}, {20000, 9000}, {1048576, 471859}, {UINT64_MAX / 2, PF_MAX_CONNECTIONS_LIMIT},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(config_default_max_connections(rows[i].fds) == rows[i].expect,
                 "fds=%llu: %u, expected %u", (unsigned long long)rows[i].fds,
                 config_default_max_connections(rows[i].fds), rows[i].expect);
}

PF_UNIT_MAIN("config", PF_UNIT_TEST(test_example_loads_with_every_field_and_default),
             PF_UNIT_TEST(test_tcp_listener_loads_and_round_trips),
             PF_UNIT_TEST(test_every_option_set_is_taken),
             PF_UNIT_TEST(test_empty_static_cluster_is_allowed),
             PF_UNIT_TEST(test_route_host_and_path_forms),
             PF_UNIT_TEST(test_broken_configs_name_path_and_reason),
             PF_UNIT_TEST(test_all_errors_are_collected_in_one_run),
             PF_UNIT_TEST(test_json_syntax_error_has_line_and_column),
             PF_UNIT_TEST(test_errlist_may_be_null), PF_UNIT_TEST(test_duration_parse_and_format),
             PF_UNIT_TEST(test_sockaddr_parse), PF_UNIT_TEST(test_dump_round_trips),
             PF_UNIT_TEST(test_dump_shows_effective_values),
             PF_UNIT_TEST(test_health_options_are_taken_and_dumped),
             PF_UNIT_TEST(test_load_file_missing_says_why),
             PF_UNIT_TEST(test_load_file_reads_a_real_file),
             PF_UNIT_TEST(test_load_balancing_options_are_taken_and_dumped),
             PF_UNIT_TEST(test_dns_clusters_are_taken_and_dumped),
             PF_UNIT_TEST(test_kubernetes_config_is_taken_and_dumped),
             PF_UNIT_TEST(test_every_type_path_has_its_exact_message),
             PF_UNIT_TEST(test_bounds_and_zero_durations_load),
             PF_UNIT_TEST(test_every_schema_key_refuses_the_wrong_type),
             PF_UNIT_TEST(test_diff_reports_what_changed_by_path),
             PF_UNIT_TEST(test_cluster_dns_defaults_are_the_tables),
             PF_UNIT_TEST(test_readme_lists_exactly_the_schema_keys),
             PF_UNIT_TEST(test_schema_listing_has_every_key_once), PF_UNIT_TEST(test_small_helpers),
             PF_UNIT_TEST(test_max_connections_taken_and_derived),
             PF_UNIT_TEST(test_access_log_object_is_taken_and_dumped))
