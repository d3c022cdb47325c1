/* A bounded per-thread cache under libevent's malloc/free: see ev_alloc.h. */
#include "core/ev_alloc.h"

#include <event2/event.h>
#include <malloc.h>
#include <stddef.h>
#include <stdlib.h>

/* libevent rounds a chain of a small add up to 1 KiB (header included); the blocks kept are
 * those malloc gives for that request, recognised by their usable size. */
#define CHAIN_BYTES 1024u
#define SPARE_BLOCKS 64u

static size_t block_usable; /* malloc_usable_size of a CHAIN_BYTES block; 0: no cache */

static _Thread_local struct {
    void *blocks[SPARE_BLOCKS];
    unsigned n;
} spare;

static void *ev_malloc(size_t n) {
    /* Any request a kept block holds, but not far smaller ones: a 1 KiB block for a 40-byte
     * object would waste what the cache saves. */
    if (spare.n && n <= block_usable && n > block_usable / 2)
        return spare.blocks[--spare.n];
    return malloc(n);
}

static void *ev_realloc(void *p, size_t n) {
    return realloc(p, n); /* kept blocks are malloc's own: realloc takes them as they are */
}

static void ev_free(void *p) {
    if (p && spare.n < SPARE_BLOCKS && malloc_usable_size(p) == block_usable) {
        spare.blocks[spare.n++] = p;
        return;
    }
    free(p);
}

void pf_ev_alloc_install(void) {
    void *probe = malloc(CHAIN_BYTES);
    if (!probe)
        return; /* libevent keeps malloc */
    block_usable = malloc_usable_size(probe);
    free(probe);
    event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
}

void pf_ev_alloc_thread_free(void) {
    while (spare.n)
        free(spare.blocks[--spare.n]);
}
