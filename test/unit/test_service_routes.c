/* Run-time clusters and service routes (proxy/service_routes.c, proxy_cluster_add). */
#include "core/metrics.h"
#include "proxy/proxy_int.h"
#include "test/unit/unit.h"

#include <stdio.h>

static void test_lookup_is_by_exact_lowercase_host_and_port(void) {
    pf_service_routes *t = proxy_service_routes_new();
    CU_ASSERT_EQUAL(proxy_service_routes_add(t, "Reviews.Shop", 9080, 3), PF_OK);
    CU_ASSERT_EQUAL(proxy_service_routes_add(t, "reviews.shop", -1, 4), PF_OK);
    CU_ASSERT_EQUAL(service_routes_find(t, "reviews.shop", 9080), 3);
    CU_ASSERT_EQUAL(service_routes_find(t, "reviews.shop", -1), 4);
    CU_ASSERT_EQUAL(service_routes_find(t, "reviews.shop", 8080), -1);
    CU_ASSERT_EQUAL(service_routes_find(t, "reviews", -1), -1);
    CU_ASSERT_EQUAL(service_routes_find(NULL, "reviews", -1), -1);
    proxy_service_routes_free(t);
}

static void test_later_entry_replaces_earlier_and_table_grows(void) {
    pf_service_routes *t = proxy_service_routes_new();
    char host[64];
    for (size_t i = 0; i < 5000; i++) {
        snprintf(host, sizeof host, "svc%zu.ns", i);
        CU_ASSERT_EQUAL(proxy_service_routes_add(t, host, -1, i), PF_OK);
    }
    CU_ASSERT_EQUAL(proxy_service_routes_add(t, "svc7.ns", -1, 99999), PF_OK);
    size_t wrong = 0;
    for (size_t i = 0; i < 5000; i++) {
        snprintf(host, sizeof host, "svc%zu.ns", i);
        wrong += service_routes_find(t, host, -1) != (long)(i == 7 ? 99999 : i);
    }
    CU_ASSERT_EQUAL(wrong, 0);
    proxy_service_routes_free(t);
}

static void test_clusters_added_at_run_time_get_slots_and_stable_indexes(void) {
    static const char json[] =
        "{\"admin\":{\"address\":\"127.0.0.1:1\"},\"listeners\":[{\"name\":\"l\",\"address\":"
        "\"127.0.0.1:2\",\"routes\":[{\"match\":{},\"cluster\":\"c\"}]}],\"clusters\":[{\"name\":"
        "\"c\",\"endpoints\":[]}]}";
    pf_config *cfg = NULL;
    pf_errlist errs = {0};
    CU_ASSERT_EQUAL_FATAL(config_load_string(json, "t.json", &cfg, &errs), PF_OK);
    pf_metrics *m = metrics_new();
    pf_error err;
    pf_proxy *proxy = proxy_new(cfg, 1, m, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(proxy);
    CU_ASSERT_EQUAL(proxy_cluster_count(proxy), 1);
    pf_config_cluster added = cfg->clusters[0];
    snprintf(added.name, sizeof added.name, "reviews.shop.9080");
    long index = proxy_cluster_add(proxy, &added);
    CU_ASSERT_EQUAL(index, 1);
    CU_ASSERT_EQUAL(proxy_cluster_count(proxy), 2);
    CU_ASSERT_STRING_EQUAL(proxy_cluster_config(proxy, 1)->name, "reviews.shop.9080");
    CU_ASSERT_PTR_NOT_NULL(proxy_cluster_slot(proxy, 1));
    /* Run-time clusters do not hold readiness back: only configured ones do. */
    CU_ASSERT_EQUAL(discovery_slot_generation(proxy_cluster_slot(proxy, 1)), 0);
    pf_service_routes *t = proxy_service_routes_new();
    proxy_service_routes_add(t, "reviews.shop", -1, (size_t)index);
    proxy_publish_service_routes(proxy, t);
    proxy_publish_service_routes(proxy, proxy_service_routes_new()); /* frees the first */
    proxy_cluster_retire(proxy, 1);
    proxy_free(proxy);
    metrics_free(m);
    config_free(cfg);
}

PF_UNIT_MAIN("service_routes", PF_UNIT_TEST(test_lookup_is_by_exact_lowercase_host_and_port),
             PF_UNIT_TEST(test_later_entry_replaces_earlier_and_table_grows),
             PF_UNIT_TEST(test_clusters_added_at_run_time_get_slots_and_stable_indexes))
