/* libFuzzer harness for DNS answers (discovery/dns_answer.c): the bytes a resolver hands
 * back, parsed as dns.c parses them, then turned into endpoints. The first input byte picks
 * the question type (A, AAAA or SRV), the rest is the message. Beyond memory errors it
 * checks what callers rely on: the status matches the return, positive answers have records,
 * SRV records are sorted and their glue found by name, and counting endpoints agrees with
 * building them. */
#include "discovery/dns_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static void check_srvs(const dns_answer *a) {
    for (size_t i = 0; i < a->srv_count; i++) {
        const dns_srv *r = &a->srvs[i];
        CHECK(strlen(r->target) < PF_DNS_NAME_MAX);
        if (i > 0)
            CHECK(a->srvs[i - 1].priority <= r->priority);
        size_t count = 0;
        const dns_glue *g = dns_glue_find(a, r->target, &count);
        for (size_t k = 0; k < count; k++)
            CHECK(strcmp(g[k].name, r->target) == 0);
    }
    for (size_t i = 0; i < a->glue_count; i++) {
        CHECK(a->glue[i].addr.family == AF_INET || a->glue[i].addr.family == AF_INET6);
        if (i > 0)
            CHECK(strcmp(a->glue[i - 1].name, a->glue[i].name) <= 0);
    }
}

static void check_endpoints(const dns_answer *a) {
    dns_build_report report;
    if (a->srv_count) {
        dns_endpoints_from_srv(a, NULL, NULL, NULL, 0, &report);
        size_t want = report.dropped;
        pf_endpoint *eps = want ? calloc(want, sizeof *eps) : NULL;
        if (want && !eps)
            return;
        size_t n = dns_endpoints_from_srv(a, NULL, NULL, eps, want, &report);
        CHECK(n == want && report.dropped == 0);
        for (size_t i = 0; i < n; i++)
            CHECK(eps[i].weight >= 1 && eps[i].addr.text[0]);
        free(eps);
    }
    if (a->addr_count) {
        pf_endpoint eps[8];
        size_t n = 0;
        size_t dropped = dns_endpoints_from_addrs(a->addrs, a->addr_count, 443, eps, &n, 8);
        CHECK(n + dropped == a->addr_count);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const uint16_t types[] = {DNS_T_A, DNS_T_AAAA, DNS_T_SRV};
    if (size < 1)
        return 0;
    uint16_t qtype = types[data[0] % 3];
    dns_answer a;
    pf_error err;
    int rc = dns_answer_parse(data + 1, size - 1, qtype, &a, &err);
    CHECK(rc >= PF_DNS_OK && rc < PF_DNS_STATUS_COUNT);
    if (rc == PF_DNS_OK) {
        CHECK(a.status == PF_DNS_OK);
        CHECK(qtype == DNS_T_SRV ? a.srv_count > 0 && a.addr_count == 0
                                 : a.addr_count > 0 && a.srv_count == 0);
        CHECK(strlen(a.qname) < PF_DNS_NAME_MAX && strlen(a.owner) < PF_DNS_NAME_MAX);
        check_srvs(&a);
        check_endpoints(&a);
    } else {
        CHECK(strlen(err.msg) < sizeof err.msg);
        if (rc == PF_DNS_ENODATA || rc == PF_DNS_ENXDOMAIN)
            CHECK(a.status == rc);
    }
    dns_answer_clear(&a);
    return 0;
}
