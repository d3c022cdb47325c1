/* pf-backend: a fast, single-threaded HTTP/1.1 origin server that stands behind pilotfish in the
 * integration tests and benchmarks. It answers by path (see usage()), supports keep-alive and
 * pipelining, and streams every body with backpressure so huge transfers run in small memory. */

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include <llhttp.h>

#define MAX_NAME_LEN 256
#define MAX_HEADER_BYTES (64 * 1024) /* request target plus all header names and values */
#define MAX_HEADERS 256
#define FEED_MAX (64 * 1024)    /* input handed to llhttp per call: bounds echo output per step */
#define IN_HIGH (256 * 1024)    /* unparsed input above which we stop reading the socket */
#define OUT_HIGH (256 * 1024)   /* pending output above which we stop producing more */
#define OUT_LOW (64 * 1024)     /* pending output below which production resumes */
#define IO_MAX (256 * 1024)     /* per read()/writev() call; libevent's default is 16 KiB */
#define PATTERN_LEN (64 * 1024) /* a multiple of 16, so any offset into it keeps the phase */
#define BYTES_CHUNK (16 * 1024) /* chunk size for /bytes/N?chunked=1 */
#define MAX_BYTES 1000000000000ULL
#define MAX_DELAY_MS (3600ULL * 1000)
#define LINGER_MS 2000 /* how long a closing connection waits for the peer to close */
#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

enum route {
    ROUTE_DEFAULT,
    ROUTE_HEADERS,
    ROUTE_ECHO,
    ROUTE_SINK,
    ROUTE_BYTES,
    ROUTE_STATUS,
    ROUTE_DELAY,
    ROUTE_HANG,
    ROUTE_RESET,
    ROUTE_PARTIAL,
    ROUTE_STALL,
    ROUTE_CLOSE,
    ROUTE_STATS,
    ROUTE_HEALTHZ,
    ROUTE_CONTROL_HEALTHZ,
    ROUTE_CONTROL_DEFAULT,
    ROUTE_CONTROL_DELAY,
    ROUTE_BAD_ARG,
};

/* How a response body is delimited. */
enum framing { FRAME_NONE, FRAME_LENGTH, FRAME_CHUNKED, FRAME_EOF };

/* A received header: name at hbuf[off], value right after it. */
struct header {
    uint32_t off, name_len, value_len;
};

struct conn {
    struct bufferevent *bev;
    struct event *timer; /* /delay and lingering close; created on first use */
    llhttp_t parser;
    struct conn *prev, *next; /* all connections, freed on shutdown */

    /* The request being parsed: target, then header names and values back to back. */
    char *hbuf;
    size_t hlen, hcap, target_len;
    struct header hdrs[MAX_HEADERS];
    size_t nhdrs;
    bool in_field;
    int limit_status;          /* 431 or 503 when a callback hit a limit */
    const char *reject_reason; /* set by our own checks; llhttp overwrites its reason */

    /* How the current request is answered. */
    enum route route;
    uint64_t arg;
    bool chunked_query, eof_query;
    bool keep_alive, http10, head_only;
    bool mid_response; /* part of a response is written: an error can no longer become a 400 */
    enum framing framing;
    uint64_t body_bytes, fnv;
    uint64_t gen_off, gen_end; /* /bytes generator */

    bool paused;     /* llhttp is paused after a request whose answer is still in progress */
    bool generating; /* /bytes body in progress, driven by the write callback */
    bool delaying;
    bool hang;
    bool closing; /* no more requests: close once the output is flushed */
    bool rst;
    bool lingering;
    bool peer_eof;
};

static struct event_base *g_base;
static struct evconnlistener *g_listener;
static const char *g_name = "backend";
static uint64_t g_requests, g_connections;
static struct conn *g_conns;
static struct evbuffer *g_scratch; /* JSON bodies are built here to learn their length */
static char g_pattern[PATTERN_LEN + 16];
static llhttp_settings_t g_settings;

/* Switches for the health tests: /healthz answers g_healthz_status, and every answer that
 * would be the default one gets g_default_status instead of 200 when it is set. Both are
 * set over HTTP (/control/healthz/NNN, /control/default/NNN), so a test makes one backend
 * fail its health check, or fail everything, while its twin stays well. */
static int g_healthz_status = 200, g_default_status = 200;
/* A slow backend for the balancing tests and benchmarks: every default answer waits this
 * long. Set by --delay-ms or over HTTP with /control/delay/MS. */
static uint64_t g_delay_ms;

/* The default answer is the hot path of the benchmarks, so it is prebuilt for the three ways a
 * connection can continue: HTTP/1.1 keep-alive, HTTP/1.0 keep-alive, and close. */
enum { CONT_KEEP_ALIVE_11, CONT_KEEP_ALIVE_10, CONT_CLOSE, CONT_COUNT };
static char g_default[CONT_COUNT][1024];
static size_t g_default_len[CONT_COUNT], g_default_head_len[CONT_COUNT];

static const char *reason_phrase(int status) {
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 429:
        return "Too Many Requests";
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
    default:
        return "Status";
    }
}

static int continuation(const struct conn *c) {
    if (!c->keep_alive)
        return CONT_CLOSE;
    return c->http10 ? CONT_KEEP_ALIVE_10 : CONT_KEEP_ALIVE_11;
}

static const char *connection_header(int cont) {
    switch (cont) {
    case CONT_CLOSE:
        return "Connection: close\r\n";
    case CONT_KEEP_ALIVE_10:
        return "Connection: keep-alive\r\n";
    default:
        return "";
    }
}

static struct evbuffer *output(struct conn *c) {
    return bufferevent_get_output(c->bev);
}

static void write_head(struct conn *c, int status, const char *ctype, size_t ctype_len,
                       enum framing framing, uint64_t length) {
    struct evbuffer *out = output(c);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nX-Backend: %s\r\n", status, reason_phrase(status),
                        g_name);
    if (ctype != NULL) {
        evbuffer_add(out, "Content-Type: ", 14);
        evbuffer_add(out, ctype, ctype_len);
        evbuffer_add(out, "\r\n", 2);
    }
    if (framing == FRAME_LENGTH)
        evbuffer_add_printf(out, "Content-Length: %" PRIu64 "\r\n", length);
    else if (framing == FRAME_CHUNKED)
        evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
    evbuffer_add_printf(out, "%s\r\n", connection_header(continuation(c)));
}

/* RFC 9110 15.2, 15.3.5, 15.4.5: 1xx, 204 and 304 never carry a body. */
static bool status_has_body(int status) {
    return status >= 200 && status != 204 && status != 304;
}

static void write_simple(struct conn *c, int status, const char *ctype, const char *body,
                         size_t len) {
    if (!status_has_body(status)) {
        write_head(c, status, NULL, 0, FRAME_NONE, 0);
        return;
    }
    write_head(c, status, ctype, strlen(ctype), FRAME_LENGTH, len);
    if (!c->head_only)
        evbuffer_add(output(c), body, len);
}

static void write_default(struct conn *c) {
    int cont = continuation(c);
    evbuffer_add(output(c), g_default[cont],
                 c->head_only ? g_default_head_len[cont] : g_default_len[cont]);
}

/* Moves the JSON document in g_scratch into the output behind a head that gives its length. */
static void write_scratch_json(struct conn *c) {
    size_t len = evbuffer_get_length(g_scratch);
    write_head(c, 200, "application/json", 16, FRAME_LENGTH, len);
    if (c->head_only)
        evbuffer_drain(g_scratch, len);
    else
        evbuffer_add_buffer(output(c), g_scratch);
}

/* Bytes outside printable ASCII become \u00XX, which is how Python and most HTTP clients read
 * header bytes (as Latin-1), so tests can compare exactly what was sent. */
static void json_string(struct evbuffer *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    evbuffer_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
            continue;
        evbuffer_add(b, s + run, i - run);
        run = i + 1;
        if (ch == '"' || ch == '\\') {
            char esc[2] = {'\\', (char)ch};
            evbuffer_add(b, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            evbuffer_add(b, esc, 6);
        }
    }
    evbuffer_add(b, s + run, n - run);
    evbuffer_add(b, "\"", 1);
}

static void write_headers_json(struct conn *c) {
    struct evbuffer *b = g_scratch;
    evbuffer_add(b, "{\"method\": ", 11);
    const char *method = llhttp_method_name((llhttp_method_t)c->parser.method);
    json_string(b, method, strlen(method));
    evbuffer_add(b, ", \"target\": ", 12);
    json_string(b, c->hbuf, c->target_len);
    evbuffer_add_printf(b, ", \"version\": \"%d.%d\", \"headers\": [", c->parser.http_major,
                        c->parser.http_minor);
    for (size_t i = 0; i < c->nhdrs; i++) {
        const struct header *h = &c->hdrs[i];
        evbuffer_add(b, i ? ", [" : "[", i ? 3 : 1);
        json_string(b, c->hbuf + h->off, h->name_len);
        evbuffer_add(b, ", ", 2);
        json_string(b, c->hbuf + h->off + h->name_len, h->value_len);
        evbuffer_add(b, "]", 1);
    }
    evbuffer_add(b, "]}\n", 3);
    write_scratch_json(c);
}

static const struct header *find_header(const struct conn *c, const char *name) {
    size_t len = strlen(name);
    for (size_t i = 0; i < c->nhdrs; i++) {
        const struct header *h = &c->hdrs[i];
        if (h->name_len == len && strncasecmp(c->hbuf + h->off, name, len) == 0)
            return h;
    }
    return NULL;
}

static bool header_value_is(const struct conn *c, const struct header *h, const char *value) {
    return h != NULL && h->value_len == strlen(value) &&
           strncasecmp(c->hbuf + h->off + h->name_len, value, h->value_len) == 0;
}

/* ---- /bytes generator ------------------------------------------------------------------ */

/* Appends pattern bytes until the output holds OUT_HIGH; the write callback calls again once
 * the socket drained it to OUT_LOW. The pattern is added by reference, so nothing is copied.
 * Returns true when the whole body (and the last chunk) is queued. */
static bool fill_bytes(struct conn *c) {
    struct evbuffer *out = output(c);
    bool chunked = c->framing == FRAME_CHUNKED;
    while (evbuffer_get_length(out) < OUT_HIGH) {
        uint64_t left = c->gen_end - c->gen_off;
        if (left == 0) {
            if (chunked)
                evbuffer_add(out, "0\r\n\r\n", 5);
            c->generating = false;
            return true;
        }
        size_t n = chunked ? BYTES_CHUNK : PATTERN_LEN;
        if (left < n)
            n = (size_t)left;
        if (chunked)
            evbuffer_add_printf(out, "%zx\r\n", n);
        evbuffer_add_reference(out, g_pattern + (c->gen_off & 15), n, NULL, NULL);
        if (chunked)
            evbuffer_add(out, "\r\n", 2);
        c->gen_off += n;
    }
    return false;
}

static void start_bytes(struct conn *c) {
    write_head(c, 200, "application/octet-stream", 24, c->framing, c->arg);
    c->gen_off = 0;
    c->gen_end = c->head_only ? 0 : c->arg;
    if (c->head_only && c->framing == FRAME_CHUNKED)
        c->framing = FRAME_NONE; /* no last-chunk either */
    if (fill_bytes(c))
        return;
    c->generating = true;
    c->mid_response = true;
    c->paused = true;
}

/* ---- connection life cycle --------------------------------------------------------------- */

static void conn_free(struct conn *c) {
    if (c->prev)
        c->prev->next = c->next;
    else
        g_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->rst) {
        /* SO_LINGER with a zero timeout makes close() send RST instead of FIN. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    bufferevent_free(c->bev);
    if (c->timer)
        event_free(c->timer);
    free(c->hbuf);
    free(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg);

static int arm_timer(struct conn *c, uint64_t ms) {
    if (c->timer == NULL) {
        c->timer = evtimer_new(g_base, timer_cb, c);
        if (c->timer == NULL)
            return -1;
    }
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return evtimer_add(c->timer, &tv);
}

/* From here on requests are ignored; the connection closes once its output is flushed. The
 * write callback fires at an empty output only, which is when maybe_close() can act. */
static void start_closing(struct conn *c) {
    if (c->closing)
        return;
    c->closing = true;
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
}

/* Closes a closing connection whose output is flushed. Unless the peer already closed or an RST
 * was asked for, we half-close and keep reading until the peer closes (nginx's lingering close):
 * closing with unread input would send RST, and the peer could lose the response we just sent.
 * Returns true if c was freed. Call only as the last step of a libevent callback. */
static bool maybe_close(struct conn *c) {
    if (!c->closing || c->lingering || evbuffer_get_length(output(c)) > 0)
        return false;
    if (c->rst || c->peer_eof) {
        conn_free(c);
        return true;
    }
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    c->lingering = true;
    bufferevent_enable(c->bev, EV_READ);
    if (arm_timer(c, LINGER_MS) < 0) {
        conn_free(c);
        return true;
    }
    return false;
}

static void parse_error(struct conn *c, llhttp_errno_t err) {
    if (!c->mid_response && !c->paused) {
        char body[256];
        int status = c->limit_status ? c->limit_status : 400;
        int n;
        if (status == 431)
            n = snprintf(body, sizeof body, "request header fields too large (limit %d bytes)\n",
                         MAX_HEADER_BYTES);
        else if (status == 400 && c->reject_reason != NULL)
            n = snprintf(body, sizeof body, "bad request: %s\n", c->reject_reason);
        else if (status == 400)
            n = snprintf(body, sizeof body, "bad request: %s: %s\n", llhttp_errno_name(err),
                         llhttp_get_error_reason(&c->parser));
        else
            n = snprintf(body, sizeof body, "out of memory\n");
        if (n < 0 || (size_t)n >= sizeof body)
            n = 0;
        c->keep_alive = false;
        c->head_only = false;
        write_simple(c, status, "text/plain", body, (size_t)n);
    }
    start_closing(c);
}

/* Feeds buffered input to llhttp until it runs out, the parser pauses for an answer still in
 * progress, or the output is over OUT_HIGH (the write callback resumes us; meanwhile the read
 * high watermark stops reading the socket, which is the backpressure towards the client). */
static void process_input(struct conn *c) {
    struct evbuffer *in = bufferevent_get_input(c->bev);
    for (;;) {
        if (c->closing || c->hang) {
            evbuffer_drain(in, evbuffer_get_length(in));
            return;
        }
        if (c->paused || evbuffer_get_length(output(c)) > OUT_HIGH)
            return;
        size_t n = evbuffer_get_contiguous_space(in);
        if (n == 0)
            n = evbuffer_get_length(in);
        if (n == 0)
            break;
        if (n > FEED_MAX)
            n = FEED_MAX;
        const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
        if (data == NULL) {
            start_closing(c);
            return;
        }
        llhttp_errno_t err = llhttp_execute(&c->parser, data, n);
        if (err == HPE_OK) {
            evbuffer_drain(in, n);
        } else if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
            /* Our on_message_complete paused: what follows is the next request. */
            evbuffer_drain(in, (size_t)(llhttp_get_error_pos(&c->parser) - data));
            if (!c->paused && !c->closing)
                start_closing(c); /* an upgrade we do not follow */
        } else {
            parse_error(c, err);
        }
    }
    /* Everything received is parsed; after the peer's FIN nothing more can come. */
    if (c->peer_eof)
        start_closing(c);
}

/* The answer that kept the parser paused is complete: go on with pipelined requests. */
static void response_done(struct conn *c) {
    c->mid_response = false;
    if (!c->keep_alive) {
        start_closing(c);
        return;
    }
    c->paused = false;
    llhttp_resume(&c->parser);
    process_input(c);
}

static void read_cb(struct bufferevent *bev, void *arg) {
    struct conn *c = arg;
    process_input(c);
    maybe_close(c);
}

static void write_cb(struct bufferevent *bev, void *arg) {
    struct conn *c = arg;
    if (c->generating) {
        if (fill_bytes(c))
            response_done(c);
    } else {
        process_input(c);
    }
    maybe_close(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg) {
    struct conn *c = arg;
    if (what & BEV_EVENT_ERROR) {
        conn_free(c);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        c->peer_eof = true;
        if (c->lingering || c->hang) {
            conn_free(c);
            return;
        }
        process_input(c);
        maybe_close(c);
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg) {
    struct conn *c = arg;
    if (c->lingering) {
        conn_free(c);
        return;
    }
    if (c->delaying) {
        c->delaying = false;
        write_default(c);
        response_done(c);
        maybe_close(c);
    }
}

/* ---- request parsing ------------------------------------------------------------------- */

static int append(struct conn *c, const char *at, size_t len) {
    if (c->hlen + len > MAX_HEADER_BYTES) {
        c->limit_status = 431;
        return -1;
    }
    if (c->hlen + len > c->hcap) {
        size_t cap = c->hcap ? c->hcap : 1024;
        while (cap < c->hlen + len)
            cap *= 2;
        if (cap > MAX_HEADER_BYTES)
            cap = MAX_HEADER_BYTES;
        char *p = realloc(c->hbuf, cap);
        if (p == NULL) {
            c->limit_status = 503;
            return -1;
        }
        c->hbuf = p;
        c->hcap = cap;
    }
    memcpy(c->hbuf + c->hlen, at, len);
    c->hlen += len;
    return 0;
}

static int on_message_begin(llhttp_t *p) {
    struct conn *c = p->data;
    c->hlen = 0;
    c->target_len = 0;
    c->nhdrs = 0;
    c->in_field = false;
    c->limit_status = 0;
    c->reject_reason = NULL;
    c->route = ROUTE_DEFAULT;
    c->arg = 0;
    c->chunked_query = false;
    c->eof_query = false;
    c->head_only = false;
    c->framing = FRAME_LENGTH;
    c->body_bytes = 0;
    c->fnv = FNV_OFFSET;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
    struct conn *c = p->data;
    c->target_len += len;
    return append(c, at, len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
    struct conn *c = p->data;
    if (!c->in_field) {
        if (c->nhdrs == MAX_HEADERS) {
            c->limit_status = 431;
            return -1;
        }
        c->hdrs[c->nhdrs++] = (struct header){.off = (uint32_t)c->hlen};
        c->in_field = true;
    }
    c->hdrs[c->nhdrs - 1].name_len += (uint32_t)len;
    return append(c, at, len);
}

static bool is_tchar(unsigned char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* llhttp is built without LLHTTP_STRICT_MODE and lets "Bad Name : x" through; RFC 9112 5.1
 * requires a 400 for whitespace before the colon, and a faithful backend should give it. */
static int on_header_field_complete(llhttp_t *p) {
    struct conn *c = p->data;
    const struct header *h = &c->hdrs[c->nhdrs - 1];
    c->in_field = false;
    for (uint32_t i = 0; i < h->name_len; i++) {
        if (!is_tchar((unsigned char)c->hbuf[h->off + i])) {
            c->reject_reason = "invalid character in header name (RFC 9112 5.1)";
            return -1;
        }
    }
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
    struct conn *c = p->data;
    if (c->nhdrs == 0)
        return -1;
    c->hdrs[c->nhdrs - 1].value_len += (uint32_t)len;
    return append(c, at, len);
}

static bool path_is(const char *path, size_t len, const char *want) {
    return len == strlen(want) && memcmp(path, want, len) == 0;
}

/* Matches "<prefix><decimal>" and parses the number; *ok is false if it is not a number in
 * [0, max]. Returns whether the prefix matched. */
static bool path_arg(const char *path, size_t len, const char *prefix, uint64_t max, uint64_t *out,
                     bool *ok) {
    size_t plen = strlen(prefix);
    if (len < plen || memcmp(path, prefix, plen) != 0)
        return false;
    uint64_t v = 0;
    *ok = len > plen;
    for (size_t i = plen; i < len && *ok; i++) {
        if (path[i] < '0' || path[i] > '9' || v > (max - (uint64_t)(path[i] - '0')) / 10)
            *ok = false;
        else
            v = v * 10 + (uint64_t)(path[i] - '0');
    }
    *out = v;
    return true;
}

static bool query_has(const char *q, size_t len, const char *param) {
    size_t plen = strlen(param);
    const char *end = q + len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - q) == plen && memcmp(q, param, plen) == 0)
            return true;
        q = stop + 1;
    }
    return false;
}

static void route_request(struct conn *c) {
    const char *t = c->hbuf, *end = c->hbuf + c->target_len;
    const char *path = t;
    /* RFC 9112 3.2.2: absolute-form targets carry the path after the authority. */
    if (t < end && *t != '/') {
        const char *s = memmem(t, (size_t)(end - t), "://", 3);
        if (s != NULL) {
            path = memchr(s + 3, '/', (size_t)(end - (s + 3)));
            if (path == NULL)
                path = end;
        }
    }
    const char *q = memchr(path, '?', (size_t)(end - path));
    size_t len = (size_t)((q ? q : end) - path);
    bool ok = true;

    if (path_is(path, len, "/headers"))
        c->route = ROUTE_HEADERS;
    else if (path_is(path, len, "/echo"))
        c->route = ROUTE_ECHO;
    else if (path_is(path, len, "/sink"))
        c->route = ROUTE_SINK;
    else if (path_is(path, len, "/hang"))
        c->route = ROUTE_HANG;
    else if (path_is(path, len, "/reset"))
        c->route = ROUTE_RESET;
    else if (path_is(path, len, "/partial"))
        c->route = ROUTE_PARTIAL;
    else if (path_is(path, len, "/stall"))
        c->route = ROUTE_STALL;
    else if (path_is(path, len, "/close"))
        c->route = ROUTE_CLOSE;
    else if (path_is(path, len, "/stats"))
        c->route = ROUTE_STATS;
    else if (path_is(path, len, "/healthz"))
        c->route = ROUTE_HEALTHZ;
    else if (path_arg(path, len, "/control/healthz/", 599, &c->arg, &ok))
        c->route = ok && c->arg >= 200 ? ROUTE_CONTROL_HEALTHZ : ROUTE_BAD_ARG;
    else if (path_arg(path, len, "/control/default/", 599, &c->arg, &ok))
        c->route = ok && c->arg >= 200 ? ROUTE_CONTROL_DEFAULT : ROUTE_BAD_ARG;
    else if (path_arg(path, len, "/control/delay/", MAX_DELAY_MS, &c->arg, &ok))
        c->route = ROUTE_CONTROL_DELAY;
    else if (path_arg(path, len, "/bytes/", MAX_BYTES, &c->arg, &ok))
        c->route = ROUTE_BYTES;
    else if (path_arg(path, len, "/status/", 599, &c->arg, &ok))
        c->route = ok && c->arg > 100 ? ROUTE_STATUS : ROUTE_BAD_ARG;
    else if (path_arg(path, len, "/delay/", MAX_DELAY_MS, &c->arg, &ok) ||
             path_arg(path, len, "/slowhead/", MAX_DELAY_MS, &c->arg, &ok))
        c->route = ROUTE_DELAY;
    if (!ok)
        c->route = ROUTE_BAD_ARG;
    if (c->route == ROUTE_DEFAULT && g_delay_ms > 0) {
        c->route = ROUTE_DELAY;
        c->arg = g_delay_ms;
    }
    if (q != NULL) {
        c->chunked_query = query_has(q + 1, (size_t)(end - q - 1), "chunked=1");
        c->eof_query = query_has(q + 1, (size_t)(end - q - 1), "eof=1");
    }
}

/* Chunked framing does not exist in HTTP/1.0 (RFC 9112 7.1): such peers get close-delimited. */
static enum framing stream_framing(struct conn *c, bool chunked) {
    if (chunked && c->http10) {
        c->keep_alive = false;
        return FRAME_EOF;
    }
    return chunked ? FRAME_CHUNKED : FRAME_LENGTH;
}

static int on_headers_complete(llhttp_t *p) {
    struct conn *c = p->data;
    g_requests++;
    c->http10 = p->http_major == 0 || (p->http_major == 1 && p->http_minor == 0);
    c->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    c->head_only = p->method == HTTP_HEAD;
    route_request(c);

    bool has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
    if (has_body && !c->http10 && header_value_is(c, find_header(c, "expect"), "100-continue"))
        evbuffer_add_printf(output(c), "HTTP/1.1 100 Continue\r\nX-Backend: %s\r\n\r\n", g_name);

    switch (c->route) {
    case ROUTE_CLOSE:
        c->keep_alive = false;
        break;
    case ROUTE_BYTES:
        if (c->eof_query) {
            c->framing = FRAME_EOF;
            c->keep_alive = false;
        } else {
            c->framing = stream_framing(c, c->chunked_query);
        }
        break;
    case ROUTE_ECHO: {
        /* The head goes out now so that the body can be echoed as it arrives. */
        c->framing = stream_framing(c, p->flags & F_CHUNKED);
        const struct header *ct = find_header(c, "content-type");
        write_head(c, 200, ct ? c->hbuf + ct->off + ct->name_len : NULL, ct ? ct->value_len : 0,
                   c->framing, (p->flags & F_CONTENT_LENGTH) ? p->content_length : 0);
        c->mid_response = true;
        break;
    }
    default:
        break;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    struct conn *c = p->data;
    if (c->route == ROUTE_SINK) {
        uint64_t h = c->fnv;
        for (size_t i = 0; i < len; i++)
            h = (h ^ (unsigned char)at[i]) * FNV_PRIME;
        c->fnv = h;
        c->body_bytes += len;
    } else if (c->route == ROUTE_ECHO && !c->head_only && len > 0) {
        struct evbuffer *out = output(c);
        if (c->framing == FRAME_CHUNKED)
            evbuffer_add_printf(out, "%zx\r\n", len);
        evbuffer_add(out, at, len);
        if (c->framing == FRAME_CHUNKED)
            evbuffer_add(out, "\r\n", 2);
    }
    return 0;
}

/* Writes the answer, or starts it when it takes time (delay, generator, hang). */
static void respond(struct conn *c) {
    char body[128];
    int n;
    switch (c->route) {
    case ROUTE_DEFAULT:
    case ROUTE_CLOSE:
        if (g_default_status != 200) {
            n = snprintf(body, sizeof body, "%.64s %d\n", g_name, g_default_status);
            write_simple(c, g_default_status, "text/plain", body, n > 0 ? (size_t)n : 0);
            break;
        }
        write_default(c);
        break;
    case ROUTE_HEALTHZ:
        n = snprintf(body, sizeof body, "healthz %d\n", g_healthz_status);
        write_simple(c, g_healthz_status, "text/plain", body, n > 0 ? (size_t)n : 0);
        break;
    case ROUTE_CONTROL_HEALTHZ:
    case ROUTE_CONTROL_DEFAULT:
        *(c->route == ROUTE_CONTROL_HEALTHZ ? &g_healthz_status : &g_default_status) = (int)c->arg;
        write_simple(c, 200, "text/plain", "ok\n", 3);
        break;
    case ROUTE_CONTROL_DELAY:
        g_delay_ms = c->arg;
        write_simple(c, 200, "text/plain", "ok\n", 3);
        break;
    case ROUTE_HEADERS:
        write_headers_json(c);
        break;
    case ROUTE_ECHO:
        if (c->framing == FRAME_CHUNKED && !c->head_only)
            evbuffer_add(output(c), "0\r\n\r\n", 5);
        c->mid_response = false;
        break;
    case ROUTE_SINK:
        evbuffer_add_printf(g_scratch,
                            "{\"bytes\": %" PRIu64 ", \"fnv1a64\": \"%016" PRIx64 "\"}\n",
                            c->body_bytes, c->fnv);
        write_scratch_json(c);
        break;
    case ROUTE_STATS:
        evbuffer_add_printf(g_scratch,
                            "{\"requests\": %" PRIu64 ", \"connections\": %" PRIu64 "}\n",
                            g_requests, g_connections);
        write_scratch_json(c);
        break;
    case ROUTE_BYTES:
        start_bytes(c);
        break;
    case ROUTE_STATUS:
        n = snprintf(body, sizeof body, "status %d\n", (int)c->arg);
        write_simple(c, (int)c->arg, "text/plain", body, n > 0 ? (size_t)n : 0);
        break;
    case ROUTE_DELAY:
        if (arm_timer(c, c->arg) < 0) {
            write_simple(c, 503, "text/plain", "timer failed\n", 13);
            break;
        }
        c->delaying = true;
        c->mid_response = true;
        c->paused = true;
        break;
    case ROUTE_HANG:
        c->hang = true;
        c->paused = true;
        break;
    case ROUTE_RESET:
        /* Earlier pipelined answers are flushed first; then close() sends RST. */
        c->rst = true;
        start_closing(c);
        break;
    case ROUTE_PARTIAL:
        write_head(c, 200, "text/plain", 10, FRAME_LENGTH, 100);
        evbuffer_add(output(c), g_pattern, 10);
        start_closing(c);
        break;
    case ROUTE_STALL:
        /* 10 of the 100 bytes promised, then silence with the connection open. */
        write_head(c, 200, "text/plain", 10, FRAME_LENGTH, 100);
        evbuffer_add(output(c), g_pattern, 10);
        c->hang = true;
        c->paused = true;
        break;
    case ROUTE_BAD_ARG:
        n = snprintf(body, sizeof body,
                     "bad number in path: /bytes/0..%llu, /status/101..599, /delay/0..%llu\n",
                     MAX_BYTES, MAX_DELAY_MS);
        write_simple(c, 400, "text/plain", body, n > 0 ? (size_t)n : 0);
        break;
    }
}

static int on_message_complete(llhttp_t *p) {
    struct conn *c = p->data;
    respond(c);
    if (!c->paused && !c->closing && !c->keep_alive)
        start_closing(c);
    /* Pausing stops llhttp right after this request, so the next pipelined one waits in the
     * input buffer until this answer is complete and answers go out in order. */
    return c->paused || c->closing ? HPE_PAUSED : 0;
}

/* ---- process -------------------------------------------------------------------------- */

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg) {
    g_connections++;
    int one = 1;
    /* Small answers must leave at once, not wait for Nagle's ACK. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        evutil_closesocket(fd);
        return;
    }
    c->bev = bufferevent_socket_new(g_base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &g_settings);
    c->parser.data = c;
    c->next = g_conns;
    if (g_conns)
        g_conns->prev = c;
    g_conns = c;
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, IN_HIGH);
    bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
    bufferevent_set_max_single_read(c->bev, IO_MAX);
    bufferevent_set_max_single_write(c->bev, IO_MAX);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void listener_resume_cb(evutil_socket_t fd, short what, void *arg) {
    evconnlistener_enable(g_listener);
}

/* Out of descriptors or similar: pause accepting briefly instead of spinning on the error. */
static void accept_error_cb(struct evconnlistener *l, void *arg) {
    fprintf(stderr, "pf-backend: accept: %s; pausing accept for 100 ms\n",
            evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    evconnlistener_disable(l);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
    event_base_once(g_base, -1, EV_TIMEOUT, listener_resume_cb, NULL, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg) {
    event_base_loopbreak(g_base);
}

/* Parses "IPV4:PORT" or "[IPV6]:PORT"; port 0 asks the kernel for a free one. */
static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len) {
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof host || colon == s)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *endp;
    errno = 0;
    long port = strtol(colon + 1, &endp, 10);
    if (errno || *endp != '\0' || endp == colon + 1 || port < 0 || port > 65535)
        return -1;
    memset(ss, 0, sizeof *ss);
    size_t hlen = strlen(host);
    if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        host[hlen - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return -1;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return -1;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof *a4;
    return 0;
}

static int build_defaults(void) {
    size_t name_len = strlen(g_name);
    for (int cont = 0; cont < CONT_COUNT; cont++) {
        int n = snprintf(g_default[cont], sizeof g_default[cont],
                         "HTTP/1.1 200 OK\r\nX-Backend: %s\r\nContent-Type: text/plain\r\n"
                         "Content-Length: %zu\r\n%s\r\n%s\n",
                         g_name, name_len + 1, connection_header(cont), g_name);
        if (n < 0 || (size_t)n >= sizeof g_default[cont])
            return -1;
        g_default_len[cont] = (size_t)n;
        g_default_head_len[cont] = (size_t)n - name_len - 1;
    }
    return 0;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: pf-backend --listen HOST:PORT [--name NAME] [--delay-ms MS]\n"
            "  HOST:PORT  127.0.0.1:8081, or port 0 for a free port; prints 'listening HOST:PORT'\n"
            "  NAME       sent as X-Backend on every response (default: backend)\n"
            "  MS         every \"anything else\" answer waits MS milliseconds (default 0)\n"
            "paths: /headers /echo /sink /bytes/N[?chunked=1|?eof=1] /status/NNN /delay/MS\n"
            "       /slowhead/MS /hang /reset /partial /stall /close /stats /healthz;\n"
            "       anything else: NAME\\n with status 200\n"
            "control: /control/healthz/NNN  the status /healthz answers from now on (default 200)\n"
            "         /control/default/NNN  the status of \"anything else\" from now on\n"
            "         /control/delay/MS     the --delay-ms from now on\n");
}

int main(int argc, char **argv) {
    const char *listen_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_arg = argv[++i];
        } else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
            g_name = argv[++i];
        } else if (strcmp(argv[i], "--delay-ms") == 0 && i + 1 < argc) {
            char *end;
            const char *arg = argv[++i];
            errno = 0;
            g_delay_ms = strtoull(arg, &end, 10);
            if (errno || end == arg || *end || arg[0] == '-' || g_delay_ms > MAX_DELAY_MS) {
                fprintf(stderr, "pf-backend: --delay-ms '%s': expected 0..%llu\n", arg,
                        MAX_DELAY_MS);
                return 2;
            }
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "pf-backend: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (listen_arg == NULL) {
        fprintf(stderr, "pf-backend: --listen HOST:PORT is required\n");
        usage(stderr);
        return 2;
    }
    size_t name_len = strlen(g_name);
    bool name_ok = name_len > 0 && name_len <= MAX_NAME_LEN;
    for (size_t i = 0; i < name_len; i++)
        name_ok = name_ok && (unsigned char)g_name[i] > 0x20 && g_name[i] != 0x7f;
    if (!name_ok || build_defaults() < 0) {
        fprintf(stderr, "pf-backend: --name must be 1..%d visible characters without spaces\n",
                MAX_NAME_LEN);
        return 2;
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (parse_listen(listen_arg, &ss, &sslen) < 0) {
        fprintf(stderr, "pf-backend: --listen '%s': expected IP:PORT such as 127.0.0.1:0\n",
                listen_arg);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an ordinary error, not a kill */
    for (size_t i = 0; i < sizeof g_pattern; i++)
        g_pattern[i] = "0123456789abcdef"[i & 15];
    g_settings.on_message_begin = on_message_begin;
    g_settings.on_url = on_url;
    g_settings.on_header_field = on_header_field;
    g_settings.on_header_field_complete = on_header_field_complete;
    g_settings.on_header_value = on_header_value;
    g_settings.on_headers_complete = on_headers_complete;
    g_settings.on_body = on_body;
    g_settings.on_message_complete = on_message_complete;

    int rc = 1;
    struct event *sigterm = NULL, *sigint = NULL;
    /* timerfd-backed timers: /delay and --delay-ms mean milliseconds, not the kernel's
     * 4 ms scheduler tick that plain epoll timeouts round up to. */
    struct event_config *ec = event_config_new();
    if (ec) {
        event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
        g_base = event_base_new_with_config(ec);
        event_config_free(ec);
    }
    g_scratch = evbuffer_new();
    if (g_base == NULL || g_scratch == NULL) {
        fprintf(stderr, "pf-backend: cannot create the event loop (out of memory?)\n");
        goto out;
    }
    g_listener =
        evconnlistener_new_bind(g_base, accept_cb, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                SOMAXCONN, (struct sockaddr *)&ss, (int)sslen);
    if (g_listener == NULL) {
        fprintf(stderr, "pf-backend: listen on %s: %s; is the port in use?\n", listen_arg,
                strerror(errno));
        goto out;
    }
    evconnlistener_set_error_cb(g_listener, accept_error_cb);
    sigterm = evsignal_new(g_base, SIGTERM, signal_cb, NULL);
    sigint = evsignal_new(g_base, SIGINT, signal_cb, NULL);
    if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) < 0 ||
        evsignal_add(sigint, NULL) < 0) {
        fprintf(stderr, "pf-backend: cannot install SIGTERM/SIGINT handlers\n");
        goto out;
    }

    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    char addr[INET6_ADDRSTRLEN];
    if (getsockname(evconnlistener_get_fd(g_listener), (struct sockaddr *)&bound, &blen) < 0) {
        fprintf(stderr, "pf-backend: getsockname: %s\n", strerror(errno));
        goto out;
    }
    if (bound.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&bound;
        inet_ntop(AF_INET6, &a6->sin6_addr, addr, sizeof addr);
        printf("listening [%s]:%u\n", addr, ntohs(a6->sin6_port));
    } else {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)&bound;
        inet_ntop(AF_INET, &a4->sin_addr, addr, sizeof addr);
        printf("listening %s:%u\n", addr, ntohs(a4->sin_port));
    }
    fflush(stdout);

    if (event_base_dispatch(g_base) < 0) {
        fprintf(stderr, "pf-backend: event loop failed\n");
        goto out;
    }
    rc = 0;
out:
    while (g_conns)
        conn_free(g_conns);
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    if (g_listener)
        evconnlistener_free(g_listener);
    if (g_scratch)
        evbuffer_free(g_scratch);
    if (g_base)
        event_base_free(g_base);
    return rc;
}
