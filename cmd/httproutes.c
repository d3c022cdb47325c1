/* HTTPRoutes -> rules of the service routes table. A rebuild (any Service port or
 * HTTPRoute change) starts from nothing: the discovered ports and their clusters, the
 * HTTPRoutes and their translated rules, then per port the rules attached to it, sorted by
 * the Gateway API's precedence, become one router of the table. Rules naming a backend
 * that is not (yet) a discovered cluster are left out until it is: routing to a cluster
 * that is not there would fail requests, and the next rebuild, when the Service appears,
 * brings the rule in. Producer routes (in the Service's namespace) apply to every client;
 * consumer routes (in another namespace) only when that namespace is pilotfish's own. */
#include "cmd/httproutes.h"
#include "core/log.h"
#include "discovery/kubernetes_httproute.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A configured Kubernetes cluster (clusters[].kubernetes). A reload can neither add, remove
 * nor replace one, so what is copied at start stays true. */
typedef struct configured {
    char name[PF_NAME_MAX];
    char ns[PF_K8S_NAME_MAX], service[PF_K8S_NAME_MAX], port_name[PF_K8S_NAME_MAX];
    uint32_t port; /* 0: port_name, or "" for the Service's only (or http) port */
} configured;

struct pf_httproutes {
    pf_k8s *k8s;
    const pf_config_kubernetes *kc;
    pf_proxy *proxy;
    configured *configured;
    size_t configured_count;
    json_t *report; /* the last apply's */
};

/* One discovered Service port and its cluster. */
typedef struct port_ref {
    char ns[PF_K8S_NAME_MAX], service[PF_K8S_NAME_MAX], port_name[PF_K8S_NAME_MAX];
    char cluster[PF_NAME_MAX];
    int32_t port;
    bool is_default;
    size_t index; /* the proxy's cluster */
} port_ref;

/* One route of one rule, a candidate for a port. */
typedef struct candidate {
    const pf_httproute *route;
    const pf_httproute_rank *rank;
    size_t pos; /* rule and match order within the route */
    pf_config_route resolved;
} candidate;

typedef struct build {
    pf_httproutes *h;
    port_ref *ports;
    size_t port_count, port_cap;
    const pf_httproute **routes;
    size_t route_count, route_cap;
    bool oom;
} build;

static bool grow(void **arr, size_t *cap, size_t count, size_t size) {
    if (count < *cap)
        return true;
    size_t n = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, n * size);
    if (!p)
        return false;
    *arr = p;
    *cap = n;
    return true;
}

static void take_port(void *arg, const pf_k8s_service_port *port, size_t cookie) {
    build *b = arg;
    if (!grow((void **)&b->ports, &b->port_cap, b->port_count, sizeof *b->ports)) {
        b->oom = true;
        return;
    }
    port_ref *p = &b->ports[b->port_count++];
    snprintf(p->ns, sizeof p->ns, "%s", port->namespace);
    snprintf(p->service, sizeof p->service, "%s", port->service);
    snprintf(p->port_name, sizeof p->port_name, "%s", port->port_name);
    p->port = port->port;
    p->is_default = port->is_default;
    p->index = cookie;
    discovery_httproute_cluster_name(p->cluster, p->ns, p->service, p->port);
}

static void take_route(void *arg, const pf_httproute *route) {
    build *b = arg;
    if (!grow((void **)&b->routes, &b->route_cap, b->route_count, sizeof *b->routes)) {
        b->oom = true;
        return;
    }
    b->routes[b->route_count++] = route;
}

static const port_ref *find_cluster(const build *b, const char *name) {
    for (size_t i = 0; i < b->port_count; i++)
        if (strcmp(b->ports[i].cluster, name) == 0)
            return &b->ports[i];
    return NULL;
}

/* Does configured cluster c take port `port` of Service ns/service? By number; by name or
 * as the default port only through the Service's discovered ports, which say which it is. */
static bool configured_takes(const build *b, const configured *c, const char *ns,
                             const char *service, int32_t port) {
    if (strcmp(c->ns, ns) != 0 || strcmp(c->service, service) != 0)
        return false;
    if (c->port)
        return c->port == (uint32_t)port;
    for (size_t i = 0; i < b->port_count; i++) {
        const port_ref *p = &b->ports[i];
        if (p->port == port && strcmp(p->ns, ns) == 0 && strcmp(p->service, service) == 0)
            return c->port_name[0] ? strcmp(c->port_name, p->port_name) == 0 : p->is_default;
    }
    return false;
}

/* The proxy's cluster for a backend named as auto-discovery names it ("svc.ns:port"): a
 * configured Kubernetes cluster of that Service port first (its timeouts, retries, health
 * checks and TLS are the ones written for it), else the discovered one. -1: neither. */
static long find_backend(const build *b, const char *name) {
    char svc[PF_NAME_MAX];
    snprintf(svc, sizeof svc, "%s", name);
    char *dot = strchr(svc, '.'), *colon = strrchr(svc, ':');
    if (dot && colon && colon > dot) {
        *dot = *colon = '\0';
        int32_t port = (int32_t)strtol(colon + 1, NULL, 10);
        for (size_t i = 0; i < b->h->configured_count; i++) {
            const configured *c = &b->h->configured[i];
            long index;
            if (configured_takes(b, c, dot + 1, svc, port) &&
                (index = proxy_cluster_find(b->h->proxy, c->name)) >= 0)
                return index;
        }
    }
    const port_ref *p = find_cluster(b, name);
    return p ? (long)p->index : -1;
}

/* Resolves the cluster names of `r` in place; false with the missing one named. */
static bool resolve(const build *b, pf_config_route *r, char *missing, size_t cap) {
    long index;
    for (size_t w = 0; w < r->weighted_count; w++) {
        if ((index = find_backend(b, r->clusters[w].name)) < 0) {
            snprintf(missing, cap, "%s", r->clusters[w].name);
            return false;
        }
        r->clusters[w].cluster_index = (size_t)index;
    }
    if (r->cluster[0]) {
        if ((index = find_backend(b, r->cluster)) < 0) {
            snprintf(missing, cap, "%s", r->cluster);
            return false;
        }
        r->cluster_index = (size_t)index;
    }
    if (r->has_mirror) {
        if ((index = find_backend(b, r->mirror.cluster)) < 0) {
            snprintf(missing, cap, "%s", r->mirror.cluster);
            return false;
        }
        r->mirror.cluster_index = (size_t)index;
    }
    return true;
}

static bool parent_takes(const pf_httproute_parent *parent, const port_ref *p) {
    if (strcmp(parent->ns, p->ns) != 0 || strcmp(parent->service, p->service) != 0)
        return false;
    if (parent->port && parent->port != p->port)
        return false;
    return !parent->port_name[0] || strcmp(parent->port_name, p->port_name) == 0;
}

static int by_precedence(const void *x, const void *y) {
    const candidate *a = x, *b = y;
    return discovery_httproute_compare(a->route, a->rank, a->pos, b->route, b->rank, b->pos);
}

/* On demand, a backend Service no request named is not watched: ask for it. */
static void want_backend(pf_httproutes *h, const char *cluster) {
    char svc[PF_NAME_MAX];
    snprintf(svc, sizeof svc, "%s", cluster);
    char *dot = strchr(svc, '.'), *colon = strrchr(svc, ':');
    if (h->kc->auto_mode != PF_K8S_ON_DEMAND || !dot || !colon || colon < dot)
        return;
    *dot = *colon = '\0';
    discovery_k8s_want(h->k8s, dot + 1, svc);
}

/* Why spec.hostnames does nothing here, for the log and /clusters. */
#define HOSTNAMES_IGNORED                                                                          \
    "spec.hostnames is ignored: a Service parent is selected by the Service a request names, "     \
    "and the Gateway API's mesh binding (GEP-1294) says implementations should not infer any "     \
    "functionality from hostnames"

/* The report entry of one route; rule reasons for this build in `rules`. */
static json_t *route_report(const pf_httproute *r, char (*rule_why)[PF_ERROR_MAX],
                            const char *route_why) {
    json_t *o = json_object(), *parents = json_array(), *rules = json_array();
    json_object_set_new(o, "namespace", json_string(r->ns));
    json_object_set_new(o, "name", json_string(r->name));
    for (size_t i = 0; i < r->parent_count; i++) {
        char p[PF_K8S_NAME_MAX * 3 + 16];
        const pf_httproute_parent *pr = &r->parents[i];
        if (pr->port)
            snprintf(p, sizeof p, "%s/%s:%d", pr->ns, pr->service, (int)pr->port);
        else
            snprintf(p, sizeof p, "%s/%s%s%s", pr->ns, pr->service, pr->port_name[0] ? ":" : "",
                     pr->port_name);
        json_array_append_new(parents, json_string(p));
    }
    json_object_set_new(o, "parents", parents);
    if (r->hostname_count) {
        json_t *hosts = json_array();
        for (size_t i = 0; i < r->hostname_count; i++)
            json_array_append_new(hosts, json_string(r->hostnames[i]));
        json_object_set_new(o, "hostnames", hosts);
        json_object_set_new(o, "hostnames_ignored", json_string(HOSTNAMES_IGNORED));
    }
    json_object_set_new(o, "applied", json_boolean(!route_why[0]));
    json_object_set_new(o, "reason", route_why[0] ? json_string(route_why) : json_null());
    for (size_t i = 0; !route_why[0] && i < r->rule_count; i++)
        json_array_append_new(
            rules, json_pack("{s:I, s:b, s:o}", "rule", (json_int_t)i, "applied", !rule_why[i][0],
                             "reason", rule_why[i][0] ? json_string(rule_why[i]) : json_null()));
    json_object_set_new(o, "rules", rules);
    return o;
}

/* One log line per reason that is new since the last report. */
static void log_new_reasons(const json_t *old, const json_t *entry) {
    const char *ns = json_string_value(json_object_get(entry, "namespace"));
    const char *name = json_string_value(json_object_get(entry, "name"));
    size_t i;
    json_t *o, *prev = NULL;
    json_array_foreach(old, i, o) {
        if (json_equal(json_object_get(o, "namespace"), json_object_get(entry, "namespace")) &&
            json_equal(json_object_get(o, "name"), json_object_get(entry, "name")))
            prev = o;
    }
    if (prev && json_equal(prev, entry))
        return;
    if (json_object_get(entry, "hostnames_ignored"))
        log_info("kubernetes: HTTPRoute %s/%s: %s", ns, name, HOSTNAMES_IGNORED);
    const char *why = json_string_value(json_object_get(entry, "reason"));
    if (why) {
        log_warn("kubernetes: HTTPRoute %s/%s skipped: %s", ns, name, why);
        return;
    }
    json_t *rule;
    size_t skipped = 0;
    json_array_foreach(json_object_get(entry, "rules"), i, rule) {
        const char *rwhy = json_string_value(json_object_get(rule, "reason"));
        if (rwhy) {
            log_warn("kubernetes: HTTPRoute %s/%s rule skipped: %s", ns, name, rwhy);
            skipped++;
        }
    }
    log_info("kubernetes: HTTPRoute %s/%s applied rules=%zu skipped=%zu", ns, name,
             json_array_size(json_object_get(entry, "rules")) - skipped, skipped);
}

static void apply_port(pf_httproutes *h, build *b, pf_service_routes *table, const port_ref *p,
                       candidate *all, size_t n) {
    qsort(all, n, sizeof *all, by_precedence);
    pf_config_route *routes = malloc(n * sizeof *routes);
    if (!routes) {
        b->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++)
        routes[i] = all[i].resolved;
    long id = proxy_service_routes_add_rules(table, routes, n);
    free(routes);
    if (id < 0) {
        log_error("kubernetes: HTTPRoute rules of %s cannot be built: %s", p->cluster,
                  pf_strerror((int)id));
        return;
    }
    char host[PF_DNS_NAME_MAX * 2];
    const char *forms[] = {"%s.%s", "%s.%s.svc", "%s.%s.svc.%s"};
    bool own = strcmp(p->ns, discovery_k8s_namespace(h->k8s)) == 0;
    for (int f = -1; f < 3; f++) {
        if (f < 0 && !own)
            continue; /* the short name is ours only in our own namespace */
        if (f < 0)
            snprintf(host, sizeof host, "%s", p->service);
        else
            snprintf(host, sizeof host, forms[f], p->service, p->ns, h->kc->cluster_domain);
        proxy_service_routes_use_rules(table, host, p->port, id);
        if (p->is_default)
            proxy_service_routes_use_rules(table, host, -1, id);
    }
}

void httproutes_apply(pf_httproutes *h, pf_service_routes *table) {
    build b = {.h = h};
    discovery_k8s_foreach_port(h->k8s, take_port, &b);
    discovery_k8s_foreach_httproute(h->k8s, take_route, &b);
    json_t *report = json_array();
    const char *own_ns = discovery_k8s_namespace(h->k8s);
    /* per route and rule: resolved copies, or the reason they are left out */
    candidate *cands = NULL;
    size_t cand_count = 0, cand_cap = 0;
    char(*why)[PF_ERROR_MAX] = calloc(PF_HTTPROUTE_RULES_MAX, sizeof *why);
    for (size_t ri = 0; !b.oom && why && ri < b.route_count; ri++) {
        const pf_httproute *r = b.routes[ri];
        char route_why[PF_ERROR_MAX] = "";
        memset(why, 0, PF_HTTPROUTE_RULES_MAX * sizeof *why);
        if (r->skipped[0])
            snprintf(route_why, sizeof route_why, "%s", r->skipped);
        size_t first = cand_count;
        for (size_t i = 0; !route_why[0] && i < r->rule_count; i++) {
            const pf_httproute_rule *rule = &r->rules[i];
            if (rule->skipped[0]) {
                snprintf(why[i], sizeof why[i], "%s", rule->skipped);
                continue;
            }
            size_t rule_first = cand_count;
            for (size_t k = 0; k < rule->route_count; k++) {
                char missing[PF_NAME_MAX];
                pf_config_route copy = rule->routes[k];
                if (!resolve(&b, &copy, missing, sizeof missing)) {
                    snprintf(why[i], sizeof why[i],
                             "rules[%zu]: backend %s is not a discovered Service port (yet)", i,
                             missing);
                    want_backend(h, missing);
                    cand_count = rule_first;
                    break;
                }
                if (!grow((void **)&cands, &cand_cap, cand_count, sizeof *cands)) {
                    b.oom = true;
                    break;
                }
                cands[cand_count++] = (candidate){r, &rule->ranks[k], i * 64 + k, copy};
            }
        }
        bool attached = false;
        for (size_t pi = 0; !route_why[0] && pi < r->parent_count; pi++) {
            const pf_httproute_parent *parent = &r->parents[pi];
            bool producer = strcmp(parent->ns, r->ns) == 0;
            if (!producer && strcmp(r->ns, own_ns) != 0)
                continue; /* a consumer route of other clients */
            for (size_t k = 0; k < b.port_count; k++)
                attached |= parent_takes(parent, &b.ports[k]);
        }
        if (!route_why[0] && !attached)
            snprintf(route_why, sizeof route_why,
                     "no parentRef names a port of a discovered Service%s",
                     strcmp(r->ns, own_ns) ? " (routes of other namespaces apply there)" : "");
        if (route_why[0])
            cand_count = first;
        json_t *entry = route_report(r, why, route_why);
        log_new_reasons(h->report, entry);
        json_array_append_new(report, entry);
    }
    /* per discovered port: the routes attached to it */
    candidate *mine = cand_count ? malloc(cand_count * sizeof *mine) : NULL;
    for (size_t k = 0; !b.oom && mine && k < b.port_count; k++) {
        size_t n = 0;
        for (size_t c = 0; c < cand_count; c++) {
            const pf_httproute *r = cands[c].route;
            bool takes = false;
            for (size_t pi = 0; pi < r->parent_count && !takes; pi++)
                takes = parent_takes(&r->parents[pi], &b.ports[k]) &&
                        (strcmp(r->parents[pi].ns, r->ns) == 0 || strcmp(r->ns, own_ns) == 0);
            if (takes)
                mine[n++] = cands[c];
        }
        if (n)
            apply_port(h, &b, table, &b.ports[k], mine, n);
    }
    if (b.oom || !why || (cand_count && !mine))
        log_error("kubernetes: out of memory applying HTTPRoutes; some are left out");
    free(mine);
    free(cands);
    free(why);
    free(b.ports);
    free(b.routes);
    json_decref(h->report);
    h->report = report;
}

static void list_report(void *arg, const pf_k8s_route_list_status *st) {
    json_t *o =
        json_pack("{s:s, s:s, s:b, s:I}", "namespace", st->namespace[0] ? st->namespace : "*",
                  "state", st->state, "synced", st->synced, "routes", (json_int_t)st->routes);
    if (o && st->last_event_wall_us)
        json_object_set_new(o, "last_event_unix_ms",
                            json_integer((json_int_t)(st->last_event_wall_us / 1000)));
    json_array_append_new(arg, o);
}

json_t *httproutes_report(void *arg) {
    pf_httproutes *h = arg;
    json_t *lists = json_array();
    discovery_k8s_foreach_httproute_list(h->k8s, list_report, lists);
    return json_pack("{s:o, s:o}", "lists", lists, "routes",
                     h->report ? json_incref(h->report) : json_array());
}

pf_httproutes *httproutes_new(pf_k8s *k8s, const pf_config_kubernetes *kc, pf_error *err) {
    pf_httproutes *h = calloc(1, sizeof *h);
    if (!h) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    h->k8s = k8s;
    h->kc = kc;
    if (discovery_k8s_watch_httproutes(k8s, err) != PF_OK) {
        free(h);
        return NULL;
    }
    return h;
}

int httproutes_use_configured(pf_httproutes *h, pf_proxy *proxy, const pf_config *cfg,
                              pf_error *err) {
    h->proxy = proxy;
    free(h->configured);
    h->configured_count = 0;
    if (!(h->configured =
              calloc(cfg->cluster_count ? cfg->cluster_count : 1, sizeof *h->configured)))
        return pf_fail(err, PF_ENOMEM, "out of memory");
    for (size_t i = 0; i < cfg->cluster_count; i++) {
        const pf_config_cluster *cl = &cfg->clusters[i];
        if (!cl->kubernetes.service[0])
            continue;
        configured *c = &h->configured[h->configured_count++];
        snprintf(c->name, sizeof c->name, "%s", cl->name);
        snprintf(c->ns, sizeof c->ns, "%s",
                 cl->kubernetes.namespace[0] ? cl->kubernetes.namespace
                                             : discovery_k8s_namespace(h->k8s));
        snprintf(c->service, sizeof c->service, "%s", cl->kubernetes.service);
        snprintf(c->port_name, sizeof c->port_name, "%s", cl->kubernetes.port_name);
        c->port = cl->kubernetes.port_number;
    }
    return PF_OK;
}

void httproutes_free(pf_httproutes *h) {
    if (!h)
        return;
    free(h->configured);
    json_decref(h->report);
    free(h);
}
