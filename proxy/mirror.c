/* Request mirroring: see mirror_int.h. A copy owns one allocation of text (method, target,
 * Host with "-shadow", client address, request id), a copy of the head and of the body,
 * and its exchange. Its downstream answers nobody: each way an exchange ends marks the
 * copy done, and it is freed from its own event, never inside the exchange's call. */
#include "proxy/mirror_int.h"
#include "core/log.h"
#include "core/time.h"
#include "proxy/exchange_int.h"

#include <stdlib.h>
#include <string.h>

struct pf_mirror {
    pf_exchange ex;
    pf_worker *w;
    pf_listener_rt *l;
    size_t cluster; /* slot */
    pf_head head;
    pf_forward_request fwd;
    char *text; /* what fwd's strings point to */
    struct evbuffer *body;
    size_t body_limit;
    bool too_big;
    bool launched, busy, done;
    uint64_t start_us;
    struct event *free_ev;
    struct pf_mirror *prev, *next; /* the worker's copies in flight */
};

static void on_free(evutil_socket_t fd, short what, void *arg);

static void mirror_free(pf_mirror *m) {
    if (m->launched) {
        pf_worker *w = m->w;
        if (m->prev)
            m->prev->next = m->next;
        else
            w->mirrors = m->next;
        if (m->next)
            m->next->prev = m->prev;
        w->mirror_count--;
        exchange_free(&m->ex);
    }
    if (m->free_ev)
        event_free(m->free_ev);
    if (m->body)
        evbuffer_free(m->body);
    http1_head_free(&m->head);
    free(m->text);
    free(m);
}

static void on_free(evutil_socket_t fd, short what, void *arg) {
    mirror_free(arg);
}

/* The copy's exchange ended, one way or another: free it once the call returns. */
static void finished(pf_mirror *m) {
    m->done = true;
    if (!m->busy)
        event_active(m->free_ev, EV_TIMEOUT, 0);
}

/* ---- a downstream that answers nobody ---- */

static int ds_send_head(void *ds, const pf_head *resp, int status, pf_body_mode upstream_body,
                        uint64_t content_length, bool *skip_body) {
    *skip_body = false; /* read the body to its end: the connection goes back to the pool */
    return PF_OK;
}
static void ds_send_interim(void *ds, const pf_head *resp, int status) {}
static void ds_send_body(void *ds, const char *at, size_t len) {}
static void ds_send_end(void *ds) {
    finished(ds);
}
static void ds_reply(void *ds, int status, const char *body, const char *extra_headers) {
    pf_mirror *m = ds;
    log_debug(
        "mirror not delivered client=%s cluster=%s status=%d reason=\"%.*s\"", m->ex.client_ip,
        m->ex.wc ? m->ex.wc->rt->cfg->name : "-", status,
        (int)(strlen(body) && body[strlen(body) - 1] == '\n' ? strlen(body) - 1 : strlen(body)),
        body);
    finished(m);
}
static void ds_abort(void *ds) {
    finished(ds);
}
static bool ds_output_full(const void *ds) {
    return false;
}
static void ds_wait_for_output(void *ds) {}
static void ds_request_writable(void *ds, bool after_retry) {}
static void ds_close(void *ds) {
    finished(ds);
}

static const pf_downstream_ops mirror_ops = {
    .send_head = ds_send_head,
    .send_interim = ds_send_interim,
    .send_body = ds_send_body,
    .send_end = ds_send_end,
    .reply = ds_reply,
    .abort = ds_abort,
    .output_full = ds_output_full,
    .wait_for_output = ds_wait_for_output,
    .request_writable = ds_request_writable,
    .close = ds_close,
};

/* ---- the copy ---- */

/* Copies `src` (len bytes) to *pos and NUL-terminates it; returns where it went. */
static const char *put_text(char **pos, const char *src, size_t len) {
    char *at = *pos;
    if (len)
        memcpy(at, src, len);
    at[len] = '\0';
    *pos = at + len + 1;
    return at;
}

static bool copy_head(pf_head *to, const pf_head *from) {
    *to = *from;
    to->buf = malloc(from->len ? from->len : 1);
    to->headers = malloc((from->count ? from->count : 1) * sizeof *to->headers);
    if (!to->buf || !to->headers)
        return false;
    memcpy(to->buf, from->buf, from->len);
    memcpy(to->headers, from->headers, from->count * sizeof *to->headers);
    to->cap = from->len;
    to->cap_headers = from->count;
    return true;
}

static void dropped(pf_listener_rt *l) {
    metrics_inc(l->mirrors_dropped, 1);
}

pf_mirror *mirror_new(pf_exchange *ex, const pf_config_route *r) {
    const pf_config_mirror *mc = &r->mirror;
    const pf_forward_request *fwd = &ex->req.fwd;
    if (ex->upgrade || !ex->req.head || mc->percent == 0 ||
        (mc->percent < 100 && worker_random(ex->w) % 100 >= mc->percent))
        return NULL;
    pf_mirror *m = calloc(1, sizeof *m);
    const char *method = fwd->method ? fwd->method : "GET";
    const char *client = ex->client_ip ? ex->client_ip : "";
    const char *rid = fwd->request_id ? fwd->request_id : "";
    const char *tp = fwd->traceparent ? fwd->traceparent : "";
    size_t need = strlen(method) + fwd->target_len + fwd->host_len + 7 + strlen(client) +
                  strlen(rid) + strlen(tp) + 6;
    if (!m || !(m->text = malloc(need)) || !copy_head(&m->head, ex->req.head))
        goto fail;
    m->w = ex->w;
    m->l = ex->l;
    m->cluster = mc->cluster_index;
    m->body_limit = ex->l->cfg->buffer_bytes;
    char *pos = m->text;
    m->fwd.method = put_text(&pos, method, strlen(method));
    m->fwd.target = put_text(&pos, fwd->target, fwd->target_len);
    m->fwd.target_len = fwd->target_len;
    m->fwd.root_first = fwd->root_first;
    /* The copy says what it is in its Host: "-shadow" after the name, before any port. */
    const char *h = fwd->host ? fwd->host : "";
    size_t hl = fwd->host ? fwd->host_len : 0, name = hl;
    const char *colon = hl && h[0] != '[' ? memchr(h, ':', hl) : NULL;
    const char *bracket = hl && h[0] == '[' ? memchr(h, ']', hl) : NULL;
    if (colon)
        name = (size_t)(colon - h);
    else if (bracket)
        name = (size_t)(bracket - h) + 1;
    char *host = pos;
    memcpy(pos, h, name);
    memcpy(pos + name, "-shadow", 7);
    memcpy(pos + name + 7, h + name, hl - name);
    pos[hl + 7] = '\0';
    pos += hl + 8;
    m->fwd.host = host;
    m->fwd.host_len = hl + 7;
    m->fwd.client_ip = put_text(&pos, client, strlen(client));
    m->fwd.proto = fwd->proto;
    m->fwd.request_id = fwd->request_id ? put_text(&pos, rid, strlen(rid)) : NULL;
    m->fwd.traceparent = fwd->traceparent ? put_text(&pos, tp, strlen(tp)) : NULL;
    return m;
fail:
    dropped(ex->l);
    if (m) {
        http1_head_free(&m->head);
        free(m->text);
        free(m);
    }
    return NULL;
}

void mirror_body(pf_mirror *m, const char *at, size_t len) {
    if (m->too_big)
        return;
    size_t kept = m->body ? evbuffer_get_length(m->body) : 0;
    if (kept + len > m->body_limit || (!m->body && !(m->body = evbuffer_new())) ||
        evbuffer_add(m->body, at, len) != 0) {
        m->too_big = true;
        if (m->body)
            evbuffer_drain(m->body, evbuffer_get_length(m->body));
    }
}

void mirror_drop(pf_mirror *m) {
    if (m)
        mirror_free(m);
}

/* Hands the kept body to the copy's exchange while it still wants it. */
static void send_body(pf_mirror *m) {
    size_t left = m->body ? evbuffer_get_length(m->body) : 0;
    while (left > 0 && !m->done) {
        size_t n = evbuffer_get_contiguous_space(m->body);
        if (n > left)
            n = left;
        exchange_request_body(&m->ex, (const char *)evbuffer_pullup(m->body, (ev_ssize_t)n), n);
        evbuffer_drain(m->body, n);
        left -= n;
    }
}

void mirror_launch(pf_mirror *m) {
    pf_worker *w = m->w;
    if (m->too_big || w->mirror_count >= PF_MIRRORS_MAX ||
        !(m->free_ev = evtimer_new(w->base, on_free, m))) {
        log_debug("mirror dropped client=%s reason=\"%s\"", m->fwd.client_ip,
                  m->too_big   ? "body larger than buffer_bytes"
                  : m->free_ev ? "too many copies in flight"
                               : "out of memory");
        dropped(m->l);
        mirror_free(m);
        return;
    }
    m->launched = true;
    m->start_us = pf_now_us();
    m->next = w->mirrors;
    if (w->mirrors)
        w->mirrors->prev = m;
    w->mirrors = m;
    w->mirror_count++;
    metrics_inc(m->l->mirrors_sent, 1);
    size_t len = m->body ? evbuffer_get_length(m->body) : 0;
    m->fwd.body = len ? PF_BODY_LENGTH : PF_BODY_NONE;
    m->fwd.content_length = len;
    exchange_init(&m->ex, w, m->l, &mirror_ops, m, m->fwd.client_ip);
    exchange_begin(&m->ex, &m->head);
    exchange_describe(&m->ex, m->fwd.method, NULL, 0, NULL, 0);
    pf_exchange_request req = {.head = &m->head, .fwd = m->fwd};
    m->busy = true;
    exchange_start_mirror(&m->ex, &req, m->cluster);
    send_body(m);
    if (!m->done)
        exchange_request_end(&m->ex);
    m->busy = false;
    if (m->done)
        event_active(m->free_ev, EV_TIMEOUT, 0);
}

bool mirror_started_before(const pf_worker *w, uint64_t us) {
    for (const pf_mirror *m = w->mirrors; m; m = m->next)
        if (m->start_us <= us)
            return true;
    return false;
}

void mirror_free_all(pf_worker *w) {
    while (w->mirrors)
        mirror_free(w->mirrors);
}
