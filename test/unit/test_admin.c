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

PF_UNIT_MAIN("admin", PF_UNIT_TEST(test_html_escape_replaces_every_markup_character),
             PF_UNIT_TEST(test_html_escape_output_has_no_markup_character_left),
             PF_UNIT_TEST(test_csp_allows_only_hashed_inline_code))
