/* HTTP/1.x message heads and the heads pilotfish writes. */
#include "proxy/http1.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
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

static int append_bytes(pf_head *h, const char *at, size_t len) {
    /* One spare byte keeps room for the NUL that terminates each name and value. */
    if (h->len + len + 1 > h->byte_limit)
        return PF_ELIMIT;
    if (h->len + len + 1 > h->cap) {
        size_t cap = h->cap ? h->cap : 1024;
        while (cap < h->len + len + 1)
            cap *= 2;
        if (cap > h->byte_limit)
            cap = h->byte_limit;
        char *buf = realloc(h->buf, cap);
        if (!buf)
            return PF_ENOMEM;
        h->buf = buf;
        h->cap = cap;
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
            size_t cap = h->cap_headers ? h->cap_headers * 2 : 16;
            if (cap > h->max_headers)
                cap = h->max_headers;
            pf_header *headers = realloc(h->headers, cap * sizeof *headers);
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

bool http1_name_is(const pf_head *h, size_t i, const char *lower_name) {
    size_t n = strlen(lower_name);
    return h->headers[i].name_len == n && strncasecmp(http1_name(h, i), lower_name, n) == 0;
}

long http1_find(const pf_head *h, const char *lower_name, size_t *count) {
    long first = -1;
    size_t matches = 0;
    for (size_t i = 0; i < h->count; i++) {
        if (http1_name_is(h, i, lower_name)) {
            if (first < 0)
                first = (long)i;
            matches++;
        }
    }
    if (count)
        *count = matches;
    return first;
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

/* `has_connection`: whether the head has a Connection header at all, worked out once per
 * head by the writers so that the common case skips the token scan. */
static bool hop_by_hop(const pf_head *h, size_t i, bool has_connection) {
    static const char *const names[] = {"connection",
                                        "keep-alive",
                                        "proxy-connection",
                                        "te",
                                        "trailer",
                                        "transfer-encoding",
                                        "upgrade",
                                        "proxy-authorization",
                                        "proxy-authenticate",
                                        "content-length",
                                        "http2-settings"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (http1_name_is(h, i, names[k]))
            return true;
    for (size_t c = 0; has_connection && c < h->count; c++) {
        if (http1_name_is(h, c, "connection") &&
            list_has_token(http1_value(h, c), h->headers[c].value_len, http1_name(h, i),
                           h->headers[i].name_len))
            return true;
    }
    return false;
}

bool http1_is_hop_by_hop(const pf_head *h, size_t i) {
    return hop_by_hop(h, i, true);
}

static void add_header(struct evbuffer *out, const pf_head *h, size_t i) {
    evbuffer_add(out, http1_name(h, i), h->headers[i].name_len);
    evbuffer_add(out, ": ", 2);
    evbuffer_add(out, http1_value(h, i), h->headers[i].value_len);
    evbuffer_add(out, "\r\n", 2);
}

static void add_framing(struct evbuffer *out, pf_body_mode body, uint64_t content_length) {
    if (body == PF_BODY_LENGTH)
        evbuffer_add_printf(out, "Content-Length: %llu\r\n", (unsigned long long)content_length);
    else if (body == PF_BODY_CHUNKED)
        evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
}

/* Every earlier hop in order, then this hop's client, as one field where the first
 * X-Forwarded-For stood (RFC 9110 5.3 allows combining the lines). */
static void add_forwarded_for(struct evbuffer *out, const pf_head *req, const char *client_ip) {
    evbuffer_add(out, "X-Forwarded-For: ", 17);
    for (size_t i = 0; i < req->count; i++) {
        if (http1_name_is(req, i, "x-forwarded-for") && req->headers[i].value_len > 0) {
            evbuffer_add(out, http1_value(req, i), req->headers[i].value_len);
            evbuffer_add(out, ", ", 2);
        }
    }
    evbuffer_add_printf(out, "%s\r\n", client_ip);
}

int http1_write_request_head(struct evbuffer *out, const pf_head *req,
                             const pf_forward_request *fwd) {
    evbuffer_add_printf(out, "%s ", fwd->method);
    evbuffer_add(out, fwd->target, fwd->target_len);
    evbuffer_add(out, " HTTP/1.1\r\nHost: ", 17);
    evbuffer_add(out, fwd->host, fwd->host_len);
    evbuffer_add(out, "\r\n", 2);
    bool has_connection = http1_find(req, "connection", NULL) >= 0;
    bool forwarded_for = false;
    for (size_t i = 0; i < req->count; i++) {
        if (hop_by_hop(req, i, has_connection) || http1_name_is(req, i, "host") ||
            http1_name_is(req, i, "x-forwarded-proto"))
            continue;
        if (http1_name_is(req, i, "x-forwarded-for")) {
            if (!forwarded_for)
                add_forwarded_for(out, req, fwd->client_ip);
            forwarded_for = true;
            continue;
        }
        add_header(out, req, i);
    }
    if (!forwarded_for)
        add_forwarded_for(out, req, fwd->client_ip);
    evbuffer_add_printf(out, "X-Forwarded-Proto: %s\r\n", fwd->proto);
    if (fwd->request_id)
        evbuffer_add_printf(out, "X-Request-Id: %s\r\n", fwd->request_id);
    add_framing(out, fwd->body, fwd->content_length);
    return evbuffer_add(out, "\r\n", 2) == 0 ? PF_OK : PF_ENOMEM;
}

static void add_connection(struct evbuffer *out, int client_minor, bool keep_alive) {
    if (!keep_alive)
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (client_minor == 0)
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
}

int http1_write_response_head(struct evbuffer *out, const pf_head *resp,
                              const pf_forward_response *fwd) {
    evbuffer_add_printf(out, "HTTP/1.1 %03d ", fwd->status);
    evbuffer_add(out, http1_first(resp), resp->first_len);
    evbuffer_add(out, "\r\n", 2);
    bool has_connection = http1_find(resp, "connection", NULL) >= 0;
    for (size_t i = 0; i < resp->count; i++)
        if (!hop_by_hop(resp, i, has_connection))
            add_header(out, resp, i);
    add_framing(out, fwd->body, fwd->content_length);
    add_connection(out, fwd->client_minor, fwd->keep_alive);
    if (fwd->extra_headers)
        evbuffer_add(out, fwd->extra_headers, strlen(fwd->extra_headers));
    return evbuffer_add(out, "\r\n", 2) == 0 ? PF_OK : PF_ENOMEM;
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

int http1_write_local_response(struct evbuffer *out, int status, const char *body, bool keep_alive,
                               const char *extra_headers) {
    size_t body_len = strlen(body);
    int rc = evbuffer_add_printf(out,
                                 "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                 "Content-Length: %zu\r\n%s%s\r\n%s",
                                 status, http1_reason(status), body_len,
                                 keep_alive ? "" : "Connection: close\r\n",
                                 extra_headers ? extra_headers : "", body);
    return rc < 0 ? PF_ENOMEM : PF_OK;
}

int http1_write_chunk(struct evbuffer *out, const void *data, size_t len) {
    if (len == 0)
        return PF_OK;
    evbuffer_add_printf(out, "%zx\r\n", len);
    evbuffer_add(out, data, len);
    return evbuffer_add(out, "\r\n", 2) == 0 ? PF_OK : PF_ENOMEM;
}
