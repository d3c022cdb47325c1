/* Leveled logging: one line per event, a short message then key=value fields.
 * Thread-safe (each line is one write(2) to stderr), and never blocking once
 * pf_log_init_output ran: a line that does not fit in a full stderr is dropped and counted.
 * Also the non-blocking sink the access log writes to stdout through. */
#ifndef PF_CORE_LOG_H
#define PF_CORE_LOG_H

#include "core/error.h"
#include "core/metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef enum { PF_LOG_ERROR, PF_LOG_WARN, PF_LOG_INFO, PF_LOG_DEBUG } pf_log_level;

/* Parses "error", "warn", "info", "debug"; returns 0 or PF_EINVAL. */
int pf_log_level_parse(const char *name, pf_log_level *out);
void pf_log_set_level(pf_log_level level);
pf_log_level pf_log_get_level(void);
void pf_log_write(pf_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Makes the error log non-blocking (stderr through a pf_log_sink) and counts dropped lines
 * in `dropped` (may be NULL). Main thread, at start, before other threads log. */
void pf_log_init_output(pf_counter *dropped);
/* Undoes pf_log_init_output: back to blocking writes to stderr. Main thread, at exit. */
void pf_log_close_output(void);

/* Somewhere to write log lines that never blocks the writer: a pipe or terminal is reopened
 * with O_NONBLOCK (a new open file description, so processes sharing the original one keep
 * theirs blocking), a socket is written with MSG_DONTWAIT, and a file is written as is. */
typedef struct pf_log_sink {
    int fd;
    bool owned;        /* opened by pf_log_sink_open: closed by pf_log_sink_close */
    bool socket;       /* send(MSG_DONTWAIT) instead of write */
    size_t atomic_max; /* longest write that lands whole or not at all; 0: any */
} pf_log_sink;

/* Opens a sink on `fd` (1 or 2). Returns 0, or PF_EIO when `fd` is not open. */
int pf_log_sink_open(pf_log_sink *sink, int fd);
void pf_log_sink_close(pf_log_sink *sink);
/* Opens a sink on the file at `path`: created (0644) if missing and appended to; a FIFO is
 * written without blocking like a pipe. Returns 0, or PF_EIO with err saying why. */
int pf_log_sink_open_path(pf_log_sink *sink, const char *path, pf_error *err);
/* Opens `path` again and puts it in place of the sink's file under the same descriptor
 * (for log rotation: the old file was renamed). A write running in another thread at that
 * moment finishes on the old file; the next one goes to the new. Refuses (PF_EINVAL) a new
 * file of another kind (a FIFO for a regular file, say). Returns 0, or an error with err
 * set; on error the sink keeps its old file. Any thread. */
int pf_log_sink_reopen_path(pf_log_sink *sink, const char *path, pf_error *err);
/* Writes up to `len` bytes without blocking. Returns the bytes written (maybe fewer than
 * len), 0 when the sink is full right now, or -1 when it is broken (with SIGPIPE ignored,
 * as main() does, a pipe without a reader is that). Any thread. */
ssize_t pf_log_sink_write(const pf_log_sink *sink, const void *buf, size_t len);

#define PF_LOG_AT(level, ...)                                                                      \
    do {                                                                                           \
        if ((level) <= pf_log_get_level())                                                         \
            pf_log_write((level), __VA_ARGS__);                                                    \
    } while (0)
#define log_error(...) PF_LOG_AT(PF_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) PF_LOG_AT(PF_LOG_WARN, __VA_ARGS__)
#define log_info(...) PF_LOG_AT(PF_LOG_INFO, __VA_ARGS__)
#define log_debug(...) PF_LOG_AT(PF_LOG_DEBUG, __VA_ARGS__)

#endif
