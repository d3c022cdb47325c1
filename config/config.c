/* Config loading: JSON text (jansson) -> a validated, immutable pf_config.
 * Every check lives here so the rest of pilotfish can trust a pf_config as given. The keys
 * of each object are the tables at the end of this file, one row per key (config_int.h);
 * the engine in schema.c turns them into defaults, parsing and its messages, the dump and
 * the diff. What a row cannot say is the row's own parser or the object's finish: a host
 * pattern, keys that exclude each other, a route naming a cluster. Errors are collected,
 * not returned at the first: whoever fixes a file wants the whole list in one run, each as
 * "<file>: <json path>: <what is wrong>". */
#include "config/config.h"
#include "config/config_int.h"
#include "core/time.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A config is a few kilobytes; anything this big is the wrong file, not a config. */
#define CONFIG_FILE_MAX (16u * 1024u * 1024u)

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
#define RETRY_BUFFER_BYTES_MAX (16u * 1024u * 1024u)
#define BREAKER_MAX 1000000u
#define BUDGET_MIN_CONCURRENCY_MAX 100000u
#define CHECK_THRESHOLD_MAX 1000u
#define OUTLIER_CONSECUTIVE_MAX 100000u
#define LATENCY_FACTOR_MAX 1000u
#define LATENCY_MIN_REQUESTS_MAX 1000000u

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
static const char *const lb_policy_alias_names[] = {"ewma"};
static const int lb_policy_alias_values[] = {PF_LB_LEAST_RESPONSE_TIME};

static const char *const k8s_auto_mode_names[] = {
    [PF_K8S_WATCH_ALL] = "watch_all",
    [PF_K8S_ON_DEMAND] = "on_demand",
};

static const char *const protocol_names[] = {
    [PF_PROTO_HTTP1] = "http1",
    [PF_PROTO_H2] = "h2",
    [PF_PROTO_DOWNSTREAM] = "downstream",
};

static const char *const listener_protocol_names[] = {
    [PF_LISTEN_HTTP] = "http",
    [PF_LISTEN_TCP] = "tcp",
};

/* Bit k of pf_config_retry.on is retry_on_names[k]. */
static const char *const retry_on_names[] = {"connect-failure",
                                             "reset",
                                             "gateway-error",
                                             "5xx",
                                             "retriable-status-codes",
                                             "cancelled",
                                             "deadline-exceeded",
                                             "resource-exhausted",
                                             "unavailable",
                                             "internal"};
static const char *const dns_record_names[] = {
    [PF_DNS_RECORD_A] = "A",
    [PF_DNS_RECORD_AAAA] = "AAAA",
    [PF_DNS_RECORD_A_AAAA] = "A+AAAA",
    [PF_DNS_RECORD_SRV] = "SRV",
};
/* Indexed by pf_check_type minus one: "none" is no type a file can name. */
static const char *const check_type_names[] = {"http", "tcp", "grpc"};

/* KT_ENUM rows store through an int. */
_Static_assert(sizeof(pf_lb_policy) == sizeof(int) && sizeof(pf_dns_record) == sizeof(int) &&
                   sizeof(pf_upstream_protocol) == sizeof(int) &&
                   sizeof(pf_listener_protocol) == sizeof(int) &&
                   sizeof(pf_check_type) == sizeof(int),
               "enum fields of the schema are int-sized");

void textlist_add(textlist *tl, const char *item) {
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

void textlist_join(textlist *tl, const char *const *items, size_t count) {
    for (size_t i = 0; i < count; i++)
        textlist_add(tl, items[i]);
}

/* Quotes user text JSON-style so a stray newline or quote cannot break the one line per
 * error format, and caps it so one huge value cannot push everything else out. */
const char *qstr(char buf[QUOTE_MAX], const char *s) {
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

void errf(loader *ld, const char *path, const char *fmt, ...) {
    char msg[PF_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pf_errlist_add(ld->errs, "%s: %s: %s", ld->source, path, msg);
    ld->nerr++;
}

void oom(loader *ld) {
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

const char *jkey(char buf[JPATH_MAX], const char *parent, const char *key) {
    return mark_cut(buf, JPATH_MAX, snprintf(buf, JPATH_MAX, "%s.%s", parent, key));
}

const char *jidx(char buf[JPATH_MAX], const char *parent, size_t i) {
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

/* The address parser with the hint the row's use asks for (KF_LISTEN, KF_ENDPOINT). */
int config_parse_sockaddr_for(const char *text, unsigned flags, pf_sockaddr *out, pf_error *err) {
    addr_use use = (flags & KF_LISTEN)     ? ADDR_LISTEN
                   : (flags & KF_ENDPOINT) ? ADDR_ENDPOINT
                                           : ADDR_ANY;
    return parse_sockaddr(text, use, out, err);
}

/* ---- typed access to JSON values ----------------------------------------------------- */

const char *json_kind(json_t *v) {
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

bool want(loader *ld, json_t *v, const char *path, const char *k) {
    if (strcmp(json_kind(v), k) == 0)
        return true;
    errf(ld, path, "expected %s, found %s", k, json_kind(v));
    return false;
}

/* jansson's *_new setters drop the value on failure, so nothing leaks either way */
void put(dumper *d, json_t *obj, const char *key, json_t *val) {
    if (!val || json_object_set_new(obj, key, val) != 0)
        d->failed = true;
}

void push(dumper *d, json_t *arr, json_t *val) {
    if (!val || json_array_append_new(arr, val) != 0)
        d->failed = true;
}

json_t *json_duration(uint64_t ms) {
    char buf[32];
    return json_string(pf_duration_format(ms, buf, sizeof buf));
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

/* hash_on is one of four keys, each its own kind of value: a choice, not an object of
 * settings, so it is checked here rather than by a table. */
static void parse_hash_on(loader *ld, json_t *v, const char *path, pf_config_hash_on *h) {
    static const char *const hash_on_keys[] = {"header", "cookie", "source_ip", "path"};
    char p[JPATH_MAX], q[QUOTE_MAX];
    if (!want(ld, v, path, "object"))
        return;
    for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
        const char *key = json_object_iter_key(it);
        size_t i = 0;
        while (i < ARRAY_LEN(hash_on_keys) && strcmp(key, hash_on_keys[i]) != 0)
            i++;
        if (i == ARRAY_LEN(hash_on_keys)) {
            textlist tl = {0};
            textlist_join(&tl, hash_on_keys, ARRAY_LEN(hash_on_keys));
            errf(ld, path, "unknown key %s; known keys: %s", qstr(q, key), tl.buf);
        }
    }
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
                 json_is_false(m) ? "false" : json_kind(m), hash_on_keys[k]);
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

/* ---- rows: the parsers and dumps of keys a type alone cannot check ------------------------ */

/* Row builders: each sets only the fields it names, so a row adds flags, a parser or a doc
 * default after it without initialising a field twice. */
#define K_BOOL(st, key, f, dflt, d)                                                                \
    .name = key, .type = KT_BOOL, .off = FIELD_OF(st, f, bool), .def = dflt, .doc = d
#define K_UINT(st, key, f, lo, hi, dflt, d)                                                        \
    .name = key, .type = KT_UINT, .off = FIELD_OF(st, f, uint32_t), .min = lo, .max = hi,          \
    .def = dflt, .doc = d
#define K_DUR(st, key, f, dflt, d)                                                                 \
    .name = key, .type = KT_DURATION, .off = FIELD_OF(st, f, uint64_t), .def = dflt, .doc = d
#define K_TEXT(st, key, f, dflt, d)                                                                \
    .name = key, .type = KT_TEXT, .off = offsetof(st, f), .size = sizeof(((st *)0)->f),            \
    .def_text = dflt, .doc = d
#define K_ADDR(st, key, f, dflt, d)                                                                \
    .name = key, .type = KT_ADDR, .off = FIELD_OF(st, f, pf_sockaddr), .def_text = dflt, .doc = d
#define K_ENUM(st, key, f, T, list, base, dflt, nn, nns, d)                                        \
    .name = key, .type = KT_ENUM, .off = FIELD_OF(st, f, T), .names = list,                        \
    .name_count = ARRAY_LEN(list), .name_base = base, .def = dflt, .noun = nn, .nouns = nns,       \
    .doc = d
#define K_OBJ(st, key, f, s, d)                                                                    \
    .name = key, .type = KT_OBJECT, .off = offsetof(st, f), .sub = &s, .doc = d
/* An object in the file whose keys are fields of the enclosing struct. */
#define K_INLINE(key, s, d) .name = key, .type = KT_OBJECT, .off = 0, .sub = &s, .doc = d
#define K_ARRAY(st, key, f, n, s, d)                                                               \
    .name = key, .type = KT_ARRAY, .off = offsetof(st, f), .count_off = FIELD_OF(st, n, size_t),   \
    .sub = &s, .doc = d
#define K_CUSTOM(key, what, d) .name = key, .type = KT_CUSTOM, .type_doc = what, .doc = d
#define SCHEMA_KEYS(rows) .keys = rows, .count = ARRAY_LEN(rows)

#define FIELD(base, k, T) ((T *)(void *)((char *)(base) + (k)->off))

static bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* Listener and cluster names. Copies the name even when its characters are bad, so routes
 * naming the cluster still resolve and one typo gives one message, not a cascade. */
static void parse_name(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                       const key_def *k) {
    char q[QUOTE_MAX], c[16];
    if (!want(ld, v, p, "string"))
        return;
    const char *s = json_string_value(v);
    size_t n = strlen(s);
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
    memcpy(FIELD(base, k, char), s, n + 1);
}

/* ---- routes ---- */

static void init_match_host(void *base, const key_def *k) {
    pf_config_route *r = base;
    r->host_kind = PF_MATCH_HOST_ANY;
    r->host[0] = '\0';
    r->host_port = -1;
}

static void parse_match_host(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                             const key_def *k) {
    if (want(ld, v, p, "string"))
        parse_host(ld, p, json_string_value(v), base);
}

/* tcp routes: a TLS server name pattern, like a host without a port (RFC 6066 3: SNI
 * carries a DNS name, never a port). */
static void parse_match_sni(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                            const key_def *k) {
    char q[QUOTE_MAX];
    if (!want(ld, v, p, "string"))
        return;
    const char *text = json_string_value(v);
    if (strchr(text, ':')) {
        errf(ld, p, "server name %s has a port; SNI carries a name only, e.g. \"db.local\"",
             qstr(q, text));
        return;
    }
    pf_config_route *r = base, tmp = {.host_port = -1};
    size_t errors = ld->nerr;
    parse_host(ld, p, text, &tmp);
    if (ld->nerr != errors)
        return;
    r->has_sni = true;
    r->sni_kind = tmp.host_kind;
    memcpy(r->sni, tmp.host, sizeof r->sni);
}

static json_t *dump_match_sni(dumper *d, const void *base, const key_def *k) {
    const pf_config_route *r = base;
    if (!r->has_sni)
        return NULL;
    char name[PF_HOST_MAX + 2];
    int n = snprintf(name, sizeof name, "%s%s", r->sni_kind == PF_MATCH_HOST_EXACT ? "" : "*",
                     r->sni_kind == PF_MATCH_HOST_ANY ? "" : r->sni);
    mark_cut(name, sizeof name, n);
    return json_string(name);
}

/* Back to the form it was written in: "*", "*.local", "api.local", each with ":port". */
static json_t *dump_match_host(dumper *d, const void *base, const key_def *k) {
    const pf_config_route *r = base;
    char host[PF_HOST_MAX + 16];
    const char *star = r->host_kind == PF_MATCH_HOST_EXACT ? "" : "*";
    const char *name = r->host_kind == PF_MATCH_HOST_ANY ? "" : r->host;
    int n = r->host_port >= 0 ? snprintf(host, sizeof host, "%s%s:%d", star, name, r->host_port)
                              : snprintf(host, sizeof host, "%s%s", star, name);
    mark_cut(host, sizeof host, n);
    return json_string(host);
}

static void init_match_path(void *base, const key_def *k) {
    pf_config_route *r = base;
    r->path_kind = PF_MATCH_PATH_PREFIX;
    memcpy(r->path, "/", 2);
}

static void check_regex(loader *ld, const char *p, const char *pattern);

static const char *const path_keys[] = {[PF_MATCH_PATH_PREFIX] = "prefix",
                                        [PF_MATCH_PATH_EXACT] = "path",
                                        [PF_MATCH_PATH_REGEX] = "regex"};

static pf_path_match path_kind_of(const char *key) {
    return strcmp(key, "path") == 0    ? PF_MATCH_PATH_EXACT
           : strcmp(key, "regex") == 0 ? PF_MATCH_PATH_REGEX
                                       : PF_MATCH_PATH_PREFIX;
}

/* "prefix", "path" and "regex" share the route's path; match_finish refuses two at once. */
static void parse_match_path(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                             const key_def *k) {
    char q[QUOTE_MAX];
    pf_config_route *r = base;
    pf_path_match kind = path_kind_of(k->name);
    if (!want(ld, v, p, "string"))
        return;
    for (size_t i = 0; i < ARRAY_LEN(path_keys); i++)
        if (i != kind && json_is_string(json_object_get(obj, path_keys[i])))
            return;
    r->path_kind = kind;
    if (kind != PF_MATCH_PATH_REGEX) {
        parse_path(ld, p, json_string_value(v), r->path);
        return;
    }
    const char *re = json_string_value(v);
    if (!re[0] || strlen(re) >= PF_PATH_MAX)
        errf(ld, p, "%s: expected a pattern of 1-%d characters", qstr(q, re), PF_PATH_MAX - 1);
    else {
        check_regex(ld, p, re);
        memcpy(r->path, re, strlen(re) + 1);
    }
}

static json_t *dump_match_path(dumper *d, const void *base, const key_def *k) {
    const pf_config_route *r = base;
    return r->path_kind == path_kind_of(k->name) ? json_string(r->path) : NULL;
}

/* ---- routes[].match.headers, .query_params, .method ---------------------------------- */

static const char *const value_kind_names[] = {
    [PF_VALUE_EXACT] = "exact",     [PF_VALUE_PREFIX] = "prefix", [PF_VALUE_SUFFIX] = "suffix",
    [PF_VALUE_PRESENT] = "present", [PF_VALUE_REGEX] = "regex",
};

/* A pattern that PCRE2 compiles, with its error where it does not. The router compiles it
 * again with match and depth limits (config/ keeps no compiled code). */
static void check_regex(loader *ld, const char *p, const char *pattern) {
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &offset, NULL);
    if (re) {
        pcre2_code_free(re);
        return;
    }
    PCRE2_UCHAR why[160];
    pcre2_get_error_message(code, why, sizeof why);
    errf(ld, p, "bad regex at offset %zu: %s", (size_t)offset, (const char *)why);
}

static void parse_value_match(loader *ld, json_t *v, const char *p, bool header,
                              pf_config_value_match *m) {
    char q[JPATH_MAX];
    if (!want(ld, v, p, "object"))
        return;
    const char *key;
    json_t *item;
    int kinds = 0;
    json_object_foreach(v, key, item) {
        jkey(q, p, key);
        if (strcmp(key, "name") == 0) {
            if (!want(ld, item, q, "string"))
                continue;
            const char *name = json_string_value(item);
            size_t n = strlen(name);
            bool token = n > 0 && n < PF_MATCH_NAME_MAX;
            for (size_t i = 0; token && header && i < n; i++)
                token = isalnum((unsigned char)name[i]) || strchr("!#$%&'*+-.^_`|~", name[i]);
            if (!token) {
                errf(ld, q,
                     header ? "expected a header name (1-%d token characters)"
                            : "expected a parameter name (1-%d characters)",
                     PF_MATCH_NAME_MAX - 1);
                continue;
            }
            for (size_t i = 0; i <= n; i++)
                m->name[i] = header ? (char)tolower((unsigned char)name[i]) : name[i];
        } else if (strcmp(key, "invert") == 0) {
            if (want(ld, item, q, "boolean"))
                m->invert = json_is_true(item);
        } else {
            size_t k = 0;
            while (k < sizeof value_kind_names / sizeof value_kind_names[0] &&
                   strcmp(key, value_kind_names[k]) != 0)
                k++;
            if (k == sizeof value_kind_names / sizeof value_kind_names[0]) {
                errf(ld, q,
                     "unknown key; known: name, exact, prefix, suffix, present, regex, "
                     "invert");
                continue;
            }
            kinds++;
            m->kind = (pf_value_match_kind)k;
            if (k == PF_VALUE_PRESENT) {
                if (want(ld, item, q, "boolean") && !json_is_true(item))
                    errf(ld, q, "only true makes sense; use \"invert\": true for absent");
                continue;
            }
            if (!want(ld, item, q, "string"))
                continue;
            const char *text = json_string_value(item);
            if (strlen(text) >= PF_MATCH_VALUE_MAX) {
                errf(ld, q, "longer than %d bytes", PF_MATCH_VALUE_MAX - 1);
                continue;
            }
            snprintf(m->value, sizeof m->value, "%s", text);
            if (k == PF_VALUE_REGEX)
                check_regex(ld, q, text);
        }
    }
    if (!json_object_get(v, "name"))
        errf(ld, p, "\"name\" is required");
    if (kinds != 1)
        errf(ld, p, "exactly one of exact, prefix, suffix, present, regex is required (found %d)",
             kinds);
}

static void parse_value_matches(loader *ld, json_t *arr, const char *path, bool header,
                                pf_config_value_match **out, size_t *count) {
    char p[JPATH_MAX];
    if (!want(ld, arr, path, "array"))
        return;
    size_t n = json_array_size(arr);
    if (n > PF_MATCHERS_MAX) {
        errf(ld, path, "%zu conditions; at most %d are allowed", n, PF_MATCHERS_MAX);
        return;
    }
    if (!(*out = alloc_array(ld, n, sizeof **out)))
        return;
    *count = n;
    for (size_t i = 0; i < n; i++)
        parse_value_match(ld, json_array_get(arr, i), jidx(p, path, i), header, &(*out)[i]);
}

static void parse_match_headers(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                                const key_def *k) {
    pf_config_route *r = base;
    parse_value_matches(ld, v, p, true, &r->headers, &r->header_count);
}

static void parse_match_query(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                              const key_def *k) {
    pf_config_route *r = base;
    parse_value_matches(ld, v, p, false, &r->query_params, &r->query_param_count);
}

static json_t *dump_value_matches(dumper *d, const pf_config_value_match *m, size_t n) {
    if (n == 0)
        return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(m[i].name));
        json_object_set_new(o, value_kind_names[m[i].kind],
                            m[i].kind == PF_VALUE_PRESENT ? json_true() : json_string(m[i].value));
        if (m[i].invert)
            json_object_set_new(o, "invert", json_true());
        push(d, arr, o);
    }
    return arr;
}

static json_t *dump_match_headers(dumper *d, const void *base, const key_def *k) {
    const pf_config_route *r = base;
    return dump_value_matches(d, r->headers, r->header_count);
}

static json_t *dump_match_query(dumper *d, const void *base, const key_def *k) {
    const pf_config_route *r = base;
    return dump_value_matches(d, r->query_params, r->query_param_count);
}

static void parse_match_method(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                               const key_def *k) {
    pf_config_route *r = base;
    if (!want(ld, v, p, "string"))
        return;
    const char *m = json_string_value(v);
    size_t n = strlen(m);
    bool ok = n > 0 && n < PF_METHOD_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = isupper((unsigned char)m[i]) || m[i] == '-' || m[i] == '_';
    if (!ok) {
        errf(ld, p, "expected an upper-case method name such as \"GET\" (1-%d characters)",
             PF_METHOD_MAX - 1);
        return;
    }
    memcpy(r->method, m, n + 1);
}

static json_t *dump_match_method(dumper *d, const void *base, const key_def *k) {
    const pf_config_route *r = base;
    return r->method[0] ? json_string(r->method) : NULL;
}

/* ---- routes[].request_headers, .response_headers ---------------------------------------- */

/* Headers an edit may not touch: connection-specific and framing fields (pilotfish writes
 * its own; RFC 9110 7.6.1, RFC 9112 6), Host, and what pilotfish itself writes on requests. */
static const char *header_edit_refusal(const char *name, bool request) {
    static const char *const hop[] = {"connection",
                                      "keep-alive",
                                      "proxy-connection",
                                      "te",
                                      "trailer",
                                      "transfer-encoding",
                                      "upgrade",
                                      "proxy-authenticate",
                                      "proxy-authorization",
                                      "content-length",
                                      "http2-settings",
                                      "host"};
    static const char *const own[] = {"x-forwarded-for", "x-forwarded-proto", "x-request-id"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (strcmp(name, hop[i]) == 0)
            return "is a hop-by-hop, framing or Host header, which pilotfish writes itself";
    for (size_t i = 0; request && i < sizeof own / sizeof own[0]; i++)
        if (strcmp(name, own[i]) == 0)
            return "is written by pilotfish on every forwarded request";
    return NULL;
}

/* A value template: text with %CLIENT_IP%, %REQUEST_ID%, %CLUSTER%, %UPSTREAM% or %%. */
static void check_template(loader *ld, const char *p, const char *t) {
    static const char *const vars[] = {"%CLIENT_IP%", "%REQUEST_ID%", "%CLUSTER%", "%UPSTREAM%",
                                       "%%"};
    for (const char *c = t; *c; c++) {
        if (*c == '\r' || *c == '\n' || *c == '\0') {
            errf(ld, p, "a header value cannot hold a line break");
            return;
        }
        if (*c != '%')
            continue;
        size_t k = 0;
        while (k < sizeof vars / sizeof vars[0] && strncmp(c, vars[k], strlen(vars[k])) != 0)
            k++;
        if (k == sizeof vars / sizeof vars[0]) {
            errf(ld, p,
                 "unknown variable at \"%.24s\"; known: %%CLIENT_IP%%, %%REQUEST_ID%%, "
                 "%%CLUSTER%%, %%UPSTREAM%% (%%%% for %%)",
                 c);
            return;
        }
        c += strlen(vars[k]) - 1;
    }
}

static bool edit_name(loader *ld, const char *p, const char *name, bool request, char *out) {
    size_t n = strlen(name);
    bool token = n > 0 && n < PF_MATCH_NAME_MAX;
    for (size_t i = 0; token && i < n; i++)
        token = isalnum((unsigned char)name[i]) || strchr("!#$%&'*+-.^_`|~", name[i]);
    if (!token) {
        errf(ld, p, "expected a header name (1-%d token characters)", PF_MATCH_NAME_MAX - 1);
        return false;
    }
    for (size_t i = 0; i <= n; i++)
        out[i] = (char)tolower((unsigned char)name[i]);
    const char *why = header_edit_refusal(out, request);
    if (why) {
        errf(ld, p, "\"%s\" %s", out, why);
        return false;
    }
    return true;
}

static void parse_edit_map(loader *ld, json_t *v, const char *p, bool request,
                           pf_config_header_edit **out, size_t *count) {
    char q[JPATH_MAX];
    if (!want(ld, v, p, "object"))
        return;
    if (json_object_size(v) > PF_HEADER_EDITS_MAX) {
        errf(ld, p, "%zu headers; at most %d are allowed", json_object_size(v),
             PF_HEADER_EDITS_MAX);
        return;
    }
    if (!(*out = alloc_array(ld, json_object_size(v), sizeof **out)))
        return;
    const char *key;
    json_t *item;
    json_object_foreach(v, key, item) {
        jkey(q, p, key);
        pf_config_header_edit *e = &(*out)[*count];
        if (!edit_name(ld, q, key, request, e->name) || !want(ld, item, q, "string"))
            continue;
        const char *text = json_string_value(item);
        if (strlen(text) >= PF_MATCH_VALUE_MAX) {
            errf(ld, q, "longer than %d bytes", PF_MATCH_VALUE_MAX - 1);
            continue;
        }
        check_template(ld, q, text);
        snprintf(e->value, sizeof e->value, "%s", text);
        (*count)++;
    }
}

static void parse_header_edits(loader *ld, json_t *v, const char *p, bool request,
                               pf_config_header_edits *e) {
    char q[JPATH_MAX], r[JPATH_MAX];
    if (!want(ld, v, p, "object"))
        return;
    const char *key;
    json_t *item;
    json_object_foreach(v, key, item) {
        jkey(q, p, key);
        if (strcmp(key, "set") == 0) {
            parse_edit_map(ld, item, q, request, &e->set, &e->set_count);
        } else if (strcmp(key, "add") == 0) {
            parse_edit_map(ld, item, q, request, &e->add, &e->add_count);
        } else if (strcmp(key, "remove") == 0) {
            if (!want(ld, item, q, "array"))
                continue;
            if (json_array_size(item) > PF_HEADER_EDITS_MAX) {
                errf(ld, q, "%zu headers; at most %d are allowed", json_array_size(item),
                     PF_HEADER_EDITS_MAX);
                continue;
            }
            if (!(e->remove = alloc_array(ld, json_array_size(item), sizeof *e->remove)))
                continue;
            for (size_t i = 0; i < json_array_size(item); i++) {
                json_t *name = json_array_get(item, i);
                jidx(r, q, i);
                if (want(ld, name, r, "string") &&
                    edit_name(ld, r, json_string_value(name), request,
                              e->remove[e->remove_count].name))
                    e->remove_count++;
            }
        } else {
            errf(ld, q, "unknown key; known: set, add, remove");
        }
    }
}

static void parse_request_headers(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                                  const key_def *k) {
    parse_header_edits(ld, v, p, true, &((pf_config_route *)base)->request_headers);
}

static void parse_response_headers(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                                   const key_def *k) {
    parse_header_edits(ld, v, p, false, &((pf_config_route *)base)->response_headers);
}

static json_t *dump_edit_map(const pf_config_header_edit *e, size_t n) {
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new(o, e[i].name, json_string(e[i].value));
    return o;
}

static json_t *dump_header_edits(dumper *d, const pf_config_header_edits *e) {
    if (!e->set_count && !e->add_count && !e->remove_count)
        return NULL;
    json_t *o = json_object();
    if (e->set_count)
        json_object_set_new(o, "set", dump_edit_map(e->set, e->set_count));
    if (e->add_count)
        json_object_set_new(o, "add", dump_edit_map(e->add, e->add_count));
    if (e->remove_count) {
        json_t *names = json_array();
        for (size_t i = 0; i < e->remove_count; i++)
            push(d, names, json_string(e->remove[i].name));
        json_object_set_new(o, "remove", names);
    }
    return o;
}

static json_t *dump_request_headers(dumper *d, const void *base, const key_def *k) {
    return dump_header_edits(d, &((const pf_config_route *)base)->request_headers);
}

static json_t *dump_response_headers(dumper *d, const void *base, const key_def *k) {
    return dump_header_edits(d, &((const pf_config_route *)base)->response_headers);
}

void config_header_edits_free(pf_config_header_edits *e) {
    free(e->set);
    free(e->add);
    free(e->remove);
    memset(e, 0, sizeof *e);
}

static void match_finish(loader *ld, json_t *v, const char *path, void *obj) {
    const char *given[ARRAY_LEN(path_keys)];
    size_t n = 0;
    for (size_t i = 0; v && i < ARRAY_LEN(path_keys); i++)
        if (json_is_string(json_object_get(v, path_keys[i])))
            given[n++] = path_keys[i];
    if (n > 1)
        errf(ld, path, "\"%s\" and \"%s\" exclude each other; use one", given[0], given[1]);
}

/* Resolved against the clusters after everything is parsed (resolve_routes); an empty
 * r->cluster means "already reported, do not resolve". */
static void parse_route_cluster(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                                const key_def *k) {
    char q[QUOTE_MAX];
    if (!want(ld, v, p, "string"))
        return;
    const char *name = json_string_value(v);
    size_t n = strlen(name);
    if (n == 0)
        errf(ld, p, "cluster name is empty");
    else if (n >= PF_NAME_MAX)
        errf(ld, p, "unknown cluster %s; cluster names are at most %d characters", qstr(q, name),
             PF_NAME_MAX - 1);
    else
        memcpy(FIELD(base, k, char), name, n + 1);
}

/* ---- retries ---- */

static void init_retry_on(void *base, const key_def *k) {
    ((pf_config_retry *)base)->on = PF_DEFAULT_RETRY_ON;
}

static void parse_retry_on(loader *ld, json_t *obj, json_t *arr, const char *path, void *base,
                           const key_def *k) {
    char p[JPATH_MAX], q[QUOTE_MAX];
    pf_config_retry *r = base;
    if (!want(ld, arr, path, "array"))
        return;
    r->on = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        jidx(p, path, i);
        if (!want(ld, v, p, "string"))
            continue;
        size_t b = 0;
        while (b < ARRAY_LEN(retry_on_names) && strcmp(json_string_value(v), retry_on_names[b]))
            b++;
        if (b == ARRAY_LEN(retry_on_names)) {
            textlist tl = {0};
            textlist_join(&tl, retry_on_names, ARRAY_LEN(retry_on_names));
            errf(ld, p, "unknown retry condition %s; known conditions: %s",
                 qstr(q, json_string_value(v)), tl.buf);
            continue;
        }
        r->on |= 1u << b;
    }
}

static json_t *dump_retry_on(dumper *d, const void *base, const key_def *k) {
    const pf_config_retry *r = base;
    json_t *on = json_array();
    for (size_t b = 0; b < ARRAY_LEN(retry_on_names); b++)
        if (r->on & (1u << b))
            push(d, on, json_string(retry_on_names[b]));
    return on;
}

/* An array of `min` to `max` strings (`items` names them in the size error): each string
 * goes to `fn` with its JSON path, anything else is an error at its index. False when the
 * array itself is refused. */
typedef void (*string_item_fn)(loader *ld, const char *path, const char *s, void *out);

static bool each_string(loader *ld, json_t *arr, const char *path, size_t min, size_t max,
                        const char *items, string_item_fn fn, void *out) {
    char p[JPATH_MAX];
    if (!want(ld, arr, path, "array"))
        return false;
    size_t n = json_array_size(arr);
    if (n < min || n > max) {
        if (min)
            errf(ld, path, "give %zu to %zu %s", min, max, items);
        else
            errf(ld, path, "at most %zu %s", max, items);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        jidx(p, path, i);
        if (want(ld, v, p, "string"))
            fn(ld, p, json_string_value(v), out);
    }
    return true;
}

static void parse_status_codes(loader *ld, json_t *obj, json_t *arr, const char *path, void *base,
                               const key_def *k) {
    char p[JPATH_MAX];
    pf_config_retry *r = base;
    if (!want(ld, arr, path, "array"))
        return;
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

static json_t *dump_status_codes(dumper *d, const void *base, const key_def *k) {
    const pf_config_retry *r = base;
    json_t *codes = json_array();
    for (size_t i = 0; i < r->status_code_count; i++)
        push(d, codes, json_integer(r->status_codes[i]));
    return codes;
}

/* routes[].upgrades: protocol tokens (RFC 9110 7.8), compared without case. */
static void init_upgrades(void *base, const key_def *k) {
    pf_config_route *r = base;
    snprintf(r->upgrades[0], sizeof r->upgrades[0], "websocket");
    r->upgrade_count = 1;
}

static void add_upgrade(loader *ld, const char *p, const char *name, void *out) {
    pf_config_route *r = out;
    size_t len = strlen(name);
    bool token = len > 0 && len < PF_UPGRADE_NAME_MAX;
    for (size_t j = 0; token && j < len; j++)
        token = isalnum((unsigned char)name[j]) || strchr("!#$%&'*+-.^_`|~/", name[j]);
    if (!token) {
        errf(ld, p, "expected a protocol name such as \"websocket\" (1-%d token characters)",
             PF_UPGRADE_NAME_MAX - 1);
        return;
    }
    char *lower = r->upgrades[r->upgrade_count++];
    for (size_t j = 0; j <= len; j++)
        lower[j] = (char)tolower((unsigned char)name[j]);
}

static void parse_upgrades(loader *ld, json_t *obj, json_t *arr, const char *path, void *base,
                           const key_def *k) {
    pf_config_route *r = base;
    r->upgrade_count = 0;
    each_string(ld, arr, path, 0, PF_UPGRADES_MAX, "upgrade protocols", add_upgrade, r);
}

static json_t *dump_upgrades(dumper *d, const void *base, const key_def *k) {
    const pf_config_route *r = base;
    json_t *names = json_array();
    for (size_t i = 0; i < r->upgrade_count; i++)
        push(d, names, json_string(r->upgrades[i]));
    return names;
}

static void retry_finish(loader *ld, json_t *v, const char *path, void *obj) {
    char p[JPATH_MAX];
    const pf_config_retry *r = obj;
    if (v && (r->on & PF_RETRY_STATUS_CODES) && r->status_code_count == 0)
        errf(ld, jkey(p, path, "status_codes"),
             "\"retriable-status-codes\" is in \"on\" but no status_codes are given");
}

static void retry_backoff_finish(loader *ld, json_t *v, const char *path, void *obj) {
    const pf_config_retry *r = obj;
    if (v && r->backoff_max_ms < r->backoff_base_ms)
        errf(ld, path, "max (%llums) is less than base (%llums)",
             (unsigned long long)r->backoff_max_ms, (unsigned long long)r->backoff_base_ms);
}

/* ---- listeners ---- */

static void parse_listeners(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                            const key_def *k) {
    if (json_is_array(v) && json_array_size(v) == 0) {
        errf(ld, p, "must not be empty; pilotfish needs at least one listener");
        return;
    }
    parse_value(ld, obj, v, p, base, k);
}

/* Names and addresses are unique, and none is the admin server's. */
static void check_listeners(loader *ld, json_t *arr, const char *path, void *base) {
    char lp[JPATH_MAX], p[JPATH_MAX], q[QUOTE_MAX];
    pf_config *cfg = base;
    for (size_t i = 0; i < cfg->listener_count; i++) {
        const pf_config_listener *l = &cfg->listeners[i];
        jidx(lp, path, i);
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

/* With auto-discovery every Service is a route already; otherwise a listener without
 * routes could only answer 404. */
static void parse_routes(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                         const key_def *k) {
    if (json_is_array(v) && json_array_size(v) == 0 && !ld->auto_discover) {
        errf(ld, p,
             "must not be empty; add a route such as "
             "{\"match\": {\"prefix\": \"/\"}, \"cluster\": \"web\"}");
        return;
    }
    parse_value(ld, obj, v, p, base, k);
}

/* Keys a tcp listener has no use for: it reads no HTTP and passes TLS through. */
static const char *const tcp_refused_listener_keys[] = {
    "max_header_bytes",    "max_target_bytes",    "max_headers", "body_timeout",
    "tunnel_idle_timeout", "stream_idle_timeout", "tls",
};

/* A tcp listener: a cluster, routes by SNI, or both, and none of HTTP's settings. */
static void tcp_listener_finish(loader *ld, json_t *v, const char *path) {
    char p[JPATH_MAX], r[JPATH_MAX], m[JPATH_MAX];
    for (size_t i = 0; i < ARRAY_LEN(tcp_refused_listener_keys); i++) {
        const char *key = tcp_refused_listener_keys[i];
        if (!json_object_get(v, key))
            continue;
        if (strcmp(key, "tls") == 0)
            errf(ld, jkey(p, path, key),
                 "a tcp listener does not terminate TLS; it passes TLS through (routes with "
                 "match.sni pick the cluster by server name), or use protocol \"http\"");
        else
            errf(ld, jkey(p, path, key),
                 "an HTTP setting; a tcp listener reads no HTTP (remove it, or use protocol "
                 "\"http\")");
    }
    json_t *routes = json_object_get(v, "routes");
    if (!routes && !json_object_get(v, "cluster"))
        errf(ld, path, "a tcp listener needs \"cluster\", \"routes\" (by SNI) or both");
    for (size_t i = 0; json_is_array(routes) && i < json_array_size(routes); i++) {
        json_t *route = json_array_get(routes, i);
        if (!json_is_object(route))
            continue;
        jidx(r, jkey(p, path, "routes"), i);
        for (void *it = json_object_iter(route); it; it = json_object_iter_next(route, it)) {
            const char *key = json_object_iter_key(it);
            if (strcmp(key, "match") != 0 && strcmp(key, "cluster") != 0)
                errf(ld, jkey(p, r, key),
                     "not for tcp listeners: a tcp route has \"match\": {\"sni\": ...} and "
                     "\"cluster\"");
        }
        json_t *match = json_object_get(route, "match");
        if (!json_is_object(match))
            continue;
        jkey(m, r, "match");
        for (void *it = json_object_iter(match); it; it = json_object_iter_next(match, it)) {
            const char *key = json_object_iter_key(it);
            if (strcmp(key, "sni") != 0)
                errf(ld, jkey(p, m, key),
                     "not for tcp listeners: a tcp route matches the TLS server name only "
                     "(\"sni\")");
        }
        if (!json_object_get(match, "sni"))
            errf(ld, m, "missing required key \"sni\" (a tcp route matches the TLS server name)");
    }
}

static void listener_finish(loader *ld, json_t *v, const char *path, void *obj) {
    char p[JPATH_MAX];
    const pf_config_listener *l = obj;
    if (!v)
        return;
    json_t *proto = json_object_get(v, "protocol");
    if (proto && l->protocol == PF_LISTEN_HTTP &&
        !(json_is_string(proto) && strcmp(json_string_value(proto), "http") == 0))
        return; /* refused already: what this listener is cannot be judged */
    if (l->protocol == PF_LISTEN_TCP) {
        tcp_listener_finish(ld, v, path);
        return;
    }
    if (json_object_get(v, "cluster"))
        errf(ld, jkey(p, path, "cluster"),
             "only tcp listeners have a cluster of their own; an http listener's routes name "
             "theirs (or set \"protocol\": \"tcp\")");
    json_t *routes = json_object_get(v, "routes");
    for (size_t i = 0; json_is_array(routes) && i < json_array_size(routes); i++) {
        json_t *match = json_object_get(json_array_get(routes, i), "match");
        if (json_is_object(match) && json_object_get(match, "sni")) {
            char r[JPATH_MAX], m[JPATH_MAX];
            errf(ld, jkey(p, jkey(m, jidx(r, jkey(p, path, "routes"), i), "match"), "sni"),
                 "sni is matched on tcp listeners only; an http listener matches the Host "
                 "with \"host\"");
        }
    }
    if (!routes && !ld->auto_discover)
        errf(ld, path, "missing required key \"routes\"");
    /* The request line is part of the head, so a target limit above the head limit
     * would be a promise the parser cannot keep. */
    if (l->max_target_bytes > l->max_header_bytes)
        errf(ld, jkey(p, path, "max_target_bytes"),
             "%u exceeds max_header_bytes (%u); the request target is part of the header block",
             l->max_target_bytes, l->max_header_bytes);
}

/* ---- listeners[].tls ---- */

static const char *const tls_version_names[] = {"1.2", "1.3"};

/* The protocols spoken after the handshake: "h2" (HTTP/2, served by the h2 codec once the
 * client sends its preface) and "http/1.1". Clusters check theirs below. */
static void add_alpn(loader *ld, const char *p, const char *name, void *out) {
    pf_config_alpn *t = out;
    char q[QUOTE_MAX];
    if (strcmp(name, "h2") != 0 && strcmp(name, "http/1.1") != 0)
        errf(ld, p, "unknown protocol %s (known: \"h2\", \"http/1.1\")", qstr(q, name));
    else
        snprintf(t->names[t->count++], PF_TLS_ALPN_MAX, "%s", name);
}

static void parse_alpn(loader *ld, json_t *obj, json_t *arr, const char *path, void *base,
                       const key_def *k) {
    pf_config_alpn *t = FIELD(base, k, pf_config_alpn);
    pf_config_alpn given = {0}; /* replaces the default, in the order given (preference) */
    if (each_string(ld, arr, path, 1, PF_TLS_MAX_ALPN, "protocols", add_alpn, &given))
        *t = given;
}

static json_t *dump_alpn(dumper *d, const void *base, const key_def *k) {
    const pf_config_alpn *t = (const pf_config_alpn *)(const void *)((const char *)base + k->off);
    json_t *arr = json_array();
    for (size_t i = 0; i < t->count; i++)
        push(d, arr, json_string(t->names[i]));
    return arr;
}

static void init_alpn(void *base, const key_def *k) {
    pf_config_alpn *t = FIELD(base, k, pf_config_alpn);
    snprintf(t->names[0], PF_TLS_ALPN_MAX, "http/1.1");
    t->count = 1;
}

/* An exact SAN (URI, DNS name or e-mail) or a prefix pattern: a '/' then '*' at the end,
 * as in "spiffe://trust-domain/" followed by '*', takes every SPIFFE ID of that domain. */
static void add_client_san(loader *ld, const char *p, const char *san, void *out) {
    pf_config_sans *t = out;
    char q[QUOTE_MAX];
    size_t len = strlen(san);
    const char *star = strchr(san, '*');
    if (len == 0 || len >= PF_TLS_SAN_MAX)
        errf(ld, p, "a name has 1 to %d characters", PF_TLS_SAN_MAX - 1);
    else if (star && (star != san + len - 1 || len < 2 || san[len - 2] != '/'))
        errf(ld, p, "%s: '*' may only end a prefix, as in \"spiffe://domain/*\"", qstr(q, san));
    else
        snprintf(t->names[t->count++], PF_TLS_SAN_MAX, "%s", san);
}

static void parse_client_sans(loader *ld, json_t *obj, json_t *arr, const char *path, void *base,
                              const key_def *k) {
    each_string(ld, arr, path, 0, PF_TLS_MAX_SANS, "names", add_client_san,
                FIELD(base, k, pf_config_sans));
}

static json_t *dump_client_sans(dumper *d, const void *base, const key_def *k) {
    const pf_config_sans *t = (const pf_config_sans *)(const void *)((const char *)base + k->off);
    json_t *arr = json_array();
    for (size_t i = 0; i < t->count; i++)
        push(d, arr, json_string(t->names[i]));
    return arr;
}

/* Why OpenSSL refused a file: its last error, or what we expected to find. */
static const char *ssl_reason(const char *fallback) {
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : fallback;
}

/* A certificate and its key, checked the way the proxy will load them: both PEM, readable,
 * and the key the one the certificate names. */
static void check_cert_pair(loader *ld, const char *path, const pf_config_tls_cert *c) {
    char p[JPATH_MAX];
    X509 *x = NULL;
    EVP_PKEY *key = NULL;
    FILE *f = fopen(c->cert_file, "r");
    if (!f) {
        errf(ld, jkey(p, path, "cert_file"), "%s: cannot read: %s", c->cert_file, strerror(errno));
        goto done;
    }
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!x) {
        errf(ld, jkey(p, path, "cert_file"), "%s: no PEM certificate: %s", c->cert_file,
             ssl_reason("none found"));
        goto done;
    }
    f = fopen(c->key_file, "r");
    if (!f) {
        errf(ld, jkey(p, path, "key_file"), "%s: cannot read: %s", c->key_file, strerror(errno));
        goto done;
    }
    key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!key) {
        errf(ld, jkey(p, path, "key_file"),
             "%s: no PEM private key (an encrypted key is not "
             "supported): %s",
             c->key_file, ssl_reason("none found"));
        goto done;
    }
    if (X509_check_private_key(x, key) != 1) {
        ERR_clear_error();
        errf(ld, jkey(p, path, "key_file"), "%s: the key does not match the certificate in %s",
             c->key_file, c->cert_file);
    }
done:
    EVP_PKEY_free(key);
    X509_free(x);
}

static void tls_cert_finish(loader *ld, json_t *v, const char *path, void *obj) {
    const pf_config_tls_cert *c = obj;
    if (v && c->cert_file[0] && c->key_file[0])
        check_cert_pair(ld, path, c);
}

static void check_ca_file(loader *ld, const char *path, const char *file) {
    X509_STORE *store = X509_STORE_new();
    if (!store) {
        oom(ld);
        return;
    }
    if (X509_STORE_load_file(store, file) != 1)
        errf(ld, path, "%s: no PEM CA certificate: %s", file, ssl_reason("none found"));
    X509_STORE_free(store);
}

static void tls_finish(loader *ld, json_t *v, const char *path, void *obj) {
    char p[JPATH_MAX];
    const pf_config_listener_tls *t = obj;
    if (!v)
        return;
    if (json_object_get(v, "certificates") && t->certificate_count == 0)
        errf(ld, jkey(p, path, "certificates"), "give at least one certificate");
    if (t->certificate_count > PF_TLS_MAX_CERTS)
        errf(ld, jkey(p, path, "certificates"), "at most %d certificates", PF_TLS_MAX_CERTS);
    if (t->session_ticket_rotation_ms < PF_TICKET_ROTATION_MIN_MS)
        errf(ld, jkey(p, path, "session_ticket_rotation"), "at least 1s");
    if ((t->require_client_cert || t->allowed_client_sans.count) && !t->client_ca_file[0])
        errf(ld, jkey(p, path, "client_ca_file"),
             "missing: require_client_cert and allowed_client_sans need the CA that signs "
             "client certificates");
    if (t->allowed_client_sans.count && !t->require_client_cert)
        errf(ld, jkey(p, path, "allowed_client_sans"),
             "needs require_client_cert: true (a client without a certificate has no SAN)");
    if (t->client_ca_file[0])
        check_ca_file(ld, jkey(p, path, "client_ca_file"), t->client_ca_file);
}

static void cluster_tls_finish(loader *ld, json_t *v, const char *path, void *obj) {
    char p[JPATH_MAX];
    const pf_config_cluster_tls *t = obj;
    if (!v)
        return;
    if (!t->cert_file[0] != !t->key_file[0])
        errf(ld, jkey(p, path, t->cert_file[0] ? "key_file" : "cert_file"),
             "missing: a client certificate needs both cert_file and key_file");
    else if (t->cert_file[0]) {
        pf_config_tls_cert pair;
        memcpy(pair.cert_file, t->cert_file, sizeof pair.cert_file);
        memcpy(pair.key_file, t->key_file, sizeof pair.key_file);
        check_cert_pair(ld, path, &pair);
    }
    if (t->ca_file[0])
        check_ca_file(ld, jkey(p, path, "ca_file"), t->ca_file);
}

static bool tls_present(const void *obj) {
    return ((const pf_config_listener_tls *)obj)->certificate_count > 0;
}

/* ---- endpoints ---- */

static void endpoint_from_string(loader *ld, const char *s, const char *path, void *elem) {
    pf_error err;
    pf_config_endpoint *e = elem;
    if (parse_sockaddr(s, ADDR_ENDPOINT, &e->addr, &err) != PF_OK)
        errf(ld, path, "%s", err.msg);
}

/* Unlike other strings a zone may be empty: "no zone". */
static void parse_zone(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                       const key_def *k) {
    char q[QUOTE_MAX];
    if (!want(ld, v, p, "string"))
        return;
    const char *z = json_string_value(v);
    size_t n = strlen(z);
    if (n >= k->size)
        errf(ld, p, "zone %s is too long (max %zu characters)", qstr(q, z), k->size - 1);
    else
        memcpy(FIELD(base, k, char), z, n + 1);
}

static void check_endpoints(loader *ld, json_t *arr, const char *path, void *base) {
    char ep[JPATH_MAX];
    const pf_config_cluster *c = base;
    for (size_t i = 0; i < c->endpoint_count; i++) {
        const pf_config_endpoint *e = &c->endpoints[i];
        for (size_t j = 0; j < i && e->addr.len; j++) {
            if (strcmp(c->endpoints[j].addr.text, e->addr.text) == 0) {
                errf(ld, jidx(ep, path, i), "duplicate endpoint %s (also %s[%zu])", e->addr.text,
                     path, j);
                break;
            }
        }
    }
}

/* ---- health checks and outlier detection ---- */

static bool hc_is_http(const void *base) {
    return ((const pf_config_health_check *)base)->type == PF_CHECK_HTTP;
}

static bool hc_given(const void *base) {
    return ((const pf_config_health_check *)base)->type != PF_CHECK_NONE;
}

/* A key that belongs to the other check type: one clear message instead of a silent no-op. */
static bool foreign_key(loader *ld, const char *p, const pf_config_health_check *hc,
                        pf_check_type wanted) {
    if (hc->type == wanted)
        return false;
    errf(ld, p, "applies to %s checks only; this check's type is \"%s\"",
         check_type_names[wanted - 1], check_type_names[hc->type - 1]);
    return true;
}

static bool hc_is_grpc(const void *base) {
    return ((const pf_config_health_check *)base)->type == PF_CHECK_GRPC;
}

static void parse_hc_service(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                             const key_def *k) {
    char q[QUOTE_MAX];
    pf_config_health_check *hc = base;
    if (foreign_key(ld, p, hc, PF_CHECK_GRPC) || !want(ld, v, p, "string"))
        return;
    const char *s = json_string_value(v);
    size_t n = strlen(s);
    if (n >= PF_CHECK_SERVICE_MAX)
        errf(ld, p, "service %s: give at most %d characters (\"\" asks about the whole server)",
             qstr(q, s), PF_CHECK_SERVICE_MAX - 1);
    else
        memcpy(hc->service, s, n + 1);
}

static void parse_hc_path(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                          const key_def *k) {
    pf_config_health_check *hc = base;
    if (!foreign_key(ld, p, hc, PF_CHECK_HTTP) && want(ld, v, p, "string"))
        parse_path(ld, p, json_string_value(v), hc->path);
}

static void parse_hc_host(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                          const key_def *k) {
    char q[QUOTE_MAX];
    pf_config_health_check *hc = base;
    if (foreign_key(ld, p, hc, PF_CHECK_HTTP) || !want(ld, v, p, "string"))
        return;
    const char *s = json_string_value(v);
    size_t n = strlen(s), bad = 0;
    while (bad < n && (unsigned char)s[bad] > 0x20 && (unsigned char)s[bad] < 0x7f)
        bad++;
    if (n == 0 || n >= PF_HOST_MAX)
        errf(ld, p, "host %s: give 1 to %d characters (leave it out for the endpoint's address)",
             qstr(q, s), PF_HOST_MAX - 1);
    else if (bad < n)
        errf(ld, p, "host %s has a space, control or non-ASCII character", qstr(q, s));
    else
        memcpy(hc->host, s, n + 1);
}

static void init_expected(void *base, const key_def *k) {
    pf_config_health_check *hc = base;
    hc->expected[0] = (pf_status_range){200, 399};
    hc->expected_count = 1;
}

static void parse_expected(loader *ld, json_t *obj, json_t *arr, const char *path, void *base,
                           const key_def *k) {
    char p[JPATH_MAX], text[32];
    pf_error err;
    pf_config_health_check *hc = base;
    if (foreign_key(ld, path, hc, PF_CHECK_HTTP) || !want(ld, arr, path, "array"))
        return;
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
            errf(ld, p, "expected string or integer, found %s", json_kind(v));
            continue;
        }
        if (config_parse_status_range(s, &hc->expected[hc->expected_count], &err) != PF_OK)
            errf(ld, p, "%s", err.msg);
        else
            hc->expected_count++;
    }
}

static json_t *dump_expected(dumper *d, const void *base, const key_def *k) {
    const pf_config_health_check *hc = base;
    json_t *expected = json_array();
    for (size_t i = 0; i < hc->expected_count; i++) {
        char text[16];
        const pf_status_range *r = &hc->expected[i];
        if (r->lo == r->hi)
            snprintf(text, sizeof text, "%u", r->lo);
        else
            snprintf(text, sizeof text, "%u-%u", r->lo, r->hi);
        push(d, expected, json_string(text));
    }
    return expected;
}

static void init_initial(void *base, const key_def *k) {
    ((pf_config_health_check *)base)->initial_healthy = true;
}

static void parse_initial(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                          const key_def *k) {
    char q[QUOTE_MAX];
    if (!want(ld, v, p, "string"))
        return;
    const char *s = json_string_value(v);
    if (strcmp(s, "healthy") == 0 || strcmp(s, "unhealthy") == 0)
        ((pf_config_health_check *)base)->initial_healthy = s[0] == 'h';
    else
        errf(ld, p,
             "unknown initial state %s; use \"healthy\" (serve until the first check fails) "
             "or \"unhealthy\" (wait for a passing check)",
             qstr(q, s));
}

static json_t *dump_initial(dumper *d, const void *base, const key_def *k) {
    return json_string(((const pf_config_health_check *)base)->initial_healthy ? "healthy"
                                                                               : "unhealthy");
}

/* tcp send/expect: JSON strings may carry any byte (\u0000 too), so the length is kept. */
static void parse_payload(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                          const key_def *k) {
    pf_config_health_check *hc = base;
    bool send = strcmp(k->name, "send") == 0;
    if (foreign_key(ld, p, hc, PF_CHECK_TCP) || !want(ld, v, p, "string"))
        return;
    size_t n = json_string_length(v);
    if (n == 0 || n >= PF_CHECK_PAYLOAD_MAX) {
        errf(ld, p, "%zu bytes; give 1 to %d (leave the key out for none)", n,
             PF_CHECK_PAYLOAD_MAX - 1);
        return;
    }
    memcpy(send ? hc->send : hc->expect, json_string_value(v), n);
    *(send ? &hc->send_len : &hc->expect_len) = n;
}

static json_t *dump_payload(dumper *d, const void *base, const key_def *k) {
    const pf_config_health_check *hc = base;
    bool send = strcmp(k->name, "send") == 0;
    size_t n = send ? hc->send_len : hc->expect_len;
    return n ? json_stringn(send ? hc->send : hc->expect, n) : NULL;
}

/* A check is given by its object; without one the cluster has no active checks. */
static void hc_finish(loader *ld, json_t *v, const char *path, void *obj) {
    if (!v)
        ((pf_config_health_check *)obj)->type = PF_CHECK_NONE;
}

static void outlier_begin(loader *ld, void *obj) {
    ((pf_config_outlier *)obj)->enabled = true;
}

static bool outlier_given(const void *obj) {
    return ((const pf_config_outlier *)obj)->enabled;
}

static void latency_begin(loader *ld, void *obj) {
    ((pf_config_outlier_latency *)obj)->enabled = true;
}

static bool latency_given(const void *obj) {
    return ((const pf_config_outlier_latency *)obj)->enabled;
}

static void outlier_finish(loader *ld, json_t *v, const char *path, void *obj) {
    char p[JPATH_MAX], a[32], b[32];
    pf_config_outlier *o = obj;
    if (v && o->max_ejection_time_ms && o->max_ejection_time_ms < o->base_ejection_time_ms)
        errf(ld, jkey(p, path, "max_ejection_time"), "%s is shorter than base_ejection_time (%s)",
             pf_duration_format(o->max_ejection_time_ms, a, sizeof a),
             pf_duration_format(o->base_ejection_time_ms, b, sizeof b));
    /* Unset, the cap follows a long base rather than contradict it. */
    if (!o->max_ejection_time_ms)
        o->max_ejection_time_ms = o->base_ejection_time_ms > PF_DEFAULT_MAX_EJECTION_MS
                                      ? o->base_ejection_time_ms
                                      : PF_DEFAULT_MAX_EJECTION_MS;
}

/* ---- DNS ---- */

static void parse_dns_name_row(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                               const key_def *k) {
    if (want(ld, v, p, "string"))
        parse_dns_name(ld, p, json_string_value(v), FIELD(base, k, char));
}

static bool dns_given(const void *obj) {
    return ((const pf_config_cluster_dns *)obj)->name[0] != '\0';
}

static json_t *dump_dns_port(dumper *d, const void *base, const key_def *k) {
    const pf_config_cluster_dns *dns = base;
    return dns->port ? json_integer(dns->port) : NULL;
}

/* SRV answers carry a port per target; for addresses the port must come from here. */
static void cluster_dns_finish(loader *ld, json_t *v, const char *path, void *obj) {
    static const key_def port_row = {.name = "port", .type = KT_UINT, .min = 1, .max = 65535};
    char p[JPATH_MAX], a[32], b[32];
    pf_config_cluster_dns *d = obj;
    if (!v)
        return;
    json_t *port = json_object_get(v, "port");
    if (d->record == PF_DNS_RECORD_SRV && port) {
        errf(ld, jkey(p, path, "port"), "SRV records carry their own ports; remove \"port\"");
    } else if (d->record != PF_DNS_RECORD_SRV && !port) {
        errf(ld, path, "missing required key \"port\" (the port of every address the name has)");
    } else if (port) {
        uint32_t n = 0;
        parse_value(ld, v, port, jkey(p, path, "port"), &n, &port_row);
        d->port = (uint16_t)n;
    }
    if (d->min_refresh_ms < DNS_MIN_REFRESH_FLOOR_MS)
        errf(ld, jkey(p, path, "min_refresh"),
             "%s is below %ums; refreshing that often floods the resolver",
             pf_duration_format(d->min_refresh_ms, a, sizeof a), DNS_MIN_REFRESH_FLOOR_MS);
    else if (d->max_refresh_ms < d->min_refresh_ms)
        errf(ld, jkey(p, path, "max_refresh"), "%s is less than min_refresh (%s)",
             pf_duration_format(d->max_refresh_ms, a, sizeof a),
             pf_duration_format(d->min_refresh_ms, b, sizeof b));
}

/* $.dns.resolvers. Without them, c-ares reads /etc/resolv.conf (servers, search domains,
 * ndots). */
static void parse_resolvers(loader *ld, json_t *obj, json_t *list, const char *path, void *base,
                            const key_def *k) {
    char p[JPATH_MAX], q[QUOTE_MAX];
    pf_error err;
    pf_config_dns *dns = base;
    if (!want(ld, list, path, "array"))
        return;
    if (json_array_size(list) == 0) {
        errf(ld, path,
             "must not be empty; leave \"resolvers\" out to use the servers of /etc/resolv.conf");
        return;
    }
    if (json_array_size(list) > PF_DNS_MAX_RESOLVERS) {
        errf(ld, path, "%zu resolvers; at most %d are allowed", json_array_size(list),
             PF_DNS_MAX_RESOLVERS);
        return;
    }
    size_t from[PF_DNS_MAX_RESOLVERS]; /* JSON index of each accepted resolver */
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *s = json_array_get(list, i);
        pf_sockaddr *r = &dns->resolvers[dns->resolver_count];
        jidx(p, path, i);
        if (!want(ld, s, p, "string"))
            continue;
        if (parse_sockaddr(json_string_value(s), ADDR_ANY, r, &err) != PF_OK) {
            errf(ld, p, "%s", err.msg);
            continue;
        }
        size_t j = 0;
        while (j < dns->resolver_count && strcmp(dns->resolvers[j].text, r->text))
            j++;
        if (j < dns->resolver_count)
            errf(ld, p, "duplicate resolver %s (also %s[%zu])", qstr(q, r->text), path, from[j]);
        else
            from[dns->resolver_count++] = i;
    }
}

static json_t *dump_resolvers(dumper *d, const void *base, const key_def *k) {
    const pf_config_dns *dns = base;
    if (!dns->resolver_count)
        return NULL;
    json_t *list = json_array();
    for (size_t i = 0; i < dns->resolver_count; i++)
        push(d, list, json_string(dns->resolvers[i].text));
    return list;
}

/* ---- kubernetes ---- */

#define K8S_PORT_NAME_MAX 15 /* IANA service names, as Kubernetes port names are */
#define K8S_LABEL_MAX 63
#define K8S_MAX_LINE_BYTES_MIN 4096u
#define K8S_MAX_LINE_BYTES_MAX (256u * 1024u * 1024u)
#define K8S_MAX_LIST_BYTES_MIN (64u * 1024u)
#define K8S_MAX_LIST_BYTES_MAX (1024u * 1024u * 1024u)
#define K8S_PAGE_SIZE_MAX 10000u

/* A Service or namespace name; the row's noun names it in messages. */
static void parse_k8s_label(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                            const key_def *k) {
    if (want(ld, v, p, "string") && k8s_label(ld, p, k->noun, json_string_value(v), K8S_LABEL_MAX))
        snprintf(FIELD(base, k, char), k->size, "%s", json_string_value(v));
}

static void parse_k8s_port(loader *ld, json_t *obj, json_t *port, const char *p, void *base,
                           const key_def *k) {
    static const key_def number = {.name = "port", .type = KT_UINT, .min = 1, .max = 65535};
    pf_config_cluster_k8s *c = base;
    if (json_is_string(port)) {
        if (k8s_label(ld, p, "port name", json_string_value(port), K8S_PORT_NAME_MAX))
            snprintf(c->port_name, sizeof c->port_name, "%s", json_string_value(port));
    } else if (json_is_integer(port)) {
        parse_value(ld, obj, port, p, &c->port_number, &number);
    } else {
        errf(ld, p, "expected a port name (e.g. \"http\") or number, found %s", json_kind(port));
    }
}

static json_t *dump_k8s_port(dumper *d, const void *base, const key_def *k) {
    const pf_config_cluster_k8s *c = base;
    if (c->port_name[0])
        return json_string(c->port_name);
    return c->port_number ? json_integer(c->port_number) : NULL;
}

static bool k8s_cluster_given(const void *obj) {
    return ((const pf_config_cluster_k8s *)obj)->service[0] != '\0';
}

static void cluster_k8s_finish(loader *ld, json_t *v, const char *path, void *obj) {
    pf_config_cluster_k8s *k = obj;
    if (v && !k->service[0])
        snprintf(k->service, sizeof k->service, "-"); /* reported; still a k8s cluster */
}

/* TLS is always verified: a plain-HTTP API server would hand out tokens in clear. */
static void parse_api_server(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                             const key_def *k) {
    char q[QUOTE_MAX];
    pf_config_kubernetes *kc = base;
    parse_value(ld, obj, v, p, base, k);
    if (kc->api_server[0] && strncmp(kc->api_server, "https://", 8) != 0) {
        errf(ld, p,
             "%s must start with https:// (the API server is always reached over verified TLS)",
             qstr(q, kc->api_server));
        kc->api_server[0] = '\0';
    }
}

static void k8s_begin(loader *ld, void *obj) {
    ((pf_config_kubernetes *)obj)->enabled = true;
}

static bool k8s_given(const void *obj) {
    return ((const pf_config_kubernetes *)obj)->enabled;
}

/* HTTPRoutes attach to the Services auto-discovery turns into clusters (parentRefs name a
 * Service, the mesh attachment): without auto_discover there is nothing to attach to. */
static void k8s_finish(loader *ld, json_t *v, const char *path, void *obj) {
    char p[JPATH_MAX];
    const pf_config_kubernetes *k = obj;
    if (v && k->http_routes && !k->auto_discover)
        errf(ld, jkey(p, path, "http_routes"),
             "applies HTTPRoutes to auto-discovered Services; set kubernetes.auto_discover too");
}

static void k8s_backoff_finish(loader *ld, json_t *v, const char *path, void *obj) {
    char p[JPATH_MAX], a[32], b[32];
    const pf_config_kubernetes *k = obj;
    if (v && k->backoff_max_ms < k->backoff_base_ms)
        errf(ld, jkey(p, path, "max"), "%s is less than base (%s)",
             pf_duration_format(k->backoff_max_ms, a, sizeof a),
             pf_duration_format(k->backoff_base_ms, b, sizeof b));
}

static void parse_namespaces(loader *ld, json_t *obj, json_t *ns, const char *p, void *base,
                             const key_def *k) {
    pf_config_kubernetes *kc = base;
    if (json_is_string(ns) && strcmp(json_string_value(ns), "all") == 0) {
        kc->all_namespaces = true;
    } else if (!json_is_array(ns) || json_array_size(ns) == 0) {
        errf(ld, p, "expected a non-empty list of namespaces or \"all\"");
    } else if (json_array_size(ns) > PF_K8S_MAX_NAMESPACES) {
        errf(ld, p, "%zu namespaces; at most %d are allowed (or use \"all\")", json_array_size(ns),
             PF_K8S_MAX_NAMESPACES);
    } else if ((kc->namespaces = alloc_array(ld, json_array_size(ns), sizeof *kc->namespaces))) {
        for (size_t i = 0; i < json_array_size(ns); i++) {
            char ip[JPATH_MAX];
            json_t *s = json_array_get(ns, i);
            jidx(ip, p, i);
            if (!want(ld, s, ip, "string") ||
                !k8s_label(ld, ip, "namespace", json_string_value(s), K8S_LABEL_MAX))
                continue;
            size_t j = 0;
            while (j < kc->namespace_count && strcmp(kc->namespaces[j], json_string_value(s)))
                j++;
            if (j < kc->namespace_count)
                errf(ld, ip, "duplicate namespace \"%s\"", json_string_value(s));
            else
                snprintf(kc->namespaces[kc->namespace_count++], PF_K8S_NAME_MAX, "%s",
                         json_string_value(s));
        }
    }
}

static json_t *dump_namespaces(dumper *d, const void *base, const key_def *k) {
    const pf_config_kubernetes *kc = base;
    if (kc->all_namespaces)
        return json_string("all");
    json_t *ns = json_array();
    for (size_t i = 0; i < kc->namespace_count; i++)
        push(d, ns, json_string(kc->namespaces[i]));
    return ns;
}

static void auto_begin(loader *ld, void *obj) {
    ((pf_config_kubernetes *)obj)->auto_discover = true;
}

static bool auto_given(const void *obj) {
    return ((const pf_config_kubernetes *)obj)->auto_discover;
}

/* The template is parsed as a cluster named "auto" with no endpoints of its own, so every
 * cluster key and message applies unchanged. It exists whether "cluster" is given or not. */
static void auto_finish(loader *ld, json_t *v, const char *path, void *obj) {
    static const char *const reserved[] = {"name", "endpoints", "dns", "kubernetes"};
    char p[JPATH_MAX];
    pf_config_kubernetes *k = obj;
    if (!v)
        return;
    if (!json_object_get(v, "namespaces"))
        errf(ld, path, "missing required key \"namespaces\" (a list, or \"all\")");
    json_t *tmpl = json_object_get(v, "cluster");
    jkey(p, path, "cluster");
    if (tmpl && !want(ld, tmpl, p, "object"))
        tmpl = NULL;
    json_t *copy = tmpl ? json_deep_copy(tmpl) : json_object();
    k->auto_cluster = calloc(1, sizeof *k->auto_cluster);
    if (!copy || !k->auto_cluster) {
        json_decref(copy);
        oom(ld);
        return;
    }
    for (size_t i = 0; i < ARRAY_LEN(reserved); i++) {
        if (json_object_get(copy, reserved[i])) {
            errf(ld, p, "\"%s\" is set by auto-discovery; remove it", reserved[i]);
            json_object_del(copy, reserved[i]);
        }
    }
    json_object_set_new(copy, "name", json_string("auto"));
    json_object_set_new(copy, "endpoints", json_array());
    schema_defaults(&cluster_schema, k->auto_cluster);
    schema_parse(ld, &cluster_schema, copy, p, k->auto_cluster);
    json_decref(copy);
}

static json_t *dump_auto_cluster(dumper *d, const void *base, const key_def *k) {
    const pf_config_kubernetes *kc = base;
    if (!kc->auto_cluster)
        return NULL;
    json_t *c = schema_dump(d, &cluster_schema, kc->auto_cluster);
    if (c) {
        json_object_del(c, "name");
        json_object_del(c, "endpoints");
    }
    return c;
}

/* ---- load balancing ---- */

static void parse_lb_policy(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                            const key_def *k) {
    size_t before = ld->nerr;
    parse_value(ld, obj, v, p, base, k);
    /* the settings that go with a policy cannot be judged without one */
    ld->policy_bad = ld->nerr != before;
}

static void cluster_begin(loader *ld, void *obj) {
    ld->policy_bad = false;
}

/* A setting the chosen policy would ignore is an error, like an unknown key: whoever wrote
 * it expects it to do something. Returns whether the key may be parsed. */
static bool policy_uses(loader *ld, const char *p, const pf_config_cluster *c, const char *key) {
    bool hashing = is_hash_policy(c->lb_policy);
    bool ewma = strcmp(key, "ewma_decay") == 0;
    if (ld->policy_bad)
        return false;
    if (ewma ? c->lb_policy == PF_LB_LEAST_RESPONSE_TIME : hashing)
        return true;
    errf(ld, p, "%s is used only by %s, not by lb_policy \"%s\"", key,
         ewma ? "least_response_time" : "ring_hash and maglev",
         config_lb_policy_name(c->lb_policy));
    return false;
}

static void parse_hash_on_row(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                              const key_def *k) {
    pf_config_cluster *c = base;
    if (policy_uses(ld, p, c, k->name))
        parse_hash_on(ld, v, p, &c->hash_on);
}

static json_t *dump_hash_on(dumper *d, const void *base, const key_def *k) {
    static const char *const kinds[] = {[PF_HASH_HEADER] = "header",
                                        [PF_HASH_COOKIE] = "cookie",
                                        [PF_HASH_SOURCE_IP] = "source_ip",
                                        [PF_HASH_PATH] = "path"};
    const pf_config_hash_on *h = &((const pf_config_cluster *)base)->hash_on;
    if (h->kind == PF_HASH_NONE)
        return NULL;
    json_t *o = json_object();
    if (h->kind == PF_HASH_HEADER || h->kind == PF_HASH_COOKIE)
        put(d, o, kinds[h->kind], json_string(h->name));
    else
        put(d, o, kinds[h->kind], json_true());
    return o;
}

static void parse_hash_table_size(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                                  const key_def *k) {
    pf_config_cluster *c = base;
    key_def bounds = *k;
    uint32_t size = 0;
    if (!policy_uses(ld, p, c, k->name))
        return;
    bounds.off = 0;
    if (c->lb_policy == PF_LB_RING_HASH) {
        bounds.min = 1;
        bounds.max = RING_HASH_SIZE_MAX;
        parse_value(ld, obj, v, p, &size, &bounds);
    } else {
        bounds.min = 2;
        bounds.max = MAGLEV_SIZE_MAX;
        parse_value(ld, obj, v, p, &size, &bounds);
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
        size_t endpoints = json_array_size(json_object_get(obj, "endpoints"));
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

static void parse_ewma_decay(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                             const key_def *k) {
    if (policy_uses(ld, p, base, k->name))
        parse_value(ld, obj, v, p, base, k);
}

static bool uses_ewma(const void *base) {
    return ((const pf_config_cluster *)base)->lb_policy == PF_LB_LEAST_RESPONSE_TIME;
}

/* A DNS or Kubernetes cluster has "dns" or "kubernetes" in place of "endpoints", as in
 * the file. */
static bool has_static_endpoints(const void *base) {
    const pf_config_cluster *c = base;
    return !c->dns.name[0] && !c->kubernetes.service[0];
}

static void cluster_finish(loader *ld, json_t *v, const char *path, void *obj) {
    pf_config_cluster *c = obj;
    if (!v)
        return;
    bool eps = json_object_get(v, "endpoints"), dns = json_object_get(v, "dns");
    if (json_object_get(v, "kubernetes")) {
        if (eps || dns)
            errf(ld, path, "\"kubernetes\" excludes \"endpoints\" and \"dns\"; use one source");
    } else if (dns) {
        if (eps)
            errf(ld, path, "\"endpoints\" and \"dns\" exclude each other; use one");
    } else if (!eps) {
        errf(ld, path, "missing required key \"endpoints\" (or \"dns\" for endpoints from DNS)");
    }
    char p[JPATH_MAX];
    /* tls.alpn is what HTTP/1 connections offer; HTTP/2 connections (protocol h2, or
     * downstream for HTTP/2 clients) always offer "h2" alone. An endpoint told "h2" on an
     * HTTP/1 connection would answer in frames the HTTP/1 codec cannot read. */
    if (c->has_tls) {
        char t[JPATH_MAX], a[JPATH_MAX];
        for (size_t i = 0; i < c->tls.alpn.count; i++)
            if (strcmp(c->tls.alpn.names[i], "h2") == 0)
                errf(ld, jidx(p, jkey(a, jkey(t, path, "tls"), "alpn"), i),
                     "\"h2\" is offered by HTTP/2 connections themselves (set \"protocol\": "
                     "\"h2\"); tls.alpn lists what HTTP/1 connections offer: [\"http/1.1\"]");
    }

    /* Defaults that depend on the policy: a table size only for hashing, a decay only for
     * least_response_time. */
    bool hashing = is_hash_policy(c->lb_policy);
    if (hashing && !ld->policy_bad && !json_object_get(v, "hash_on"))
        errf(ld, path,
             "lb_policy \"%s\" needs \"hash_on\": {\"header\": NAME}, {\"cookie\": NAME}, "
             "{\"source_ip\": true} or {\"path\": true}",
             config_lb_policy_name(c->lb_policy));
    if (hashing && !c->hash_table_size)
        c->hash_table_size =
            c->lb_policy == PF_LB_MAGLEV ? PF_DEFAULT_MAGLEV_SIZE : PF_DEFAULT_RING_HASH_SIZE;
    if (c->lb_policy != PF_LB_LEAST_RESPONSE_TIME)
        c->ewma_decay_ms = 0;
}

static void check_clusters(loader *ld, json_t *arr, const char *path, void *base) {
    char cp[JPATH_MAX], p[JPATH_MAX], q[QUOTE_MAX];
    const pf_config *cfg = base;
    for (size_t i = 0; i < cfg->cluster_count; i++) {
        const pf_config_cluster *c = &cfg->clusters[i];
        for (size_t j = 0; j < i && c->name[0]; j++) {
            if (strcmp(cfg->clusters[j].name, c->name) == 0) {
                errf(ld, jkey(p, jidx(cp, path, i), "name"),
                     "duplicate cluster name %s (also $.clusters[%zu])", qstr(q, c->name), j);
                break;
            }
        }
    }
}

/* ---- top level ---- */

static void check_tcp_cluster(loader *ld, const pf_config *cfg, const char *path, size_t ci) {
    char q[QUOTE_MAX];
    if (cfg->clusters[ci].has_tls)
        errf(ld, path,
             "cluster %s speaks TLS to its endpoints ($.clusters[%zu].tls), which a tcp "
             "listener does not: it relays the client's bytes as they are (TLS included)",
             qstr(q, cfg->clusters[ci].name), ci);
}

/* A tcp listener's own cluster: known, and one whose endpoints take raw bytes (a TLS
 * cluster would expect pilotfish to speak TLS to it, which a relay does not). */
static void resolve_listener_cluster(loader *ld, pf_config *cfg, size_t li) {
    char p[JPATH_MAX], q[QUOTE_MAX];
    pf_config_listener *l = &cfg->listeners[li];
    mark_cut(p, sizeof p, snprintf(p, sizeof p, "$.listeners[%zu].cluster", li));
    size_t ci = 0;
    while (ci < cfg->cluster_count && strcmp(cfg->clusters[ci].name, l->cluster) != 0)
        ci++;
    if (ci == cfg->cluster_count) {
        errf(ld, p, "unknown cluster %s", qstr(q, l->cluster));
        return;
    }
    l->cluster_index = ci;
    check_tcp_cluster(ld, cfg, p, ci);
}

static void resolve_routes(loader *ld, pf_config *cfg) {
    char p[JPATH_MAX], q[QUOTE_MAX];
    for (size_t li = 0; li < cfg->listener_count; li++) {
        pf_config_listener *l = &cfg->listeners[li];
        if (l->cluster[0])
            resolve_listener_cluster(ld, cfg, li);
        for (size_t ri = 0; ri < l->route_count; ri++) {
            pf_config_route *r = &l->routes[ri];
            for (size_t wi = 0; wi < r->weighted_count; wi++) {
                pf_config_weighted_cluster *w = &r->clusters[wi];
                size_t ci = 0;
                while (ci < cfg->cluster_count && strcmp(cfg->clusters[ci].name, w->name) != 0)
                    ci++;
                w->cluster_index = ci;
                if (ci == cfg->cluster_count && w->name[0]) {
                    mark_cut(p, sizeof p,
                             snprintf(p, sizeof p,
                                      "$.listeners[%zu].routes[%zu].clusters[%zu].name", li, ri,
                                      wi));
                    errf(ld, p, "unknown cluster %s", qstr(q, w->name));
                }
            }
            if (r->has_mirror && r->mirror.cluster[0]) {
                size_t mi = 0;
                while (mi < cfg->cluster_count &&
                       strcmp(cfg->clusters[mi].name, r->mirror.cluster) != 0)
                    mi++;
                r->mirror.cluster_index = mi;
                if (mi == cfg->cluster_count) {
                    mark_cut(p, sizeof p,
                             snprintf(p, sizeof p, "$.listeners[%zu].routes[%zu].mirror.cluster",
                                      li, ri));
                    errf(ld, p, "unknown cluster %s", qstr(q, r->mirror.cluster));
                }
            }
            if (!r->cluster[0])
                continue;
            size_t ci = 0;
            while (ci < cfg->cluster_count && strcmp(cfg->clusters[ci].name, r->cluster) != 0)
                ci++;
            if (ci < cfg->cluster_count) {
                r->cluster_index = ci;
                if (l->protocol == PF_LISTEN_TCP) {
                    mark_cut(p, sizeof p,
                             snprintf(p, sizeof p, "$.listeners[%zu].routes[%zu].cluster", li, ri));
                    check_tcp_cluster(ld, cfg, p, ci);
                }
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

/* The zone this pilotfish runs in, for zone-aware routing: config first, then the
 * downward-API variables a pod spec usually sets. Then the routes' clusters: without a
 * usable clusters array every route would fail to resolve; the one message about
 * $.clusters says it all. */
static void root_finish(loader *ld, json_t *root, const char *path, void *obj) {
    char q[QUOTE_MAX];
    pf_config *cfg = obj;
    const char *zone = NULL;
    json_t *v = json_object_get(root, "local_zone");
    if (v && want(ld, v, "$.local_zone", "string"))
        zone = json_string_value(v);
    else if (!v && getenv("POD_ZONE") && *getenv("POD_ZONE"))
        zone = getenv("POD_ZONE");
    else if (!v && getenv("NODE_ZONE") && *getenv("NODE_ZONE"))
        zone = getenv("NODE_ZONE");
    if (zone && strlen(zone) >= PF_NAME_MAX)
        errf(ld, "$.local_zone", "zone %s is longer than %d characters", qstr(q, zone),
             PF_NAME_MAX - 1);
    else if (zone)
        memcpy(cfg->local_zone, zone, strlen(zone) + 1);
    if (json_is_array(json_object_get(root, "clusters")) && !ld->oom)
        resolve_routes(ld, cfg);
}

/* ---- the tables ------------------------------------------------------------------------ */

static const key_def admin_keys[] = {
    {K_ADDR(pf_config, "address", admin_addr, PF_DEFAULT_ADMIN_ADDRESS,
            "admin server address; loopback unless you say otherwise"),
     .flags = KF_LISTEN},
    {K_TEXT(pf_config, "api_token_file", admin_api_token_file, NULL,
            "file holding the bearer token the config API's writes need; unset, they are off"),
     .flags = KF_OMIT_ZERO},
    {K_BOOL(pf_config, "write_back", admin_write_back, false,
            "a change made through the config API is written to the config file")},
};
static const schema admin_schema = {.doc_name = "admin", SCHEMA_KEYS(admin_keys)};

static const key_def tracing_keys[] = {
    {K_BOOL(pf_config_tracing, "generate", generate, true,
            "a request without a valid traceparent gets a new one")},
    {K_BOOL(pf_config_tracing, "sampled", sampled, false,
            "the sampled flag of the traceparents pilotfish generates")},
};
static const schema tracing_schema = {.doc_name = "tracing", SCHEMA_KEYS(tracing_keys)};

static const key_def stats_keys[] = {
    {K_BOOL(pf_config_stats, "per_endpoint", per_endpoint, false,
            "per-endpoint series (requests, durations, health) beside the per-cluster ones")},
};
static const schema stats_schema = {.doc_name = "stats", SCHEMA_KEYS(stats_keys)};

/* A tcp listener's routes have match.sni (required there, refused on http listeners), and
 * only it and cluster: their other keys stay out of the dump, which must load again. */
static bool http_route(const void *base) {
    return !((const pf_config_route *)base)->has_sni;
}

static bool http_listener(const void *base) {
    return ((const pf_config_listener *)base)->protocol == PF_LISTEN_HTTP;
}

static bool dump_routes(const void *base) {
    const pf_config_listener *l = base;
    return l->protocol == PF_LISTEN_HTTP || l->route_count > 0;
}

static bool tcp_listener(const void *base) {
    return ((const pf_config_listener *)base)->protocol == PF_LISTEN_TCP;
}

static const key_def match_keys[] = {
    {K_CUSTOM("host", "host pattern",
              "\"api.local\", \"*.local\" or \"*\", with an optional :port"),
     .parse = parse_match_host, .init = init_match_host, .dump = dump_match_host,
     .dump_if = http_route, .doc_default = "*"},
    {K_CUSTOM("prefix", "path", "path prefix"), .parse = parse_match_path, .init = init_match_path,
     .dump = dump_match_path, .dump_if = http_route, .doc_default = "/"},
    {K_CUSTOM("path", "path", "exact path (the query string is ignored)"),
     .parse = parse_match_path, .dump = dump_match_path, .dump_if = http_route,
     .doc_default = "none"},
    {K_CUSTOM("regex", "PCRE2 pattern", "the whole path matches (the query is not part of it)"),
     .parse = parse_match_path, .dump = dump_match_path, .dump_if = http_route,
     .doc_default = "none"},
    {K_CUSTOM("method", "method name", "the request method, e.g. \"POST\""),
     .parse = parse_match_method, .dump = dump_match_method, .dump_if = http_route,
     .doc_default = "any"},
    {K_CUSTOM("headers", "list of conditions",
              "{\"name\", one of exact/prefix/suffix/present/regex, \"invert\"}: all must hold"),
     .parse = parse_match_headers, .dump = dump_match_headers, .dump_if = http_route,
     .doc_default = "none"},
    {K_CUSTOM("query_params", "list of conditions", "like headers, on the query's parameters"),
     .parse = parse_match_query, .dump = dump_match_query, .dump_if = http_route,
     .doc_default = "none"},
    {K_CUSTOM("sni", "server name pattern",
              "tcp listeners: the TLS server name, \"db.local\", \"*.local\" or \"*\""),
     .parse = parse_match_sni, .dump = dump_match_sni, .doc_default = "required on tcp"},
};
static const schema match_schema = {
    .doc_name = "routes[].match", SCHEMA_KEYS(match_keys), .finish = match_finish};

static const key_def retry_backoff_keys[] = {
    {K_DUR(pf_config_retry, "base", backoff_base_ms, PF_DEFAULT_RETRY_BACKOFF_BASE_MS,
           "first retry's delay, doubled per retry, with jitter"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_retry, "max", backoff_max_ms, PF_DEFAULT_RETRY_BACKOFF_MAX_MS,
           "longest delay"),
     .flags = KF_POSITIVE},
};
static const schema retry_backoff_schema = {
    .doc_name = "retry.backoff", SCHEMA_KEYS(retry_backoff_keys), .finish = retry_backoff_finish};

static const key_def retry_keys[] = {
    {K_CUSTOM("on", "list of conditions", "what is retried"), .parse = parse_retry_on,
     .init = init_retry_on, .dump = dump_retry_on,
     .doc_default = "[\"connect-failure\", \"reset\"]"},
    {K_CUSTOM("status_codes", "list of integers", "5xx codes retried with retriable-status-codes"),
     .parse = parse_status_codes, .dump = dump_status_codes, .doc_default = "none"},
    {K_UINT(pf_config_retry, "max_retries", max_retries, 0, 10, PF_DEFAULT_MAX_RETRIES,
            "retries after the first attempt")},
    {K_DUR(pf_config_retry, "per_try_timeout", per_try_timeout_ms, 0,
           "one attempt's wait for the response head"),
     .flags = KF_POSITIVE | KF_OMIT_ZERO, .doc_default = "the cluster's response_timeout"},
    {K_INLINE("backoff", retry_backoff_schema, "delays between attempts")},
    {K_BOOL(pf_config_retry, "retry_non_idempotent", non_idempotent, false,
            "also replay POST, PATCH, ...")},
    {K_UINT(pf_config_retry, "buffer_bytes", buffer_bytes, 0, RETRY_BUFFER_BYTES_MAX,
            PF_DEFAULT_RETRY_BUFFER_BYTES, "a request body larger than this is never replayed")},
};
static const schema retry_schema = {
    .doc_name = "retry", SCHEMA_KEYS(retry_keys), .finish = retry_finish};

static void parse_route_clusters(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                                 const key_def *k) {
    char q[JPATH_MAX], r[JPATH_MAX];
    pf_config_route *route = base;
    if (!want(ld, v, p, "array"))
        return;
    size_t n = json_array_size(v);
    if (n == 0 || n > PF_WEIGHTED_CLUSTERS_MAX) {
        errf(ld, p, "expected 1-%d clusters, found %zu", PF_WEIGHTED_CLUSTERS_MAX, n);
        return;
    }
    uint64_t total = 0;
    bool bad_weight = false; /* already reported: the sum says nothing more */
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(v, i);
        jidx(q, p, i);
        if (!want(ld, item, q, "object"))
            continue;
        pf_config_weighted_cluster *c = &route->clusters[route->weighted_count];
        const char *key;
        json_t *field;
        json_object_foreach(item, key, field) {
            jkey(r, q, key);
            if (strcmp(key, "name") == 0) {
                if (want(ld, field, r, "string") && json_string_value(field)[0] &&
                    strlen(json_string_value(field)) < PF_NAME_MAX)
                    snprintf(c->name, sizeof c->name, "%s", json_string_value(field));
                else if (json_is_string(field))
                    errf(ld, r, "expected a cluster name (1-%d characters)", PF_NAME_MAX - 1);
            } else if (strcmp(key, "weight") == 0) {
                if (!want(ld, field, r, "integer"))
                    continue;
                json_int_t w = json_integer_value(field);
                if (w < 0 || w > PF_CLUSTER_WEIGHT_MAX) {
                    errf(ld, r, "%" JSON_INTEGER_FORMAT " out of range (0-%d)", w,
                         PF_CLUSTER_WEIGHT_MAX);
                    bad_weight = true;
                } else
                    c->weight = (uint32_t)w;
            } else if (strcmp(key, "request_headers") == 0) {
                parse_header_edits(ld, field, r, true, &c->request_headers);
            } else if (strcmp(key, "response_headers") == 0) {
                parse_header_edits(ld, field, r, false, &c->response_headers);
            } else {
                errf(ld, r, "unknown key; known: name, weight, request_headers, response_headers");
            }
        }
        if (!json_object_get(item, "name") || !json_object_get(item, "weight")) {
            errf(ld, q, "\"name\" and \"weight\" are required");
            config_header_edits_free(&c->request_headers); /* the entry is not kept */
            config_header_edits_free(&c->response_headers);
            continue;
        }
        total += c->weight;
        route->weighted_count++;
    }
    if (route->weighted_count == n && total == 0 && !bad_weight)
        errf(ld, p, "the weights add up to 0; at least one cluster needs a share");
    route->total_weight = (uint32_t)total;
}

static json_t *dump_route_clusters(dumper *d, const void *base, const key_def *k) {
    const pf_config_route *route = base;
    if (!route->weighted_count)
        return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; i < route->weighted_count; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(route->clusters[i].name));
        json_object_set_new(o, "weight", json_integer(route->clusters[i].weight));
        json_t *req = dump_header_edits(d, &route->clusters[i].request_headers);
        json_t *resp = dump_header_edits(d, &route->clusters[i].response_headers);
        if (req)
            json_object_set_new(o, "request_headers", req);
        if (resp)
            json_object_set_new(o, "response_headers", resp);
        push(d, arr, o);
    }
    return arr;
}

/* ---- routes[].rewrite, .host_rewrite, .redirect, .direct_response ---------------------- */

/* A path pilotfish writes into a request line or a Location: "/" and visible ASCII, no
 * query or fragment (the request's query is kept). */
static void check_path_text(loader *ld, const char *parent, const char *key, const char *v) {
    char p[JPATH_MAX];
    if (!v[0])
        return;
    bool ok = v[0] == '/';
    for (const char *c = v; ok && *c; c++)
        ok = *c > 0x20 && *c < 0x7f && *c != '?' && *c != '#';
    if (!ok)
        errf(ld, jkey(p, parent, key),
             "expected a path starting with \"/\" (visible ASCII, no \"?\" or \"#\")");
}

/* A host (and optional port) for a Host header or a Location: name, IPv4 or [IPv6]. */
static bool host_text_ok(const char *v) {
    for (const char *c = v; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr(".-_:[]", *c))
            return false;
    return v[0] != '\0';
}

static void rewrite_finish(loader *ld, json_t *v, const char *path, void *obj) {
    const pf_config_rewrite *r = obj;
    if (!v || !json_is_object(v))
        return;
    bool prefix = json_object_get(v, "prefix"), full = json_object_get(v, "full_path");
    if (prefix == full)
        errf(ld, path, "expected one of \"prefix\" and \"full_path\", found %s",
             prefix ? "both" : "neither");
    check_path_text(ld, path, "prefix", r->prefix);
    check_path_text(ld, path, "full_path", r->full_path);
}

static void redirect_finish(loader *ld, json_t *v, const char *path, void *obj) {
    char p[JPATH_MAX];
    const pf_config_redirect *r = obj;
    if (!v || !json_is_object(v))
        return;
    if (r->path[0] && r->prefix[0])
        errf(ld, path, "\"path\" and \"prefix\" exclude each other; use one");
    check_path_text(ld, path, "path", r->path);
    check_path_text(ld, path, "prefix", r->prefix);
    if (r->scheme[0] && strcmp(r->scheme, "http") != 0 && strcmp(r->scheme, "https") != 0)
        errf(ld, jkey(p, path, "scheme"), "expected \"http\" or \"https\"");
    if (r->host[0] && !host_text_ok(r->host))
        errf(ld, jkey(p, path, "host"), "expected a host name or IP address");
    uint32_t s = r->status;
    if (s != 301 && s != 302 && s != 303 && s != 307 && s != 308)
        errf(ld, jkey(p, path, "status"), "%u is no redirect status; use 301, 302, 303, 307 or 308",
             s);
}

static void direct_response_finish(loader *ld, json_t *v, const char *path, void *obj) {
    char p[JPATH_MAX];
    const pf_config_direct_response *r = obj;
    if (!v || !json_is_object(v))
        return;
    bool ok = true;
    for (const char *c = r->content_type; ok && *c; c++)
        ok = *c >= 0x20 && *c < 0x7f;
    if (!ok)
        errf(ld, jkey(p, path, "content_type"), "expected a media type (visible ASCII)");
}

/* Which of the route's keys only mean something for a request sent upstream. */
static const char *const upstream_only_keys[] = {"rewrite", "host_rewrite", "request_headers",
                                                 "retry",   "timeout",      "tunnel_idle_timeout",
                                                 "fault",   "mirror"};

/* Where a route's requests go: "cluster", "clusters", a redirect or a direct response;
 * exactly one. And keys that need another key. */
static void route_finish(loader *ld, json_t *v, const char *path, void *obj) {
    char p[JPATH_MAX];
    const pf_config_route *r = obj;
    if (!v || !json_is_object(v))
        return;
    static const char *const targets[] = {"cluster", "clusters", "redirect", "direct_response"};
    const char *given[ARRAY_LEN(targets)];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_LEN(targets); i++)
        if (json_object_get(v, targets[i]))
            given[n++] = targets[i];
    if (n == 0)
        errf(ld, path, "missing required key \"cluster\"");
    else if (n > 1)
        errf(ld, path, "\"%s\" and \"%s\" exclude each other; use one", given[0], given[1]);
    const char *local = r->has_redirect          ? "redirect"
                        : r->has_direct_response ? "direct_response"
                                                 : NULL;
    for (size_t i = 0; local && i < ARRAY_LEN(upstream_only_keys); i++)
        if (json_object_get(v, upstream_only_keys[i]))
            errf(ld, jkey(p, path, upstream_only_keys[i]),
                 "a route with \"%s\" sends nothing upstream; remove one of the two", local);
    /* A prefix replaces what match.prefix matched; an exact or regex match has no such part. */
    if (r->path_kind != PF_MATCH_PATH_PREFIX) {
        char q[JPATH_MAX];
        if (r->has_rewrite && r->rewrite.prefix[0])
            errf(ld, jkey(q, jkey(p, path, "rewrite"), "prefix"),
                 "needs a prefix match (match.prefix); with match.path use \"full_path\"");
        if (r->has_redirect && r->redirect.prefix[0])
            errf(ld, jkey(q, jkey(p, path, "redirect"), "prefix"),
                 "needs a prefix match (match.prefix); with match.path use \"path\"");
    }
    if (json_object_get(v, "sticky_on") && !json_object_get(v, "clusters"))
        errf(ld, jkey(p, path, "sticky_on"),
             "keeps a client on one cluster of \"clusters\", which this route does not have");
    if (r->host_rewrite[0] && strcmp(r->host_rewrite, "auto") != 0 &&
        !host_text_ok(r->host_rewrite))
        errf(ld, jkey(p, path, "host_rewrite"),
             "expected \"auto\" or a host name, with an optional :port");
}

static const key_def rewrite_keys[] = {
    {K_TEXT(pf_config_rewrite, "prefix", prefix, NULL,
            "replaces the part of the path that match.prefix matched"),
     .flags = KF_OMIT_ZERO, .doc_default = "none"},
    {K_TEXT(pf_config_rewrite, "full_path", full_path, NULL, "replaces the whole path"),
     .flags = KF_OMIT_ZERO, .doc_default = "none"},
};
static const schema rewrite_schema = {
    .doc_name = "routes[].rewrite", SCHEMA_KEYS(rewrite_keys), .finish = rewrite_finish};

static const key_def redirect_keys[] = {
    {K_TEXT(pf_config_redirect, "scheme", scheme, NULL, "\"http\" or \"https\""),
     .flags = KF_OMIT_ZERO, .doc_default = "the request's"},
    {K_TEXT(pf_config_redirect, "host", host, NULL, "the host of the Location"),
     .flags = KF_OMIT_ZERO, .doc_default = "the request's"},
    {K_UINT(pf_config_redirect, "port", port, 1, 65535, 0, "the port of the Location"),
     .flags = KF_OMIT_ZERO, .doc_default = "the request's"},
    {K_TEXT(pf_config_redirect, "path", path, NULL, "replaces the whole path"),
     .flags = KF_OMIT_ZERO, .doc_default = "the request's"},
    {K_TEXT(pf_config_redirect, "prefix", prefix, NULL,
            "replaces the part of the path that match.prefix matched"),
     .flags = KF_OMIT_ZERO, .doc_default = "none"},
    {K_UINT(pf_config_redirect, "status", status, 301, 308, 302, "301, 302, 303, 307 or 308")},
};
static const schema redirect_schema = {
    .doc_name = "routes[].redirect", SCHEMA_KEYS(redirect_keys), .finish = redirect_finish};

static const key_def direct_response_keys[] = {
    {K_UINT(pf_config_direct_response, "status", status, 200, 599, 200, "the response's status"),
     .flags = KF_REQUIRED, .doc_default = "required"},
    {K_TEXT(pf_config_direct_response, "body", body, NULL, "the response's body"),
     .flags = KF_OMIT_ZERO, .doc_default = "none"},
    {K_TEXT(pf_config_direct_response, "content_type", content_type, "text/plain; charset=utf-8",
            "the body's Content-Type")},
};
static const schema direct_response_schema = {.doc_name = "routes[].direct_response",
                                              SCHEMA_KEYS(direct_response_keys),
                                              .finish = direct_response_finish};

/* sticky_on: {"header": NAME} or {"cookie": NAME}, one of the two. */
static void parse_sticky_on(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                            const key_def *k) {
    char q[JPATH_MAX];
    pf_config_route *r = base;
    if (!want(ld, v, p, "object"))
        return;
    json_t *h = json_object_get(v, "header"), *c = json_object_get(v, "cookie");
    if (json_object_size(v) != 1 || (!h && !c)) {
        errf(ld, p, "expected {\"header\": NAME} or {\"cookie\": NAME}");
        return;
    }
    r->sticky_kind = h ? PF_STICKY_HEADER : PF_STICKY_COOKIE;
    parse_hash_name(ld, h ? h : c, jkey(q, p, h ? "header" : "cookie"), h ? "header" : "cookie",
                    h != NULL, r->sticky_name);
}

static json_t *dump_sticky_on(dumper *d, const void *base, const key_def *k) {
    const pf_config_route *r = base;
    if (r->sticky_kind == PF_STICKY_NONE)
        return NULL;
    return json_pack("{s:s}", r->sticky_kind == PF_STICKY_HEADER ? "header" : "cookie",
                     r->sticky_name);
}

/* rate_limit.key: "none", "client_ip" or {"header": NAME}: a choice, checked here. */
static void parse_rate_key(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                           const key_def *k) {
    char q[JPATH_MAX];
    pf_config_rate_limit *r = base;
    const char *s = json_string_value(v);
    if (s && strcmp(s, "none") == 0)
        r->key = PF_RATE_KEY_NONE;
    else if (s && strcmp(s, "client_ip") == 0)
        r->key = PF_RATE_KEY_CLIENT_IP;
    else if (json_is_object(v) && json_object_size(v) == 1 && json_object_get(v, "header")) {
        r->key = PF_RATE_KEY_HEADER;
        parse_hash_name(ld, json_object_get(v, "header"), jkey(q, p, "header"), "header", true,
                        r->header);
    } else
        errf(ld, p, "expected \"none\", \"client_ip\" or {\"header\": NAME}, found %s",
             s ? "another string" : json_kind(v));
}

static json_t *dump_rate_key(dumper *d, const void *base, const key_def *k) {
    const pf_config_rate_limit *r = base;
    switch (r->key) {
    case PF_RATE_KEY_NONE:
        return json_string("none");
    case PF_RATE_KEY_CLIENT_IP:
        return json_string("client_ip");
    case PF_RATE_KEY_HEADER:
        return json_pack("{s:s}", "header", r->header);
    }
    return NULL;
}

static const key_def rate_limit_keys[] = {
    {K_UINT(pf_config_rate_limit, "requests_per_second", requests_per_second, 1,
            PF_RATE_LIMIT_RPS_MAX, 1, "tokens added to the bucket per second"),
     .flags = KF_REQUIRED, .doc_default = "required"},
    {K_UINT(pf_config_rate_limit, "burst", burst, 1, PF_RATE_LIMIT_RPS_MAX, 0,
            "the bucket's size: requests let through at once after a quiet spell"),
     .flags = KF_OMIT_ZERO, .doc_default = "requests_per_second"},
    {K_CUSTOM("key", "\"none\", \"client_ip\" or {\"header\": NAME}",
              "one bucket for the route, or one per client address or header value"),
     .parse = parse_rate_key, .dump = dump_rate_key, .doc_default = "none"},
    {K_UINT(pf_config_rate_limit, "max_keys", max_keys, 1, PF_RATE_LIMIT_KEYS_MAX,
            PF_DEFAULT_RATE_LIMIT_KEYS,
            "buckets kept with a key (rounded up to a multiple of 8); the least recently "
            "used goes first")},
};
static const schema rate_limit_schema = {.doc_name = "routes[].rate_limit",
                                         SCHEMA_KEYS(rate_limit_keys)};

static const key_def fault_delay_keys[] = {
    {K_DUR(pf_config_fault_delay, "duration", duration_ms, 0, "how long the request waits"),
     .flags = KF_REQUIRED | KF_POSITIVE, .doc_default = "required"},
    {K_UINT(pf_config_fault_delay, "percent", percent, 0, 100, 100,
            "the share of the route's requests delayed")},
};
static const schema fault_delay_schema = {.doc_name = "routes[].fault.delay",
                                          SCHEMA_KEYS(fault_delay_keys)};

static const key_def fault_abort_keys[] = {
    {K_UINT(pf_config_fault_abort, "status", status, 200, 599, 503, "the status answered"),
     .flags = KF_REQUIRED, .doc_default = "required"},
    {K_UINT(pf_config_fault_abort, "percent", percent, 0, 100, 100,
            "the share of the route's requests answered so")},
};
static const schema fault_abort_schema = {.doc_name = "routes[].fault.abort",
                                          SCHEMA_KEYS(fault_abort_keys)};

static void fault_finish(loader *ld, json_t *v, const char *path, void *obj) {
    const pf_config_fault *f = obj;
    if (v && json_is_object(v) && !json_object_get(v, "delay") && !json_object_get(v, "abort") &&
        !f->header_control)
        errf(ld, path, "injects nothing; give \"delay\", \"abort\" or \"header_control\": true");
}

static const key_def fault_keys[] = {
    {K_OBJ(pf_config_fault, "delay", delay, fault_delay_schema,
           "{\"duration\", \"percent\"}: requests wait before going upstream"),
     .flags = KF_PRESENT, .present_off = FIELD_OF(pf_config_fault, has_delay, bool),
     .doc_default = "none"},
    {K_OBJ(pf_config_fault, "abort", abort, fault_abort_schema,
           "{\"status\", \"percent\"}: requests are answered with status by pilotfish"),
     .flags = KF_PRESENT, .present_off = FIELD_OF(pf_config_fault, has_abort, bool),
     .doc_default = "none"},
    {K_BOOL(pf_config_fault, "header_control", header_control, false,
            "x-pilotfish-fault-delay and x-pilotfish-fault-abort ask for a fault per request")},
};
static const schema fault_schema = {
    .doc_name = "routes[].fault", SCHEMA_KEYS(fault_keys), .finish = fault_finish};

static const key_def mirror_keys[] = {
    {K_TEXT(pf_config_mirror, "cluster", cluster, NULL, "the cluster the copies go to"),
     .flags = KF_REQUIRED, .doc_default = "required"},
    {K_UINT(pf_config_mirror, "percent", percent, 0, 100, 100, "the share of requests copied")},
};
static const schema mirror_schema = {.doc_name = "routes[].mirror", SCHEMA_KEYS(mirror_keys)};

static const key_def route_keys[] = {
    {K_INLINE("match", match_schema, "what requests the route takes"), .flags = KF_REQUIRED},
    {K_TEXT(pf_config_route, "cluster", cluster, NULL, "the cluster the requests go to"),
     .flags = KF_OMIT_ZERO, .parse = parse_route_cluster, .doc_default = "required"},
    {K_CUSTOM("clusters", "list of {name, weight}",
              "in place of cluster: each request goes to one, in proportion to the weights"),
     .parse = parse_route_clusters, .dump = dump_route_clusters, .dump_if = http_route,
     .doc_default = "none"},
    {K_CUSTOM("sticky_on", "{\"header\": NAME} or {\"cookie\": NAME}",
              "with clusters: requests with the same value go to the same cluster"),
     .parse = parse_sticky_on, .dump = dump_sticky_on, .dump_if = http_route,
     .doc_default = "none"},
    {K_OBJ(pf_config_route, "retry", retry, retry_schema, "replaces the cluster's retry policy"),
     .flags = KF_PRESENT, .present_off = FIELD_OF(pf_config_route, has_retry, bool),
     .dump_if = http_route, .doc_default = "the cluster's"},
    {K_DUR(pf_config_route, "timeout", timeout_ms, 0,
           "the whole request, all attempts, until the response head"),
     .flags = KF_POSITIVE | KF_OMIT_ZERO, .dump_if = http_route},
    {K_CUSTOM("upgrades", "list of protocol names",
              "protocols a request may switch to (Upgrade); the connection becomes a tunnel"),
     .parse = parse_upgrades, .init = init_upgrades, .dump = dump_upgrades, .dump_if = http_route,
     .doc_default = "[\"websocket\"]"},
    {K_DUR(pf_config_route, "tunnel_idle_timeout", tunnel_idle_timeout_ms, 0,
           "an upgraded connection with no bytes either way for this long is closed"),
     .flags = KF_POSITIVE | KF_OMIT_ZERO, .dump_if = http_route, .doc_default = "the listener's"},
    {K_CUSTOM(
         "request_headers", "header edits",
         "{\"set\": {NAME: VALUE}, \"add\": {...}, \"remove\": [NAME]} on the forwarded request"),
     .parse = parse_request_headers, .dump = dump_request_headers, .dump_if = http_route,
     .doc_default = "none"},
    {K_CUSTOM("response_headers", "header edits", "the same on the response to the client"),
     .parse = parse_response_headers, .dump = dump_response_headers, .dump_if = http_route,
     .doc_default = "none"},
    {K_OBJ(pf_config_route, "rewrite", rewrite, rewrite_schema,
           "the path sent upstream: {\"prefix\"} or {\"full_path\"}"),
     .flags = KF_PRESENT, .present_off = FIELD_OF(pf_config_route, has_rewrite, bool),
     .dump_if = http_route, .doc_default = "none"},
    {K_TEXT(pf_config_route, "host_rewrite", host_rewrite, NULL,
            "the Host sent upstream: a name, or \"auto\" (the endpoint's)"),
     .flags = KF_OMIT_ZERO, .dump_if = http_route, .doc_default = "the client's"},
    {K_OBJ(pf_config_route, "redirect", redirect, redirect_schema,
           "in place of a cluster: pilotfish answers with a redirect"),
     .flags = KF_PRESENT, .present_off = FIELD_OF(pf_config_route, has_redirect, bool),
     .dump_if = http_route, .doc_default = "none"},
    {K_OBJ(pf_config_route, "direct_response", direct_response, direct_response_schema,
           "in place of a cluster: pilotfish answers with this response"),
     .flags = KF_PRESENT, .present_off = FIELD_OF(pf_config_route, has_direct_response, bool),
     .dump_if = http_route, .doc_default = "none"},
    {K_OBJ(pf_config_route, "rate_limit", rate_limit, rate_limit_schema,
           "requests beyond this rate are answered 429 with Retry-After"),
     .flags = KF_PRESENT, .present_off = FIELD_OF(pf_config_route, has_rate_limit, bool),
     .dump_if = http_route, .doc_default = "none"},
    {K_OBJ(pf_config_route, "mirror", mirror, mirror_schema,
           "a copy of each request goes to another cluster, its answer ignored"),
     .flags = KF_PRESENT, .present_off = FIELD_OF(pf_config_route, has_mirror, bool),
     .dump_if = http_route, .doc_default = "none"},
    {K_OBJ(pf_config_route, "fault", fault, fault_schema,
           "delays and errors injected into the route's requests, for chaos testing"),
     .flags = KF_PRESENT, .present_off = FIELD_OF(pf_config_route, has_fault, bool),
     .dump_if = http_route, .doc_default = "none"},
};
static const schema route_schema = {.doc_name = "routes[]",
                                    SCHEMA_KEYS(route_keys),
                                    .size = sizeof(pf_config_route),
                                    .finish = route_finish};

static const key_def tls_cert_keys[] = {
    {K_TEXT(pf_config_tls_cert, "cert_file", cert_file, NULL,
            "PEM certificate, then its chain; its SANs are the names SNI picks it for"),
     .flags = KF_REQUIRED},
    {K_TEXT(pf_config_tls_cert, "key_file", key_file, NULL, "PEM private key (RSA or ECDSA)"),
     .flags = KF_REQUIRED},
};
static const schema tls_cert_schema = {.doc_name = "listeners[].tls.certificates[]",
                                       SCHEMA_KEYS(tls_cert_keys),
                                       .size = sizeof(pf_config_tls_cert),
                                       .finish = tls_cert_finish,
                                       .id_key = "cert_file"};

static const key_def listener_tls_keys[] = {
    {K_ARRAY(pf_config_listener_tls, "certificates", certificates, certificate_count,
             tls_cert_schema, "the first is the default when no SAN matches the SNI name"),
     .flags = KF_REQUIRED},
    {K_ENUM(pf_config_listener_tls, "min_version", min_version, pf_tls_version, tls_version_names,
            PF_TLS_1_2, PF_TLS_1_2, "version", "versions", "the oldest TLS version accepted")},
    {K_CUSTOM("alpn", "list of protocols", "ALPN protocols offered, in preference order"),
     .off = offsetof(pf_config_listener_tls, alpn), .parse = parse_alpn, .dump = dump_alpn,
     .init = init_alpn, .doc_default = "[\"http/1.1\"]"},
    {K_TEXT(pf_config_listener_tls, "client_ca_file", client_ca_file, NULL,
            "PEM CAs whose client certificates are accepted (mTLS)"),
     .flags = KF_OMIT_ZERO},
    {K_BOOL(pf_config_listener_tls, "require_client_cert", require_client_cert, false,
            "refuse clients without a certificate from client_ca_file")},
    {K_CUSTOM("allowed_client_sans", "list of names",
              "client certificate SANs accepted: exact, or a prefix ending in /*"),
     .off = offsetof(pf_config_listener_tls, allowed_client_sans), .parse = parse_client_sans,
     .dump = dump_client_sans, .doc_default = "any"},
    {K_DUR(pf_config_listener_tls, "session_ticket_rotation", session_ticket_rotation_ms,
           PF_DEFAULT_TICKET_ROTATION_MS,
           "a new session ticket key this often; a ticket resumes for one to two periods"),
     .flags = KF_POSITIVE},
};
static const schema listener_tls_schema = {.doc_name = "listeners[].tls",
                                           SCHEMA_KEYS(listener_tls_keys),
                                           .finish = tls_finish,
                                           .dumped = tls_present};

static const key_def cluster_tls_keys[] = {
    {K_TEXT(pf_config_cluster_tls, "ca_file", ca_file, NULL,
            "PEM CAs the endpoints' certificates must chain to"),
     .flags = KF_OMIT_ZERO, .doc_default = "the system's CAs"},
    {K_TEXT(pf_config_cluster_tls, "sni", sni, NULL,
            "the name sent in SNI and verified in the certificate"),
     .flags = KF_OMIT_ZERO, .parse = parse_dns_name_row,
     .doc_default = "the request's host (DNS, Kubernetes clusters), else the endpoint's address"},
    {K_CUSTOM("verify_subject_alt_name", "list of names",
              "certificate SANs accepted instead of the SNI name: exact, or a prefix ending in /*"),
     .off = offsetof(pf_config_cluster_tls, verify_subject_alt_name), .parse = parse_client_sans,
     .dump = dump_client_sans, .doc_default = "the SNI name"},
    {K_TEXT(pf_config_cluster_tls, "cert_file", cert_file, NULL,
            "PEM client certificate (mTLS), with key_file"),
     .flags = KF_OMIT_ZERO},
    {K_TEXT(pf_config_cluster_tls, "key_file", key_file, NULL, "PEM key of cert_file"),
     .flags = KF_OMIT_ZERO},
    {K_CUSTOM("alpn", "list of protocols", "ALPN protocols offered, in preference order"),
     .off = offsetof(pf_config_cluster_tls, alpn), .parse = parse_alpn, .dump = dump_alpn,
     .init = init_alpn, .doc_default = "[\"http/1.1\"]"},
};
static const schema cluster_tls_schema = {
    .doc_name = "clusters[].tls", SCHEMA_KEYS(cluster_tls_keys), .finish = cluster_tls_finish};

static const key_def listener_keys[] = {
    {K_TEXT(pf_config_listener, "name", name, NULL, "unique; names the listener in metrics"),
     .flags = KF_REQUIRED, .parse = parse_name},
    {K_ADDR(pf_config_listener, "address", addr, NULL, "ip:port or [ipv6]:port to accept on"),
     .flags = KF_REQUIRED | KF_LISTEN},
    {K_ARRAY(pf_config_listener, "routes", routes, route_count, route_schema, "first match wins"),
     .parse = parse_routes, .dump_if = dump_routes, .doc_default = "required"},
    {K_UINT(pf_config_listener, "max_header_bytes", max_header_bytes, HEADER_BYTES_MIN,
            HEADER_BYTES_MAX, PF_DEFAULT_MAX_HEADER_BYTES, "request head larger than this: 431"),
     .dump_if = http_listener},
    {K_UINT(pf_config_listener, "max_target_bytes", max_target_bytes, TARGET_BYTES_MIN,
            TARGET_BYTES_MAX, PF_DEFAULT_MAX_TARGET_BYTES, "request target longer than this: 414"),
     .dump_if = http_listener},
    {K_UINT(pf_config_listener, "max_headers", max_headers, HEADERS_MIN, HEADERS_MAX,
            PF_DEFAULT_MAX_HEADERS, "more header lines than this: 431"),
     .dump_if = http_listener},
    {K_UINT(pf_config_listener, "buffer_bytes", buffer_bytes, BUFFER_BYTES_MIN, BUFFER_BYTES_MAX,
            PF_DEFAULT_BUFFER_BYTES, "bytes buffered per direction before backpressure")},
    {K_DUR(pf_config_listener, "header_timeout", header_timeout_ms, PF_DEFAULT_HEADER_TIMEOUT_MS,
           "the request head must arrive within this"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_listener, "idle_timeout", idle_timeout_ms, PF_DEFAULT_IDLE_TIMEOUT_MS,
           "keep-alive idle between requests"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_listener, "body_timeout", body_timeout_ms, PF_DEFAULT_BODY_TIMEOUT_MS,
           "longest pause while a body streams through the client connection"),
     .flags = KF_POSITIVE, .dump_if = http_listener},
    {K_UINT(pf_config_listener, "max_connections", max_connections, 1, PF_MAX_CONNECTIONS_LIMIT, 0,
            "client connections open at once; more wait in the kernel backlog"),
     .flags = KF_OMIT_ZERO, .doc_default = "only the global limit"},
    {K_OBJ(pf_config_listener, "tls", tls, listener_tls_schema, "terminate TLS on this listener"),
     .flags = KF_PRESENT, .present_off = FIELD_OF(pf_config_listener, has_tls, bool),
     .dump_if = http_listener, .doc_default = "none (plaintext)"},
    {K_DUR(pf_config_listener, "tunnel_idle_timeout", tunnel_idle_timeout_ms,
           PF_DEFAULT_TUNNEL_IDLE_TIMEOUT_MS,
           "an upgraded connection (WebSocket) with no bytes either way for this long is closed"),
     .flags = KF_POSITIVE, .dump_if = http_listener},
    {K_DUR(pf_config_listener, "stream_idle_timeout", stream_idle_timeout_ms,
           PF_DEFAULT_STREAM_IDLE_TIMEOUT_MS,
           "a request (an HTTP/2 stream, a gRPC call) with no bytes either way for this long is "
           "ended"),
     .flags = KF_POSITIVE, .dump_if = http_listener},
    {K_ENUM(pf_config_listener, "protocol", protocol, pf_listener_protocol, listener_protocol_names,
            0, PF_LISTEN_HTTP, "protocol", "protocols",
            "http (requests routed one by one) or tcp (bytes relayed per connection)")},
    {K_TEXT(pf_config_listener, "cluster", cluster, NULL,
            "tcp: the cluster of connections no route takes"),
     .flags = KF_OMIT_ZERO, .parse = parse_route_cluster, .dump_if = tcp_listener,
     .doc_default = "none (closed)"},
};
static const schema listener_schema = {.doc_name = "listeners[]",
                                       SCHEMA_KEYS(listener_keys),
                                       .size = sizeof(pf_config_listener),
                                       .finish = listener_finish,
                                       .id_key = "name"};

static const key_def endpoint_keys[] = {
    {K_ADDR(pf_config_endpoint, "address", addr, NULL, "ip:port"),
     .flags = KF_REQUIRED | KF_ENDPOINT},
    {K_UINT(pf_config_endpoint, "weight", weight, 1, WEIGHT_MAX, 1, "share of the traffic")},
    {K_UINT(pf_config_endpoint, "priority", priority, 0, PRIORITY_MAX, 0,
            "failover tier, 0 first")},
    {K_TEXT(pf_config_endpoint, "zone", zone, NULL, "the zone it runs in, for zone_aware"),
     .flags = KF_OMIT_ZERO, .parse = parse_zone},
};
static const schema endpoint_schema = {.doc_name = "endpoints[]",
                                       SCHEMA_KEYS(endpoint_keys),
                                       .size = sizeof(pf_config_endpoint),
                                       .id_key = "address",
                                       .from_string = endpoint_from_string};

static const key_def budget_keys[] = {
    {K_UINT(pf_config_cluster, "percent", budget_percent, 0, 100, PF_DEFAULT_BUDGET_PERCENT,
            "retries in flight as a share of requests in flight")},
    {K_UINT(pf_config_cluster, "min_concurrency", budget_min_concurrency, 0,
            BUDGET_MIN_CONCURRENCY_MAX, PF_DEFAULT_BUDGET_MIN_CONCURRENCY,
            "retries always allowed in flight")},
};
static const schema budget_schema = {.doc_name = "retry_budget", SCHEMA_KEYS(budget_keys)};

static const key_def breaker_keys[] = {
    {K_UINT(pf_config_breakers, "max_connections", max_connections, 1, BREAKER_MAX,
            PF_DEFAULT_MAX_CONNECTIONS, "upstream connections")},
    {K_UINT(pf_config_breakers, "max_pending_requests", max_pending_requests, 1, BREAKER_MAX,
            PF_DEFAULT_MAX_PENDING_REQUESTS, "requests waiting for a connection")},
    {K_UINT(pf_config_breakers, "max_requests", max_requests, 1, BREAKER_MAX,
            PF_DEFAULT_MAX_REQUESTS, "requests in flight")},
    {K_UINT(pf_config_breakers, "max_retries", max_retries, 0, BREAKER_MAX,
            PF_DEFAULT_MAX_CONCURRENT_RETRIES, "retries in flight")},
};
static const schema breaker_schema = {.doc_name = "circuit_breakers", SCHEMA_KEYS(breaker_keys)};

static const key_def health_keys[] = {
    {K_ENUM(pf_config_health_check, "type", type, pf_check_type, check_type_names, PF_CHECK_HTTP,
            PF_CHECK_HTTP, "type", "types",
            "http: GET path; tcp: connect (and send/expect); grpc: grpc.health.v1.Health/Check "
            "over HTTP/2")},
    {K_TEXT(pf_config_health_check, "path", path, PF_DEFAULT_CHECK_PATH,
            "http: the request target"),
     .parse = parse_hc_path, .dump_if = hc_is_http},
    {K_TEXT(pf_config_health_check, "host", host, NULL, "http: the Host header"),
     .flags = KF_OMIT_ZERO, .parse = parse_hc_host, .dump_if = hc_is_http,
     .doc_default = "the endpoint's ip:port"},
    {K_CUSTOM("expected_statuses", "list of codes or ranges", "http: statuses that pass"),
     .parse = parse_expected, .init = init_expected, .dump = dump_expected, .dump_if = hc_is_http,
     .doc_default = "[\"200-399\"]"},
    {K_DUR(pf_config_health_check, "interval", interval_ms, PF_DEFAULT_CHECK_INTERVAL_MS,
           "from one check's start to the next one's"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_health_check, "timeout", timeout_ms, PF_DEFAULT_CHECK_TIMEOUT_MS,
           "connect and answer"),
     .flags = KF_POSITIVE},
    {K_UINT(pf_config_health_check, "unhealthy_threshold", unhealthy_threshold, 1,
            CHECK_THRESHOLD_MAX, PF_DEFAULT_UNHEALTHY_THRESHOLD,
            "failures in a row that take an endpoint out")},
    {K_UINT(pf_config_health_check, "healthy_threshold", healthy_threshold, 1, CHECK_THRESHOLD_MAX,
            PF_DEFAULT_HEALTHY_THRESHOLD, "passes in a row that bring it back")},
    {K_DUR(pf_config_health_check, "jitter", jitter_ms, PF_DEFAULT_CHECK_JITTER_MS,
           "a random 0..jitter added to each wait")},
    {K_BOOL(pf_config_health_check, "tls", tls, true,
            "for a cluster with tls: checks speak TLS, verified as requests are; false: "
            "plaintext")},
    {K_CUSTOM("initial", "healthy or unhealthy", "a new endpoint's state before its first check"),
     .parse = parse_initial, .init = init_initial, .dump = dump_initial, .doc_default = "healthy"},
    {K_CUSTOM("send", "string", "tcp: bytes written after the connect"), .parse = parse_payload,
     .dump = dump_payload, .doc_default = "none"},
    {K_CUSTOM("expect", "string", "tcp: bytes the answer must contain"), .parse = parse_payload,
     .dump = dump_payload, .doc_default = "none"},
    {K_TEXT(pf_config_health_check, "service", service, NULL,
            "grpc: the service whose status is asked"),
     .flags = KF_OMIT_ZERO, .parse = parse_hc_service, .dump_if = hc_is_grpc,
     .doc_default = "\"\" (the server as a whole)"},
};
static const schema health_schema = {
    .doc_name = "health_check", SCHEMA_KEYS(health_keys), .finish = hc_finish, .dumped = hc_given};

static const key_def latency_keys[] = {
    {K_UINT(pf_config_outlier_latency, "factor", factor, 2, LATENCY_FACTOR_MAX,
            PF_DEFAULT_LATENCY_FACTOR, "slow: an average latency above factor x the median")},
    {K_DUR(pf_config_outlier_latency, "interval", interval_ms, PF_DEFAULT_LATENCY_INTERVAL_MS,
           "how long an endpoint stays slow before it is ejected"),
     .flags = KF_POSITIVE},
    {K_UINT(pf_config_outlier_latency, "min_requests", min_requests, 1, LATENCY_MIN_REQUESTS_MAX,
            PF_DEFAULT_LATENCY_MIN_REQUESTS, "responses measured before an endpoint is judged")},
};
static const schema latency_schema = {.doc_name = "outlier_detection.latency",
                                      SCHEMA_KEYS(latency_keys),
                                      .begin = latency_begin,
                                      .dumped = latency_given};

static const key_def outlier_keys[] = {
    {K_UINT(pf_config_outlier, "consecutive_5xx", consecutive_5xx, 0, OUTLIER_CONSECUTIVE_MAX,
            PF_DEFAULT_CONSECUTIVE_5XX, "5xx in a row that eject an endpoint; 0: off")},
    {K_UINT(pf_config_outlier, "consecutive_gateway_failure", consecutive_gateway_failure, 0,
            OUTLIER_CONSECUTIVE_MAX, PF_DEFAULT_CONSECUTIVE_GATEWAY_FAILURE,
            "gateway failures in a row that eject; 0: off")},
    {K_DUR(pf_config_outlier, "base_ejection_time", base_ejection_time_ms,
           PF_DEFAULT_BASE_EJECTION_MS, "the n-th ejection in a row lasts n times this"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_outlier, "max_ejection_time", max_ejection_time_ms, 0, "the longest ejection"),
     .flags = KF_POSITIVE, .doc_default = "300s, at least base_ejection_time"},
    {K_UINT(pf_config_outlier, "max_ejection_percent", max_ejection_percent, 0, 100,
            PF_DEFAULT_MAX_EJECTION_PERCENT, "share of the cluster ejected at once")},
    {K_DUR(pf_config_outlier, "interval", interval_ms, PF_DEFAULT_OUTLIER_INTERVAL_MS,
           "how often ejections end and held-back ones are retried"),
     .flags = KF_POSITIVE},
    {K_OBJ(pf_config_outlier, "latency", latency, latency_schema, "latency ejection"),
     .doc_default = "none"},
};
static const schema outlier_schema = {.doc_name = "outlier_detection",
                                      SCHEMA_KEYS(outlier_keys),
                                      .begin = outlier_begin,
                                      .finish = outlier_finish,
                                      .dumped = outlier_given};

static const key_def cluster_dns_keys[] = {
    {K_TEXT(pf_config_cluster_dns, "name", name, NULL, "the DNS name; a trailing . is absolute"),
     .flags = KF_REQUIRED, .parse = parse_dns_name_row},
    {K_CUSTOM("port", "integer", "the port of every address (A, AAAA)"), .flags = KF_IN_FINISH,
     .dump = dump_dns_port, .doc_default = "required, none for SRV"},
    {K_ENUM(pf_config_cluster_dns, "record", record, pf_dns_record, dns_record_names, 0,
            PF_DNS_RECORD_A, "record", "records", "A, AAAA, A+AAAA or SRV")},
    {K_DUR(pf_config_cluster_dns, "min_refresh", min_refresh_ms, PF_DEFAULT_DNS_MIN_REFRESH_MS,
           "TTLs below this are raised"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_cluster_dns, "max_refresh", max_refresh_ms, PF_DEFAULT_DNS_MAX_REFRESH_MS,
           "TTLs above this are lowered"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_cluster_dns, "hold", hold_ms, PF_DEFAULT_DNS_HOLD_MS,
           "NXDOMAIN or no records empty a live set only after this")},
};
const schema cluster_dns_schema = {.doc_name = "clusters[].dns",
                                   SCHEMA_KEYS(cluster_dns_keys),
                                   .finish = cluster_dns_finish,
                                   .dumped = dns_given};

static const key_def cluster_k8s_keys[] = {
    {K_TEXT(pf_config_cluster_k8s, "service", service, NULL, "the Service's name"),
     .flags = KF_REQUIRED, .parse = parse_k8s_label, .noun = "service"},
    {K_TEXT(pf_config_cluster_k8s, "namespace", namespace, NULL, "the Service's namespace"),
     .flags = KF_OMIT_ZERO, .parse = parse_k8s_label, .noun = "namespace",
     .doc_default = "kubernetes.namespace"},
    {K_CUSTOM("port", "name or integer", "a Service port name or number"), .parse = parse_k8s_port,
     .dump = dump_k8s_port, .doc_default = "the only port, else \"http\""},
};
static const schema cluster_k8s_schema = {.doc_name = "clusters[].kubernetes",
                                          SCHEMA_KEYS(cluster_k8s_keys),
                                          .finish = cluster_k8s_finish,
                                          .dumped = k8s_cluster_given};

static const key_def cluster_keys[] = {
    {K_TEXT(pf_config_cluster, "name", name, NULL, "unique; routes name it"), .flags = KF_REQUIRED,
     .parse = parse_name},
    {K_ENUM(pf_config_cluster, "lb_policy", lb_policy, pf_lb_policy, lb_policy_names, 0,
            PF_LB_ROUND_ROBIN, "lb_policy", "policies", "how an endpoint is picked"),
     .alias_names = lb_policy_alias_names, .alias_values = lb_policy_alias_values,
     .alias_count = ARRAY_LEN(lb_policy_alias_names), .parse = parse_lb_policy},
    {K_ARRAY(pf_config_cluster, "endpoints", endpoints, endpoint_count, endpoint_schema,
             "static endpoints: \"ip:port\" or objects"),
     .after = check_endpoints, .dump_if = has_static_endpoints,
     .doc_default = "required, or dns or kubernetes"},
    {K_DUR(pf_config_cluster, "connect_timeout", connect_timeout_ms, PF_DEFAULT_CONNECT_TIMEOUT_MS,
           "upstream connect"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_cluster, "response_timeout", response_timeout_ms,
           PF_DEFAULT_RESPONSE_TIMEOUT_MS, "from the request's end to the response head"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_cluster, "idle_timeout", upstream_idle_timeout_ms,
           PF_DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS, "a pooled connection unused this long is closed"),
     .flags = KF_POSITIVE},
    {K_UINT(pf_config_cluster, "max_idle_per_endpoint", max_idle_per_endpoint, 0,
            MAX_IDLE_PER_ENDPOINT_MAX, PF_DEFAULT_MAX_IDLE_PER_ENDPOINT,
            "pooled connections kept per endpoint and worker")},
    {K_UINT(pf_config_cluster, "max_header_bytes", max_header_bytes, HEADER_BYTES_MIN,
            HEADER_BYTES_MAX, PF_DEFAULT_MAX_HEADER_BYTES, "response head larger than this: 502")},
    {K_UINT(pf_config_cluster, "max_headers", max_headers, HEADERS_MIN, HEADERS_MAX,
            PF_DEFAULT_UPSTREAM_MAX_HEADERS, "more response header lines than this: 502")},
    {K_UINT(pf_config_cluster, "buffer_bytes", buffer_bytes, BUFFER_BYTES_MIN, BUFFER_BYTES_MAX,
            PF_DEFAULT_BUFFER_BYTES, "bytes read from an upstream connection ahead of parsing")},
    {K_ENUM(pf_config_cluster, "protocol", protocol, pf_upstream_protocol, protocol_names, 0,
            PF_PROTO_HTTP1, "protocol", "protocols",
            "to endpoints: http1, h2 (prior knowledge, or ALPN h2 with tls) or downstream (as the "
            "client)")},
    {K_UINT(pf_config_cluster, "max_requests_per_connection", max_requests_per_connection, 0,
            1000000000u, 0,
            "requests (HTTP/2: streams) one upstream connection carries, then it closes once "
            "they are done; 0: no limit")},
    {K_OBJ(pf_config_cluster, "retry", retry, retry_schema, "the cluster's retry policy")},
    {K_INLINE("retry_budget", budget_schema, "how many retries may be in flight")},
    {K_OBJ(pf_config_cluster, "circuit_breakers", breakers, breaker_schema,
           "limits past which requests get 503 at once")},
    {K_BOOL(pf_config_cluster, "zone_aware", zone_aware, false, "keep traffic in local_zone")},
    {K_UINT(pf_config_cluster, "panic_threshold", panic_threshold, 0, 100,
            PF_DEFAULT_PANIC_THRESHOLD, "percent healthy below which every endpoint is used")},
    {K_OBJ(pf_config_cluster, "health_check", health_check, health_schema, "active checks"),
     .doc_default = "none"},
    {K_OBJ(pf_config_cluster, "outlier_detection", outlier, outlier_schema, "passive ejection"),
     .doc_default = "none"},
    {K_OBJ(pf_config_cluster, "dns", dns, cluster_dns_schema, "endpoints from DNS"),
     .doc_default = "none"},
    {K_CUSTOM("hash_on", "object", "ring_hash and maglev: the request key"),
     .parse = parse_hash_on_row, .dump = dump_hash_on,
     .doc_default = "required by ring_hash and maglev"},
    {K_UINT(pf_config_cluster, "hash_table_size", hash_table_size, 1, MAGLEV_SIZE_MAX, 0,
            "ring_hash: points per heaviest endpoint; maglev: a prime number of slots"),
     .flags = KF_OMIT_ZERO, .parse = parse_hash_table_size, .doc_default = "1024 / 65537"},
    {K_DUR(pf_config_cluster, "ewma_decay", ewma_decay_ms, PF_DEFAULT_EWMA_DECAY_MS,
           "least_response_time: how fast the latency average forgets"),
     .flags = KF_POSITIVE, .parse = parse_ewma_decay, .dump_if = uses_ewma},
    {K_DUR(pf_config_cluster, "slow_start", slow_start_ms, 0,
           "weight ramp of new or recovered endpoints; 0: off")},
    {K_OBJ(pf_config_cluster, "tls", tls, cluster_tls_schema, "TLS to the endpoints"),
     .flags = KF_PRESENT, .present_off = FIELD_OF(pf_config_cluster, has_tls, bool),
     .doc_default = "none (plaintext)"},
    {K_OBJ(pf_config_cluster, "kubernetes", kubernetes, cluster_k8s_schema,
           "endpoints from a Service's EndpointSlices"),
     .doc_default = "none"},
    {K_DUR(pf_config_cluster, "body_timeout", body_timeout_ms, PF_DEFAULT_BODY_TIMEOUT_MS,
           "longest pause inside a response body"),
     .flags = KF_POSITIVE},
};
const schema cluster_schema = {.doc_name = "clusters[]",
                               SCHEMA_KEYS(cluster_keys),
                               .size = sizeof(pf_config_cluster),
                               .begin = cluster_begin,
                               .finish = cluster_finish,
                               .id_key = "name"};

static const key_def dns_keys[] = {
    {K_CUSTOM("resolvers", "list of addresses", "DNS servers as ip:port, tried in order"),
     .parse = parse_resolvers, .dump = dump_resolvers, .doc_default = "/etc/resolv.conf"},
    {K_DUR(pf_config_dns, "timeout", timeout_ms, PF_DEFAULT_DNS_TIMEOUT_MS,
           "the first try's timeout, doubled each round"),
     .flags = KF_POSITIVE},
    {K_UINT(pf_config_dns, "tries", tries, 1, DNS_TRIES_MAX, PF_DEFAULT_DNS_TRIES,
            "rounds over the servers")},
};
static const schema dns_schema = {.doc_name = "dns", SCHEMA_KEYS(dns_keys)};

static const key_def k8s_backoff_keys[] = {
    {K_DUR(pf_config_kubernetes, "base", backoff_base_ms, PF_DEFAULT_K8S_BACKOFF_BASE_MS,
           "first retry delay, doubled per failure"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_kubernetes, "max", backoff_max_ms, PF_DEFAULT_K8S_BACKOFF_MAX_MS,
           "longest retry delay"),
     .flags = KF_POSITIVE},
};
static const schema k8s_backoff_schema = {
    .doc_name = "kubernetes.backoff", SCHEMA_KEYS(k8s_backoff_keys), .finish = k8s_backoff_finish};

static const key_def auto_keys[] = {
    {K_CUSTOM("namespaces", "list or \"all\"", "namespaces whose Services become clusters"),
     .parse = parse_namespaces, .dump = dump_namespaces, .doc_default = "required"},
    {K_CUSTOM("cluster", "object", "cluster keys every discovered cluster gets"),
     .flags = KF_IN_FINISH, .dump = dump_auto_cluster, .doc_default = "the cluster defaults"},
    {K_UINT(pf_config_kubernetes, "max_clusters", auto_max_clusters, 1,
            PF_K8S_AUTO_MAX_CLUSTERS_MAX, PF_DEFAULT_K8S_AUTO_MAX_CLUSTERS,
            "discovered clusters held at once; a removed one until its slot is freed")},
    {K_ENUM(pf_config_kubernetes, "mode", auto_mode, pf_k8s_auto_mode, k8s_auto_mode_names, 0,
            PF_K8S_WATCH_ALL, "mode", "modes",
            "watch_all: every Service from the start; on_demand: those requests name")},
    {K_DUR(pf_config_kubernetes, "on_demand_timeout", on_demand_timeout_ms,
           PF_DEFAULT_K8S_ON_DEMAND_TIMEOUT_MS,
           "on_demand: how long a first request waits for its Service"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_kubernetes, "negative_ttl", negative_ttl_ms, PF_DEFAULT_K8S_NEGATIVE_TTL_MS,
           "on_demand: how long a missing Service is answered 503 without asking again"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_kubernetes, "idle_timeout", idle_timeout_ms, PF_DEFAULT_K8S_IDLE_TIMEOUT_MS,
           "on_demand: a Service unused this long is let go (watches, cluster, routes)"),
     .flags = KF_POSITIVE},
    {K_UINT(pf_config_kubernetes, "max_watches_per_namespace", max_watches_per_namespace, 1,
            PF_K8S_MAX_WATCHES_PER_NAMESPACE_MAX, PF_DEFAULT_K8S_MAX_WATCHES_PER_NAMESPACE,
            "on_demand: Services of a namespace watched one by one; past it, one "
            "namespace-wide watch per kind")},
};
static const schema auto_schema = {.doc_name = "kubernetes.auto_discover",
                                   SCHEMA_KEYS(auto_keys),
                                   .begin = auto_begin,
                                   .finish = auto_finish,
                                   .dumped = auto_given};

static const key_def k8s_keys[] = {
    {K_TEXT(pf_config_kubernetes, "api_server", api_server, NULL, "https://host:port"),
     .flags = KF_OMIT_ZERO, .parse = parse_api_server,
     .doc_default = "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"},
    {K_TEXT(pf_config_kubernetes, "token_file", token_file, NULL, "bearer token file"),
     .flags = KF_OMIT_ZERO, .doc_default = PF_K8S_SERVICEACCOUNT_DIR "/token"},
    {K_TEXT(pf_config_kubernetes, "ca_file", ca_file, NULL, "CA bundle for the API server"),
     .flags = KF_OMIT_ZERO, .doc_default = PF_K8S_SERVICEACCOUNT_DIR "/ca.crt"},
    {K_TEXT(pf_config_kubernetes, "namespace", namespace, NULL, "of clusters that name none"),
     .flags = KF_OMIT_ZERO, .parse = parse_k8s_label, .noun = "namespace",
     .doc_default = "the pod's own, else default"},
    {K_TEXT(pf_config_kubernetes, "cluster_domain", cluster_domain, PF_DEFAULT_K8S_CLUSTER_DOMAIN,
            "for svc.ns.svc.<domain> authorities"),
     .parse = parse_dns_name_row},
    {K_INLINE("auto_discover", auto_schema, "every Service port becomes a cluster"),
     .doc_default = "off"},
    {K_DUR(pf_config_kubernetes, "stall_timeout", stall_timeout_ms, PF_DEFAULT_K8S_STALL_TIMEOUT_MS,
           "a watch silent this long is reconnected"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_kubernetes, "request_timeout", request_timeout_ms,
           PF_DEFAULT_K8S_REQUEST_TIMEOUT_MS, "one list page"),
     .flags = KF_POSITIVE},
    {K_DUR(pf_config_kubernetes, "connect_timeout", connect_timeout_ms,
           PF_DEFAULT_K8S_CONNECT_TIMEOUT_MS, "the TCP and TLS connect"),
     .flags = KF_POSITIVE},
    {K_INLINE("backoff", k8s_backoff_schema, "retry delays")},
    {K_UINT(pf_config_kubernetes, "max_line_bytes", max_line_bytes, K8S_MAX_LINE_BYTES_MIN,
            K8S_MAX_LINE_BYTES_MAX, PF_DEFAULT_K8S_MAX_LINE_BYTES, "one watch event")},
    {K_UINT(pf_config_kubernetes, "max_list_bytes", max_list_bytes, K8S_MAX_LIST_BYTES_MIN,
            K8S_MAX_LIST_BYTES_MAX, PF_DEFAULT_K8S_MAX_LIST_BYTES, "one list page")},
    {K_UINT(pf_config_kubernetes, "page_size", page_size, 1, K8S_PAGE_SIZE_MAX,
            PF_DEFAULT_K8S_PAGE_SIZE, "limit of each list request")},
    {K_BOOL(pf_config_kubernetes, "http_routes", http_routes, false,
            "apply Gateway API HTTPRoutes whose parentRefs name a discovered Service")},
    {K_DUR(pf_config_kubernetes, "http_routes_recheck", http_routes_recheck_ms,
           PF_DEFAULT_K8S_HTTP_ROUTES_RECHECK_MS,
           "HTTPRoute kind not installed (404): how often its list is tried again"),
     .flags = KF_POSITIVE},
    {K_BOOL(pf_config_kubernetes, "http2", http2, true,
            "multiplex every list and watch on one HTTP/2 connection when the API server "
            "offers h2")},
};
static const schema kubernetes_schema = {.doc_name = "kubernetes",
                                         SCHEMA_KEYS(k8s_keys),
                                         .begin = k8s_begin,
                                         .finish = k8s_finish,
                                         .dumped = k8s_given};

static const key_def root_keys[] = {
    {K_INLINE("admin", admin_schema, "the admin server")},
    {K_OBJ(pf_config, "access_log", access_log, access_log_schema,
           "true: JSON lines on stdout; false: off; or an object"),
     .type_doc = "boolean or object", .parse = config_parse_access_log,
     .init = config_init_access_log, .dump = config_dump_access_log, .doc_default = "true"},
    {K_UINT(pf_config, "workers", workers, 1, PF_MAX_WORKERS, 0,
            "event-loop threads; --workers wins"),
     .flags = KF_OMIT_ZERO, .doc_default = "1"},
    /* Zero is allowed here, unlike the other timeouts: it means "close at once". */
    {K_DUR(pf_config, "drain_timeout", drain_timeout_ms, PF_DEFAULT_DRAIN_TIMEOUT_MS,
           "longest wait for requests in flight on SIGTERM")},
    {K_ARRAY(pf_config, "listeners", listeners, listener_count, listener_schema,
             "where requests come in"),
     .flags = KF_REQUIRED, .parse = parse_listeners, .after = check_listeners},
    {K_ARRAY(pf_config, "clusters", clusters, cluster_count, cluster_schema, "where requests go"),
     .flags = KF_REQUIRED, .after = check_clusters},
    {K_TEXT(pf_config, "local_zone", local_zone, NULL, "the zone this pilotfish runs in"),
     .flags = KF_OMIT_ZERO | KF_IN_FINISH, .doc_default = "$POD_ZONE, else $NODE_ZONE"},
    {K_OBJ(pf_config, "dns", dns, dns_schema, "the resolver of every DNS cluster")},
    {K_OBJ(pf_config, "kubernetes", kubernetes, kubernetes_schema,
           "the API server and auto-discovery"),
     .doc_default = "none"}, /* 0 is "derive from the open-file limit at start", which is not a
                                value of the file. */
    {K_UINT(pf_config, "max_connections", max_connections, 1, PF_MAX_CONNECTIONS_LIMIT, 0,
            "client connections over all listeners; more wait in the kernel backlog"),
     .flags = KF_OMIT_ZERO, .doc_default = "half the open-file limit left after a reserve"},
    {K_OBJ(pf_config, "tracing", tracing, tracing_schema, "W3C trace context")},
    {K_OBJ(pf_config, "stats", stats, stats_schema, "what /stats/prometheus shows")},
};
const schema root_schema = {.doc_name = "", SCHEMA_KEYS(root_keys), .finish = root_finish};

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
        schema_defaults(&root_schema, cfg);
        if (want(&ld, root, "$", "object")) {
            /* Listeners are read before $.kubernetes, and with auto-discovery they may
             * have no routes: look ahead for it. */
            json_t *k8s = json_object_get(root, "kubernetes");
            ld.auto_discover =
                json_is_object(k8s) && json_is_object(json_object_get(k8s, "auto_discover"));
            schema_parse(&ld, &root_schema, root, "$", cfg);
        }
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
/* ---- dump, diff, schema -------------------------------------------------------------- */

char *config_dump_json(const pf_config *cfg) {
    if (!cfg)
        return NULL;
    dumper d = {0};
    json_t *root = schema_dump(&d, &root_schema, cfg);
    char *text = d.failed ? NULL : json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return text;
}

void config_cluster_dns_defaults(pf_config_cluster_dns *dns) {
    schema_defaults(&cluster_dns_schema, dns);
}

int config_diff(const pf_config *from, const pf_config *to, pf_config_diff *out) {
    return schema_diff(&root_schema, from, to, "$", out);
}

void config_diff_free(pf_config_diff *diff) {
    if (!diff)
        return;
    for (size_t i = 0; i < diff->count; i++)
        free(diff->items[i].path);
    free(diff->items);
    *diff = (pf_config_diff){0};
}

const char *config_change_kind_name(pf_change_kind kind) {
    switch (kind) {
    case PF_CHANGE_ADDED:
        return "added";
    case PF_CHANGE_REMOVED:
        return "removed";
    case PF_CHANGE_CHANGED:
        return "changed";
    }
    return "unknown";
}

/* Bounds the schemas one listing visits (there are 21). */
#define SCHEMA_LIST_MAX 64

char *config_schema_json(void) {
    const void *seen[SCHEMA_LIST_MAX];
    size_t nseen = 0;
    json_t *arr = json_array();
    char *text = NULL;
    if (arr && schema_list(&root_schema, arr, seen, &nseen, SCHEMA_LIST_MAX) == PF_OK)
        text = json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(arr);
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

void config_route_free(pf_config_route *r) {
    free(r->headers);
    free(r->query_params);
    r->headers = r->query_params = NULL;
    r->header_count = r->query_param_count = 0;
    config_header_edits_free(&r->request_headers);
    config_header_edits_free(&r->response_headers);
    for (size_t w = 0; w < r->weighted_count; w++) {
        config_header_edits_free(&r->clusters[w].request_headers);
        config_header_edits_free(&r->clusters[w].response_headers);
    }
}

int config_parse_route(const char *json, const char *source, const char *path, pf_config_route *out,
                       pf_error *err) {
    pf_errlist errs = {0};
    loader ld = {.source = source, .errs = &errs};
    json_error_t jerr;
    json_t *v = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    memset(out, 0, sizeof *out);
    if (!v) {
        pf_errlist_free(&errs);
        return pf_fail(err, PF_EINVAL, "%s: %s: JSON syntax error: %s", source, path, jerr.text);
    }
    schema_defaults(&route_schema, out);
    if (want(&ld, v, path, "object"))
        schema_parse(&ld, &route_schema, v, path, out);
    json_decref(v);
    int rc = PF_OK;
    if (ld.nerr > 0) {
        rc = ld.oom ? PF_ENOMEM : PF_EINVAL;
        pf_fail(err, rc, "%s", errs.count ? errs.items[0] : "out of memory");
        config_route_free(out);
    }
    pf_errlist_free(&errs);
    return rc;
}

void config_free(pf_config *cfg) {
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->listener_count; i++) {
        free(cfg->listeners[i].tls.certificates);
        for (size_t r = 0; r < cfg->listeners[i].route_count; r++)
            config_route_free(&cfg->listeners[i].routes[r]);
        free(cfg->listeners[i].routes);
    }
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
