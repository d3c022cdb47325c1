/* Pure steps of Kubernetes discovery: watch-stream lines, watch events, Services and
 * EndpointSlices parsed from JSON, and a Service's slices turned into endpoints. No I/O, no
 * event loop: kubernetes.c feeds these and test_kubernetes.c checks them with tables. */
#include "discovery/kubernetes_int.h"
#include "discovery/kubernetes_httproute.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- lines --------------------------------------------------------------------------- */

void k8s_lines_init(k8s_lines *lb, size_t max) {
    memset(lb, 0, sizeof *lb);
    lb->max = max;
}

void k8s_lines_reset(k8s_lines *lb) {
    lb->len = 0;
}

void k8s_lines_free(k8s_lines *lb) {
    free(lb->buf);
    memset(lb, 0, sizeof *lb);
}

static bool blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\r' && s[i] != '\t')
            return false;
    return true;
}

static int emit(const char *s, size_t n, k8s_line_cb cb, void *arg) {
    if (n && s[n - 1] == '\r')
        n--;
    return blank(s, n) ? 0 : cb(arg, s, n);
}

/* Appends to the partial line, growing the buffer geometrically but never past max. */
static int keep(k8s_lines *lb, const char *data, size_t n) {
    if (lb->len + n > lb->max)
        return K8S_ELINE;
    if (lb->len + n > lb->cap) {
        size_t cap = lb->cap ? lb->cap : 4096;
        while (cap < lb->len + n)
            cap *= 2;
        if (cap > lb->max)
            cap = lb->max;
        char *grown = realloc(lb->buf, cap);
        if (!grown)
            return PF_ENOMEM;
        lb->buf = grown;
        lb->cap = cap;
    }
    memcpy(lb->buf + lb->len, data, n);
    lb->len += n;
    return 0;
}

int k8s_lines_feed(k8s_lines *lb, const char *data, size_t n, k8s_line_cb cb, void *arg) {
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        if (!nl)
            return keep(lb, data, n);
        size_t part = (size_t)(nl - data);
        int rc;
        if (lb->len == 0) {
            /* the usual case: a whole line inside one read, used in place */
            if (part > lb->max)
                return K8S_ELINE;
            rc = emit(data, part, cb, arg);
        } else {
            if ((rc = keep(lb, data, part)) != 0)
                return rc;
            rc = emit(lb->buf, lb->len, cb, arg);
            lb->len = 0;
        }
        if (rc != 0)
            return rc;
        data = nl + 1;
        n -= part + 1;
    }
    return 0;
}

/* ---- small JSON helpers -------------------------------------------------------------- */

static const char *str_at(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Copies s into out (cap bytes) when it fits; false (and out = "") otherwise. */
static bool copy_text(char *out, size_t cap, const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (!s || n >= cap) {
        out[0] = '\0';
        return false;
    }
    memcpy(out, s, n + 1);
    return true;
}

/* Copies s cut to cap-1 bytes (zone and nodeName are informational). */
static void copy_cut(char *out, size_t cap, const char *s) {
    snprintf(out, cap, "%s", s ? s : "");
}

/* A condition: true/false, or `nil_value` when absent or null (API rules differ per field). */
static bool cond(json_t *conds, const char *key, bool nil_value) {
    json_t *v = json_object_get(conds, key);
    return json_is_boolean(v) ? json_is_true(v) : nil_value;
}

static int parse_ports(json_t *arr, bool service, k8s_port **out, size_t *count,
                       char why[K8S_WHY_MAX]) {
    *out = NULL;
    *count = 0;
    if (!arr || json_is_null(arr))
        return PF_OK;
    if (!json_is_array(arr)) {
        snprintf(why, K8S_WHY_MAX, "ports is not a list");
        return PF_EINVAL;
    }
    size_t n = json_array_size(arr);
    if (n > K8S_MAX_PORTS)
        n = K8S_MAX_PORTS;
    if (n == 0)
        return PF_OK;
    k8s_port *ports = calloc(n, sizeof *ports);
    if (!ports)
        return PF_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(arr, i);
        k8s_port *dst = &ports[k];
        if (!json_is_object(p))
            continue;
        copy_text(dst->name, sizeof dst->name, str_at(p, "name"));
        const char *proto = str_at(p, "protocol");
        dst->tcp = !proto || strcmp(proto, "TCP") == 0;
        json_t *num = json_object_get(p, "port");
        /* A slice port without a number means "all ports" and serves no proxy. */
        if (!json_is_integer(num) || json_integer_value(num) < 1 ||
            json_integer_value(num) > 65535) {
            if (service) {
                free(ports);
                snprintf(why, K8S_WHY_MAX, "ports[%zu].port is missing or out of range", i);
                return PF_EINVAL;
            }
            continue;
        }
        dst->port = (int32_t)json_integer_value(num);
        k++;
    }
    *out = ports;
    *count = k;
    return PF_OK;
}

static int parse_slice(json_t *obj, k8s_slice *s, char why[K8S_WHY_MAX]) {
    json_t *labels = json_object_get(json_object_get(obj, "metadata"), "labels");
    copy_text(s->service, sizeof s->service, str_at(labels, "kubernetes.io/service-name"));
    const char *type = str_at(obj, "addressType");
    if (!type) {
        snprintf(why, K8S_WHY_MAX, "addressType is missing");
        return PF_EINVAL;
    }
    if (strcmp(type, "IPv4") == 0)
        s->addr_type = K8S_ADDR_IPV4;
    else if (strcmp(type, "IPv6") == 0)
        s->addr_type = K8S_ADDR_IPV6;
    else if (strcmp(type, "FQDN") == 0)
        s->addr_type = K8S_ADDR_FQDN;
    else {
        snprintf(why, K8S_WHY_MAX, "unknown addressType \"%.32s\"", type);
        return PF_EINVAL;
    }
    int rc = parse_ports(json_object_get(obj, "ports"), false, &s->ports, &s->port_count, why);
    if (rc != PF_OK)
        return rc;
    json_t *eps = json_object_get(obj, "endpoints");
    if (!eps || json_is_null(eps))
        return PF_OK;
    if (!json_is_array(eps)) {
        snprintf(why, K8S_WHY_MAX, "endpoints is not a list");
        return PF_EINVAL;
    }
    size_t n = json_array_size(eps);
    if (n > K8S_MAX_SLICE_ENDPOINTS)
        n = K8S_MAX_SLICE_ENDPOINTS;
    if (n == 0)
        return PF_OK;
    if (!(s->endpoints = calloc(n, sizeof *s->endpoints)))
        return PF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(eps, i);
        json_t *addrs = json_object_get(e, "addresses");
        k8s_endpoint *dst = &s->endpoints[s->endpoint_count];
        /* The controller writes one address per endpoint; consumers use the first. */
        if (!json_is_array(addrs) || !json_is_string(json_array_get(addrs, 0)) ||
            !copy_text(dst->address, sizeof dst->address,
                       json_string_value(json_array_get(addrs, 0))))
            continue;
        /* discovery.k8s.io/v1 EndpointConditions: nil ready and nil serving mean "ready";
         * nil terminating means "not terminating". serving defaults to ready. */
        json_t *conds = json_object_get(e, "conditions");
        dst->ready = cond(conds, "ready", true);
        dst->serving = cond(conds, "serving", dst->ready);
        dst->terminating = cond(conds, "terminating", false);
        copy_cut(dst->zone, sizeof dst->zone, str_at(e, "zone"));
        copy_cut(dst->node_name, sizeof dst->node_name, str_at(e, "nodeName"));
        s->endpoint_count++;
    }
    return PF_OK;
}

static void lower_name(char *out, size_t cap, const char *s) {
    size_t n = 0;
    for (; s[n] && n + 1 < cap; n++)
        out[n] = (s[n] >= 'A' && s[n] <= 'Z') ? (char)(s[n] - 'A' + 'a') : s[n];
    if (n && out[n - 1] == '.')
        n--;
    out[n] = '\0';
}

static int parse_service(json_t *obj, k8s_service *s, char why[K8S_WHY_MAX]) {
    json_t *spec = json_object_get(obj, "spec");
    if (!json_is_object(spec)) {
        snprintf(why, K8S_WHY_MAX, "spec is missing");
        return PF_EINVAL;
    }
    const char *type = str_at(spec, "type");
    if (type && strcmp(type, "ExternalName") == 0) {
        const char *ext = str_at(spec, "externalName");
        if (!ext || !*ext || strlen(ext) >= sizeof s->external_name) {
            snprintf(why, K8S_WHY_MAX, "ExternalName Service without a usable externalName");
            return PF_EINVAL;
        }
        s->external = true;
        lower_name(s->external_name, sizeof s->external_name, ext);
    }
    return parse_ports(json_object_get(spec, "ports"), true, &s->ports, &s->port_count, why);
}

int k8s_object_parse(json_t *obj, k8s_kind kind, k8s_object **out, char why[K8S_WHY_MAX]) {
    *out = NULL;
    json_t *meta = json_object_get(obj, "metadata");
    const char *ns = str_at(meta, "namespace"), *name = str_at(meta, "name");
    if (!json_is_object(obj) || !name) {
        snprintf(why, K8S_WHY_MAX, "object without metadata.name");
        return PF_EINVAL;
    }
    k8s_object *o = calloc(1, sizeof *o);
    if (!o)
        return PF_ENOMEM;
    o->kind = kind;
    if (!copy_text(o->ns, sizeof o->ns, ns ? ns : "") ||
        !copy_text(o->name, sizeof o->name, name)) {
        free(o);
        snprintf(why, K8S_WHY_MAX, "namespace or name too long");
        return PF_EINVAL;
    }
    snprintf(o->key, sizeof o->key, "%s/%s", o->ns, o->name);
    copy_text(o->rv, sizeof o->rv, str_at(meta, "resourceVersion"));
    if (kind == K8S_KIND_HTTPROUTE) {
        /* What it cannot honour is kept in it as reasons, not refused here. */
        pf_error err = {{0}};
        int hrc = discovery_httproute_parse(obj, &o->u.route, &err);
        if (hrc != PF_OK) {
            snprintf(why, K8S_WHY_MAX, "httproute %.64s: %.160s", o->key, err.msg);
            free(o);
            return hrc;
        }
        *out = o;
        return PF_OK;
    }
    int rc = kind == K8S_KIND_SLICE ? parse_slice(obj, &o->u.slice, why)
                                    : parse_service(obj, &o->u.service, why);
    if (rc != PF_OK) {
        if (rc == PF_EINVAL) {
            char detail[K8S_WHY_MAX];
            snprintf(detail, sizeof detail, "%s", why);
            snprintf(why, K8S_WHY_MAX, "%s %.64s: %.160s",
                     kind == K8S_KIND_SLICE ? "endpointslice" : "service", o->key, detail);
        }
        k8s_object_free(o);
        return rc;
    }
    *out = o;
    return PF_OK;
}

void k8s_object_free(k8s_object *obj) {
    if (!obj)
        return;
    if (obj->kind == K8S_KIND_HTTPROUTE) {
        discovery_httproute_free(obj->u.route);
    } else if (obj->kind == K8S_KIND_SLICE) {
        free(obj->u.slice.ports);
        free(obj->u.slice.endpoints);
    } else {
        free(obj->u.service.ports);
    }
    free(obj);
}

/* ---- events -------------------------------------------------------------------------- */

static const char *const event_names[K8S_EV_COUNT] = {
    [K8S_EV_ADDED] = "ADDED",       [K8S_EV_MODIFIED] = "MODIFIED", [K8S_EV_DELETED] = "DELETED",
    [K8S_EV_BOOKMARK] = "BOOKMARK", [K8S_EV_ERROR] = "ERROR",
};

const char *k8s_event_type_name(k8s_event_type type) {
    return type < K8S_EV_COUNT ? event_names[type] : "UNKNOWN";
}

void k8s_status_parse(json_t *status, int *code, char *message, size_t cap) {
    json_t *c = json_object_get(status, "code");
    *code = json_is_integer(c) ? (int)json_integer_value(c) : 0;
    const char *msg = str_at(status, "message");
    const char *reason = str_at(status, "reason");
    snprintf(message, cap, "%s%s%s", reason ? reason : "", reason && msg ? ": " : "",
             msg ? msg : "");
}

int k8s_event_parse(const char *line, size_t len, k8s_event *ev, char why[K8S_WHY_MAX]) {
    json_error_t jerr;
    memset(ev, 0, sizeof *ev);
    json_t *root = json_loadb(line, len, 0, &jerr);
    if (!root) {
        snprintf(why, K8S_WHY_MAX, "malformed watch event: %s", jerr.text);
        return PF_EINVAL;
    }
    const char *type = str_at(root, "type");
    json_t *obj = json_object_get(root, "object");
    size_t t = 0;
    while (type && t < K8S_EV_COUNT && strcmp(type, event_names[t]) != 0)
        t++;
    if (!type || t == K8S_EV_COUNT || !json_is_object(obj)) {
        snprintf(why, K8S_WHY_MAX, "watch event without a known type and an object (type %.32s)",
                 type ? type : "missing");
        json_decref(root);
        return PF_EINVAL;
    }
    ev->type = (k8s_event_type)t;
    ev->root = root;
    ev->object = obj;
    copy_text(ev->rv, sizeof ev->rv, str_at(json_object_get(obj, "metadata"), "resourceVersion"));
    if (ev->type == K8S_EV_ERROR)
        k8s_status_parse(obj, &ev->code, ev->message, sizeof ev->message);
    return PF_OK;
}

/* ---- endpoints ------------------------------------------------------------------------ */

int k8s_default_port(const k8s_service *svc) {
    if (!svc || svc->port_count == 0)
        return -1;
    if (svc->port_count == 1)
        return 0;
    for (size_t i = 0; i < svc->port_count; i++)
        if (strcmp(svc->ports[i].name, "http") == 0)
            return (int)i;
    return -1;
}

k8s_port_pick k8s_pick_port(const k8s_service *svc, const char *want_name, uint32_t want_number) {
    k8s_port_pick pick = {.number = 0};
    if (want_name && *want_name) {
        copy_cut(pick.name, sizeof pick.name, want_name);
        return pick;
    }
    const k8s_port *sp = NULL;
    if (want_number) {
        /* A number is the Service port clients dial; slices carry the target port under
         * the Service port's name. Without such a Service port, take it as a target port. */
        for (size_t i = 0; svc && i < svc->port_count && !sp; i++)
            if ((uint32_t)svc->ports[i].port == want_number)
                sp = &svc->ports[i];
        if (!sp) {
            pick.number = (int32_t)want_number;
            return pick;
        }
    } else {
        int d = k8s_default_port(svc);
        if (d < 0) {
            pick.any = true;
            if (svc && svc->port_count > 1)
                copy_cut(pick.name, sizeof pick.name, "http");
            return pick;
        }
        sp = &svc->ports[d];
    }
    copy_cut(pick.name, sizeof pick.name, sp->name);
    /* an unnamed port is a Service's only port: its slices have one unnamed port too */
    pick.any = sp->name[0] == '\0';
    return pick;
}

static const k8s_port *slice_port(const k8s_slice *s, const k8s_port_pick *pick) {
    for (size_t i = 0; i < s->port_count; i++) {
        const k8s_port *p = &s->ports[i];
        if (!p->tcp)
            continue;
        if (pick->name[0] ? strcmp(p->name, pick->name) == 0
                          : pick->number > 0 && p->port == pick->number)
            return p;
    }
    if (pick->any && !pick->name[0] && s->port_count == 1 && s->ports[0].tcp)
        return &s->ports[0];
    return NULL;
}

typedef struct candidate {
    pf_endpoint ep;
    bool ready, serving, terminating;
} candidate;

static int compare_candidates(const void *a, const void *b) {
    return strcmp(((const candidate *)a)->ep.addr.text, ((const candidate *)b)->ep.addr.text);
}

typedef struct candidates {
    candidate *c;
    size_t len, cap;
} candidates;

static candidate *push(candidates *cs) {
    if (cs->len == cs->cap) {
        size_t cap = cs->cap ? cs->cap * 2 : 16;
        candidate *grown = realloc(cs->c, cap * sizeof *grown);
        if (!grown)
            return NULL;
        cs->c = grown;
        cs->cap = cap;
    }
    candidate *c = &cs->c[cs->len];
    memset(c, 0, sizeof *c);
    return c;
}

static void conditions(candidate *c, const k8s_endpoint *e) {
    c->ep.weight = 1;
    c->ep.healthy = true;
    memcpy(c->ep.zone, e->zone, sizeof c->ep.zone);
    memcpy(c->ep.node_name, e->node_name, sizeof c->ep.node_name);
    c->ready = e->ready;
    c->serving = e->serving;
    c->terminating = e->terminating;
}

/* FQDN endpoints: each resolved address inherits the endpoint's conditions. */
static bool add_fqdn(candidates *cs, const k8s_endpoint *e, const k8s_port *port,
                     k8s_fqdn_lookup lookup, void *arg, k8s_build_stats *st) {
    const pf_endpoint_set *set = lookup ? lookup(arg, e->address, (uint16_t)port->port) : NULL;
    if (!set) {
        st->fqdn_pending++;
        return true;
    }
    for (size_t i = 0; i < set->count; i++) {
        candidate *c = push(cs);
        if (!c)
            return false;
        conditions(c, e);
        c->ep.addr = set->endpoints[i].addr;
        cs->len++;
    }
    return true;
}

size_t k8s_build_endpoints(const k8s_slice *const *slices, size_t n, const k8s_port_pick *pick,
                           k8s_fqdn_lookup lookup, void *lookup_arg, pf_endpoint **out,
                           k8s_build_stats *stats) {
    k8s_build_stats st;
    memset(&st, 0, sizeof st);
    candidates cs = {0};
    *out = NULL;
    for (size_t i = 0; i < n; i++) {
        const k8s_slice *s = slices[i];
        const k8s_port *port = slice_port(s, pick);
        if (!port) {
            st.no_port++;
            continue;
        }
        for (size_t k = 0; k < s->endpoint_count; k++) {
            const k8s_endpoint *e = &s->endpoints[k];
            if (s->addr_type == K8S_ADDR_FQDN) {
                st.fqdn++;
                if (!add_fqdn(&cs, e, port, lookup, lookup_arg, &st))
                    goto oom;
                continue;
            }
            char text[PF_ADDRTEXT_MAX];
            pf_error err;
            bool v6 = s->addr_type == K8S_ADDR_IPV6;
            candidate *c = push(&cs);
            if (!c)
                goto oom;
            int len =
                snprintf(text, sizeof text, v6 ? "[%s]:%d" : "%s:%d", e->address, (int)port->port);
            if (len < 0 || (size_t)len >= sizeof text ||
                config_parse_sockaddr(text, &c->ep.addr, &err) != PF_OK ||
                (c->ep.addr.ss.ss_family == AF_INET6) != v6) {
                st.bad_address++;
                continue;
            }
            conditions(c, e);
            cs.len++;
        }
    }
    candidate *c = cs.c;
    size_t m = cs.len;
    /* Merge duplicates (an endpoint listed by two slices while it moves): the best
     * conditions win, so the move never takes it out. */
    if (m > 1)
        qsort(c, m, sizeof *c, compare_candidates);
    size_t u = 0;
    for (size_t i = 0; i < m; i++) {
        if (u > 0 && strcmp(c[u - 1].ep.addr.text, c[i].ep.addr.text) == 0) {
            candidate *keep = &c[u - 1];
            if (c[i].ready && !keep->ready)
                *keep = c[i];
            else if (!keep->ready && c[i].serving && !keep->serving)
                *keep = c[i];
            continue;
        }
        c[u++] = c[i];
    }
    for (size_t i = 0; i < u; i++) {
        if (c[i].ready)
            st.ready++;
        else if (c[i].serving && c[i].terminating)
            st.serving_only++;
        else
            st.not_serving++;
    }
    /* EndpointSlice conditions (KEP-1672): terminating endpoints that still serve take
     * traffic only when nothing is ready, so a rollout never drops to zero endpoints. */
    st.used_terminating = st.ready == 0 && st.serving_only > 0;
    size_t k = 0;
    if (!(*out = calloc(u ? u : 1, sizeof **out)))
        goto oom;
    for (size_t i = 0; i < u; i++) {
        bool use = st.used_terminating ? (c[i].serving && c[i].terminating) : c[i].ready;
        if (use)
            (*out)[k++] = c[i].ep;
    }
    free(c);
    if (stats)
        *stats = st;
    return k;
oom:
    free(cs.c);
    if (stats)
        *stats = st;
    return 0;
}
