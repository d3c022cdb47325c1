/* Unit tests for DNS discovery's pure steps (discovery/dns_int.h): raw answers built by
 * hand byte by byte (well-formed, truncated at every length, wrong types, CNAME chains
 * and loops, compression tricks), records to endpoints (SRV weights, tiers, port 0, glue),
 * and the refresh arithmetic (TTL clamp, backoff bounds, hold time). */
#include "discovery/dns_int.h"
#include "test/unit/unit.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- building answers --------------------------------------------------------------- */

typedef struct msg {
    uint8_t b[65536];
    size_t n;
} msg;

#define F_RESPONSE 0x8180 /* QR, RD, RA; rcode 0 */
#define RCODE_SERVFAIL 2
#define RCODE_NXDOMAIN 3
#define RCODE_REFUSED 5
#define T_TXT 16

static void put8(msg *m, unsigned v) {
    m->b[m->n++] = (uint8_t)v;
}

static void put16(msg *m, unsigned v) {
    put8(m, v >> 8);
    put8(m, v & 0xff);
}

static void put32(msg *m, uint32_t v) {
    put16(m, v >> 16);
    put16(m, v & 0xffff);
}

/* Uncompressed; "" is the root. */
static void put_name(msg *m, const char *name) {
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t len = dot ? (size_t)(dot - name) : strlen(name);
        put8(m, (unsigned)len);
        memcpy(m->b + m->n, name, len);
        m->n += len;
        name += len + (dot ? 1 : 0);
    }
    put8(m, 0);
}

static void put_pointer(msg *m, size_t offset) {
    put16(m, 0xc000 | (unsigned)offset);
}

static void header(msg *m, unsigned flags, unsigned an, unsigned ns, unsigned ar) {
    m->n = 0;
    put16(m, 0x1234);
    put16(m, flags);
    put16(m, 1);
    put16(m, an);
    put16(m, ns);
    put16(m, ar);
}

static void question(msg *m, const char *name, unsigned type) {
    put_name(m, name);
    put16(m, type);
    put16(m, DNS_CLASS_IN);
}

/* Writes an RR head; returns where its rdlength goes, for rr_end. */
static size_t rr_begin(msg *m, const char *owner, unsigned type, uint32_t ttl) {
    put_name(m, owner);
    put16(m, type);
    put16(m, DNS_CLASS_IN);
    put32(m, ttl);
    size_t at = m->n;
    put16(m, 0);
    return at;
}

static void rr_end(msg *m, size_t at) {
    size_t len = m->n - at - 2;
    m->b[at] = (uint8_t)(len >> 8);
    m->b[at + 1] = (uint8_t)len;
}

static void rr_a(msg *m, const char *owner, uint32_t ttl, const char *ip) {
    size_t at = rr_begin(m, owner, DNS_T_A, ttl);
    inet_pton(AF_INET, ip, m->b + m->n);
    m->n += 4;
    rr_end(m, at);
}

static void rr_aaaa(msg *m, const char *owner, uint32_t ttl, const char *ip) {
    size_t at = rr_begin(m, owner, DNS_T_AAAA, ttl);
    inet_pton(AF_INET6, ip, m->b + m->n);
    m->n += 16;
    rr_end(m, at);
}

static void rr_cname(msg *m, const char *owner, uint32_t ttl, const char *target) {
    size_t at = rr_begin(m, owner, DNS_T_CNAME, ttl);
    put_name(m, target);
    rr_end(m, at);
}

static void rr_srv(msg *m, const char *owner, uint32_t ttl, unsigned prio, unsigned weight,
                   unsigned port, const char *target) {
    size_t at = rr_begin(m, owner, DNS_T_SRV, ttl);
    put16(m, prio);
    put16(m, weight);
    put16(m, port);
    put_name(m, target);
    rr_end(m, at);
}

static void rr_soa(msg *m, const char *owner, uint32_t ttl, uint32_t minimum) {
    size_t at = rr_begin(m, owner, DNS_T_SOA, ttl);
    put_name(m, "ns.example");
    put_name(m, "admin.example");
    put32(m, 1);
    put32(m, 3600);
    put32(m, 600);
    put32(m, 86400);
    put32(m, minimum);
    rr_end(m, at);
}

static void rr_txt(msg *m, const char *owner, uint32_t ttl, const char *text) {
    size_t at = rr_begin(m, owner, T_TXT, ttl);
    put8(m, (unsigned)strlen(text));
    memcpy(m->b + m->n, text, strlen(text));
    m->n += strlen(text);
    rr_end(m, at);
}

static int parse(const msg *m, uint16_t qtype, dns_answer *a, pf_error *err) {
    memset(err, 0, sizeof *err);
    return dns_answer_parse(m->b, m->n, qtype, a, err);
}

static const char *addr_text(const dns_addr *a, uint16_t port) {
    static pf_sockaddr sa;
    dns_sockaddr(a, port, &sa);
    return sa.text;
}

/* ---- parsing -------------------------------------------------------------------------- */

static void test_a_records_become_addresses_with_the_smallest_ttl(void) {
    msg m;
    header(&m, F_RESPONSE, 3, 0, 0);
    question(&m, "backend.internal", DNS_T_A);
    rr_a(&m, "backend.internal", 30, "10.0.0.1");
    rr_a(&m, "Backend.Internal", 10, "10.0.0.2"); /* RFC 4343: case does not matter */
    rr_a(&m, "backend.internal", 60, "10.0.0.3");
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_OK);
    CU_ASSERT_EQUAL(a.status, PF_DNS_OK);
    CU_ASSERT_STRING_EQUAL(a.qname, "backend.internal");
    CU_ASSERT_EQUAL_FATAL(a.addr_count, 3);
    CU_ASSERT_STRING_EQUAL(addr_text(&a.addrs[0], 8080), "10.0.0.1:8080");
    CU_ASSERT_STRING_EQUAL(addr_text(&a.addrs[1], 8080), "10.0.0.2:8080");
    CU_ASSERT_EQUAL(a.ttl, 10);
    dns_answer_clear(&a);
}

static void test_aaaa_records_become_bracketed_endpoints(void) {
    msg m;
    header(&m, F_RESPONSE, 2, 0, 0);
    question(&m, "v6.internal", DNS_T_AAAA);
    rr_aaaa(&m, "v6.internal", 5, "::1");
    rr_aaaa(&m, "v6.internal", 5, "fd00::a:1");
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL_FATAL(parse(&m, DNS_T_AAAA, &a, &err), PF_DNS_OK);
    CU_ASSERT_EQUAL_FATAL(a.addr_count, 2);
    pf_endpoint eps[4];
    size_t n = 0;
    CU_ASSERT_EQUAL(dns_endpoints_from_addrs(a.addrs, a.addr_count, 8443, eps, &n, 4), 0);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(eps[0].addr.text, "[::1]:8443");
    CU_ASSERT_STRING_EQUAL(eps[1].addr.text, "[fd00::a:1]:8443");
    CU_ASSERT_EQUAL(eps[0].addr.ss.ss_family, AF_INET6);
    CU_ASSERT_EQUAL(eps[0].weight, 1);
    CU_ASSERT_TRUE(eps[0].healthy);
    /* the text is what config_parse_sockaddr would have made of it */
    pf_sockaddr parsed;
    pf_error err2;
    CU_ASSERT_EQUAL(config_parse_sockaddr("[fd00:0::a:1]:8443", &parsed, &err2), PF_OK);
    CU_ASSERT_STRING_EQUAL(parsed.text, eps[1].addr.text);
    CU_ASSERT_EQUAL(memcmp(&parsed.ss, &eps[1].addr.ss, parsed.len), 0);
    dns_answer_clear(&a);
}

static void test_cname_chain_is_followed_and_bounds_the_ttl(void) {
    msg m;
    header(&m, F_RESPONSE, 5, 0, 0);
    question(&m, "www.example", DNS_T_A);
    /* out of order on purpose: the chain is followed by name, not position */
    rr_a(&m, "edge.cdn.example", 60, "192.0.2.7");
    rr_cname(&m, "lb.example", 100, "edge.cdn.example");
    rr_a(&m, "www.example", 60, "198.51.100.1"); /* not at the chain's end: ignored */
    rr_cname(&m, "www.example", 5, "lb.example");
    rr_a(&m, "unrelated.example", 1, "203.0.113.9");
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL_FATAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_OK);
    CU_ASSERT_STRING_EQUAL(a.owner, "edge.cdn.example");
    CU_ASSERT_EQUAL_FATAL(a.addr_count, 1);
    CU_ASSERT_STRING_EQUAL(addr_text(&a.addrs[0], 80), "192.0.2.7:80");
    CU_ASSERT_EQUAL(a.ttl, 5);
    dns_answer_clear(&a);
}

static void test_cname_loop_is_malformed(void) {
    msg m;
    header(&m, F_RESPONSE, 2, 0, 0);
    question(&m, "a.example", DNS_T_A);
    rr_cname(&m, "a.example", 5, "b.example");
    rr_cname(&m, "b.example", 5, "a.example");
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_EBADRESP);
    PF_CHECK(strstr(err.msg, "CNAME chain") != NULL, "message: %s", err.msg);
    dns_answer_clear(&a);
}

static void test_cname_to_nothing_is_nodata(void) {
    msg m;
    header(&m, F_RESPONSE, 1, 0, 0);
    question(&m, "a.example", DNS_T_A);
    rr_cname(&m, "a.example", 300, "gone.example");
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_ENODATA);
    CU_ASSERT_EQUAL(a.ttl, DNS_TTL_UNKNOWN);
    dns_answer_clear(&a);
}

/* A full, valid SRV answer with glue: every shorter prefix of it must be rejected as
 * malformed (never accepted, never read past), which covers truncation at each field. */
static void build_srv_answer(msg *m) {
    header(m, F_RESPONSE, 2, 1, 2);
    question(m, "_http._tcp.svc.internal", DNS_T_SRV);
    rr_srv(m, "_http._tcp.svc.internal", 20, 10, 1, 8081, "t1.svc.internal");
    rr_srv(m, "_http._tcp.svc.internal", 20, 10, 3, 8082, "t2.svc.internal");
    rr_soa(m, "svc.internal", 60, 30);
    rr_a(m, "t1.svc.internal", 20, "10.1.0.1");
    rr_a(m, "t2.svc.internal", 20, "10.1.0.2");
}

static void test_truncated_answers_are_malformed_at_every_length(void) {
    msg m;
    build_srv_answer(&m);
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL_FATAL(parse(&m, DNS_T_SRV, &a, &err), PF_DNS_OK);
    dns_answer_clear(&a);
    size_t full = m.n;
    for (size_t len = 0; len < full; len++) {
        /* a heap copy of exactly len bytes, so ASan sees any read past the end */
        uint8_t *cut = malloc(len ? len : 1);
        memcpy(cut, m.b, len);
        int rc = dns_answer_parse(cut, len, DNS_T_SRV, &a, &err);
        PF_CHECK(rc == PF_DNS_EBADRESP, "cut at %zu of %zu: rc=%d (%s)", len, full, rc, err.msg);
        dns_answer_clear(&a);
        free(cut);
    }
}

static void test_tc_bit_is_an_error_not_a_short_set(void) {
    msg m;
    header(&m, F_RESPONSE | 0x0200, 1, 0, 0);
    question(&m, "a.example", DNS_T_A);
    rr_a(&m, "a.example", 5, "10.0.0.1");
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_EBADRESP);
    PF_CHECK(strstr(err.msg, "TC bit") != NULL, "message: %s", err.msg);
    CU_ASSERT_EQUAL(a.addr_count, 0);
    dns_answer_clear(&a);
}

static void test_records_of_the_wrong_type_are_not_endpoints(void) {
    msg m;
    header(&m, F_RESPONSE, 2, 0, 0);
    question(&m, "a.example", DNS_T_A);
    rr_txt(&m, "a.example", 5, "hello");
    rr_aaaa(&m, "a.example", 5, "::1");
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_ENODATA);
    CU_ASSERT_EQUAL(a.addr_count, 0);
    dns_answer_clear(&a);

    /* an answer to another question is not ours at all */
    header(&m, F_RESPONSE, 1, 0, 0);
    question(&m, "a.example", DNS_T_AAAA);
    rr_aaaa(&m, "a.example", 5, "::1");
    CU_ASSERT_EQUAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_EBADRESP);
    PF_CHECK(strstr(err.msg, "AAAA question, expected A") != NULL, "message: %s", err.msg);
    dns_answer_clear(&a);

    /* an A record with 5 data bytes */
    header(&m, F_RESPONSE, 1, 0, 0);
    question(&m, "a.example", DNS_T_A);
    size_t at = rr_begin(&m, "a.example", DNS_T_A, 5);
    put32(&m, 0x0a000001);
    put8(&m, 0);
    rr_end(&m, at);
    CU_ASSERT_EQUAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_EBADRESP);
    PF_CHECK(strstr(err.msg, "5 data bytes") != NULL, "message: %s", err.msg);
    dns_answer_clear(&a);
}

static void test_zero_records_and_nxdomain_take_the_soa_ttl(void) {
    static const struct {
        unsigned rcode;
        bool soa;
        int status;
        uint32_t ttl;
    } rows[] = {
        {0, false, PF_DNS_ENODATA, DNS_TTL_UNKNOWN},
        {0, true, PF_DNS_ENODATA, 30}, /* RFC 2308 5: min(SOA TTL 60, MINIMUM 30) */
        {RCODE_NXDOMAIN, false, PF_DNS_ENXDOMAIN, DNS_TTL_UNKNOWN},
        {RCODE_NXDOMAIN, true, PF_DNS_ENXDOMAIN, 30},
        {RCODE_SERVFAIL, false, PF_DNS_ESERVFAIL, DNS_TTL_UNKNOWN},
        {RCODE_REFUSED, false, PF_DNS_EREFUSED, DNS_TTL_UNKNOWN},
        {4 /* NOTIMP */, false, PF_DNS_EBADRESP, DNS_TTL_UNKNOWN},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        msg m;
        header(&m, F_RESPONSE | rows[i].rcode, 0, rows[i].soa ? 1 : 0, 0);
        question(&m, "gone.example", DNS_T_A);
        if (rows[i].soa)
            rr_soa(&m, "example", 60, 30);
        dns_answer a;
        pf_error err;
        int rc = parse(&m, DNS_T_A, &a, &err);
        PF_CHECK(rc == rows[i].status && a.ttl == rows[i].ttl && a.addr_count == 0,
                 "row %zu: rc=%d ttl=%u (%s)", i, rc, a.ttl, err.msg);
        dns_answer_clear(&a);
    }
}

static void test_duplicates_make_one_endpoint(void) {
    msg m;
    header(&m, F_RESPONSE, 3, 0, 0);
    question(&m, "a.example", DNS_T_A);
    rr_a(&m, "a.example", 5, "10.0.0.2");
    rr_a(&m, "a.example", 5, "10.0.0.1");
    rr_a(&m, "a.example", 5, "10.0.0.2");
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL_FATAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_OK);
    pf_endpoint eps[8];
    size_t n = 0;
    dns_endpoints_from_addrs(a.addrs, a.addr_count, 80, eps, &n, 8);
    pf_endpoint_set *set = discovery_set_new(eps, n);
    CU_ASSERT_FATAL(set != NULL);
    CU_ASSERT_EQUAL(set->count, 2);
    CU_ASSERT_STRING_EQUAL(set->endpoints[0].addr.text, "10.0.0.1:80");
    CU_ASSERT_STRING_EQUAL(set->endpoints[1].addr.text, "10.0.0.2:80");
    discovery_set_unref(set);
    dns_answer_clear(&a);
}

static void test_compression_is_read_and_abuse_is_malformed(void) {
    msg m;
    header(&m, F_RESPONSE, 1, 0, 0);
    size_t qname = m.n;
    question(&m, "a.example", DNS_T_A);
    put_pointer(&m, qname); /* owner: a pointer to the question's name */
    put16(&m, DNS_T_A);
    put16(&m, DNS_CLASS_IN);
    put32(&m, 7);
    put16(&m, 4);
    put32(&m, 0x0a000009);
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL_FATAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_OK);
    CU_ASSERT_EQUAL(a.addr_count, 1);
    dns_answer_clear(&a);

    /* a pointer to itself */
    header(&m, F_RESPONSE, 1, 0, 0);
    question(&m, "a.example", DNS_T_A);
    put_pointer(&m, m.n);
    put16(&m, DNS_T_A);
    CU_ASSERT_EQUAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_EBADRESP);
    PF_CHECK(strstr(err.msg, "loop") != NULL, "message: %s", err.msg);
    dns_answer_clear(&a);

    /* past the end (what dnsmasq 2.90 sends for a 27 KB SRV answer: offsets over 16383) */
    header(&m, F_RESPONSE, 1, 0, 0);
    question(&m, "a.example", DNS_T_A);
    put_pointer(&m, 0x3fff);
    CU_ASSERT_EQUAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_EBADRESP);
    dns_answer_clear(&a);

    /* the reserved label types 0x40 / 0x80 */
    header(&m, F_RESPONSE, 0, 0, 0);
    put8(&m, 0x41);
    put8(&m, 'a');
    put8(&m, 0);
    put16(&m, DNS_T_A);
    put16(&m, DNS_CLASS_IN);
    CU_ASSERT_EQUAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_EBADRESP);
    PF_CHECK(strstr(err.msg, "bad label type") != NULL, "message: %s", err.msg);
    dns_answer_clear(&a);
}

static void test_header_problems(void) {
    msg m;
    dns_answer a;
    pf_error err;
    header(&m, 0x0100, 0, 0, 0); /* a query, not a response */
    question(&m, "a.example", DNS_T_A);
    CU_ASSERT_EQUAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_EBADRESP);
    dns_answer_clear(&a);
    header(&m, F_RESPONSE, 0, 0, 0);
    m.b[5] = 2; /* two questions */
    question(&m, "a.example", DNS_T_A);
    question(&m, "b.example", DNS_T_A);
    CU_ASSERT_EQUAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_EBADRESP);
    dns_answer_clear(&a);
    CU_ASSERT_EQUAL(dns_answer_parse(NULL, 0, DNS_T_A, &a, &err), PF_DNS_EBADRESP);
    dns_answer_clear(&a);
}

static void test_ttl_with_the_top_bit_reads_as_zero(void) {
    msg m;
    header(&m, F_RESPONSE, 1, 0, 0);
    question(&m, "a.example", DNS_T_A);
    rr_a(&m, "a.example", 0x80000001u, "10.0.0.1");
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL_FATAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_OK);
    CU_ASSERT_EQUAL(a.ttl, 0); /* RFC 2181 8 */
    dns_answer_clear(&a);
}

static void test_more_records_than_the_cap_are_dropped_and_counted(void) {
    static msg m;
    unsigned total = PF_DNS_MAX_RECORDS + 76;
    header(&m, F_RESPONSE, total, 0, 0);
    size_t qname = m.n;
    question(&m, "big.example", DNS_T_A);
    for (unsigned i = 0; i < total; i++) {
        put_pointer(&m, qname);
        put16(&m, DNS_T_A);
        put16(&m, DNS_CLASS_IN);
        put32(&m, 5);
        put16(&m, 4);
        put32(&m, 0x0a000000u + i);
    }
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL_FATAL(parse(&m, DNS_T_A, &a, &err), PF_DNS_OK);
    CU_ASSERT_EQUAL(a.addr_count, PF_DNS_MAX_RECORDS);
    CU_ASSERT_EQUAL(a.dropped, 76);
    dns_answer_clear(&a);
}

/* ---- SRV -------------------------------------------------------------------------------- */

typedef struct fake_targets {
    dns_answer a; /* what "t3.svc.internal" resolves to */
    unsigned calls;
} fake_targets;

static size_t lookup(void *ctx, const char *target, const dns_answer *out[2]) {
    fake_targets *f = ctx;
    f->calls++;
    if (strcmp(target, "t3.svc.internal") != 0)
        return 0;
    out[0] = &f->a;
    return 1;
}

/* The answer the fake lookup gives for "t3.svc.internal": 10.1.0.3. */
static int resolve_t3(fake_targets *f) {
    msg t;
    pf_error err;
    header(&t, F_RESPONSE, 1, 0, 0);
    question(&t, "t3.svc.internal", DNS_T_A);
    rr_a(&t, "t3.svc.internal", 5, "10.1.0.3");
    return parse(&t, DNS_T_A, &f->a, &err);
}

static const pf_endpoint *find(const pf_endpoint *eps, size_t n, const char *addr) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(eps[i].addr.text, addr) == 0)
            return &eps[i];
    return NULL;
}

static void test_srv_weights_tiers_ports_and_glue(void) {
    msg m;
    header(&m, F_RESPONSE, 7, 0, 3);
    question(&m, "_http._tcp.svc.internal", DNS_T_SRV);
    const char *owner = "_http._tcp.svc.internal";
    rr_srv(&m, owner, 30, 20, 5, 9000, "t3.svc.internal"); /* no glue: looked up */
    rr_srv(&m, owner, 30, 10, 1, 8081, "t1.svc.internal");
    rr_srv(&m, owner, 30, 10, 0, 8082, "t2.svc.internal");     /* weight 0 -> 1 */
    rr_srv(&m, owner, 30, 10, 60000, 8083, "t4.svc.internal"); /* unresolved */
    rr_srv(&m, owner, 30, 15, 1, 0, "t1.svc.internal");        /* port 0 */
    rr_srv(&m, owner, 30, 15, 1, 80, "");                      /* "." */
    rr_srv(&m, owner, 30, 40, 65535, 8084, "t1.svc.internal"); /* weight capped */
    rr_a(&m, "t1.svc.internal", 12, "10.1.0.1");
    rr_aaaa(&m, "t2.svc.internal", 30, "fd00::2");
    rr_a(&m, "stranger.internal", 1, "10.9.9.9"); /* glue for no target: ignored */
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL_FATAL(parse(&m, DNS_T_SRV, &a, &err), PF_DNS_OK);
    CU_ASSERT_EQUAL(a.srv_count, 7);
    CU_ASSERT_EQUAL(a.glue_count, 2);
    CU_ASSERT_EQUAL(a.ttl, 12);              /* the glue's TTL counts too */
    CU_ASSERT_EQUAL(a.srvs[0].priority, 10); /* sorted by priority */

    fake_targets f = {0};
    CU_ASSERT_EQUAL_FATAL(resolve_t3(&f), PF_DNS_OK);

    pf_endpoint eps[16];
    dns_build_report report;
    size_t n = dns_endpoints_from_srv(&a, lookup, &f, eps, ARRAY_LEN(eps), &report);
    CU_ASSERT_EQUAL(n, 4);
    CU_ASSERT_EQUAL(report.port_zero, 1);
    CU_ASSERT_EQUAL(report.no_service, 1);
    CU_ASSERT_EQUAL(report.unresolved, 1);
    CU_ASSERT_EQUAL(report.dropped, 0);
    const pf_endpoint *t1 = find(eps, n, "10.1.0.1:8081"), *t2 = find(eps, n, "[fd00::2]:8082"),
                      *t3 = find(eps, n, "10.1.0.3:9000"), *t1b = find(eps, n, "10.1.0.1:8084");
    CU_ASSERT_FATAL(t1 && t2 && t3 && t1b);
    CU_ASSERT_EQUAL(t1->weight, 1);
    CU_ASSERT_EQUAL(t2->weight, 1);
    CU_ASSERT_EQUAL(t3->weight, 5);
    CU_ASSERT_EQUAL(t1b->weight, 10000);
    /* priorities 10, 20, 40 (15 produced nothing) are tiers 0, 1, 2 */
    CU_ASSERT_EQUAL(t1->priority, 0);
    CU_ASSERT_EQUAL(t2->priority, 0);
    CU_ASSERT_EQUAL(t3->priority, 1);
    CU_ASSERT_EQUAL(t1b->priority, 2);
    /* only targets without glue are looked up: t3 and t4 */
    CU_ASSERT_EQUAL(f.calls, 2);

    /* a small cap drops and says so */
    n = dns_endpoints_from_srv(&a, lookup, &f, eps, 2, &report);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(report.dropped, 2);
    dns_answer_clear(&f.a);
    dns_answer_clear(&a);
}

/* Found by fuzzing (test/fuzz/corpus/dns/srv_no_additional): with no additional section
 * the glue array is NULL, and it was handed to qsort, which UBSan reports. */
static void test_srv_without_additional_records_looks_every_target_up(void) {
    msg m;
    header(&m, F_RESPONSE, 2, 0, 0);
    question(&m, "_http._tcp.svc.internal", DNS_T_SRV);
    rr_srv(&m, "_http._tcp.svc.internal", 30, 10, 1, 9000, "t3.svc.internal");
    rr_srv(&m, "_http._tcp.svc.internal", 30, 10, 1, 9001, "t4.svc.internal");
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL_FATAL(parse(&m, DNS_T_SRV, &a, &err), PF_DNS_OK);
    CU_ASSERT_EQUAL(a.srv_count, 2);
    CU_ASSERT_EQUAL(a.glue_count, 0);
    size_t count = 9;
    CU_ASSERT_PTR_NULL(dns_glue_find(&a, "t3.svc.internal", &count));
    CU_ASSERT_EQUAL(count, 0);

    fake_targets f = {0};
    CU_ASSERT_EQUAL_FATAL(resolve_t3(&f), PF_DNS_OK);
    pf_endpoint eps[4];
    dns_build_report report;
    size_t n = dns_endpoints_from_srv(&a, lookup, &f, eps, ARRAY_LEN(eps), &report);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(f.calls, 2);
    CU_ASSERT_EQUAL(report.unresolved, 1);
    CU_ASSERT_PTR_NOT_NULL(find(eps, n, "10.1.0.3:9000"));
    dns_answer_clear(&f.a);
    dns_answer_clear(&a);
}

static void test_srv_glue_lookup_by_name(void) {
    msg m;
    build_srv_answer(&m);
    dns_answer a;
    pf_error err;
    CU_ASSERT_EQUAL_FATAL(parse(&m, DNS_T_SRV, &a, &err), PF_DNS_OK);
    size_t count = 9;
    const dns_glue *g = dns_glue_find(&a, "t2.svc.internal", &count);
    CU_ASSERT_EQUAL(count, 1);
    CU_ASSERT_FATAL(g != NULL);
    CU_ASSERT_STRING_EQUAL(addr_text(&g->addr, 1), "10.1.0.2:1");
    CU_ASSERT_PTR_NULL(dns_glue_find(&a, "t9.svc.internal", &count));
    CU_ASSERT_EQUAL(count, 0);
    dns_answer_clear(&a);
}

/* ---- scheduling ------------------------------------------------------------------------ */

static void test_refresh_follows_the_ttl_within_min_and_max(void) {
    static const struct {
        uint32_t ttl;
        uint64_t want;
    } rows[] = {
        {0, 1000},
        {1, 1000},
        {30, 30000},
        {299, 299000},
        {300, 300000},
        {86400, 300000},
        {DNS_TTL_UNKNOWN, 1000},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        uint64_t got = dns_refresh_after_ms(rows[i].ttl, 1000, 300000);
        PF_CHECK(got == rows[i].want, "ttl %u: %llu, want %llu", rows[i].ttl,
                 (unsigned long long)got, (unsigned long long)rows[i].want);
    }
}

static void test_backoff_doubles_is_capped_and_jitters_within_bounds(void) {
    static const uint64_t randoms[] = {0, 1, 499, 500, 12345, UINT64_MAX / 3, UINT64_MAX};
    for (unsigned failures = 1; failures <= 40; failures++) {
        uint64_t d = 1000;
        for (unsigned i = 1; i < failures && d < 60000; i++)
            d *= 2;
        if (d > 60000)
            d = 60000;
        uint64_t lo = UINT64_MAX, hi = 0;
        for (size_t r = 0; r < ARRAY_LEN(randoms); r++) {
            uint64_t got = dns_backoff_ms(failures, 1000, 60000, randoms[r]);
            PF_CHECK(got >= d - d / 2 && got <= d, "failures %u: %llu outside [%llu, %llu]",
                     failures, (unsigned long long)got, (unsigned long long)(d - d / 2),
                     (unsigned long long)d);
            lo = got < lo ? got : lo;
            hi = got > hi ? got : hi;
        }
        PF_CHECK(lo < hi, "failures %u: no jitter (%llu)", failures, (unsigned long long)lo);
    }
}

static void test_hold_keeps_records_after_a_negative_answer_then_drops_them(void) {
    const uint64_t hold = 30000, min = 1000, max = 60000;
    dns_qstate s = {0};
    uint64_t until;
    CU_ASSERT_FALSE(dns_qstate_in_effect(&s, hold, 0, &until));

    CU_ASSERT_EQUAL(dns_qstate_update(&s, PF_DNS_OK, 5, 1000, min, max, 0), 5000);
    CU_ASSERT_TRUE(s.done && s.answered && s.has_records);
    CU_ASSERT_TRUE(dns_qstate_in_effect(&s, hold, 2000, &until));
    CU_ASSERT_EQUAL(until, 0);

    /* failures keep the records however long they last, and back off */
    uint64_t d1 = dns_qstate_update(&s, PF_DNS_ETIMEOUT, DNS_TTL_UNKNOWN, 6000, min, max, 0);
    uint64_t d2 = dns_qstate_update(&s, PF_DNS_ESERVFAIL, DNS_TTL_UNKNOWN, 7000, min, max, 0);
    CU_ASSERT_EQUAL(s.failures, 2);
    CU_ASSERT_TRUE(d2 > d1);
    CU_ASSERT_TRUE(dns_qstate_in_effect(&s, hold, 10000000, &until));

    /* the first negative answer starts the hold; later ones do not restart it */
    dns_qstate_update(&s, PF_DNS_ENXDOMAIN, DNS_TTL_UNKNOWN, 10000, min, max, 0);
    CU_ASSERT_EQUAL(s.failures, 0);
    dns_qstate_update(&s, PF_DNS_ENODATA, DNS_TTL_UNKNOWN, 20000, min, max, 0);
    dns_qstate_update(&s, PF_DNS_ETIMEOUT, DNS_TTL_UNKNOWN, 25000, min, max, 0);
    CU_ASSERT_TRUE(dns_qstate_in_effect(&s, hold, 39999, &until));
    CU_ASSERT_EQUAL(until, 40000);
    CU_ASSERT_FALSE(dns_qstate_in_effect(&s, hold, 40000, &until));
    CU_ASSERT_EQUAL(until, 0);
    /* hold 0: a negative answer counts at once */
    CU_ASSERT_FALSE(dns_qstate_in_effect(&s, 0, 10000, &until));

    /* records again: in effect, and a later negative answer starts a new hold */
    dns_qstate_update(&s, PF_DNS_OK, 5, 50000, min, max, 0);
    CU_ASSERT_TRUE(dns_qstate_in_effect(&s, hold, 50001, &until));
    dns_qstate_update(&s, PF_DNS_ENXDOMAIN, DNS_TTL_UNKNOWN, 60000, min, max, 0);
    CU_ASSERT_TRUE(dns_qstate_in_effect(&s, hold, 89999, &until));
    CU_ASSERT_FALSE(dns_qstate_in_effect(&s, hold, 90000, &until));
}

static void test_first_outcomes_decide_readiness_inputs(void) {
    dns_qstate s = {0};
    uint64_t until;
    /* a failure first: done, but no answer yet (the cluster stays unpublished) */
    dns_qstate_update(&s, PF_DNS_ECONNREFUSED, DNS_TTL_UNKNOWN, 0, 1000, 60000, 7);
    CU_ASSERT_TRUE(s.done);
    CU_ASSERT_FALSE(s.answered);
    /* then NXDOMAIN: an answer with nothing to hold (an empty set is published) */
    CU_ASSERT_EQUAL(dns_qstate_update(&s, PF_DNS_ENXDOMAIN, 45, 100, 1000, 60000, 7), 45000);
    CU_ASSERT_TRUE(s.answered);
    CU_ASSERT_FALSE(dns_qstate_in_effect(&s, 30000, 200, &until));
}

static void test_status_words(void) {
    CU_ASSERT_STRING_EQUAL(discovery_dns_status_label(PF_DNS_OK), "ok");
    CU_ASSERT_STRING_EQUAL(discovery_dns_status_label(PF_DNS_ENXDOMAIN), "nxdomain");
    CU_ASSERT_STRING_EQUAL(discovery_dns_status_label(PF_DNS_EBADRESP), "malformed");
    CU_ASSERT_STRING_EQUAL(discovery_dns_status_label(-3), "error");
    CU_ASSERT_STRING_EQUAL(discovery_dns_strerror(PF_DNS_ETIMEOUT),
                           "no answer from the DNS servers in time");
    CU_ASSERT_STRING_EQUAL(discovery_dns_strerror(999), "unknown DNS status");
    for (int s = 0; s < PF_DNS_STATUS_COUNT; s++)
        PF_CHECK(discovery_dns_strerror(s) && discovery_dns_status_label(s),
                 "status %d has no words", s);
}

PF_UNIT_MAIN(
    "dns", PF_UNIT_TEST(test_a_records_become_addresses_with_the_smallest_ttl),
    PF_UNIT_TEST(test_aaaa_records_become_bracketed_endpoints),
    PF_UNIT_TEST(test_cname_chain_is_followed_and_bounds_the_ttl),
    PF_UNIT_TEST(test_cname_loop_is_malformed), PF_UNIT_TEST(test_cname_to_nothing_is_nodata),
    PF_UNIT_TEST(test_truncated_answers_are_malformed_at_every_length),
    PF_UNIT_TEST(test_tc_bit_is_an_error_not_a_short_set),
    PF_UNIT_TEST(test_records_of_the_wrong_type_are_not_endpoints),
    PF_UNIT_TEST(test_zero_records_and_nxdomain_take_the_soa_ttl),
    PF_UNIT_TEST(test_duplicates_make_one_endpoint),
    PF_UNIT_TEST(test_compression_is_read_and_abuse_is_malformed),
    PF_UNIT_TEST(test_header_problems), PF_UNIT_TEST(test_ttl_with_the_top_bit_reads_as_zero),
    PF_UNIT_TEST(test_more_records_than_the_cap_are_dropped_and_counted),
    PF_UNIT_TEST(test_srv_weights_tiers_ports_and_glue), PF_UNIT_TEST(test_srv_glue_lookup_by_name),
    PF_UNIT_TEST(test_srv_without_additional_records_looks_every_target_up),
    PF_UNIT_TEST(test_refresh_follows_the_ttl_within_min_and_max),
    PF_UNIT_TEST(test_backoff_doubles_is_capped_and_jitters_within_bounds),
    PF_UNIT_TEST(test_hold_keeps_records_after_a_negative_answer_then_drops_them),
    PF_UNIT_TEST(test_first_outcomes_decide_readiness_inputs), PF_UNIT_TEST(test_status_words))
