/* Log lines go to stderr so that stdout stays free for the JSON access log. A log line
 * must never stop a worker: stderr is written without blocking, and a line that finds it
 * full is dropped and counted (a reader that stopped reading loses lines, not service). */
#include "core/log.h"
#include "core/error.h"
#include "core/time.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Longer lines are cut: a line then is one write no longer than PIPE_BUF, which a pipe
 * takes whole or not at all, so lines from threads never tear. */
#define LOG_LINE_MAX 2048

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

/* Set once at start (pf_log_init_output) before other threads run; read-only after. */
static pf_log_sink stderr_sink = {.fd = STDERR_FILENO};
static pf_counter *stderr_dropped;

int pf_log_sink_open(pf_log_sink *sink, int fd) {
    struct stat st;
    *sink = (pf_log_sink){.fd = fd};
    if (fstat(fd, &st) != 0)
        return PF_EIO;
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))
        return PF_OK; /* a file takes every write (or fails it); it does not wait for a reader */
    if (S_ISSOCK(st.st_mode)) {
        sink->socket = true;
        sink->atomic_max = PIPE_BUF;
        return PF_OK;
    }
    /* A pipe, FIFO or terminal: our own open file description of it, non-blocking. Setting
     * O_NONBLOCK on fd itself would change it for every process sharing the description
     * (the shell of a terminal, say). */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int own = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | O_APPEND);
    if (own >= 0) {
        sink->fd = own;
        sink->owned = true;
    } else {
        /* No /proc: the shared description it must be, or a write could block forever. */
        int flags = fcntl(fd, F_GETFL);
        if (flags >= 0)
            fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    }
    sink->atomic_max = S_ISFIFO(st.st_mode) ? PIPE_BUF : 0;
    return PF_OK;
}

void pf_log_sink_close(pf_log_sink *sink) {
    if (sink->owned)
        close(sink->fd);
    sink->owned = false;
}

/* O_NONBLOCK: a FIFO with no reader fails to open (ENXIO) instead of waiting for one, and
 * its writes never wait; a regular file ignores the flag. */
static int open_log_file(const char *path, struct stat *st, pf_error *err) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0644);
    if (fd < 0) {
        pf_fail(err, PF_EIO, "access_log.path: cannot open \"%s\": %s%s", path, strerror(errno),
                errno == ENXIO ? " (a FIFO nobody reads)" : "");
        return -1;
    }
    if (fstat(fd, st) != 0) {
        pf_fail(err, PF_EIO, "access_log.path: \"%s\": %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static size_t atomic_max_of(const struct stat *st) {
    return S_ISFIFO(st->st_mode) ? PIPE_BUF : 0;
}

int pf_log_sink_open_path(pf_log_sink *sink, const char *path, pf_error *err) {
    struct stat st;
    int fd = open_log_file(path, &st, err);
    if (fd < 0)
        return PF_EIO;
    *sink = (pf_log_sink){.fd = fd, .owned = true, .atomic_max = atomic_max_of(&st)};
    return PF_OK;
}

int pf_log_sink_reopen_path(pf_log_sink *sink, const char *path, pf_error *err) {
    struct stat st;
    int fd = open_log_file(path, &st, err);
    if (fd < 0)
        return PF_EIO;
    int rc = PF_OK;
    if (atomic_max_of(&st) != sink->atomic_max)
        /* Writers size their writes by atomic_max, which other threads read without a lock:
         * it stays what it was at start. */
        rc = pf_fail(err, PF_EINVAL,
                     "access_log.path: \"%s\" is now a %s, it was not at start; restart to "
                     "change the kind of file",
                     path, S_ISFIFO(st.st_mode) ? "FIFO" : "regular file");
    else if (dup3(fd, sink->fd, O_CLOEXEC) < 0)
        rc = pf_fail(err, PF_EIO, "access_log.path: \"%s\": %s", path, strerror(errno));
    close(fd);
    return rc;
}

ssize_t pf_log_sink_write(const pf_log_sink *sink, const void *buf, size_t len) {
    for (;;) {
        ssize_t n = sink->socket ? send(sink->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL)
                                 : write(sink->fd, buf, len);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
}

void pf_log_init_output(pf_counter *dropped) {
    pf_log_sink sink;
    if (pf_log_sink_open(&sink, STDERR_FILENO) == PF_OK)
        stderr_sink = sink;
    stderr_dropped = dropped;
}

void pf_log_close_output(void) {
    pf_log_sink_close(&stderr_sink);
    stderr_sink = (pf_log_sink){.fd = STDERR_FILENO};
    stderr_dropped = NULL;
}

void pf_log_write(pf_log_level level, const char *fmt, ...) {
    char line[LOG_LINE_MAX];
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
    if (pf_log_sink_write(&stderr_sink, line, len) <= 0 && stderr_dropped)
        metrics_inc(stderr_dropped, 1);
}
