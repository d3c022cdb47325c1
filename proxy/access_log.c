/* Access log: one JSON object per line on stdout. Each worker buffers its lines and
 * writes them in batches (when the buffer fills, and from a short timer), so logging
 * costs no system call per request and lines from workers never interleave. */
#include "core/json.h"
#include "core/time.h"
#include "proxy/proxy_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_BUFFER_BYTES (64u * 1024u)
#define LOG_LINE_MAX 4096u

void access_log_flush(pf_worker *w) {
    size_t off = 0;
    while (off < w->log_len) {
        ssize_t n = write(STDOUT_FILENO, w->log_buf + off, w->log_len - off);
        if (n <= 0)
            break; /* a closed or full stdout must not stall the data plane */
        off += (size_t)n;
    }
    w->log_len = 0;
}

static const char *field(char *buf, size_t cap, const char *s, size_t len) {
    if (!s)
        return NULL;
    pf_json_escape(buf, cap, s, len);
    return buf;
}

void access_log_write(pf_worker *w, const pf_access_entry *e) {
    if (!w->log_buf)
        return;
    if (w->log_len + LOG_LINE_MAX > LOG_BUFFER_BYTES)
        access_log_flush(w);
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
        "\"duration_ms\":%.3f,\"cluster\":%s%s%s,\"upstream\":%s%s%s,\"request_id\":%s%s%s}\n",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        (unsigned)(now / 1000u % 1000u), e->client, e->method, a ? a : "", p ? p : "", e->status,
        (unsigned long long)e->bytes_in, (unsigned long long)e->bytes_out,
        (double)e->duration_us / 1000.0, e->cluster ? "\"" : "", e->cluster ? e->cluster : "null",
        e->cluster ? "\"" : "", e->upstream ? "\"" : "", e->upstream ? e->upstream : "null",
        e->upstream ? "\"" : "", id ? "\"" : "", id ? id : "null", id ? "\"" : "");
    if (n > 0 && (size_t)n < LOG_LINE_MAX)
        w->log_len += (size_t)n;
}
