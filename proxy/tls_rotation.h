/* Watches the TLS listeners' and clusters' certificate, key and CA files and swaps in a
 * changed, valid set without a restart (proxy/tls_rotation.c); rotates session ticket keys
 * and exports pilotfish_tls_certificate_expiry_seconds{file}. */
#ifndef PF_PROXY_TLS_ROTATION_H
#define PF_PROXY_TLS_ROTATION_H

#include "core/error.h"
#include "core/metrics.h"
#include "proxy/proxy.h"

#include <event2/event.h>

typedef struct pf_tls_watch pf_tls_watch;

/* Starts watching the files of the proxy's TLS listeners and clusters on `base` (the main
 * thread's loop) and registers the metrics. Returns NULL with err set when out of memory.
 * Startup thread only, before the admin server serves metrics; free it after the admin
 * server (a scrape reads it) and before the proxy. */
pf_tls_watch *tls_watch_new(struct event_base *base, pf_proxy *proxy, pf_metrics *m, pf_error *err);
void tls_watch_free(pf_tls_watch *w);
/* Watches the files of cluster `index` (added after start, by a reload); nothing for a
 * plaintext cluster. Returns 0 or PF_ENOMEM. Main thread. */
int tls_watch_add_cluster(pf_tls_watch *w, size_t index);
/* Stops watching cluster `index`'s files (those no other listener or cluster uses leave the
 * expiry gauge) and releases its reload counters. Call before its slot is freed; NULL
 * and a cluster not watched are no-ops. Main thread. */
void tls_watch_remove_cluster(pf_tls_watch *w, size_t index);

#endif
