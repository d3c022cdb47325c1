/* Fast random numbers for choices that need no cryptography (load balancing, jitter):
 * xorshift128+ (Vigna). The state belongs to one owner (a worker, a balancer, a resolver)
 * and is never shared, so drawing takes no lock and no atomic. */
#ifndef PF_CORE_RANDOM_H
#define PF_CORE_RANDOM_H

#include <stdint.h>

/* The next number from state s, which must not be all zero. */
static inline uint64_t pf_xorshift128p(uint64_t s[2]) {
    uint64_t s1 = s[0];
    const uint64_t s0 = s[1];
    s[0] = s0;
    s1 ^= s1 << 23;
    s[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return s[1] + s0;
}

#endif
