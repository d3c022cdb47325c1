/* Unit tests for proxy/http1: the message head store fed by llhttp's split callbacks (every
 * split position, empty values, trailing whitespace, limits), header lookup, the
 * hop-by-hop rules, and the heads pilotfish writes (forwarded request, forwarded response,
 * local responses, chunks). Heads are filled by real llhttp the way conn.c and upstream.c
 * do it, and written heads are parsed back with llhttp to show they are valid HTTP/1.1. */
#include "core/error.h"
#include "proxy/http1.h"
#include "test/unit/unit.h"
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- feeding a head through llhttp --------------------------------------------------- */

typedef struct feed {
    pf_head *h;
    int rc; /* first PF_E* an appender returned */
    bool headers_done;
} feed;

static int fail(feed *f, int rc) {
    if (rc != PF_OK && f->rc == PF_OK)
        f->rc = rc;
    return rc == PF_OK ? 0 : -1;
}

static int on_first(llhttp_t *p, const char *at, size_t len) {
    feed *f = p->data;
    return fail(f, http1_head_append_first(f->h, at, len));
}

static int on_name(llhttp_t *p, const char *at, size_t len) {
    feed *f = p->data;
    return fail(f, http1_head_append_name(f->h, at, len));
}

static int on_value(llhttp_t *p, const char *at, size_t len) {
    feed *f = p->data;
    return fail(f, http1_head_append_value(f->h, at, len));
}

static int on_value_complete(llhttp_t *p) {
    feed *f = p->data;
    http1_head_finish_value(f->h);
    return 0;
}

static int on_headers_complete(llhttp_t *p) {
    feed *f = p->data;
    f->headers_done = true;
    return 0;
}

/* Parses `text` (a request or response head, type HTTP_REQUEST / HTTP_RESPONSE) into h,
 * handing it to llhttp in pieces cut at the given positions (ascending, may be empty).
 * Returns the first appender error, PF_EINVAL when llhttp failed, or PF_OK. */
static int parse_cut(pf_head *h, llhttp_type_t type, const char *text, const size_t *cuts,
                     size_t ncuts) {
    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_url = on_first;
    settings.on_status = on_first;
    settings.on_header_field = on_name;
    settings.on_header_value = on_value;
    settings.on_header_value_complete = on_value_complete;
    settings.on_headers_complete = on_headers_complete;
    llhttp_t parser;
    llhttp_init(&parser, type, &settings);
    feed f = {.h = h, .rc = PF_OK};
    parser.data = &f;
    size_t len = strlen(text), from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        llhttp_errno_t err = llhttp_execute(&parser, text + from, to - from);
        if (err == HPE_PAUSED_UPGRADE && f.headers_done)
            return PF_OK; /* "Connection: upgrade": llhttp stops after the head */
        if (err != HPE_OK)
            return f.rc != PF_OK ? f.rc : PF_EINVAL;
        from = to;
    }
    return f.headers_done ? PF_OK : PF_EINVAL;
}

static int parse(pf_head *h, llhttp_type_t type, const char *text) {
    return parse_cut(h, type, text, NULL, 0);
}

/* The head as one line, "first|Name=value|Name=value", for comparisons and messages. The
 * result lives until the next call with the same buffer. */
static const char *dump(const pf_head *h, char *buf, size_t cap) {
    size_t len =
        (size_t)snprintf(buf, cap, "%.*s", (int)h->first_len, h->buf ? http1_first(h) : "");
    for (size_t i = 0; i < h->count && len < cap; i++) {
        const char *name = http1_name(h, i), *value = http1_value(h, i);
        /* names and values are NUL-terminated C strings of exactly their length */
        if (strlen(name) != h->headers[i].name_len || strlen(value) != h->headers[i].value_len)
            len += (size_t)snprintf(buf + len, cap - len, "|<header %zu not terminated>", i);
        else
            len += (size_t)snprintf(buf + len, cap - len, "|%.*s=%.*s", (int)h->headers[i].name_len,
                                    name, (int)h->headers[i].value_len, value);
    }
    return buf;
}

/* The contents of an evbuffer as a C string (owned by the buffer). */
static const char *text_of(struct evbuffer *b) {
    evbuffer_add(b, "", 1);
    const char *s = (const char *)evbuffer_pullup(b, -1);
    return s;
}

static const char request_text[] = "GET /a/b?c=d HTTP/1.1\r\n"
                                   "Host: Example.com:8080\r\n"
                                   "X-Empty:\r\n"
                                   "X-Trail: v  \t\r\n"
                                   "Accept:  text/html, */*\r\n"
                                   "X-Inner: a  b\r\n"
                                   "x-lower: 1\r\n"
                                   "X-Empty-Spaced:   \r\n"
                                   "\r\n";
static const char request_want[] = "/a/b?c=d|Host=Example.com:8080|X-Empty=|X-Trail=v|"
                                   "Accept=text/html, */*|X-Inner=a  b|x-lower=1|X-Empty-Spaced=";

/* ---- the head store ------------------------------------------------------------------ */

static void test_head_collects_target_and_headers_from_llhttp(void) {
    pf_head h;
    http1_head_init(&h, 64 * 1024, 128);
    CU_ASSERT_EQUAL_FATAL(parse(&h, HTTP_REQUEST, request_text), PF_OK);
    char buf[1024];
    PF_CHECK(strcmp(dump(&h, buf, sizeof buf), request_want) == 0, "got  %s\nwant %s", buf,
             request_want);
    CU_ASSERT_EQUAL(h.count, 7);
    CU_ASSERT_EQUAL(h.first_len, 8);
    http1_head_free(&h);
}

static void test_head_is_the_same_whatever_the_split_points(void) {
    /* every single cut, and every pair of cuts, as bytes may arrive in any packets */
    size_t n = strlen(request_text);
    pf_head h;
    http1_head_init(&h, 64 * 1024, 128);
    char buf[1024];
    size_t failures = 0;
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j++) {
            http1_head_reset(&h);
            size_t cuts[2] = {i, j};
            int rc = parse_cut(&h, HTTP_REQUEST, request_text, cuts, 2);
            if (rc != PF_OK || strcmp(dump(&h, buf, sizeof buf), request_want) != 0)
                if (failures++ < 5)
                    PF_CHECK(false, "cut at %zu and %zu: rc=%d, got %s", i, j, rc, buf);
        }
    }
    PF_CHECK(failures == 0, "%zu of the split positions gave a different head", failures);
    http1_head_free(&h);
}

static void test_response_reason_is_the_first_span(void) {
    pf_head h;
    http1_head_init(&h, 4096, 16);
    CU_ASSERT_EQUAL_FATAL(
        parse(&h, HTTP_RESPONSE, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-A: b\r\n\r\n"),
        PF_OK);
    char buf[256];
    CU_ASSERT_STRING_EQUAL(dump(&h, buf, sizeof buf), "Not Found|Content-Length=0|X-A=b");
    CU_ASSERT_EQUAL(h.first_len, 9);

    /* no reason phrase at all */
    http1_head_reset(&h);
    CU_ASSERT_EQUAL_FATAL(parse(&h, HTTP_RESPONSE, "HTTP/1.1 204 \r\nX-A: b\r\n\r\n"), PF_OK);
    CU_ASSERT_STRING_EQUAL(dump(&h, buf, sizeof buf), "|X-A=b");
    CU_ASSERT_EQUAL(h.first_len, 0);
    http1_head_free(&h);
}

static void test_pieces_appended_directly_join_into_names_and_values(void) {
    pf_head h;
    http1_head_init(&h, 4096, 16);
    CU_ASSERT_EQUAL(http1_head_append_first(&h, "/pa", 3), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_first(&h, "th", 2), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_name(&h, "X-Fo", 4), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_name(&h, "o", 1), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_value(&h, "b", 1), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_value(&h, "", 0), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_value(&h, "ar ", 3), PF_OK);
    http1_head_finish_value(&h);
    CU_ASSERT_EQUAL(http1_head_append_name(&h, "", 0), PF_OK); /* an empty first piece */
    CU_ASSERT_EQUAL(http1_head_append_name(&h, "Empty", 5), PF_OK);
    http1_head_finish_value(&h); /* llhttp sends no value piece for an empty value */
    CU_ASSERT_EQUAL(http1_head_append_name(&h, "Z", 1), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_value(&h, "\t", 1), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_value(&h, " \t ", 3), PF_OK);
    http1_head_finish_value(&h);
    char buf[256];
    CU_ASSERT_STRING_EQUAL(dump(&h, buf, sizeof buf), "/path|X-Foo=bar|Empty=|Z=");
    CU_ASSERT_STRING_EQUAL(http1_first(&h), "/path");
    http1_head_free(&h);
}

static void test_value_before_any_name_is_rejected(void) {
    pf_head h;
    http1_head_init(&h, 4096, 16);
    CU_ASSERT_EQUAL(http1_head_append_value(&h, "v", 1), PF_EINVAL);
    http1_head_finish_value(&h); /* no header: nothing to finish, no crash */
    CU_ASSERT_EQUAL(h.count, 0);
    http1_head_free(&h);
}

static void test_byte_limit_gives_elimit_exactly_past_the_limit(void) {
    /* "/" NUL "A" NUL "b" NUL: six bytes */
    for (size_t limit = 5; limit <= 6; limit++) {
        pf_head h;
        http1_head_init(&h, limit, 16);
        int rc = http1_head_append_first(&h, "/", 1);
        if (rc == PF_OK)
            rc = http1_head_append_name(&h, "A", 1);
        if (rc == PF_OK)
            rc = http1_head_append_value(&h, "b", 1);
        PF_CHECK(rc == (limit == 6 ? PF_OK : PF_ELIMIT), "limit %zu: rc=%d", limit, rc);
        if (rc == PF_OK) {
            http1_head_finish_value(&h);
            CU_ASSERT_STRING_EQUAL(http1_value(&h, 0), "b");
        }
        http1_head_free(&h);
    }
    /* the target alone */
    pf_head h;
    http1_head_init(&h, 4, 16);
    CU_ASSERT_EQUAL(http1_head_append_first(&h, "/ab", 3), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_first(&h, "c", 1), PF_ELIMIT);
    http1_head_free(&h);
}

static void test_byte_limit_through_llhttp_fails_the_parse(void) {
    pf_head h;
    http1_head_init(&h, 64, 16);
    int rc = parse(&h, HTTP_REQUEST,
                   "GET / HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789012345678901234567890123456789"
                   "0123456789\r\n\r\n");
    CU_ASSERT_EQUAL(rc, PF_ELIMIT);
    /* and the same head under a limit it fits */
    http1_head_free(&h);
    http1_head_init(&h, 128, 16);
    rc = parse(&h, HTTP_REQUEST,
               "GET / HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789012345678901234567890123456789"
               "0123456789\r\n\r\n");
    CU_ASSERT_EQUAL(rc, PF_OK);
    http1_head_free(&h);
}

static void test_max_headers_gives_elimit_on_the_next_header(void) {
    pf_head h;
    http1_head_init(&h, 4096, 2);
    CU_ASSERT_EQUAL(parse(&h, HTTP_REQUEST, "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"), PF_OK);
    CU_ASSERT_EQUAL(h.count, 2);
    http1_head_reset(&h);
    CU_ASSERT_EQUAL(parse(&h, HTTP_REQUEST, "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
                    PF_ELIMIT);
    http1_head_free(&h);

    /* with more headers than the initial allocation */
    http1_head_init(&h, 64 * 1024, 40);
    char text[2048] = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < 40; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "H%d: %d\r\n", i, i);
    strcat(text, "\r\n");
    CU_ASSERT_EQUAL(parse(&h, HTTP_REQUEST, text), PF_OK);
    CU_ASSERT_EQUAL(h.count, 40);
    CU_ASSERT_STRING_EQUAL(http1_name(&h, 39), "H39");
    CU_ASSERT_STRING_EQUAL(http1_value(&h, 39), "39");
    http1_head_reset(&h);
    strcpy(text + strlen(text) - 2, "H40: 40\r\n\r\n");
    CU_ASSERT_EQUAL(parse(&h, HTTP_REQUEST, text), PF_ELIMIT);
    http1_head_free(&h);
}

static void test_reset_makes_room_for_the_next_message(void) {
    pf_head h;
    http1_head_init(&h, 64 * 1024, 16);
    CU_ASSERT_EQUAL(parse(&h, HTTP_REQUEST, request_text), PF_OK);
    http1_head_reset(&h);
    CU_ASSERT_EQUAL(h.count, 0);
    CU_ASSERT_EQUAL(parse(&h, HTTP_REQUEST, "POST /x HTTP/1.1\r\nHost: b\r\n\r\n"), PF_OK);
    char buf[256];
    CU_ASSERT_STRING_EQUAL(dump(&h, buf, sizeof buf), "/x|Host=b");
    http1_head_free(&h);
    CU_ASSERT_PTR_NULL(h.buf);
}

/* ---- lookup and hop-by-hop -------------------------------------------------------------- */

static void test_find_is_case_insensitive_and_counts_duplicates(void) {
    pf_head h;
    http1_head_init(&h, 4096, 16);
    CU_ASSERT_EQUAL_FATAL(parse(&h, HTTP_REQUEST,
                                "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A-B: 2\r\nx-a: 3\r\n"
                                "HOST: b\r\n\r\n"),
                          PF_OK);
    size_t count = 99;
    CU_ASSERT_EQUAL(http1_find(&h, "x-a", &count), 1);
    CU_ASSERT_EQUAL(count, 2);
    CU_ASSERT_EQUAL(http1_find(&h, "host", &count), 0);
    CU_ASSERT_EQUAL(count, 2);
    CU_ASSERT_EQUAL(http1_find(&h, "x-a-b", &count), 2);
    CU_ASSERT_EQUAL(count, 1);
    CU_ASSERT_EQUAL(http1_find(&h, "x", &count), -1);
    CU_ASSERT_EQUAL(count, 0);
    CU_ASSERT_EQUAL(http1_find(&h, "missing", NULL), -1);
    CU_ASSERT_TRUE(http1_name_is(&h, 4, "host"));
    CU_ASSERT_FALSE(http1_name_is(&h, 2, "x-a"));
    CU_ASSERT_FALSE(http1_name_is(&h, 1, "x-a-b"));
    http1_head_free(&h);
}

static bool hop(const char *head_text, const char *name) {
    pf_head h;
    http1_head_init(&h, 4096, 32);
    CU_ASSERT_EQUAL_FATAL(parse(&h, HTTP_REQUEST, head_text), PF_OK);
    size_t count;
    long i = http1_find(&h, name, &count);
    CU_ASSERT_FATAL(i >= 0);
    bool result = http1_is_hop_by_hop(&h, (size_t)i);
    http1_head_free(&h);
    return result;
}

static void test_connection_specific_and_framing_headers_are_hop_by_hop(void) {
    static const struct {
        const char *header;
        bool hop;
    } rows[] = {
        {"Connection: x", true},
        {"Keep-Alive: timeout=5", true},
        {"Proxy-Connection: keep-alive", true},
        {"TE: trailers", true},
        {"Trailer: X-Sum", true},
        {"Transfer-Encoding: chunked", true},
        {"Upgrade: websocket", true},
        {"Proxy-Authorization: Basic eA==", true},
        {"Proxy-Authenticate: Basic", true},
        {"Content-Length: 5", true},
        {"HTTP2-Settings: AAMAAABk", true},
        {"CONNECTION: x", true},
        {"keep-alive: 1", true},
        {"transfer-ENCODING: chunked", true},
        {"Host: a", false},
        {"Content-Type: text/plain", false},
        {"Authorization: Bearer x", false},
        {"X-Forwarded-For: 1.2.3.4", false},
        {"Cookie: a=1", false},
        {"Trailers: x", false},
        {"Content-Length-X: 1", false},
        {"X-Connection: x", false},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char text[256], name[64];
        size_t n = strcspn(rows[i].header, ":");
        for (size_t k = 0; k <= n; k++)
            name[k] = k < n ? (char)(rows[i].header[k] | 0x20) : '\0';
        if (strcmp(name, "host") == 0)
            snprintf(text, sizeof text, "GET / HTTP/1.1\r\n%s\r\n\r\n", rows[i].header);
        else
            snprintf(text, sizeof text, "GET / HTTP/1.1\r\nHost: h\r\n%s\r\n\r\n", rows[i].header);
        PF_CHECK(hop(text, name) == rows[i].hop, "\"%s\": hop-by-hop should be %d", rows[i].header,
                 rows[i].hop);
    }
}

static void test_headers_named_in_connection_are_hop_by_hop(void) {
    static const char head[] = "GET / HTTP/1.1\r\n"
                               "Host: h\r\n"
                               "Connection: close, X-Foo\r\n"
                               "Connection:X-BAR,,\t x-baz ,\r\n"
                               "X-Foo: 1\r\n"
                               "x-bar: 2\r\n"
                               "X-Baz: 3\r\n"
                               "X-Foo-Bar: 4\r\n"
                               "X-Fo: 5\r\n"
                               "Close: 6\r\n"
                               "X-Qux: 7\r\n"
                               "\r\n";
    CU_ASSERT_TRUE(hop(head, "x-foo"));
    CU_ASSERT_TRUE(hop(head, "x-bar"));
    CU_ASSERT_TRUE(hop(head, "x-baz"));
    CU_ASSERT_TRUE(hop(head, "close"));
    CU_ASSERT_FALSE(hop(head, "x-foo-bar"));
    CU_ASSERT_FALSE(hop(head, "x-fo"));
    CU_ASSERT_FALSE(hop(head, "x-qux"));
    CU_ASSERT_FALSE(hop(head, "host"));
}

/* ---- the forwarded request head ----------------------------------------------------------- */

static pf_forward_request fwd_request(void) {
    pf_forward_request fwd = {
        .method = "GET",
        .target = "/a?b=c",
        .target_len = 6,
        .host = "api.local:8080",
        .host_len = 14,
        .client_ip = "10.0.0.9",
        .proto = "http",
        .request_id = NULL,
        .body = PF_BODY_NONE,
    };
    return fwd;
}

/* Writes the upstream request head for `client_head` and returns it (static buffer). */
static const char *forwarded(const char *client_head, const pf_forward_request *fwd) {
    static char out[4096];
    pf_head h;
    http1_head_init(&h, 64 * 1024, 64);
    CU_ASSERT_EQUAL_FATAL(parse(&h, HTTP_REQUEST, client_head), PF_OK);
    struct evbuffer *b = evbuffer_new();
    CU_ASSERT_EQUAL(http1_write_request_head(b, &h, fwd), PF_OK);
    snprintf(out, sizeof out, "%s", text_of(b));
    evbuffer_free(b);
    http1_head_free(&h);
    return out;
}

static void check_text(const char *got, const char *want, const char *what) {
    PF_CHECK(strcmp(got, want) == 0, "%s:\n--- got\n%s--- want\n%s---", what, got, want);
}

/* Parses a written head back with llhttp: it must be one complete valid head. */
static void check_parses(llhttp_type_t type, const char *text) {
    pf_head h;
    http1_head_init(&h, 64 * 1024, 64);
    PF_CHECK(parse(&h, type, text) == PF_OK, "llhttp rejects the written head:\n%s", text);
    http1_head_free(&h);
}

static void test_request_head_is_origin_form_with_host_and_forwarding_headers(void) {
    pf_forward_request fwd = fwd_request();
    fwd.method = "POST";
    fwd.request_id = "req-1";
    fwd.body = PF_BODY_LENGTH;
    fwd.content_length = 5;
    const char *got = forwarded("POST http://api.local:8080/a?b=c HTTP/1.1\r\n"
                                "Host: old.local\r\n"
                                "User-Agent: t/1\r\n"
                                "Connection: keep-alive, X-Hop\r\n"
                                "X-Hop: secret\r\n"
                                "Keep-Alive: timeout=5\r\n"
                                "X-Forwarded-Proto: https\r\n"
                                "X-Forwarded-For: 1.2.3.4\r\n"
                                "Content-Length: 5\r\n"
                                "Proxy-Authorization: Basic eA==\r\n"
                                "Accept: */*\r\n"
                                "\r\n",
                                &fwd);
    check_text(got,
               "POST /a?b=c HTTP/1.1\r\n"
               "Host: api.local:8080\r\n"
               "User-Agent: t/1\r\n"
               "X-Forwarded-For: 1.2.3.4, 10.0.0.9\r\n"
               "Accept: */*\r\n"
               "X-Forwarded-Proto: http\r\n"
               "X-Request-Id: req-1\r\n"
               "Content-Length: 5\r\n"
               "\r\n",
               "forwarded request");
    check_parses(HTTP_REQUEST, got);
}

static void test_request_head_adds_x_forwarded_for_and_keeps_client_request_id(void) {
    pf_forward_request fwd = fwd_request();
    const char *got = forwarded("GET /a?b=c HTTP/1.1\r\nhost: api.local:8080\r\nX-Request-Id: "
                                "from-client\r\nx-forwarded-proto: http\r\n\r\n",
                                &fwd);
    check_text(got,
               "GET /a?b=c HTTP/1.1\r\n"
               "Host: api.local:8080\r\n"
               "X-Request-Id: from-client\r\n"
               "X-Forwarded-For: 10.0.0.9\r\n"
               "X-Forwarded-Proto: http\r\n"
               "\r\n",
               "forwarded request without X-Forwarded-For");
    check_parses(HTTP_REQUEST, got);
}

static void test_request_head_chunked_framing_replaces_the_clients(void) {
    pf_forward_request fwd = fwd_request();
    fwd.method = "PUT";
    fwd.body = PF_BODY_CHUNKED;
    const char *got = forwarded("PUT /a?b=c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                                "TE: trailers\r\nTrailer: X-Sum\r\n\r\n",
                                &fwd);
    check_text(got,
               "PUT /a?b=c HTTP/1.1\r\n"
               "Host: api.local:8080\r\n"
               "X-Forwarded-For: 10.0.0.9\r\n"
               "X-Forwarded-Proto: http\r\n"
               "Transfer-Encoding: chunked\r\n"
               "\r\n",
               "chunked request");
}

static void test_request_head_without_body_has_no_framing(void) {
    pf_forward_request fwd = fwd_request();
    const char *got = forwarded("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\n\r\n",
                                &fwd);
    CU_ASSERT_PTR_NULL(strstr(got, "Content-Length"));
    CU_ASSERT_PTR_NULL(strstr(got, "Transfer-Encoding"));
    CU_ASSERT_PTR_NULL(strstr(got, "Upgrade"));
    CU_ASSERT_PTR_NULL(strstr(got, "Connection"));
    /* a zero-length body is still announced */
    fwd.body = PF_BODY_LENGTH;
    fwd.content_length = 0;
    got = forwarded("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", &fwd);
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "\r\nContent-Length: 0\r\n"));
}

static void test_every_x_forwarded_for_header_is_kept_in_order(void) {
    /* RFC 9110 5.3: several fields of one name are one comma-separated list */
    pf_forward_request fwd = fwd_request();
    const char *got = forwarded("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n"
                                "X-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\r\n",
                                &fwd);
    check_text(got,
               "GET /a?b=c HTTP/1.1\r\n"
               "Host: api.local:8080\r\n"
               "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9\r\n"
               "X-Forwarded-Proto: http\r\n"
               "\r\n",
               "two X-Forwarded-For headers");
}

static void test_empty_x_forwarded_for_gives_just_the_client(void) {
    pf_forward_request fwd = fwd_request();
    const char *got = forwarded("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For:\r\n\r\n", &fwd);
    check_text(got,
               "GET /a?b=c HTTP/1.1\r\n"
               "Host: api.local:8080\r\n"
               "X-Forwarded-For: 10.0.0.9\r\n"
               "X-Forwarded-Proto: http\r\n"
               "\r\n",
               "empty X-Forwarded-For");
}

/* ---- the forwarded response head --------------------------------------------------------- */

static const char *response(const char *upstream_head, const pf_forward_response *fwd) {
    static char out[4096];
    pf_head h;
    http1_head_init(&h, 64 * 1024, 64);
    CU_ASSERT_EQUAL_FATAL(parse(&h, HTTP_RESPONSE, upstream_head), PF_OK);
    struct evbuffer *b = evbuffer_new();
    CU_ASSERT_EQUAL(http1_write_response_head(b, &h, fwd), PF_OK);
    snprintf(out, sizeof out, "%s", text_of(b));
    evbuffer_free(b);
    http1_head_free(&h);
    return out;
}

static void test_response_head_keeps_end_to_end_headers_and_sets_framing(void) {
    pf_forward_response fwd = {.status = 200,
                               .client_minor = 1,
                               .body = PF_BODY_LENGTH,
                               .content_length = 12,
                               .keep_alive = true};
    const char *got = response("HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "Connection: keep-alive, X-Internal\r\n"
                               "X-Internal: 1\r\n"
                               "Keep-Alive: timeout=5\r\n"
                               "Transfer-Encoding: chunked\r\n"
                               "Set-Cookie: a=1\r\n"
                               "Set-Cookie: b=2\r\n"
                               "Proxy-Authenticate: Basic\r\n"
                               "\r\n",
                               &fwd);
    check_text(got,
               "HTTP/1.1 200 OK\r\n"
               "Content-Type: text/plain\r\n"
               "Set-Cookie: a=1\r\n"
               "Set-Cookie: b=2\r\n"
               "Content-Length: 12\r\n"
               "\r\n",
               "forwarded response");
    check_parses(HTTP_RESPONSE, got);
}

/* The writers skip the Connection lists when they name only keep-alive and close: what
 * either list removes must be the same as with a full scan. */
static void test_connection_close_and_keep_alive_remove_only_what_they_name(void) {
    pf_forward_response fwd = {.status = 200, .client_minor = 1, .keep_alive = true};
    const char *got = response("HTTP/1.1 200 OK\r\n"
                               "Connection: Keep-Alive\r\n"
                               "Connection: close\r\n"
                               "Server: s\r\n"
                               "X-Close: 1\r\n"
                               "\r\n",
                               &fwd);
    check_text(got, "HTTP/1.1 200 OK\r\nServer: s\r\nX-Close: 1\r\n\r\n", "nothing else named");
    /* An obsolete field named Close goes when Connection names it, as any other would. */
    got = response("HTTP/1.1 200 OK\r\nConnection: close\r\nClose: x\r\nServer: s\r\n\r\n", &fwd);
    check_text(got, "HTTP/1.1 200 OK\r\nServer: s\r\n\r\n", "Close named");
    got = response("HTTP/1.1 200 OK\r\nConnection: keep-alive,\t,Server\r\nServer: s\r\n"
                   "Date: d\r\n\r\n",
                   &fwd);
    check_text(got, "HTTP/1.1 200 OK\r\nDate: d\r\n\r\n", "a field after keep-alive");
}

static void test_ipv4_is_formatted_as_inet_ntop_does(void) {
    static const char *const addrs[] = {"0.0.0.0",         "127.0.0.1",  "10.0.12.3",
                                        "255.255.255.255", "1.20.100.7", "192.168.1.9",
                                        "100.99.10.200"};
    for (size_t k = 0; k < sizeof addrs / sizeof addrs[0]; k++) {
        struct in_addr a;
        CU_ASSERT_EQUAL_FATAL(inet_pton(AF_INET, addrs[k], &a), 1);
        char want[INET_ADDRSTRLEN], got[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a, want, sizeof want);
        memset(got, 'x', sizeof got);
        http1_format_ipv4(&a, got);
        CU_ASSERT_STRING_EQUAL(got, want);
    }
}

static void test_hex64_is_sixteen_lower_case_digits(void) {
    static const uint64_t values[] = {0,
                                      1,
                                      0xff,
                                      0x0123456789abcdefull,
                                      0xfedcba9876543210ull,
                                      UINT64_MAX,
                                      0x8000000000000000ull};
    for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) {
        char want[17], got[17] = {0};
        snprintf(want, sizeof want, "%016llx", (unsigned long long)values[k]);
        http1_put_hex64(got, values[k]);
        CU_ASSERT_STRING_EQUAL(got, want);
    }
}

static void test_response_connection_header_follows_keep_alive_and_client_version(void) {
    static const struct {
        int minor;
        bool keep_alive;
        const char *want; /* the Connection line, or "" for none */
    } rows[] = {
        {1, true, ""},
        {1, false, "Connection: close\r\n"},
        {0, true, "Connection: keep-alive\r\n"},
        {0, false, "Connection: close\r\n"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        pf_forward_response fwd = {.status = 404,
                                   .client_minor = rows[i].minor,
                                   .body = PF_BODY_CHUNKED,
                                   .keep_alive = rows[i].keep_alive};
        const char *got = response("HTTP/1.1 404 Not Found\r\nConnection: close\r\n"
                                   "Content-Length: 3\r\n\r\n",
                                   &fwd);
        char want[256];
        snprintf(want, sizeof want,
                 "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n%s\r\n", rows[i].want);
        PF_CHECK(strcmp(got, want) == 0, "HTTP/1.%d keep_alive=%d:\n--- got\n%s--- want\n%s",
                 rows[i].minor, rows[i].keep_alive, got, want);
    }
}

static void test_response_status_comes_from_fwd_and_empty_reason_is_allowed(void) {
    pf_forward_response fwd = {
        .status = 204, .client_minor = 1, .body = PF_BODY_NONE, .keep_alive = true};
    check_text(response("HTTP/1.1 204 \r\nX-A: 1\r\n\r\n", &fwd), "HTTP/1.1 204 \r\nX-A: 1\r\n\r\n",
               "no reason phrase");
    /* no reason and no header at all */
    check_text(response("HTTP/1.1 204 \r\n\r\n", &fwd), "HTTP/1.1 204 \r\n\r\n",
               "no reason, no headers");
    fwd.status = 502;
    fwd.body = PF_BODY_EOF;
    fwd.keep_alive = false;
    check_text(response("HTTP/1.1 200 Fine\r\n\r\n", &fwd),
               "HTTP/1.1 502 Fine\r\nConnection: close\r\n\r\n", "read until close");
}

/* Found by fuzzing (test/fuzz/corpus/http1/response_no_reason_no_headers): a response with
 * neither reason nor header leaves its head without a buffer, and http1_first computed
 * NULL + 0 on the way to the writer, which is undefined (clang's UBSan stops there). */
static void test_first_of_a_head_without_a_buffer_is_an_empty_string(void) {
    pf_head h;
    http1_head_init(&h, 1024, 8);
    CU_ASSERT_PTR_NULL(h.buf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(http1_first(&h));
    CU_ASSERT_STRING_EQUAL(http1_first(&h), "");
    CU_ASSERT_EQUAL(parse(&h, HTTP_RESPONSE, "HTTP/1.1 200\r\n\r\n"), PF_OK);
    CU_ASSERT_EQUAL(h.first_len, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(http1_first(&h));
    http1_head_free(&h);
}

/* ---- local responses and chunks ---------------------------------------------------------- */

static void test_local_response_is_complete_and_parses(void) {
    struct evbuffer *b = evbuffer_new();
    CU_ASSERT_EQUAL(
        http1_write_local_response(b, 503, "no healthy endpoint\n", false, "Retry-After: 1\r\n"),
        PF_OK);
    check_text(text_of(b),
               "HTTP/1.1 503 Service Unavailable\r\n"
               "Content-Type: text/plain; charset=utf-8\r\n"
               "Content-Length: 20\r\n"
               "Connection: close\r\n"
               "Retry-After: 1\r\n"
               "\r\n"
               "no healthy endpoint\n",
               "local 503");
    check_parses(HTTP_RESPONSE, text_of(b));
    evbuffer_free(b);

    b = evbuffer_new();
    CU_ASSERT_EQUAL(http1_write_local_response(b, 404, "", true, NULL), PF_OK);
    check_text(text_of(b),
               "HTTP/1.1 404 Not Found\r\n"
               "Content-Type: text/plain; charset=utf-8\r\n"
               "Content-Length: 0\r\n"
               "\r\n",
               "local 404 keep-alive");
    evbuffer_free(b);
}

static void test_reason_phrases(void) {
    static const struct {
        int status;
        const char *reason;
    } rows[] = {{200, "OK"},
                {400, "Bad Request"},
                {404, "Not Found"},
                {413, "Content Too Large"},
                {414, "URI Too Long"},
                {431, "Request Header Fields Too Large"},
                {502, "Bad Gateway"},
                {503, "Service Unavailable"},
                {504, "Gateway Timeout"},
                {299, "Unknown"},
                {0, "Unknown"}};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(strcmp(http1_reason(rows[i].status), rows[i].reason) == 0, "%d: \"%s\"",
                 rows[i].status, http1_reason(rows[i].status));
}

static void test_chunk_is_hex_size_data_and_crlf(void) {
    struct evbuffer *b = evbuffer_new();
    CU_ASSERT_EQUAL(http1_write_chunk(b, "hello", 5), PF_OK);
    CU_ASSERT_EQUAL(http1_write_chunk(b, "", 0), PF_OK); /* not the last chunk: nothing */
    check_text(text_of(b), "5\r\nhello\r\n", "small chunk");
    evbuffer_free(b);

    char data[300];
    memset(data, 'x', sizeof data);
    b = evbuffer_new();
    CU_ASSERT_EQUAL(http1_write_chunk(b, data, sizeof data), PF_OK);
    CU_ASSERT_EQUAL(evbuffer_get_length(b), 5 + 300 + 2);
    const char *s = (const char *)evbuffer_pullup(b, -1);
    CU_ASSERT_EQUAL(memcmp(s, "12c\r\n", 5), 0);
    CU_ASSERT_EQUAL(memcmp(s + 305, "\r\n", 2), 0);
    evbuffer_free(b);
}

/* ---- memory safety at the edge of the buffer --------------------------------------------- */

/* A header with an empty value whose name ends right where the buffer is full. The NUL
 * written for the empty value must stay inside the allocation (ASan checks the write;
 * h.len < h.cap is the invariant that keeps it inside). Last in the suite because ASan
 * stops the process on the first bad write. */
static void test_empty_value_at_the_end_of_the_buffer_stays_in_bounds(void) {
    /* As a client can send it: one header, a 1021-byte name and an empty value, under the
     * default 64 KiB limit ("/" NUL name NUL fills the first 1024-byte allocation). llhttp
     * 8.1 hands over an empty value as a zero-length on_header_value, which grows the
     * buffer first, so this path is safe; the direct calls below are the path that
     * http1_head_finish_value keeps for a value llhttp did not announce at all. */
    char text[1200];
    int len = snprintf(text, sizeof text, "GET / HTTP/1.1\r\n");
    memset(text + len, 'n', 1021);
    snprintf(text + len + 1021, sizeof text - (size_t)len - 1021, ":\r\n\r\n");
    pf_head req;
    http1_head_init(&req, 64 * 1024, 128);
    CU_ASSERT_EQUAL(parse(&req, HTTP_REQUEST, text), PF_OK);
    CU_ASSERT_EQUAL(req.count, 1);
    PF_CHECK(req.count < 1 || req.headers[0].value_off < req.cap,
             "the empty value of a 1021-byte header name lies at buf[%u], past the %zu-byte "
             "buffer",
             req.count ? req.headers[0].value_off : 0, req.cap);
    http1_head_free(&req);

    static const size_t limits[] = {64, 64 * 1024};
    size_t bad = 0;
    for (size_t l = 0; l < ARRAY_LEN(limits); l++) {
        for (size_t n = 1; n < 1100; n++) {
            char name[1100];
            memset(name, 'n', n);
            pf_head h;
            http1_head_init(&h, limits[l], 16);
            int rc = http1_head_append_first(&h, "/", 1);
            if (rc == PF_OK)
                rc = http1_head_append_name(&h, name, n);
            if (rc != PF_OK) {
                http1_head_free(&h);
                continue;
            }
            http1_head_finish_value(&h);
            if (h.count == 1 && h.headers[0].value_len == 0 && h.len >= h.cap) {
                if (bad++ < 5)
                    PF_CHECK(false,
                             "limit %zu, target \"/\", header of %zu-byte name and empty value: "
                             "len %zu, cap %zu: the value's NUL was written at buf[%zu]",
                             limits[l], n, h.len, h.cap, h.len);
            }
            http1_head_free(&h);
        }
    }
    PF_CHECK(bad == 0, "%zu name lengths put the empty value's NUL past the buffer", bad);
}

/* ---- pure decisions ------------------------------------------------------------------ */

static void test_request_targets_split_into_forwarded_target_authority_and_path(void) {
    static const struct {
        const char *target;
        bool options;
        int rc;
        const char *fwd, *authority, *path;
        bool root_first;
    } rows[] = {
        {"/a/b?c=d", false, PF_OK, "/a/b?c=d", NULL, "/a/b", false},
        {"/", false, PF_OK, "/", NULL, "/", false},
        {"*", true, PF_OK, "*", NULL, "*", false},
        {"*", false, PF_EINVAL, NULL, NULL, NULL, false},
        {"http://h:8080/p?q", false, PF_OK, "/p?q", "h:8080", "/p", false},
        {"HTTP://h/p", false, PF_OK, "/p", "h", "/p", false},
        {"http://h", false, PF_OK, "/", "h", "/", false},
        {"http://h", true, PF_OK, "*", "h", "*", false},
        {"http://h?q=1", false, PF_OK, "?q=1", "h", "/", true},
        {"http://h?q=1", true, PF_OK, "?q=1", "h", "/", true},
        {"http://u@h/p", false, PF_EINVAL, NULL, NULL, NULL, false},
        {"http:///p", false, PF_EINVAL, NULL, NULL, NULL, false},
        {"http://", false, PF_EINVAL, NULL, NULL, NULL, false},
        {"/p#frag", false, PF_EINVAL, NULL, NULL, NULL, false},
        {"http://h/p#f", false, PF_EINVAL, NULL, NULL, NULL, false},
        {"https://h/p", false, PF_EINVAL, NULL, NULL, NULL, false},
        {"p", false, PF_EINVAL, NULL, NULL, NULL, false},
        {"", false, PF_EINVAL, NULL, NULL, NULL, false},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        pf_target t;
        int rc = http1_parse_target(rows[i].target, strlen(rows[i].target), rows[i].options, &t);
        if (!PF_CHECK(rc == rows[i].rc, "%s: rc %d, want %d", rows[i].target, rc, rows[i].rc) ||
            rc != PF_OK)
            continue;
        PF_CHECK(t.target_len == strlen(rows[i].fwd) &&
                     strncmp(t.target, rows[i].fwd, t.target_len) == 0,
                 "%s: target %.*s, want %s", rows[i].target, (int)t.target_len, t.target,
                 rows[i].fwd);
        PF_CHECK(t.root_first == rows[i].root_first, "%s: root_first %d", rows[i].target,
                 t.root_first);
        if (rows[i].authority)
            PF_CHECK(t.authority && t.authority_len == strlen(rows[i].authority) &&
                         strncmp(t.authority, rows[i].authority, t.authority_len) == 0,
                     "%s: authority %.*s, want %s", rows[i].target, (int)t.authority_len,
                     t.authority ? t.authority : "", rows[i].authority);
        else
            PF_CHECK(t.authority == NULL, "%s: unexpected authority", rows[i].target);
        PF_CHECK(t.path_len == strlen(rows[i].path) &&
                     strncmp(t.path, rows[i].path, t.path_len) == 0,
                 "%s: path %.*s, want %s", rows[i].target, (int)t.path_len, t.path, rows[i].path);
    }
}

static void test_token_check_accepts_rfc9110_tchars_only(void) {
    static const struct {
        const char *name;
        bool ok;
    } rows[] = {
        {"Content-Type", true}, {"x_y.z~1", true}, {"!#$%&'*+-.^_`|~", true}, {"", true},
        {"a b", false},         {"a:b", false},    {"a\tb", false},           {"a\"b", false},
        {"a(b", false},         {"a/b", false},    {"\x80", false},           {"a@b", false},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(http1_is_token(rows[i].name, strlen(rows[i].name)) == rows[i].ok,
                 "\"%s\": want %d", rows[i].name, rows[i].ok);
    /* a NUL inside the name is not a token character */
    CU_ASSERT_FALSE(http1_is_token("a\0b", 3));
}

static void test_obs_fold_is_a_second_value_span_not_explained_by_a_read_boundary(void) {
    static const struct {
        bool open, prev_ended_read, starts_read, fold;
    } rows[] = {
        {false, false, false, false}, {false, true, true, false}, {true, true, true, false},
        {true, false, false, true},   {true, true, false, true},  {true, false, true, true},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(http1_value_is_fold(rows[i].open, rows[i].prev_ended_read, rows[i].starts_read) ==
                     rows[i].fold,
                 "row %zu: want %d", i, rows[i].fold);
}

static void test_host_rules(void) {
    static const struct {
        size_t count;
        int minor;
        bool authority;
        const char *want;
    } rows[] = {
        {1, 1, false, NULL},
        {0, 1, false, "missing Host header"},
        {0, 1, true, NULL},
        {0, 0, false, NULL},
        {2, 1, false, "more than one Host header"},
        {2, 1, true, "more than one Host header"},
        {2, 0, false, "more than one Host header"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        const char *got = http1_check_host(rows[i].count, rows[i].minor, rows[i].authority);
        PF_CHECK((got == NULL && rows[i].want == NULL) ||
                     (got && rows[i].want && strcmp(got, rows[i].want) == 0),
                 "row %zu: got %s", i, got ? got : "NULL");
    }
}

static void test_body_modes(void) {
    CU_ASSERT_EQUAL(http1_request_body_mode(true, false, 0), PF_BODY_CHUNKED);
    CU_ASSERT_EQUAL(http1_request_body_mode(false, true, 10), PF_BODY_LENGTH);
    CU_ASSERT_EQUAL(http1_request_body_mode(false, true, 0), PF_BODY_NONE);
    CU_ASSERT_EQUAL(http1_request_body_mode(false, false, 0), PF_BODY_NONE);
    CU_ASSERT_EQUAL(http1_response_body_mode(true, false), PF_BODY_CHUNKED);
    CU_ASSERT_EQUAL(http1_response_body_mode(false, true), PF_BODY_LENGTH);
    CU_ASSERT_EQUAL(http1_response_body_mode(false, false), PF_BODY_EOF);
}

static void test_response_framing_by_method_status_and_client_version(void) {
    static const struct {
        bool head;
        int status;
        pf_body_mode up;
        int minor;
        pf_body_mode head_body, body;
        bool skip, close;
    } rows[] = {
        {false, 200, PF_BODY_LENGTH, 1, PF_BODY_LENGTH, PF_BODY_LENGTH, false, false},
        {false, 200, PF_BODY_CHUNKED, 1, PF_BODY_CHUNKED, PF_BODY_CHUNKED, false, false},
        {false, 200, PF_BODY_EOF, 1, PF_BODY_CHUNKED, PF_BODY_CHUNKED, false, false},
        {false, 200, PF_BODY_CHUNKED, 0, PF_BODY_EOF, PF_BODY_EOF, false, true},
        {false, 200, PF_BODY_LENGTH, 0, PF_BODY_LENGTH, PF_BODY_LENGTH, false, false},
        {true, 200, PF_BODY_LENGTH, 1, PF_BODY_LENGTH, PF_BODY_NONE, true, false},
        {true, 200, PF_BODY_CHUNKED, 1, PF_BODY_NONE, PF_BODY_NONE, true, false},
        {true, 200, PF_BODY_EOF, 0, PF_BODY_NONE, PF_BODY_NONE, true, false},
        {false, 204, PF_BODY_EOF, 1, PF_BODY_NONE, PF_BODY_NONE, false, false},
        {false, 304, PF_BODY_LENGTH, 1, PF_BODY_LENGTH, PF_BODY_NONE, false, false},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        pf_response_framing f =
            http1_response_framing(rows[i].head, rows[i].status, rows[i].up, rows[i].minor);
        PF_CHECK(f.head_body == rows[i].head_body && f.body == rows[i].body &&
                     f.skip_body == rows[i].skip && f.close == rows[i].close,
                 "row %zu: head_body %d body %d skip %d close %d", i, f.head_body, f.body,
                 f.skip_body, f.close);
    }
}

static void test_traceparent_validity_follows_w3c_trace_context(void) {
    static const struct {
        const char *v;
        bool valid;
    } rows[] = {
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
        {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
        /* a later version may carry more fields after a '-' */
        {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false},
        {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", false},
        {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
        {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
        {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
        {"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", false},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", false},
        {"0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
        {"", false},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(http1_traceparent_valid(rows[i].v, strlen(rows[i].v)) == rows[i].valid,
                 "row %zu \"%s\": want %s", i, rows[i].v, rows[i].valid ? "valid" : "invalid");
}

static void test_generated_traceparent_is_valid_with_its_sampled_flag(void) {
    char out[PF_TRACEPARENT_LEN + 1];
    http1_traceparent_format(out, 0x4bf92f3577b34da6ull, 0xa3ce929d0e0e4736ull,
                             0x00f067aa0ba902b7ull, true);
    CU_ASSERT_STRING_EQUAL(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    http1_traceparent_format(out, 0, 0, 0, false); /* all-zero ids are invalid: never made */
    CU_ASSERT_STRING_EQUAL(out, "00-00000000000000000000000000000001-0000000000000001-00");
    CU_ASSERT(http1_traceparent_valid(out, strlen(out)));
}

static void test_upgrade_is_requested_by_connection_and_upgrade_together(void) {
    static const struct {
        const char *head;
        bool want;
        const char *value;
    } rows[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", true,
         "websocket"},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, upgrade\r\nUpgrade: "
         "websocket/13\r\n\r\n",
         true, "websocket/13"},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: upgrade\r\nUpgrade: "
         "h2c\r\n\r\n",
         true, "h2c"},
        {"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", false, NULL},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n", false, NULL},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgraded\r\nUpgrade: websocket\r\n\r\n", false,
         NULL},
        {"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", false, NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        pf_head h;
        http1_head_init(&h, 64 * 1024, 64);
        CU_ASSERT_EQUAL_FATAL(parse(&h, HTTP_REQUEST, rows[i].head), PF_OK);
        int minor = strstr(rows[i].head, "HTTP/1.0") ? 0 : 1;
        const char *value = NULL;
        size_t len = 0;
        bool got = http1_upgrade_requested(&h, minor, &value, &len);
        PF_CHECK(got == rows[i].want, "row %zu: got %d", i, got);
        if (got && rows[i].want)
            PF_CHECK(len == strlen(rows[i].value) && memcmp(value, rows[i].value, len) == 0,
                     "row %zu: value %.*s", i, (int)len, value);
        http1_head_free(&h);
    }
}

static void test_allowed_upgrade_is_written_again_and_others_are_dropped(void) {
    const char *client =
        "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, X-Hop\r\nUpgrade: websocket\r\n"
        "X-Hop: 1\r\nSec-WebSocket-Key: k\r\n\r\n";
    pf_forward_request fwd = {.method = "GET",
                              .target = "/chat",
                              .target_len = 5,
                              .host = "a",
                              .host_len = 1,
                              .client_ip = "10.0.0.9",
                              .proto = "http",
                              .body = PF_BODY_NONE};
    check_text(forwarded(client, &fwd),
               "GET /chat HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\n"
               "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n",
               "refused upgrade");
    fwd.upgrade = "websocket";
    fwd.upgrade_len = 9;
    const char *up = forwarded(client, &fwd);
    check_text(up,
               "GET /chat HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\n"
               "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
               "Connection: upgrade\r\nUpgrade: websocket\r\n\r\n",
               "allowed upgrade");
    check_parses(HTTP_REQUEST, up);

    /* the 101 toward the client: the upstream's Upgrade value, no framing, no close */
    pf_head resp;
    http1_head_init(&resp, 64 * 1024, 64);
    CU_ASSERT_EQUAL_FATAL(parse(&resp, HTTP_RESPONSE,
                                "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                                "Upgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n"),
                          PF_OK);
    pf_forward_response rf = {.status = 101,
                              .client_minor = 1,
                              .keep_alive = true,
                              .upgrade = "websocket",
                              .upgrade_len = 9};
    struct evbuffer *b = evbuffer_new();
    CU_ASSERT_EQUAL(http1_write_response_head(b, &resp, &rf), PF_OK);
    check_text(text_of(b),
               "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n"
               "Connection: upgrade\r\nUpgrade: websocket\r\n\r\n",
               "101 head");
    evbuffer_free(b);
    http1_head_free(&resp);
}

static void test_header_value_templates_expand_their_variables(void) {
    pf_header_vars vars = {
        .client_ip = "10.0.0.9", .request_id = "r-1", .cluster = "web", .upstream = NULL};
    static const struct {
        const char *template;
        size_t cap;
        const char *want;
    } rows[] = {
        {"plain", 64, "plain"},
        {"%CLIENT_IP%", 64, "10.0.0.9"},
        {"%REQUEST_ID%/%CLUSTER%", 64, "r-1/web"},
        {"[%UPSTREAM%]", 64, "[]"}, /* not known yet: nothing */
        {"100%%", 64, "100%"},
        {"%%CLUSTER%%", 64, "%CLUSTER%"},
        {"%CLUSTER%", 3, "we"}, /* cut to fit, always terminated */
        {"", 64, ""},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char out[64];
        size_t n = http1_expand_value(rows[i].template, &vars, out, rows[i].cap);
        PF_CHECK(strcmp(out, rows[i].want) == 0 && n == strlen(rows[i].want),
                 "row %zu: \"%s\" -> \"%s\" (%zu), want \"%s\"", i, rows[i].template, out, n,
                 rows[i].want);
    }
}

static void test_header_edits_replace_add_and_remove_lines(void) {
    pf_config_header_edit set[] = {{"x-env", "prod"}}, add[] = {{"x-trace", "%CLUSTER%"}},
                          remove[] = {{"x-secret", ""}};
    pf_config_header_edits edits = {.set = set,
                                    .set_count = 1,
                                    .add = add,
                                    .add_count = 1,
                                    .remove = remove,
                                    .remove_count = 1};
    pf_header_vars vars = {.cluster = "web"};
    pf_forward_request fwd = {.method = "GET",
                              .target = "/",
                              .target_len = 1,
                              .host = "a",
                              .host_len = 1,
                              .client_ip = "10.0.0.9",
                              .proto = "http",
                              .body = PF_BODY_NONE,
                              .edits = &edits,
                              .vars = &vars};
    const char *out = forwarded("GET / HTTP/1.1\r\nHost: a\r\nX-Env: dev\r\nx-env: qa\r\n"
                                "X-Secret: s\r\nX-Trace: t\r\n\r\n",
                                &fwd);
    check_text(out,
               "GET / HTTP/1.1\r\nHost: a\r\nX-Trace: t\r\nx-env: prod\r\nx-trace: web\r\n"
               "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n",
               "edited request");
    check_parses(HTTP_REQUEST, out);

    /* a weighted cluster's edits come after the route's and win for the names they set or
     * remove: its x-env replaces the route's, its remove drops the route's x-trace line */
    pf_config_header_edit cset[] = {{"x-env", "canary"}}, cremove[] = {{"x-trace", ""}},
                          cadd[] = {{"x-v", "2"}};
    pf_config_header_edits cluster = {.set = cset,
                                      .set_count = 1,
                                      .add = cadd,
                                      .add_count = 1,
                                      .remove = cremove,
                                      .remove_count = 1};
    fwd.cluster_edits = &cluster;
    out = forwarded("GET / HTTP/1.1\r\nHost: a\r\nX-Env: dev\r\nX-Trace: t\r\nX-Keep: k\r\n\r\n",
                    &fwd);
    check_text(out,
               "GET / HTTP/1.1\r\nHost: a\r\nX-Keep: k\r\nx-env: canary\r\nx-v: 2\r\n"
               "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n",
               "request edited by route and cluster");
    check_parses(HTTP_REQUEST, out);
}

/* pilotfish's own answers: its lines (Location, Retry-After, X-Request-Id...) a route's or
 * cluster's edits set or remove go, the edits' lines follow; too long: 0, lines kept. */
static void test_edits_of_pilotfish_own_answer_lines(void) {
    pf_config_header_edit set[] = {{"location", "/elsewhere"}, {"x-env", "prod"}},
                          add[] = {{"x-id", "%REQUEST_ID%"}}, remove[] = {{"retry-after", ""}};
    pf_config_header_edits route = {.set = set,
                                    .set_count = 2,
                                    .add = add,
                                    .add_count = 1,
                                    .remove = remove,
                                    .remove_count = 1};
    pf_header_vars vars = {.request_id = "r-1"};
    char out[512];
    size_t n = http1_edit_local_lines("X-Request-Id: r-1\r\nLocation: /a\r\nRetry-After: 3\r\n"
                                      "X-Other: o\r\n",
                                      &route, NULL, &vars, out, sizeof out);
    check_text(out,
               "X-Request-Id: r-1\r\nX-Other: o\r\nlocation: /elsewhere\r\nx-env: prod\r\n"
               "x-id: r-1\r\n",
               "own answer edited");
    CU_ASSERT_EQUAL(n, strlen(out));
    /* a weighted cluster's edits win over the route's for the names they set */
    pf_config_header_edit cset[] = {{"x-env", "canary"}};
    pf_config_header_edits cluster = {.set = cset, .set_count = 1};
    http1_edit_local_lines(NULL, &route, &cluster, &vars, out, sizeof out);
    check_text(out, "location: /elsewhere\r\nx-id: r-1\r\nx-env: canary\r\n", "with cluster");
    CU_ASSERT_EQUAL(http1_edit_local_lines("X-Request-Id: r-1\r\n", &route, NULL, &vars, out, 20),
                    0);
}

/* RFC 9112 7.1.2: the last chunk, then the trailer section; fields that may not be trailers
 * (RFC 9110 6.5.1: framing, connection, routing) are dropped. */
static void test_last_chunk_carries_the_trailers_that_may_be_trailers(void) {
    pf_head t;
    http1_head_init(&t, 4096, 16);
    static const char *const fields[][2] = {
        {"grpc-status", "0"},
        {"Content-Length", "5"},
        {"Transfer-Encoding", "chunked"},
        {"Connection", "x-hop"},
        {"X-Hop", "1"},
        {"Host", "a"},
        {"Trailer", "grpc-status"},
        {"grpc-message", "ok%20"},
    };
    for (size_t i = 0; i < ARRAY_LEN(fields); i++) {
        CU_ASSERT_EQUAL(http1_head_append_name(&t, fields[i][0], strlen(fields[i][0])), PF_OK);
        CU_ASSERT_EQUAL(http1_head_append_value(&t, fields[i][1], strlen(fields[i][1])), PF_OK);
        CU_ASSERT_EQUAL(http1_head_finish_value(&t), PF_OK);
    }
    struct evbuffer *out = evbuffer_new();
    CU_ASSERT_EQUAL(http1_write_last_chunk(out, &t), PF_OK);
    check_text(text_of(out), "0\r\ngrpc-status: 0\r\ngrpc-message: ok%20\r\n\r\n", "trailers");
    evbuffer_free(out);
    out = evbuffer_new();
    CU_ASSERT_EQUAL(http1_write_last_chunk(out, NULL), PF_OK);
    check_text(text_of(out), "0\r\n\r\n", "no trailers");
    evbuffer_free(out);
    http1_head_free(&t);
}

/* Released heads leave their buffers to the next head of the thread (a bounded list): a
 * head built from them holds its own bytes only, beyond the list's bound and with heads
 * that outgrew the first sizes among them. */
static void test_released_head_buffers_serve_the_next_heads_intact(void) {
    enum { N = 40 };
    pf_head heads[N];
    char want[64], buf[4096];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            http1_head_init(&heads[i], 8192, 64);
            char path[32], value[32];
            int pn = snprintf(path, sizeof path, "/r%d/%d", round, i);
            int vn = snprintf(value, sizeof value, "v%d", i);
            CU_ASSERT_EQUAL(http1_head_append_first(&heads[i], path, (size_t)pn), PF_OK);
            /* every fifth head outgrows 1 KiB and 16 fields: not a first-size buffer */
            int fields = i % 5 == 0 ? 20 : 2;
            for (int f = 0; f < fields; f++) {
                CU_ASSERT_EQUAL(http1_head_append_name(&heads[i], "X-A", 3), PF_OK);
                CU_ASSERT_EQUAL(http1_head_append_value(&heads[i], value, (size_t)vn), PF_OK);
                if (i % 5 == 0) {
                    char pad[80];
                    memset(pad, 'p', sizeof pad);
                    CU_ASSERT_EQUAL(http1_head_append_value(&heads[i], pad, sizeof pad), PF_OK);
                }
                http1_head_finish_value(&heads[i]);
            }
        }
        for (int i = 0; i < N; i++) {
            snprintf(want, sizeof want, "/r%d/%d|X-A=v%d", round, i, i);
            dump(&heads[i], buf, sizeof buf);
            PF_CHECK(strncmp(buf, want, strlen(want)) == 0, "round %d head %d: %s", round, i, buf);
            PF_CHECK(heads[i].count == (size_t)(i % 5 == 0 ? 20 : 2), "head %d: %zu fields", i,
                     heads[i].count);
            http1_head_release(&heads[i]);
            CU_ASSERT_EQUAL(heads[i].count, 0);
            CU_ASSERT_EQUAL(heads[i].byte_limit, 8192);
        }
    }
    for (int i = 0; i < N; i++)
        http1_head_free(&heads[i]);
    http1_head_spares_free();
}

PF_UNIT_MAIN("http1", PF_UNIT_TEST(test_header_value_templates_expand_their_variables),
             PF_UNIT_TEST(test_released_head_buffers_serve_the_next_heads_intact),
             PF_UNIT_TEST(test_last_chunk_carries_the_trailers_that_may_be_trailers),
             PF_UNIT_TEST(test_header_edits_replace_add_and_remove_lines),
             PF_UNIT_TEST(test_edits_of_pilotfish_own_answer_lines),
             PF_UNIT_TEST(test_upgrade_is_requested_by_connection_and_upgrade_together),
             PF_UNIT_TEST(test_allowed_upgrade_is_written_again_and_others_are_dropped),
             PF_UNIT_TEST(test_head_collects_target_and_headers_from_llhttp),
             PF_UNIT_TEST(test_traceparent_validity_follows_w3c_trace_context),
             PF_UNIT_TEST(test_generated_traceparent_is_valid_with_its_sampled_flag),
             PF_UNIT_TEST(test_head_is_the_same_whatever_the_split_points),
             PF_UNIT_TEST(test_response_reason_is_the_first_span),
             PF_UNIT_TEST(test_pieces_appended_directly_join_into_names_and_values),
             PF_UNIT_TEST(test_value_before_any_name_is_rejected),
             PF_UNIT_TEST(test_byte_limit_gives_elimit_exactly_past_the_limit),
             PF_UNIT_TEST(test_byte_limit_through_llhttp_fails_the_parse),
             PF_UNIT_TEST(test_max_headers_gives_elimit_on_the_next_header),
             PF_UNIT_TEST(test_reset_makes_room_for_the_next_message),
             PF_UNIT_TEST(test_find_is_case_insensitive_and_counts_duplicates),
             PF_UNIT_TEST(test_connection_specific_and_framing_headers_are_hop_by_hop),
             PF_UNIT_TEST(test_headers_named_in_connection_are_hop_by_hop),
             PF_UNIT_TEST(test_request_head_is_origin_form_with_host_and_forwarding_headers),
             PF_UNIT_TEST(test_request_head_adds_x_forwarded_for_and_keeps_client_request_id),
             PF_UNIT_TEST(test_request_head_chunked_framing_replaces_the_clients),
             PF_UNIT_TEST(test_request_head_without_body_has_no_framing),
             PF_UNIT_TEST(test_every_x_forwarded_for_header_is_kept_in_order),
             PF_UNIT_TEST(test_empty_x_forwarded_for_gives_just_the_client),
             PF_UNIT_TEST(test_response_head_keeps_end_to_end_headers_and_sets_framing),
             PF_UNIT_TEST(test_connection_close_and_keep_alive_remove_only_what_they_name),
             PF_UNIT_TEST(test_ipv4_is_formatted_as_inet_ntop_does),
             PF_UNIT_TEST(test_hex64_is_sixteen_lower_case_digits),
             PF_UNIT_TEST(test_response_connection_header_follows_keep_alive_and_client_version),
             PF_UNIT_TEST(test_response_status_comes_from_fwd_and_empty_reason_is_allowed),
             PF_UNIT_TEST(test_first_of_a_head_without_a_buffer_is_an_empty_string),
             PF_UNIT_TEST(test_local_response_is_complete_and_parses),
             PF_UNIT_TEST(test_reason_phrases), PF_UNIT_TEST(test_chunk_is_hex_size_data_and_crlf),
             PF_UNIT_TEST(test_empty_value_at_the_end_of_the_buffer_stays_in_bounds),
             PF_UNIT_TEST(test_request_targets_split_into_forwarded_target_authority_and_path),
             PF_UNIT_TEST(test_token_check_accepts_rfc9110_tchars_only),
             PF_UNIT_TEST(test_obs_fold_is_a_second_value_span_not_explained_by_a_read_boundary),
             PF_UNIT_TEST(test_host_rules), PF_UNIT_TEST(test_body_modes),
             PF_UNIT_TEST(test_response_framing_by_method_status_and_client_version))
