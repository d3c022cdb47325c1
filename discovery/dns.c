/* DNS discovery at run time: one c-ares channel on the main loop, shared queries, and the
 * clusters that turn their answers into published endpoint sets.
 *
 * Ownership: pf_dns owns every query and cluster. A query (name, type) is shared by the
 * clusters that ask for it and counted by references; SRV clusters also hold queries for
 * targets the answer gave no address for. Everything here runs on the main thread: c-ares
 * calls back from ares_process_fd, which only our libevent callbacks call. Workers see
 * nothing of this but the sets published into the slots. */
#include "core/random.h"
#include "discovery/dns_int.h"
#include "core/log.h"
#include "core/time.h"

#include <ares.h>
#include <arpa/nameser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* c-ares status -> ours, for failures that come without an answer to parse. */
static int from_ares(int status) {
    switch (status) {
    case ARES_SUCCESS:
        return PF_DNS_OK;
    case ARES_ENODATA:
        return PF_DNS_ENODATA;
    case ARES_ENOTFOUND:
        return PF_DNS_ENXDOMAIN;
    case ARES_ETIMEOUT:
        return PF_DNS_ETIMEOUT;
    case ARES_ESERVFAIL:
        return PF_DNS_ESERVFAIL;
    case ARES_EREFUSED:
        return PF_DNS_EREFUSED;
    case ARES_ECONNREFUSED:
        return PF_DNS_ECONNREFUSED;
    case ARES_EBADRESP:
    case ARES_EFORMERR:
    case ARES_EBADNAME:
        return PF_DNS_EBADRESP;
    case ARES_ENOMEM:
        return PF_DNS_ENOMEM;
    }
    return PF_DNS_EOTHER;
}

static const char *const status_text[PF_DNS_STATUS_COUNT] = {
    [PF_DNS_OK] = "success",
    [PF_DNS_ENODATA] = "the name has no records of this type",
    [PF_DNS_ENXDOMAIN] = "no such name (NXDOMAIN)",
    [PF_DNS_ETIMEOUT] = "no answer from the DNS servers in time",
    [PF_DNS_ESERVFAIL] = "the DNS server failed (SERVFAIL)",
    [PF_DNS_EREFUSED] = "the DNS server refused the query (REFUSED)",
    [PF_DNS_ECONNREFUSED] = "connection to the DNS server refused",
    [PF_DNS_EBADRESP] = "malformed answer",
    [PF_DNS_ENOMEM] = "out of memory",
    [PF_DNS_EOTHER] = "resolver error",
};

static const char *const status_label[PF_DNS_STATUS_COUNT] = {
    [PF_DNS_OK] = "ok",
    [PF_DNS_ENODATA] = "nodata",
    [PF_DNS_ENXDOMAIN] = "nxdomain",
    [PF_DNS_ETIMEOUT] = "timeout",
    [PF_DNS_ESERVFAIL] = "servfail",
    [PF_DNS_EREFUSED] = "refused",
    [PF_DNS_ECONNREFUSED] = "connrefused",
    [PF_DNS_EBADRESP] = "malformed",
    [PF_DNS_ENOMEM] = "nomem",
    [PF_DNS_EOTHER] = "error",
};

const char *discovery_dns_strerror(int status) {
    if (status >= 0 && status < PF_DNS_STATUS_COUNT)
        return status_text[status];
    return "unknown DNS status";
}

const char *discovery_dns_status_label(int status) {
    if (status >= 0 && status < PF_DNS_STATUS_COUNT)
        return status_label[status];
    return "error";
}

static const char *qtype_name(uint16_t qtype) {
    return qtype == DNS_T_A ? "A" : qtype == DNS_T_AAAA ? "AAAA" : "SRV";
}

typedef struct dns_sock {
    ares_socket_t fd;
    struct event *ev;
    struct dns_sock *next;
} dns_sock;

typedef struct dns_query {
    pf_dns *dns;
    char name[PF_DNS_NAME_MAX];
    uint16_t qtype;
    unsigned refs;
    uint64_t min_refresh_ms, max_refresh_ms; /* the most eager of the clusters sharing it */
    struct event *timer;
    bool in_flight;
    bool dead; /* released while in flight: freed by its callback */
    uint64_t sent_us;
    dns_qstate st;
    dns_answer answer; /* the last positive answer */
    int last_status;   /* -1 before the first attempt ends */
    uint32_t ttl;      /* of the latest answer, positive or negative */
    uint64_t last_answer_ms, last_answer_wall_us;
    uint64_t next_ms; /* when the next attempt is due */
    struct dns_query *next;
} dns_query;

typedef struct dns_cluster {
    pf_dns *dns;
    const pf_config_cluster *cfg;
    pf_endpoint_slot *slot;
    dns_query *base[2]; /* the cluster's own name: A, AAAA, both, or SRV */
    size_t base_count;
    dns_query **targets; /* SRV targets without glue, sorted by (name, type) */
    size_t target_count;
    struct event *eval;       /* deferred rebuild: coalesces answers of one loop turn */
    struct event *hold_timer; /* fires when a hold ends */
    bool published;
    bool answer_pending; /* an answer arrived that is not in a published set yet */
    uint64_t answer_us;  /* when the first such answer arrived */
    uint64_t answer_to_publish_us;
    uint64_t publishes;
    size_t last_count;   /* endpoints in the last set built */
    size_t last_dropped; /* for warning once per change */
    char last_error[PF_ERROR_MAX];
    uint64_t last_error_wall_us;
} dns_cluster;

struct pf_dns {
    struct event_base *base;
    const pf_config *cfg;
    ares_channel channel;
    bool channel_ok;
    bool started, stopping;
    struct event *ares_timer;
    dns_sock *socks;
    dns_query *queries;
    dns_cluster **clusters;
    size_t cluster_count;
    uint64_t rng[2];
    uint64_t started_ms;
    char servers[PF_DNS_MAX_RESOLVERS * (PF_ADDRTEXT_MAX + 1)]; /* for messages */
    pf_counter *results[PF_DNS_STATUS_COUNT];
    pf_histogram *latency;
};

static uint64_t dns_random(pf_dns *dns) {
    return pf_xorshift128p(dns->rng);
}

/* ---- c-ares on libevent --------------------------------------------------------------- */

static void arm_ares_timer(pf_dns *dns) {
    struct timeval tv, *tvp;
    if (!dns->channel_ok)
        return;
    tvp = ares_timeout(dns->channel, NULL, &tv);
    if (tvp)
        evtimer_add(dns->ares_timer, tvp);
    else
        evtimer_del(dns->ares_timer);
}

static void on_sock_event(evutil_socket_t fd, short what, void *arg) {
    pf_dns *dns = arg;
    ares_process_fd(dns->channel, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    arm_ares_timer(dns);
}

static void on_ares_timer(evutil_socket_t fd, short what, void *arg) {
    pf_dns *dns = arg;
    ares_process_fd(dns->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_ares_timer(dns);
}

/* c-ares tells us which of its sockets to watch (ARES_OPT_SOCK_STATE_CB); each gets one
 * persistent event. The event running now may be freed here: libevent allows that, and
 * on_sock_event does not touch it after ares_process_fd. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable) {
    pf_dns *dns = data;
    dns_sock **pp = &dns->socks;
    while (*pp && (*pp)->fd != fd)
        pp = &(*pp)->next;
    dns_sock *s = *pp;
    if (!readable && !writable) {
        if (s) {
            *pp = s->next;
            event_free(s->ev);
            free(s);
        }
        return;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) {
            log_error("dns: out of memory watching a resolver socket; its queries will time out");
            return;
        }
        s->fd = fd;
        s->next = dns->socks;
        dns->socks = s;
    } else {
        event_free(s->ev);
    }
    short what = (short)((readable ? EV_READ : 0) | (writable ? EV_WRITE : 0) | EV_PERSIST);
    s->ev = event_new(dns->base, fd, what, on_sock_event, dns);
    if (!s->ev || event_add(s->ev, NULL) != 0)
        log_error("dns: cannot watch a resolver socket fd=%d; its queries will time out", (int)fd);
}

/* ---- queries -------------------------------------------------------------------------- */

static void notify_clusters(pf_dns *dns, dns_query *q, int status, const char *why,
                            uint64_t answer_us);

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen) {
    dns_query *q = arg;
    pf_dns *dns = q->dns;
    uint64_t now_us = pf_now_us();
    q->in_flight = false;
    if (q->dead) {
        dns_answer_clear(&q->answer);
        free(q);
        return;
    }
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED || dns->stopping)
        return;
    if (dns->latency)
        metrics_observe_us(dns->latency, now_us - q->sent_us);

    /* An answer is parsed whenever there is one, so that NXDOMAIN/NODATA carry the SOA's
     * TTL; without one (timeouts, refused connections) c-ares' status is all we have. */
    dns_answer ans = {.ttl = DNS_TTL_UNKNOWN};
    pf_error err = {{0}};
    int rc;
    if (abuf && alen > 0 &&
        (status == ARES_SUCCESS || status == ARES_ENODATA || status == ARES_ENOTFOUND)) {
        rc = dns_answer_parse(abuf, (size_t)alen, q->qtype, &ans, &err);
        if (rc == PF_DNS_EBADRESP) {
            pf_error why = err;
            snprintf(err.msg, sizeof err.msg, "malformed answer: %.400s", why.msg);
        }
    } else {
        rc = from_ares(status);
        if (rc == PF_DNS_ETIMEOUT)
            snprintf(err.msg, sizeof err.msg, "no answer from %.300s (%d timeouts)", dns->servers,
                     timeouts);
        else
            snprintf(err.msg, sizeof err.msg, "%s", discovery_dns_strerror(rc));
    }
    if (rc >= 0 && rc < PF_DNS_STATUS_COUNT && dns->results[rc])
        metrics_inc(dns->results[rc], 1);

    bool was_failing = q->st.failures > 0, was_negative = q->st.negative;
    int previous = q->last_status;
    uint64_t now = now_us / 1000;
    uint64_t delay = dns_qstate_update(&q->st, rc, ans.ttl, now, q->min_refresh_ms,
                                       q->max_refresh_ms, dns_random(dns));
    q->last_status = rc;
    if (rc == PF_DNS_OK || rc == PF_DNS_ENODATA || rc == PF_DNS_ENXDOMAIN) {
        q->ttl = ans.ttl;
        q->last_answer_ms = now;
        q->last_answer_wall_us = pf_wall_us();
        if (was_failing)
            log_info("dns: answers again name=%s type=%s", q->name, qtype_name(q->qtype));
    }
    if (rc == PF_DNS_OK) {
        if (ans.dropped)
            log_warn("dns: answer has more records than pilotfish uses name=%s type=%s used=%u "
                     "dropped=%zu",
                     q->name, qtype_name(q->qtype), PF_DNS_MAX_RECORDS, ans.dropped);
        dns_answer_clear(&q->answer);
        q->answer = ans; /* the arrays move into the query */
    } else {
        dns_answer_clear(&ans);
        if ((rc == PF_DNS_ENODATA || rc == PF_DNS_ENXDOMAIN) && !was_negative && q->st.has_records)
            log_warn("dns: name has no records now; keeping them for the hold time name=%s "
                     "type=%s status=%s",
                     q->name, qtype_name(q->qtype), discovery_dns_status_label(rc));
        else if (rc != PF_DNS_ENODATA && rc != PF_DNS_ENXDOMAIN && rc != previous)
            log_warn("dns: query failed; keeping the last endpoints name=%s type=%s error=\"%s\" "
                     "retry_ms=%llu",
                     q->name, qtype_name(q->qtype), err.msg, (unsigned long long)delay);
        else if (rc != PF_DNS_ENODATA && rc != PF_DNS_ENXDOMAIN)
            log_debug("dns: query failed again name=%s type=%s error=\"%s\" failures=%u", q->name,
                      qtype_name(q->qtype), err.msg, q->st.failures);
    }
    q->next_ms = now + delay;
    struct timeval tv = pf_timeval_ms(delay);
    evtimer_add(q->timer, &tv);
    notify_clusters(dns, q, rc, err.msg, now_us);
}

static void send_query(dns_query *q) {
    pf_dns *dns = q->dns;
    if (q->in_flight || dns->stopping)
        return;
    q->in_flight = true;
    q->sent_us = pf_now_us();
    /* ares_search honours resolv.conf's search domains and ndots; a name ending in "."
     * is absolute. It may call on_answer before it returns. */
    ares_search(dns->channel, q->name, ns_c_in, q->qtype, on_answer, q);
    arm_ares_timer(dns);
}

static void on_query_timer(evutil_socket_t fd, short what, void *arg) {
    send_query(arg);
}

static dns_query *query_acquire(pf_dns *dns, const char *name, uint16_t qtype, uint64_t min_ms,
                                uint64_t max_ms) {
    dns_query *q = dns->queries;
    while (q && (q->qtype != qtype || strcmp(q->name, name) != 0))
        q = q->next;
    if (q) {
        q->refs++;
        if (min_ms < q->min_refresh_ms)
            q->min_refresh_ms = min_ms;
        if (max_ms < q->max_refresh_ms)
            q->max_refresh_ms = max_ms;
        return q;
    }
    q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->timer = evtimer_new(dns->base, on_query_timer, q);
    if (!q->timer) {
        free(q);
        return NULL;
    }
    q->dns = dns;
    snprintf(q->name, sizeof q->name, "%s", name);
    q->qtype = qtype;
    q->refs = 1;
    q->min_refresh_ms = min_ms;
    q->max_refresh_ms = max_ms;
    q->last_status = -1;
    q->ttl = DNS_TTL_UNKNOWN;
    dns_answer_clear(&q->answer);
    q->next = dns->queries;
    dns->queries = q;
    if (dns->started)
        send_query(q);
    return q;
}

static void query_release(dns_query *q) {
    if (!q || --q->refs > 0)
        return;
    pf_dns *dns = q->dns;
    dns_query **pp = &dns->queries;
    while (*pp && *pp != q)
        pp = &(*pp)->next;
    if (*pp)
        *pp = q->next;
    event_free(q->timer);
    q->timer = NULL;
    if (q->in_flight) {
        q->dead = true; /* c-ares still holds it: on_answer frees it */
        return;
    }
    dns_answer_clear(&q->answer);
    free(q);
}

/* ---- clusters ------------------------------------------------------------------------- */

static bool uses(const dns_cluster *c, const dns_query *q) {
    for (size_t i = 0; i < c->base_count; i++)
        if (c->base[i] == q)
            return true;
    for (size_t i = 0; i < c->target_count; i++)
        if (c->targets[i] == q)
            return true;
    return false;
}

static void schedule_eval(dns_cluster *c) {
    struct timeval now = {0, 0};
    evtimer_add(c->eval, &now);
}

static void notify_clusters(pf_dns *dns, dns_query *q, int status, const char *why,
                            uint64_t answer_us) {
    for (size_t i = 0; i < dns->cluster_count; i++) {
        dns_cluster *c = dns->clusters[i];
        if (!uses(c, q))
            continue;
        if (status != PF_DNS_OK && status != PF_DNS_ENODATA && status != PF_DNS_ENXDOMAIN) {
            snprintf(c->last_error, sizeof c->last_error, "%s %s: %.200s", q->name,
                     qtype_name(q->qtype), why);
            c->last_error_wall_us = pf_wall_us();
        } else if (!c->answer_pending) {
            c->answer_pending = true;
            c->answer_us = answer_us;
        }
        schedule_eval(c);
    }
}

static int compare_query_key(const char *name, uint16_t qtype, const dns_query *q) {
    int by_name = strcmp(name, q->name);
    if (by_name)
        return by_name;
    return (qtype > q->qtype) - (qtype < q->qtype);
}

static dns_query *find_target(const dns_cluster *c, const char *name, uint16_t qtype) {
    size_t lo = 0, hi = c->target_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = compare_query_key(name, qtype, c->targets[mid]);
        if (cmp == 0)
            return c->targets[mid];
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Makes the cluster hold exactly the target queries its SRV records need: targets of the
 * records in effect that came without glue, A and AAAA each. New ones are sent at once. */
static int sync_targets(dns_cluster *c, const dns_answer *srv) {
    const char **names = NULL;
    size_t count = 0, want = 0;
    dns_query **next = NULL;
    if (srv && srv->srv_count) {
        names = malloc(srv->srv_count * sizeof *names);
        if (!names)
            return PF_ENOMEM;
        for (size_t i = 0; i < srv->srv_count; i++) {
            size_t glue = 0;
            const dns_srv *r = &srv->srvs[i];
            dns_glue_find(srv, r->target, &glue);
            if (r->target[0] && r->port && !glue)
                names[count++] = r->target;
        }
        qsort(names, count, sizeof *names, compare_names);
        for (size_t i = 0; i < count; i++)
            if (i == 0 || strcmp(names[i], names[want - 1]) != 0)
                names[want++] = names[i];
    }
    if (want) {
        next = calloc(want * 2, sizeof *next);
        if (!next) {
            free(names);
            return PF_ENOMEM;
        }
    }
    const pf_config_cluster_dns *cfg = &c->cfg->dns;
    size_t n = 0;
    for (size_t i = 0; i < want; i++) {
        static const uint16_t types[2] = {DNS_T_A, DNS_T_AAAA}; /* sorted: A < AAAA */
        for (size_t t = 0; t < 2; t++) {
            dns_query *q = find_target(c, names[i], types[t]);
            if (q)
                q->refs++;
            else
                q = query_acquire(c->dns, names[i], types[t], cfg->min_refresh_ms,
                                  cfg->max_refresh_ms);
            if (q)
                next[n++] = q;
        }
    }
    /* references moved to `next`; the old array lets go of its own */
    for (size_t i = 0; i < c->target_count; i++)
        query_release(c->targets[i]);
    free(c->targets);
    free(names);
    c->targets = next;
    c->target_count = n;
    return PF_OK;
}

typedef struct lookup_ctx {
    dns_cluster *c;
    uint64_t now_ms;
    uint64_t hold_until;
} lookup_ctx;

static void note_hold(lookup_ctx *lc, uint64_t until) {
    if (until && (!lc->hold_until || until < lc->hold_until))
        lc->hold_until = until;
}

static bool in_effect(lookup_ctx *lc, const dns_query *q) {
    uint64_t until;
    bool yes = dns_qstate_in_effect(&q->st, lc->c->cfg->dns.hold_ms, lc->now_ms, &until);
    note_hold(lc, until);
    return yes;
}

static size_t lookup_target(void *arg, const char *target, const dns_answer *out[2]) {
    lookup_ctx *lc = arg;
    size_t n = 0;
    static const uint16_t types[2] = {DNS_T_A, DNS_T_AAAA};
    for (size_t t = 0; t < 2; t++) {
        dns_query *q = find_target(lc->c, target, types[t]);
        if (q && in_effect(lc, q))
            out[n++] = &q->answer;
    }
    return n;
}

/* The endpoints of the cluster's queries in effect, in a new array of exactly *n (at most
 * PF_DNS_MAX_RECORDS; *dropped counts the rest). NULL when out of memory. */
static pf_endpoint *build_endpoints(dns_cluster *c, lookup_ctx *lc, size_t *n, size_t *dropped) {
    const pf_config_cluster_dns *cfg = &c->cfg->dns;
    dns_build_report report;
    bool used[2] = {false, false};
    size_t want = 0;
    if (cfg->record == PF_DNS_RECORD_SRV) {
        used[0] = in_effect(lc, c->base[0]);
        if (used[0]) {
            /* a pass without room counts them all as dropped: that is the size */
            dns_endpoints_from_srv(&c->base[0]->answer, lookup_target, lc, NULL, 0, &report);
            want = report.dropped;
        }
    } else {
        for (size_t i = 0; i < c->base_count; i++) {
            used[i] = in_effect(lc, c->base[i]);
            want += used[i] ? c->base[i]->answer.addr_count : 0;
        }
    }
    size_t cap = want < PF_DNS_MAX_RECORDS ? want : PF_DNS_MAX_RECORDS;
    pf_endpoint *eps = malloc((cap ? cap : 1) * sizeof *eps);
    if (!eps)
        return NULL;
    *n = 0;
    *dropped = 0;
    if (cfg->record == PF_DNS_RECORD_SRV && used[0]) {
        *n = dns_endpoints_from_srv(&c->base[0]->answer, lookup_target, lc, eps, cap, &report);
        *dropped = report.dropped;
        if (report.port_zero || report.unresolved || report.no_service)
            log_debug("dns: SRV records left out cluster=%s port_zero=%zu unresolved=%zu "
                      "no_service=%zu",
                      c->cfg->name, report.port_zero, report.unresolved, report.no_service);
    } else if (cfg->record != PF_DNS_RECORD_SRV) {
        for (size_t i = 0; i < c->base_count; i++)
            if (used[i])
                *dropped +=
                    dns_endpoints_from_addrs(c->base[i]->answer.addrs,
                                             c->base[i]->answer.addr_count, cfg->port, eps, n, cap);
    }
    return eps;
}

static bool settled(const dns_cluster *c) {
    for (size_t i = 0; i < c->base_count; i++)
        if (!c->base[i]->st.done)
            return false;
    for (size_t i = 0; i < c->target_count; i++)
        if (!c->targets[i]->st.done)
            return false;
    return true;
}

/* Rebuilds the cluster's set from its queries and publishes it (an equal set publishes
 * nothing). Waits while a query has not finished its first attempt, so that a set is never
 * published half-resolved; before the first publish it also waits for an answer, since
 * failures alone say nothing about the endpoints. */
static void evaluate(dns_cluster *c) {
    pf_dns *dns = c->dns;
    const pf_config_cluster_dns *cfg = &c->cfg->dns;
    lookup_ctx lc = {.c = c, .now_ms = pf_now_ms()};
    if (dns->stopping || !settled(c))
        return;
    if (cfg->record == PF_DNS_RECORD_SRV) {
        const dns_query *srv = c->base[0];
        bool use = in_effect(&lc, srv);
        if (sync_targets(c, use ? &srv->answer : NULL) != PF_OK) {
            log_error("dns: out of memory resolving SRV targets cluster=%s", c->cfg->name);
            return;
        }
        lc.hold_until = 0; /* recomputed below with the targets */
        if (!settled(c))
            return; /* new targets are in flight; their answers evaluate again */
    }
    bool answered = false;
    for (size_t i = 0; i < c->base_count; i++)
        answered = answered || c->base[i]->st.answered;
    if (!c->published && !answered)
        return;

    size_t n = 0, dropped = 0;
    pf_endpoint *eps = build_endpoints(c, &lc, &n, &dropped);
    if (!eps) {
        log_error("dns: out of memory building an endpoint set cluster=%s", c->cfg->name);
        return;
    }
    if (dropped && dropped != c->last_dropped)
        log_warn("dns: more endpoints than pilotfish keeps cluster=%s kept=%u dropped=%zu",
                 c->cfg->name, PF_DNS_MAX_RECORDS, dropped);
    c->last_dropped = dropped;
    if (lc.hold_until) {
        struct timeval tv = pf_timeval_ms(lc.hold_until - lc.now_ms);
        evtimer_add(c->hold_timer, &tv);
    }

    pf_endpoint_set *set = discovery_set_new(eps, n);
    free(eps);
    if (!set) {
        log_error("dns: out of memory building an endpoint set cluster=%s", c->cfg->name);
        return;
    }
    size_t count = set->count;
    bool changed = discovery_slot_publish(c->slot, set);
    if (changed) {
        c->publishes++;
        if (c->answer_pending)
            c->answer_to_publish_us = pf_now_us() - c->answer_us;
        log_info("dns: endpoints changed cluster=%s name=%s record=%s endpoints=%zu "
                 "answer_to_publish_us=%llu",
                 c->cfg->name, cfg->name, config_dns_record_name(cfg->record), count,
                 (unsigned long long)c->answer_to_publish_us);
        if (count == 0 && c->last_count)
            log_warn("dns: no endpoints left cluster=%s name=%s", c->cfg->name, cfg->name);
    }
    c->last_count = count;
    c->published = true;
    c->answer_pending = false;
}

static void on_eval(evutil_socket_t fd, short what, void *arg) {
    evaluate(arg);
}

static void cluster_free(dns_cluster *c) {
    if (!c)
        return;
    for (size_t i = 0; i < c->base_count; i++)
        query_release(c->base[i]);
    for (size_t i = 0; i < c->target_count; i++)
        query_release(c->targets[i]);
    free(c->targets);
    if (c->eval)
        event_free(c->eval);
    if (c->hold_timer)
        event_free(c->hold_timer);
    free(c);
}

/* ---- metrics -------------------------------------------------------------------------- */

/* The oldest of a cluster's own queries' latest answers: every one has answered since. */
static uint64_t last_refresh_ms(const dns_cluster *c, uint64_t *wall_us) {
    uint64_t oldest = 0, wall = 0;
    for (size_t i = 0; i < c->base_count; i++) {
        const dns_query *q = c->base[i];
        if (!q->st.answered) {
            *wall_us = 0;
            return 0;
        }
        if (!oldest || q->last_answer_ms < oldest) {
            oldest = q->last_answer_ms;
            wall = q->last_answer_wall_us;
        }
    }
    *wall_us = wall;
    return oldest;
}

static void emit_refresh_age(void *arg, pf_metric_emit emit, void *emit_ctx) {
    const pf_dns *dns = arg;
    char labels[PF_NAME_MAX + 16];
    uint64_t now = pf_now_ms();
    for (size_t i = 0; i < dns->cluster_count; i++) {
        const dns_cluster *c = dns->clusters[i];
        uint64_t wall, last = last_refresh_ms(c, &wall);
        uint64_t since = last ? last : dns->started_ms;
        snprintf(labels, sizeof labels, "cluster=\"%s\"", c->cfg->name);
        emit(emit_ctx, labels, since && now > since ? (double)(now - since) / 1000.0 : 0.0);
    }
}

static void register_metrics(pf_dns *dns, pf_metrics *m) {
    char labels[64];
    for (int s = 0; s < PF_DNS_STATUS_COUNT; s++) {
        snprintf(labels, sizeof labels, "result=\"%s\"", status_label[s]);
        dns->results[s] = metrics_counter(m, "pilotfish_dns_queries_total",
                                          "DNS queries finished, by result.", labels);
    }
    dns->latency = metrics_histogram(
        m, "pilotfish_dns_refresh_duration_seconds",
        "Time from sending a DNS query to its answer or failure, retries included.", "");
    metrics_gauge_callback(m, "pilotfish_dns_refresh_age_seconds",
                           "Seconds since every DNS query of the cluster last got an answer "
                           "(since start while it never did).",
                           emit_refresh_age, dns);
}

/* ---- life cycle ----------------------------------------------------------------------- */

pf_dns *discovery_dns_new(struct event_base *base, const pf_config *cfg, pf_metrics *metrics,
                          pf_error *err) {
    pf_dns *dns = calloc(1, sizeof *dns);
    if (!dns) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    dns->base = base;
    dns->cfg = cfg;
    if (getrandom(dns->rng, sizeof dns->rng, 0) != sizeof dns->rng ||
        !(dns->rng[0] | dns->rng[1])) {
        dns->rng[0] = 0x9e3779b97f4a7c15ull;
        dns->rng[1] = pf_now_us() | 1;
    }
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        pf_fail(err, PF_EIO, "dns: c-ares init: %s", ares_strerror(rc));
        free(dns);
        return NULL;
    }
    dns->ares_timer = evtimer_new(base, on_ares_timer, dns);
    struct ares_options opts;
    memset(&opts, 0, sizeof opts);
    opts.sock_state_cb = on_sock_state;
    opts.sock_state_cb_data = dns;
    opts.timeout = (int)cfg->dns.timeout_ms;
    opts.tries = (int)cfg->dns.tries;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    rc = dns->ares_timer ? ares_init_options(&dns->channel, &opts, mask) : ARES_ENOMEM;
    if (rc != ARES_SUCCESS) {
        pf_fail(err, PF_EIO, "dns: cannot set up the resolver: %s", ares_strerror(rc));
        discovery_dns_free(dns);
        return NULL;
    }
    dns->channel_ok = true;
    size_t len = 0;
    for (size_t i = 0; i < cfg->dns.resolver_count; i++) {
        int n = snprintf(dns->servers + len, sizeof dns->servers - len, "%s%s", i ? "," : "",
                         cfg->dns.resolvers[i].text);
        if (n > 0 && (size_t)n < sizeof dns->servers - len)
            len += (size_t)n;
    }
    if (cfg->dns.resolver_count) {
        rc = ares_set_servers_ports_csv(dns->channel, dns->servers);
        if (rc != ARES_SUCCESS) {
            pf_fail(err, PF_EINVAL, "dns: resolvers \"%s\": %s", dns->servers, ares_strerror(rc));
            discovery_dns_free(dns);
            return NULL;
        }
    } else {
        snprintf(dns->servers, sizeof dns->servers, "the servers of /etc/resolv.conf");
    }
    register_metrics(dns, metrics);
    return dns;
}

int discovery_dns_add(pf_dns *dns, const pf_config_cluster *cluster, pf_endpoint_slot *slot,
                      pf_error *err) {
    const pf_config_cluster_dns *cfg = &cluster->dns;
    if (!cfg->name[0])
        return pf_fail(err, PF_EINVAL, "cluster %s does not use DNS", cluster->name);
    dns_cluster **grown = realloc(dns->clusters, (dns->cluster_count + 1) * sizeof *grown);
    if (!grown)
        return pf_fail(err, PF_ENOMEM, "out of memory");
    dns->clusters = grown;
    dns_cluster *c = calloc(1, sizeof *c);
    if (!c)
        return pf_fail(err, PF_ENOMEM, "out of memory");
    c->dns = dns;
    c->cfg = cluster;
    c->slot = slot;
    c->eval = evtimer_new(dns->base, on_eval, c);
    c->hold_timer = evtimer_new(dns->base, on_eval, c);
    uint16_t types[2];
    switch (cfg->record) {
    case PF_DNS_RECORD_AAAA:
        types[c->base_count++] = DNS_T_AAAA;
        break;
    case PF_DNS_RECORD_A_AAAA:
        types[c->base_count++] = DNS_T_A;
        types[c->base_count++] = DNS_T_AAAA;
        break;
    case PF_DNS_RECORD_SRV:
        types[c->base_count++] = DNS_T_SRV;
        break;
    default:
        types[c->base_count++] = DNS_T_A;
        break;
    }
    size_t got = 0;
    for (size_t i = 0; i < c->base_count; i++) {
        c->base[i] =
            query_acquire(dns, cfg->name, types[i], cfg->min_refresh_ms, cfg->max_refresh_ms);
        got += c->base[i] != NULL;
    }
    if (!c->eval || !c->hold_timer || got != c->base_count) {
        c->base_count = got;
        cluster_free(c);
        return pf_fail(err, PF_ENOMEM, "out of memory");
    }
    dns->clusters[dns->cluster_count++] = c;
    if (dns->started)
        schedule_eval(c); /* its queries may have finished already (shared, or failed at once) */
    return PF_OK;
}

int discovery_dns_start(pf_dns *dns, pf_error *err) {
    dns->started = true;
    dns->started_ms = pf_now_ms();
    for (size_t i = 0; i < dns->cluster_count; i++)
        log_info("dns: resolving cluster=%s name=%s record=%s servers=\"%s\"",
                 dns->clusters[i]->cfg->name, dns->clusters[i]->cfg->dns.name,
                 config_dns_record_name(dns->clusters[i]->cfg->dns.record), dns->servers);
    for (dns_query *q = dns->queries; q; q = q->next)
        send_query(q);
    return PF_OK;
}

void discovery_dns_stop(pf_dns *dns) {
    if (!dns || dns->stopping)
        return;
    dns->stopping = true;
    if (dns->channel_ok)
        ares_cancel(dns->channel);
    for (dns_query *q = dns->queries; q; q = q->next)
        evtimer_del(q->timer);
    for (size_t i = 0; i < dns->cluster_count; i++) {
        evtimer_del(dns->clusters[i]->eval);
        evtimer_del(dns->clusters[i]->hold_timer);
    }
    if (dns->ares_timer)
        evtimer_del(dns->ares_timer);
}

void discovery_dns_free(pf_dns *dns) {
    if (!dns)
        return;
    discovery_dns_stop(dns);
    for (size_t i = 0; i < dns->cluster_count; i++)
        cluster_free(dns->clusters[i]);
    free(dns->clusters);
    /* Queries still in flight were cancelled by _stop; those released since are freed by
     * their callbacks inside ares_destroy. */
    if (dns->channel_ok)
        ares_destroy(dns->channel);
    while (dns->queries) {
        dns_query *q = dns->queries;
        dns->queries = q->next;
        event_free(q->timer);
        dns_answer_clear(&q->answer);
        free(q);
    }
    while (dns->socks) {
        dns_sock *s = dns->socks;
        dns->socks = s->next;
        event_free(s->ev);
        free(s);
    }
    if (dns->ares_timer)
        event_free(dns->ares_timer);
    ares_library_cleanup();
    free(dns);
}

/* ---- status --------------------------------------------------------------------------- */

int discovery_dns_cluster_status(const pf_dns *dns, const char *cluster,
                                 pf_dns_cluster_status *out) {
    const dns_cluster *c = NULL;
    for (size_t i = 0; dns && i < dns->cluster_count && !c; i++)
        if (strcmp(dns->clusters[i]->cfg->name, cluster) == 0)
            c = dns->clusters[i];
    if (!c)
        return PF_ENOTFOUND;
    const pf_config_cluster_dns *cfg = &c->cfg->dns;
    uint64_t now = pf_now_ms();
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", cfg->name);
    out->record = cfg->record;
    out->port = cfg->port;
    out->ttl = DNS_TTL_UNKNOWN;
    out->query_count = c->base_count;
    for (size_t i = 0; i < c->base_count; i++) {
        const dns_query *q = c->base[i];
        pf_dns_query_status *s = &out->queries[i];
        uint64_t until;
        snprintf(s->name, sizeof s->name, "%s", q->name);
        s->type = qtype_name(q->qtype);
        s->last_status = q->last_status;
        s->ttl = q->ttl;
        s->last_answer_wall_us = q->last_answer_wall_us;
        s->next_refresh_ms = q->in_flight ? -1 : q->next_ms > now ? (int64_t)(q->next_ms - now) : 0;
        s->failures = q->st.failures;
        s->holding = dns_qstate_in_effect(&q->st, cfg->hold_ms, now, &until) && until;
        s->hold_left_ms = s->holding ? until - now : 0;
        if (q->st.answered && q->ttl < out->ttl)
            out->ttl = q->ttl;
    }
    out->target_queries = c->target_count;
    uint64_t last = last_refresh_ms(c, &out->last_refresh_wall_us);
    out->last_refresh_age_ms = last && now > last ? now - last : 0;
    snprintf(out->last_error, sizeof out->last_error, "%s", c->last_error);
    out->last_error_wall_us = c->last_error_wall_us;
    out->answer_to_publish_us = c->answer_to_publish_us;
    out->publishes = c->publishes;
    return PF_OK;
}
