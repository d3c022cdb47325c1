/* Unit tests for cmd/'s pure reload decisions: what a config diff means for each cluster
 * (kept, changed in place, added, replaced) and which changes need a restart. */
#include "cmd/reload.h"
#include "config/config.h"
#include "test/unit/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The base config: cluster "web" (static, two endpoints), "api" (static) and "names" (DNS),
 * one listener routing to web. `extra` is spliced into the root object, `web` and `names`
 * into those clusters (web's endpoints are replaced when `web` names some). ' stands for ". */
static pf_config *load(const char *extra, const char *web, const char *names) {
    char json[4096];
    snprintf(json, sizeof json,
             "{%s 'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':"
             "[{'match':{'prefix':'/'},'cluster':'web'}]}],"
             "'clusters':[{'name':'web'%s%s},"
             "{'name':'api','endpoints':['127.0.0.1:8003']},"
             "{'name':'names','dns':{'name':'backend.test','port':80}%s}]}",
             extra,
             strstr(web, "'endpoints'") ? "" : ",'endpoints':['127.0.0.1:8001','127.0.0.1:8002']",
             web, names);
    for (char *p = json; *p; p++)
        if (*p == '\'')
            *p = '"';
    pf_config *cfg = NULL;
    pf_errlist errs = {0};
    int rc = config_load_string(json, "reload.json", &cfg, &errs);
    PF_CHECK(rc == PF_OK, "config should load: %s", errs.count ? errs.items[0] : "?");
    CU_ASSERT_FATAL(cfg != NULL);
    pf_errlist_free(&errs);
    return cfg;
}

static const struct {
    const char *web; /* spliced into cluster web of the new config */
    reload_cluster_plan plan;
    bool endpoints;
} web_cases[] = {
    {"", RELOAD_CLUSTER_UNCHANGED, false},
    {",'connect_timeout':'3s'", RELOAD_CLUSTER_IN_PLACE, false},
    {",'response_timeout':'3s','idle_timeout':'9s'", RELOAD_CLUSTER_IN_PLACE, false},
    {",'retry':{'max_retries':3}", RELOAD_CLUSTER_IN_PLACE, false},
    {",'circuit_breakers':{'max_requests':7}", RELOAD_CLUSTER_IN_PLACE, false},
    {",'retry_budget':{'percent':50}", RELOAD_CLUSTER_IN_PLACE, false},
    {",'lb_policy':'least_request'", RELOAD_CLUSTER_REPLACED, false},
    {",'connect_timeout':'3s','lb_policy':'random'", RELOAD_CLUSTER_REPLACED, false},
    {",'health_check':{'type':'tcp'}", RELOAD_CLUSTER_REPLACED, false},
    {",'slow_start':'5s'", RELOAD_CLUSTER_REPLACED, false},
};

static void test_plan_of_a_changed_cluster_follows_which_keys_changed(void) {
    pf_config *from = load("", "", "");
    for (size_t i = 0; i < ARRAY_LEN(web_cases); i++) {
        pf_config *to = load("", web_cases[i].web, "");
        pf_config_diff diff = {0};
        CU_ASSERT_EQUAL_FATAL(config_diff(from, to, &diff), PF_OK);
        bool endpoints = true;
        reload_cluster_plan plan = reload_plan_cluster(&diff, "web", &endpoints);
        PF_CHECK(plan == web_cases[i].plan && endpoints == web_cases[i].endpoints,
                 "case %zu (%s): plan %s, want %s", i, web_cases[i].web,
                 reload_cluster_plan_name(plan), reload_cluster_plan_name(web_cases[i].plan));
        /* The other clusters are untouched whatever web does. */
        CU_ASSERT_EQUAL(reload_plan_cluster(&diff, "api", &endpoints), RELOAD_CLUSTER_UNCHANGED);
        config_diff_free(&diff);
        config_free(to);
    }
    config_free(from);
}

static void test_endpoint_changes_keep_the_cluster_and_publish_its_endpoints_again(void) {
    pf_config *from = load("", "", "");
    pf_config *to = load("", ",'endpoints':['127.0.0.1:8001','127.0.0.1:8009']", "");
    pf_config_diff diff = {0};
    CU_ASSERT_EQUAL_FATAL(config_diff(from, to, &diff), PF_OK);
    bool endpoints = false;
    CU_ASSERT_EQUAL(reload_plan_cluster(&diff, "web", &endpoints), RELOAD_CLUSTER_IN_PLACE);
    CU_ASSERT_TRUE(endpoints);
    CU_ASSERT_EQUAL(reload_plan_cluster(&diff, "we", &endpoints), RELOAD_CLUSTER_UNCHANGED);
    config_diff_free(&diff);
    config_free(to);
    config_free(from);
}

static const struct {
    const char *extra, *names;
    const char *want; /* a message that must be there; NULL: no message */
} live_cases[] = {
    {"", "", NULL},
    {"'drain_timeout':'3s',", "", NULL},
    {"'workers':3,", "",
     "$.workers: workers cannot change while pilotfish runs; restart pilotfish to apply it "
     "(the running config stays)"},
    {"'admin':{'address':'127.0.0.1:9999'},", "", "$.admin.address: admin cannot change"},
    {"'max_connections':100,", "", "$.max_connections: max_connections cannot change"},
    {"'access_log':false,", "", "$.access_log: access_log cannot change"},
    {"'access_log':{'format':'text'},", "", "$.access_log: access_log cannot change"},
    {"'stats':{'per_endpoint':true},", "", "$.stats.per_endpoint: stats cannot change"},
    {"'dns':{'timeout':'3s'},", "", "$.dns.timeout: dns cannot change"},
    {"'local_zone':'a',", "", "$.local_zone: local_zone cannot change"},
    {"", ",'connect_timeout':'3s'", NULL},
    {"", ",'lb_policy':'random'",
     "$.clusters[?@.name==\"names\"]: a DNS cluster cannot be changed this way while pilotfish "
     "runs"},
};

static void test_changes_the_running_process_cannot_take_are_named_with_their_path(void) {
    pf_config *from = load("", "", "");
    for (size_t i = 0; i < ARRAY_LEN(live_cases); i++) {
        pf_config *to = load(live_cases[i].extra, "", live_cases[i].names);
        pf_config_diff diff = {0};
        CU_ASSERT_EQUAL_FATAL(config_diff(from, to, &diff), PF_OK);
        pf_errlist errs = {0};
        reload_check_live(from, to, &diff, true, &errs);
        bool found = false;
        for (size_t k = 0; k < errs.count; k++)
            found |= live_cases[i].want && strstr(errs.items[k], live_cases[i].want) != NULL;
        if (live_cases[i].want)
            PF_CHECK(found, "case %zu: want \"%s\", got %zu messages, first: %s", i,
                     live_cases[i].want, errs.count, errs.count ? errs.items[0] : "-");
        else
            PF_CHECK(errs.count == 0, "case %zu: want none, got %s", i,
                     errs.count ? errs.items[0] : "-");
        pf_errlist_free(&errs);
        config_diff_free(&diff);
        config_free(to);
    }
    config_free(from);
}

static void test_removing_a_dns_cluster_or_adding_one_without_a_resolver_needs_a_restart(void) {
    pf_config *with = load("", "", "");
    pf_config *without = load("", "", "");
    /* "without": the same config minus its DNS cluster. */
    without->cluster_count = 2;
    pf_config_diff diff = {0};
    CU_ASSERT_EQUAL_FATAL(config_diff(with, without, &diff), PF_OK);
    pf_errlist errs = {0};
    reload_check_live(with, without, &diff, true, &errs);
    PF_CHECK(errs.count == 1 && strstr(errs.items[0], "a DNS cluster cannot be removed"),
             "got %zu: %s", errs.count, errs.count ? errs.items[0] : "-");
    pf_errlist_free(&errs);
    config_diff_free(&diff);
    /* The other way: a static-only process has no resolver to add a DNS cluster to. */
    CU_ASSERT_EQUAL_FATAL(config_diff(without, with, &diff), PF_OK);
    reload_check_live(without, with, &diff, false, &errs);
    PF_CHECK(errs.count == 1 && strstr(errs.items[0], "$.clusters[2]: a new DNS cluster needs a "
                                                      "restart"),
             "got %zu: %s", errs.count, errs.count ? errs.items[0] : "-");
    pf_errlist_free(&errs);
    reload_check_live(without, with, &diff, true, &errs);
    CU_ASSERT_EQUAL(errs.count, 0);
    pf_errlist_free(&errs);
    config_diff_free(&diff);
    without->cluster_count = 3; /* config_free frees all three */
    config_free(without);
    config_free(with);
}

static pf_config *load_text(const char *text) {
    char json[1024];
    snprintf(json, sizeof json, "%s", text);
    for (char *p = json; *p; p++)
        if (*p == '\'')
            *p = '"';
    pf_config *cfg = NULL;
    pf_errlist errs = {0};
    PF_CHECK(config_load_string(json, "reload.json", &cfg, &errs) == PF_OK,
             "config should load: %s", errs.count ? errs.items[0] : "?");
    pf_errlist_free(&errs);
    return cfg;
}

static size_t live_errors(const pf_config *from, const pf_config *to, const char *want,
                          bool *found) {
    pf_config_diff diff = {0};
    CU_ASSERT_EQUAL_FATAL(config_diff(from, to, &diff), PF_OK);
    pf_errlist errs = {0};
    reload_check_live(from, to, &diff, true, &errs);
    *found = false;
    for (size_t k = 0; k < errs.count; k++)
        *found |= want && strstr(errs.items[k], want) != NULL;
    size_t n = errs.count;
    pf_errlist_free(&errs);
    config_diff_free(&diff);
    return n;
}

#define CLUSTERS                                                                                   \
    "'clusters':[{'name':'web','endpoints':['127.0.0.1:8001']},"                                   \
    "{'name':'db','endpoints':['127.0.0.1:8002']}]}"

/* A listener's TLS context is made at start: a change of its TLS settings, or a new TLS
 * listener, waits for a restart. A cluster's is made with the cluster: a TLS change
 * replaces the cluster, and a new TLS cluster is added, live. */
static void test_listener_tls_changes_need_a_restart_cluster_tls_changes_replace(void) {
    pf_config *from = load("", "", "");
    pf_config *to = load("", ",'tls':{'sni':'web.test'}", "");
    pf_config_diff diff = {0};
    CU_ASSERT_EQUAL_FATAL(config_diff(from, to, &diff), PF_OK);
    pf_errlist errs = {0};
    reload_check_live(from, to, &diff, true, &errs);
    PF_CHECK(errs.count == 0, "got %zu messages, first: %s", errs.count,
             errs.count ? errs.items[0] : "-");
    bool ep;
    CU_ASSERT_EQUAL(reload_plan_cluster(&diff, "web", &ep), RELOAD_CLUSTER_REPLACED);
    pf_errlist_free(&errs);
    config_diff_free(&diff);
    config_free(to);
    config_free(from);

    bool found;
    pf_config *plain = load_text("{'listeners':[{'name':'main','address':'127.0.0.1:15001',"
                                 "'routes':[{'match':{},'cluster':'web'}]}]," CLUSTERS);
    pf_config *tls = load_text("{'listeners':[{'name':'main','address':'127.0.0.1:15001',"
                               "'routes':[{'match':{},'cluster':'web'}],'tls':{'certificates':"
                               "[{'cert_file':'test/unit/data/tls.crt','key_file':"
                               "'test/unit/data/tls.key'}]}}]," CLUSTERS);
    pf_config *more = load_text("{'listeners':[{'name':'main','address':'127.0.0.1:15001',"
                                "'routes':[{'match':{},'cluster':'web'}]},{'name':'s','address':"
                                "'127.0.0.1:15002','routes':[{'match':{},'cluster':'web'}],"
                                "'tls':{'certificates':[{'cert_file':'test/unit/data/tls.crt',"
                                "'key_file':'test/unit/data/tls.key'}]}}]," CLUSTERS);
    pf_config *tls_cluster =
        load_text("{'listeners':[{'name':'main','address':'127.0.0.1:15001','routes':[{'match':"
                  "{},'cluster':'web'}]}],'clusters':[{'name':'web','endpoints':["
                  "'127.0.0.1:8001']},{'name':'db','endpoints':['127.0.0.1:8002'],'tls':{}}]}");
    CU_ASSERT_FATAL(plain && tls && more && tls_cluster);
    CU_ASSERT(live_errors(plain, tls, "TLS settings cannot change while pilotfish runs", &found) >=
                  1 &&
              found);
    CU_ASSERT(live_errors(plain, more, "$.listeners[1]: a new TLS listener needs a restart",
                          &found) == 1 &&
              found);
    CU_ASSERT_EQUAL(live_errors(plain, tls_cluster, NULL, &found), 0);
    config_free(tls_cluster);
    config_free(more);
    config_free(tls);
    config_free(plain);
}

/* A kept listener's open connections were accepted as what it spoke: its protocol waits for
 * a restart (or a new name), while a tcp listener's cluster and routes change live. */
static void test_a_listener_protocol_change_needs_a_restart_but_tcp_routes_change_live(void) {
    pf_config *http = load_text("{'listeners':[{'name':'main','address':'127.0.0.1:15001',"
                                "'routes':[{'match':{},'cluster':'web'}]}]," CLUSTERS);
    pf_config *tcp = load_text("{'listeners':[{'name':'main','address':'127.0.0.1:15001',"
                               "'protocol':'tcp','cluster':'web'}]," CLUSTERS);
    pf_config *tcp2 = load_text("{'listeners':[{'name':'main','address':'127.0.0.1:15001',"
                                "'protocol':'tcp','cluster':'db','idle_timeout':'5m','routes':"
                                "[{'match':{'sni':'a.test'},'cluster':'web'}]}]," CLUSTERS);
    CU_ASSERT_FATAL(http && tcp && tcp2);
    bool found;
    const char *want = "$.listeners[0].protocol: a listener's protocol cannot change while "
                       "pilotfish runs";
    CU_ASSERT(live_errors(http, tcp, want, &found) == 1 && found);
    CU_ASSERT(live_errors(tcp, http, want, &found) == 1 && found);
    CU_ASSERT_EQUAL(live_errors(tcp, tcp2, want, &found), 0);
    config_free(tcp2);
    config_free(tcp);
    config_free(http);
}

PF_UNIT_MAIN(
    "reload", PF_UNIT_TEST(test_plan_of_a_changed_cluster_follows_which_keys_changed),
    PF_UNIT_TEST(test_endpoint_changes_keep_the_cluster_and_publish_its_endpoints_again),
    PF_UNIT_TEST(test_changes_the_running_process_cannot_take_are_named_with_their_path),
    PF_UNIT_TEST(test_removing_a_dns_cluster_or_adding_one_without_a_resolver_needs_a_restart),
    PF_UNIT_TEST(test_listener_tls_changes_need_a_restart_cluster_tls_changes_replace),
    PF_UNIT_TEST(test_a_listener_protocol_change_needs_a_restart_but_tcp_routes_change_live))
