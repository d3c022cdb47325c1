/* DNS answers to endpoints, and the refresh arithmetic: the pure half of DNS discovery.
 *
 * Answers come from the network, so every length and offset is checked against the
 * message before it is read; a malformed message is an error with a reason, never a crash
 * or a partial set. We parse ourselves (rather than with ares_parse_*_reply) because we
 * need what c-ares 1.18 does not give: SRV TTLs, the additional section (SRV glue) and the
 * SOA of negative answers. */
#include "discovery/dns_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define DNS_HEADER_LEN 12
#define DNS_RR_FIXED 10 /* type, class, ttl, rdlength after the owner name */
/* Compression pointers followed while reading one name; a loop hits this quickly. */
#define DNS_MAX_POINTERS 64
#define DNS_WEIGHT_MAX 10000u /* the static config's limit, kept for DNS endpoints too */
#define DNS_TIER_MAX 127u

static const char *type_name(uint16_t t) {
    switch (t) {
    case DNS_T_A:
        return "A";
    case DNS_T_AAAA:
        return "AAAA";
    case DNS_T_SRV:
        return "SRV";
    case DNS_T_CNAME:
        return "CNAME";
    case DNS_T_SOA:
        return "SOA";
    }
    return "other";
}

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t rd32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Reads the name at *off (RFC 1035 4.1.4 compression allowed) as lower-case text without
 * the trailing dot, the root as "". On success *off is just past the name in the message
 * (not past the bytes a pointer leads to). Bytes that cannot appear in a host name become
 * '?', so such a name matches nothing rather than failing the whole answer. */
static int read_name(const uint8_t *buf, size_t len, size_t *off, char out[PF_DNS_NAME_MAX],
                     pf_error *err) {
    size_t pos = *off, o = 0, end = 0;
    bool jumped = false;
    unsigned pointers = 0;
    for (;;) {
        if (pos >= len)
            return pf_fail(err, PF_DNS_EBADRESP, "name runs past the end of the message");
        uint8_t n = buf[pos];
        if ((n & 0xc0) == 0xc0) {
            if (pos + 1 >= len)
                return pf_fail(err, PF_DNS_EBADRESP, "compression pointer cut off");
            size_t target = ((size_t)(n & 0x3f) << 8) | buf[pos + 1];
            if (!jumped)
                end = pos + 2;
            jumped = true;
            if (++pointers > DNS_MAX_POINTERS || target >= len)
                return pf_fail(err, PF_DNS_EBADRESP,
                               target >= len ? "compression pointer past the end of the message"
                                             : "compression pointer loop");
            pos = target;
            continue;
        }
        if (n & 0xc0)
            return pf_fail(err, PF_DNS_EBADRESP, "bad label type 0x%02x", n & 0xc0);
        if (n == 0) {
            if (!jumped)
                end = pos + 1;
            break;
        }
        if (pos + 1 + n > len)
            return pf_fail(err, PF_DNS_EBADRESP, "label runs past the end of the message");
        /* room for a '.', the label and the NUL */
        if (o + (o ? 1 : 0) + n + 1 > PF_DNS_NAME_MAX)
            return pf_fail(err, PF_DNS_EBADRESP, "name longer than 255 bytes");
        if (o)
            out[o++] = '.';
        for (size_t i = 0; i < n; i++) {
            char c = (char)buf[pos + 1 + i];
            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
                c = '?';
            out[o++] = c;
        }
        pos += 1 + (size_t)n;
    }
    out[o] = '\0';
    *off = end;
    return PF_DNS_OK;
}

/* One resource record's fixed part, with its data bounds checked. */
typedef struct rr {
    char owner[PF_DNS_NAME_MAX];
    uint16_t type, class_;
    uint32_t ttl;
    size_t rdata, rdlen; /* offset and length of the data in the message */
} rr;

static int read_rr(const uint8_t *buf, size_t len, size_t *off, rr *r, pf_error *err) {
    int rc = read_name(buf, len, off, r->owner, err);
    if (rc != PF_DNS_OK)
        return rc;
    if (*off + DNS_RR_FIXED > len)
        return pf_fail(err, PF_DNS_EBADRESP, "record cut off after its name");
    const uint8_t *p = buf + *off;
    r->type = rd16(p);
    r->class_ = rd16(p + 2);
    /* RFC 2181 8: a TTL with the top bit set is to be read as zero */
    r->ttl = rd32(p + 4) & 0x80000000u ? 0 : rd32(p + 4);
    r->rdlen = rd16(p + 8);
    r->rdata = *off + DNS_RR_FIXED;
    if (r->rdata + r->rdlen > len)
        return pf_fail(err, PF_DNS_EBADRESP, "%s record data runs past the end of the message",
                       type_name(r->type));
    *off = r->rdata + r->rdlen;
    return PF_DNS_OK;
}

/* A name inside record data must end inside that data. */
static int read_rdata_name(const uint8_t *buf, size_t len, const rr *r, size_t *off,
                           char out[PF_DNS_NAME_MAX], pf_error *err) {
    int rc = read_name(buf, len, off, out, err);
    if (rc == PF_DNS_OK && *off > r->rdata + r->rdlen)
        return pf_fail(err, PF_DNS_EBADRESP, "%s record data shorter than its name",
                       type_name(r->type));
    return rc;
}

static uint32_t min_u32(uint32_t a, uint32_t b) {
    return a < b ? a : b;
}

static int compare_srv(const void *a, const void *b) {
    const dns_srv *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    int by_target = strcmp(x->target, y->target);
    if (by_target)
        return by_target;
    return (x->port > y->port) - (x->port < y->port);
}

static int compare_glue(const void *a, const void *b) {
    const dns_glue *x = a, *y = b;
    int by_name = strcmp(x->name, y->name);
    if (by_name)
        return by_name;
    if (x->addr.family != y->addr.family)
        return x->addr.family < y->addr.family ? -1 : 1;
    return memcmp(x->addr.bytes, y->addr.bytes, sizeof x->addr.bytes);
}

/* Appends s to the answer's names; *at is where it starts. */
static int intern(dns_answer *a, const char *s, uint32_t *at, pf_error *err) {
    size_t n = strlen(s) + 1;
    if (a->names_len + n > a->names_cap) {
        size_t cap = a->names_cap ? a->names_cap * 2 : 512;
        while (cap < a->names_len + n)
            cap *= 2;
        char *grown = realloc(a->names, cap);
        if (!grown)
            return pf_fail(err, PF_DNS_ENOMEM, "out of memory");
        a->names = grown;
        a->names_cap = cap;
    }
    memcpy(a->names + a->names_len, s, n);
    *at = (uint32_t)a->names_len;
    a->names_len += n;
    return PF_DNS_OK;
}

/* Whether name is an SRV target; *at is its place in names. */
static bool srv_target_at(const dns_answer *a, const char *name, uint32_t *at) {
    for (size_t i = 0; i < a->srv_count; i++) {
        if (strcmp(a->names + a->srvs[i].target_at, name) == 0) {
            *at = a->srvs[i].target_at;
            return true;
        }
    }
    return false;
}

void dns_answer_clear(dns_answer *a) {
    free(a->addrs);
    free(a->srvs);
    free(a->glue);
    free(a->names);
    memset(a, 0, sizeof *a);
    a->ttl = DNS_TTL_UNKNOWN;
}

/* Section walks share this: the offsets where each section starts. */
typedef struct sections {
    size_t an, ns, ar, end;
    uint16_t ancount, nscount, arcount;
} sections;

static int skip_records(const uint8_t *buf, size_t len, size_t *off, unsigned count,
                        pf_error *err) {
    rr r;
    for (unsigned i = 0; i < count; i++) {
        int rc = read_rr(buf, len, off, &r, err);
        if (rc != PF_DNS_OK)
            return rc;
    }
    return PF_DNS_OK;
}

/* Follows CNAMEs from the question's name (RFC 1034 3.6.2); the end of the chain owns the
 * records we want. Each CNAME's TTL bounds the answer's. */
static int follow_cnames(const uint8_t *buf, size_t len, const sections *s, dns_answer *out,
                         pf_error *err) {
    char target[PF_DNS_NAME_MAX];
    memcpy(out->owner, out->qname, sizeof out->owner);
    for (unsigned hops = 0;; hops++) {
        bool moved = false;
        size_t off = s->an;
        for (unsigned i = 0; i < s->ancount && !moved; i++) {
            rr r;
            int rc = read_rr(buf, len, &off, &r, err);
            if (rc != PF_DNS_OK)
                return rc;
            if (r.type != DNS_T_CNAME || r.class_ != DNS_CLASS_IN ||
                strcmp(r.owner, out->owner) != 0)
                continue;
            size_t d = r.rdata;
            rc = read_rdata_name(buf, len, &r, &d, target, err);
            if (rc != PF_DNS_OK)
                return rc;
            if (hops >= DNS_MAX_CNAME_HOPS)
                return pf_fail(err, PF_DNS_EBADRESP, "CNAME chain from %s longer than %d (a loop?)",
                               out->qname, DNS_MAX_CNAME_HOPS);
            memcpy(out->owner, target, sizeof out->owner);
            out->ttl = min_u32(out->ttl, r.ttl);
            moved = true;
        }
        if (!moved)
            return PF_DNS_OK;
    }
}

static int collect_answers(const uint8_t *buf, size_t len, const sections *s, dns_answer *out,
                           pf_error *err) {
    size_t cap = s->ancount < PF_DNS_MAX_RECORDS ? s->ancount : PF_DNS_MAX_RECORDS;
    if (cap == 0)
        return PF_DNS_OK;
    if (out->qtype == DNS_T_SRV)
        out->srvs = calloc(cap, sizeof *out->srvs);
    else
        out->addrs = calloc(cap, sizeof *out->addrs);
    if (!out->srvs && !out->addrs)
        return pf_fail(err, PF_DNS_ENOMEM, "out of memory");
    uint32_t ttl = out->ttl;
    size_t off = s->an;
    for (unsigned i = 0; i < s->ancount; i++) {
        rr r;
        int rc = read_rr(buf, len, &off, &r, err);
        if (rc != PF_DNS_OK)
            return rc;
        /* Other types (the CNAMEs, RRSIGs, stray records) and other owners are not ours. */
        if (r.type != out->qtype || r.class_ != DNS_CLASS_IN || strcmp(r.owner, out->owner) != 0)
            continue;
        size_t have = out->qtype == DNS_T_SRV ? out->srv_count : out->addr_count;
        if (have == cap) {
            out->dropped++;
            continue;
        }
        ttl = min_u32(ttl, r.ttl);
        if (r.type == DNS_T_A || r.type == DNS_T_AAAA) {
            size_t want = r.type == DNS_T_A ? 4 : 16;
            if (r.rdlen != want)
                return pf_fail(err, PF_DNS_EBADRESP, "%s record of %s has %zu data bytes, not %zu",
                               type_name(r.type), r.owner, r.rdlen, want);
            dns_addr *a = &out->addrs[out->addr_count++];
            a->family = r.type == DNS_T_A ? AF_INET : AF_INET6;
            memcpy(a->bytes, buf + r.rdata, want);
            continue;
        }
        /* RFC 2782: priority, weight, port, then the target name */
        if (r.rdlen < 7)
            return pf_fail(err, PF_DNS_EBADRESP,
                           "SRV record of %s has %zu data bytes, fewer than 7", r.owner, r.rdlen);
        char target[PF_DNS_NAME_MAX];
        dns_srv *v = &out->srvs[out->srv_count];
        v->priority = rd16(buf + r.rdata);
        v->weight = rd16(buf + r.rdata + 2);
        v->port = rd16(buf + r.rdata + 4);
        size_t d = r.rdata + 6;
        if ((rc = read_rdata_name(buf, len, &r, &d, target, err)) != PF_DNS_OK ||
            (rc = intern(out, target, &v->target_at, err)) != PF_DNS_OK)
            return rc;
        out->srv_count++;
    }
    out->ttl = ttl;
    return PF_DNS_OK;
}

/* RFC 2308 5: a negative answer is cached for min(SOA TTL, SOA MINIMUM). */
static int negative_ttl(const uint8_t *buf, size_t len, const sections *s, dns_answer *out,
                        pf_error *err) {
    char name[PF_DNS_NAME_MAX];
    size_t off = s->ns;
    for (unsigned i = 0; i < s->nscount; i++) {
        rr r;
        int rc = read_rr(buf, len, &off, &r, err);
        if (rc != PF_DNS_OK)
            return rc;
        if (r.type != DNS_T_SOA || r.class_ != DNS_CLASS_IN)
            continue;
        size_t d = r.rdata;
        if ((rc = read_rdata_name(buf, len, &r, &d, name, err)) != PF_DNS_OK ||
            (rc = read_rdata_name(buf, len, &r, &d, name, err)) != PF_DNS_OK)
            return rc;
        if (d + 20 > r.rdata + r.rdlen)
            return pf_fail(err, PF_DNS_EBADRESP, "SOA record data cut off");
        out->ttl = min_u32(r.ttl, rd32(buf + d + 16));
        return PF_DNS_OK;
    }
    return PF_DNS_OK;
}

/* The additional section's addresses of SRV targets (RFC 2782: "Additional section"), so
 * that most SRV answers need no further queries. */
static int collect_glue(const uint8_t *buf, size_t len, const sections *s, dns_answer *out,
                        pf_error *err) {
    size_t cap = s->arcount < PF_DNS_MAX_RECORDS ? s->arcount : PF_DNS_MAX_RECORDS;
    if (cap == 0 || out->srv_count == 0)
        return PF_DNS_OK;
    out->glue = calloc(cap, sizeof *out->glue);
    if (!out->glue)
        return pf_fail(err, PF_DNS_ENOMEM, "out of memory");
    size_t off = s->ar;
    for (unsigned i = 0; i < s->arcount && out->glue_count < cap; i++) {
        rr r;
        int rc = read_rr(buf, len, &off, &r, err);
        if (rc != PF_DNS_OK)
            return rc;
        if ((r.type != DNS_T_A && r.type != DNS_T_AAAA) || r.class_ != DNS_CLASS_IN)
            continue;
        size_t want = r.type == DNS_T_A ? 4 : 16;
        uint32_t at;
        if (r.rdlen != want || !srv_target_at(out, r.owner, &at))
            continue; /* glue is a hint: a bad one is skipped, the target is asked directly */
        dns_glue *g = &out->glue[out->glue_count++];
        g->name_at = at;
        g->addr.family = r.type == DNS_T_A ? AF_INET : AF_INET6;
        memcpy(g->addr.bytes, buf + r.rdata, want);
        out->ttl = min_u32(out->ttl, r.ttl);
    }
    return PF_DNS_OK;
}

int dns_answer_parse(const uint8_t *buf, size_t len, uint16_t qtype, dns_answer *out,
                     pf_error *err) {
    memset(out, 0, sizeof *out);
    out->ttl = DNS_TTL_UNKNOWN;
    out->qtype = qtype;
    out->status = PF_DNS_EBADRESP;
    if (!buf || len < DNS_HEADER_LEN)
        return pf_fail(err, PF_DNS_EBADRESP, "%zu bytes, shorter than a DNS header", len);
    uint16_t flags = rd16(buf + 2);
    if (!(flags & 0x8000))
        return pf_fail(err, PF_DNS_EBADRESP, "not a response (QR bit clear)");
    /* c-ares asks again over TCP on TC, so a truncated answer here is a broken server */
    if (flags & 0x0200)
        return pf_fail(err, PF_DNS_EBADRESP, "truncated answer (TC bit set)");
    unsigned rcode = flags & 0x000f;
    if (rcode == 2)
        return pf_fail(err, PF_DNS_ESERVFAIL, "server failure (SERVFAIL)");
    if (rcode == 5)
        return pf_fail(err, PF_DNS_EREFUSED, "query refused (REFUSED)");
    if (rcode != 0 && rcode != 3)
        return pf_fail(err, PF_DNS_EBADRESP, "error rcode %u", rcode);
    if (rd16(buf + 4) != 1)
        return pf_fail(err, PF_DNS_EBADRESP, "%u questions, expected 1", rd16(buf + 4));
    sections s = {.ancount = rd16(buf + 6), .nscount = rd16(buf + 8), .arcount = rd16(buf + 10)};

    size_t off = DNS_HEADER_LEN;
    int rc = read_name(buf, len, &off, out->qname, err);
    if (rc != PF_DNS_OK)
        return rc;
    if (off + 4 > len)
        return pf_fail(err, PF_DNS_EBADRESP, "question cut off");
    if (rd16(buf + off) != qtype)
        return pf_fail(err, PF_DNS_EBADRESP, "answer to a %s question, expected %s",
                       type_name(rd16(buf + off)), type_name(qtype));
    s.an = off + 4;
    /* Walk every section once up front: a cut-off record anywhere makes the answer
     * malformed, whichever section we would have read it for. */
    s.ns = s.an;
    if ((rc = skip_records(buf, len, &s.ns, s.ancount, err)) != PF_DNS_OK)
        return rc;
    s.ar = s.ns;
    if ((rc = skip_records(buf, len, &s.ar, s.nscount, err)) != PF_DNS_OK)
        return rc;
    s.end = s.ar;
    if ((rc = skip_records(buf, len, &s.end, s.arcount, err)) != PF_DNS_OK)
        return rc;

    if (rcode == 3) {
        out->status = PF_DNS_ENXDOMAIN;
        rc = negative_ttl(buf, len, &s, out, err);
        return rc != PF_DNS_OK ? rc : pf_fail(err, PF_DNS_ENXDOMAIN, "no such name (NXDOMAIN)");
    }
    if ((rc = follow_cnames(buf, len, &s, out, err)) != PF_DNS_OK ||
        (rc = collect_answers(buf, len, &s, out, err)) != PF_DNS_OK)
        return rc;
    if (out->addr_count == 0 && out->srv_count == 0) {
        out->status = PF_DNS_ENODATA;
        out->ttl = DNS_TTL_UNKNOWN; /* CNAME TTLs say nothing about how long "none" holds */
        rc = negative_ttl(buf, len, &s, out, err);
        return rc != PF_DNS_OK ? rc
                               : pf_fail(err, PF_DNS_ENODATA, "no %s records", type_name(qtype));
    }
    if (out->srv_count) {
        if ((rc = collect_glue(buf, len, &s, out, err)) != PF_DNS_OK)
            return rc;
        /* names stopped moving: offsets become pointers, and the order can be set */
        for (size_t i = 0; i < out->srv_count; i++)
            out->srvs[i].target = out->names + out->srvs[i].target_at;
        for (size_t i = 0; i < out->glue_count; i++)
            out->glue[i].name = out->names + out->glue[i].name_at;
        qsort(out->srvs, out->srv_count, sizeof *out->srvs, compare_srv);
        /* without an additional section glue is NULL, which qsort may not get even for
         * zero elements (C11 7.22.5p1) */
        if (out->glue_count > 1)
            qsort(out->glue, out->glue_count, sizeof *out->glue, compare_glue);
    }
    out->status = PF_DNS_OK;
    return PF_DNS_OK;
}

const dns_glue *dns_glue_find(const dns_answer *a, const char *name, size_t *count) {
    size_t lo = 0, hi = a->glue_count;
    *count = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(a->glue[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t n = 0;
    while (lo + n < a->glue_count && strcmp(a->glue[lo + n].name, name) == 0)
        n++;
    *count = n;
    return n ? &a->glue[lo] : NULL;
}

/* ---- records to endpoints ----------------------------------------------------------- */

void dns_sockaddr(const dns_addr *addr, uint16_t port, pf_sockaddr *out) {
    char ip[INET6_ADDRSTRLEN];
    memset(out, 0, sizeof *out);
    if (addr->family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        memcpy(&s6->sin6_addr, addr->bytes, 16);
        out->len = sizeof *s6;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        snprintf(out->text, sizeof out->text, "[%s]:%u", ip, (unsigned)port);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        memcpy(&s4->sin_addr, addr->bytes, 4);
        out->len = sizeof *s4;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        snprintf(out->text, sizeof out->text, "%s:%u", ip, (unsigned)port);
    }
}

static void put_endpoint(pf_endpoint *ep, const dns_addr *addr, uint16_t port, uint32_t weight,
                         uint32_t tier) {
    memset(ep, 0, sizeof *ep);
    dns_sockaddr(addr, port, &ep->addr);
    ep->weight = weight;
    ep->priority = tier;
    ep->healthy = true;
}

size_t dns_endpoints_from_addrs(const dns_addr *addrs, size_t count, uint16_t port,
                                pf_endpoint *out, size_t *n, size_t cap) {
    size_t dropped = 0;
    for (size_t i = 0; i < count; i++) {
        if (*n == cap) {
            dropped++;
            continue;
        }
        put_endpoint(&out[(*n)++], &addrs[i], port, 1, 0);
    }
    return dropped;
}

size_t dns_endpoints_from_srv(const dns_answer *srv, dns_target_fn lookup, void *ctx,
                              pf_endpoint *out, size_t cap, dns_build_report *report) {
    size_t n = 0;
    uint32_t tier = 0;
    bool tier_used = false;
    memset(report, 0, sizeof *report);
    /* srvs are sorted by priority, so tiers are dense: a priority value whose records all
     * failed to resolve does not leave a hole. */
    for (size_t i = 0; i < srv->srv_count; i++) {
        const dns_srv *r = &srv->srvs[i];
        if (i > 0 && r->priority != srv->srvs[i - 1].priority && tier_used) {
            tier = tier < DNS_TIER_MAX ? tier + 1 : DNS_TIER_MAX;
            tier_used = false;
        }
        if (!r->target[0]) {
            report->no_service++;
            continue;
        }
        if (r->port == 0) {
            report->port_zero++;
            continue;
        }
        /* RFC 2782 gives weight 0 "a very small chance"; our weights start at 1. */
        uint32_t weight = r->weight == 0               ? 1
                          : r->weight > DNS_WEIGHT_MAX ? DNS_WEIGHT_MAX
                                                       : r->weight;
        size_t glue_count = 0, before = n;
        const dns_glue *glue = dns_glue_find(srv, r->target, &glue_count);
        const dns_answer *found[2] = {NULL, NULL};
        size_t answers = !glue_count && lookup ? lookup(ctx, r->target, found) : 0;
        size_t addresses = glue_count;
        for (size_t k = 0; k < glue_count; k++) {
            if (n == cap)
                report->dropped++;
            else
                put_endpoint(&out[n++], &glue[k].addr, r->port, weight, tier);
        }
        for (size_t j = 0; j < answers && j < 2; j++) {
            addresses += found[j]->addr_count;
            for (size_t k = 0; k < found[j]->addr_count; k++) {
                if (n == cap)
                    report->dropped++;
                else
                    put_endpoint(&out[n++], &found[j]->addrs[k], r->port, weight, tier);
            }
        }
        if (!addresses)
            report->unresolved++;
        tier_used = tier_used || n > before;
    }
    return n;
}

/* ---- scheduling --------------------------------------------------------------------- */

uint64_t dns_refresh_after_ms(uint32_t ttl_s, uint64_t min_ms, uint64_t max_ms) {
    if (ttl_s == DNS_TTL_UNKNOWN)
        return min_ms;
    uint64_t ms = (uint64_t)ttl_s * 1000u;
    if (ms < min_ms)
        return min_ms;
    return ms > max_ms ? max_ms : ms;
}

uint64_t dns_backoff_ms(unsigned failures, uint64_t min_ms, uint64_t max_ms, uint64_t random) {
    uint64_t d = min_ms ? min_ms : 1;
    for (unsigned i = 1; i < failures && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    uint64_t half = d / 2;
    return d - half + random % (half + 1); /* in [d - half, d] */
}

uint64_t dns_qstate_update(dns_qstate *s, int status, uint32_t ttl_s, uint64_t now_ms,
                           uint64_t min_ms, uint64_t max_ms, uint64_t random) {
    s->done = true;
    if (status == PF_DNS_OK) {
        s->answered = true;
        s->has_records = true;
        s->negative = false;
        s->failures = 0;
        return dns_refresh_after_ms(ttl_s, min_ms, max_ms);
    }
    if (status == PF_DNS_ENODATA || status == PF_DNS_ENXDOMAIN) {
        s->answered = true;
        if (!s->negative) {
            s->negative = true;
            s->negative_since_ms = now_ms;
        }
        s->failures = 0;
        return dns_refresh_after_ms(ttl_s, min_ms, max_ms);
    }
    s->failures++;
    return dns_backoff_ms(s->failures, min_ms, max_ms, random);
}

bool dns_qstate_in_effect(const dns_qstate *s, uint64_t hold_ms, uint64_t now_ms,
                          uint64_t *until_ms) {
    *until_ms = 0;
    if (!s->has_records)
        return false;
    if (!s->negative)
        return true;
    uint64_t end = s->negative_since_ms + hold_ms;
    if (now_ms >= end)
        return false;
    *until_ms = end;
    return true;
}
