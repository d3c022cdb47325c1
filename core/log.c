/* Log lines go to stderr so that stdout stays free for the JSON access log. */
#include "core/log.h"
#include "core/error.h"
#include "core/time.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int current_level = PF_LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

int pf_log_level_parse(const char *name, pf_log_level *out) {
    for (int i = 0; i <= PF_LOG_DEBUG; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (pf_log_level)i;
            return PF_OK;
        }
    }
    return PF_EINVAL;
}

void pf_log_set_level(pf_log_level level) {
    atomic_store_explicit(&current_level, level, memory_order_relaxed);
}

pf_log_level pf_log_get_level(void) {
    return (pf_log_level)atomic_load_explicit(&current_level, memory_order_relaxed);
}

void pf_log_write(pf_log_level level, const char *fmt, ...) {
    char line[2048];
    uint64_t now = pf_wall_us();
    time_t secs = (time_t)(now / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (unsigned)(now / 1000u % 1000u), level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, len);
    (void)ignored;
}
