/* Admin endpoints, served with libevent's evhttp (requests here are few and small). */
#include "admin/admin.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct pf_admin {
    struct evhttp *http;
    const pf_config *cfg;
    pf_proxy *proxy;
    pf_metrics *metrics;
};

static void reply(struct evhttp_request *req, int code, const char *reason,
                  const char *content_type, const char *body, size_t len) {
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
    reply(req, code, reason, "text/plain; charset=utf-8", body, strlen(body));
}

static void reply_json(struct evhttp_request *req, json_t *doc) {
    char *text = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL;
    json_decref(doc);
    if (!text) {
        reply_text(req, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    reply(req, 200, "OK", "application/json", text, strlen(text));
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

static void handle_ready(struct evhttp_request *req, void *arg) {
    pf_admin *admin = arg;
    if (!only_get(req))
        return;
    if (proxy_ready(admin->proxy))
        reply_text(req, 200, "OK", "ready\n");
    else
        reply_text(req, 503, "Service Unavailable",
                   proxy_draining(admin->proxy) ? "draining\n" : "not ready\n");
}

static void handle_healthz(struct evhttp_request *req, void *arg) {
    if (only_get(req))
        reply_text(req, 200, "OK", "ok\n");
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
    reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
    free(text);
}

static json_t *endpoint_json(const pf_endpoint *ep) {
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
    return e;
}

static void handle_clusters(struct evhttp_request *req, void *arg) {
    pf_admin *admin = arg;
    if (!only_get(req))
        return;
    json_t *clusters = json_array();
    for (size_t i = 0; i < proxy_cluster_count(admin->proxy); i++) {
        const pf_config_cluster *cfg = proxy_cluster_config(admin->proxy, i);
        pf_endpoint_slot *slot = proxy_cluster_slot(admin->proxy, i);
        pf_endpoint_set *set = discovery_slot_acquire(slot);
        json_t *c = json_object();
        json_object_set_new(c, "name", json_string(cfg->name));
        json_object_set_new(c, "source", json_string("static"));
        json_object_set_new(c, "lb_policy", json_string(config_lb_policy_name(cfg->lb_policy)));
        json_object_set_new(c, "version",
                            json_integer((json_int_t)discovery_slot_generation(slot)));
        json_t *eps = json_array();
        for (size_t k = 0; set && k < set->count; k++)
            json_array_append_new(eps, endpoint_json(&set->endpoints[k]));
        json_object_set_new(c, "endpoints", eps);
        json_array_append_new(clusters, c);
        discovery_set_unref(set);
    }
    json_t *doc = json_object();
    json_object_set_new(doc, "clusters", clusters);
    reply_json(req, doc);
}

static void handle_config(struct evhttp_request *req, void *arg) {
    pf_admin *admin = arg;
    if (!only_get(req))
        return;
    char *text = config_dump_json(admin->cfg);
    if (!text) {
        reply_text(req, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    reply(req, 200, "OK", "application/json", text, strlen(text));
    free(text);
}

static void handle_other(struct evhttp_request *req, void *arg) {
    reply_text(req, 404, "Not Found",
               "unknown admin path; try /ready /healthz /stats/prometheus /clusters /config\n");
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
    admin->http = evhttp_new(base);
    if (!admin->http) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        admin_free(admin);
        return NULL;
    }
    evhttp_set_allowed_methods(admin->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                                EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    evhttp_set_max_headers_size(admin->http, 16 * 1024);
    evhttp_set_max_body_size(admin->http, 64 * 1024);
    evhttp_set_timeout(admin->http, 10);
    evhttp_set_cb(admin->http, "/ready", handle_ready, admin);
    evhttp_set_cb(admin->http, "/healthz", handle_healthz, admin);
    evhttp_set_cb(admin->http, "/stats/prometheus", handle_prometheus, admin);
    evhttp_set_cb(admin->http, "/clusters", handle_clusters, admin);
    evhttp_set_cb(admin->http, "/config", handle_config, admin);
    evhttp_set_gencb(admin->http, handle_other, admin);
    const pf_sockaddr *addr = &cfg->admin_addr;
    evutil_socket_t fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 ||
        listen(fd, 64) < 0 || !evhttp_accept_socket_with_handle(admin->http, fd)) {
        pf_fail(err, PF_EIO, "admin: cannot listen on %s: %s", addr->text, strerror(errno));
        if (fd >= 0)
            close(fd);
        admin_free(admin);
        return NULL;
    }
    return admin;
}

void admin_free(pf_admin *admin) {
    if (!admin)
        return;
    if (admin->http)
        evhttp_free(admin->http);
    free(admin);
}
