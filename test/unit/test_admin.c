/* admin/: the status page's HTML escaping and its Content-Security-Policy. */
#include "admin/admin_int.h"
#include "test/unit/unit.h"

#include <event2/buffer.h>
#include <stdlib.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* What admin_html_escape appended to an empty buffer, NUL-terminated; caller frees. */
static char *escaped(const char *text) {
    struct evbuffer *out = evbuffer_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(admin_html_escape(out, text), PF_OK);
    size_t len = evbuffer_get_length(out);
    char *s = malloc(len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    evbuffer_remove(out, s, len);
    s[len] = '\0';
    evbuffer_free(out);
    return s;
}

static void test_html_escape_replaces_every_markup_character(void) {
    static const struct {
        const char *in, *want;
    } rows[] = {
        {"", ""},
        {"web", "web"},
        {"a&b", "a&amp;b"},
        {"<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"},
        {"x\" onmouseover=\"y", "x&quot; onmouseover=&quot;y"},
        {"it's", "it&#39;s"},
        {"&amp;", "&amp;amp;"}, /* already escaped text is escaped again: shown as typed */
        {"<<>>", "&lt;&lt;&gt;&gt;"},
        {"\"'&<>", "&quot;&#39;&amp;&lt;&gt;"},
        {"end<", "end&lt;"},
        {">start", "&gt;start"},
        {"caf\xc3\xa9 \xe2\x80\x93 ok", "caf\xc3\xa9 \xe2\x80\x93 ok"}, /* UTF-8 passes through */
        {"a/b=c;d`e", "a/b=c;d`e"},
        {"line\nbreak\ttab", "line\nbreak\ttab"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char *got = escaped(rows[i].in);
        PF_CHECK(strcmp(got, rows[i].want) == 0, "row %zu: \"%s\" -> \"%s\", want \"%s\"", i,
                 rows[i].in, got, rows[i].want);
        free(got);
    }
}

static void test_html_escape_output_has_no_markup_character_left(void) {
    char all[256];
    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    char *got = escaped(all);
    /* Every '&' starts one of the five references; nothing else can open markup. */
    CU_ASSERT_PTR_NULL(strpbrk(got, "<>\"'"));
    for (const char *p = strchr(got, '&'); p; p = strchr(p + 1, '&'))
        PF_CHECK(strncmp(p, "&amp;", 5) == 0 || strncmp(p, "&lt;", 4) == 0 ||
                     strncmp(p, "&gt;", 4) == 0 || strncmp(p, "&quot;", 6) == 0 ||
                     strncmp(p, "&#39;", 5) == 0,
                 "stray & at \"%.8s\"", p);
    free(got);
}

static void test_csp_allows_only_hashed_inline_code(void) {
    const char *csp = admin_status_csp();
    CU_ASSERT_PTR_NOT_NULL_FATAL(csp);
    CU_ASSERT_PTR_NOT_NULL(strstr(csp, "default-src 'none'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(csp, "script-src 'sha256-"));
    CU_ASSERT_PTR_NOT_NULL(strstr(csp, "style-src 'sha256-"));
    CU_ASSERT_PTR_NULL(strstr(csp, "unsafe"));
    CU_ASSERT_PTR_EQUAL(admin_status_csp(), csp); /* computed once */
}

#define SEC 1000000u

static void test_rates_come_from_a_sample_10_to_20_seconds_old(void) {
    admin_rate_meter m = {0};
    uint64_t ids[] = {1, 2, 3};                               /* the same clusters throughout */
    CU_ASSERT_EQUAL(admin_rate_of(&m, 0, 5, 1, 1 * SEC), -1); /* no sample yet */
    uint64_t t0[] = {10, 20};
    CU_ASSERT_EQUAL(admin_rate_update(&m, t0, ids, 2, 100 * SEC), PF_OK);
    CU_ASSERT_EQUAL(admin_rate_of(&m, 0, 15, 1, 100 * SEC + SEC / 2), -1); /* under 1 s */
    CU_ASSERT_DOUBLE_EQUAL(admin_rate_of(&m, 0, 30, 1, 102 * SEC), 10.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(admin_rate_of(&m, 1, 20, 2, 102 * SEC), 0.0, 1e-9);
    /* Within the window the sample stays: every viewer's refresh sees the same baseline. */
    uint64_t t5[] = {60, 20};
    CU_ASSERT_EQUAL(admin_rate_update(&m, t5, ids, 2, 105 * SEC), PF_OK);
    CU_ASSERT_DOUBLE_EQUAL(admin_rate_of(&m, 0, 60, 1, 105 * SEC), 10.0, 1e-9);
    /* After 10 s a new sample is taken; rates come from the older one (10-20 s back). */
    uint64_t t10[] = {110, 20, 7};
    CU_ASSERT_EQUAL(admin_rate_update(&m, t10, ids, 3, 110 * SEC), PF_OK);
    CU_ASSERT_DOUBLE_EQUAL(admin_rate_of(&m, 0, 130, 1, 112 * SEC), 10.0, 1e-9);
    /* a cluster newer than the older sample: from the newer one, once it is 1 s old */
    CU_ASSERT_DOUBLE_EQUAL(admin_rate_of(&m, 2, 9, 3, 112 * SEC), 1.0, 1e-9);
    CU_ASSERT_EQUAL(admin_rate_of(&m, 2, 9, 3, 110 * SEC + SEC / 2), -1);
    uint64_t t21[] = {220, 20, 7};
    CU_ASSERT_EQUAL(admin_rate_update(&m, t21, ids, 3, 121 * SEC), PF_OK);
    CU_ASSERT_DOUBLE_EQUAL(admin_rate_of(&m, 0, 220, 1, 121 * SEC), 10.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(admin_rate_of(&m, 2, 18, 3, 121 * SEC), 1.0, 1e-9);
    CU_ASSERT_EQUAL(admin_rate_of(&m, 3, 1, 4, 121 * SEC), -1);
    CU_ASSERT_EQUAL(admin_rate_of(&m, 0, 100, 1, 121 * SEC), -1); /* below the base: unknown */
    admin_rate_free(&m);
    admin_rate_free(&m); /* freed twice is harmless */
}

/* A slot freed and taken by another cluster: its counters are the new cluster's, so no
 * sample of the old one may be the base, whether the new total is above the old (a wrong
 * rate) or below it (a negative, or as unsigned a huge, one). */
static void test_a_reused_slot_starts_a_fresh_rate_series(void) {
    admin_rate_meter m = {0};
    uint64_t old_ids[] = {1, 2}, t0[] = {1000, 5};
    CU_ASSERT_EQUAL(admin_rate_update(&m, t0, old_ids, 2, 100 * SEC), PF_OK);
    /* slot 0 now holds cluster 7, which counted 1,010 requests (more than the old one) */
    CU_ASSERT_EQUAL(admin_rate_of(&m, 0, 1010, 7, 105 * SEC), -1);
    CU_ASSERT_EQUAL(admin_rate_of(&m, 0, 3, 7, 105 * SEC), -1);                /* and fewer */
    CU_ASSERT_DOUBLE_EQUAL(admin_rate_of(&m, 1, 25, 2, 105 * SEC), 4.0, 1e-9); /* the other */
    /* the next sample holds cluster 7's total: its rate is its own from then on */
    uint64_t new_ids[] = {7, 2}, t10[] = {1010, 25};
    CU_ASSERT_EQUAL(admin_rate_update(&m, t10, new_ids, 2, 110 * SEC), PF_OK);
    CU_ASSERT_DOUBLE_EQUAL(admin_rate_of(&m, 0, 1030, 7, 112 * SEC), 10.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(admin_rate_of(&m, 1, 29, 2, 112 * SEC), 2.0, 1e-9); /* from t0 */
    admin_rate_free(&m);
}

PF_UNIT_MAIN("admin", PF_UNIT_TEST(test_html_escape_replaces_every_markup_character),
             PF_UNIT_TEST(test_html_escape_output_has_no_markup_character_left),
             PF_UNIT_TEST(test_csp_allows_only_hashed_inline_code),
             PF_UNIT_TEST(test_rates_come_from_a_sample_10_to_20_seconds_old),
             PF_UNIT_TEST(test_a_reused_slot_starts_a_fresh_rate_series))
