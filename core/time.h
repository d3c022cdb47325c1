/* Clocks and durations. Durations are milliseconds everywhere (uint64_t); config
 * strings such as "250ms", "5s", "1m" are parsed here. */
#ifndef PF_CORE_TIME_H
#define PF_CORE_TIME_H

#include <stdint.h>
#include <stddef.h>
#include <sys/time.h>

/* Monotonic clock, for timeouts and latency. */
uint64_t pf_now_ms(void);
uint64_t pf_now_us(void);
/* The monotonic clock's coarse form (the kernel's tick, a few ms, at a fifth of the cost of
 * pf_now_ms: no TSC read), in *now_ms, and in *tick_ms how far it may lag pf_now_ms. For
 * timeouts moved on every request, where a tick of lateness does not matter. */
void pf_now_coarse_ms(uint64_t *now_ms, uint64_t *tick_ms);
/* Wall clock in microseconds since the epoch, for logs. */
uint64_t pf_wall_us(void);

/* Parses "<number><unit>" with unit one of us, ms, s, m, h (fractions allowed: "1.5s").
 * Returns 0 and the value in *out_ms (microseconds round up to 1 ms), or PF_EINVAL. */
int pf_duration_parse(const char *text, uint64_t *out_ms);

/* Formats ms as the shortest exact form ("250ms", "5s", "2m"); returns buf. */
const char *pf_duration_format(uint64_t ms, char *buf, size_t len);

/* Fills a struct timeval for libevent timers. */
struct timeval pf_timeval_ms(uint64_t ms);

#endif
