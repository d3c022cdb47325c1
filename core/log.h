/* Leveled logging: one line per event, a short message then key=value fields.
 * Thread-safe (each line is one write(2) to stderr). */
#ifndef PF_CORE_LOG_H
#define PF_CORE_LOG_H

typedef enum { PF_LOG_ERROR, PF_LOG_WARN, PF_LOG_INFO, PF_LOG_DEBUG } pf_log_level;

/* Parses "error", "warn", "info", "debug"; returns 0 or PF_EINVAL. */
int pf_log_level_parse(const char *name, pf_log_level *out);
void pf_log_set_level(pf_log_level level);
pf_log_level pf_log_get_level(void);
void pf_log_write(pf_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

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
