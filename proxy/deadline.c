/* Deadlines over one lazily moved libevent timer: see deadline.h. */
#include "proxy/deadline.h"
#include "core/error.h"
#include "core/time.h"

static void arm(pf_deadline *d, uint64_t now, uint64_t due) {
    struct timeval tv = pf_timeval_ms(due > now ? due - now : 0);
    evtimer_add(&d->ev, &tv);
    d->armed_ms = due;
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
    pf_deadline *d = arg;
    d->armed_ms = 0;
    if (!d->due_ms)
        return; /* cleared since it was armed */
    uint64_t now, tick;
    pf_now_coarse_ms(&now, &tick);
    if (now < d->due_ms) {
        arm(d, now, d->due_ms); /* moved later since it was armed */
        return;
    }
    d->due_ms = 0;
    d->fn(d->arg); /* last: it may free d */
}

int deadline_init(pf_deadline *d, struct event_base *base, pf_deadline_fn fn, void *arg) {
    d->due_ms = d->armed_ms = 0;
    d->fn = fn;
    d->arg = arg;
    d->assigned = evtimer_assign(&d->ev, base, on_timer, d) == 0;
    return d->assigned ? PF_OK : PF_EINVAL;
}

void deadline_free(pf_deadline *d) {
    if (d->assigned)
        event_del(&d->ev);
    d->assigned = false;
}

void deadline_set(pf_deadline *d, uint64_t ms) {
    /* The coarse clock: read four times per keep-alive request. It lags by up to a tick, so
     * the deadline is a tick further, and on_timer's check (the same clock, which is never
     * ahead) cannot run fn before ms have passed. */
    uint64_t now, tick;
    pf_now_coarse_ms(&now, &tick);
    d->due_ms = now + tick + ms;
    if (d->due_ms == 0)
        d->due_ms = 1;
    /* A timer armed for later than the new deadline would fire too late: move it earlier.
     * One armed for earlier fires, finds the deadline ahead, and arms again. */
    if (!d->armed_ms || d->armed_ms > d->due_ms)
        arm(d, now, d->due_ms);
}

void deadline_clear(pf_deadline *d) {
    d->due_ms = 0;
}

bool deadline_pending(const pf_deadline *d) {
    return d->due_ms != 0;
}
