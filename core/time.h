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
/* The loop-turn clock: pf_now_us read once per turn of this thread's event loop, at the first
 * ask after the loop woke. A keep-alive request reads the time four times (start, attempt,
 * response head, end) and a turn serves several requests, so this saves most of those reads;
 * what it costs is that a reading may be early by the time the turn ran so far. Never later
 * than pf_now_us read after it. pf_turn_clock_start makes the calling thread's loop keep it
 * (each turn ends with pf_turn_clock_next); on any other thread pf_turn_now_us is
 * pf_now_us. */
void pf_turn_clock_start(void);
void pf_turn_clock_next(void);
uint64_t pf_turn_now_us(void);
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
