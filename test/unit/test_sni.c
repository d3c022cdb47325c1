/* Unit tests for proxy/sni: the ClientHello parser of TLS passthrough. ClientHellos are
 * built here field by field (RFC 8446 4.1.2, RFC 6066 3), in one record or split over
 * several; every prefix of a valid one must ask for more, every malformed field must be
 * refused, and names come out lower-case. */
#include "proxy/sni.h"
#include "test/unit/unit.h"

#include <stdio.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define BUF_MAX (2 * PF_SNI_PEEK_MAX) /* room for the oversized case and its records */

typedef struct hello_opts {
    const char *name;       /* NULL: no server_name extension */
    bool no_extensions;     /* TLS 1.2 style: the extensions block is absent */
    size_t split;           /* >0: the handshake message is cut into records of this size */
    unsigned name_type;     /* 0: host_name */
    size_t padding;         /* bytes of a padding extension (type 21) before server_name */
    uint8_t record_minor;   /* legacy_record_version's minor byte */
    uint8_t handshake_type; /* 1: ClientHello */
} hello_opts;

static size_t put16(uint8_t *p, size_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return 2;
}

/* Writes the records of a ClientHello into out; returns their length. */
static size_t build(const hello_opts *o, uint8_t *out) {
    static uint8_t body[BUF_MAX];
    size_t n = 0;
    body[n++] = 3, body[n++] = 3;        /* legacy_version */
    memset(body + n, 0x5a, 32), n += 32; /* random */
    body[n++] = 32;                      /* legacy_session_id */
    memset(body + n, 0x11, 32), n += 32;
    n += put16(body + n, 4); /* cipher_suites */
    body[n++] = 0x13, body[n++] = 0x01, body[n++] = 0x13, body[n++] = 0x02;
    body[n++] = 1, body[n++] = 0; /* legacy_compression_methods: null */
    if (!o->no_extensions) {
        size_t ext_len_at = n;
        n += 2;
        n += put16(body + n, 43); /* supported_versions */
        n += put16(body + n, 3);
        body[n++] = 2, body[n++] = 3, body[n++] = 4;
        if (o->padding) {
            n += put16(body + n, 21);
            n += put16(body + n, o->padding);
            memset(body + n, 0, o->padding), n += o->padding;
        }
        if (o->name) {
            size_t len = strlen(o->name);
            n += put16(body + n, 0);
            n += put16(body + n, len + 5);
            n += put16(body + n, len + 3);
            body[n++] = (uint8_t)o->name_type;
            n += put16(body + n, len);
            memcpy(body + n, o->name, len), n += len;
        }
        put16(body + ext_len_at, n - ext_len_at - 2);
    }
    static uint8_t hs[BUF_MAX];
    hs[0] = o->handshake_type ? o->handshake_type : 1;
    hs[1] = (uint8_t)(n >> 16), hs[2] = (uint8_t)(n >> 8), hs[3] = (uint8_t)n;
    memcpy(hs + 4, body, n);
    size_t total = n + 4, w = 0, step = o->split ? o->split : 16384;
    for (size_t off = 0; off < total; off += step) {
        size_t frag = total - off < step ? total - off : step;
        out[w++] = 22, out[w++] = 3, out[w++] = o->record_minor ? o->record_minor : 1;
        w += put16(out + w, frag);
        memcpy(out + w, hs + off, frag), w += frag;
    }
    return w;
}

static pf_sni_result parse(const uint8_t *b, size_t n, char *name) {
    return sni_parse(b, n, name, PF_SNI_NAME_MAX);
}

static void test_a_client_hello_gives_its_server_name_lower_cased(void) {
    static uint8_t b[BUF_MAX];
    char name[PF_SNI_NAME_MAX];
    const hello_opts cases[] = {
        {.name = "db.example.com"},
        {.name = "DB.Example.COM"},
        {.name = "db.example.com", .split = 7},   /* over many records */
        {.name = "db.example.com", .split = 100}, /* the name crosses a record boundary */
        {.name = "db.example.com", .padding = 512},
        {.name = "db.example.com", .record_minor = 3},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t n = build(&cases[i], b);
        PF_CHECK(parse(b, n, name) == PF_SNI_FOUND, "case %zu: %s", i,
                 sni_result_name(parse(b, n, name)));
        CU_ASSERT_STRING_EQUAL(name, "db.example.com");
        /* Every shorter prefix is a valid beginning: more is needed, nothing is found. */
        for (size_t k = 0; k < n; k++)
            PF_CHECK(parse(b, k, name) == PF_SNI_MORE && name[0] == '\0', "case %zu prefix %zu: %s",
                     i, k, sni_result_name(parse(b, k, name)));
        /* What follows the ClientHello's record (the client's next flight) is not looked at. */
        memset(b + n, 0x17, 10);
        CU_ASSERT(parse(b, n + 10, name) == PF_SNI_FOUND);
    }
}

static void test_a_client_hello_without_a_host_name_has_none(void) {
    static uint8_t b[BUF_MAX];
    char name[PF_SNI_NAME_MAX];
    const hello_opts cases[] = {
        {.name = NULL},
        {.no_extensions = true},
        {.name = "x.test", .name_type = 7}, /* a name type other than host_name */
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t n = build(&cases[i], b);
        PF_CHECK(parse(b, n, name) == PF_SNI_NONE, "case %zu: %s", i,
                 sni_result_name(parse(b, n, name)));
        CU_ASSERT_STRING_EQUAL(name, "");
    }
}

static void test_bytes_that_are_not_tls_are_said_so_at_once(void) {
    char name[PF_SNI_NAME_MAX];
    const char *texts[] = {"GET / HTTP/1.1\r\n", "*1\r\n$4\r\nPING\r\n", "\x00", "SSH-2.0-x"};
    for (size_t i = 0; i < ARRAY_LEN(texts); i++)
        CU_ASSERT_EQUAL(
            parse((const uint8_t *)texts[i], strlen(texts[i]) ? strlen(texts[i]) : 1, name),
            PF_SNI_NOT_TLS);
    CU_ASSERT_EQUAL(parse((const uint8_t *)"", 0, name), PF_SNI_MORE);
}

static void test_malformed_client_hellos_are_refused(void) {
    static uint8_t b[BUF_MAX];
    char name[PF_SNI_NAME_MAX];
    /* names outside RFC 6066's DNS names */
    const char *bad_names[] = {"a b.test", "a..test", ".a.test", "a.test.", "a/test", "\x80.test"};
    for (size_t i = 0; i < ARRAY_LEN(bad_names); i++) {
        size_t n = build(&(hello_opts){.name = bad_names[i]}, b);
        PF_CHECK(parse(b, n, name) == PF_SNI_BAD, "name %zu: %s", i,
                 sni_result_name(parse(b, n, name)));
        CU_ASSERT_STRING_EQUAL(name, ""); /* nothing of a refused name is left behind */
    }
    char longest[260];
    memset(longest, 'a', 253);
    longest[253] = '\0';
    size_t n = build(&(hello_opts){.name = longest}, b);
    CU_ASSERT_EQUAL(parse(b, n, name), PF_SNI_FOUND);
    CU_ASSERT_EQUAL(strlen(name), 253);
    longest[253] = 'a', longest[254] = '\0';
    n = build(&(hello_opts){.name = longest}, b);
    CU_ASSERT_EQUAL(parse(b, n, name), PF_SNI_BAD);

    /* record and handshake headers */
    n = build(&(hello_opts){.name = "a.test", .record_minor = 9}, b);
    CU_ASSERT_EQUAL(parse(b, n, name), PF_SNI_BAD);
    n = build(&(hello_opts){.name = "a.test", .handshake_type = 2}, b);
    CU_ASSERT_EQUAL(parse(b, n, name), PF_SNI_BAD);
    n = build(&(hello_opts){.name = "a.test"}, b);
    b[1] = 2; /* SSL 2 */
    CU_ASSERT_EQUAL(parse(b, n, name), PF_SNI_BAD);
    const uint8_t empty_record[] = {22, 3, 1, 0, 0};
    CU_ASSERT_EQUAL(parse(empty_record, sizeof empty_record, name), PF_SNI_BAD);
    const uint8_t alert_next[] = {22, 3, 1, 0, 2, 1, 0, 21, 3, 1, 0, 2, 2, 40};
    CU_ASSERT_EQUAL(parse(alert_next, sizeof alert_next, name), PF_SNI_BAD);

    /* lengths that point past their vector: the extensions' total, the name's */
    n = build(&(hello_opts){.name = "a.test"}, b);
    size_t ext_len_at = 5 + 4 + 2 + 32 + 1 + 32 + 2 + 4 + 2;
    b[ext_len_at + 1]++;
    CU_ASSERT_EQUAL(parse(b, n, name), PF_SNI_BAD);
    n = build(&(hello_opts){.name = "a.test"}, b);
    b[n - 7]++; /* the name's length */
    CU_ASSERT_EQUAL(parse(b, n, name), PF_SNI_BAD);
    n = build(&(hello_opts){.name = "a.test"}, b);
    b[5 + 4 + 2 + 32] = 33; /* session id longer than 32 */
    CU_ASSERT_EQUAL(parse(b, n, name), PF_SNI_BAD);
}

/* The peek is bounded: a handshake that would go on past PF_SNI_PEEK_MAX is refused rather
 * than waited for, and a message announced larger than that is refused at its header. */
static void test_an_oversized_client_hello_is_refused(void) {
    static uint8_t b[BUF_MAX];
    char name[PF_SNI_NAME_MAX];
    size_t n = build(&(hello_opts){.name = "a.test", .padding = PF_SNI_PEEK_MAX}, b);
    CU_ASSERT(n > PF_SNI_PEEK_MAX);
    CU_ASSERT_EQUAL(parse(b, n, name), PF_SNI_BAD);
    CU_ASSERT_EQUAL(parse(b, PF_SNI_PEEK_MAX, name), PF_SNI_BAD);
    CU_ASSERT_EQUAL(parse(b, 100, name), PF_SNI_BAD); /* its length says too much already */
    n = build(&(hello_opts){.name = "a.test", .padding = 9000, .split = 4000}, b);
    CU_ASSERT_EQUAL(parse(b, n, name), PF_SNI_FOUND);
}

PF_UNIT_MAIN("sni", PF_UNIT_TEST(test_a_client_hello_gives_its_server_name_lower_cased),
             PF_UNIT_TEST(test_a_client_hello_without_a_host_name_has_none),
             PF_UNIT_TEST(test_bytes_that_are_not_tls_are_said_so_at_once),
             PF_UNIT_TEST(test_malformed_client_hellos_are_refused),
             PF_UNIT_TEST(test_an_oversized_client_hello_is_refused))
