/* Config loading: JSON text (jansson) -> a validated, immutable pf_config.
 * Every check lives here so the rest of pilotfish can trust a pf_config as given. Errors
 * are collected, not returned at the first: whoever fixes a file wants the whole list in
 * one run, each as "<file>: <json path>: <what is wrong>". */
#include "config/config.h"
#include "core/time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A config is a few kilobytes; anything this big is the wrong file, not a config. */
#define CONFIG_FILE_MAX (16u * 1024u * 1024u)

/* The deepest path is "$.listeners[<20 digits>].routes[<20 digits>].match.prefix",
 * well under this, so paths are never cut. */
#define JPATH_MAX 128

/* User text echoed in a message is quoted and capped (see qstr). */
#define QUOTE_MAX 96

/* Accepted ranges; the defaults live in config.h. */
#define HEADER_BYTES_MIN 1024u
#define HEADER_BYTES_MAX (1024u * 1024u)
#define TARGET_BYTES_MIN 64u
#define TARGET_BYTES_MAX 65536u
#define HEADERS_MIN 8u
#define HEADERS_MAX 1024u
#define BUFFER_BYTES_MIN 4096u
#define BUFFER_BYTES_MAX (16u * 1024u * 1024u)
#define WEIGHT_MAX 10000u
#define PRIORITY_MAX 127u
#define MAX_IDLE_PER_ENDPOINT_MAX 100000u
#define RING_HASH_SIZE_MAX 65536u /* points per endpoint; the ring itself is capped in proxy/ */
#define MAGLEV_SIZE_MAX 5000011u  /* a prime; 20 MB of table */

/* Where an address is used decides the hint when someone writes a name instead of an IP. */
typedef enum { ADDR_ANY, ADDR_LISTEN, ADDR_ENDPOINT } addr_use;

static const char *const name_hints[] = {
    [ADDR_ANY] = "use an IP literal such as \"127.0.0.1:8080\" or \"[::1]:8080\"",
    [ADDR_LISTEN] = "listen addresses take IP literals (e.g. \"0.0.0.0:8080\" or \"[::]:8080\")",
    [ADDR_ENDPOINT] = "static endpoints take IP literals (use DNS discovery for names)",
};

static const char *const lb_policy_names[] = {
    [PF_LB_ROUND_ROBIN] = "round_robin",
    [PF_LB_WEIGHTED_ROUND_ROBIN] = "weighted_round_robin",
    [PF_LB_LEAST_REQUEST] = "least_request",
    [PF_LB_LEAST_RESPONSE_TIME] = "least_response_time",
    [PF_LB_RANDOM] = "random",
    [PF_LB_RING_HASH] = "ring_hash",
    [PF_LB_MAGLEV] = "maglev",
};

static const char *const root_keys[] = {
    "admin",    "access_log", "workers", "drain_timeout", "listeners",
    "clusters", "local_zone", "dns",     "kubernetes",    "max_connections"};
static const char *const admin_keys[] = {"address"};
static const char *const listener_keys[] = {
    "name",           "address",      "routes",         "max_header_bytes", "max_target_bytes",
    "max_headers",    "buffer_bytes", "header_timeout", "idle_timeout",     "body_timeout",
    "max_connections"};
static const char *const route_keys[] = {"match", "cluster", "retry", "timeout"};
static const char *const retry_keys[] = {
    "on",      "status_codes",         "max_retries", "per_try_timeout",
    "backoff", "retry_non_idempotent", "buffer_bytes"};
static const char *const retry_on_names[] = {"connect-failure", "reset", "gateway-error", "5xx",
                                             "retriable-status-codes"};
static const char *const backoff_keys[] = {"base", "max"};
static const char *const budget_keys[] = {"percent", "min_concurrency"};
static const char *const breaker_keys[] = {"max_connections", "max_pending_requests",
                                           "max_requests", "max_retries"};
static const char *const match_keys[] = {"host", "prefix", "path"};
static const char *const cluster_keys[] = {"name",
                                           "lb_policy",
                                           "endpoints",
                                           "connect_timeout",
                                           "response_timeout",
                                           "idle_timeout",
                                           "max_idle_per_endpoint",
                                           "retry",
                                           "retry_budget",
                                           "circuit_breakers",
                                           "zone_aware",
                                           "panic_threshold",
                                           "health_check",
                                           "outlier_detection",
                                           "dns",
                                           "hash_on",
                                           "hash_table_size",
                                           "ewma_decay",
                                           "slow_start",
                                           "kubernetes",
                                           "body_timeout"};
static const char *const endpoint_keys[] = {"address", "weight", "priority", "zone"};
static const char *const dns_keys[] = {"resolvers", "timeout", "tries"};
static const char *const dns_cluster_keys[] = {"name",        "port",        "record",
                                               "min_refresh", "max_refresh", "hold"};
static const char *const dns_record_names[] = {
    [PF_DNS_RECORD_A] = "A",
    [PF_DNS_RECORD_AAAA] = "AAAA",
    [PF_DNS_RECORD_A_AAAA] = "A+AAAA",
    [PF_DNS_RECORD_SRV] = "SRV",
};

typedef struct loader {
    const char *source;
    pf_errlist *errs;
    size_t nerr; /* counted here: pf_errlist_add may drop a message when out of memory */
    bool oom;
    bool auto_discover; /* $.kubernetes.auto_discover is on: listeners may have no routes */
} loader;

/* A comma-separated list for messages that stops with ", ..." rather than overflowing. */
typedef struct textlist {
    char buf[256];
    size_t len;
    bool full;
} textlist;

static void textlist_add(textlist *tl, const char *item) {
    const char *sep = tl->len ? ", " : "";
    size_t need = strlen(sep) + strlen(item);
    if (tl->full)
        return;
    if (tl->len + need + sizeof ", ..." > sizeof tl->buf) {
        int n = snprintf(tl->buf + tl->len, sizeof tl->buf - tl->len, "%s...", sep);
        if (n > 0)
            tl->len += (size_t)n;
        tl->full = true;
        return;
    }
    int n = snprintf(tl->buf + tl->len, sizeof tl->buf - tl->len, "%s%s", sep, item);
    if (n > 0)
        tl->len += (size_t)n;
}

static void textlist_join(textlist *tl, const char *const *items, size_t count) {
    for (size_t i = 0; i < count; i++)
        textlist_add(tl, items[i]);
}

/* Quotes user text JSON-style so a stray newline or quote cannot break the one line per
 * error format, and caps it so one huge value cannot push everything else out. */
static const char *qstr(char buf[QUOTE_MAX], const char *s) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        /* room for the longest escape (6), the "...", the closing quote and the NUL */
        if (o + 6 + 3 + 2 > QUOTE_MAX) {
            /* cut on a UTF-8 character boundary, never inside one */
            while (o > 1 && ((unsigned char)buf[o - 1] & 0xc0) == 0x80)
                o--;
            if (o > 1 && (unsigned char)buf[o - 1] >= 0xc0)
                o--;
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(buf + o, "\\u00", 4);
            buf[o + 4] = hex[c >> 4];
            buf[o + 5] = hex[c & 15];
            o += 6;
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static const char *char_desc(char buf[16], char ch) {
    unsigned char c = (unsigned char)ch;
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, 16, "'%c'", c);
    else
        snprintf(buf, 16, "0x%02x", c);
    return buf;
}

static void errf(loader *ld, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(loader *ld, const char *path, const char *fmt, ...) {
    char msg[PF_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pf_errlist_add(ld->errs, "%s: %s: %s", ld->source, path, msg);
    ld->nerr++;
}

static void oom(loader *ld) {
    if (!ld->oom)
        errf(ld, "$", "out of memory");
    ld->oom = true;
}

/* Ends a cut snprintf result with "..." so a shortened message never reads as whole. */
static const char *mark_cut(char *buf, size_t size, int n) {
    if ((n < 0 || (size_t)n >= size) && size >= 4)
        memcpy(buf + size - 4, "...", 4);
    return buf;
}

static const char *jkey(char buf[JPATH_MAX], const char *parent, const char *key) {
    return mark_cut(buf, JPATH_MAX, snprintf(buf, JPATH_MAX, "%s.%s", parent, key));
}

static const char *jidx(char buf[JPATH_MAX], const char *parent, size_t i) {
    return mark_cut(buf, JPATH_MAX, snprintf(buf, JPATH_MAX, "%s[%zu]", parent, i));
}

static void *alloc_array(loader *ld, size_t n, size_t size) {
    if (n == 0)
        return NULL;
    void *p = calloc(n, size);
    if (!p)
        oom(ld);
    return p;
}

/* ---- addresses ---------------------------------------------------------------------- */

static int parse_port(const char *s, uint16_t *out, pf_error *err) {
    char q[QUOTE_MAX];
    unsigned long v = 0;
    if (!*s)
        return pf_fail(err, PF_EINVAL, "missing port after \":\" (expected a number 1-65535)");
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return pf_fail(err, PF_EINVAL, "invalid port %s (expected a number 1-65535)",
                           qstr(q, s));
        /* saturate: the exact size of an absurd port does not matter, the message
         * quotes the text as written */
        if (v <= 65535)
            v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v == 0 || v > 65535) {
        if (strlen(s) > 20)
            return pf_fail(err, PF_EINVAL, "port %.20s... out of range (1-65535)", s);
        return pf_fail(err, PF_EINVAL, "port %s out of range (1-65535)", s);
    }
    *out = (uint16_t)v;
    return PF_OK;
}

static int parse_sockaddr(const char *text, addr_use use, pf_sockaddr *out, pf_error *err) {
    char q[QUOTE_MAX];
    char host[PF_ADDRTEXT_MAX];
    const char *port_text;
    bool v6;
    size_t len = strlen(text);

    if (len == 0)
        return pf_fail(err, PF_EINVAL, "address is empty (expected \"ip:port\", e.g. %s)",
                       use == ADDR_LISTEN ? "\"0.0.0.0:8080\"" : "\"127.0.0.1:8080\"");
    if (len >= PF_ADDRTEXT_MAX)
        return pf_fail(err, PF_EINVAL, "%s is too long for an \"ip:port\" address", qstr(q, text));

    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close)
            return pf_fail(err, PF_EINVAL, "%s: missing \"]\" after the IPv6 address",
                           qstr(q, text));
        if (close[1] == '\0')
            return pf_fail(err, PF_EINVAL, "%s has no port (expected \"[ipv6]:port\", e.g. %s)",
                           qstr(q, text), "\"[::1]:8080\"");
        if (close[1] != ':')
            return pf_fail(err, PF_EINVAL, "%s: expected \":\" and a port after \"]\"",
                           qstr(q, text));
        size_t n = (size_t)(close - text - 1);
        memcpy(host, text + 1, n);
        host[n] = '\0';
        port_text = close + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon && memchr(text, ':', (size_t)(colon - text)))
            return pf_fail(err, PF_EINVAL,
                           "%s: IPv6 addresses need brackets and a port, e.g. \"[::1]:8080\"",
                           qstr(q, text));
        if (!colon)
            return pf_fail(err, PF_EINVAL, "%s has no port (expected \"ip:port\", e.g. %s)",
                           qstr(q, text),
                           use == ADDR_LISTEN ? "\"0.0.0.0:8080\"" : "\"127.0.0.1:8080\"");
        size_t n = (size_t)(colon - text);
        memcpy(host, text, n);
        host[n] = '\0';
        port_text = colon + 1;
        v6 = false;
    }

    uint16_t port;
    int rc = parse_port(port_text, &port, err);
    if (rc != PF_OK)
        return rc;

    pf_sockaddr sa;
    memset(&sa, 0, sizeof sa);
    char ip[INET6_ADDRSTRLEN];
    int n;
    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa.ss;
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            return pf_fail(err, PF_EINVAL, "%s is not an IPv6 address", qstr(q, host));
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        sa.len = sizeof *s6;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        n = snprintf(sa.text, sizeof sa.text, "[%s]:%u", ip, (unsigned)port);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&sa.ss;
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) {
            /* "10.0.0.300" is a typo, "backend" a name; they need different advice */
            if (host[0] && strspn(host, "0123456789.") == strlen(host))
                return pf_fail(err, PF_EINVAL, "%s is not a valid IPv4 address", qstr(q, host));
            return pf_fail(err, PF_EINVAL, "%s is not an IP address; %s", qstr(q, text),
                           name_hints[use]);
        }
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        sa.len = sizeof *s4;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        n = snprintf(sa.text, sizeof sa.text, "%s:%u", ip, (unsigned)port);
    }
    if (n < 0 || (size_t)n >= sizeof sa.text)
        return pf_fail(err, PF_EINVAL, "%s is too long for an \"ip:port\" address", qstr(q, text));
    *out = sa;
    return PF_OK;
}

int config_parse_sockaddr(const char *text, pf_sockaddr *out, pf_error *err) {
    if (!text)
        return pf_fail(err, PF_EINVAL, "no address given");
    return parse_sockaddr(text, ADDR_ANY, out, err);
}

const char *config_dns_record_name(pf_dns_record record) {
    if ((size_t)record < ARRAY_LEN(dns_record_names))
        return dns_record_names[record];
    return "unknown";
}

const char *config_lb_policy_name(pf_lb_policy policy) {
    if ((size_t)policy < ARRAY_LEN(lb_policy_names))
        return lb_policy_names[policy];
    return "unknown";
}

/* ---- typed access to JSON members ---------------------------------------------------- */

static const char *kind(json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

static bool want(loader *ld, json_t *v, const char *path, const char *k) {
    if (strcmp(kind(v), k) == 0)
        return true;
    errf(ld, path, "expected %s, found %s", k, kind(v));
    return false;
}

static void check_keys(loader *ld, json_t *obj, const char *path, const char *const *known,
                       size_t n) {
    for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
        const char *key = json_object_iter_key(it);
        bool found = false;
        for (size_t i = 0; i < n && !found; i++)
            found = strcmp(key, known[i]) == 0;
        if (!found) {
            char q[QUOTE_MAX];
            textlist tl = {0};
            textlist_join(&tl, known, n);
            errf(ld, path, "unknown key %s; known keys: %s", qstr(q, key), tl.buf);
        }
    }
}

/* The member `key` of obj when present and of kind k; NULL when absent (reported if
 * required) or of the wrong kind (reported). */
static json_t *get(loader *ld, json_t *obj, const char *path, const char *key, const char *k,
                   bool required) {
    char p[JPATH_MAX];
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            errf(ld, path, "missing required key \"%s\"", key);
        return NULL;
    }
    return want(ld, v, jkey(p, path, key), k) ? v : NULL;
}

/* Optional integer in [min, max]; *out keeps its default when absent or wrong. */
static void get_uint(loader *ld, json_t *obj, const char *path, const char *key, uint32_t min,
                     uint32_t max, uint32_t *out) {
    char p[JPATH_MAX];
    json_t *v = get(ld, obj, path, key, "integer", false);
    if (!v)
        return;
    json_int_t n = json_integer_value(v);
    if (n < (json_int_t)min || n > (json_int_t)max) {
        errf(ld, jkey(p, path, key), "%" JSON_INTEGER_FORMAT " out of range (%u-%u)", n, min, max);
        return;
    }
    *out = (uint32_t)n;
}

/* Optional duration string; a bare number is the usual mistake, so it gets its own
 * message rather than a type error. */
static void get_duration(loader *ld, json_t *obj, const char *path, const char *key, bool positive,
                         uint64_t *out) {
    char p[JPATH_MAX], q[QUOTE_MAX];
    json_t *v = json_object_get(obj, key);
    if (!v)
        return;
    jkey(p, path, key);
    if (json_is_integer(v)) {
        errf(ld, p,
             "%" JSON_INTEGER_FORMAT " is not a duration; durations are strings with a unit "
             "(use e.g. \"250ms\", \"5s\")",
             json_integer_value(v));
        return;
    }
    if (json_is_real(v)) {
        errf(ld, p,
             "%g is not a duration; durations are strings with a unit (use e.g. \"250ms\", "
             "\"5s\")",
             json_real_value(v));
        return;
    }
    if (!json_is_string(v)) {
        errf(ld, p, "expected a duration string (e.g. \"5s\"), found %s", kind(v));
        return;
    }
    const char *s = json_string_value(v);
    uint64_t ms;
    if (pf_duration_parse(s, &ms) != PF_OK) {
        errf(ld, p, "%s is not a duration (use e.g. \"250ms\", \"5s\")", qstr(q, s));
        return;
    }
    if (positive && ms == 0) {
        errf(ld, p, "%s must be greater than zero", qstr(q, s));
        return;
    }
    *out = ms;
}

static bool get_addr(loader *ld, json_t *obj, const char *path, const char *key, addr_use use,
                     bool required, pf_sockaddr *out) {
    char p[JPATH_MAX];
    pf_error err;
    json_t *v = get(ld, obj, path, key, "string", required);
    if (!v)
        return false;
    if (parse_sockaddr(json_string_value(v), use, out, &err) != PF_OK) {
        errf(ld, jkey(p, path, key), "%s", err.msg);
        return false;
    }
    return true;
}

static bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* Copies the name into out even when its characters are bad, so routes naming the
 * cluster still resolve and one typo gives one message, not a cascade. */
static void get_name(loader *ld, json_t *obj, const char *path, char out[PF_NAME_MAX]) {
    char p[JPATH_MAX], q[QUOTE_MAX], c[16];
    json_t *v = get(ld, obj, path, "name", "string", true);
    if (!v)
        return;
    const char *s = json_string_value(v);
    size_t n = strlen(s);
    jkey(p, path, "name");
    if (n == 0) {
        errf(ld, p, "name is empty; use 1-%d characters from A-Z a-z 0-9 _ . -", PF_NAME_MAX - 1);
        return;
    }
    if (n >= PF_NAME_MAX) {
        errf(ld, p, "name %s is too long (%zu characters, max %d)", qstr(q, s), n, PF_NAME_MAX - 1);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!name_char(s[i])) {
            errf(ld, p, "name %s has invalid character %s; names use A-Z a-z 0-9 _ . -", qstr(q, s),
                 char_desc(c, s[i]));
            break;
        }
    }
    memcpy(out, s, n + 1);
}

/* ---- routes -------------------------------------------------------------------------- */

/* Checks a lower-cased host name (or the part after "*."): [a-z0-9.-], no empty labels. */
static bool valid_host_name(loader *ld, const char *path, const char *shown, const char *h) {
    char q[QUOTE_MAX], c[16];
    for (const char *s = h; *s; s++) {
        if (*s == '*') {
            errf(ld, path, "host %s: \"*\" is only allowed alone or as a leading \"*.\"",
                 qstr(q, shown));
            return false;
        }
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '-')) {
            errf(ld, path, "host %s has invalid character %s; hosts use a-z 0-9 . -",
                 qstr(q, shown), char_desc(c, *s));
            return false;
        }
    }
    if (h[0] == '.' || h[strlen(h) - 1] == '.' || strstr(h, "..")) {
        errf(ld, path, "host %s has an empty label (a leading, trailing or double \".\")",
             qstr(q, shown));
        return false;
    }
    return true;
}

static void parse_host(loader *ld, const char *path, const char *text, pf_config_route *r) {
    char q[QUOTE_MAX];
    char host[PF_HOST_MAX];
    pf_error err;
    const char *colon = strrchr(text, ':');
    size_t n = colon ? (size_t)(colon - text) : strlen(text);
    int port = -1;

    if (colon) {
        uint16_t p;
        if (parse_port(colon + 1, &p, &err) != PF_OK) {
            errf(ld, path, "host %s: %s", qstr(q, text), err.msg);
            return;
        }
        port = p;
    }
    if (n == 0) {
        errf(ld, path, "host %s is empty; use \"*\"%s to match any host", qstr(q, text),
             colon ? " with the port, e.g. \"*:8080\"," : "");
        return;
    }
    if (n >= PF_HOST_MAX) {
        errf(ld, path, "host %s is too long (max %d characters)", qstr(q, text), PF_HOST_MAX - 1);
        return;
    }
    /* RFC 9110 4.2.3: host names compare case-insensitively; store the lower-case form
     * so the router can compare bytes. */
    for (size_t i = 0; i < n; i++) {
        char ch = text[i];
        host[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    host[n] = '\0';

    if (strcmp(host, "*") == 0) {
        r->host_kind = PF_MATCH_HOST_ANY;
        r->host[0] = '\0';
    } else if (strncmp(host, "*.", 2) == 0) {
        if (host[2] == '\0') {
            errf(ld, path, "host %s needs a domain after \"*.\", e.g. \"*.local\"", qstr(q, text));
            return;
        }
        if (!valid_host_name(ld, path, text, host + 2))
            return;
        r->host_kind = PF_MATCH_HOST_SUFFIX;
        memcpy(r->host, host + 1, n); /* keeps the '.', drops the '*' */
    } else {
        if (!valid_host_name(ld, path, text, host))
            return;
        r->host_kind = PF_MATCH_HOST_EXACT;
        memcpy(r->host, host, n + 1);
    }
    r->host_port = port;
}

static void parse_path(loader *ld, const char *path, const char *s, char out[PF_PATH_MAX]) {
    char q[QUOTE_MAX];
    size_t n = strlen(s);
    if (s[0] != '/') {
        errf(ld, path, "%s must start with \"/\"", qstr(q, s));
        return;
    }
    if (n >= PF_PATH_MAX) {
        errf(ld, path, "%s is too long (max %d characters)", qstr(q, s), PF_PATH_MAX - 1);
        return;
    }
    /* RFC 9112 3.2: a request target has no spaces or controls, so such a pattern could
     * never match; say so now rather than route nothing later. */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f) {
            errf(ld, path, "%s contains a space or control character; percent-encode it",
                 qstr(q, s));
            return;
        }
    }
    memcpy(out, s, n + 1);
}

static void parse_match(loader *ld, json_t *m, const char *path, pf_config_route *r) {
    char p[JPATH_MAX];
    check_keys(ld, m, path, match_keys, ARRAY_LEN(match_keys));
    json_t *host = get(ld, m, path, "host", "string", false);
    if (host)
        parse_host(ld, jkey(p, path, "host"), json_string_value(host), r);
    json_t *prefix = get(ld, m, path, "prefix", "string", false);
    json_t *exact = get(ld, m, path, "path", "string", false);
    if (prefix && exact) {
        errf(ld, path, "\"prefix\" and \"path\" exclude each other; use one");
        return;
    }
    if (prefix) {
        r->path_kind = PF_MATCH_PATH_PREFIX;
        parse_path(ld, jkey(p, path, "prefix"), json_string_value(prefix), r->path);
    } else if (exact) {
        r->path_kind = PF_MATCH_PATH_EXACT;
        parse_path(ld, jkey(p, path, "path"), json_string_value(exact), r->path);
    }
}

/* ---- retries, budgets, breakers ------------------------------------------------------ */

static void retry_defaults(pf_config_retry *r) {
    memset(r, 0, sizeof *r);
    r->on = PF_DEFAULT_RETRY_ON;
    r->max_retries = PF_DEFAULT_MAX_RETRIES;
    r->backoff_base_ms = PF_DEFAULT_RETRY_BACKOFF_BASE_MS;
    r->backoff_max_ms = PF_DEFAULT_RETRY_BACKOFF_MAX_MS;
    r->buffer_bytes = PF_DEFAULT_RETRY_BUFFER_BYTES;
}

static void parse_retry_on(loader *ld, json_t *arr, const char *path, pf_config_retry *r) {
    char p[JPATH_MAX], q[QUOTE_MAX];
    r->on = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        jidx(p, path, i);
        if (!want(ld, v, p, "string"))
            continue;
        size_t k = 0;
        while (k < ARRAY_LEN(retry_on_names) && strcmp(json_string_value(v), retry_on_names[k]))
            k++;
        if (k == ARRAY_LEN(retry_on_names)) {
            textlist tl = {0};
            textlist_join(&tl, retry_on_names, ARRAY_LEN(retry_on_names));
            errf(ld, p, "unknown retry condition %s; known conditions: %s",
                 qstr(q, json_string_value(v)), tl.buf);
            continue;
        }
        r->on |= 1u << k;
    }
}

static void parse_status_codes(loader *ld, json_t *arr, const char *path, pf_config_retry *r) {
    char p[JPATH_MAX];
    if (json_array_size(arr) > PF_RETRY_MAX_STATUS_CODES) {
        errf(ld, path, "at most %d status codes", PF_RETRY_MAX_STATUS_CODES);
        return;
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        jidx(p, path, i);
        if (!want(ld, v, p, "integer"))
            continue;
        json_int_t code = json_integer_value(v);
        if (code < 500 || code > 599) {
            errf(ld, p, "%" JSON_INTEGER_FORMAT " is not a retriable status (500-599)", code);
            continue;
        }
        r->status_codes[r->status_code_count++] = (uint16_t)code;
    }
}

static void parse_retry(loader *ld, json_t *v, const char *path, pf_config_retry *r) {
    char p[JPATH_MAX];
    if (!want(ld, v, path, "object"))
        return;
    check_keys(ld, v, path, retry_keys, ARRAY_LEN(retry_keys));
    json_t *on = get(ld, v, path, "on", "array", false);
    if (on)
        parse_retry_on(ld, on, jkey(p, path, "on"), r);
    json_t *codes = get(ld, v, path, "status_codes", "array", false);
    if (codes)
        parse_status_codes(ld, codes, jkey(p, path, "status_codes"), r);
    if ((r->on & PF_RETRY_STATUS_CODES) && r->status_code_count == 0)
        errf(ld, jkey(p, path, "status_codes"),
             "\"retriable-status-codes\" is in \"on\" but no status_codes are given");
    get_uint(ld, v, path, "max_retries", 0, 10, &r->max_retries);
    get_duration(ld, v, path, "per_try_timeout", true, &r->per_try_timeout_ms);
    json_t *backoff = get(ld, v, path, "backoff", "object", false);
    if (backoff) {
        jkey(p, path, "backoff");
        check_keys(ld, backoff, p, backoff_keys, ARRAY_LEN(backoff_keys));
        get_duration(ld, backoff, p, "base", true, &r->backoff_base_ms);
        get_duration(ld, backoff, p, "max", true, &r->backoff_max_ms);
        if (r->backoff_max_ms < r->backoff_base_ms)
            errf(ld, p, "max (%llums) is less than base (%llums)",
                 (unsigned long long)r->backoff_max_ms, (unsigned long long)r->backoff_base_ms);
    }
    json_t *non_idempotent = get(ld, v, path, "retry_non_idempotent", "boolean", false);
    if (non_idempotent)
        r->non_idempotent = json_is_true(non_idempotent);
    get_uint(ld, v, path, "buffer_bytes", 0, 16u * 1024u * 1024u, &r->buffer_bytes);
}

static void parse_cluster_resilience(loader *ld, json_t *v, const char *path,
                                     pf_config_cluster *c) {
    char p[JPATH_MAX];
    retry_defaults(&c->retry);
    c->budget_percent = PF_DEFAULT_BUDGET_PERCENT;
    c->budget_min_concurrency = PF_DEFAULT_BUDGET_MIN_CONCURRENCY;
    c->breakers.max_connections = PF_DEFAULT_MAX_CONNECTIONS;
    c->breakers.max_pending_requests = PF_DEFAULT_MAX_PENDING_REQUESTS;
    c->breakers.max_requests = PF_DEFAULT_MAX_REQUESTS;
    c->breakers.max_retries = PF_DEFAULT_MAX_CONCURRENT_RETRIES;
    c->panic_threshold = PF_DEFAULT_PANIC_THRESHOLD;
    json_t *retry = json_object_get(v, "retry");
    if (retry)
        parse_retry(ld, retry, jkey(p, path, "retry"), &c->retry);
    json_t *budget = get(ld, v, path, "retry_budget", "object", false);
    if (budget) {
        jkey(p, path, "retry_budget");
        check_keys(ld, budget, p, budget_keys, ARRAY_LEN(budget_keys));
        get_uint(ld, budget, p, "percent", 0, 100, &c->budget_percent);
        get_uint(ld, budget, p, "min_concurrency", 0, 100000, &c->budget_min_concurrency);
    }
    json_t *breakers = get(ld, v, path, "circuit_breakers", "object", false);
    if (breakers) {
        jkey(p, path, "circuit_breakers");
        check_keys(ld, breakers, p, breaker_keys, ARRAY_LEN(breaker_keys));
        get_uint(ld, breakers, p, "max_connections", 1, 1000000, &c->breakers.max_connections);
        get_uint(ld, breakers, p, "max_pending_requests", 1, 1000000,
                 &c->breakers.max_pending_requests);
        get_uint(ld, breakers, p, "max_requests", 1, 1000000, &c->breakers.max_requests);
        get_uint(ld, breakers, p, "max_retries", 0, 1000000, &c->breakers.max_retries);
    }
    json_t *zone_aware = get(ld, v, path, "zone_aware", "boolean", false);
    if (zone_aware)
        c->zone_aware = json_is_true(zone_aware);
    get_uint(ld, v, path, "panic_threshold", 0, 100, &c->panic_threshold);
}

static void parse_route(loader *ld, json_t *v, const char *path, pf_config_route *r) {
    char p[JPATH_MAX], q[QUOTE_MAX];
    r->host_kind = PF_MATCH_HOST_ANY;
    r->host_port = -1;
    r->path_kind = PF_MATCH_PATH_PREFIX;
    memcpy(r->path, "/", 2);
    if (!want(ld, v, path, "object"))
        return;
    check_keys(ld, v, path, route_keys, ARRAY_LEN(route_keys));
    json_t *m = get(ld, v, path, "match", "object", true);
    if (m)
        parse_match(ld, m, jkey(p, path, "match"), r);
    json_t *retry = json_object_get(v, "retry");
    if (retry) {
        r->has_retry = true;
        retry_defaults(&r->retry);
        parse_retry(ld, retry, jkey(p, path, "retry"), &r->retry);
    }
    get_duration(ld, v, path, "timeout", true, &r->timeout_ms);

    /* Resolved against the clusters after everything is parsed (resolve_routes); an
     * empty r->cluster means "already reported, do not resolve". */
    json_t *c = get(ld, v, path, "cluster", "string", true);
    if (!c)
        return;
    const char *name = json_string_value(c);
    size_t n = strlen(name);
    if (n == 0)
        errf(ld, jkey(p, path, "cluster"), "cluster name is empty");
    else if (n >= PF_NAME_MAX)
        errf(ld, jkey(p, path, "cluster"),
             "unknown cluster %s; cluster names are at most %d characters", qstr(q, name),
             PF_NAME_MAX - 1);
    else
        memcpy(r->cluster, name, n + 1);
}

/* ---- listeners ----------------------------------------------------------------------- */

static void parse_listener(loader *ld, json_t *v, const char *path, pf_config_listener *l) {
    char p[JPATH_MAX], rp[JPATH_MAX];
    l->max_header_bytes = PF_DEFAULT_MAX_HEADER_BYTES;
    l->max_target_bytes = PF_DEFAULT_MAX_TARGET_BYTES;
    l->max_headers = PF_DEFAULT_MAX_HEADERS;
    l->buffer_bytes = PF_DEFAULT_BUFFER_BYTES;
    l->header_timeout_ms = PF_DEFAULT_HEADER_TIMEOUT_MS;
    l->idle_timeout_ms = PF_DEFAULT_IDLE_TIMEOUT_MS;
    l->body_timeout_ms = PF_DEFAULT_BODY_TIMEOUT_MS;
    if (!want(ld, v, path, "object"))
        return;
    check_keys(ld, v, path, listener_keys, ARRAY_LEN(listener_keys));
    get_name(ld, v, path, l->name);
    get_addr(ld, v, path, "address", ADDR_LISTEN, true, &l->addr);

    /* With auto-discovery every Service is a route already; otherwise a listener without
     * routes could only answer 404. */
    json_t *routes = get(ld, v, path, "routes", "array", !ld->auto_discover);
    if (routes && json_array_size(routes) == 0 && !ld->auto_discover)
        errf(ld, jkey(p, path, "routes"),
             "must not be empty; add a route such as "
             "{\"match\": {\"prefix\": \"/\"}, \"cluster\": \"web\"}");
    if (routes && json_array_size(routes) > 0) {
        l->routes = alloc_array(ld, json_array_size(routes), sizeof *l->routes);
        if (l->routes) {
            l->route_count = json_array_size(routes);
            jkey(p, path, "routes");
            for (size_t i = 0; i < l->route_count; i++)
                parse_route(ld, json_array_get(routes, i), jidx(rp, p, i), &l->routes[i]);
        }
    }

    get_uint(ld, v, path, "max_header_bytes", HEADER_BYTES_MIN, HEADER_BYTES_MAX,
             &l->max_header_bytes);
    get_uint(ld, v, path, "max_target_bytes", TARGET_BYTES_MIN, TARGET_BYTES_MAX,
             &l->max_target_bytes);
    get_uint(ld, v, path, "max_headers", HEADERS_MIN, HEADERS_MAX, &l->max_headers);
    get_uint(ld, v, path, "buffer_bytes", BUFFER_BYTES_MIN, BUFFER_BYTES_MAX, &l->buffer_bytes);
    get_duration(ld, v, path, "header_timeout", true, &l->header_timeout_ms);
    get_duration(ld, v, path, "idle_timeout", true, &l->idle_timeout_ms);
    get_duration(ld, v, path, "body_timeout", true, &l->body_timeout_ms);
    get_uint(ld, v, path, "max_connections", 1, PF_MAX_CONNECTIONS_LIMIT, &l->max_connections);

    /* The request line is part of the head, so a target limit above the head limit
     * would be a promise the parser cannot keep. */
    if (l->max_target_bytes > l->max_header_bytes)
        errf(ld, jkey(p, path, "max_target_bytes"),
             "%u exceeds max_header_bytes (%u); the request target is part of the header block",
             l->max_target_bytes, l->max_header_bytes);
}

static void parse_listeners(loader *ld, json_t *arr, pf_config *cfg) {
    char lp[JPATH_MAX], p[JPATH_MAX], q[QUOTE_MAX];
    if (json_array_size(arr) == 0) {
        errf(ld, "$.listeners", "must not be empty; pilotfish needs at least one listener");
        return;
    }
    cfg->listeners = alloc_array(ld, json_array_size(arr), sizeof *cfg->listeners);
    if (!cfg->listeners)
        return;
    cfg->listener_count = json_array_size(arr);
    for (size_t i = 0; i < cfg->listener_count; i++) {
        pf_config_listener *l = &cfg->listeners[i];
        parse_listener(ld, json_array_get(arr, i), jidx(lp, "$.listeners", i), l);
        for (size_t j = 0; j < i && l->name[0]; j++) {
            if (strcmp(cfg->listeners[j].name, l->name) == 0) {
                errf(ld, jkey(p, lp, "name"), "duplicate listener name %s (also $.listeners[%zu])",
                     qstr(q, l->name), j);
                break;
            }
        }
        if (l->addr.len == 0)
            continue;
        jkey(p, lp, "address");
        if (strcmp(l->addr.text, cfg->admin_addr.text) == 0)
            errf(ld, p,
                 "%s is also the admin address; move one of them (the admin server with "
                 "$.admin.address)",
                 l->addr.text);
        for (size_t j = 0; j < i; j++) {
            const pf_config_listener *other = &cfg->listeners[j];
            if (other->addr.len && strcmp(other->addr.text, l->addr.text) == 0) {
                errf(ld, p, "%s is already used by $.listeners[%zu] (%s)", l->addr.text, j,
                     qstr(q, other->name));
                break;
            }
        }
    }
}

/* ---- clusters ------------------------------------------------------------------------ */

static void parse_endpoint(loader *ld, json_t *v, const char *path, pf_config_endpoint *e) {
    char p[JPATH_MAX], q[QUOTE_MAX];
    pf_error err;
    e->weight = 1;
    e->priority = 0;
    if (json_is_string(v)) {
        if (parse_sockaddr(json_string_value(v), ADDR_ENDPOINT, &e->addr, &err) != PF_OK)
            errf(ld, path, "%s", err.msg);
        return;
    }
    if (!json_is_object(v)) {
        errf(ld, path, "expected string or object, found %s", kind(v));
        return;
    }
    check_keys(ld, v, path, endpoint_keys, ARRAY_LEN(endpoint_keys));
    get_addr(ld, v, path, "address", ADDR_ENDPOINT, true, &e->addr);
    get_uint(ld, v, path, "weight", 1, WEIGHT_MAX, &e->weight);
    get_uint(ld, v, path, "priority", 0, PRIORITY_MAX, &e->priority);
    json_t *zone = get(ld, v, path, "zone", "string", false);
    if (zone) {
        const char *z = json_string_value(zone);
        size_t n = strlen(z);
        if (n >= sizeof e->zone)
            errf(ld, jkey(p, path, "zone"), "zone %s is too long (max %zu characters)", qstr(q, z),
                 sizeof e->zone - 1);
        else
            memcpy(e->zone, z, n + 1);
    }
}

/* ---- health checks and outlier detection --------------------------------------------- */

/* Indexed by pf_check_type minus one: "none" is no type a file can name. */
static const char *const check_type_names[] = {"http", "tcp"};
static const char *const health_check_keys[] = {"type",
                                                "path",
                                                "host",
                                                "expected_statuses",
                                                "interval",
                                                "timeout",
                                                "unhealthy_threshold",
                                                "healthy_threshold",
                                                "jitter",
                                                "initial",
                                                "send",
                                                "expect"};
static const char *const outlier_keys[] = {"consecutive_5xx",      "consecutive_gateway_failure",
                                           "base_ejection_time",   "max_ejection_time",
                                           "max_ejection_percent", "interval"};
#define CHECK_THRESHOLD_MAX 1000u
#define OUTLIER_CONSECUTIVE_MAX 100000u

static int parse_status_code(const char *s, size_t n, uint16_t *out) {
    unsigned v = 0;
    if (n != 3)
        return PF_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return PF_EINVAL;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = (uint16_t)v;
    return PF_OK;
}

int config_parse_status_range(const char *text, pf_status_range *out, pf_error *err) {
    char q[QUOTE_MAX];
    const char *dash = strchr(text, '-');
    size_t first = dash ? (size_t)(dash - text) : strlen(text);
    pf_status_range r;
    if (parse_status_code(text, first, &r.lo) != PF_OK ||
        (dash && parse_status_code(dash + 1, strlen(dash + 1), &r.hi) != PF_OK))
        return pf_fail(err, PF_EINVAL,
                       "%s is not a status code or range (use e.g. \"200\" or \"200-399\")",
                       qstr(q, text));
    if (!dash)
        r.hi = r.lo;
    if (r.lo < 100 || r.hi > 599 || r.lo > 599 || r.hi < 100)
        return pf_fail(err, PF_EINVAL, "%s: status codes are 100-599", qstr(q, text));
    if (r.lo > r.hi)
        return pf_fail(err, PF_EINVAL, "%s is reversed; write the lower code first (\"%u-%u\")",
                       qstr(q, text), r.hi, r.lo);
    *out = r;
    return PF_OK;
}

static void parse_expected_statuses(loader *ld, json_t *arr, const char *path,
                                    pf_config_health_check *hc) {
    char p[JPATH_MAX], text[32];
    pf_error err;
    size_t n = json_array_size(arr);
    if (n == 0 || n > PF_CHECK_STATUS_RANGES_MAX) {
        errf(ld, path, "give 1 to %d codes or ranges, e.g. [\"200-399\"]",
             PF_CHECK_STATUS_RANGES_MAX);
        return;
    }
    hc->expected_count = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        jidx(p, path, i);
        const char *s = text;
        if (json_is_integer(v))
            snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else if (json_is_string(v))
            s = json_string_value(v);
        else {
            errf(ld, p, "expected string or integer, found %s", kind(v));
            continue;
        }
        if (config_parse_status_range(s, &hc->expected[hc->expected_count], &err) != PF_OK)
            errf(ld, p, "%s", err.msg);
        else
            hc->expected_count++;
    }
}

/* tcp send/expect: JSON strings may carry any byte (\u0000 too), so the length is kept. */
static void get_payload(loader *ld, json_t *obj, const char *path, const char *key, char *out,
                        size_t *len) {
    char p[JPATH_MAX];
    json_t *v = get(ld, obj, path, key, "string", false);
    if (!v)
        return;
    size_t n = json_string_length(v);
    if (n == 0 || n >= PF_CHECK_PAYLOAD_MAX) {
        errf(ld, jkey(p, path, key), "%zu bytes; give 1 to %d (leave the key out for none)", n,
             PF_CHECK_PAYLOAD_MAX - 1);
        return;
    }
    memcpy(out, json_string_value(v), n);
    *len = n;
}

/* A key that belongs to the other check type: one clear message instead of a silent no-op. */
static bool foreign_key(loader *ld, json_t *obj, const char *path, const char *key,
                        pf_check_type type) {
    char p[JPATH_MAX];
    if (!json_object_get(obj, key))
        return false;
    errf(ld, jkey(p, path, key), "applies to %s checks only; this check's type is \"%s\"",
         type == PF_CHECK_TCP ? "http" : "tcp", check_type_names[type - 1]);
    return true;
}

static void parse_health_check(loader *ld, json_t *cluster, const char *cluster_path,
                               pf_config_health_check *hc) {
    char path[JPATH_MAX], p[JPATH_MAX], q[QUOTE_MAX];
    memset(hc, 0, sizeof *hc);
    memcpy(hc->path, PF_DEFAULT_CHECK_PATH, sizeof PF_DEFAULT_CHECK_PATH);
    hc->expected[0] = (pf_status_range){200, 399};
    hc->expected_count = 1;
    hc->interval_ms = PF_DEFAULT_CHECK_INTERVAL_MS;
    hc->timeout_ms = PF_DEFAULT_CHECK_TIMEOUT_MS;
    hc->jitter_ms = PF_DEFAULT_CHECK_JITTER_MS;
    hc->unhealthy_threshold = PF_DEFAULT_UNHEALTHY_THRESHOLD;
    hc->healthy_threshold = PF_DEFAULT_HEALTHY_THRESHOLD;
    hc->initial_healthy = true;
    json_t *v = get(ld, cluster, cluster_path, "health_check", "object", false);
    if (!v)
        return;
    jkey(path, cluster_path, "health_check");
    check_keys(ld, v, path, health_check_keys, ARRAY_LEN(health_check_keys));

    hc->type = PF_CHECK_HTTP;
    json_t *type = get(ld, v, path, "type", "string", false);
    if (type) {
        const char *s = json_string_value(type);
        size_t i = 0;
        while (i < ARRAY_LEN(check_type_names) && strcmp(s, check_type_names[i]) != 0)
            i++;
        if (i < ARRAY_LEN(check_type_names)) {
            hc->type = (pf_check_type)(i + 1);
        } else {
            textlist tl = {0};
            textlist_join(&tl, check_type_names, ARRAY_LEN(check_type_names));
            errf(ld, jkey(p, path, "type"), "unknown type %s; known types: %s", qstr(q, s), tl.buf);
        }
    }

    if (hc->type == PF_CHECK_TCP) {
        foreign_key(ld, v, path, "path", hc->type);
        foreign_key(ld, v, path, "host", hc->type);
        foreign_key(ld, v, path, "expected_statuses", hc->type);
        get_payload(ld, v, path, "send", hc->send, &hc->send_len);
        get_payload(ld, v, path, "expect", hc->expect, &hc->expect_len);
    } else {
        foreign_key(ld, v, path, "send", hc->type);
        foreign_key(ld, v, path, "expect", hc->type);
        json_t *target = get(ld, v, path, "path", "string", false);
        if (target)
            parse_path(ld, jkey(p, path, "path"), json_string_value(target), hc->path);
        json_t *host = get(ld, v, path, "host", "string", false);
        if (host) {
            const char *s = json_string_value(host);
            size_t n = strlen(s), bad = 0;
            while (bad < n && (unsigned char)s[bad] > 0x20 && (unsigned char)s[bad] < 0x7f)
                bad++;
            jkey(p, path, "host");
            if (n == 0 || n >= PF_HOST_MAX)
                errf(ld, p,
                     "host %s: give 1 to %d characters (leave it out for the endpoint's "
                     "address)",
                     qstr(q, s), PF_HOST_MAX - 1);
            else if (bad < n)
                errf(ld, p, "host %s has a space, control or non-ASCII character", qstr(q, s));
            else
                memcpy(hc->host, s, n + 1);
        }
        json_t *expected = get(ld, v, path, "expected_statuses", "array", false);
        if (expected)
            parse_expected_statuses(ld, expected, jkey(p, path, "expected_statuses"), hc);
    }

    get_duration(ld, v, path, "interval", true, &hc->interval_ms);
    get_duration(ld, v, path, "timeout", true, &hc->timeout_ms);
    get_duration(ld, v, path, "jitter", false, &hc->jitter_ms);
    get_uint(ld, v, path, "unhealthy_threshold", 1, CHECK_THRESHOLD_MAX, &hc->unhealthy_threshold);
    get_uint(ld, v, path, "healthy_threshold", 1, CHECK_THRESHOLD_MAX, &hc->healthy_threshold);
    json_t *initial = get(ld, v, path, "initial", "string", false);
    if (initial) {
        const char *s = json_string_value(initial);
        if (strcmp(s, "healthy") == 0 || strcmp(s, "unhealthy") == 0)
            hc->initial_healthy = s[0] == 'h';
        else
            errf(ld, jkey(p, path, "initial"),
                 "unknown initial state %s; use \"healthy\" (serve until the first check fails) "
                 "or \"unhealthy\" (wait for a passing check)",
                 qstr(q, s));
    }
}

static void parse_outlier(loader *ld, json_t *cluster, const char *cluster_path,
                          pf_config_outlier *o) {
    char path[JPATH_MAX], p[JPATH_MAX], a[32], b[32];
    memset(o, 0, sizeof *o);
    o->consecutive_5xx = PF_DEFAULT_CONSECUTIVE_5XX;
    o->consecutive_gateway_failure = PF_DEFAULT_CONSECUTIVE_GATEWAY_FAILURE;
    o->base_ejection_time_ms = PF_DEFAULT_BASE_EJECTION_MS;
    o->max_ejection_percent = PF_DEFAULT_MAX_EJECTION_PERCENT;
    o->interval_ms = PF_DEFAULT_OUTLIER_INTERVAL_MS;
    json_t *v = get(ld, cluster, cluster_path, "outlier_detection", "object", false);
    if (v) {
        jkey(path, cluster_path, "outlier_detection");
        o->enabled = true;
        check_keys(ld, v, path, outlier_keys, ARRAY_LEN(outlier_keys));
        get_uint(ld, v, path, "consecutive_5xx", 0, OUTLIER_CONSECUTIVE_MAX, &o->consecutive_5xx);
        get_uint(ld, v, path, "consecutive_gateway_failure", 0, OUTLIER_CONSECUTIVE_MAX,
                 &o->consecutive_gateway_failure);
        get_duration(ld, v, path, "base_ejection_time", true, &o->base_ejection_time_ms);
        get_duration(ld, v, path, "max_ejection_time", true, &o->max_ejection_time_ms);
        get_uint(ld, v, path, "max_ejection_percent", 0, 100, &o->max_ejection_percent);
        get_duration(ld, v, path, "interval", true, &o->interval_ms);
        if (o->max_ejection_time_ms && o->max_ejection_time_ms < o->base_ejection_time_ms)
            errf(ld, jkey(p, path, "max_ejection_time"),
                 "%s is shorter than base_ejection_time (%s)",
                 pf_duration_format(o->max_ejection_time_ms, a, sizeof a),
                 pf_duration_format(o->base_ejection_time_ms, b, sizeof b));
    }
    /* Unset, the cap follows a long base rather than contradict it. */
    if (!o->max_ejection_time_ms)
        o->max_ejection_time_ms = o->base_ejection_time_ms > PF_DEFAULT_MAX_EJECTION_MS
                                      ? o->base_ejection_time_ms
                                      : PF_DEFAULT_MAX_EJECTION_MS;
}

/* ---- DNS discovery ------------------------------------------------------------------- */

/* RFC 1035 2.3.4: a name is at most 253 characters as text, labels at most 63. The
 * underscore is not a hostname character, but SRV owner names need it (RFC 2782). */
#define DNS_LABEL_MAX 63
#define DNS_TEXT_MAX 253
/* Refreshing more often than this floods the resolver without making anything fresher. */
#define DNS_MIN_REFRESH_FLOOR_MS 100u
#define DNS_TRIES_MAX 10u

static bool dns_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

/* Checks a DNS name and stores it lower-case (RFC 4343: names compare case-insensitively,
 * and clusters on the same name share one query). A trailing "." makes it absolute: no
 * search domains are tried. */
static void parse_dns_name(loader *ld, const char *path, const char *s, char out[PF_DNS_NAME_MAX]) {
    char q[QUOTE_MAX], c[16];
    struct in_addr a4;
    size_t n = strlen(s), label = 0;
    if (n == 0) {
        errf(ld, path, "name is empty; give a DNS name such as \"backend.internal\"");
        return;
    }
    if (n > DNS_TEXT_MAX + (s[n - 1] == '.')) {
        errf(ld, path, "name %s is too long (%zu characters, max %d)", qstr(q, s), n, DNS_TEXT_MAX);
        return;
    }
    if (inet_pton(AF_INET, s, &a4) == 1) {
        errf(ld, path, "%s is an IP address, not a name; list it in \"endpoints\" instead",
             qstr(q, s));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ':') {
            errf(ld, path, "name %s has invalid character ':'; give the port in \"port\"",
                 qstr(q, s));
            return;
        }
        if (!dns_name_char(s[i])) {
            errf(ld, path, "name %s has invalid character %s; DNS names use A-Z a-z 0-9 - _ .",
                 qstr(q, s), char_desc(c, s[i]));
            return;
        }
        if (s[i] != '.') {
            if (++label > DNS_LABEL_MAX) {
                errf(ld, path, "name %s has a label longer than %d characters", qstr(q, s),
                     DNS_LABEL_MAX);
                return;
            }
            continue;
        }
        if (label == 0) {
            errf(ld, path, "name %s has an empty label (a leading or double \".\")", qstr(q, s));
            return;
        }
        label = 0;
    }
    for (size_t i = 0; i <= n; i++)
        out[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
}

/* $.clusters[i].dns. Returns whether "endpoints" is still required: not when the cluster
 * uses DNS, nor when the lack of both keys was reported here already. */
static bool parse_cluster_dns(loader *ld, json_t *cluster, const char *cluster_path,
                              pf_config_cluster *c) {
    char path[JPATH_MAX], p[JPATH_MAX], q[QUOTE_MAX], a[32], b[32];
    pf_config_cluster_dns *d = &c->dns;
    d->min_refresh_ms = PF_DEFAULT_DNS_MIN_REFRESH_MS;
    d->max_refresh_ms = PF_DEFAULT_DNS_MAX_REFRESH_MS;
    d->hold_ms = PF_DEFAULT_DNS_HOLD_MS;
    json_t *v = json_object_get(cluster, "dns");
    bool has_endpoints = json_object_get(cluster, "endpoints") != NULL;
    if (!v) {
        if (has_endpoints)
            return true;
        errf(ld, cluster_path,
             "missing required key \"endpoints\" (or \"dns\" for endpoints from DNS)");
        return false;
    }
    if (has_endpoints)
        errf(ld, cluster_path, "\"endpoints\" and \"dns\" exclude each other; use one");
    jkey(path, cluster_path, "dns");
    if (!want(ld, v, path, "object"))
        return false;
    check_keys(ld, v, path, dns_cluster_keys, ARRAY_LEN(dns_cluster_keys));

    json_t *record = get(ld, v, path, "record", "string", false);
    if (record) {
        const char *s = json_string_value(record);
        size_t i = 0;
        while (i < ARRAY_LEN(dns_record_names) && strcmp(s, dns_record_names[i]) != 0)
            i++;
        if (i < ARRAY_LEN(dns_record_names)) {
            d->record = (pf_dns_record)i;
        } else {
            textlist tl = {0};
            textlist_join(&tl, dns_record_names, ARRAY_LEN(dns_record_names));
            errf(ld, jkey(p, path, "record"), "unknown record %s; known records: %s", qstr(q, s),
                 tl.buf);
        }
    }
    json_t *name = get(ld, v, path, "name", "string", true);
    if (name)
        parse_dns_name(ld, jkey(p, path, "name"), json_string_value(name), d->name);

    /* SRV answers carry a port per target; for addresses the port must come from here. */
    json_t *port = json_object_get(v, "port");
    if (d->record == PF_DNS_RECORD_SRV && port) {
        errf(ld, jkey(p, path, "port"), "SRV records carry their own ports; remove \"port\"");
    } else if (d->record != PF_DNS_RECORD_SRV && !port) {
        errf(ld, path, "missing required key \"port\" (the port of every address the name has)");
    } else if (port) {
        uint32_t n = 0;
        get_uint(ld, v, path, "port", 1, 65535, &n);
        d->port = (uint16_t)n;
    }

    get_duration(ld, v, path, "min_refresh", true, &d->min_refresh_ms);
    get_duration(ld, v, path, "max_refresh", true, &d->max_refresh_ms);
    get_duration(ld, v, path, "hold", false, &d->hold_ms);
    if (d->min_refresh_ms < DNS_MIN_REFRESH_FLOOR_MS)
        errf(ld, jkey(p, path, "min_refresh"),
             "%s is below %ums; refreshing that often floods the resolver",
             pf_duration_format(d->min_refresh_ms, a, sizeof a), DNS_MIN_REFRESH_FLOOR_MS);
    else if (d->max_refresh_ms < d->min_refresh_ms)
        errf(ld, jkey(p, path, "max_refresh"), "%s is less than min_refresh (%s)",
             pf_duration_format(d->max_refresh_ms, a, sizeof a),
             pf_duration_format(d->min_refresh_ms, b, sizeof b));
    return false;
}

/* ---- kubernetes ---------------------------------------------------------------------- */

#define K8S_PORT_NAME_MAX 15 /* IANA service names, as Kubernetes port names are */
#define K8S_MAX_LINE_BYTES_MIN 4096u
#define K8S_MAX_LINE_BYTES_MAX (256u * 1024u * 1024u)
#define K8S_MAX_LIST_BYTES_MIN (64u * 1024u)
#define K8S_MAX_LIST_BYTES_MAX (1024u * 1024u * 1024u)
#define K8S_PAGE_SIZE_MAX 10000u

static const char *const k8s_keys[] = {
    "api_server",     "token_file",     "ca_file",         "namespace",       "cluster_domain",
    "auto_discover",  "stall_timeout",  "request_timeout", "connect_timeout", "backoff",
    "max_line_bytes", "max_list_bytes", "page_size"};
static const char *const k8s_auto_keys[] = {"namespaces", "cluster"};
static const char *const k8s_cluster_keys[] = {"service", "namespace", "port"};

/* A Kubernetes object name as the API validates it (RFC 1123 label): 1-max characters of
 * a-z 0-9 '-', starting and ending with a letter or digit. */
static bool k8s_label(loader *ld, const char *path, const char *what, const char *s, size_t max) {
    char q[QUOTE_MAX], c[16];
    size_t n = strlen(s);
    if (n == 0 || n > max) {
        errf(ld, path, "%s %s must have 1-%zu characters", what, qstr(q, s), max);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        bool alnum = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9');
        if (!alnum && (s[i] != '-' || i == 0 || i == n - 1)) {
            errf(ld, path,
                 "%s %s has invalid character %s; Kubernetes names use a-z 0-9 and '-' inside",
                 what, qstr(q, s), char_desc(c, s[i]));
            return false;
        }
    }
    return true;
}

/* Optional label-valued string member copied into out (PF_K8S_NAME_MAX). */
static void get_k8s_label(loader *ld, json_t *obj, const char *path, const char *key,
                          const char *what, size_t max, bool required, char *out) {
    char p[JPATH_MAX];
    json_t *v = get(ld, obj, path, key, "string", required);
    if (v && k8s_label(ld, jkey(p, path, key), what, json_string_value(v), max))
        snprintf(out, PF_K8S_NAME_MAX, "%s", json_string_value(v));
}

/* $.clusters[i].kubernetes. Returns true when the cluster uses Kubernetes (then it has
 * neither "endpoints" nor "dns"). */
static bool parse_cluster_k8s(loader *ld, json_t *cluster, const char *cluster_path,
                              pf_config_cluster *c) {
    char path[JPATH_MAX], p[JPATH_MAX];
    pf_config_cluster_k8s *k = &c->kubernetes;
    json_t *v = json_object_get(cluster, "kubernetes");
    if (!v)
        return false;
    if (json_object_get(cluster, "endpoints") || json_object_get(cluster, "dns"))
        errf(ld, cluster_path, "\"kubernetes\" excludes \"endpoints\" and \"dns\"; use one source");
    jkey(path, cluster_path, "kubernetes");
    if (!want(ld, v, path, "object"))
        return true;
    check_keys(ld, v, path, k8s_cluster_keys, ARRAY_LEN(k8s_cluster_keys));
    get_k8s_label(ld, v, path, "service", "service", 63, true, k->service);
    if (!k->service[0])
        snprintf(k->service, sizeof k->service, "-"); /* reported; still a k8s cluster */
    get_k8s_label(ld, v, path, "namespace", "namespace", 63, false, k->namespace);
    json_t *port = json_object_get(v, "port");
    jkey(p, path, "port");
    if (port && json_is_string(port)) {
        if (k8s_label(ld, p, "port name", json_string_value(port), K8S_PORT_NAME_MAX))
            snprintf(k->port_name, sizeof k->port_name, "%s", json_string_value(port));
    } else if (port && json_is_integer(port)) {
        get_uint(ld, v, path, "port", 1, 65535, &k->port_number);
    } else if (port) {
        errf(ld, p, "expected a port name (e.g. \"http\") or number, found %s", kind(port));
    }
    return true;
}

/* ---- load balancing ------------------------------------------------------------------ */

/* RFC 9110 5.6.2 token characters: header names, and cookie names (RFC 6265 4.1.1). */
static bool token_char(char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool is_prime(uint64_t n) {
    if (n < 2)
        return false;
    for (uint64_t d = 2; d * d <= n; d++)
        if (n % d == 0)
            return false;
    return true;
}

static bool is_hash_policy(pf_lb_policy p) {
    return p == PF_LB_RING_HASH || p == PF_LB_MAGLEV;
}

/* A header or cookie name to hash on: a non-empty token; header names are stored in lower
 * case, the way the proxy compares them. */
static void parse_hash_name(loader *ld, json_t *v, const char *path, const char *what, bool lower,
                            char out[PF_HASH_NAME_MAX]) {
    char q[QUOTE_MAX], c[16];
    if (!want(ld, v, path, "string"))
        return;
    const char *s = json_string_value(v);
    size_t n = strlen(s);
    if (n == 0) {
        errf(ld, path, "%s name is empty", what);
        return;
    }
    if (n >= PF_HASH_NAME_MAX) {
        errf(ld, path, "%s name %s is too long (max %d characters)", what, qstr(q, s),
             PF_HASH_NAME_MAX - 1);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!token_char(s[i])) {
            errf(ld, path, "%s name %s has invalid character %s; names are tokens (RFC 9110 5.6.2)",
                 what, qstr(q, s), char_desc(c, s[i]));
            return;
        }
        out[i] = lower && s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] - 'A' + 'a') : s[i];
    }
    out[n] = '\0';
}

static void parse_hash_on(loader *ld, json_t *v, const char *path, pf_config_hash_on *h) {
    static const char *const hash_on_keys[] = {"header", "cookie", "source_ip", "path"};
    char p[JPATH_MAX];
    if (!want(ld, v, path, "object"))
        return;
    check_keys(ld, v, path, hash_on_keys, ARRAY_LEN(hash_on_keys));
    const char *first = NULL;
    for (size_t k = 0; k < ARRAY_LEN(hash_on_keys); k++) {
        json_t *m = json_object_get(v, hash_on_keys[k]);
        if (!m)
            continue;
        if (first) {
            errf(ld, path, "\"%s\" and \"%s\" exclude each other; hash on one", first,
                 hash_on_keys[k]);
            return;
        }
        first = hash_on_keys[k];
        jkey(p, path, hash_on_keys[k]);
        if (k == 0 || k == 1) {
            h->kind = k == 0 ? PF_HASH_HEADER : PF_HASH_COOKIE;
            parse_hash_name(ld, m, p, hash_on_keys[k], k == 0, h->name);
        } else if (json_is_true(m)) {
            h->kind = k == 2 ? PF_HASH_SOURCE_IP : PF_HASH_PATH;
        } else {
            errf(ld, p, "expected true, found %s (write {\"%s\": true} to hash on it)",
                 json_is_false(m) ? "false" : kind(m), hash_on_keys[k]);
        }
    }
    if (!first && json_object_size(v) == 0)
        errf(ld, path,
             "empty; give one of {\"header\": NAME}, {\"cookie\": NAME}, {\"source_ip\": true}, "
             "{\"path\": true}");
}

/* The next prime at or above n (tables are small enough for trial division). */
static uint64_t next_prime(uint64_t n) {
    while (!is_prime(n))
        n++;
    return n;
}

static void parse_hash_table_size(loader *ld, json_t *v, const char *path, pf_config_cluster *c) {
    char p[JPATH_MAX];
    uint32_t size = 0;
    if (c->lb_policy == PF_LB_RING_HASH) {
        get_uint(ld, v, path, "hash_table_size", 1, RING_HASH_SIZE_MAX, &size);
    } else {
        get_uint(ld, v, path, "hash_table_size", 2, MAGLEV_SIZE_MAX, &size);
        jkey(p, path, "hash_table_size");
        uint64_t lower = size, upper = size;
        while (lower > 2 && !is_prime(lower))
            lower--;
        if (size && !is_prime(size)) {
            errf(ld, p,
                 "%u is not a prime; maglev needs a prime table size (nearest primes: %llu, "
                 "%llu)",
                 size, (unsigned long long)lower, (unsigned long long)next_prime(upper));
            return;
        }
        /* Static endpoints are known now; each needs slots, and Maglev's evenness needs
         * M >> N (the paper uses M > 100 N). */
        size_t endpoints = json_array_size(json_object_get(v, "endpoints"));
        if (size && size < endpoints) {
            errf(ld, p,
                 "table size %u is smaller than the %zu endpoints; use a prime of at least 100 "
                 "per endpoint, e.g. %llu",
                 size, endpoints, (unsigned long long)next_prime(100u * (uint64_t)endpoints));
            return;
        }
    }
    if (size)
        c->hash_table_size = size;
}

/* lb_policy and the settings that go with it. A setting the chosen policy would ignore is
 * an error, like an unknown key: whoever wrote it expects it to do something. */
static void parse_cluster_lb(loader *ld, json_t *v, const char *path, pf_config_cluster *c) {
    char p[JPATH_MAX], q[QUOTE_MAX];
    c->lb_policy = PF_LB_ROUND_ROBIN;
    json_t *policy = get(ld, v, path, "lb_policy", "string", false);
    if (policy) {
        const char *s = json_string_value(policy);
        size_t i = 0;
        while (i < ARRAY_LEN(lb_policy_names) && strcmp(s, lb_policy_names[i]) != 0)
            i++;
        if (strcmp(s, "ewma") == 0) {
            c->lb_policy = PF_LB_LEAST_RESPONSE_TIME;
        } else if (i < ARRAY_LEN(lb_policy_names)) {
            c->lb_policy = (pf_lb_policy)i;
        } else {
            textlist tl = {0};
            textlist_join(&tl, lb_policy_names, ARRAY_LEN(lb_policy_names));
            textlist_add(&tl, "ewma");
            errf(ld, jkey(p, path, "lb_policy"), "unknown lb_policy %s; known policies: %s",
                 qstr(q, s), tl.buf);
            return; /* the settings below cannot be judged without a policy */
        }
    }
    const char *name = config_lb_policy_name(c->lb_policy);
    bool hashing = is_hash_policy(c->lb_policy);
    json_t *hash_on = json_object_get(v, "hash_on");
    if (hash_on && !hashing)
        errf(ld, jkey(p, path, "hash_on"),
             "hash_on is used only by ring_hash and maglev, not by lb_policy \"%s\"", name);
    else if (hash_on)
        parse_hash_on(ld, hash_on, jkey(p, path, "hash_on"), &c->hash_on);
    else if (hashing)
        errf(ld, path,
             "lb_policy \"%s\" needs \"hash_on\": {\"header\": NAME}, {\"cookie\": NAME}, "
             "{\"source_ip\": true} or {\"path\": true}",
             name);

    if (hashing) {
        c->hash_table_size =
            c->lb_policy == PF_LB_MAGLEV ? PF_DEFAULT_MAGLEV_SIZE : PF_DEFAULT_RING_HASH_SIZE;
        parse_hash_table_size(ld, v, path, c);
    } else if (json_object_get(v, "hash_table_size")) {
        errf(ld, jkey(p, path, "hash_table_size"),
             "hash_table_size is used only by ring_hash and maglev, not by lb_policy \"%s\"", name);
    }

    if (c->lb_policy == PF_LB_LEAST_RESPONSE_TIME) {
        c->ewma_decay_ms = PF_DEFAULT_EWMA_DECAY_MS;
        get_duration(ld, v, path, "ewma_decay", true, &c->ewma_decay_ms);
    } else if (json_object_get(v, "ewma_decay")) {
        errf(ld, jkey(p, path, "ewma_decay"),
             "ewma_decay is used only by least_response_time, not by lb_policy \"%s\"", name);
    }
    get_duration(ld, v, path, "slow_start", false, &c->slow_start_ms);
}

static void parse_cluster(loader *ld, json_t *v, const char *path, pf_config_cluster *c) {
    char p[JPATH_MAX], ep[JPATH_MAX];
    c->lb_policy = PF_LB_ROUND_ROBIN;
    c->connect_timeout_ms = PF_DEFAULT_CONNECT_TIMEOUT_MS;
    c->response_timeout_ms = PF_DEFAULT_RESPONSE_TIMEOUT_MS;
    c->body_timeout_ms = PF_DEFAULT_BODY_TIMEOUT_MS;
    c->upstream_idle_timeout_ms = PF_DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS;
    c->max_idle_per_endpoint = PF_DEFAULT_MAX_IDLE_PER_ENDPOINT;
    if (!want(ld, v, path, "object"))
        return;
    check_keys(ld, v, path, cluster_keys, ARRAY_LEN(cluster_keys));
    get_name(ld, v, path, c->name);

    parse_cluster_lb(ld, v, path, c);

    /* An empty list is allowed: a cluster may be declared before its endpoints exist,
     * and the proxy answers 503 for it meanwhile. */
    json_t *eps = get(ld, v, path, "endpoints", "array",
                      !parse_cluster_k8s(ld, v, path, c) && parse_cluster_dns(ld, v, path, c));
    if (eps && json_array_size(eps) > 0) {
        c->endpoints = alloc_array(ld, json_array_size(eps), sizeof *c->endpoints);
        if (c->endpoints) {
            c->endpoint_count = json_array_size(eps);
            jkey(p, path, "endpoints");
            for (size_t i = 0; i < c->endpoint_count; i++) {
                pf_config_endpoint *e = &c->endpoints[i];
                parse_endpoint(ld, json_array_get(eps, i), jidx(ep, p, i), e);
                for (size_t j = 0; j < i && e->addr.len; j++) {
                    if (strcmp(c->endpoints[j].addr.text, e->addr.text) == 0) {
                        errf(ld, ep, "duplicate endpoint %s (also %s[%zu])", e->addr.text, p, j);
                        break;
                    }
                }
            }
        }
    }

    get_duration(ld, v, path, "connect_timeout", true, &c->connect_timeout_ms);
    get_duration(ld, v, path, "response_timeout", true, &c->response_timeout_ms);
    get_duration(ld, v, path, "body_timeout", true, &c->body_timeout_ms);
    get_duration(ld, v, path, "idle_timeout", true, &c->upstream_idle_timeout_ms);
    get_uint(ld, v, path, "max_idle_per_endpoint", 0, MAX_IDLE_PER_ENDPOINT_MAX,
             &c->max_idle_per_endpoint);
    parse_cluster_resilience(ld, v, path, c);
    parse_health_check(ld, v, path, &c->health_check);
    parse_outlier(ld, v, path, &c->outlier);
}

static void parse_clusters(loader *ld, json_t *arr, pf_config *cfg) {
    char cp[JPATH_MAX], p[JPATH_MAX], q[QUOTE_MAX];
    cfg->clusters = alloc_array(ld, json_array_size(arr), sizeof *cfg->clusters);
    if (!cfg->clusters)
        return;
    cfg->cluster_count = json_array_size(arr);
    for (size_t i = 0; i < cfg->cluster_count; i++) {
        pf_config_cluster *c = &cfg->clusters[i];
        parse_cluster(ld, json_array_get(arr, i), jidx(cp, "$.clusters", i), c);
        for (size_t j = 0; j < i && c->name[0]; j++) {
            if (strcmp(cfg->clusters[j].name, c->name) == 0) {
                errf(ld, jkey(p, cp, "name"), "duplicate cluster name %s (also $.clusters[%zu])",
                     qstr(q, c->name), j);
                break;
            }
        }
    }
}

static void resolve_routes(loader *ld, pf_config *cfg) {
    char p[JPATH_MAX], q[QUOTE_MAX];
    for (size_t li = 0; li < cfg->listener_count; li++) {
        pf_config_listener *l = &cfg->listeners[li];
        for (size_t ri = 0; ri < l->route_count; ri++) {
            pf_config_route *r = &l->routes[ri];
            if (!r->cluster[0])
                continue;
            size_t ci = 0;
            while (ci < cfg->cluster_count && strcmp(cfg->clusters[ci].name, r->cluster) != 0)
                ci++;
            if (ci < cfg->cluster_count) {
                r->cluster_index = ci;
                continue;
            }
            textlist tl = {0};
            for (size_t i = 0; i < cfg->cluster_count; i++)
                if (cfg->clusters[i].name[0])
                    textlist_add(&tl, cfg->clusters[i].name);
            mark_cut(p, sizeof p,
                     snprintf(p, sizeof p, "$.listeners[%zu].routes[%zu].cluster", li, ri));
            if (tl.len)
                errf(ld, p, "unknown cluster %s; defined clusters: %s", qstr(q, r->cluster),
                     tl.buf);
            else
                errf(ld, p, "unknown cluster %s; no clusters are defined in $.clusters",
                     qstr(q, r->cluster));
        }
    }
}

/* ---- top level ----------------------------------------------------------------------- */

/* The zone this pilotfish runs in, for zone-aware routing: config first, then the
 * downward-API variables a pod spec usually sets. */
static void parse_local_zone(loader *ld, json_t *root, pf_config *cfg) {
    char q[QUOTE_MAX];
    const char *zone = NULL;
    json_t *v = get(ld, root, "$", "local_zone", "string", false);
    if (v)
        zone = json_string_value(v);
    else if (getenv("POD_ZONE") && *getenv("POD_ZONE"))
        zone = getenv("POD_ZONE");
    else if (getenv("NODE_ZONE") && *getenv("NODE_ZONE"))
        zone = getenv("NODE_ZONE");
    if (!zone)
        return;
    if (strlen(zone) >= PF_NAME_MAX) {
        errf(ld, "$.local_zone", "zone %s is longer than %d characters", qstr(q, zone),
             PF_NAME_MAX - 1);
        return;
    }
    memcpy(cfg->local_zone, zone, strlen(zone) + 1);
}

/* $.dns: the resolver. Without "resolvers", c-ares reads /etc/resolv.conf (servers, search
 * domains, ndots). */
static void parse_dns(loader *ld, json_t *root, pf_config *cfg) {
    char p[JPATH_MAX], q[QUOTE_MAX];
    pf_error err;
    cfg->dns.timeout_ms = PF_DEFAULT_DNS_TIMEOUT_MS;
    cfg->dns.tries = PF_DEFAULT_DNS_TRIES;
    json_t *v = get(ld, root, "$", "dns", "object", false);
    if (!v)
        return;
    check_keys(ld, v, "$.dns", dns_keys, ARRAY_LEN(dns_keys));
    json_t *list = get(ld, v, "$.dns", "resolvers", "array", false);
    if (list && json_array_size(list) == 0)
        errf(ld, "$.dns.resolvers",
             "must not be empty; leave \"resolvers\" out to use the servers of /etc/resolv.conf");
    if (list && json_array_size(list) > PF_DNS_MAX_RESOLVERS)
        errf(ld, "$.dns.resolvers", "%zu resolvers; at most %d are allowed", json_array_size(list),
             PF_DNS_MAX_RESOLVERS);
    else if (list) {
        size_t from[PF_DNS_MAX_RESOLVERS]; /* JSON index of each accepted resolver */
        for (size_t i = 0; i < json_array_size(list); i++) {
            json_t *s = json_array_get(list, i);
            pf_sockaddr *r = &cfg->dns.resolvers[cfg->dns.resolver_count];
            jidx(p, "$.dns.resolvers", i);
            if (!want(ld, s, p, "string"))
                continue;
            if (parse_sockaddr(json_string_value(s), ADDR_ANY, r, &err) != PF_OK) {
                errf(ld, p, "%s", err.msg);
                continue;
            }
            size_t j = 0;
            while (j < cfg->dns.resolver_count && strcmp(cfg->dns.resolvers[j].text, r->text))
                j++;
            if (j < cfg->dns.resolver_count)
                errf(ld, p, "duplicate resolver %s (also $.dns.resolvers[%zu])", qstr(q, r->text),
                     from[j]);
            else
                from[cfg->dns.resolver_count++] = i;
        }
    }
    get_duration(ld, v, "$.dns", "timeout", true, &cfg->dns.timeout_ms);
    get_uint(ld, v, "$.dns", "tries", 1, DNS_TRIES_MAX, &cfg->dns.tries);
}

/* Optional string member of at most max-1 bytes copied into out. */
static void get_text(loader *ld, json_t *obj, const char *path, const char *key, char *out,
                     size_t max) {
    char p[JPATH_MAX], q[QUOTE_MAX];
    json_t *v = get(ld, obj, path, key, "string", false);
    if (!v)
        return;
    const char *s = json_string_value(v);
    if (!*s || strlen(s) >= max)
        errf(ld, jkey(p, path, key), "%s must have 1-%zu characters", qstr(q, s), max - 1);
    else
        memcpy(out, s, strlen(s) + 1);
}

/* $.kubernetes.auto_discover: which namespaces, and the settings every discovered cluster
 * gets ("cluster": the keys of a cluster, without a name or a source). */
static void parse_k8s_auto(loader *ld, json_t *v, pf_config_kubernetes *k) {
    const char *path = "$.kubernetes.auto_discover";
    char p[JPATH_MAX];
    if (!want(ld, v, path, "object"))
        return;
    check_keys(ld, v, path, k8s_auto_keys, ARRAY_LEN(k8s_auto_keys));
    k->auto_discover = true;
    json_t *ns = json_object_get(v, "namespaces");
    jkey(p, path, "namespaces");
    if (!ns) {
        errf(ld, path, "missing required key \"namespaces\" (a list, or \"all\")");
    } else if (json_is_string(ns) && strcmp(json_string_value(ns), "all") == 0) {
        k->all_namespaces = true;
    } else if (!json_is_array(ns) || json_array_size(ns) == 0) {
        errf(ld, p, "expected a non-empty list of namespaces or \"all\"");
    } else if (json_array_size(ns) > PF_K8S_MAX_NAMESPACES) {
        errf(ld, p, "%zu namespaces; at most %d are allowed (or use \"all\")", json_array_size(ns),
             PF_K8S_MAX_NAMESPACES);
    } else if ((k->namespaces = alloc_array(ld, json_array_size(ns), sizeof *k->namespaces))) {
        for (size_t i = 0; i < json_array_size(ns); i++) {
            char ip[JPATH_MAX];
            json_t *s = json_array_get(ns, i);
            jidx(ip, p, i);
            if (!want(ld, s, ip, "string") ||
                !k8s_label(ld, ip, "namespace", json_string_value(s), 63))
                continue;
            size_t j = 0;
            while (j < k->namespace_count && strcmp(k->namespaces[j], json_string_value(s)))
                j++;
            if (j < k->namespace_count)
                errf(ld, ip, "duplicate namespace \"%s\"", json_string_value(s));
            else
                snprintf(k->namespaces[k->namespace_count++], PF_K8S_NAME_MAX, "%s",
                         json_string_value(s));
        }
    }
    /* The template is parsed as a cluster named "auto" with no endpoints of its own, so
     * every cluster key and message applies unchanged. */
    json_t *tmpl = get(ld, v, path, "cluster", "object", false);
    static const char *const reserved[] = {"name", "endpoints", "dns", "kubernetes"};
    json_t *copy = tmpl ? json_deep_copy(tmpl) : json_object();
    k->auto_cluster = calloc(1, sizeof *k->auto_cluster);
    if (!copy || !k->auto_cluster) {
        json_decref(copy);
        oom(ld);
        return;
    }
    jkey(p, path, "cluster");
    for (size_t i = 0; i < ARRAY_LEN(reserved); i++) {
        if (json_object_get(copy, reserved[i])) {
            errf(ld, p, "\"%s\" is set by auto-discovery; remove it", reserved[i]);
            json_object_del(copy, reserved[i]);
        }
    }
    json_object_set_new(copy, "name", json_string("auto"));
    json_object_set_new(copy, "endpoints", json_array());
    parse_cluster(ld, copy, p, k->auto_cluster);
    json_decref(copy);
}

/* $.kubernetes: the API server and what to discover. In a pod everything defaults to the
 * service account's files and KUBERNETES_SERVICE_HOST/PORT (resolved by discovery/). */
static void parse_kubernetes(loader *ld, json_t *root, pf_config *cfg) {
    const char *path = "$.kubernetes";
    char p[JPATH_MAX], bp[JPATH_MAX], q[QUOTE_MAX], a[32], b[32];
    pf_config_kubernetes *k = &cfg->kubernetes;
    snprintf(k->cluster_domain, sizeof k->cluster_domain, "%s", PF_DEFAULT_K8S_CLUSTER_DOMAIN);
    k->stall_timeout_ms = PF_DEFAULT_K8S_STALL_TIMEOUT_MS;
    k->request_timeout_ms = PF_DEFAULT_K8S_REQUEST_TIMEOUT_MS;
    k->connect_timeout_ms = PF_DEFAULT_K8S_CONNECT_TIMEOUT_MS;
    k->backoff_base_ms = PF_DEFAULT_K8S_BACKOFF_BASE_MS;
    k->backoff_max_ms = PF_DEFAULT_K8S_BACKOFF_MAX_MS;
    k->max_line_bytes = PF_DEFAULT_K8S_MAX_LINE_BYTES;
    k->max_list_bytes = PF_DEFAULT_K8S_MAX_LIST_BYTES;
    k->page_size = PF_DEFAULT_K8S_PAGE_SIZE;
    json_t *v = get(ld, root, "$", "kubernetes", "object", false);
    if (!v)
        return;
    k->enabled = true;
    check_keys(ld, v, path, k8s_keys, ARRAY_LEN(k8s_keys));
    get_text(ld, v, path, "api_server", k->api_server, sizeof k->api_server);
    /* TLS is always verified: a plain-HTTP API server would hand out tokens in clear. */
    if (k->api_server[0] && strncmp(k->api_server, "https://", 8) != 0) {
        errf(ld, jkey(p, path, "api_server"),
             "%s must start with https:// (the API server is always reached over verified TLS)",
             qstr(q, k->api_server));
        k->api_server[0] = '\0';
    }
    get_text(ld, v, path, "token_file", k->token_file, sizeof k->token_file);
    get_text(ld, v, path, "ca_file", k->ca_file, sizeof k->ca_file);
    get_k8s_label(ld, v, path, "namespace", "namespace", 63, false, k->namespace);
    json_t *domain = get(ld, v, path, "cluster_domain", "string", false);
    if (domain)
        parse_dns_name(ld, jkey(p, path, "cluster_domain"), json_string_value(domain),
                       k->cluster_domain);
    get_duration(ld, v, path, "stall_timeout", true, &k->stall_timeout_ms);
    get_duration(ld, v, path, "request_timeout", true, &k->request_timeout_ms);
    get_duration(ld, v, path, "connect_timeout", true, &k->connect_timeout_ms);
    json_t *backoff = get(ld, v, path, "backoff", "object", false);
    if (backoff) {
        jkey(p, path, "backoff");
        check_keys(ld, backoff, p, backoff_keys, ARRAY_LEN(backoff_keys));
        get_duration(ld, backoff, p, "base", true, &k->backoff_base_ms);
        get_duration(ld, backoff, p, "max", true, &k->backoff_max_ms);
        if (k->backoff_max_ms < k->backoff_base_ms)
            errf(ld, jkey(bp, p, "max"), "%s is less than base (%s)",
                 pf_duration_format(k->backoff_max_ms, a, sizeof a),
                 pf_duration_format(k->backoff_base_ms, b, sizeof b));
    }
    get_uint(ld, v, path, "max_line_bytes", K8S_MAX_LINE_BYTES_MIN, K8S_MAX_LINE_BYTES_MAX,
             &k->max_line_bytes);
    get_uint(ld, v, path, "max_list_bytes", K8S_MAX_LIST_BYTES_MIN, K8S_MAX_LIST_BYTES_MAX,
             &k->max_list_bytes);
    get_uint(ld, v, path, "page_size", 1, K8S_PAGE_SIZE_MAX, &k->page_size);
    json_t *autod = json_object_get(v, "auto_discover");
    if (autod)
        parse_k8s_auto(ld, autod, k);
}

static void parse_root(loader *ld, json_t *root, pf_config *cfg) {
    pf_error err;
    cfg->access_log = true;
    cfg->drain_timeout_ms = PF_DEFAULT_DRAIN_TIMEOUT_MS;
    if (parse_sockaddr(PF_DEFAULT_ADMIN_ADDRESS, ADDR_LISTEN, &cfg->admin_addr, &err) != PF_OK)
        errf(ld, "$.admin.address", "default %s: %s", PF_DEFAULT_ADMIN_ADDRESS, err.msg);
    if (!want(ld, root, "$", "object"))
        return;
    check_keys(ld, root, "$", root_keys, ARRAY_LEN(root_keys));

    json_t *admin = get(ld, root, "$", "admin", "object", false);
    if (admin) {
        check_keys(ld, admin, "$.admin", admin_keys, ARRAY_LEN(admin_keys));
        get_addr(ld, admin, "$.admin", "address", ADDR_LISTEN, false, &cfg->admin_addr);
    }
    json_t *access_log = get(ld, root, "$", "access_log", "boolean", false);
    if (access_log)
        cfg->access_log = json_is_true(access_log);
    get_uint(ld, root, "$", "workers", 1, PF_MAX_WORKERS, &cfg->workers);
    /* Zero is allowed here, unlike the other timeouts: it means "close at once". */
    get_duration(ld, root, "$", "drain_timeout", false, &cfg->drain_timeout_ms);
    get_uint(ld, root, "$", "max_connections", 1, PF_MAX_CONNECTIONS_LIMIT, &cfg->max_connections);
    parse_local_zone(ld, root, cfg);
    parse_dns(ld, root, cfg);
    parse_kubernetes(ld, root, cfg);
    ld->auto_discover = cfg->kubernetes.auto_discover;

    json_t *listeners = get(ld, root, "$", "listeners", "array", true);
    if (listeners)
        parse_listeners(ld, listeners, cfg);
    json_t *clusters = get(ld, root, "$", "clusters", "array", true);
    if (clusters)
        parse_clusters(ld, clusters, cfg);
    /* Without a usable clusters array every route would fail to resolve; the one message
     * about $.clusters says it all. */
    if (clusters && !ld->oom)
        resolve_routes(ld, cfg);
}

static int load_buffer(const char *text, size_t len, const char *source, pf_config **out,
                       pf_errlist *errs) {
    loader ld = {.source = source, .errs = errs};
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        if (jerr.line > 0)
            pf_errlist_add(errs, "%s:%d:%d: JSON syntax error: %s", source, jerr.line, jerr.column,
                           jerr.text);
        else
            pf_errlist_add(errs, "%s: JSON syntax error: %s", source, jerr.text);
        return PF_EINVAL;
    }
    pf_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg || !(cfg->source = strdup(source))) {
        oom(&ld);
    } else {
        parse_root(&ld, root, cfg);
    }
    json_decref(root);
    if (ld.nerr > 0) {
        config_free(cfg);
        return ld.oom ? PF_ENOMEM : PF_EINVAL;
    }
    *out = cfg;
    return PF_OK;
}

int config_load_string(const char *json, const char *source, pf_config **out, pf_errlist *errs) {
    pf_errlist scratch = {0};
    pf_errlist *list = errs ? errs : &scratch;
    if (!source)
        source = "<string>";
    *out = NULL;
    int rc;
    if (!json) {
        pf_errlist_add(list, "%s: $: no config text given", source);
        rc = PF_EINVAL;
    } else {
        rc = load_buffer(json, strlen(json), source, out, list);
    }
    pf_errlist_free(&scratch);
    return rc;
}

/* Reads the whole file into a heap buffer; *len excludes the NUL added at the end. */
static int read_file(const char *path, char **data, size_t *len, pf_errlist *errs) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (!f) {
        pf_errlist_add(errs, "%s: cannot read: %s", path, strerror(errno));
        return PF_EINVAL;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= CONFIG_FILE_MAX) {
                pf_errlist_add(errs, "%s: cannot read: larger than %u MiB; is this the config?",
                               path, CONFIG_FILE_MAX / (1024u * 1024u));
                goto fail;
            }
            cap = cap ? cap * 2 : 16384;
            char *grown = realloc(buf, cap + 1);
            if (!grown) {
                pf_errlist_add(errs, "%s: cannot read: out of memory", path);
                goto fail;
            }
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                pf_errlist_add(errs, "%s: cannot read: %s", path, strerror(errno));
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    if (!buf && !(buf = malloc(1))) {
        pf_errlist_add(errs, "%s: cannot read: out of memory", path);
        return PF_ENOMEM;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return PF_OK;
fail:
    free(buf);
    fclose(f);
    return PF_EINVAL;
}

int config_load_file(const char *path, pf_config **out, pf_errlist *errs) {
    pf_errlist scratch = {0};
    pf_errlist *list = errs ? errs : &scratch;
    char *data = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = read_file(path, &data, &len, list);
    if (rc == PF_OK)
        rc = load_buffer(data, len, path, out, list);
    free(data);
    pf_errlist_free(&scratch);
    return rc;
}

/* ---- dump ---------------------------------------------------------------------------- */

/* Builders that remember the first failure, so the dump code reads as a list of fields
 * and a single check at the end decides between the text and NULL. */
typedef struct dumper {
    bool failed;
} dumper;

/* jansson's *_new setters drop the value on failure, so nothing leaks either way */
static void put(dumper *d, json_t *obj, const char *key, json_t *val) {
    if (!val || json_object_set_new(obj, key, val) != 0)
        d->failed = true;
}

static void push(dumper *d, json_t *arr, json_t *val) {
    if (!val || json_array_append_new(arr, val) != 0)
        d->failed = true;
}

static void put_duration(dumper *d, json_t *obj, const char *key, uint64_t ms) {
    char buf[32];
    put(d, obj, key, json_string(pf_duration_format(ms, buf, sizeof buf)));
}

static json_t *dump_retry(dumper *d, const pf_config_retry *r) {
    json_t *o = json_object(), *on = json_array(), *codes = json_array(), *backoff = json_object();
    for (size_t k = 0; k < ARRAY_LEN(retry_on_names); k++)
        if (r->on & (1u << k))
            push(d, on, json_string(retry_on_names[k]));
    put(d, o, "on", on);
    for (size_t i = 0; i < r->status_code_count; i++)
        push(d, codes, json_integer(r->status_codes[i]));
    put(d, o, "status_codes", codes);
    put(d, o, "max_retries", json_integer(r->max_retries));
    if (r->per_try_timeout_ms)
        put_duration(d, o, "per_try_timeout", r->per_try_timeout_ms);
    put_duration(d, backoff, "base", r->backoff_base_ms);
    put_duration(d, backoff, "max", r->backoff_max_ms);
    put(d, o, "backoff", backoff);
    put(d, o, "retry_non_idempotent", json_boolean(r->non_idempotent));
    put(d, o, "buffer_bytes", json_integer(r->buffer_bytes));
    return o;
}

static json_t *dump_route(dumper *d, const pf_config_route *r) {
    json_t *route = json_object(), *match = json_object();
    char host[PF_HOST_MAX + 16];
    /* back to the form it was written in: "*", "*.local", "api.local", each with ":port" */
    const char *star = r->host_kind == PF_MATCH_HOST_EXACT ? "" : "*";
    const char *name = r->host_kind == PF_MATCH_HOST_ANY ? "" : r->host;
    int n = r->host_port >= 0 ? snprintf(host, sizeof host, "%s%s:%d", star, name, r->host_port)
                              : snprintf(host, sizeof host, "%s%s", star, name);
    mark_cut(host, sizeof host, n);
    put(d, match, "host", json_string(host));
    put(d, match, r->path_kind == PF_MATCH_PATH_EXACT ? "path" : "prefix", json_string(r->path));
    put(d, route, "match", match);
    put(d, route, "cluster", json_string(r->cluster));
    if (r->has_retry)
        put(d, route, "retry", dump_retry(d, &r->retry));
    if (r->timeout_ms)
        put_duration(d, route, "timeout", r->timeout_ms);
    return route;
}

static json_t *dump_listener(dumper *d, const pf_config_listener *l) {
    json_t *o = json_object(), *routes = json_array();
    put(d, o, "name", json_string(l->name));
    put(d, o, "address", json_string(l->addr.text));
    for (size_t i = 0; i < l->route_count; i++)
        push(d, routes, dump_route(d, &l->routes[i]));
    put(d, o, "routes", routes);
    put(d, o, "max_header_bytes", json_integer(l->max_header_bytes));
    put(d, o, "max_target_bytes", json_integer(l->max_target_bytes));
    put(d, o, "max_headers", json_integer(l->max_headers));
    put(d, o, "buffer_bytes", json_integer(l->buffer_bytes));
    put_duration(d, o, "header_timeout", l->header_timeout_ms);
    put_duration(d, o, "idle_timeout", l->idle_timeout_ms);
    put_duration(d, o, "body_timeout", l->body_timeout_ms);
    if (l->max_connections)
        put(d, o, "max_connections", json_integer(l->max_connections));
    return o;
}

static void dump_cluster_health(dumper *d, json_t *o, const pf_config_cluster *c) {
    const pf_config_health_check *hc = &c->health_check;
    const pf_config_outlier *od = &c->outlier;
    if (hc->type != PF_CHECK_NONE) {
        json_t *h = json_object();
        put(d, h, "type", json_string(check_type_names[hc->type - 1]));
        if (hc->type == PF_CHECK_HTTP) {
            json_t *expected = json_array();
            put(d, h, "path", json_string(hc->path));
            if (hc->host[0])
                put(d, h, "host", json_string(hc->host));
            for (size_t i = 0; i < hc->expected_count; i++) {
                char text[16];
                const pf_status_range *r = &hc->expected[i];
                if (r->lo == r->hi)
                    snprintf(text, sizeof text, "%u", r->lo);
                else
                    snprintf(text, sizeof text, "%u-%u", r->lo, r->hi);
                push(d, expected, json_string(text));
            }
            put(d, h, "expected_statuses", expected);
        }
        put_duration(d, h, "interval", hc->interval_ms);
        put_duration(d, h, "timeout", hc->timeout_ms);
        put_duration(d, h, "jitter", hc->jitter_ms);
        put(d, h, "unhealthy_threshold", json_integer(hc->unhealthy_threshold));
        put(d, h, "healthy_threshold", json_integer(hc->healthy_threshold));
        put(d, h, "initial", json_string(hc->initial_healthy ? "healthy" : "unhealthy"));
        if (hc->send_len)
            put(d, h, "send", json_stringn(hc->send, hc->send_len));
        if (hc->expect_len)
            put(d, h, "expect", json_stringn(hc->expect, hc->expect_len));
        put(d, o, "health_check", h);
    }
    if (od->enabled) {
        json_t *h = json_object();
        put(d, h, "consecutive_5xx", json_integer(od->consecutive_5xx));
        put(d, h, "consecutive_gateway_failure", json_integer(od->consecutive_gateway_failure));
        put_duration(d, h, "base_ejection_time", od->base_ejection_time_ms);
        put_duration(d, h, "max_ejection_time", od->max_ejection_time_ms);
        put(d, h, "max_ejection_percent", json_integer(od->max_ejection_percent));
        put_duration(d, h, "interval", od->interval_ms);
        put(d, o, "outlier_detection", h);
    }
}

/* A DNS cluster has "dns" in place of "endpoints", as in the file. */
static void dump_cluster_dns(dumper *d, json_t *o, const pf_config_cluster *c) {
    const pf_config_cluster_dns *dns = &c->dns;
    if (!dns->name[0])
        return;
    json_t *v = json_object();
    json_object_del(o, "endpoints");
    put(d, v, "name", json_string(dns->name));
    put(d, v, "record", json_string(config_dns_record_name(dns->record)));
    if (dns->port)
        put(d, v, "port", json_integer(dns->port));
    put_duration(d, v, "min_refresh", dns->min_refresh_ms);
    put_duration(d, v, "max_refresh", dns->max_refresh_ms);
    put_duration(d, v, "hold", dns->hold_ms);
    put(d, o, "dns", v);
}

/* A Kubernetes cluster has "kubernetes" in place of "endpoints", as in the file. */
static void dump_cluster_k8s(dumper *d, json_t *o, const pf_config_cluster *c) {
    const pf_config_cluster_k8s *k = &c->kubernetes;
    if (!k->service[0])
        return;
    json_t *v = json_object();
    json_object_del(o, "endpoints");
    put(d, v, "service", json_string(k->service));
    if (k->namespace[0])
        put(d, v, "namespace", json_string(k->namespace));
    if (k->port_name[0])
        put(d, v, "port", json_string(k->port_name));
    else if (k->port_number)
        put(d, v, "port", json_integer(k->port_number));
    put(d, o, "kubernetes", v);
}

static json_t *dump_cluster(dumper *d, const pf_config_cluster *c);

static void dump_kubernetes(dumper *d, json_t *root, const pf_config_kubernetes *k) {
    if (!k->enabled)
        return;
    json_t *v = json_object(), *backoff = json_object();
    static const struct {
        const char *key;
        size_t off;
    } texts[] = {{"api_server", offsetof(pf_config_kubernetes, api_server)},
                 {"token_file", offsetof(pf_config_kubernetes, token_file)},
                 {"ca_file", offsetof(pf_config_kubernetes, ca_file)},
                 {"namespace", offsetof(pf_config_kubernetes, namespace)}};
    for (size_t i = 0; i < ARRAY_LEN(texts); i++) {
        const char *s = (const char *)k + texts[i].off;
        if (*s)
            put(d, v, texts[i].key, json_string(s));
    }
    put(d, v, "cluster_domain", json_string(k->cluster_domain));
    put_duration(d, v, "stall_timeout", k->stall_timeout_ms);
    put_duration(d, v, "request_timeout", k->request_timeout_ms);
    put_duration(d, v, "connect_timeout", k->connect_timeout_ms);
    put_duration(d, backoff, "base", k->backoff_base_ms);
    put_duration(d, backoff, "max", k->backoff_max_ms);
    put(d, v, "backoff", backoff);
    put(d, v, "max_line_bytes", json_integer(k->max_line_bytes));
    put(d, v, "max_list_bytes", json_integer(k->max_list_bytes));
    put(d, v, "page_size", json_integer(k->page_size));
    if (k->auto_discover) {
        json_t *a = json_object(), *ns = json_array();
        for (size_t i = 0; i < k->namespace_count; i++)
            push(d, ns, json_string(k->namespaces[i]));
        put(d, a, "namespaces", k->all_namespaces ? (json_decref(ns), json_string("all")) : ns);
        if (k->auto_cluster) {
            json_t *c = dump_cluster(d, k->auto_cluster);
            if (c) {
                json_object_del(c, "name");
                json_object_del(c, "endpoints");
            }
            put(d, a, "cluster", c);
        }
        put(d, v, "auto_discover", a);
    }
    put(d, root, "kubernetes", v);
}

static void dump_dns(dumper *d, json_t *root, const pf_config_dns *dns) {
    json_t *v = json_object();
    if (dns->resolver_count) {
        json_t *list = json_array();
        for (size_t i = 0; i < dns->resolver_count; i++)
            push(d, list, json_string(dns->resolvers[i].text));
        put(d, v, "resolvers", list);
    }
    put_duration(d, v, "timeout", dns->timeout_ms);
    put(d, v, "tries", json_integer(dns->tries));
    put(d, root, "dns", v);
}

static void dump_cluster_lb(dumper *d, json_t *o, const pf_config_cluster *c) {
    static const char *const kinds[] = {[PF_HASH_HEADER] = "header",
                                        [PF_HASH_COOKIE] = "cookie",
                                        [PF_HASH_SOURCE_IP] = "source_ip",
                                        [PF_HASH_PATH] = "path"};
    if (c->hash_on.kind != PF_HASH_NONE) {
        json_t *h = json_object();
        if (c->hash_on.kind == PF_HASH_HEADER || c->hash_on.kind == PF_HASH_COOKIE)
            put(d, h, kinds[c->hash_on.kind], json_string(c->hash_on.name));
        else
            put(d, h, kinds[c->hash_on.kind], json_true());
        put(d, o, "hash_on", h);
    }
    if (c->hash_table_size)
        put(d, o, "hash_table_size", json_integer(c->hash_table_size));
    if (c->lb_policy == PF_LB_LEAST_RESPONSE_TIME)
        put_duration(d, o, "ewma_decay", c->ewma_decay_ms);
    put_duration(d, o, "slow_start", c->slow_start_ms);
}

static json_t *dump_cluster(dumper *d, const pf_config_cluster *c) {
    json_t *o = json_object(), *eps = json_array();
    put(d, o, "name", json_string(c->name));
    put(d, o, "lb_policy", json_string(config_lb_policy_name(c->lb_policy)));
    dump_cluster_lb(d, o, c);
    for (size_t i = 0; i < c->endpoint_count; i++) {
        const pf_config_endpoint *e = &c->endpoints[i];
        json_t *ep = json_object();
        put(d, ep, "address", json_string(e->addr.text));
        put(d, ep, "weight", json_integer(e->weight));
        put(d, ep, "priority", json_integer(e->priority));
        if (e->zone[0])
            put(d, ep, "zone", json_string(e->zone));
        push(d, eps, ep);
    }
    put(d, o, "endpoints", eps);
    put_duration(d, o, "connect_timeout", c->connect_timeout_ms);
    put_duration(d, o, "response_timeout", c->response_timeout_ms);
    put_duration(d, o, "body_timeout", c->body_timeout_ms);
    put_duration(d, o, "idle_timeout", c->upstream_idle_timeout_ms);
    put(d, o, "max_idle_per_endpoint", json_integer(c->max_idle_per_endpoint));
    put(d, o, "retry", dump_retry(d, &c->retry));
    json_t *budget = json_object(), *breakers = json_object();
    put(d, budget, "percent", json_integer(c->budget_percent));
    put(d, budget, "min_concurrency", json_integer(c->budget_min_concurrency));
    put(d, o, "retry_budget", budget);
    put(d, breakers, "max_connections", json_integer(c->breakers.max_connections));
    put(d, breakers, "max_pending_requests", json_integer(c->breakers.max_pending_requests));
    put(d, breakers, "max_requests", json_integer(c->breakers.max_requests));
    put(d, breakers, "max_retries", json_integer(c->breakers.max_retries));
    put(d, o, "circuit_breakers", breakers);
    put(d, o, "zone_aware", json_boolean(c->zone_aware));
    put(d, o, "panic_threshold", json_integer(c->panic_threshold));
    dump_cluster_health(d, o, c);
    dump_cluster_dns(d, o, c);
    dump_cluster_k8s(d, o, c);
    return o;
}

char *config_dump_json(const pf_config *cfg) {
    if (!cfg)
        return NULL;
    dumper d = {0};
    json_t *root = json_object(), *admin = json_object();
    json_t *listeners = json_array(), *clusters = json_array();
    put(&d, admin, "address", json_string(cfg->admin_addr.text));
    put(&d, root, "admin", admin);
    put(&d, root, "access_log", json_boolean(cfg->access_log));
    /* 0 means "not set" and is not a valid value in the file, so leave it out */
    if (cfg->workers)
        put(&d, root, "workers", json_integer(cfg->workers));
    put_duration(&d, root, "drain_timeout", cfg->drain_timeout_ms);
    /* 0 is "derive from the open file limit at start", which is not a value of the file */
    if (cfg->max_connections)
        put(&d, root, "max_connections", json_integer(cfg->max_connections));
    if (cfg->local_zone[0])
        put(&d, root, "local_zone", json_string(cfg->local_zone));
    for (size_t i = 0; i < cfg->listener_count; i++)
        push(&d, listeners, dump_listener(&d, &cfg->listeners[i]));
    put(&d, root, "listeners", listeners);
    for (size_t i = 0; i < cfg->cluster_count; i++)
        push(&d, clusters, dump_cluster(&d, &cfg->clusters[i]));
    put(&d, root, "clusters", clusters);
    dump_dns(&d, root, &cfg->dns);
    dump_kubernetes(&d, root, &cfg->kubernetes);

    char *text = d.failed ? NULL : json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return text;
}

uint32_t config_default_max_connections(uint64_t fd_limit) {
    /* The reserve grows with the limit (a tenth) so that many health-checked endpoints
     * still find descriptors; the fixed part covers small limits. */
    uint64_t reserve = fd_limit / 10 > PF_FD_RESERVE ? fd_limit / 10 : PF_FD_RESERVE;
    uint64_t n = fd_limit > reserve ? (fd_limit - reserve) / 2 : 0;
    if (n < 1)
        return 1;
    return n > PF_MAX_CONNECTIONS_LIMIT ? PF_MAX_CONNECTIONS_LIMIT : (uint32_t)n;
}

void config_free(pf_config *cfg) {
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->listener_count; i++)
        free(cfg->listeners[i].routes);
    free(cfg->listeners);
    for (size_t i = 0; i < cfg->cluster_count; i++)
        free(cfg->clusters[i].endpoints);
    free(cfg->clusters);
    free(cfg->kubernetes.namespaces);
    if (cfg->kubernetes.auto_cluster)
        free(cfg->kubernetes.auto_cluster->endpoints);
    free(cfg->kubernetes.auto_cluster);
    free(cfg->source);
    free(cfg);
}
