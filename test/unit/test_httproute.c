/* Unit tests for discovery/kubernetes_httproute: HTTPRoute objects (JSON, ' for ") become
 * pilotfish routes as the Gateway API says (segment prefixes, defaults, filters, weights),
 * what cannot be honoured is skipped with its reason, and routes order by the API's
 * precedence. */
#include "discovery/kubernetes_httproute.h"
#include "test/unit/unit.h"

#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static pf_httproute *parse(const char *single_quoted) {
    char buf[8192];
    size_t n = strlen(single_quoted);
    CU_ASSERT_FATAL(n < sizeof buf);
    for (size_t i = 0; i <= n; i++)
        buf[i] = single_quoted[i] == '\'' ? '"' : single_quoted[i];
    json_error_t jerr;
    json_t *obj = json_loads(buf, 0, &jerr);
    PF_CHECK(obj != NULL, "bad test JSON: %s", jerr.text);
    pf_httproute *r = NULL;
    pf_error err = {{0}};
    CU_ASSERT_EQUAL_FATAL(discovery_httproute_parse(obj, &r, &err), PF_OK);
    json_decref(obj);
    return r;
}

#define ROUTE(rules)                                                                               \
    "{'metadata':{'name':'r','namespace':'shop','creationTimestamp':'2026-01-01T00:00:00Z'},"      \
    "'spec':{'parentRefs':[{'group':'','kind':'Service','name':'web','port':80}],"                 \
    "'rules':" rules "}}"

static void test_prefix_matches_whole_segments_and_backends_are_weighted(void) {
    pf_httproute *r = parse(ROUTE("[{'matches':[{'path':{'type':'PathPrefix','value':'/api/'}}],"
                                  "'backendRefs':[{'name':'v1','port':8080,'weight':90},"
                                  "{'name':'v2','port':8080,'weight':10}]}]"));
    CU_ASSERT_EQUAL(r->parent_count, 1);
    CU_ASSERT_STRING_EQUAL(r->parents[0].service, "web");
    CU_ASSERT_STRING_EQUAL(r->parents[0].ns, "shop");
    CU_ASSERT_EQUAL(r->parents[0].port, 80);
    const pf_httproute_rule *rule = &r->rules[0];
    PF_CHECK(!rule->skipped[0], "skipped: %s", rule->skipped);
    CU_ASSERT_EQUAL_FATAL(rule->route_count, 2);
    /* "/api/" is "/api": the path itself exactly, and below it by prefix */
    CU_ASSERT_EQUAL(rule->routes[0].path_kind, PF_MATCH_PATH_EXACT);
    CU_ASSERT_STRING_EQUAL(rule->routes[0].path, "/api");
    CU_ASSERT_EQUAL(rule->routes[1].path_kind, PF_MATCH_PATH_PREFIX);
    CU_ASSERT_STRING_EQUAL(rule->routes[1].path, "/api/");
    CU_ASSERT_EQUAL(rule->routes[1].weighted_count, 2);
    CU_ASSERT_STRING_EQUAL(rule->routes[1].clusters[0].name, "v1.shop:8080");
    CU_ASSERT_EQUAL(rule->routes[1].clusters[0].weight, 90);
    CU_ASSERT_EQUAL(rule->routes[1].clusters[1].weight, 10);
    CU_ASSERT_EQUAL(rule->ranks[0].path, 2);
    CU_ASSERT_EQUAL(rule->ranks[0].path_len, 4);
    discovery_httproute_free(r);
}

static void test_defaults_weights_scaled_and_no_backend_is_500(void) {
    pf_httproute *r = parse(ROUTE("[{'backendRefs':[{'name':'a','port':80},"
                                  "{'name':'b','port':80,'weight':1000000}]},"
                                  "{'matches':[{'path':{'type':'Exact','value':'/x'}}]},"
                                  "{'backendRefs':[{'name':'a','port':80,'weight':0}]}]"));
    const pf_httproute_rule *all = &r->rules[0];
    CU_ASSERT_EQUAL_FATAL(all->route_count, 1); /* no matches: PathPrefix "/" */
    CU_ASSERT_EQUAL(all->routes[0].path_kind, PF_MATCH_PATH_PREFIX);
    CU_ASSERT_STRING_EQUAL(all->routes[0].path, "/");
    CU_ASSERT_EQUAL(all->routes[0].clusters[0].weight, 0); /* 1 of 1000001 */
    CU_ASSERT_EQUAL(all->routes[0].clusters[1].weight, PF_CLUSTER_WEIGHT_MAX);
    for (size_t i = 1; i < 3; i++) {
        CU_ASSERT_EQUAL_FATAL(r->rules[i].route_count, 1);
        CU_ASSERT(r->rules[i].routes[0].has_direct_response);
        CU_ASSERT_EQUAL(r->rules[i].routes[0].direct_response.status, 500);
    }
    discovery_httproute_free(r);
}

static void test_filters_become_edits_rewrites_redirects_and_mirrors(void) {
    pf_httproute *r = parse(
        ROUTE("[{'matches':[{'path':{'value':'/old'},'method':'POST','headers':[{'name':'X-Env',"
              "'value':'canary'},{'type':'RegularExpression','name':'x-id','value':'[0-9]+'}],"
              "'queryParams':[{'name':'v','value':'2'}]}],"
              "'filters':[{'type':'RequestHeaderModifier','requestHeaderModifier':{'set':[{'name':"
              "'X-A','value':'50%'}],'remove':['X-B']}},{'type':'URLRewrite','urlRewrite':{"
              "'hostname':'new.local','path':{'type':'ReplacePrefixMatch','replacePrefixMatch':"
              "'/new'}}},{'type':'RequestMirror','requestMirror':{'backendRef':{'name':'shadow',"
              "'port':81},'percent':25}}],'backendRefs':[{'name':'a','port':80}]},"
              "{'filters':[{'type':'RequestRedirect','requestRedirect':{'scheme':'https',"
              "'statusCode':301}}]}]"));
    const pf_httproute_rule *rule = &r->rules[0];
    PF_CHECK(!rule->skipped[0], "skipped: %s", rule->skipped);
    CU_ASSERT_EQUAL_FATAL(rule->route_count, 2);
    const pf_config_route *exact = &rule->routes[0], *prefix = &rule->routes[1];
    CU_ASSERT_STRING_EQUAL(prefix->method, "POST");
    CU_ASSERT_EQUAL_FATAL(prefix->header_count, 2);
    CU_ASSERT_STRING_EQUAL(prefix->headers[0].name, "x-env");
    CU_ASSERT_EQUAL(prefix->headers[1].kind, PF_VALUE_REGEX);
    CU_ASSERT_EQUAL(prefix->query_param_count, 1);
    CU_ASSERT_EQUAL_FATAL(prefix->request_headers.set_count, 1);
    CU_ASSERT_STRING_EQUAL(prefix->request_headers.set[0].value, "50%%"); /* a literal % */
    CU_ASSERT_EQUAL(prefix->request_headers.remove_count, 1);
    CU_ASSERT(prefix->has_rewrite && exact->has_rewrite);
    CU_ASSERT_STRING_EQUAL(prefix->rewrite.prefix, "/new");
    CU_ASSERT_STRING_EQUAL(exact->rewrite.full_path, "/new"); /* "/old" itself */
    CU_ASSERT_STRING_EQUAL(prefix->host_rewrite, "new.local");
    CU_ASSERT(prefix->has_mirror);
    CU_ASSERT_STRING_EQUAL(prefix->mirror.cluster, "shadow.shop:81");
    CU_ASSERT_EQUAL(prefix->mirror.percent, 25);
    CU_ASSERT(rule->ranks[0].method && rule->ranks[0].headers == 2 &&
              rule->ranks[0].query_params == 1);
    const pf_httproute_rule *redirect = &r->rules[1];
    CU_ASSERT_EQUAL_FATAL(redirect->route_count, 1);
    CU_ASSERT(redirect->routes[0].has_redirect);
    CU_ASSERT_STRING_EQUAL(redirect->routes[0].redirect.scheme, "https");
    CU_ASSERT_EQUAL(redirect->routes[0].redirect.status, 301);
    discovery_httproute_free(r);
}

static void test_what_cannot_be_honoured_is_skipped_with_its_reason(void) {
    static const struct {
        const char *rule;
        const char *why;
    } rows[] = {
        {"{'filters':[{'type':'ExtensionRef','extensionRef':{'name':'x'}}],"
         "'backendRefs':[{'name':'a','port':80}]}",
         "rules[0]: filters[0]: filter type ExtensionRef is not supported"},
        {"{'backendRefs':[{'kind':'ServiceImport','group':'multicluster.x-k8s.io','name':'a',"
         "'port':80}]}",
         "rules[0]: backendRefs[0]: kind multicluster.x-k8s.io/ServiceImport is not supported "
         "(only Services)"},
        {"{'backendRefs':[{'name':'a','namespace':'other','port':80}]}",
         "rules[0]: backendRefs[0]: Service other/a is in another namespace, which needs a "
         "ReferenceGrant; pilotfish reads none"},
        {"{'backendRefs':[{'name':'a'}]}",
         "rules[0]: backendRefs[0]: Service a needs a port (1-65535)"},
        {"{'matches':[{'headers':[{'type':'RegularExpression','name':'x','value':'(a'}]}],"
         "'backendRefs':[{'name':'a','port':80}]}",
         "rules[0].match.headers[0].regex: bad regex at offset 2: missing closing parenthesis"},
        {"{'filters':[{'type':'RequestHeaderModifier','requestHeaderModifier':{'set':[{'name':"
         "'Connection','value':'x'}]}}],'backendRefs':[{'name':'a','port':80}]}",
         "rules[0].request_headers.set.Connection: "},
        {"{'matches':[{'path':{'type':'Exact','value':'/a'}}],'filters':[{'type':'URLRewrite',"
         "'urlRewrite':{'path':{'type':'ReplacePrefixMatch','replacePrefixMatch':'/b'}}}],"
         "'backendRefs':[{'name':'a','port':80}]}",
         "rules[0]: ReplacePrefixMatch needs a PathPrefix match"},
        {"{'backendRefs':[{'name':'a','port':80},{'name':'b','port':80},{'name':'c','port':80},"
         "{'name':'d','port':80},{'name':'e','port':80},{'name':'f','port':80},{'name':'g',"
         "'port':80},{'name':'h','port':80},{'name':'i','port':80}]}",
         "rules[0]: backendRefs: 9 of them; pilotfish splits over at most 8"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char json[4096];
        snprintf(json, sizeof json, ROUTE("[%s]"), rows[i].rule);
        pf_httproute *r = parse(json);
        PF_CHECK(r->rule_count == 1 && r->rules[0].route_count == 0 &&
                     strncmp(r->rules[0].skipped, rows[i].why, strlen(rows[i].why)) == 0,
                 "row %zu: skipped \"%s\", want \"%s\"", i, r->rules[0].skipped, rows[i].why);
        discovery_httproute_free(r);
    }
    /* a route attached to a Gateway only is not pilotfish's */
    pf_httproute *r =
        parse("{'metadata':{'name':'g','namespace':'shop'},'spec':{'parentRefs':"
              "[{'name':'edge'}],'rules':[{'backendRefs':[{'name':'a','port':1}]}]}}");
    CU_ASSERT_EQUAL(r->parent_count, 0);
    PF_CHECK(strstr(r->skipped, "no parentRef names a Service") != NULL, "%s", r->skipped);
    discovery_httproute_free(r);
}

static void test_precedence_follows_the_gateway_api(void) {
    pf_httproute old = {.created = "2026-01-01T00:00:00Z", .ns = "a", .name = "z"};
    pf_httproute young = {.created = "2026-02-01T00:00:00Z", .ns = "a", .name = "a"};
    pf_httproute twin = {.created = "2026-01-01T00:00:00Z", .ns = "a", .name = "zz"};
    const pf_httproute_rank exact = {.path = 0}, regex = {.path = 1},
                            long_prefix = {.path = 2, .path_len = 8},
                            short_prefix = {.path = 2, .path_len = 1},
                            method = {.path = 2, .path_len = 1, .method = true},
                            headers = {.path = 2, .path_len = 1, .headers = 2},
                            queries = {.path = 2, .path_len = 1, .query_params = 1};
    CU_ASSERT(discovery_httproute_compare(&young, &exact, 9, &old, &regex, 0) < 0);
    CU_ASSERT(discovery_httproute_compare(&young, &regex, 9, &old, &long_prefix, 0) < 0);
    CU_ASSERT(discovery_httproute_compare(&young, &long_prefix, 9, &old, &method, 0) < 0);
    CU_ASSERT(discovery_httproute_compare(&young, &method, 9, &old, &headers, 0) < 0);
    CU_ASSERT(discovery_httproute_compare(&young, &headers, 9, &old, &queries, 0) < 0);
    CU_ASSERT(discovery_httproute_compare(&young, &queries, 9, &old, &short_prefix, 0) < 0);
    /* ties: the older route, then namespace/name, then rule and match order */
    CU_ASSERT(discovery_httproute_compare(&old, &short_prefix, 9, &young, &short_prefix, 0) < 0);
    CU_ASSERT(discovery_httproute_compare(&old, &short_prefix, 9, &twin, &short_prefix, 0) < 0);
    CU_ASSERT(discovery_httproute_compare(&old, &short_prefix, 1, &old, &short_prefix, 2) < 0);
    CU_ASSERT(discovery_httproute_compare(&old, &short_prefix, 2, &old, &short_prefix, 1) > 0);
}

/* Objects of the wrong shape (the API server validates, a broken one or a proxy in between
 * may not): nothing is trusted, an object without a name is refused, wrongly typed fields
 * leave their rule skipped with the reason or take their default. */
static void test_malformed_objects_are_refused_or_skipped_never_trusted(void) {
    static const char *const nameless[] = {
        "{}",
        "{'metadata':'x','spec':{}}",
        "{'metadata':{'name':7},'spec':{'rules':[]}}",
    };
    for (size_t i = 0; i < ARRAY_LEN(nameless); i++) {
        char buf[256];
        size_t n = strlen(nameless[i]);
        for (size_t k = 0; k <= n; k++)
            buf[k] = nameless[i][k] == '\'' ? '"' : nameless[i][k];
        json_t *obj = json_loads(buf, 0, NULL);
        pf_httproute *r = NULL;
        pf_error err = {{0}};
        PF_CHECK(discovery_httproute_parse(obj, &r, &err) == PF_EINVAL && r == NULL &&
                     err.msg[0] != '\0',
                 "row %zu: a nameless object must be refused", i);
        json_decref(obj);
    }
    /* spec, parentRefs and rules of the wrong type: no parent, no rule */
    pf_httproute *r = parse("{'metadata':{'name':'r','namespace':'shop'},'spec':"
                            "{'parentRefs':'web','rules':{'backendRefs':[]}}}");
    CU_ASSERT_EQUAL(r->parent_count, 0);
    CU_ASSERT_EQUAL(r->rule_count, 0);
    discovery_httproute_free(r);
    r = parse("{'metadata':{'name':'r','namespace':'shop'},'spec':7}");
    CU_ASSERT_EQUAL(r->parent_count, 0);
    CU_ASSERT_EQUAL(r->rule_count, 0);
    discovery_httproute_free(r);
    static const struct {
        const char *rule;
        const char *why;
    } rows[] = {
        {"{'matches':[{'path':{'type':'PathPrefix','value':7}}],'backendRefs':[{'name':'a',"
         "'port':80}]}",
         "rules[0]: path.type and path.value must be strings"},
        {"{'matches':[{'path':{'type':7}}],'backendRefs':[{'name':'a','port':80}]}",
         "rules[0]: path.type and path.value must be strings"},
        {"{'backendRefs':[{'name':'a','port':'80'}]}",
         "rules[0]: backendRefs[0]: Service a needs a port (1-65535)"},
        {"{'backendRefs':[{'name':7,'port':80}]}",
         "rules[0]: backendRefs[0]: expected the name of a Service"},
        {"{'backendRefs':[{'name':'a','port':80,'weight':-1}]}",
         "rules[0]: backendRefs[0].weight: out of range (0-1000000)"},
        {"{'filters':[{'type':7}],'backendRefs':[{'name':'a','port':80}]}",
         "rules[0]: filters[0] has no type"},
        {"{'matches':[{'headers':[{'name':'x'}]}],'backendRefs':[{'name':'a','port':80}]}",
         "rules[0]: headers[0] needs a name and a value"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char json[4096];
        snprintf(json, sizeof json, ROUTE("[%s]"), rows[i].rule);
        r = parse(json);
        PF_CHECK(r->rule_count == 1 && r->rules[0].route_count == 0 &&
                     strstr(r->rules[0].skipped, rows[i].why) != NULL,
                 "row %zu: skipped \"%s\", want \"%s\"", i, r->rules[0].skipped, rows[i].why);
        discovery_httproute_free(r);
    }
}

/* GEP-1294: hostnames do nothing for a Service parent; they are kept (bounded by the API's
 * 16, wrong types left out) only to report that, and the rules apply unchanged. */
static void test_hostnames_are_kept_to_be_reported_and_change_no_rule(void) {
    pf_httproute *r =
        parse("{'metadata':{'name':'r','namespace':'shop'},'spec':{'hostnames':['a.example.com',"
              "'*.example.com',7],'parentRefs':[{'group':'','kind':'Service','name':'web'}],"
              "'rules':[{'backendRefs':[{'name':'v2','port':80}]}]}}");
    CU_ASSERT_EQUAL_FATAL(r->hostname_count, 2);
    CU_ASSERT_STRING_EQUAL(r->hostnames[0], "a.example.com");
    CU_ASSERT_STRING_EQUAL(r->hostnames[1], "*.example.com");
    CU_ASSERT(!r->skipped[0]);
    CU_ASSERT_EQUAL_FATAL(r->rules[0].route_count, 1);
    CU_ASSERT_STRING_EQUAL(r->rules[0].routes[0].host, "");
    discovery_httproute_free(r);
    char json[8192];
    size_t n =
        (size_t)snprintf(json, sizeof json, "{'metadata':{'name':'r'},'spec':{'hostnames':[");
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(json + n, sizeof json - n, "%s'h%d.example.com'", i ? "," : "", i);
    snprintf(json + n, sizeof json - n, "]}}");
    r = parse(json);
    CU_ASSERT_EQUAL(r->hostname_count, PF_HTTPROUTE_HOSTS_MAX);
    discovery_httproute_free(r);
}

PF_UNIT_MAIN("httproute", PF_UNIT_TEST(test_hostnames_are_kept_to_be_reported_and_change_no_rule),
             PF_UNIT_TEST(test_prefix_matches_whole_segments_and_backends_are_weighted),
             PF_UNIT_TEST(test_defaults_weights_scaled_and_no_backend_is_500),
             PF_UNIT_TEST(test_filters_become_edits_rewrites_redirects_and_mirrors),
             PF_UNIT_TEST(test_what_cannot_be_honoured_is_skipped_with_its_reason),
             PF_UNIT_TEST(test_precedence_follows_the_gateway_api),
             PF_UNIT_TEST(test_malformed_objects_are_refused_or_skipped_never_trusted))
