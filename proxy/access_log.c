/* Access log: one JSON object per line on stdout. Each worker buffers its lines and
 * writes them in batches (when the buffer fills, and from a short timer), so logging
 * costs no system call per request and lines from workers never interleave.
 *
 * A worker never waits for stdout. Its writes do not block (pf_log_sink); what a full pipe
 * does not take stays in the worker's buffer for the next flush, and a line that finds the
 * buffer full is dropped and counted in pilotfish_access_log_dropped_total. This keeps the
 * request path as cheap as it was, a snprintf into the worker's own memory, with no lock,
 * no hand-off to another thread and no system call; a writer thread would add a queue
 * between threads and still need the same limit and drop when its reader stalls. */
#include "core/json.h"
#include "core/time.h"
#include "proxy/proxy_int.h"

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

static const char *field(char *buf, size_t cap, const char *s, size_t len) {
    if (!s)
        return NULL;
    pf_json_escape(buf, cap, s, len);
    return buf;
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

void access_log_write_tcp(pf_worker *w, const pf_tcp_access_entry *e) {
    if (!reserve_line(w))
        return;
    char sni[PF_HOST_MAX * 2];
    uint64_t now = pf_wall_us();
    time_t secs = (time_t)(now / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    const char *name = field(sni, sizeof sni, e->sni, e->sni ? strlen(e->sni) : 0);
    int n = snprintf(
        w->log_buf + w->log_len, LOG_LINE_MAX,
        "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\",\"protocol\":\"tcp\","
        "\"listener\":\"%s\",\"client\":\"%s\",\"sni\":%s%s%s,\"bytes_in\":%llu,"
        "\"bytes_out\":%llu,\"duration_ms\":%.3f,\"cluster\":%s%s%s,\"upstream\":%s%s%s,"
        "\"connect_attempts\":%u,\"reason\":\"%s\"}\n",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        (unsigned)(now / 1000u % 1000u), e->listener, e->client, name ? "\"" : "",
        name ? name : "null", name ? "\"" : "", (unsigned long long)e->bytes_in,
        (unsigned long long)e->bytes_out, (double)e->duration_us / 1000.0, e->cluster ? "\"" : "",
        e->cluster ? e->cluster : "null", e->cluster ? "\"" : "", e->upstream ? "\"" : "",
        e->upstream ? e->upstream : "null", e->upstream ? "\"" : "", e->attempts, e->reason);
    if (n > 0 && (size_t)n < LOG_LINE_MAX)
        w->log_len += (size_t)n;
}

void access_log_write(pf_worker *w, const pf_access_entry *e) {
    if (!reserve_line(w))
        return;
    char authority[300], path[1100], request_id[80];
    uint64_t now = pf_wall_us();
    time_t secs = (time_t)(now / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    const char *a = field(authority, sizeof authority, e->authority, e->authority_len);
    const char *p = field(path, sizeof path, e->path, e->path_len);
    const char *id = field(request_id, sizeof request_id, e->request_id,
                           e->request_id ? strlen(e->request_id) : 0);
    int n = snprintf(
        w->log_buf + w->log_len, LOG_LINE_MAX,
        "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\",\"client\":\"%s\",\"method\":\"%s\","
        "\"authority\":\"%s\",\"path\":\"%s\",\"status\":%d,\"bytes_in\":%llu,\"bytes_out\":%llu,"
        "\"duration_ms\":%.3f,\"cluster\":%s%s%s,\"upstream\":%s%s%s,\"request_id\":%s%s%s,"
        "\"trace_id\":%s%s%s}\n",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        (unsigned)(now / 1000u % 1000u), e->client, e->method, a ? a : "", p ? p : "", e->status,
        (unsigned long long)e->bytes_in, (unsigned long long)e->bytes_out,
        (double)e->duration_us / 1000.0, e->cluster ? "\"" : "", e->cluster ? e->cluster : "null",
        e->cluster ? "\"" : "", e->upstream ? "\"" : "", e->upstream ? e->upstream : "null",
        e->upstream ? "\"" : "", id ? "\"" : "", id ? id : "null", id ? "\"" : "",
        e->trace_id ? "\"" : "", e->trace_id ? e->trace_id : "null", e->trace_id ? "\"" : "");
    if (n > 0 && (size_t)n < LOG_LINE_MAX)
        w->log_len += (size_t)n;
}
