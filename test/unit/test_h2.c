/* Unit tests for the pure HTTP/2 <-> HTTP/1 mappings of proxy/h2_downstream.c: what each
 * request field becomes (RFC 9113 8.2, 8.3), cookie crumbs joined for HTTP/1 (8.2.3), and
 * the response fields built from an HTTP/1 head (names lower-cased, connection-specific and
 * framing fields dropped, :status first, content-length and pilotfish's own lines added). */
#include "core/error.h"
#include "proxy/h2_int.h"
#include "test/unit/unit.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static void test_request_fields_map_to_their_http1_roles(void) {
    static const struct {
        const char *name;
        pf_h2_field want;
    } rows[] = {
        {":method", PF_H2_FIELD_METHOD},
        {":path", PF_H2_FIELD_PATH},
        {":authority", PF_H2_FIELD_AUTHORITY},
        {":scheme", PF_H2_FIELD_SCHEME},
        {":protocol", PF_H2_FIELD_DROP},
        {"cookie", PF_H2_FIELD_COOKIE},
        {"host", PF_H2_FIELD_HOST},
        {"te", PF_H2_FIELD_DROP},
        {"connection", PF_H2_FIELD_DROP},
        {"keep-alive", PF_H2_FIELD_DROP},
        {"transfer-encoding", PF_H2_FIELD_DROP},
        {"upgrade", PF_H2_FIELD_DROP},
        {"content-length", PF_H2_FIELD_KEEP},
        {"x-request-id", PF_H2_FIELD_KEEP},
        {"hostname", PF_H2_FIELD_KEEP},
        {"cookies", PF_H2_FIELD_KEEP},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        pf_h2_field got = h2_request_field(rows[i].name, strlen(rows[i].name));
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
    CU_ASSERT_EQUAL_FATAL(h2_response_fields(&f, &h, 404, true, 12, "x-pilotfish-attempts: 2\r\n"),
                          PF_OK);
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
    CU_ASSERT_EQUAL_FATAL(
        h2_response_fields(&f, NULL, 503, true, 0, "content-type: text/plain\r\nX-A:  b \r\n"),
        PF_OK);
    CU_ASSERT_EQUAL(f.count, 4);
    CU_ASSERT_TRUE(has(&f, ":status", "503"));
    CU_ASSERT_TRUE(has(&f, "content-length", "0"));
    CU_ASSERT_TRUE(has(&f, "content-type", "text/plain"));
    CU_ASSERT_TRUE(has(&f, "x-a", "b"));
    h2_fields_free(&f);
    CU_ASSERT_EQUAL_FATAL(h2_response_fields(&f, NULL, 204, false, 0, NULL), PF_OK);
    CU_ASSERT_EQUAL(f.count, 1);
    h2_fields_free(&f);
}

PF_UNIT_MAIN("h2", PF_UNIT_TEST(test_request_fields_map_to_their_http1_roles),
             PF_UNIT_TEST(test_cookie_crumbs_join_with_semicolons_within_the_limit),
             PF_UNIT_TEST(test_response_fields_are_lower_case_without_connection_specific_ones),
             PF_UNIT_TEST(test_own_responses_have_status_length_and_extra_lines_only))
