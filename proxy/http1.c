/* HTTP/1.x message heads and the heads pilotfish writes. */
#include "proxy/http1.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

void http1_head_init(pf_head *h, size_t byte_limit, size_t max_headers) {
    memset(h, 0, sizeof *h);
    h->byte_limit = byte_limit;
    h->max_headers = max_headers;
}

void http1_head_reset(pf_head *h) {
    h->len = 0;
    h->count = 0;
    h->first_off = h->first_len = 0;
    h->last_was_value = false;
}

void http1_head_free(pf_head *h) {
    free(h->buf);
    free(h->headers);
    memset(h, 0, sizeof *h);
}

/* A keep-alive connection gives its head buffers back after every response (an idle
 * connection holds none) and takes them again for the next request: through malloc, that
 * is two frees and two allocations per request. Released buffers of the first size wait
 * here instead, per thread (a worker's heads stay on its thread), a bounded number of them;
 * beyond that they go back to malloc. */
#define HEAD_FIRST_BYTES 1024u
#define HEAD_FIRST_FIELDS 16u
#define HEAD_SPARES 32u

typedef struct head_spares {
    void *bufs[HEAD_SPARES], *fields[HEAD_SPARES];
    unsigned n_bufs, n_fields;
} head_spares;

static _Thread_local head_spares spares;

static void *spare_take(void **stack, unsigned *n) {
    return *n ? stack[--*n] : NULL;
}

static void spare_give(void **stack, unsigned *n, void *p) {
    if (*n < HEAD_SPARES)
        stack[(*n)++] = p;
    else
        free(p);
}

void http1_head_spares_free(void) {
    while (spares.n_bufs)
        free(spares.bufs[--spares.n_bufs]);
    while (spares.n_fields)
        free(spares.fields[--spares.n_fields]);
}

void http1_head_release(pf_head *h) {
    size_t byte_limit = h->byte_limit, max_headers = h->max_headers;
    if (h->buf && h->cap == HEAD_FIRST_BYTES) {
        spare_give(spares.bufs, &spares.n_bufs, h->buf);
        h->buf = NULL;
    }
    if (h->headers && h->cap_headers == HEAD_FIRST_FIELDS) {
        spare_give(spares.fields, &spares.n_fields, h->headers);
        h->headers = NULL;
    }
    if (h->buf || h->headers)
        http1_head_free(h);
    http1_head_init(h, byte_limit, max_headers);
}

static int grow(pf_head *h, size_t len) {
    if (h->len + len + 1 > h->byte_limit)
        return PF_ELIMIT;
    size_t cap = h->cap ? h->cap : HEAD_FIRST_BYTES;
    while (cap < h->len + len + 1)
        cap *= 2;
    if (cap > h->byte_limit)
        cap = h->byte_limit;
    char *buf = !h->buf && cap == HEAD_FIRST_BYTES ? spare_take(spares.bufs, &spares.n_bufs) : NULL;
    if (buf) {
        h->buf = buf;
        h->cap = cap;
        return PF_OK;
    }
    buf = realloc(h->buf, cap);
    if (!buf)
        return PF_ENOMEM;
    h->buf = buf;
    h->cap = cap;
    return PF_OK;
}

/* Inline: every span llhttp reports and every NUL between them comes through here. */
static inline __attribute__((always_inline)) int append_bytes(pf_head *h, const char *at,
                                                              size_t len) {
    /* One spare byte keeps room for the NUL that terminates each name and value; cap never
     * exceeds byte_limit, so fitting the buffer means fitting the limit. */
    if (h->len + len + 1 > h->cap) {
        int rc = grow(h, len);
        if (rc != PF_OK)
            return rc;
    }
    memcpy(h->buf + h->len, at, len);
    h->len += len;
    h->buf[h->len] = '\0';
    return PF_OK;
}

/* Ends the span being written with a NUL so names and values are C strings. */
static int terminate(pf_head *h) {
    int rc = append_bytes(h, "", 0);
    if (rc == PF_OK)
        h->len++;
    return rc;
}

int http1_head_append_first(pf_head *h, const char *at, size_t len) {
    int rc = append_bytes(h, at, len);
    if (rc == PF_OK)
        h->first_len += (uint32_t)len;
    return rc;
}

int http1_head_append_name(pf_head *h, const char *at, size_t len) {
    if (h->count == 0 || h->last_was_value) {
        if (h->count == 0 && h->first_len) {
            int rc = terminate(h);
            if (rc)
                return rc;
        }
        if (h->count == h->max_headers)
            return PF_ELIMIT;
        if (h->count == h->cap_headers) {
            size_t cap = h->cap_headers ? h->cap_headers * 2 : HEAD_FIRST_FIELDS;
            if (cap > h->max_headers)
                cap = h->max_headers;
            pf_header *headers = !h->headers && cap == HEAD_FIRST_FIELDS
                                     ? spare_take(spares.fields, &spares.n_fields)
                                     : NULL;
            if (!headers)
                headers = realloc(h->headers, cap * sizeof *headers);
            if (!headers)
                return PF_ENOMEM;
            h->headers = headers;
            h->cap_headers = cap;
        }
        if (h->count > 0) {
            int rc = terminate(h);
            if (rc)
                return rc;
        }
        pf_header *hd = &h->headers[h->count++];
        hd->name_off = (uint32_t)h->len;
        hd->name_len = 0;
        hd->value_off = 0;
        hd->value_len = 0;
        h->last_was_value = false;
    }
    int rc = append_bytes(h, at, len);
    if (rc == PF_OK)
        h->headers[h->count - 1].name_len += (uint32_t)len;
    return rc;
}

int http1_head_append_value(pf_head *h, const char *at, size_t len) {
    if (h->count == 0)
        return PF_EINVAL;
    pf_header *hd = &h->headers[h->count - 1];
    if (!h->last_was_value) {
        /* Room for the name's NUL, the value and the value's NUL, or nothing changes. */
        if (h->len + 1 + len + 1 > h->byte_limit)
            return PF_ELIMIT;
        int rc = terminate(h);
        if (rc)
            return rc;
        hd->value_off = (uint32_t)h->len;
        h->last_was_value = true;
    }
    int rc = append_bytes(h, at, len);
    if (rc == PF_OK)
        hd->value_len += (uint32_t)len;
    return rc;
}

int http1_head_finish_value(pf_head *h) {
    if (h->count == 0)
        return PF_OK;
    if (!h->last_was_value) {
        /* An empty value, if a parser reports none: an empty span of its own. */
        int rc = http1_head_append_value(h, "", 0);
        if (rc != PF_OK)
            return rc;
    }
    pf_header *hd = &h->headers[h->count - 1];
    while (hd->value_len > 0 && (h->buf[hd->value_off + hd->value_len - 1] == ' ' ||
                                 h->buf[hd->value_off + hd->value_len - 1] == '\t'))
        hd->value_len--;
    h->buf[hd->value_off + hd->value_len] = '\0';
    return PF_OK;
}

/* True when `value` (a Connection header's comma list) names the token. */
static bool list_has_token(const char *value, size_t value_len, const char *token,
                           size_t token_len) {
    size_t i = 0;
    while (i < value_len) {
        while (i < value_len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t start = i;
        while (i < value_len && value[i] != ',' && value[i] != ' ' && value[i] != '\t')
            i++;
        if (i - start == token_len && strncasecmp(value + start, token, token_len) == 0)
            return true;
    }
    return false;
}

/* RFC 9110 7.6.1 and the framing fields, by length first: one compare for most names. */
static bool hop_by_hop_name(const char *name, size_t len) {
#define IS(lit) (len == sizeof(lit) - 1 && strncasecmp(name, lit, sizeof(lit) - 1) == 0)
    switch (len) {
    case 2:
        return IS("te");
    case 7:
        return IS("trailer") || IS("upgrade");
    case 10:
        return IS("connection") || IS("keep-alive");
    case 14:
        return IS("content-length") || IS("http2-settings");
    case 16:
        return IS("proxy-connection");
    case 17:
        return IS("transfer-encoding");
    case 18:
        return IS("proxy-authenticate");
    case 19:
        return IS("proxy-authorization");
    default:
        return false;
    }
#undef IS
}

/* Whether a Connection header of h names a field other than keep-alive and close (the
 * usual values: keep-alive is removed anyway, and a field named Close is looked for): only
 * then does hop_by_hop need to look at the Connection lists for each header. */
static bool connection_nominates(const pf_head *h) {
    for (size_t c = 0; c < h->count; c++) {
        if (!http1_name_is(h, c, "connection"))
            continue;
        const char *v = http1_value(h, c);
        size_t len = h->headers[c].value_len, i = 0;
        while (i < len) {
            while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
                i++;
            size_t start = i;
            while (i < len && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
                i++;
            size_t n = i - start;
            if (n == 10 && strncasecmp(v + start, "keep-alive", 10) == 0)
                continue;
            /* a field named Close is as rare as it is obsolete: removed when nominated */
            if (n > 0 && (n != 5 || strncasecmp(v + start, "close", 5) != 0 ||
                          http1_find(h, "close", NULL) >= 0))
                return true;
        }
    }
    return false;
}

/* `nominated`: whether the head's Connection header names other fields (see
 * connection_nominates), worked out once per head by the writers so that the common case
 * skips the token scan. */
static bool hop_by_hop(const pf_head *h, size_t i, bool nominated) {
    if (hop_by_hop_name(http1_name(h, i), h->headers[i].name_len))
        return true;
    for (size_t c = 0; nominated && c < h->count; c++) {
        if (http1_name_is(h, c, "connection") &&
            list_has_token(http1_value(h, c), h->headers[c].value_len, http1_name(h, i),
                           h->headers[i].name_len))
            return true;
    }
    return false;
}

bool http1_upgrade_requested(const pf_head *h, int minor, const char **value, size_t *len) {
    if (minor < 1)
        return false;
    long up = http1_find(h, "upgrade", NULL);
    if (up < 0 || h->headers[up].value_len == 0)
        return false;
    for (size_t c = 0; c < h->count; c++) {
        if (http1_name_is(h, c, "connection") &&
            list_has_token(http1_value(h, c), h->headers[c].value_len, "upgrade", 7)) {
            *value = http1_value(h, (size_t)up);
            *len = h->headers[up].value_len;
            return true;
        }
    }
    return false;
}

void http1_format_ipv4(const void *addr, char *out) {
    const unsigned char *b = addr;
    for (int k = 0; k < 4; k++) {
        unsigned v = b[k];
        if (v >= 100)
            *out++ = (char)('0' + v / 100);
        if (v >= 10)
            *out++ = (char)('0' + v / 10 % 10);
        *out++ = (char)('0' + v % 10);
        *out++ = k < 3 ? '.' : '\0';
    }
}

bool http1_is_hop_by_hop(const pf_head *h, size_t i) {
    return hop_by_hop(h, i, true);
}

/* Heads are assembled on the stack and handed to the evbuffer in one piece: one
 * evbuffer_add (and one round of its callbacks) per head instead of dozens, and no
 * printf on the request path. */
typedef struct writer {
    struct evbuffer *out;
    size_t len;
    bool failed;
    char buf[4096];
} writer;

/* Not `writer w = {.out = out}`: that zeroes the 4 KiB buffer, twice per request. */
static inline void w_init(writer *w, struct evbuffer *out) {
    w->out = out;
    w->len = 0;
    w->failed = false;
}

static void w_flush(writer *w) {
    if (w->len && evbuffer_add(w->out, w->buf, w->len) != 0)
        w->failed = true;
    w->len = 0;
}

static void w_add_slow(writer *w, const void *data, size_t n) {
    w_flush(w);
    if (n > sizeof w->buf) {
        if (evbuffer_add(w->out, data, n) != 0)
            w->failed = true;
        return;
    }
    memcpy(w->buf + w->len, data, n);
    w->len += n;
}

/* Inline: a head is dozens of pieces, most of them literals whose memcpy the compiler
 * turns into a move or two. */
static inline __attribute__((always_inline)) void w_add(writer *w, const void *data, size_t n) {
    if (w->len + n > sizeof w->buf) {
        w_add_slow(w, data, n);
        return;
    }
    memcpy(w->buf + w->len, data, n);
    w->len += n;
}

#define W_LIT(w, lit) w_add((w), (lit), sizeof(lit) - 1)

static void w_str(writer *w, const char *s) {
    w_add(w, s, strlen(s));
}

static void w_u64(writer *w, uint64_t n) {
    char digits[24];
    size_t i = sizeof digits;
    do {
        digits[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    w_add(w, digits + i, sizeof digits - i);
}

static int w_done(writer *w) {
    w_flush(w);
    return w->failed ? PF_ENOMEM : PF_OK;
}

static void add_header(writer *w, const pf_head *h, size_t i) {
    w_add(w, http1_name(h, i), h->headers[i].name_len);
    W_LIT(w, ": ");
    w_add(w, http1_value(h, i), h->headers[i].value_len);
    W_LIT(w, "\r\n");
}

static void add_framing(writer *w, pf_body_mode body, uint64_t content_length) {
    if (body == PF_BODY_LENGTH) {
        W_LIT(w, "Content-Length: ");
        w_u64(w, content_length);
        W_LIT(w, "\r\n");
    } else if (body == PF_BODY_CHUNKED) {
        W_LIT(w, "Transfer-Encoding: chunked\r\n");
    }
}

/* Upgrade and Connection are hop-by-hop (removed from what is forwarded); an allowed
 * switch writes them again, and nothing else of the Connection header. */
static void add_upgrade(writer *w, const char *value, size_t len) {
    W_LIT(w, "Connection: upgrade\r\nUpgrade: ");
    w_add(w, value, len);
    W_LIT(w, "\r\n");
}

size_t http1_expand_value(const char *t, const pf_header_vars *vars, char *out, size_t cap) {
    static const struct {
        const char *name;
        size_t offset;
    } known[] = {
        {"%CLIENT_IP%", offsetof(pf_header_vars, client_ip)},
        {"%REQUEST_ID%", offsetof(pf_header_vars, request_id)},
        {"%CLUSTER%", offsetof(pf_header_vars, cluster)},
        {"%UPSTREAM%", offsetof(pf_header_vars, upstream)},
    };
    size_t n = 0;
    if (cap == 0)
        return 0;
    for (const char *c = t; *c && n + 1 < cap; c++) {
        const char *piece = NULL;
        size_t skip = 0;
        if (*c == '%' && c[1] == '%') {
            piece = "%";
            skip = 1;
        }
        for (size_t k = 0; *c == '%' && !piece && k < sizeof known / sizeof known[0]; k++) {
            size_t len = strlen(known[k].name);
            if (strncmp(c, known[k].name, len) == 0) {
                piece = *(const char *const *)((const char *)vars + known[k].offset);
                piece = piece ? piece : "";
                skip = len - 1;
            }
        }
        if (!piece) {
            out[n++] = *c;
            continue;
        }
        for (; *piece && n + 1 < cap; piece++)
            out[n++] = *piece;
        c += skip;
    }
    out[n] = '\0';
    return n;
}

/* Whether the edits replace or remove header i of h (set and remove name it). */
static bool edited_away(const pf_config_header_edits *e, const pf_head *h, size_t i) {
    for (size_t k = 0; e && k < e->set_count; k++)
        if (http1_name_is(h, i, e->set[k].name))
            return true;
    for (size_t k = 0; e && k < e->remove_count; k++)
        if (http1_name_is(h, i, e->remove[k].name))
            return true;
    return false;
}

/* Whether edits `e` set or remove `name`. */
static bool edits_name(const pf_config_header_edits *e, const char *name) {
    for (size_t k = 0; e && k < e->set_count; k++)
        if (strcasecmp(e->set[k].name, name) == 0)
            return true;
    for (size_t k = 0; e && k < e->remove_count; k++)
        if (strcasecmp(e->remove[k].name, name) == 0)
            return true;
    return false;
}

/* Calls fn for each line of edits `e` (names the later edits `then` set or remove left
 * out), its value expanded. Returns how many. */
static size_t each_edit_line(const pf_config_header_edit *e, size_t n, const pf_header_vars *vars,
                             const pf_config_header_edits *then, http1_edit_fn fn, void *arg) {
    static const pf_header_vars none = {0};
    char value[2048];
    size_t lines = 0;
    for (size_t k = 0; k < n; k++) {
        if (edits_name(then, e[k].name))
            continue;
        size_t len = http1_expand_value(e[k].value, vars ? vars : &none, value, sizeof value);
        fn(arg, e[k].name, value, len);
        lines++;
    }
    return lines;
}

/* The route's edit lines, set first, then add; then the weighted cluster's, which win
 * over the route's for a name they set or remove. */
static size_t each_edit(const pf_config_header_edits *route, const pf_config_header_edits *cluster,
                        const pf_header_vars *vars, http1_edit_fn fn, void *arg) {
    size_t lines = 0;
    if (route) {
        lines += each_edit_line(route->set, route->set_count, vars, cluster, fn, arg);
        lines += each_edit_line(route->add, route->add_count, vars, cluster, fn, arg);
    }
    if (cluster) {
        lines += each_edit_line(cluster->set, cluster->set_count, vars, NULL, fn, arg);
        lines += each_edit_line(cluster->add, cluster->add_count, vars, NULL, fn, arg);
    }
    return lines;
}

static void write_edit_line(void *arg, const char *name, const char *value, size_t len) {
    writer *w = arg;
    w_str(w, name);
    W_LIT(w, ": ");
    w_add(w, value, len);
    W_LIT(w, "\r\n");
}

static void add_edits(writer *w, const pf_config_header_edits *route,
                      const pf_config_header_edits *cluster, const pf_header_vars *vars) {
    each_edit(route, cluster, vars, write_edit_line, w);
}

bool http1_edits_remove(const pf_config_header_edits *route, const pf_config_header_edits *cluster,
                        const pf_head *h, size_t i) {
    return edited_away(route, h, i) || edited_away(cluster, h, i);
}

size_t http1_edit_lines(const pf_config_header_edits *route, const pf_config_header_edits *cluster,
                        const pf_header_vars *vars, http1_edit_fn fn, void *arg) {
    return each_edit(route, cluster, vars, fn, arg);
}

typedef struct {
    char *out;
    size_t cap, len;
    bool full;
} line_buf;

static void line_put(line_buf *b, const char *s, size_t n) {
    if (b->full || n >= b->cap - b->len) {
        b->full = true;
        return;
    }
    memcpy(b->out + b->len, s, n);
    b->len += n;
    b->out[b->len] = '\0';
}

static void put_edit_line(void *arg, const char *name, const char *value, size_t len) {
    line_buf *b = arg;
    line_put(b, name, strlen(name));
    line_put(b, ": ", 2);
    line_put(b, value, len);
    line_put(b, "\r\n", 2);
}

size_t http1_edit_local_lines(const char *lines, const pf_config_header_edits *route,
                              const pf_config_header_edits *cluster, const pf_header_vars *vars,
                              char *out, size_t cap) {
    line_buf b = {.out = out, .cap = cap};
    if (cap == 0)
        return 0;
    out[0] = '\0';
    for (const char *p = lines; p && *p;) {
        const char *eol = strchr(p, '\n');
        const char *end = eol ? eol + 1 : p + strlen(p);
        const char *colon = memchr(p, ':', (size_t)(end - p));
        char name[128];
        size_t nlen = colon ? (size_t)(colon - p) : 0;
        bool edited = false;
        if (nlen > 0 && nlen < sizeof name) {
            memcpy(name, p, nlen);
            name[nlen] = '\0';
            edited = edits_name(route, name) || edits_name(cluster, name);
        }
        if (!edited)
            line_put(&b, p, (size_t)(end - p));
        p = end;
    }
    each_edit(route, cluster, vars, put_edit_line, &b);
    return b.full ? 0 : b.len;
}

/* Every earlier hop in order, then this hop's client, as one field where the first
 * X-Forwarded-For stood (RFC 9110 5.3 allows combining the lines). */
static void add_forwarded_for(writer *w, const pf_head *req, const char *client_ip) {
    W_LIT(w, "X-Forwarded-For: ");
    for (size_t i = 0; i < req->count; i++) {
        if (http1_name_is(req, i, "x-forwarded-for") && req->headers[i].value_len > 0) {
            w_add(w, http1_value(req, i), req->headers[i].value_len);
            W_LIT(w, ", ");
        }
    }
    w_str(w, client_ip);
    W_LIT(w, "\r\n");
}

int http1_write_request_head(struct evbuffer *out, const pf_head *req,
                             const pf_forward_request *fwd) {
    writer w;
    w_init(&w, out);
    w_str(&w, fwd->method);
    W_LIT(&w, " ");
    if (fwd->root_first)
        w_add(&w, "/", 1);
    w_add(&w, fwd->target, fwd->target_len);
    W_LIT(&w, " HTTP/1.1\r\nHost: ");
    w_add(&w, fwd->host, fwd->host_len);
    W_LIT(&w, "\r\n");
    bool has_connection = connection_nominates(req);
    bool forwarded_for = false;
    for (size_t i = 0; i < req->count; i++) {
        /* x-forwarded-client-cert is ours to say: a client's own would be a forged identity */
        if (hop_by_hop(req, i, has_connection) || http1_name_is(req, i, "host") ||
            http1_name_is(req, i, "x-forwarded-proto") ||
            http1_name_is(req, i, "x-forwarded-client-cert") || edited_away(fwd->edits, req, i) ||
            edited_away(fwd->cluster_edits, req, i))
            continue;
        if (fwd->traceparent &&
            (http1_name_is(req, i, "traceparent") || http1_name_is(req, i, "tracestate")))
            continue;
        if (fwd->grpc_timeout && http1_name_is(req, i, "grpc-timeout"))
            continue;
        if (http1_name_is(req, i, "x-forwarded-for")) {
            if (!forwarded_for)
                add_forwarded_for(&w, req, fwd->client_ip);
            forwarded_for = true;
            continue;
        }
        add_header(&w, req, i);
    }
    add_edits(&w, fwd->edits, fwd->cluster_edits, fwd->vars);
    if (!forwarded_for)
        add_forwarded_for(&w, req, fwd->client_ip);
    W_LIT(&w, "X-Forwarded-Proto: ");
    w_str(&w, fwd->proto);
    W_LIT(&w, "\r\n");
    if (fwd->client_cert) {
        W_LIT(&w, "X-Forwarded-Client-Cert: ");
        w_str(&w, fwd->client_cert);
        W_LIT(&w, "\r\n");
    }
    if (fwd->request_id) {
        W_LIT(&w, "X-Request-Id: ");
        w_str(&w, fwd->request_id);
        W_LIT(&w, "\r\n");
    }
    if (fwd->traceparent) {
        W_LIT(&w, "traceparent: ");
        w_str(&w, fwd->traceparent);
        W_LIT(&w, "\r\n");
    }
    if (fwd->grpc_timeout) {
        W_LIT(&w, "grpc-timeout: ");
        w_str(&w, fwd->grpc_timeout);
        W_LIT(&w, "\r\n");
    }
    if (fwd->upgrade)
        add_upgrade(&w, fwd->upgrade, fwd->upgrade_len);
    add_framing(&w, fwd->body, fwd->content_length);
    W_LIT(&w, "\r\n");
    return w_done(&w);
}

static void add_connection(writer *w, int client_minor, bool keep_alive) {
    if (!keep_alive)
        W_LIT(w, "Connection: close\r\n");
    else if (client_minor == 0)
        W_LIT(w, "Connection: keep-alive\r\n");
}

int http1_write_response_head(struct evbuffer *out, const pf_head *resp,
                              const pf_forward_response *fwd) {
    writer w;
    w_init(&w, out);
    char status[4] = {(char)('0' + fwd->status / 100 % 10), (char)('0' + fwd->status / 10 % 10),
                      (char)('0' + fwd->status % 10), ' '};
    W_LIT(&w, "HTTP/1.1 ");
    w_add(&w, status, sizeof status);
    w_add(&w, http1_first(resp), resp->first_len);
    W_LIT(&w, "\r\n");
    bool has_connection = connection_nominates(resp);
    for (size_t i = 0; i < resp->count; i++)
        if (!hop_by_hop(resp, i, has_connection) && !edited_away(fwd->edits, resp, i) &&
            !edited_away(fwd->cluster_edits, resp, i))
            add_header(&w, resp, i);
    add_edits(&w, fwd->edits, fwd->cluster_edits, fwd->vars);
    add_framing(&w, fwd->body, fwd->content_length);
    if (fwd->upgrade)
        add_upgrade(&w, fwd->upgrade, fwd->upgrade_len);
    else
        add_connection(&w, fwd->client_minor, fwd->keep_alive);
    if (fwd->attempts) {
        W_LIT(&w, "x-pilotfish-attempts: ");
        w_u64(&w, fwd->attempts);
        W_LIT(&w, "\r\n");
    }
    if (fwd->extra_headers)
        w_str(&w, fwd->extra_headers);
    W_LIT(&w, "\r\n");
    return w_done(&w);
}

const char *http1_reason(int status) {
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

bool http1_lines_have_content_type(const char *lines) {
    for (const char *l = lines; l && *l;) {
        if (strncasecmp(l, "content-type:", 13) == 0)
            return true;
        const char *next = strstr(l, "\r\n");
        l = next ? next + 2 : NULL;
    }
    return false;
}

int http1_write_local_response(struct evbuffer *out, int status, const char *body, bool keep_alive,
                               const char *extra_headers) {
    if (!body) {
        int rc = evbuffer_add_printf(
            out, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n%s%s\r\n", status, http1_reason(status),
            keep_alive ? "" : "Connection: close\r\n", extra_headers ? extra_headers : "");
        return rc < 0 ? PF_ENOMEM : PF_OK;
    }
    size_t body_len = strlen(body);
    int rc = evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n%sContent-Length: %zu\r\n%s%s\r\n%s",
                                 status, http1_reason(status),
                                 http1_lines_have_content_type(extra_headers)
                                     ? ""
                                     : "Content-Type: text/plain; charset=utf-8\r\n",
                                 body_len, keep_alive ? "" : "Connection: close\r\n",
                                 extra_headers ? extra_headers : "", body);
    return rc < 0 ? PF_ENOMEM : PF_OK;
}

int http1_write_last_chunk(struct evbuffer *out, const pf_head *trailers) {
    writer w;
    w_init(&w, out);
    W_LIT(&w, "0\r\n");
    /* RFC 9110 6.5.1: framing, routing and connection fields never travel as trailers. */
    bool has_connection = trailers && connection_nominates(trailers);
    for (size_t i = 0; trailers && i < trailers->count; i++)
        if (!hop_by_hop(trailers, i, has_connection) && !http1_name_is(trailers, i, "host"))
            add_header(&w, trailers, i);
    W_LIT(&w, "\r\n");
    return w_done(&w);
}

int http1_add_reference(struct evbuffer *out, struct evbuffer *in) {
    if (evbuffer_add_buffer_reference(out, in) == 0)
        return PF_OK;
    struct evbuffer_ptr pos;
    evbuffer_ptr_set(in, &pos, 0, EVBUFFER_PTR_SET);
    size_t left = evbuffer_get_length(in);
    while (left > 0) {
        struct evbuffer_iovec vec[8];
        int n = evbuffer_peek(in, (ev_ssize_t)left, &pos, vec, 8);
        size_t done = 0;
        for (int i = 0; i < n && i < 8 && done < left; i++) {
            size_t len = vec[i].iov_len < left - done ? vec[i].iov_len : left - done;
            if (evbuffer_add(out, vec[i].iov_base, len) != 0)
                return PF_ENOMEM;
            done += len;
        }
        if (done == 0)
            return PF_ENOMEM;
        left -= done;
        evbuffer_ptr_set(in, &pos, done, EVBUFFER_PTR_ADD);
    }
    return PF_OK;
}

int http1_write_chunk(struct evbuffer *out, const void *data, size_t len) {
    if (len == 0)
        return PF_OK;
    static const char hex[] = "0123456789abcdef";
    char size[20];
    size_t i = sizeof size;
    size[--i] = '\n';
    size[--i] = '\r';
    for (size_t n = len; n; n >>= 4)
        size[--i] = hex[n & 0xf];
    if (evbuffer_add(out, size + i, sizeof size - i) != 0 || evbuffer_add(out, data, len) != 0)
        return PF_ENOMEM;
    return evbuffer_add(out, "\r\n", 2) == 0 ? PF_OK : PF_ENOMEM;
}

/* ---- pure decisions ------------------------------------------------------------------ */

/* Origin-form "/p?q"; absolute-form "http://authority/p?q" whose authority overrides Host
 * (RFC 9112 3.2.2), where an empty path ("http://h?q") goes upstream as "/?q", or as "*"
 * for OPTIONS without a query (3.2.4); or the asterisk-form of OPTIONS, "*". A fragment is
 * never part of a request (RFC 9110 4.2.5): forwarding one would hand the upstream a
 * target it may read differently. */
int http1_parse_target(const char *t, size_t len, bool is_options, pf_target *out) {
    memset(out, 0, sizeof *out);
    if (memchr(t, '#', len))
        return PF_EINVAL;
    if (len > 0 && t[0] == '/') {
        out->target = t;
        out->target_len = len;
    } else if (len == 1 && t[0] == '*' && is_options) {
        out->target = t;
        out->target_len = 1;
    } else if (len > 7 && strncasecmp(t, "http://", 7) == 0) {
        const char *auth = t + 7;
        size_t rest = len - 7, alen = 0;
        while (alen < rest && auth[alen] != '/' && auth[alen] != '?')
            alen++;
        if (alen == 0 || memchr(auth, '@', alen))
            return PF_EINVAL; /* userinfo is not allowed in http URIs (RFC 9110 4.2.4) */
        out->authority = auth;
        out->authority_len = alen;
        out->target = alen < rest ? auth + alen : is_options ? "*" : "/";
        out->target_len = alen < rest ? rest - alen : 1;
        out->root_first = out->target[0] == '?';
    } else {
        return PF_EINVAL;
    }
    out->path = out->root_first ? "/" : out->target;
    out->path_len = out->root_first ? 1 : strcspn(out->target, "?#");
    if (out->path_len > out->target_len)
        out->path_len = out->target_len;
    return PF_OK;
}

bool http1_is_token(const char *at, size_t len) {
    static const char extra[] = "!#$%&'*+-.^_`|~";
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)at[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch && strchr(extra, ch))))
            return false;
    }
    return true;
}

bool http1_value_is_fold(bool value_open, bool prev_ended_read, bool starts_read) {
    return value_open && !(prev_ended_read && starts_read);
}

static bool lower_hex(const char *s, size_t n, bool *all_zero) {
    *all_zero = true;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
        if (s[i] != '0')
            *all_zero = false;
    }
    return true;
}

bool http1_traceparent_valid(const char *v, size_t len) {
    bool zero;
    if (len < PF_TRACEPARENT_LEN || v[2] != '-' || v[35] != '-' || v[52] != '-')
        return false;
    if (!lower_hex(v, 2, &zero) || (v[0] == 'f' && v[1] == 'f'))
        return false;
    bool version_00 = v[0] == '0' && v[1] == '0';
    if (len > PF_TRACEPARENT_LEN && (version_00 || v[PF_TRACEPARENT_LEN] != '-'))
        return false;
    if (!lower_hex(v + 3, 32, &zero) || zero)
        return false;
    if (!lower_hex(v + 36, 16, &zero) || zero)
        return false;
    return lower_hex(v + 53, 2, &zero);
}

void http1_put_hex64(char *out, uint64_t v) {
    /* Two digits per byte from a table: half the steps of a digit at a time. */
    static const char pairs[513] =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
        "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    for (int i = 14; i >= 0; i -= 2, v >>= 8)
        memcpy(out + i, pairs + (v & 0xff) * 2, 2);
}

void http1_traceparent_format(char *out, uint64_t hi, uint64_t lo, uint64_t parent, bool sampled) {
    if (!hi && !lo)
        lo = 1;
    if (!parent)
        parent = 1;
    memcpy(out, "00-", 3);
    http1_put_hex64(out + 3, hi);
    http1_put_hex64(out + 19, lo);
    out[35] = '-';
    http1_put_hex64(out + 36, parent);
    memcpy(out + 52, sampled ? "-01" : "-00", 3);
    out[PF_TRACEPARENT_LEN] = '\0';
}

const char *http1_check_host(size_t host_count, int minor, bool has_authority) {
    if (host_count > 1)
        return "more than one Host header";
    if (host_count == 0 && minor == 1 && !has_authority)
        return "missing Host header";
    return NULL;
}

pf_body_mode http1_request_body_mode(bool chunked, bool has_length, uint64_t length) {
    if (chunked)
        return PF_BODY_CHUNKED;
    return has_length && length > 0 ? PF_BODY_LENGTH : PF_BODY_NONE;
}

pf_body_mode http1_response_body_mode(bool chunked, bool has_length) {
    if (chunked)
        return PF_BODY_CHUNKED;
    return has_length ? PF_BODY_LENGTH : PF_BODY_EOF;
}

pf_response_framing http1_response_framing(bool head_request, int status,
                                           pf_body_mode upstream_body, int client_minor) {
    pf_response_framing f = {0};
    if (head_request || status == 204 || status == 304) {
        /* Framing headers of a HEAD or 304 describe the body that was not sent. */
        f.head_body = upstream_body == PF_BODY_LENGTH ? PF_BODY_LENGTH : PF_BODY_NONE;
        f.body = PF_BODY_NONE;
        f.skip_body = head_request;
    } else if (upstream_body == PF_BODY_LENGTH) {
        f.head_body = f.body = PF_BODY_LENGTH;
    } else if (client_minor >= 1) {
        f.head_body = f.body = PF_BODY_CHUNKED;
    } else {
        /* An HTTP/1.0 client knows no chunking: the body ends when we close. */
        f.head_body = f.body = PF_BODY_EOF;
        f.close = true;
    }
    return f;
}
