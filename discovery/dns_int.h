/* Private to discovery/dns*.c and test/unit/test_dns.c: the pure steps of DNS discovery.
 *
 * dns_answer.c turns raw answer bytes into records and records into endpoints; the
 * scheduling helpers below decide when to ask again and whether a set survives a negative
 * answer. None of it touches c-ares, libevent or a clock, so the unit tests drive it with
 * hand-built answers and made-up times. */
#ifndef PF_DISCOVERY_DNS_INT_H
#define PF_DISCOVERY_DNS_INT_H

#include "discovery/dns.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 1035 3.2.2 and RFC 3596 / 2782 type numbers, the only ones we read. */
#define DNS_T_A 1
#define DNS_T_CNAME 5
#define DNS_T_SOA 6
#define DNS_T_AAAA 28
#define DNS_T_SRV 33
#define DNS_CLASS_IN 1
/* Longer chains are loops or abuse; resolvers stop around 8-16 too. */
#define DNS_MAX_CNAME_HOPS 16
/* A negative answer without an SOA does not say how long it holds. */
#define DNS_TTL_UNKNOWN UINT32_MAX

typedef struct dns_addr {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t bytes[16];
} dns_addr;

typedef struct dns_srv {
    uint16_t priority, weight, port;
    const char *target; /* in the answer's names: lower-case, no trailing dot; "" for "." */
    uint32_t target_at; /* the same as an offset, while parsing */
} dns_srv;

/* An address record from the additional section, for an SRV target. */
typedef struct dns_glue {
    const char *name; /* the target's string in the answer's names */
    uint32_t name_at;
    dns_addr addr;
} dns_glue;

/* One parsed answer. Owns its arrays and the text of its names (dns_answer_clear frees
 * them); names are kept once each, packed, since a 500-target SRV answer would otherwise
 * carry 250 KB of fixed-size name buffers. */
typedef struct dns_answer {
    int status; /* PF_DNS_OK, PF_DNS_ENODATA or PF_DNS_ENXDOMAIN */
    uint16_t qtype;
    char qname[PF_DNS_NAME_MAX]; /* as asked, after search-domain expansion */
    char owner[PF_DNS_NAME_MAX]; /* end of the CNAME chain (qname without one) */
    /* Seconds: the minimum over the records used, the CNAMEs leading to them and the glue;
     * for a negative answer the SOA's (RFC 2308 5), or DNS_TTL_UNKNOWN. */
    uint32_t ttl;
    dns_addr *addrs; /* A/AAAA of `owner`, in answer order */
    size_t addr_count;
    dns_srv *srvs; /* sorted by priority, then target, then port */
    size_t srv_count;
    dns_glue *glue; /* sorted by name; only names that are targets of srvs */
    size_t glue_count;
    char *names; /* NUL-terminated target names, one after the other */
    size_t names_len, names_cap;
    size_t dropped; /* records over PF_DNS_MAX_RECORDS, left out */
} dns_answer;

/* Parses a DNS message answering a question of type qtype (DNS_T_A, _AAAA or _SRV).
 * Returns PF_DNS_OK (records found), PF_DNS_ENODATA / PF_DNS_ENXDOMAIN (with out->ttl from
 * the SOA when there is one), PF_DNS_ESERVFAIL / PF_DNS_EREFUSED (rcode), PF_DNS_EBADRESP
 * with the reason in err (malformed, truncated, wrong question), or PF_DNS_ENOMEM. `out` is
 * always initialised and must be cleared by the caller. Pure; any thread. */
int dns_answer_parse(const uint8_t *buf, size_t len, uint16_t qtype, dns_answer *out,
                     pf_error *err);
void dns_answer_clear(dns_answer *a);
/* The glue of `name` in a: a pointer to the first of *count entries, or NULL. */
const dns_glue *dns_glue_find(const dns_answer *a, const char *name, size_t *count);

/* "ip:port" as a pf_sockaddr (text canonical, as config_parse_sockaddr writes it). */
void dns_sockaddr(const dns_addr *addr, uint16_t port, pf_sockaddr *out);

/* What dns_endpoints_from_srv left out, for the log. */
typedef struct dns_build_report {
    size_t port_zero;  /* SRV records with port 0 */
    size_t no_service; /* SRV target "." (RFC 2782: the service is not available) */
    size_t unresolved; /* targets without an address (yet) */
    size_t dropped;    /* endpoints over the cap */
} dns_build_report;

/* Appends one healthy endpoint per address with `port`, weight 1, tier 0, at most cap in
 * total (*n counts what is in out). Returns how many did not fit. */
size_t dns_endpoints_from_addrs(const dns_addr *addrs, size_t count, uint16_t port,
                                pf_endpoint *out, size_t *n, size_t cap);

/* The addresses of an SRV target that has no glue: up to two answers (A, AAAA) written to
 * out; returns how many. */
typedef size_t (*dns_target_fn)(void *ctx, const char *target, const dns_answer *out[2]);

/* SRV records to endpoints: each target's addresses (glue first, else lookup) with the
 * record's port; SRV weight becomes the weight (0 -> 1, above 10000 -> 10000) and the SRV
 * priority a dense failover tier (lowest priority value = tier 0). Returns the count. With
 * cap 0 (out may be NULL) it only counts: report->dropped is then the number there is. */
size_t dns_endpoints_from_srv(const dns_answer *srv, dns_target_fn lookup, void *ctx,
                              pf_endpoint *out, size_t cap, dns_build_report *report);

/* ---- scheduling --------------------------------------------------------------------- */

/* The next refresh after an answer: the TTL clamped to [min, max] (TTL 0 or unknown: min). */
uint64_t dns_refresh_after_ms(uint32_t ttl_s, uint64_t min_ms, uint64_t max_ms);

/* The wait after `failures` (>= 1) failed attempts in a row: d = min * 2^(failures-1)
 * capped at max, then a uniform pick in [d/2, d] from `random` so that many sidecars
 * restarted together do not retry in lock step. */
uint64_t dns_backoff_ms(unsigned failures, uint64_t min_ms, uint64_t max_ms, uint64_t random);

/* Where one query stands; folded by dns_qstate_update. */
typedef struct dns_qstate {
    bool done;                  /* the first attempt has finished, whatever its outcome */
    bool answered;              /* an answer (records, NODATA or NXDOMAIN) arrived at least once */
    bool has_records;           /* the last positive answer is kept */
    bool negative;              /* the latest answer was NODATA or NXDOMAIN */
    unsigned failures;          /* failed attempts (no answer) in a row */
    uint64_t negative_since_ms; /* when negative: the first negative answer of the run */
} dns_qstate;

/* Folds the outcome of one attempt (PF_DNS_OK with records, a negative answer, or an
 * error) at now_ms and returns the delay until the next attempt. A failure changes only
 * the failure count: it never drops records and never restarts a hold. */
uint64_t dns_qstate_update(dns_qstate *s, int status, uint32_t ttl_s, uint64_t now_ms,
                           uint64_t min_ms, uint64_t max_ms, uint64_t random);

/* Whether the last positive answer still counts at now_ms: always while answers are
 * positive (or only failures came since), and for hold_ms after the first of a run of
 * negative answers. While holding, *until_ms is when the hold ends (else 0). */
bool dns_qstate_in_effect(const dns_qstate *s, uint64_t hold_ms, uint64_t now_ms,
                          uint64_t *until_ms);

#endif
