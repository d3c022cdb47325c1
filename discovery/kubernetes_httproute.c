/* HTTPRoute -> pilotfish routes. Each match of each rule is written as the JSON of a
 * configured route and parsed by config_parse_route, so a header pilotfish may not set, a
 * regex PCRE2 refuses or a rewrite without its match is refused exactly as in a config
 * file, and the message becomes the rule's reason to be skipped.
 *
 * Gateway API rules followed (HTTPRoute v1 reference):
 *   - a RegularExpression path is a PCRE2 pattern on the whole path (match.regex); it
 *     ranks after Exact and before PathPrefix (its precedence is the implementation's);
 *   - a PathPrefix matches whole path segments ("/foo" takes "/foo" and "/foo/x", not
 *     "/foobar"), and a trailing "/" is ignored: it becomes an exact route for "/foo" and a
 *     prefix route for "/foo/";
 *   - no matches means one match of PathPrefix "/";
 *   - a rule without backendRefs that does not redirect answers 500, as does one whose
 *     weights are all 0;
 *   - backendRefs default to group "" and kind Service, weight 1, namespace the route's;
 *     their port is required.
 * Everything else a rule may ask (other filter kinds, other backend kinds, a backend in
 * another namespace, which would need a ReferenceGrant) skips the rule, with the reason. */
#include "discovery/kubernetes_httproute.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTE_JSON_MAX (256u * 1024u) /* one generated route; bounded by the object's size */

static const char *str_at(json_t *obj, const char *key) {
    return json_string_value(json_object_get(obj, key));
}

static bool copy(char *out, size_t cap, const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n >= cap)
        return false;
    memcpy(out, s ? s : "", n + 1);
    return true;
}

void discovery_httproute_cluster_name(char out[PF_NAME_MAX], const char *ns, const char *service,
                                      int32_t port) {
    /* cut like auto-discovery cuts it: the names then still agree */
    if (snprintf(out, PF_NAME_MAX, "%s.%s:%d", service, ns, (int)port) >= PF_NAME_MAX)
        out[PF_NAME_MAX - 1] = '\0';
}

/* A rule's translation in progress: the reason it is skipped, first one wins. */
typedef struct rule_ctx {
    const pf_httproute *route;
    size_t index;
    char why[PF_ERROR_MAX];
} rule_ctx;

static void skip(rule_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void skip(rule_ctx *c, const char *fmt, ...) {
    if (c->why[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
}

/* Header edit values are templates: a '%' of the HTTPRoute is a literal one. */
static json_t *template_literal(const char *v) {
    size_t n = strlen(v), pct = 0;
    for (size_t i = 0; i < n; i++)
        pct += v[i] == '%';
    char *buf = malloc(n + pct + 1), *o = buf;
    if (!buf)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        *o++ = v[i];
        if (v[i] == '%')
            *o++ = '%';
    }
    *o = '\0';
    json_t *s = json_string(buf);
    free(buf);
    return s;
}

/* RequestHeaderModifier / ResponseHeaderModifier -> {"set": {}, "add": {}, "remove": []}. */
static json_t *header_edits(rule_ctx *c, json_t *mod, const char *what) {
    json_t *out = json_object();
    static const char *const maps[] = {"set", "add"};
    for (size_t m = 0; out && m < 2; m++) {
        json_t *list = json_object_get(mod, maps[m]), *item;
        size_t i;
        if (!list)
            continue;
        json_t *obj = json_object();
        json_array_foreach(list, i, item) {
            const char *name = str_at(item, "name"), *value = str_at(item, "value");
            if (!name || !value) {
                skip(c, "%s.%s[%zu] needs a name and a value", what, maps[m], i);
                continue;
            }
            json_object_set_new(obj, name, template_literal(value));
        }
        json_object_set_new(out, maps[m], obj);
    }
    json_t *remove = json_object_get(mod, "remove");
    if (out && json_is_array(remove) && json_array_size(remove))
        json_object_set(out, "remove", remove);
    return out;
}

/* A backendRef (or a mirror's) to a Service of the route's namespace: its cluster name. */
static bool backend_cluster(rule_ctx *c, json_t *ref, const char *what, char name[PF_NAME_MAX]) {
    const char *group = str_at(ref, "group"), *kind = str_at(ref, "kind");
    const char *svc = str_at(ref, "name"), *ns = str_at(ref, "namespace");
    json_t *port = json_object_get(ref, "port");
    if ((group && group[0] && strcmp(group, "core") != 0) || (kind && strcmp(kind, "Service"))) {
        skip(c, "%s: kind %s%s%s is not supported (only Services)", what, group ? group : "",
             group && group[0] ? "/" : "", kind ? kind : "Service");
        return false;
    }
    if (!svc || !svc[0] || strlen(svc) >= PF_K8S_NAME_MAX) {
        skip(c, "%s: expected the name of a Service", what);
        return false;
    }
    if (ns && strcmp(ns, c->route->ns) != 0) {
        skip(c,
             "%s: Service %s/%s is in another namespace, which needs a ReferenceGrant; "
             "pilotfish reads none",
             what, ns, svc);
        return false;
    }
    if (!json_is_integer(port) || json_integer_value(port) < 1 ||
        json_integer_value(port) > 65535) {
        skip(c, "%s: Service %s needs a port (1-65535)", what, svc);
        return false;
    }
    discovery_httproute_cluster_name(name, c->route->ns, svc, (int32_t)json_integer_value(port));
    return true;
}

/* What the filters of a rule (or of one backendRef) make of the route. */
typedef struct filters {
    json_t *request_headers, *response_headers, *rewrite_path, *redirect, *mirror;
    const char *host_rewrite;
    bool prefix_rewrite; /* rewrite or redirect path by ReplacePrefixMatch */
    const char *prefix_replacement;
    bool redirect_prefix;
} filters;

static void filters_clear(filters *f) {
    json_decref(f->request_headers);
    json_decref(f->response_headers);
    json_decref(f->rewrite_path);
    json_decref(f->redirect);
    json_decref(f->mirror);
    memset(f, 0, sizeof *f);
}

/* HTTPPathModifier: ReplaceFullPath or ReplacePrefixMatch. Returns the replacement, and
 * whether it replaces the prefix. */
static const char *path_modifier(rule_ctx *c, json_t *path, const char *what, bool *prefix) {
    const char *type = str_at(path, "type");
    *prefix = type && strcmp(type, "ReplacePrefixMatch") == 0;
    if (type && strcmp(type, "ReplaceFullPath") == 0)
        return str_at(path, "replaceFullPath") ? str_at(path, "replaceFullPath") : "/";
    if (*prefix) {
        const char *r = str_at(path, "replacePrefixMatch");
        return r && r[0] ? r : "/";
    }
    skip(c, "%s.path.type %s is not supported", what, type ? type : "(missing)");
    return NULL;
}

static void take_filters(rule_ctx *c, json_t *list, const char *where, bool backend, filters *f) {
    size_t i;
    json_t *flt;
    json_array_foreach(list, i, flt) {
        char what[96];
        const char *type = str_at(flt, "type");
        snprintf(what, sizeof what, "%s[%zu]", where, i);
        if (!type) {
            skip(c, "%s has no type", what);
            return;
        }
        bool req = strcmp(type, "RequestHeaderModifier") == 0;
        if (req || strcmp(type, "ResponseHeaderModifier") == 0) {
            json_t **slot = req ? &f->request_headers : &f->response_headers;
            if (*slot) {
                skip(c, "%s: %s given twice", what, type);
                return;
            }
            *slot = header_edits(
                c, json_object_get(flt, req ? "requestHeaderModifier" : "responseHeaderModifier"),
                what);
            continue;
        }
        if (backend) {
            skip(c, "%s: filter %s is not supported on a backendRef", what, type);
            return;
        }
        if (strcmp(type, "URLRewrite") == 0 && !f->rewrite_path && !f->host_rewrite) {
            json_t *rw = json_object_get(flt, "urlRewrite");
            f->host_rewrite = str_at(rw, "hostname");
            json_t *path = json_object_get(rw, "path");
            if (path) {
                const char *r = path_modifier(c, path, what, &f->prefix_rewrite);
                f->prefix_replacement = r;
                f->rewrite_path = r ? json_string(r) : NULL;
            }
        } else if (strcmp(type, "RequestRedirect") == 0 && !f->redirect) {
            json_t *rd = json_object_get(flt, "requestRedirect");
            f->redirect = json_object();
            const char *scheme = str_at(rd, "scheme"), *host = str_at(rd, "hostname");
            if (scheme)
                json_object_set_new(f->redirect, "scheme", json_string(scheme));
            if (host)
                json_object_set_new(f->redirect, "host", json_string(host));
            if (json_is_integer(json_object_get(rd, "port")))
                json_object_set(f->redirect, "port", json_object_get(rd, "port"));
            json_t *code = json_object_get(rd, "statusCode");
            json_object_set_new(
                f->redirect, "status",
                json_integer(json_is_integer(code) ? json_integer_value(code) : 302));
            json_t *path = json_object_get(rd, "path");
            if (path) {
                const char *r = path_modifier(c, path, what, &f->redirect_prefix);
                f->prefix_replacement = r;
                if (r)
                    json_object_set_new(f->redirect, "path", json_string(r));
            }
        } else if (strcmp(type, "RequestMirror") == 0 && !f->mirror) {
            json_t *m = json_object_get(flt, "requestMirror");
            char cluster[PF_NAME_MAX];
            if (!backend_cluster(c, json_object_get(m, "backendRef"), what, cluster))
                return;
            json_int_t percent = 100;
            json_t *p = json_object_get(m, "percent"), *fr = json_object_get(m, "fraction");
            if (json_is_integer(p)) {
                percent = json_integer_value(p);
            } else if (fr) {
                json_t *num = json_object_get(fr, "numerator"),
                       *den = json_object_get(fr, "denominator");
                json_int_t d = json_is_integer(den) ? json_integer_value(den) : 100;
                percent = d > 0 && json_is_integer(num) ? json_integer_value(num) * 100 / d : -1;
            }
            if (percent < 0 || percent > 100) {
                skip(c, "%s: the mirrored share must be 0-100%%", what);
                return;
            }
            f->mirror = json_pack("{s:s, s:I}", "cluster", cluster, "percent", percent);
        } else if (strcmp(type, "URLRewrite") == 0 || strcmp(type, "RequestRedirect") == 0 ||
                   strcmp(type, "RequestMirror") == 0) {
            skip(c, "%s: more than one %s (pilotfish applies one per rule)", what, type);
            return;
        } else {
            skip(c, "%s: filter type %s is not supported", what, type);
            return;
        }
    }
}

/* The weighted backendRefs -> "clusters"; NULL when the rule has none that take traffic. */
static json_t *backends(rule_ctx *c, json_t *refs) {
    size_t n = json_array_size(refs), i;
    json_t *ref;
    if (n == 0)
        return NULL;
    if (n > PF_WEIGHTED_CLUSTERS_MAX) {
        skip(c, "backendRefs: %zu of them; pilotfish splits over at most %d", n,
             PF_WEIGHTED_CLUSTERS_MAX);
        return NULL;
    }
    json_int_t weights[PF_WEIGHTED_CLUSTERS_MAX], max = 0;
    json_array_foreach(refs, i, ref) {
        json_t *w = json_object_get(ref, "weight");
        weights[i] = json_is_integer(w) ? json_integer_value(w) : 1;
        if (weights[i] < 0 || weights[i] > 1000000) {
            skip(c, "backendRefs[%zu].weight: out of range (0-1000000)", i);
            return NULL;
        }
        if (weights[i] > max)
            max = weights[i];
    }
    if (max == 0)
        return NULL;
    json_t *out = json_array();
    json_array_foreach(refs, i, ref) {
        char what[48], cluster[PF_NAME_MAX];
        snprintf(what, sizeof what, "backendRefs[%zu]", i);
        if (!backend_cluster(c, ref, what, cluster))
            break;
        /* pilotfish weights go to 10000: larger ones keep their proportions */
        json_int_t w = max > PF_CLUSTER_WEIGHT_MAX
                           ? (weights[i] * PF_CLUSTER_WEIGHT_MAX + max / 2) / max
                           : weights[i];
        json_t *item = json_pack("{s:s, s:I}", "name", cluster, "weight", w);
        filters bf = {0};
        snprintf(what, sizeof what, "backendRefs[%zu].filters", i);
        take_filters(c, json_object_get(ref, "filters"), what, true, &bf);
        if (bf.request_headers)
            json_object_set(item, "request_headers", bf.request_headers);
        if (bf.response_headers)
            json_object_set(item, "response_headers", bf.response_headers);
        filters_clear(&bf);
        json_array_append_new(out, item);
    }
    return out;
}

/* One route of the config's shape for a path condition, with the rule's actions. */
static json_t *route_json(const json_t *match_base, const char *path_key, const char *path,
                          json_t *clusters, const filters *f, bool exact_from_prefix) {
    json_t *r = json_object(), *m = json_deep_copy(match_base);
    json_object_set_new(m, path_key, json_string(path));
    json_object_set_new(r, "match", m);
    if (f->redirect) {
        json_t *rd = json_deep_copy(f->redirect);
        if (f->redirect_prefix && !exact_from_prefix && strcmp(path_key, "prefix") == 0) {
            json_object_del(rd, "path");
            json_object_set_new(rd, "prefix", json_string(f->prefix_replacement));
        }
        json_object_set_new(r, "redirect", rd);
    } else if (clusters) {
        json_object_set(r, "clusters", clusters);
    } else {
        json_object_set_new(
            r, "direct_response",
            json_pack("{s:i, s:s}", "status", 500, "body", "no backend for this HTTPRoute rule\n"));
        return r; /* the filters have nothing to act on */
    }
    if (f->request_headers)
        json_object_set(r, "request_headers", f->request_headers);
    if (f->response_headers)
        json_object_set(r, "response_headers", f->response_headers);
    if (f->rewrite_path) {
        bool prefix = f->prefix_rewrite && !exact_from_prefix && strcmp(path_key, "prefix") == 0;
        json_object_set_new(r, "rewrite",
                            json_pack("{s:O}", prefix ? "prefix" : "full_path", f->rewrite_path));
    }
    if (f->host_rewrite)
        json_object_set_new(r, "host_rewrite", json_string(f->host_rewrite));
    if (f->mirror)
        json_object_set(r, "mirror", f->mirror);
    return r;
}

/* Parses the generated JSON as a configured route; false with the reason on refusal. */
static bool add_route(rule_ctx *c, pf_httproute_rule *rule, json_t *r,
                      const pf_httproute_rank *rank) {
    char *text = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    if (!text || strlen(text) > ROUTE_JSON_MAX) {
        free(text);
        skip(c, "the rule is larger than %u bytes as a route", ROUTE_JSON_MAX);
        return false;
    }
    char source[PF_K8S_NAME_MAX + PF_HTTPROUTE_NAME_MAX + 16], path[32];
    snprintf(source, sizeof source, "HTTPRoute %s/%s", c->route->ns, c->route->name);
    snprintf(path, sizeof path, "rules[%zu]", c->index);
    pf_config_route parsed;
    pf_error err = {{0}};
    int rc = config_parse_route(text, source, path, &parsed, &err);
    free(text);
    if (rc != PF_OK) {
        /* "HTTPRoute ns/name: rules[0].request_headers...: why": the source is said once */
        const char *at = strstr(err.msg, "rules[");
        skip(c, "%s", at ? at : err.msg);
        return false;
    }
    rule->routes[rule->route_count] = parsed;
    rule->ranks[rule->route_count++] = *rank;
    return true;
}

static void value_conditions(rule_ctx *c, json_t *list, const char *what, bool header,
                             json_t *out) {
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item) {
        const char *type = str_at(item, "type"), *name = str_at(item, "name");
        const char *value = str_at(item, "value");
        bool regex = type && strcmp(type, "RegularExpression") == 0;
        if (type && !regex && strcmp(type, "Exact") != 0) {
            skip(c, "%s[%zu].type %s is not supported", what, i, type);
            return;
        }
        if (!name || !value) {
            skip(c, "%s[%zu] needs a name and a value", what, i);
            return;
        }
        char lower[PF_MATCH_NAME_MAX];
        snprintf(lower, sizeof lower, "%s", name);
        for (char *p = lower; header && *p; p++)
            *p = (char)tolower((unsigned char)*p);
        json_array_append_new(
            out, json_pack("{s:s, s:s}", "name", lower, regex ? "regex" : "exact", value));
    }
}

static void translate_match(rule_ctx *c, pf_httproute_rule *rule, json_t *match, json_t *clusters,
                            const filters *f) {
    json_t *base = json_object(), *headers = json_array(), *query = json_array();
    pf_httproute_rank rank = {0};
    value_conditions(c, json_object_get(match, "headers"), "headers", true, headers);
    value_conditions(c, json_object_get(match, "queryParams"), "queryParams", false, query);
    rank.headers = (uint32_t)json_array_size(headers);
    rank.query_params = (uint32_t)json_array_size(query);
    if (rank.headers)
        json_object_set(base, "headers", headers);
    if (rank.query_params)
        json_object_set(base, "query_params", query);
    json_decref(headers);
    json_decref(query);
    const char *method = str_at(match, "method");
    if (method) {
        json_object_set_new(base, "method", json_string(method));
        rank.method = true;
    }
    json_t *path = json_object_get(match, "path");
    json_t *type_field = json_object_get(path, "type"),
           *value_field = json_object_get(path, "value");
    /* the defaults stand for a field left out, never for one of the wrong type */
    if ((path && !json_is_object(path)) || (type_field && !json_is_string(type_field)) ||
        (value_field && !json_is_string(value_field)))
        skip(c, "path.type and path.value must be strings");
    const char *type = json_string_value(type_field);
    const char *value = json_string_value(value_field);
    if (!type)
        type = "PathPrefix";
    if (!value)
        value = "/";
    if (c->why[0]) {
        json_decref(base);
        return;
    }
    if (strcmp(type, "Exact") == 0) {
        if (f->prefix_rewrite || f->redirect_prefix)
            skip(c, "ReplacePrefixMatch needs a PathPrefix match");
        else
            add_route(c, rule, route_json(base, "path", value, clusters, f, false), &rank);
    } else if (strcmp(type, "PathPrefix") == 0) {
        char prefix[PF_PATH_MAX];
        size_t n = strlen(value);
        while (n > 1 && value[n - 1] == '/')
            n--; /* "/foo/" is "/foo" */
        if (n + 2 > sizeof prefix) {
            skip(c, "path.value is longer than %d characters", PF_PATH_MAX - 2);
        } else {
            memcpy(prefix, value, n);
            prefix[n] = '\0';
            rank.path = 2;
            rank.path_len = (uint32_t)n;
            if (n == 1) {
                add_route(c, rule, route_json(base, "prefix", "/", clusters, f, false), &rank);
            } else {
                /* whole segments: the path itself, and what lies below it */
                if (add_route(c, rule, route_json(base, "path", prefix, clusters, f, true),
                              &rank)) {
                    prefix[n] = '/';
                    prefix[n + 1] = '\0';
                    add_route(c, rule, route_json(base, "prefix", prefix, clusters, f, false),
                              &rank);
                }
            }
        }
    } else if (strcmp(type, "RegularExpression") == 0) {
        rank.path = 1;
        if (f->prefix_rewrite || f->redirect_prefix)
            skip(c, "ReplacePrefixMatch needs a PathPrefix match");
        else
            add_route(c, rule, route_json(base, "regex", value, clusters, f, false), &rank);
    } else {
        skip(c, "path.type %s is not supported", type);
    }
    json_decref(base);
}

static int translate_rule(pf_httproute *route, size_t index, json_t *rule_obj) {
    pf_httproute_rule *rule = &route->rules[index];
    rule_ctx c = {.route = route, .index = index};
    json_t *matches = json_object_get(rule_obj, "matches");
    size_t n = json_array_size(matches), i;
    if (n > PF_HTTPROUTE_MATCHES_MAX) {
        snprintf(rule->skipped, sizeof rule->skipped, "rules[%zu]: %zu matches; at most %d", index,
                 n, PF_HTTPROUTE_MATCHES_MAX);
        return PF_OK;
    }
    size_t cap = 2 * (n ? n : 1);
    rule->routes = calloc(cap, sizeof *rule->routes);
    rule->ranks = calloc(cap, sizeof *rule->ranks);
    if (!rule->routes || !rule->ranks)
        return PF_ENOMEM;
    filters f = {0};
    take_filters(&c, json_object_get(rule_obj, "filters"), "filters", false, &f);
    if (f.redirect && (f.rewrite_path || f.host_rewrite))
        skip(&c, "filters: RequestRedirect and URLRewrite exclude each other");
    json_t *clusters = c.why[0] ? NULL : backends(&c, json_object_get(rule_obj, "backendRefs"));
    if (!c.why[0] && n == 0) {
        json_t *all = json_object();
        translate_match(&c, rule, all, clusters, &f);
        json_decref(all);
    }
    json_t *match;
    json_array_foreach(matches, i, match) {
        if (c.why[0])
            break;
        translate_match(&c, rule, match, clusters, &f);
    }
    json_decref(clusters);
    filters_clear(&f);
    if (c.why[0]) {
        for (size_t k = 0; k < rule->route_count; k++)
            config_route_free(&rule->routes[k]);
        rule->route_count = 0;
        /* config's messages start with the path ("rules[0].match..."); ours do not */
        if (strncmp(c.why, "rules[", 6) == 0)
            memcpy(rule->skipped, c.why, sizeof rule->skipped);
        else
            snprintf(rule->skipped, sizeof rule->skipped, "rules[%zu]: %.400s", index, c.why);
    }
    return PF_OK;
}

static void parse_parents(pf_httproute *route, json_t *refs) {
    size_t i;
    json_t *ref;
    json_array_foreach(refs, i, ref) {
        const char *group = str_at(ref, "group"), *kind = str_at(ref, "kind");
        if (!group || (group[0] && strcmp(group, "core") != 0) || !kind ||
            strcmp(kind, "Service") != 0)
            continue; /* a Gateway: not pilotfish's */
        if (route->parent_count == PF_HTTPROUTE_PARENTS_MAX)
            break;
        pf_httproute_parent *p = &route->parents[route->parent_count];
        const char *ns = str_at(ref, "namespace");
        json_t *port = json_object_get(ref, "port");
        if (!copy(p->ns, sizeof p->ns, ns ? ns : route->ns) ||
            !copy(p->service, sizeof p->service, str_at(ref, "name")) || !p->service[0] ||
            !copy(p->port_name, sizeof p->port_name, str_at(ref, "sectionName")))
            continue;
        p->port = json_is_integer(port) ? (int32_t)json_integer_value(port) : 0;
        route->parent_count++;
    }
}

int discovery_httproute_parse(json_t *obj, pf_httproute **out, pf_error *err) {
    *out = NULL;
    json_t *meta = json_object_get(obj, "metadata"), *spec = json_object_get(obj, "spec");
    const char *name = str_at(meta, "name"), *ns = str_at(meta, "namespace");
    pf_httproute *r = calloc(1, sizeof *r);
    if (!r)
        return pf_fail(err, PF_ENOMEM, "out of memory");
    if (!name || !copy(r->name, sizeof r->name, name) || !copy(r->ns, sizeof r->ns, ns ? ns : "") ||
        !copy(r->created, sizeof r->created, str_at(meta, "creationTimestamp"))) {
        free(r);
        return pf_fail(err, PF_EINVAL, "HTTPRoute without a usable metadata.name");
    }
    parse_parents(r, json_object_get(spec, "parentRefs"));
    size_t hi;
    json_t *host;
    json_array_foreach(json_object_get(spec, "hostnames"), hi, host) {
        if (r->hostname_count < PF_HTTPROUTE_HOSTS_MAX && json_is_string(host) &&
            copy(r->hostnames[r->hostname_count], PF_HTTPROUTE_NAME_MAX, json_string_value(host)))
            r->hostname_count++;
    }
    json_t *rules = json_object_get(spec, "rules");
    size_t n = json_array_size(rules);
    if (r->parent_count == 0) {
        snprintf(r->skipped, sizeof r->skipped,
                 "no parentRef names a Service (group \"\", kind Service); other parents "
                 "(Gateways) are not pilotfish's");
    } else if (n > PF_HTTPROUTE_RULES_MAX) {
        snprintf(r->skipped, sizeof r->skipped, "%zu rules; at most %d", n, PF_HTTPROUTE_RULES_MAX);
    } else {
        r->rule_count = n;
        for (size_t i = 0; i < n; i++) {
            if (translate_rule(r, i, json_array_get(rules, i)) != PF_OK) {
                discovery_httproute_free(r);
                return pf_fail(err, PF_ENOMEM, "out of memory");
            }
        }
    }
    *out = r;
    return PF_OK;
}

void discovery_httproute_free(pf_httproute *route) {
    if (!route)
        return;
    for (size_t i = 0; i < route->rule_count; i++) {
        for (size_t k = 0; k < route->rules[i].route_count; k++)
            config_route_free(&route->rules[i].routes[k]);
        free(route->rules[i].routes);
        free(route->rules[i].ranks);
    }
    free(route);
}

int discovery_httproute_compare(const pf_httproute *a, const pf_httproute_rank *ar, size_t a_pos,
                                const pf_httproute *b, const pf_httproute_rank *br, size_t b_pos) {
    if (ar->path != br->path)
        return ar->path < br->path ? -1 : 1;
    if (ar->path_len != br->path_len)
        return ar->path_len > br->path_len ? -1 : 1;
    if (ar->method != br->method)
        return ar->method ? -1 : 1;
    if (ar->headers != br->headers)
        return ar->headers > br->headers ? -1 : 1;
    if (ar->query_params != br->query_params)
        return ar->query_params > br->query_params ? -1 : 1;
    if (a != b) {
        int c = strcmp(a->created, b->created);
        if (c == 0)
            c = strcmp(a->ns, b->ns);
        if (c == 0)
            c = strcmp(a->name, b->name);
        if (c)
            return c;
    }
    return a_pos < b_pos ? -1 : a_pos > b_pos;
}
