/* libevent's allocations through a small per-thread cache of buffer-chain blocks. An
 * evbuffer frees a chain as soon as it is drained and allocates one for the next add: on a
 * keep-alive connection that is four mallocs and four frees per request, each a 1 KiB
 * block. Freed blocks of that size wait in a bounded per-thread list for the next chain. */
#ifndef PF_CORE_EV_ALLOC_H
#define PF_CORE_EV_ALLOC_H

/* Installs the cache as libevent's allocator. Call first thing in main(), before any other
 * libevent call; once per process. */
void pf_ev_alloc_install(void);
/* Frees the calling thread's cached blocks: call when a thread that used libevent ends. */
void pf_ev_alloc_thread_free(void);

#endif
