/* A timeout that is set and cleared many times per second and rarely fires: a connection's
 * header, idle and response timeouts, moved on every request. A libevent timer would be
 * added to and deleted from its heap each time; this one keeps one timer armed at or before
 * the nearest deadline and only moves the deadline: setting a later deadline or clearing it
 * touches no heap. When the timer fires before the deadline (it was moved later, or cleared),
 * it is armed again for what is left, or not at all. */
#ifndef PF_PROXY_DEADLINE_H
#define PF_PROXY_DEADLINE_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stdint.h>

typedef void (*pf_deadline_fn)(void *arg);

typedef struct pf_deadline {
    struct event ev; /* embedded: no allocation per connection */
    bool assigned;
    uint64_t due_ms;   /* pf_now_coarse_ms() when fn runs; 0: cleared */
    uint64_t armed_ms; /* when ev fires; 0: ev is not pending */
    pf_deadline_fn fn;
    void *arg;
} pf_deadline;

/* Returns 0 or PF_EINVAL. fn runs on base's loop once a deadline is reached. deadline_free
 * is safe after a failed init, and on a zeroed pf_deadline. */
int deadline_init(pf_deadline *d, struct event_base *base, pf_deadline_fn fn, void *arg);
void deadline_free(pf_deadline *d);
/* fn runs ms from now, unless set again or cleared before. */
void deadline_set(pf_deadline *d, uint64_t ms);
void deadline_clear(pf_deadline *d);
/* Whether a deadline is set. */
bool deadline_pending(const pf_deadline *d);

#endif
