/* Unit tests for the pure steps of Kubernetes discovery (discovery/kubernetes_int.h): the
 * watch-stream line assembler, watch events, Service and EndpointSlice parsing, port
 * picking, and slices -> endpoints with the ready/serving/terminating rule. */
#include "discovery/kubernetes.h"
#include "discovery/kubernetes_int.h"
#include "test/unit/unit.h"

#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- lines ----------------------------------------------------------------------------- */

typedef struct collected {
    char lines[16][128];
    size_t count;
    int stop_at; /* return non-zero at this line (1-based), 0: never */
} collected;

static int collect(void *arg, const char *line, size_t len) {
    collected *c = arg;
    if (c->count < 16) {
        snprintf(c->lines[c->count], sizeof c->lines[0], "%.*s", (int)len, line);
        c->count++;
    }
    return c->stop_at && (int)c->count == c->stop_at ? 7 : 0;
}

static void test_lines_split_across_reads_are_assembled(void) {
    static const char stream[] = "{\"a\":1}\n{\"b\":22}\r\n\n  \n{\"c\":333}\n{\"tail";
    /* every way of cutting the stream into two reads gives the same lines */
    for (size_t cut = 0; cut <= sizeof stream - 1; cut++) {
        k8s_lines lb;
        collected c = {0};
        k8s_lines_init(&lb, 64);
        int rc1 = k8s_lines_feed(&lb, stream, cut, collect, &c);
        int rc2 = k8s_lines_feed(&lb, stream + cut, sizeof stream - 1 - cut, collect, &c);
        PF_CHECK(rc1 == 0 && rc2 == 0, "cut %zu: rc %d %d", cut, rc1, rc2);
        PF_CHECK(c.count == 3, "cut %zu: %zu lines", cut, c.count);
        PF_CHECK(strcmp(c.lines[0], "{\"a\":1}") == 0 && strcmp(c.lines[1], "{\"b\":22}") == 0 &&
                     strcmp(c.lines[2], "{\"c\":333}") == 0,
                 "cut %zu: %s | %s | %s", cut, c.lines[0], c.lines[1], c.lines[2]);
        PF_CHECK(lb.len == strlen("{\"tail"), "cut %zu: partial %zu", cut, lb.len);
        k8s_lines_free(&lb);
    }
}

static void test_lines_byte_by_byte(void) {
    static const char stream[] = "one\ntwo\nthree\n";
    k8s_lines lb;
    collected c = {0};
    k8s_lines_init(&lb, 16);
    for (size_t i = 0; i < sizeof stream - 1; i++)
        CU_ASSERT_EQUAL(k8s_lines_feed(&lb, stream + i, 1, collect, &c), 0);
    CU_ASSERT_EQUAL(c.count, 3);
    CU_ASSERT_STRING_EQUAL(c.lines[2], "three");
    k8s_lines_free(&lb);
}

static void test_line_over_the_bound_is_an_error_not_an_allocation(void) {
    char big[300];
    memset(big, 'x', sizeof big);
    k8s_lines lb;
    collected c = {0};
    k8s_lines_init(&lb, 100);
    /* in pieces: the partial line may not grow past the bound */
    int rc = 0;
    for (size_t i = 0; i < sizeof big && rc == 0; i += 30)
        rc = k8s_lines_feed(&lb, big + i, 30, collect, &c);
    CU_ASSERT_EQUAL(rc, K8S_ELINE);
    CU_ASSERT(lb.cap <= 100);
    k8s_lines_reset(&lb);
    /* in one read with its newline */
    char line[202];
    memset(line, 'y', 201);
    line[201] = '\n';
    CU_ASSERT_EQUAL(k8s_lines_feed(&lb, line, sizeof line, collect, &c), K8S_ELINE);
    CU_ASSERT_EQUAL(c.count, 0);
    /* exactly at the bound is fine */
    k8s_lines_reset(&lb);
    line[100] = '\n';
    CU_ASSERT_EQUAL(k8s_lines_feed(&lb, line, 101, collect, &c), 0);
    CU_ASSERT_EQUAL(c.count, 1);
    k8s_lines_free(&lb);
}

static void test_line_callback_result_stops_feeding(void) {
    k8s_lines lb;
    collected c = {.stop_at = 2};
    k8s_lines_init(&lb, 64);
    CU_ASSERT_EQUAL(k8s_lines_feed(&lb, "a\nb\nc\n", 6, collect, &c), 7);
    CU_ASSERT_EQUAL(c.count, 2);
    k8s_lines_free(&lb);
}

/* ---- events ---------------------------------------------------------------------------- */

static void test_watch_events_parse_by_type(void) {
    static const struct {
        const char *line;
        int rc;
        k8s_event_type type;
        const char *rv;
        int code;
    } rows[] = {
        {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"5\"}}"
         "}",
         PF_OK, K8S_EV_ADDED, "5", 0},
        {"{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"resourceVersion\":\"6\"}}}", PF_OK,
         K8S_EV_MODIFIED, "6", 0},
        {"{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"resourceVersion\":\"7\"}}}", PF_OK,
         K8S_EV_DELETED, "7", 0},
        {"{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"EndpointSlice\",\"metadata\":"
         "{\"resourceVersion\":\"99\"}}}",
         PF_OK, K8S_EV_BOOKMARK, "99", 0},
        {"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\","
         "\"message\":\"too old resource version: 1 (50)\"}}",
         PF_OK, K8S_EV_ERROR, "", 410},
        {"{\"type\":\"ADDED\"", PF_EINVAL, 0, "", 0},
        {"{\"type\":\"WHATEVER\",\"object\":{}}", PF_EINVAL, 0, "", 0},
        {"{\"type\":\"ADDED\",\"object\":[]}", PF_EINVAL, 0, "", 0},
        {"[1,2]", PF_EINVAL, 0, "", 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        k8s_event ev;
        char why[K8S_WHY_MAX] = "";
        int rc = k8s_event_parse(rows[i].line, strlen(rows[i].line), &ev, why);
        PF_CHECK(rc == rows[i].rc, "row %zu: rc %d (%s)", i, rc, why);
        if (rc != PF_OK) {
            PF_CHECK(why[0] != '\0', "row %zu: no reason", i);
            continue;
        }
        PF_CHECK(ev.type == rows[i].type, "row %zu: type %d", i, ev.type);
        PF_CHECK(strcmp(ev.rv, rows[i].rv) == 0, "row %zu: rv %s", i, ev.rv);
        PF_CHECK(ev.code == rows[i].code, "row %zu: code %d", i, ev.code);
        if (ev.type == K8S_EV_ERROR)
            PF_CHECK(strstr(ev.message, "too old") != NULL, "row %zu: message %s", i, ev.message);
        json_decref(ev.root);
    }
}

/* ---- objects --------------------------------------------------------------------------- */

static k8s_object *parse(const char *json, k8s_kind kind) {
    json_t *root = json_loads(json, 0, NULL);
    CU_ASSERT_FATAL(root != NULL);
    k8s_object *obj = NULL;
    char why[K8S_WHY_MAX] = "";
    int rc = k8s_object_parse(root, kind, &obj, why);
    PF_CHECK(rc == PF_OK, "parse: %s", why);
    json_decref(root);
    return obj;
}

/* A slice JSON: name, service, addressType, ports JSON, endpoints JSON. */
static k8s_object *slice(const char *name, const char *svc, const char *type, const char *ports,
                         const char *eps) {
    char json[8192];
    snprintf(json, sizeof json,
             "{\"metadata\":{\"name\":\"%s\",\"namespace\":\"default\",\"resourceVersion\":\"1\","
             "\"labels\":{\"kubernetes.io/service-name\":\"%s\"}},\"addressType\":\"%s\","
             "\"ports\":%s,\"endpoints\":%s}",
             name, svc, type, ports, eps);
    return parse(json, K8S_KIND_SLICE);
}

static void test_slice_parse_applies_the_nil_condition_rules(void) {
    k8s_object *o =
        slice("web-1", "web", "IPv4", "[{\"name\":\"http\",\"port\":8080,\"protocol\":\"TCP\"}]",
              "[{\"addresses\":[\"10.0.0.1\"],\"zone\":\"a\",\"nodeName\":\"n1\"},"
              "{\"addresses\":[\"10.0.0.2\"],\"conditions\":{\"ready\":false}},"
              "{\"addresses\":[\"10.0.0.3\"],\"conditions\":{\"ready\":false,\"serving\":true,"
              "\"terminating\":true}},"
              "{\"addresses\":[]},{\"conditions\":{}}]");
    CU_ASSERT_FATAL(o != NULL);
    CU_ASSERT_STRING_EQUAL(o->key, "default/web-1");
    CU_ASSERT_STRING_EQUAL(o->rv, "1");
    const k8s_slice *s = &o->u.slice;
    CU_ASSERT_STRING_EQUAL(s->service, "web");
    CU_ASSERT_EQUAL(s->endpoint_count, 3); /* the two without an address are dropped */
    CU_ASSERT(s->endpoints[0].ready && s->endpoints[0].serving && !s->endpoints[0].terminating);
    CU_ASSERT_STRING_EQUAL(s->endpoints[0].zone, "a");
    CU_ASSERT_STRING_EQUAL(s->endpoints[0].node_name, "n1");
    CU_ASSERT(!s->endpoints[1].ready && !s->endpoints[1].serving);
    CU_ASSERT(!s->endpoints[2].ready && s->endpoints[2].serving && s->endpoints[2].terminating);
    k8s_object_free(o);
}

static void test_malformed_objects_are_refused_with_a_reason(void) {
    static const struct {
        const char *json;
        k8s_kind kind;
        const char *why;
    } rows[] = {
        {"{\"metadata\":{}}", K8S_KIND_SLICE, "metadata.name"},
        {"{\"metadata\":{\"name\":\"x\"},\"addressType\":\"Bogus\"}", K8S_KIND_SLICE,
         "unknown addressType"},
        {"{\"metadata\":{\"name\":\"x\"}}", K8S_KIND_SLICE, "addressType"},
        {"{\"metadata\":{\"name\":\"x\"},\"addressType\":\"IPv4\",\"endpoints\":{}}",
         K8S_KIND_SLICE, "endpoints is not a list"},
        {"{\"metadata\":{\"name\":\"x\"}}", K8S_KIND_SERVICE, "spec"},
        {"{\"metadata\":{\"name\":\"x\"},\"spec\":{\"ports\":[{\"port\":0}]}}", K8S_KIND_SERVICE,
         "out of range"},
        {"{\"metadata\":{\"name\":\"x\"},\"spec\":{\"type\":\"ExternalName\"}}", K8S_KIND_SERVICE,
         "externalName"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        json_t *root = json_loads(rows[i].json, 0, NULL);
        k8s_object *o = NULL;
        char why[K8S_WHY_MAX] = "";
        int rc = k8s_object_parse(root, rows[i].kind, &o, why);
        PF_CHECK(rc == PF_EINVAL && o == NULL, "row %zu: rc %d", i, rc);
        PF_CHECK(strstr(why, rows[i].why) != NULL, "row %zu: why \"%s\"", i, why);
        json_decref(root);
    }
}

static k8s_object *service(const char *ports) {
    char json[2048];
    snprintf(json, sizeof json,
             "{\"metadata\":{\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"ports\":%s}}",
             ports);
    return parse(json, K8S_KIND_SERVICE);
}

static void test_external_name_service(void) {
    k8s_object *o =
        parse("{\"metadata\":{\"name\":\"ext\",\"namespace\":\"default\"},"
              "\"spec\":{\"type\":\"ExternalName\",\"externalName\":\"Api.Example.COM.\","
              "\"ports\":[{\"port\":443}]}}",
              K8S_KIND_SERVICE);
    CU_ASSERT_FATAL(o != NULL);
    CU_ASSERT(o->u.service.external);
    CU_ASSERT_STRING_EQUAL(o->u.service.external_name, "api.example.com");
    CU_ASSERT_EQUAL(k8s_default_port(&o->u.service), 0);
    k8s_object_free(o);
}

/* ---- ports ----------------------------------------------------------------------------- */

static void test_port_pick(void) {
    k8s_object *two =
        service("[{\"name\":\"grpc\",\"port\":9090},{\"name\":\"http\",\"port\":80}]");
    k8s_object *one = service("[{\"port\":9080}]");
    k8s_object *none = service("[{\"name\":\"a\",\"port\":1},{\"name\":\"b\",\"port\":2}]");
    const k8s_service *s2 = &two->u.service, *s1 = &one->u.service, *s0 = &none->u.service;
    k8s_port_pick p;

    p = k8s_pick_port(s2, "grpc", 0); /* a name is taken as given */
    CU_ASSERT(strcmp(p.name, "grpc") == 0 && !p.any);
    p = k8s_pick_port(s2, "", 80); /* a Service port number -> its name */
    CU_ASSERT(strcmp(p.name, "http") == 0 && !p.any);
    p = k8s_pick_port(s2, "", 8080); /* no such Service port: a target port number */
    CU_ASSERT(p.name[0] == '\0' && p.number == 8080);
    p = k8s_pick_port(s2, "", 0); /* no port asked: "http" */
    CU_ASSERT_STRING_EQUAL(p.name, "http");
    p = k8s_pick_port(s1, "", 0); /* the only, unnamed port */
    CU_ASSERT(p.name[0] == '\0' && p.any);
    p = k8s_pick_port(s1, "", 9080);
    CU_ASSERT(p.name[0] == '\0' && p.any);
    p = k8s_pick_port(NULL, "", 0); /* Service unknown: a slice's only port */
    CU_ASSERT(p.any);
    CU_ASSERT_EQUAL(k8s_default_port(s0), -1);
    k8s_object_free(two);
    k8s_object_free(one);
    k8s_object_free(none);
}

/* ---- slices -> endpoints ------------------------------------------------------------------- */

#define HTTP_PORT "[{\"name\":\"http\",\"port\":8080}]"

static bool has(const pf_endpoint *eps, size_t n, const char *addr) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(eps[i].addr.text, addr) == 0)
            return true;
    return false;
}

/* FQDN lookups in the tests: "db.example.com" has the addresses of db_set (when a test
 * made it), other names none yet. */
static pf_endpoint_set *db_set;

static const pf_endpoint_set *fake_lookup(void *arg, const char *name, uint16_t port) {
    return strcmp(name, "db.example.com") == 0 ? db_set : NULL;
}

static size_t build(k8s_object **objs, size_t n, const char *port, pf_endpoint *out,
                    k8s_build_stats *st) {
    const k8s_slice *slices[8];
    for (size_t i = 0; i < n; i++)
        slices[i] = &objs[i]->u.slice;
    k8s_port_pick pick = k8s_pick_port(NULL, port, 0);
    pf_endpoint *eps = NULL;
    size_t count = k8s_build_endpoints(slices, n, &pick, fake_lookup, NULL, &eps, st);
    CU_ASSERT_FATAL(eps != NULL && count <= 64);
    memcpy(out, eps, count * sizeof *eps);
    free(eps);
    return count;
}

static void free_all(k8s_object **objs, size_t n) {
    for (size_t i = 0; i < n; i++)
        k8s_object_free(objs[i]);
}

static void test_terminating_endpoint_used_only_when_none_ready(void) {
    pf_endpoint out[64];
    k8s_build_stats st;
    /* a rollout midway: one new ready, one old terminating but serving, one not serving */
    k8s_object *mid[] = {slice("s", "web", "IPv4", HTTP_PORT,
                               "[{\"addresses\":[\"10.0.0.1\"],\"conditions\":{\"ready\":true}},"
                               "{\"addresses\":[\"10.0.0.2\"],\"conditions\":{\"ready\":false,"
                               "\"serving\":true,\"terminating\":true}},"
                               "{\"addresses\":[\"10.0.0.3\"],\"conditions\":{\"ready\":false,"
                               "\"serving\":false,\"terminating\":true}}]")};
    size_t n = build(mid, 1, "http", out, &st);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT(has(out, n, "10.0.0.1:8080"));
    CU_ASSERT(!st.used_terminating);
    CU_ASSERT_EQUAL(st.ready, 1);
    CU_ASSERT_EQUAL(st.serving_only, 1);
    CU_ASSERT_EQUAL(st.not_serving, 1);
    free_all(mid, 1);

    /* nothing ready: serving terminating endpoints stand in, unready new ones do not */
    k8s_object *gap[] = {slice("s", "web", "IPv4", HTTP_PORT,
                               "[{\"addresses\":[\"10.0.0.4\"],\"conditions\":{\"ready\":false}},"
                               "{\"addresses\":[\"10.0.0.2\"],\"conditions\":{\"ready\":false,"
                               "\"serving\":true,\"terminating\":true}},"
                               "{\"addresses\":[\"10.0.0.3\"],\"conditions\":{\"ready\":false,"
                               "\"serving\":false,\"terminating\":true}}]")};
    n = build(gap, 1, "http", out, &st);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT(has(out, n, "10.0.0.2:8080"));
    CU_ASSERT(st.used_terminating);
    free_all(gap, 1);
}

static void test_endpoint_in_two_slices_counts_once_with_its_best_conditions(void) {
    pf_endpoint out[64];
    k8s_build_stats st;
    k8s_object *objs[] = {
        slice("a", "web", "IPv4", HTTP_PORT,
              "[{\"addresses\":[\"10.0.0.1\"],\"conditions\":{\"ready\":false}},"
              "{\"addresses\":[\"10.0.0.9\"]}]"),
        slice("b", "web", "IPv4", HTTP_PORT,
              "[{\"addresses\":[\"10.0.0.1\"],\"conditions\":{\"ready\":true},\"zone\":\"z2\"}]"),
    };
    size_t n = build(objs, 2, "http", out, &st);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT(has(out, n, "10.0.0.1:8080") && has(out, n, "10.0.0.9:8080"));
    for (size_t i = 0; i < n; i++)
        if (strcmp(out[i].addr.text, "10.0.0.1:8080") == 0)
            CU_ASSERT_STRING_EQUAL(out[i].zone, "z2");
    free_all(objs, 2);
}

static void test_named_ports_resolve_per_slice(void) {
    pf_endpoint out[64];
    k8s_build_stats st;
    k8s_object *objs[] = {
        slice("a", "web", "IPv4", "[{\"name\":\"http\",\"port\":8080},{\"name\":\"m\",\"port\":9}]",
              "[{\"addresses\":[\"10.0.0.1\"]}]"),
        slice("b", "web", "IPv4", "[{\"name\":\"http\",\"port\":8081}]",
              "[{\"addresses\":[\"10.0.0.2\"]}]"),
        slice("c", "web", "IPv4", "[{\"name\":\"other\",\"port\":1}]",
              "[{\"addresses\":[\"10.0.0.3\"]}]"),
        slice("d", "web", "IPv4", "[{\"name\":\"http\",\"port\":53,\"protocol\":\"UDP\"}]",
              "[{\"addresses\":[\"10.0.0.4\"]}]"),
    };
    size_t n = build(objs, 4, "http", out, &st);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT(has(out, n, "10.0.0.1:8080") && has(out, n, "10.0.0.2:8081"));
    CU_ASSERT_EQUAL(st.no_port, 2);
    free_all(objs, 4);
}

static void test_ipv6_slices_and_bad_addresses(void) {
    pf_endpoint out[64];
    k8s_build_stats st;
    k8s_object *objs[] = {
        slice("v6", "web", "IPv6", HTTP_PORT,
              "[{\"addresses\":[\"fd00::1\"]},{\"addresses\":[\"10.0.0.1\"]}]"),
        slice("v4", "web", "IPv4", HTTP_PORT,
              "[{\"addresses\":[\"10.0.0.2\"]},{\"addresses\":[\"not-an-ip\"]}]"),
    };
    size_t n = build(objs, 2, "http", out, &st);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT(has(out, n, "[fd00::1]:8080") && has(out, n, "10.0.0.2:8080"));
    CU_ASSERT_EQUAL(st.bad_address, 2); /* an IPv4 address in an IPv6 slice, and a name */
    free_all(objs, 2);
}

static void test_fqdn_slices_use_the_resolved_addresses_with_their_conditions(void) {
    pf_endpoint out[64];
    k8s_build_stats st;
    k8s_object *objs[] = {
        slice("f", "web", "FQDN", HTTP_PORT,
              "[{\"addresses\":[\"db.example.com\"],\"zone\":\"z\"},"
              "{\"addresses\":[\"later.example.com\"]},"
              "{\"addresses\":[\"db.example.com\"],\"conditions\":{\"ready\":false}}]"),
    };
    pf_endpoint db[2];
    pf_error err;
    memset(db, 0, sizeof db);
    config_parse_sockaddr("192.0.2.10:1", &db[0].addr, &err);
    config_parse_sockaddr("192.0.2.11:1", &db[1].addr, &err);
    db_set = discovery_set_new(db, 2);
    size_t n = build(objs, 1, "http", out, &st);
    discovery_set_unref(db_set);
    db_set = NULL;
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT(has(out, n, "192.0.2.10:1") && has(out, n, "192.0.2.11:1"));
    CU_ASSERT_STRING_EQUAL(out[0].zone, "z");
    CU_ASSERT_EQUAL(st.fqdn, 3);
    CU_ASSERT_EQUAL(st.fqdn_pending, 1);
    free_all(objs, 1);
}

/* Under UBSan this caught qsort(NULL, 0): a Service whose slices are all gone. */
static void test_no_slices_build_an_empty_set(void) {
    pf_endpoint out[1];
    k8s_build_stats st;
    CU_ASSERT_EQUAL(build(NULL, 0, "http", out, &st), 0);
    CU_ASSERT(!st.used_terminating && st.ready == 0);
}

static void test_only_port_when_none_named(void) {
    pf_endpoint out[64];
    k8s_build_stats st;
    k8s_object *objs[] = {
        slice("a", "web", "IPv4", "[{\"port\":7000}]", "[{\"addresses\":[\"10.0.0.1\"]}]"),
        slice("b", "web", "IPv4", "[{\"name\":\"x\",\"port\":1},{\"name\":\"y\",\"port\":2}]",
              "[{\"addresses\":[\"10.0.0.2\"]}]"),
        slice("c", "web", "IPv4", "[{\"name\":\"x\"}]", "[{\"addresses\":[\"10.0.0.3\"]}]"),
    };
    size_t n = build(objs, 3, "", out, &st);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT(has(out, n, "10.0.0.1:7000"));
    free_all(objs, 3);
}

/* ---- kubeconfig ----------------------------------------------------------------------------- */

static void test_kubeconfig_current_context_is_taken(void) {
    /* the shape kubectl writes; "aGVsbG8=" is "hello" */
    static const char yaml[] = "apiVersion: v1\n"
                               "kind: Config\n"
                               "current-context: prod\n"
                               "clusters:\n"
                               "- name: dev\n"
                               "  cluster: {server: https://dev:6443}\n"
                               "- name: prod-cluster\n"
                               "  cluster:\n"
                               "    server: https://10.0.0.1:6443\n"
                               "    certificate-authority-data: aGVsbG8=\n"
                               "contexts:\n"
                               "- name: prod\n"
                               "  context:\n"
                               "    cluster: prod-cluster\n"
                               "    user: admin\n"
                               "    namespace: shop\n"
                               "users:\n"
                               "- name: admin\n"
                               "  user:\n"
                               "    token: abc.def\n"
                               "    client-certificate: certs/admin.crt\n"
                               "    client-key-data: a2V5\n";
    k8s_kubeconfig kc;
    pf_error err = {{0}};
    int rc = k8s_kubeconfig_parse(yaml, sizeof yaml - 1, "kc", "/home/me/.kube", &kc, &err);
    PF_CHECK(rc == PF_OK, "rc %d: %s", rc, err.msg);
    CU_ASSERT_STRING_EQUAL(kc.server, "https://10.0.0.1:6443");
    CU_ASSERT_STRING_EQUAL(kc.namespace, "shop");
    CU_ASSERT_STRING_EQUAL(kc.token, "abc.def");
    CU_ASSERT(kc.ca_data && kc.ca_len == 5 && memcmp(kc.ca_data, "hello", 5) == 0);
    CU_ASSERT_STRING_EQUAL(kc.cert_file, "/home/me/.kube/certs/admin.crt");
    CU_ASSERT(kc.key_data && kc.key_len == 3 && memcmp(kc.key_data, "key", 3) == 0);
    k8s_kubeconfig_clear(&kc);
}

static void test_kubeconfig_base64_data_is_read_strictly_with_line_breaks_skipped(void) {
    static const char yaml[] =
        "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://a', certificate-authority-data: "
        "\"aGVs\\nbG8=\"}}]\n";
    k8s_kubeconfig kc;
    pf_error err = {{0}};
    CU_ASSERT_EQUAL_FATAL(k8s_kubeconfig_parse(yaml, strlen(yaml), "kc", "", &kc, &err), PF_OK);
    CU_ASSERT_EQUAL(kc.ca_len, 5);
    CU_ASSERT_STRING_EQUAL(kc.ca_data, "hello");
    k8s_kubeconfig_clear(&kc);
}

static void test_kubeconfig_refusals_say_why(void) {
    static const struct {
        const char *yaml;
        const char *why;
    } rows[] = {
        {"current-context: x\ncontexts: []\n", "no context \"x\""},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {}}]\n",
         "has no server"},
        /* found by fuzzing (test/fuzz/corpus/kubeconfig/empty_server): an empty server was
         * taken as none, and in a pod the in-cluster API stood in without a word */
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: }}]\n",
         "has no server"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: ''}}]\n",
         "has no server"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://a', insecure-skip-tls-verify: true}}]\n",
         "insecure-skip-tls-verify is not supported"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://a'}}]\n"
         "users: [{name: u, user: {exec: {command: aws}}}]\n",
         "plugin"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://a', certificate-authority-data: "
         "'%%%'}}]\n",
         "not valid base64"},
        /* padding only at the end, nothing outside the alphabet: "====" once read as one
         * byte, trailing blanks as two more */
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://a', certificate-authority-data: "
         "'===='}}]\n",
         "not valid base64"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://a', certificate-authority-data: "
         "'A==='}}]\n",
         "not valid base64"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://a', certificate-authority-data: "
         "'AA==    '}}]\n",
         "not valid base64"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://a', certificate-authority-data: "
         "'aGk=aGk='}}]\n",
         "not valid base64"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://a', certificate-authority-data: "
         "'aGVsbG8'}}]\n",
         "not valid base64"},
        {"a: [b\n", "YAML error"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        k8s_kubeconfig kc;
        pf_error err = {{0}};
        int rc = k8s_kubeconfig_parse(rows[i].yaml, strlen(rows[i].yaml), "kc", "", &kc, &err);
        PF_CHECK(rc == PF_EINVAL, "row %zu: rc %d", i, rc);
        PF_CHECK(strstr(err.msg, rows[i].why) != NULL, "row %zu: \"%s\"", i, err.msg);
    }
}

/* Which hosts name a Service (Kubernetes DNS for Services), for on-demand discovery. */
static void test_service_hosts_are_parsed_as_kubernetes_dns_names(void) {
    static const struct {
        const char *host, *service, *ns; /* service NULL: not a Service name */
    } cases[] = {
        {"web", "web", "shop"},
        {"web.default", "web", "default"},
        {"web.default.svc", "web", "default"},
        {"web.default.svc.cluster.local", "web", "default"},
        {"a-1.b-2", "a-1", "b-2"},
        {"web.default.svc.other.domain", NULL, NULL},
        {"web.default.svc.cluster", NULL, NULL},
        {"web.default.pod", NULL, NULL},
        {"example.com", "example", "com"}, /* shaped like one: the namespace check decides */
        {"1web.default", NULL, NULL},      /* a Service name starts with a letter */
        {"web-.default", NULL, NULL},
        {"Web.default", NULL, NULL},
        {"web_x", NULL, NULL},
        {"", NULL, NULL},
        {".default", NULL, NULL},
        {"web.", NULL, NULL},
        {"web..svc", NULL, NULL},
        {"a234567890123456789012345678901234567890123456789012345678901234.x", NULL, NULL},
        {"10.0.0.1", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char svc[PF_K8S_NAME_MAX] = "", ns[PF_K8S_NAME_MAX] = "";
        int rc = discovery_k8s_parse_service_host(cases[i].host, "shop", "cluster.local", svc, ns);
        if (!cases[i].service) {
            PF_CHECK(rc == PF_EINVAL, "%s: parsed as %s.%s", cases[i].host, svc, ns);
            continue;
        }
        PF_CHECK(rc == PF_OK && strcmp(svc, cases[i].service) == 0 && strcmp(ns, cases[i].ns) == 0,
                 "%s: rc %d, %s.%s", cases[i].host, rc, svc, ns);
    }
}

PF_UNIT_MAIN("kubernetes", PF_UNIT_TEST(test_lines_split_across_reads_are_assembled),
             PF_UNIT_TEST(test_service_hosts_are_parsed_as_kubernetes_dns_names),
             PF_UNIT_TEST(test_kubeconfig_base64_data_is_read_strictly_with_line_breaks_skipped),
             PF_UNIT_TEST(test_lines_byte_by_byte),
             PF_UNIT_TEST(test_line_over_the_bound_is_an_error_not_an_allocation),
             PF_UNIT_TEST(test_line_callback_result_stops_feeding),
             PF_UNIT_TEST(test_watch_events_parse_by_type),
             PF_UNIT_TEST(test_slice_parse_applies_the_nil_condition_rules),
             PF_UNIT_TEST(test_malformed_objects_are_refused_with_a_reason),
             PF_UNIT_TEST(test_external_name_service), PF_UNIT_TEST(test_port_pick),
             PF_UNIT_TEST(test_terminating_endpoint_used_only_when_none_ready),
             PF_UNIT_TEST(test_endpoint_in_two_slices_counts_once_with_its_best_conditions),
             PF_UNIT_TEST(test_named_ports_resolve_per_slice),
             PF_UNIT_TEST(test_ipv6_slices_and_bad_addresses),
             PF_UNIT_TEST(test_fqdn_slices_use_the_resolved_addresses_with_their_conditions),
             PF_UNIT_TEST(test_only_port_when_none_named),
             PF_UNIT_TEST(test_no_slices_build_an_empty_set),
             PF_UNIT_TEST(test_kubeconfig_current_context_is_taken),
             PF_UNIT_TEST(test_kubeconfig_refusals_say_why))
