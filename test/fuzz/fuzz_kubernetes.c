/* libFuzzer harness for the Kubernetes watch path (discovery/kubernetes_parse.c): a watch
 * stream cut into reads, its lines, the events and objects in them, and the endpoints built
 * from what was parsed, as kubernetes.c does; a line that is not an event is also tried as
 * a list page ({"items": [...]}).
 *
 * The first byte steers: bit 0 picks the resource (1 EndpointSlices, 0 Services), bits 1-2
 * the line limit (256, 4096, 65536, 4 MiB), bits 3-7 the read size (1-32 bytes); the rest
 * is the stream. Besides memory errors it checks that reading in pieces yields the same
 * lines as one read, and that built endpoint sets are sorted without duplicates. */
#include "discovery/kubernetes_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define MAX_SLICES 8
#define MAX_LINES 64

typedef struct state {
    k8s_kind kind;
    k8s_object *slices[MAX_SLICES];
    size_t slice_count;
    k8s_object *service;
    /* the lines of the one-read pass, to compare the piecewise pass with */
    const char *lines[MAX_LINES];
    size_t line_lens[MAX_LINES];
    size_t line_count, seen;
    bool recording;
} state;

static void take(state *st, k8s_object *obj) {
    if (obj->kind == K8S_KIND_SERVICE) {
        k8s_object_free(st->service);
        st->service = obj;
    } else if (st->slice_count < MAX_SLICES) {
        st->slices[st->slice_count++] = obj;
    } else {
        k8s_object_free(obj);
    }
}

/* A watch carries one resource; here an object saying "kind": "Service" is read as one in
 * any stream, so that one input can hold both the slices and the Service they are built
 * against. */
static void parse_object(state *st, json_t *json) {
    k8s_object *obj = NULL;
    char why[K8S_WHY_MAX];
    const char *kind = json_string_value(json_object_get(json, "kind"));
    int rc = k8s_object_parse(
        json, kind && strcmp(kind, "Service") == 0 ? K8S_KIND_SERVICE : st->kind, &obj, why);
    CHECK(rc == PF_OK || rc == PF_EINVAL || rc == PF_ENOMEM);
    CHECK((rc == PF_OK) == (obj != NULL));
    if (rc == PF_EINVAL)
        CHECK(memchr(why, '\0', sizeof why) != NULL);
    if (obj) {
        CHECK(strlen(obj->key) < sizeof obj->key && strlen(obj->rv) < sizeof obj->rv);
        take(st, obj);
    }
}

/* A list page, as take_page reads one. */
static void parse_list(state *st, const char *line, size_t len) {
    json_t *root = json_loadb(line, len, 0, NULL);
    json_t *items = json_object_get(root, "items");
    for (size_t i = 0; i < json_array_size(items); i++)
        parse_object(st, json_array_get(items, i));
    json_decref(root);
}

static int on_line(void *arg, const char *line, size_t len) {
    state *st = arg;
    if (st->recording) {
        if (st->line_count < MAX_LINES) {
            st->lines[st->line_count] = line;
            st->line_lens[st->line_count] = len;
        }
        st->line_count++;
        return 0;
    }
    if (st->seen < st->line_count && st->seen < MAX_LINES)
        CHECK(len == st->line_lens[st->seen] && memcmp(line, st->lines[st->seen], len) == 0);
    st->seen++;
    k8s_event ev;
    char why[K8S_WHY_MAX];
    if (k8s_event_parse(line, len, &ev, why) != PF_OK) {
        parse_list(st, line, len);
        return 0;
    }
    CHECK(ev.type < K8S_EV_COUNT && ev.root && json_is_object(ev.object));
    CHECK(strlen(ev.rv) < sizeof ev.rv && strlen(ev.message) < sizeof ev.message);
    if (ev.type == K8S_EV_ADDED || ev.type == K8S_EV_MODIFIED || ev.type == K8S_EV_DELETED)
        parse_object(st, ev.object);
    json_decref(ev.root);
    return 0;
}

/* FQDN slices: names starting with "p" have no answer yet, others resolve to two
 * addresses. */
static const pf_endpoint_set *lookup(void *arg, const char *name, uint16_t port) {
    static pf_endpoint_set *resolved;
    (void)arg;
    (void)port;
    if (name[0] == 'p')
        return NULL;
    if (!resolved) {
        pf_error err;
        resolved = calloc(1, sizeof *resolved + 2 * sizeof resolved->endpoints[0]);
        CHECK(resolved != NULL);
        config_parse_sockaddr("10.0.0.1:80", &resolved->endpoints[0].addr, &err);
        config_parse_sockaddr("[fd00::1]:80", &resolved->endpoints[1].addr, &err);
        resolved->count = 2;
    }
    return resolved;
}

static void build(state *st) {
    const k8s_slice *slices[MAX_SLICES];
    size_t most = 0;
    for (size_t i = 0; i < st->slice_count; i++) {
        slices[i] = &st->slices[i]->u.slice;
        most += slices[i]->endpoint_count * 2;
    }
    const k8s_service *svc = st->service ? &st->service->u.service : NULL;
    static const struct {
        const char *name;
        uint32_t number;
    } wants[] = {{"", 0}, {"http", 0}, {"", 8080}, {"", 80}};
    for (size_t w = 0; w < sizeof wants / sizeof wants[0]; w++) {
        k8s_port_pick pick = k8s_pick_port(svc, wants[w].name, wants[w].number);
        pf_endpoint *eps = NULL;
        k8s_build_stats stats;
        size_t n = k8s_build_endpoints(slices, st->slice_count, &pick, lookup, NULL, &eps, &stats);
        CHECK(eps != NULL && n <= most);
        for (size_t i = 1; i < n; i++)
            CHECK(strcmp(eps[i - 1].addr.text, eps[i].addr.text) < 0);
        free(eps);
    }
    if (svc)
        k8s_default_port(svc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const size_t limits[] = {256, 4096, 65536, 4u << 20};
    if (size < 1)
        return 0;
    state st = {.kind = data[0] & 1 ? K8S_KIND_SLICE : K8S_KIND_SERVICE};
    size_t max = limits[(data[0] >> 1) & 3], piece = (size_t)(data[0] >> 3) + 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    k8s_lines whole, pieces;
    k8s_lines_init(&whole, max);
    k8s_lines_init(&pieces, max);
    st.recording = true;
    int whole_rc = k8s_lines_feed(&whole, text, len, on_line, &st);
    st.recording = false;
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0; off += piece)
        rc = k8s_lines_feed(&pieces, text + off, len - off < piece ? len - off : piece, on_line,
                            &st);
    CHECK(rc == whole_rc);
    CHECK(st.seen == st.line_count);
    if (rc == 0)
        CHECK(pieces.len == whole.len && pieces.len <= max);
    build(&st);

    k8s_lines_free(&whole);
    k8s_lines_free(&pieces);
    for (size_t i = 0; i < st.slice_count; i++)
        k8s_object_free(st.slices[i]);
    k8s_object_free(st.service);
    return 0;
}
