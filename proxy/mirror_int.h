/* Request mirroring (routes[].mirror): a copy of a request goes to another cluster, fire
 * and forget. The copy is an exchange of its own with a downstream that discards the
 * answer; it owns copies of everything it sends (head, target, body), so it may outlive
 * the request, its connection and the router it came from. It goes once the original
 * request is complete, so it never holds the original back; its failures are its own. */
#ifndef PF_PROXY_MIRROR_INT_H
#define PF_PROXY_MIRROR_INT_H

#include "config/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pf_mirror pf_mirror;
typedef struct pf_exchange pf_exchange;
typedef struct pf_worker pf_worker;

/* At most this many copies in flight per worker; more are dropped (and counted). */
#define PF_MIRRORS_MAX 1024u

/* A pending copy of ex's request (its head and forwarding as routed) for route `r`, drawn
 * by the mirror's percent; NULL when not drawn, for an upgrade, or out of memory (counted
 * as dropped). Worker thread. */
pf_mirror *mirror_new(pf_exchange *ex, const pf_config_route *r);
/* The original's body bytes: kept up to the listener's buffer_bytes; past that the copy is
 * dropped when it would go. */
void mirror_body(pf_mirror *m, const char *at, size_t len);
/* The original request is complete: the copy goes now (the worker owns it from here). */
void mirror_launch(pf_mirror *m);
/* The original ended before it was complete: no copy. NULL is a no-op. */
void mirror_drop(pf_mirror *m);

/* Whether a copy launched at or before `us` (pf_now_us) is still in flight on w: it may
 * use a config a reload retired. */
bool mirror_started_before(const pf_worker *w, uint64_t us);
/* Frees every copy still in flight (the worker is stopping). */
void mirror_free_all(pf_worker *w);

#endif
