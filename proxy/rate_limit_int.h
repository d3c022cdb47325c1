/* Local rate limits: a route's token buckets, shared by every worker without a lock.
 * Each bucket is one atomic word, the time at which it would be full again (GCRA, the
 * "virtual scheduling" form of a token bucket): taking a token is one compare-and-swap.
 * Per-key buckets live in a fixed table of sets of PF_RATE_WAYS slots; a new key takes an
 * empty slot of its set or the least recently used one, so their number never grows. */
#ifndef PF_PROXY_RATE_LIMIT_INT_H
#define PF_PROXY_RATE_LIMIT_INT_H

#include "config/config.h"

#include <stddef.h>
#include <stdint.h>

#define PF_RATE_WAYS 8u

typedef struct pf_rate_limiter pf_rate_limiter;

/* A limiter for `cfg` (copied), its buckets full. NULL when out of memory. Main thread. */
pf_rate_limiter *rate_limiter_new(const pf_config_rate_limit *cfg);
void rate_limiter_free(pf_rate_limiter *rl);

/* Takes a token from the bucket of `key` (len bytes; ignored without a keyed limit) at
 * `now_ns` (a monotonic clock). Returns 0 when the request may go, else the nanoseconds
 * until a token will be there. Any thread, concurrently. */
uint64_t rate_limiter_take(pf_rate_limiter *rl, const char *key, size_t len, uint64_t now_ns);

/* How many keyed buckets the limiter holds (a multiple of PF_RATE_WAYS; 0 without keys). */
size_t rate_limiter_capacity(const pf_rate_limiter *rl);

#endif
