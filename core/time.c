/* Clocks and duration parsing. */
#include "core/time.h"
#include "core/error.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t pf_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Per thread: each worker runs its own loop. */
static _Thread_local struct {
    bool on, valid;
    uint64_t us;
} turn;

void pf_turn_clock_start(void) {
    turn.on = true;
    turn.valid = false;
}

void pf_turn_clock_next(void) {
    turn.valid = false;
}

uint64_t pf_turn_now_us(void) {
    if (!turn.on)
        return pf_now_us();
    if (!turn.valid) {
        turn.us = pf_now_us();
        turn.valid = true;
    }
    return turn.us;
}

uint64_t pf_now_ms(void) {
    return pf_now_us() / 1000u;
}

void pf_now_coarse_ms(uint64_t *now_ms, uint64_t *tick_ms) {
    /* The resolution never changes while the process runs: asked once (a race only writes
     * the same value twice). */
    static _Atomic uint64_t tick;
    uint64_t t = atomic_load_explicit(&tick, memory_order_relaxed);
    if (!t) {
        struct timespec res;
        if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0)
            t = (uint64_t)res.tv_sec * 1000u + ((uint64_t)res.tv_nsec + 999999u) / 1000000u;
        if (!t)
            t = 1;
        atomic_store_explicit(&tick, t, memory_order_relaxed);
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    *now_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    *tick_ms = t;
}

uint64_t pf_wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int pf_duration_parse(const char *text, uint64_t *out_ms) {
    /* Decimal digits only, in integer arithmetic: "2.007s" must be 2007 ms exactly, which
     * a double product is not, and strtod would also take hex floats. The value is kept in
     * microseconds and rounded up to whole milliseconds. */
    static const struct {
        const char *unit;
        uint64_t us;
    } units[] = {{"us", 1}, {"ms", 1000}, {"s", 1000000}, {"m", 60000000}, {"h", 3600000000u}};
    if (!text)
        return PF_EINVAL;
    const char *p = text;
    uint64_t whole = 0, frac = 0, frac_scale = 1;
    size_t digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (whole > 1000000000000ull)
            return PF_EINVAL;
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        p++;
        for (; *p >= '0' && *p <= '9'; p++, digits++) {
            if (frac_scale < 1000000000000ull) {
                frac = frac * 10 + (uint64_t)(*p - '0');
                frac_scale *= 10;
            }
        }
    }
    if (digits == 0)
        return PF_EINVAL;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(p, units[i].unit) != 0)
            continue;
        uint64_t us = units[i].us;
        if (whole > UINT64_MAX / us / 2)
            return PF_EINVAL;
        /* frac/frac_scale of a unit, rounded up to a microsecond. */
        uint64_t total_us = whole * us + (frac * us + frac_scale - 1) / frac_scale;
        *out_ms = (total_us + 999) / 1000;
        return PF_OK;
    }
    return PF_EINVAL;
}

const char *pf_duration_format(uint64_t ms, char *buf, size_t len) {
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(buf, len, "%lluh", (unsigned long long)(ms / 3600000));
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(buf, len, "%llum", (unsigned long long)(ms / 60000));
    else if (ms != 0 && ms % 1000 == 0)
        snprintf(buf, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, len, "%llums", (unsigned long long)ms);
    return buf;
}

struct timeval pf_timeval_ms(uint64_t ms) {
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
                         .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}
