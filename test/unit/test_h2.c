/* Unit tests for the pure HTTP/2 <-> HTTP/1 mappings of proxy/h2_downstream.c: what each
 * request field becomes (RFC 9113 8.2, 8.3), cookie crumbs joined for HTTP/1 (8.2.3), and
 * the response fields built from an HTTP/1 head (names lower-cased, connection-specific and
 * framing fields dropped, :status first, content-length and pilotfish's own lines added). */
#include "core/error.h"
#include "proxy/h2_int.h"
#include "proxy/websocket_int.h"
#include "test/unit/unit.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static void test_request_fields_map_to_their_http1_roles(void) {
    static const struct {
        const char *name, *value;
        pf_h2_field want;
    } rows[] = {
        {":method", "x", PF_H2_FIELD_METHOD},
        {":path", "x", PF_H2_FIELD_PATH},
        {":authority", "x", PF_H2_FIELD_AUTHORITY},
        {":scheme", "x", PF_H2_FIELD_SCHEME},
        {":protocol", "websocket", PF_H2_FIELD_PROTOCOL},
        {"cookie", "x", PF_H2_FIELD_COOKIE},
        {"host", "x", PF_H2_FIELD_HOST},
        {"te", "gzip", PF_H2_FIELD_DROP},
        {"te", "trailers", PF_H2_FIELD_KEEP},
        {"te", "Trailers", PF_H2_FIELD_KEEP},
        {"connection", "x", PF_H2_FIELD_DROP},
        {"keep-alive", "x", PF_H2_FIELD_DROP},
        {"transfer-encoding", "x", PF_H2_FIELD_DROP},
        {"upgrade", "x", PF_H2_FIELD_DROP},
        {"content-length", "x", PF_H2_FIELD_KEEP},
        {"x-request-id", "x", PF_H2_FIELD_KEEP},
        {"hostname", "x", PF_H2_FIELD_KEEP},
        {"cookies", "x", PF_H2_FIELD_KEEP},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        pf_h2_field got = h2_request_field(rows[i].name, strlen(rows[i].name), rows[i].value,
                                           strlen(rows[i].value));
        PF_CHECK(got == rows[i].want, "%s: got %d, want %d", rows[i].name, got, rows[i].want);
    }
}

static void test_cookie_crumbs_join_with_semicolons_within_the_limit(void) {
    char buf[16];
    size_t len = 0;
    CU_ASSERT_EQUAL(h2_cookie_append(buf, sizeof buf, &len, "a=1", 3), PF_OK);
    CU_ASSERT_EQUAL(h2_cookie_append(buf, sizeof buf, &len, "b=2", 3), PF_OK);
    CU_ASSERT_EQUAL(len, 8);
    CU_ASSERT_NSTRING_EQUAL(buf, "a=1; b=2", 8);
    /* "; c=3456" would make 16: fits exactly; one more byte does not, and nothing changes */
    CU_ASSERT_EQUAL(h2_cookie_append(buf, sizeof buf, &len, "c=3456", 6), PF_OK);
    CU_ASSERT_EQUAL(len, 16);
    CU_ASSERT_EQUAL(h2_cookie_append(buf, sizeof buf, &len, "d", 1), PF_ELIMIT);
    CU_ASSERT_EQUAL(len, 16);
}

static void add(pf_head *h, const char *name, const char *value) {
    CU_ASSERT_EQUAL(http1_head_append_name(h, name, strlen(name)), PF_OK);
    CU_ASSERT_EQUAL(http1_head_append_value(h, value, strlen(value)), PF_OK);
    CU_ASSERT_EQUAL(http1_head_finish_value(h), PF_OK);
}

static bool has(const pf_h2_fields *f, const char *name, const char *value) {
    for (size_t i = 0; i < f->count; i++)
        if (f->nv[i].namelen == strlen(name) &&
            memcmp(f->nv[i].name, name, f->nv[i].namelen) == 0 &&
            f->nv[i].valuelen == strlen(value) &&
            memcmp(f->nv[i].value, value, f->nv[i].valuelen) == 0)
            return true;
    return false;
}

static void test_response_fields_are_lower_case_without_connection_specific_ones(void) {
    pf_head h;
    http1_head_init(&h, 4096, 32);
    add(&h, "Content-Type", "text/plain");
    add(&h, "Connection", "close, X-Hop");
    add(&h, "X-Hop", "gone");
    add(&h, "Transfer-Encoding", "chunked");
    add(&h, "Keep-Alive", "timeout=5");
    add(&h, "Content-Length", "99");
    add(&h, "Set-Cookie", "a=1");
    add(&h, "Set-Cookie", "b=2");
    pf_h2_fields f;
    CU_ASSERT_EQUAL_FATAL(
        h2_response_fields(&f, &h, 404, true, 12, "x-pilotfish-attempts: 2\r\n", NULL), PF_OK);
    CU_ASSERT_EQUAL(f.count, 6);
    CU_ASSERT_TRUE(f.count > 0 && f.nv[0].namelen == 7 && memcmp(f.nv[0].name, ":status", 7) == 0);
    CU_ASSERT_TRUE(has(&f, ":status", "404"));
    CU_ASSERT_TRUE(has(&f, "content-type", "text/plain"));
    CU_ASSERT_TRUE(has(&f, "set-cookie", "a=1"));
    CU_ASSERT_TRUE(has(&f, "set-cookie", "b=2"));
    CU_ASSERT_TRUE(has(&f, "content-length", "12")); /* ours, not the upstream's 99 */
    CU_ASSERT_TRUE(has(&f, "x-pilotfish-attempts", "2"));
    CU_ASSERT_FALSE(has(&f, "x-hop", "gone"));
    for (size_t i = 0; i < f.count; i++)
        for (size_t k = 0; k < f.nv[i].namelen; k++)
            PF_CHECK(!(f.nv[i].name[k] >= 'A' && f.nv[i].name[k] <= 'Z'), "field %zu: %.*s", i,
                     (int)f.nv[i].namelen, f.nv[i].name);
    h2_fields_free(&f);
    http1_head_free(&h);
}

static void test_own_responses_have_status_length_and_extra_lines_only(void) {
    pf_h2_fields f;
    CU_ASSERT_EQUAL_FATAL(h2_response_fields(&f, NULL, 503, true, 0,
                                             "content-type: text/plain\r\nX-A:  b \r\n", NULL),
                          PF_OK);
    CU_ASSERT_EQUAL(f.count, 4);
    CU_ASSERT_TRUE(has(&f, ":status", "503"));
    CU_ASSERT_TRUE(has(&f, "content-length", "0"));
    CU_ASSERT_TRUE(has(&f, "content-type", "text/plain"));
    CU_ASSERT_TRUE(has(&f, "x-a", "b"));
    h2_fields_free(&f);
    CU_ASSERT_EQUAL_FATAL(h2_response_fields(&f, NULL, 204, false, 0, NULL, NULL), PF_OK);
    CU_ASSERT_EQUAL(f.count, 1);
    h2_fields_free(&f);
}

static void test_request_fields_for_an_h2_upstream(void) {
    pf_head h;
    http1_head_init(&h, 4096, 32);
    add(&h, "Host", "api.local");
    add(&h, "Connection", "keep-alive");
    add(&h, "TE", "trailers");
    add(&h, "Content-Type", "application/grpc");
    add(&h, "X-Forwarded-For", "10.1.1.1");
    add(&h, "X-Forwarded-Proto", "https");
    add(&h, "Transfer-Encoding", "chunked");
    pf_forward_request fwd = {.method = "POST",
                              .target = "?q=1",
                              .target_len = 4,
                              .root_first = true,
                              .host = "api.local",
                              .host_len = 9,
                              .client_ip = "127.0.0.1",
                              .proto = "http",
                              .request_id = "id-1",
                              .body = PF_BODY_LENGTH,
                              .content_length = 5};
    pf_h2_fields f;
    CU_ASSERT_EQUAL_FATAL(h2_request_fields(&f, &h, &fwd), PF_OK);
    /* RFC 9113 8.3: the pseudo-header fields come first */
    const char *first[] = {":method", ":scheme", ":authority", ":path"};
    for (size_t i = 0; i < 4; i++)
        PF_CHECK(f.nv[i].namelen == strlen(first[i]) &&
                     memcmp(f.nv[i].name, first[i], f.nv[i].namelen) == 0,
                 "field %zu is %.*s", i, (int)f.nv[i].namelen, f.nv[i].name);
    CU_ASSERT_TRUE(has(&f, ":method", "POST"));
    CU_ASSERT_TRUE(has(&f, ":scheme", "http"));
    CU_ASSERT_TRUE(has(&f, ":authority", "api.local"));
    CU_ASSERT_TRUE(has(&f, ":path", "/?q=1"));
    CU_ASSERT_TRUE(has(&f, "te", "trailers"));
    CU_ASSERT_TRUE(has(&f, "content-type", "application/grpc"));
    CU_ASSERT_TRUE(has(&f, "x-forwarded-for", "10.1.1.1, 127.0.0.1"));
    CU_ASSERT_TRUE(has(&f, "x-forwarded-proto", "http"));
    CU_ASSERT_TRUE(has(&f, "x-request-id", "id-1"));
    CU_ASSERT_TRUE(has(&f, "content-length", "5"));
    CU_ASSERT_EQUAL(f.count, 10); /* no host, connection, transfer-encoding, old proto */
    h2_fields_free(&f);
    http1_head_free(&h);
}

/* RFC 6455 4.2.2's own example, a key made from 16 bytes, and answers that are not it. */
static void test_websocket_key_and_accept(void) {
    char accept[PF_WS_ACCEPT_LEN + 1];
    CU_ASSERT_EQUAL(websocket_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, accept), PF_OK);
    CU_ASSERT_STRING_EQUAL(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    const char *good = " s3pPLMBiTxaQ9kYGzzhZRbK+xOo= ";
    CU_ASSERT_TRUE(websocket_accept_matches("dGhlIHNhbXBsZSBub25jZQ==", good, strlen(good)));
    const char *bad[] = {"s3pPLMBiTxaQ9kYGzzhZRbK+xOp=", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo", "",
                         "s3pPLMBiTxaQ9kYGzzhZRbK+xOo==x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        PF_CHECK(!websocket_accept_matches("dGhlIHNhbXBsZSBub25jZQ==", bad[i], strlen(bad[i])),
                 "\"%s\" accepted", bad[i]);
    char key[PF_WS_KEY_LEN + 1];
    websocket_key(0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull, key);
    CU_ASSERT_STRING_EQUAL(key, "AAECAwQFBgcICQoLDA0ODw==");
    char big[200];
    memset(big, 'a', sizeof big);
    CU_ASSERT_EQUAL(websocket_accept(big, sizeof big, accept), PF_EINVAL);
}

PF_UNIT_MAIN("h2", PF_UNIT_TEST(test_request_fields_map_to_their_http1_roles),
             PF_UNIT_TEST(test_cookie_crumbs_join_with_semicolons_within_the_limit),
             PF_UNIT_TEST(test_response_fields_are_lower_case_without_connection_specific_ones),
             PF_UNIT_TEST(test_own_responses_have_status_length_and_extra_lines_only),
             PF_UNIT_TEST(test_request_fields_for_an_h2_upstream),
             PF_UNIT_TEST(test_websocket_key_and_accept))
