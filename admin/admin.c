/* Admin endpoints, served with libevent's evhttp (requests here are few and small). */
#include "admin/admin_int.h"
#include "core/log.h"
#include "core/time.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Out of descriptors, the admin socket stops accepting this long rather than spin. */
#define ADMIN_ACCEPT_PAUSE_MS 100

void admin_reply(struct evhttp_request *req, int code, const char *reason, const char *content_type,
                 const char *body, size_t len) {
    struct evbuffer *out = evbuffer_new();
    if (!out) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(out, body, len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    evhttp_send_reply(req, code, reason, out);
    evbuffer_free(out);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *body) {
    admin_reply(req, code, reason, "text/plain; charset=utf-8", body, strlen(body));
}

static void reply_json(struct evhttp_request *req, json_t *doc) {
    char *text = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL;
    json_decref(doc);
    if (!text) {
        reply_text(req, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    /* A final newline, so that `curl .../clusters` leaves the shell prompt on its own line. */
    size_t len = strlen(text);
    char *line = realloc(text, len + 2);
    if (line) {
        text = line;
        text[len++] = '\n';
        text[len] = '\0';
    }
    admin_reply(req, 200, "OK", "application/json", text, len);
    free(text);
}

static bool only_get(struct evhttp_request *req) {
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD)
        return true;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
    reply_text(req, 405, "Method Not Allowed", "use GET\n");
    return false;
}

/* The body of a 503 from /ready: one "- " line per thing still waited for, at most
 * READY_LINES_MAX of them and then how many more. */
#define READY_LINES_MAX 20
typedef struct ready_body {
    const pf_admin *admin;
    char text[READY_LINES_MAX * 320 + 128];
    size_t len, lines;
} ready_body;

static void ready_line(void *arg, const char *what) {
    ready_body *b = arg;
    if (b->lines++ >= READY_LINES_MAX || b->len >= sizeof b->text)
        return;
    int n = snprintf(b->text + b->len, sizeof b->text - b->len, "- %s\n", what);
    if (n > 0) /* a cut line leaves the buffer full: no later line is added */
        b->len += (size_t)n < sizeof b->text - b->len ? (size_t)n : sizeof b->text - b->len;
}

/* A cluster without its first endpoint set: for DNS, the words of its "dns: resolving" log
 * line and the latest failure. */
static void ready_cluster(void *arg, size_t index) {
    ready_body *b = arg;
    const pf_config_cluster *c = proxy_cluster_config(b->admin->proxy, index);
    char line[PF_NAME_MAX + PF_DNS_NAME_MAX + PF_K8S_NAME_MAX + PF_ERROR_MAX + 64];
    pf_dns_cluster_status st;
    if (c->dns.name[0] && b->admin->dns &&
        discovery_dns_cluster_status(b->admin->dns, c->name, &st) == PF_OK)
        snprintf(line, sizeof line, "dns: resolving cluster=%s name=%s%s%s%s", c->name, st.name,
                 st.last_error[0] ? " (" : "", st.last_error, st.last_error[0] ? ")" : "");
    else if (c->kubernetes.service[0])
        snprintf(line, sizeof line, "cluster=%s: no endpoint set yet (Service %s)", c->name,
                 c->kubernetes.service);
    else
        snprintf(line, sizeof line, "cluster=%s: no endpoint set yet", c->name);
    ready_line(b, line);
}

static void handle_ready(struct evhttp_request *req, void *arg) {
    pf_admin *admin = arg;
    if (!only_get(req))
        return;
    /* Kubernetes: not before the first lists, so auto-discovered Services route at once. */
    if (proxy_ready(admin->proxy) && (!admin->k8s || discovery_k8s_synced(admin->k8s))) {
        reply_text(req, 200, "OK", "ready\n");
        return;
    }
    if (proxy_draining(admin->proxy)) {
        reply_text(req, 503, "Service Unavailable", "draining\n");
        return;
    }
    ready_body *b = calloc(1, sizeof *b);
    if (!b) {
        reply_text(req, 503, "Service Unavailable", "not ready\n");
        return;
    }
    b->admin = admin;
    b->len = (size_t)snprintf(b->text, sizeof b->text, "not ready, waiting for:\n");
    if (!proxy_started(admin->proxy))
        ready_line(b, "listeners: not started yet");
    if (admin->k8s)
        discovery_k8s_foreach_pending(admin->k8s, ready_line, b);
    proxy_foreach_unready_cluster(admin->proxy, ready_cluster, b);
    if (b->lines > READY_LINES_MAX && b->len < sizeof b->text)
        snprintf(b->text + b->len, sizeof b->text - b->len, "- and %zu more\n",
                 b->lines - READY_LINES_MAX);
    reply_text(req, 503, "Service Unavailable", b->text);
    free(b);
}

/* Liveness: the process answers here (the main loop runs) and every worker's event loop
 * has run lately (its heartbeat). A worker stuck in a call would otherwise leave a pod
 * that answers probes and no requests. */
static void handle_healthz(struct evhttp_request *req, void *arg) {
    pf_admin *admin = arg;
    if (!only_get(req))
        return;
    uint64_t beats[PF_MAX_WORKERS];
    unsigned n = proxy_worker_count(admin->proxy);
    if (n > PF_MAX_WORKERS)
        n = PF_MAX_WORKERS;
    for (unsigned k = 0; k < n; k++)
        beats[k] = proxy_worker_heartbeat_ms(admin->proxy, k);
    uint64_t now = pf_now_ms(); /* after the beats: a beat is never "in the future" */
    long stalled = proxy_stalled_worker(beats, n, now, PF_WORKER_STALL_MS);
    char body[128 + PF_MAX_WORKERS * 64];
    size_t len = 0;
    int m = stalled < 0
                ? snprintf(body, sizeof body, "ok\n")
                : snprintf(body, sizeof body,
                           "stalled: worker %ld has not run its event loop for %llu ms "
                           "(limit %u ms)\n",
                           stalled, (unsigned long long)(now - beats[stalled]), PF_WORKER_STALL_MS);
    len = m > 0 ? (size_t)m : 0;
    for (unsigned k = 0; k < n && len < sizeof body; k++) {
        m = snprintf(body + len, sizeof body - len, "worker %u: heartbeat %llu ms ago\n", k,
                     (unsigned long long)(beats[k] && now > beats[k] ? now - beats[k] : 0));
        len += m > 0 ? (size_t)m : 0;
    }
    if (stalled < 0)
        reply_text(req, 200, "OK", body);
    else
        reply_text(req, 503, "Service Unavailable", body);
}

static void handle_prometheus(struct evhttp_request *req, void *arg) {
    pf_admin *admin = arg;
    if (!only_get(req))
        return;
    char *text = metrics_render(admin->metrics);
    if (!text) {
        reply_text(req, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    admin_reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
    free(text);
}

static json_t *endpoint_json(const pf_endpoint *ep, pf_health *health) {
    json_t *e = json_object();
    json_object_set_new(e, "address", json_string(ep->addr.text));
    json_object_set_new(e, "weight", json_integer(ep->weight));
    json_object_set_new(e, "priority", json_integer(ep->priority));
    json_object_set_new(e, "healthy", json_boolean(ep->healthy));
    if (ep->zone[0])
        json_object_set_new(e, "zone", json_string(ep->zone));
    if (ep->stats) {
        json_object_set_new(e, "active_requests",
                            json_integer((json_int_t)atomic_load(&ep->stats->active_requests)));
        json_object_set_new(e, "requests_total",
                            json_integer((json_int_t)atomic_load(&ep->stats->requests_total)));
        json_object_set_new(
            e, "connect_failures_total",
            json_integer((json_int_t)atomic_load(&ep->stats->connect_failures_total)));
    }
    if (health)
        health_describe(health, ep, e);
    return e;
}

/* Wall-clock microseconds as RFC 3339 UTC with milliseconds, or JSON null for 0. */
static json_t *time_json(uint64_t wall_us) {
    char buf[40], frac[8];
    struct tm tm;
    time_t secs = (time_t)(wall_us / 1000000u);
    if (!wall_us || !gmtime_r(&secs, &tm) || !strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm))
        return json_null();
    snprintf(frac, sizeof frac, ".%03uZ", (unsigned)(wall_us / 1000u % 1000u));
    strncat(buf, frac, sizeof buf - strlen(buf) - 1);
    return json_string(buf);
}

static json_t *ttl_json(uint32_t ttl) {
    return ttl == UINT32_MAX ? json_null() : json_integer(ttl);
}

static json_t *dns_query_json(const pf_dns_query_status *q) {
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(q->name));
    json_object_set_new(o, "type", json_string(q->type));
    json_object_set_new(
        o, "status",
        q->last_status < 0 ? json_null() : json_string(discovery_dns_status_label(q->last_status)));
    json_object_set_new(o, "ttl", ttl_json(q->ttl));
    json_object_set_new(o, "last_answer", time_json(q->last_answer_wall_us));
    json_object_set_new(o, "next_refresh_in_seconds",
                        q->next_refresh_ms < 0 ? json_null()
                                               : json_real((double)q->next_refresh_ms / 1000.0));
    json_object_set_new(o, "failures", json_integer(q->failures));
    json_object_set_new(o, "holding", json_boolean(q->holding));
    if (q->holding)
        json_object_set_new(o, "hold_left_seconds", json_real((double)q->hold_left_ms / 1000.0));
    return o;
}

/* "source": "kubernetes" and what the watches know of the cluster's Service. */
static bool k8s_source_json(const pf_admin *admin, const pf_config_cluster *cfg, json_t *c) {
    pf_k8s_cluster_status st;
    if (!admin->k8s || discovery_k8s_cluster_status(admin->k8s, cfg->name, &st) != PF_OK)
        return false;
    json_t *k = json_object();
    json_object_set_new(c, "source", json_string("kubernetes"));
    json_object_set_new(k, "service", json_string(st.service));
    json_object_set_new(k, "namespace", json_string(st.namespace));
    json_object_set_new(k, "port", st.port[0] ? json_string(st.port) : json_null());
    json_object_set_new(k, "resource_version",
                        st.resource_version[0] ? json_string(st.resource_version) : json_null());
    json_object_set_new(k, "synced", json_boolean(st.synced));
    json_object_set_new(k, "last_event", time_json(st.last_event_wall_us));
    json_object_set_new(k, "last_event_age_seconds",
                        st.last_event_wall_us ? json_real((double)st.last_event_age_ms / 1000.0)
                                              : json_null());
    json_object_set_new(k, "slices", json_integer((json_int_t)st.slices));
    json_object_set_new(k, "endpoints", json_integer((json_int_t)st.endpoints));
    json_object_set_new(k, "using_terminating", json_boolean(st.using_terminating));
    if (st.external_name[0])
        json_object_set_new(k, "external_name", json_string(st.external_name));
    json_object_set_new(k, "publishes", json_integer((json_int_t)st.publishes));
    json_object_set_new(k, "last_error",
                        st.last_error[0] ? json_string(st.last_error) : json_null());
    json_object_set_new(k, "last_error_time", time_json(st.last_error_wall_us));
    json_object_set_new(c, "kubernetes", k);
    return true;
}

/* "source" and, for a DNS cluster, what the resolver knows of its name. */
static void cluster_source_json(const pf_admin *admin, const pf_config_cluster *cfg, json_t *c) {
    pf_dns_cluster_status st;
    if (k8s_source_json(admin, cfg, c))
        return;
    if (!admin->dns || discovery_dns_cluster_status(admin->dns, cfg->name, &st) != PF_OK) {
        json_object_set_new(c, "source", json_string("static"));
        return;
    }
    json_t *d = json_object(), *queries = json_array();
    json_object_set_new(c, "source", json_string("dns"));
    json_object_set_new(d, "name", json_string(st.name));
    json_object_set_new(d, "record", json_string(config_dns_record_name(st.record)));
    if (st.port)
        json_object_set_new(d, "port", json_integer(st.port));
    json_object_set_new(d, "last_refresh", time_json(st.last_refresh_wall_us));
    json_object_set_new(d, "last_refresh_age_seconds",
                        st.last_refresh_wall_us ? json_real((double)st.last_refresh_age_ms / 1000.0)
                                                : json_null());
    json_object_set_new(d, "ttl", ttl_json(st.ttl));
    json_object_set_new(d, "last_error",
                        st.last_error[0] ? json_string(st.last_error) : json_null());
    json_object_set_new(d, "last_error_time", time_json(st.last_error_wall_us));
    json_object_set_new(d, "publishes", json_integer((json_int_t)st.publishes));
    json_object_set_new(d, "answer_to_publish_us",
                        json_integer((json_int_t)st.answer_to_publish_us));
    if (st.record == PF_DNS_RECORD_SRV)
        json_object_set_new(d, "target_queries", json_integer((json_int_t)st.target_queries));
    for (size_t i = 0; i < st.query_count; i++)
        json_array_append_new(queries, dns_query_json(&st.queries[i]));
    json_object_set_new(d, "queries", queries);
    json_object_set_new(c, "dns", d);
}

static void handle_clusters(struct evhttp_request *req, void *arg) {
    pf_admin *admin = arg;
    if (!only_get(req))
        return;
    json_t *clusters = json_array();
    for (size_t i = 0; i < proxy_cluster_count(admin->proxy); i++) {
        if (proxy_cluster_retired(admin->proxy, i))
            continue; /* removed by a reload (or gone from Kubernetes) */
        const pf_config_cluster *cfg = proxy_cluster_config(admin->proxy, i);
        pf_endpoint_slot *slot = proxy_cluster_slot(admin->proxy, i);
        pf_endpoint_set *set = discovery_slot_acquire(slot);
        json_t *c = json_object();
        json_object_set_new(c, "name", json_string(cfg->name));
        cluster_source_json(admin, cfg, c);
        json_object_set_new(c, "lb_policy", json_string(config_lb_policy_name(cfg->lb_policy)));
        json_object_set_new(c, "version",
                            json_integer((json_int_t)discovery_slot_generation(slot)));
        json_t *eps = json_array();
        for (size_t k = 0; set && k < set->count; k++)
            json_array_append_new(eps,
                                  endpoint_json(&set->endpoints[k],
                                                i < admin->health_count ? admin->health[i] : NULL));
        json_object_set_new(c, "endpoints", eps);
        proxy_cluster_describe_tls(admin->proxy, i, c);
        json_array_append_new(clusters, c);
        discovery_set_unref(set);
    }
    json_t *doc = json_object();
    json_object_set_new(doc, "clusters", clusters);
    if (admin->http_routes)
        json_object_set_new(doc, "http_routes", admin->http_routes(admin->http_routes_arg));
    reply_json(req, doc);
}

/* GET / (and /?anything): the HTML status page. Any other path falls to handle_other. */
static void handle_status(struct evhttp_request *req, void *arg) {
    pf_admin *admin = arg;
    if (!only_get(req))
        return;
    uint64_t started = pf_now_us();
    struct evbuffer *out = evbuffer_new();
    if (!out || admin_status_render(admin, out) != PF_OK) {
        evbuffer_free(out);
        reply_text(req, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    /* How long the render took, for the browser's network panel and bench/status_page.sh. */
    char timing[48];
    snprintf(timing, sizeof timing, "render;dur=%.3f", (double)(pf_now_us() - started) / 1000.0);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Server-Timing", timing);
    evhttp_add_header(h, "Content-Type", "text/html; charset=utf-8");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "Content-Security-Policy", admin_status_csp());
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

static void handle_other(struct evhttp_request *req, void *arg) {
    if (admin_handle_config_part(arg, req))
        return;
    reply_text(req, 404, "Not Found",
               "unknown admin path; try / /ready /healthz /stats/prometheus /clusters /config\n");
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg) {
    pf_admin *admin = arg;
    evconnlistener_enable(admin->listener);
}

/* The listening socket stays readable while a connection waits for a descriptor: without
 * a pause the main loop would spin on accept. Retried after a short while. */
static void on_accept_error(struct evconnlistener *listener, void *arg) {
    pf_admin *admin = arg;
    int e = EVUTIL_SOCKET_ERROR();
    log_debug("admin: accept: %s", strerror(e));
    if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
        return;
    evconnlistener_disable(listener);
    struct timeval wait = {0, ADMIN_ACCEPT_PAUSE_MS * 1000};
    evtimer_add(admin->accept_retry, &wait);
}

pf_admin *admin_new(struct event_base *base, const pf_config *cfg, pf_proxy *proxy,
                    pf_metrics *metrics, pf_error *err) {
    pf_admin *admin = calloc(1, sizeof *admin);
    if (!admin) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    admin->cfg = cfg;
    admin->proxy = proxy;
    admin->metrics = metrics;
    admin->version = "";
    admin->http = evhttp_new(base);
    admin->accept_retry = evtimer_new(base, on_accept_retry, admin);
    if (!admin->http || !admin->accept_retry) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        admin_free(admin);
        return NULL;
    }
    evhttp_set_allowed_methods(admin->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                                EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    evhttp_set_max_headers_size(admin->http, 16 * 1024);
    /* Configs for the config API may be large; every other endpoint takes no body. */
    evhttp_set_max_body_size(admin->http, ADMIN_MAX_BODY);
    evhttp_set_timeout(admin->http, 10);
    evhttp_set_cb(admin->http, "/ready", handle_ready, admin);
    evhttp_set_cb(admin->http, "/healthz", handle_healthz, admin);
    evhttp_set_cb(admin->http, "/stats/prometheus", handle_prometheus, admin);
    evhttp_set_cb(admin->http, "/clusters", handle_clusters, admin);
    evhttp_set_cb(admin->http, "/config", admin_handle_config, admin);
    evhttp_set_cb(admin->http, "/config/check", admin_handle_config_check, admin);
    evhttp_set_cb(admin->http, "/config/history", admin_handle_config_history, admin);
    evhttp_set_cb(admin->http, "/", handle_status, admin);
    evhttp_set_gencb(admin->http, handle_other, admin);
    const pf_sockaddr *addr = &cfg->admin_addr;
    evutil_socket_t fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct evhttp_bound_socket *bound = NULL;
    if (fd < 0 || bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 ||
        listen(fd, 64) < 0 || !(bound = evhttp_accept_socket_with_handle(admin->http, fd))) {
        pf_fail(err, PF_EIO, "admin: cannot listen on %s: %s", addr->text, strerror(errno));
        if (fd >= 0)
            close(fd);
        admin_free(admin);
        return NULL;
    }
    admin->listener = evhttp_bound_socket_get_listener(bound);
    evconnlistener_set_error_cb(admin->listener, on_accept_error);
    return admin;
}

void admin_set_health(pf_admin *admin, pf_health *const *health, size_t count) {
    admin->health = health;
    admin->health_count = count;
}

void admin_set_dns(pf_admin *admin, const pf_dns *dns) {
    admin->dns = dns;
}

void admin_set_kubernetes(pf_admin *admin, const pf_k8s *k8s) {
    admin->k8s = k8s;
}

void admin_set_http_routes(pf_admin *admin, json_t *(*report)(void *arg), void *arg) {
    admin->http_routes = report;
    admin->http_routes_arg = arg;
}

void admin_set_config_api(pf_admin *admin, const pf_admin_config_api *api) {
    admin->api = *api;
}

void admin_set_config(pf_admin *admin, const pf_config *cfg) {
    admin->cfg = cfg;
}

void admin_set_version(pf_admin *admin, const char *version) {
    admin->version = version;
}

void admin_free(pf_admin *admin) {
    if (!admin)
        return;
    if (admin->http)
        evhttp_free(admin->http);
    if (admin->accept_retry)
        event_free(admin->accept_retry);
    admin_status_free(admin);
    admin_token_free(&admin->token);
    free(admin);
}
