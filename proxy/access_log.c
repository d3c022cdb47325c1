/* Access log: one line per request, JSON (the default) or text, on stdout or to a file
 * ($.access_log.path, reopened on SIGUSR1 for log rotation), for every request or a sample.
 * Each worker buffers its lines and writes them in batches (when the buffer fills, and from
 * a short timer), so logging costs no system call per request and lines from workers never
 * interleave.
 *
 * A worker never waits for its sink. Its writes do not block (pf_log_sink); what a full pipe
 * does not take stays in the worker's buffer for the next flush, and a line that finds the
 * buffer full is dropped and counted in pilotfish_access_log_dropped_total. This keeps the
 * request path as cheap as it was, a snprintf into the worker's own memory, with no lock,
 * no hand-off to another thread and no system call; a writer thread would add a queue
 * between threads and still need the same limit and drop when its reader stalls. */
#include "core/json.h"
#include "core/time.h"
#include "proxy/proxy_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_BUFFER_BYTES (64u * 1024u)
#define LOG_LINE_MAX 4096u

/* The longest prefix of buf[0..len) the sink takes whole or not at all, ending with a line:
 * on a pipe at most PIPE_BUF, so lines of different workers never tear. */
static size_t whole_lines(const pf_log_sink *sink, const char *buf, size_t len) {
    if (!sink->atomic_max || len <= sink->atomic_max)
        return len;
    size_t n = sink->atomic_max;
    while (n > 0 && buf[n - 1] != '\n')
        n--;
    return n ? n : sink->atomic_max; /* no line fits: cannot happen, lines are shorter */
}

static uint64_t count_lines(const char *buf, size_t len) {
    uint64_t n = 0;
    for (const char *p = buf, *end = buf + len; (p = memchr(p, '\n', (size_t)(end - p))); p++)
        n++;
    return n;
}

void access_log_flush(pf_worker *w) {
    const pf_log_sink *sink = &w->proxy->access_sink;
    size_t off = 0;
    w->log_blocked = false;
    while (off < w->log_len) {
        ssize_t n = pf_log_sink_write(sink, w->log_buf + off,
                                      whole_lines(sink, w->log_buf + off, w->log_len - off));
        if (n == 0) {
            w->log_blocked = true; /* full: the timer tries again, requests do not */
            break;
        }
        if (n < 0) { /* closed or broken: what is buffered is lost, counted */
            metrics_inc(w->proxy->access_log_dropped,
                        count_lines(w->log_buf + off, w->log_len - off));
            off = w->log_len;
            break;
        }
        off += (size_t)n;
    }
    memmove(w->log_buf, w->log_buf + off, w->log_len - off);
    w->log_len -= off;
}

/* One line being written into the worker's buffer; `full` once it no longer fits, and the
 * line is then dropped whole (and counted) rather than cut. */
typedef struct line {
    char *buf;
    size_t len, cap;
    bool full;
} line;

static void put(line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(line *l, const char *fmt, ...) {
    if (l->full)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l->buf + l->len, l->cap - l->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= l->cap - l->len)
        l->full = true;
    else
        l->len += (size_t)n;
}

static void put_json_string(line *l, const char *s, size_t len) {
    char esc[1100];
    if (!s) {
        put(l, "null");
        return;
    }
    pf_json_escape(esc, sizeof esc, s, len);
    put(l, "\"%s\"", esc);
}

/* The text format keeps one request on one line, its fields split by spaces: what came from
 * the client is quoted, and a quote, a backslash, a control byte or a byte above 0x7e inside
 * becomes \xNN, so no value can fake a field or a line. Absent values are "-". */
static void put_text_string(line *l, const char *s, size_t len, bool quoted) {
    if (!s || len == 0) {
        put(l, "-");
        return;
    }
    char esc[1100];
    size_t n = 0;
    for (size_t i = 0; i < len && n + 5 < sizeof esc; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') {
            if (c == ' ' && quoted) {
                esc[n++] = ' ';
                continue;
            }
            n += (size_t)snprintf(esc + n, sizeof esc - n, "\\x%02x", c);
        } else {
            esc[n++] = (char)c;
        }
    }
    esc[n] = '\0';
    put(l, quoted ? "\"%s\"" : "%s", esc);
}

static void put_field(line *l, bool json, int f, const pf_access_entry *e, const char *when) {
    const char *s = NULL;
    size_t len = 0;
    bool quoted = false;
    switch ((pf_access_log_field)f) {
    case PF_ALOG_TIME:
        put(l, json ? "\"%s\"" : "%s", when);
        return;
    case PF_ALOG_STATUS:
        put(l, "%d", e->status);
        return;
    case PF_ALOG_BYTES_IN:
        put(l, "%llu", (unsigned long long)e->bytes_in);
        return;
    case PF_ALOG_BYTES_OUT:
        put(l, "%llu", (unsigned long long)e->bytes_out);
        return;
    case PF_ALOG_DURATION_MS:
        put(l, json ? "%.3f" : "%.3fms", (double)e->duration_us / 1000.0);
        return;
    case PF_ALOG_CLIENT:
        s = e->client;
        break;
    case PF_ALOG_METHOD:
        s = e->method;
        break;
    case PF_ALOG_AUTHORITY:
        s = e->authority ? e->authority : "";
        len = e->authority_len;
        quoted = true;
        break;
    case PF_ALOG_PATH:
        s = e->path ? e->path : "";
        len = e->path_len;
        quoted = true;
        break;
    case PF_ALOG_CLUSTER:
        s = e->cluster;
        break;
    case PF_ALOG_UPSTREAM:
        s = e->upstream;
        break;
    case PF_ALOG_REQUEST_ID:
        s = e->request_id;
        quoted = true;
        break;
    case PF_ALOG_TRACE_ID:
        s = e->trace_id;
        break;
    case PF_ALOG_PROTOCOL:
        s = e->protocol ? e->protocol : "HTTP/1.1";
        break;
    case PF_ALOG_GRPC_STATUS:
        if (e->grpc_status >= 0)
            put(l, "%d", e->grpc_status);
        else
            put(l, json ? "null" : "-");
        return;
    case PF_ALOG_FIELD_COUNT:
        return;
    }
    if (s && !len && f != PF_ALOG_AUTHORITY && f != PF_ALOG_PATH)
        len = strlen(s);
    if (json)
        put_json_string(l, s, len);
    else
        put_text_string(l, s, len, quoted);
}

bool access_log_sampled(pf_worker *w) {
    uint32_t ppm = w->proxy->alog.sample_ppm;
    return ppm >= PF_ALOG_SAMPLE_ONE || (ppm && worker_random(w) % PF_ALOG_SAMPLE_ONE < ppm);
}

/* Room for one more line in the worker's buffer: false (counted as dropped) when a full
 * stdout left none. */
static bool reserve_line(pf_worker *w) {
    if (!w->log_buf)
        return false;
    if (w->log_len + LOG_LINE_MAX > LOG_BUFFER_BYTES && !w->log_blocked)
        access_log_flush(w);
    if (w->log_len + LOG_LINE_MAX > LOG_BUFFER_BYTES) {
        metrics_inc(w->proxy->access_log_dropped, 1);
        return false;
    }
    return true;
}

static void format_time(char *when, size_t cap) {
    uint64_t now = pf_wall_us();
    time_t secs = (time_t)(now / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(when, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(now / 1000u % 1000u));
}

/* A tcp listener's connection has its own fields (no request): JSON or text as configured,
 * with every field; `fields` chooses among a request's. */
void access_log_write_tcp(pf_worker *w, const pf_tcp_access_entry *e) {
    if (!reserve_line(w))
        return;
    char when[64];
    format_time(when, sizeof when);
    bool json = w->proxy->alog.format == PF_ALOG_JSON;
    line l = {.buf = w->log_buf + w->log_len, .cap = LOG_LINE_MAX};
    size_t sni_len = e->sni ? strlen(e->sni) : 0;
    if (json) {
        put(&l,
            "{\"time\":\"%s\",\"protocol\":\"tcp\",\"listener\":\"%s\",\"client\":\"%s\",\"sni\":",
            when, e->listener, e->client);
        put_json_string(&l, e->sni, sni_len);
        put(&l, ",\"bytes_in\":%llu,\"bytes_out\":%llu,\"duration_ms\":%.3f,\"cluster\":",
            (unsigned long long)e->bytes_in, (unsigned long long)e->bytes_out,
            (double)e->duration_us / 1000.0);
        put_json_string(&l, e->cluster, e->cluster ? strlen(e->cluster) : 0);
        put(&l, ",\"upstream\":");
        put_json_string(&l, e->upstream, e->upstream ? strlen(e->upstream) : 0);
        put(&l, ",\"connect_attempts\":%u,\"reason\":\"%s\"}\n", e->attempts, e->reason);
    } else {
        put(&l, "%s %s tcp ", when, e->client);
        put_text_string(&l, e->sni, sni_len, true);
        put(&l, " %llu %llu %.3fms %s %s %u %s listener=%s\n", (unsigned long long)e->bytes_in,
            (unsigned long long)e->bytes_out, (double)e->duration_us / 1000.0,
            e->cluster ? e->cluster : "-", e->upstream ? e->upstream : "-", e->attempts, e->reason,
            e->listener);
    }
    if (l.full) {
        metrics_inc(w->proxy->access_log_dropped, 1);
        return;
    }
    w->log_len += l.len;
}

void access_log_write(pf_worker *w, const pf_access_entry *e) {
    const pf_config_access_log *cfg = &w->proxy->alog;
    if (!reserve_line(w))
        return;
    char when[64];
    format_time(when, sizeof when);
    bool json = cfg->format == PF_ALOG_JSON;
    line l = {.buf = w->log_buf + w->log_len, .cap = LOG_LINE_MAX};
    put(&l, json ? "{" : "");
    for (size_t i = 0; i < cfg->field_count; i++) {
        int f = cfg->fields[i];
        if (json)
            put(&l, "%s\"%s\":", i ? "," : "", config_access_log_field_name(f));
        else if (i)
            put(&l, " ");
        put_field(&l, json, f, e, when);
    }
    put(&l, json ? "}\n" : "\n");
    if (l.full) { /* cannot happen with these fields' limits; a line is never cut */
        metrics_inc(w->proxy->access_log_dropped, 1);
        return;
    }
    w->log_len += l.len;
}

const char *proxy_access_log_path(const pf_proxy *proxy) {
    return proxy->alog.enabled && proxy->alog.path[0] ? proxy->alog.path : NULL;
}

int proxy_access_log_reopen(pf_proxy *proxy, pf_error *err) {
    const char *path = proxy_access_log_path(proxy);
    if (!path)
        return pf_fail(err, PF_EINVAL, "access_log.path is not set: nothing to reopen");
    return pf_log_sink_reopen_path(&proxy->access_sink, path, err);
}
