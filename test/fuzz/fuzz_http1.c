/* libFuzzer harness for the HTTP/1 head store and writers (proxy/http1.c) behind llhttp,
 * wired as conn.c (requests) and upstream.c (responses) wire them: llhttp's split callbacks
 * into pf_head, the same pure checks conn.c makes (token names, obs-fold, target, Host,
 * body mode, response framing: the http1_* decisions, not copies), then the head
 * pilotfish forwards. The forwarded head is parsed again and
 * must be valid HTTP/1.1 with one Host (requests), no hop-by-hop field and only
 * pilotfish's own framing: the properties that keep a proxy from being a smuggling relay.
 *
 * The first byte steers: bit 0 picks responses (1) or requests (0), bits 1-2 the head
 * byte limit (64, 512, 4096, 65536), bit 3 the header count limit (4 or 128), bits 4-7 the
 * read size (1-16 bytes, or all at once for 0); the rest is the byte stream. */
#include "core/error.h"
#include "core/json.h"
#include "proxy/http1.h"
#include "proxy/router.h"

#include <event2/buffer.h>
#include <llhttp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

typedef struct message {
    pf_head head;
    llhttp_type_t type;
    struct evbuffer *out; /* the heads pilotfish writes */
    bool reparsing;       /* this message is a head pilotfish wrote, parsed again */
    bool checked;         /* ... and it reached its end */
    bool value_ended_at_read_end;
    const char *read_start, *read_end; /* the piece llhttp is executing now */
} message;

static int on_first(llhttp_t *p, const char *at, size_t len) {
    message *m = p->data;
    return http1_head_append_first(&m->head, at, len) == PF_OK ? 0 : -1;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
    message *m = p->data;
    /* conn.c refuses a request whose field name is not a token */
    if (m->type == HTTP_REQUEST && !m->reparsing && !http1_is_token(at, len))
        return -1;
    return http1_head_append_name(&m->head, at, len) == PF_OK ? 0 : -1;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
    message *m = p->data;
    /* ... and one with an obs-fold, told from a read boundary as conn.c tells it */
    if (m->type == HTTP_REQUEST && !m->reparsing &&
        http1_value_is_fold(m->head.last_was_value, m->value_ended_at_read_end,
                            at == m->read_start))
        return -1;
    m->value_ended_at_read_end = at + len == m->read_end;
    return http1_head_append_value(&m->head, at, len) == PF_OK ? 0 : -1;
}

static int on_header_value_complete(llhttp_t *p) {
    message *m = p->data;
    return http1_head_finish_value(&m->head) == PF_OK ? 0 : -1;
}

static void check_names(const pf_head *h) {
    for (size_t i = 0; i < h->count; i++) {
        CHECK(strlen(http1_name(h, i)) == h->headers[i].name_len);
        CHECK(strlen(http1_value(h, i)) <= h->headers[i].value_len);
        CHECK(h->headers[i].value_len == 0 ||
              (http1_value(h, i)[h->headers[i].value_len - 1] != ' ' &&
               http1_value(h, i)[h->headers[i].value_len - 1] != '\t'));
    }
}

static void forward_request(llhttp_t *p, message *m) {
    const pf_head *h = &m->head;
    /* conn.c answers these itself and forwards nothing */
    if (p->http_major != 1 || p->http_minor > 1 || p->method == HTTP_CONNECT)
        return;
    pf_target t;
    if (http1_parse_target(http1_first(h), h->first_len, p->method == HTTP_OPTIONS, &t) != PF_OK)
        return;
    CHECK(t.target_len > 0 && t.path_len <= t.target_len + 1);
    CHECK(t.target[0] == '/' || t.target[0] == '*' || (t.root_first && t.target[0] == '?'));
    size_t hosts;
    long host = http1_find(h, "host", &hosts);
    if (http1_check_host(hosts, p->http_minor, t.authority != NULL))
        return;
    const char *authority = t.authority ? t.authority
                            : host >= 0 ? http1_value(h, (size_t)host)
                                        : "";
    size_t authority_len = t.authority ? t.authority_len
                           : host >= 0 ? h->headers[host].value_len
                                       : 0;
    char name[256];
    int port;
    if (authority_len &&
        router_parse_authority(authority, authority_len, name, sizeof name, &port) != PF_OK)
        return;
    long id = http1_find(h, "x-request-id", NULL);
    char request_id[40];
    if (id >= 0)
        pf_json_escape(request_id, sizeof request_id, http1_value(h, (size_t)id),
                       h->headers[id].value_len);
    pf_forward_request fwd = {
        .method = llhttp_method_name((llhttp_method_t)p->method),
        .target = t.target,
        .target_len = t.target_len,
        .root_first = t.root_first,
        .host = authority,
        .host_len = authority_len,
        .client_ip = "192.0.2.1",
        .proto = "http",
        .request_id = id >= 0 ? NULL : "00000000-0000-4000-8000-000000000000",
        .body = http1_request_body_mode(p->flags & F_CHUNKED, p->flags & F_CONTENT_LENGTH,
                                        p->content_length),
        .content_length = p->content_length,
    };
    CHECK(http1_write_request_head(m->out, h, &fwd) == PF_OK);
}

static void forward_response(llhttp_t *p, message *m) {
    pf_body_mode body = http1_response_body_mode(p->flags & F_CHUNKED, p->flags & F_CONTENT_LENGTH);
    /* the framing conn.c picks for an HTTP/1.1 client's GET */
    pf_response_framing f = http1_response_framing(false, p->status_code, body, 1);
    CHECK(!f.close && !f.skip_body);
    pf_forward_response fwd = {
        .status = p->status_code,
        .client_minor = 1,
        .body = f.head_body,
        .content_length = p->content_length,
        .keep_alive = llhttp_should_keep_alive(p),
        .attempts = 2,
    };
    CHECK(http1_write_response_head(m->out, &m->head, &fwd) == PF_OK);
}

/* What a forwarded head may not carry: hop-by-hop fields and competing framing. The only
 * Connection field is pilotfish's own, on responses. */
static void check_forwarded(const message *m) {
    static const char *const hop[] = {
        "keep-alive",         "proxy-connection",   "te", "trailer", "upgrade", "http2-settings",
        "proxy-authenticate", "proxy-authorization"};
    const pf_head *h = &m->head;
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        CHECK(http1_find(h, hop[i], NULL) < 0);
    size_t te, cl, hosts, connection;
    http1_find(h, "transfer-encoding", &te);
    http1_find(h, "content-length", &cl);
    CHECK(te + cl <= 1);
    long c = http1_find(h, "connection", &connection);
    if (m->type == HTTP_REQUEST) {
        CHECK(connection == 0);
        http1_find(h, "host", &hosts);
        CHECK(hosts == 1);
    } else if (c >= 0) {
        CHECK(connection == 1 && (strcmp(http1_value(h, (size_t)c), "close") == 0 ||
                                  strcmp(http1_value(h, (size_t)c), "keep-alive") == 0));
    }
}

static int on_headers_complete(llhttp_t *p);

static int on_message_complete(llhttp_t *p) {
    message *m = p->data;
    http1_head_reset(&m->head);
    return 0;
}

static const llhttp_settings_t settings = {
    .on_url = on_first,
    .on_status = on_first,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

/* The head just written must parse as one complete, clean head. */
static void reparse(message *m) {
    size_t len = evbuffer_get_length(m->out);
    if (len == 0)
        return;
    message again = {.type = m->type, .reparsing = true};
    http1_head_init(&again.head, 1u << 20, 1024);
    llhttp_t p;
    llhttp_init(&p, m->type, &settings);
    p.data = &again;
    const char *head = (const char *)evbuffer_pullup(m->out, -1);
    CHECK(head != NULL);
    llhttp_errno_t rc = llhttp_execute(&p, head, len);
    CHECK(rc == HPE_OK && again.checked);
    http1_head_free(&again.head);
    evbuffer_drain(m->out, len);
}

static int on_headers_complete(llhttp_t *p) {
    message *m = p->data;
    check_names(&m->head);
    if (m->reparsing) {
        check_forwarded(m);
        m->checked = true;
        return 1; /* the body is not in the head: stop at its end */
    }
    if (m->type == HTTP_REQUEST)
        forward_request(p, m);
    else if (p->status_code >= 200 || p->status_code < 100)
        forward_response(p, m);
    reparse(m);
    /* upstream.c stops at a 101; the rest of a response stream is parsed as more heads */
    if (m->type == HTTP_RESPONSE && p->status_code == 101)
        return -1;
    return m->type == HTTP_RESPONSE ? 1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const size_t byte_limits[] = {64, 512, 4096, 65536};
    if (size < 1)
        return 0;
    message m = {.type = data[0] & 1 ? HTTP_RESPONSE : HTTP_REQUEST, .out = evbuffer_new()};
    CHECK(m.out != NULL);
    http1_head_init(&m.head, byte_limits[(data[0] >> 1) & 3], data[0] & 8 ? 128 : 4);
    size_t piece = (size_t)(data[0] >> 4);
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    if (piece == 0)
        piece = len ? len : 1;

    llhttp_t p;
    llhttp_init(&p, m.type, &settings);
    p.data = &m;
    for (size_t off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        m.read_start = in + off;
        m.read_end = in + off + n;
        if (llhttp_execute(&p, in + off, n) != HPE_OK)
            break;
    }
    http1_head_free(&m.head);
    evbuffer_free(m.out);
    return 0;
}
