/* Unit tests for core/ev_alloc.c: with the cache installed as libevent's allocator,
 * buffers drained and refilled (chains freed and taken again from the cache) keep exactly
 * their bytes, in one thread and in several, and a thread's cache can be freed. Installed
 * by the first test, before any other libevent call of this binary. */
#include "core/ev_alloc.h"
#include "test/unit/unit.h"

#include <event2/buffer.h>
#include <pthread.h>

/* Adds, reads back and drains small and large pieces `rounds` times; returns how many
 * pieces came back different. */
static int churn(int rounds, int tag) {
    int bad = 0;
    struct evbuffer *a = evbuffer_new(), *b = evbuffer_new();
    char big[20000]; /* per call: threads churn at once */
    if (!a || !b)
        return 1;
    for (int r = 0; r < rounds; r++) {
        char msg[64], got[sizeof big + 64];
        int n = snprintf(msg, sizeof msg, "request %d of thread %d", r, tag);
        evbuffer_add(a, msg, (size_t)n);
        evbuffer_add(b, msg, (size_t)n);
        evbuffer_add(b, "+", 1); /* appended to the same chain */
        if (r % 7 == 0) {
            memset(big, 'a' + r % 26, sizeof big);
            evbuffer_add(a, big, sizeof big);
        }
        size_t len = evbuffer_get_length(a);
        if (evbuffer_remove(a, got, sizeof got) != (int)len || memcmp(got, msg, (size_t)n) != 0)
            bad++;
        if (r % 7 == 0 && (len != (size_t)n + sizeof big || got[n] != 'a' + r % 26 ||
                           got[len - 1] != 'a' + r % 26))
            bad++;
        len = evbuffer_get_length(b);
        if (len != (size_t)n + 1 || evbuffer_remove(b, got, sizeof got) != (int)len ||
            memcmp(got, msg, (size_t)n) != 0 || got[n] != '+')
            bad++;
    }
    evbuffer_free(a);
    evbuffer_free(b);
    return bad;
}

static void test_drained_and_refilled_buffers_keep_their_bytes(void) {
    pf_ev_alloc_install();
    CU_ASSERT_EQUAL(churn(500, 0), 0);
    pf_ev_alloc_thread_free();
    CU_ASSERT_EQUAL(churn(50, 0), 0); /* a freed cache fills again */
    pf_ev_alloc_thread_free();
}

static void *churn_thread(void *arg) {
    int *bad = arg;
    *bad = churn(300, 1);
    pf_ev_alloc_thread_free(); /* as a worker does when its loop ends */
    return NULL;
}

static void test_threads_each_use_their_own_cache(void) {
    pthread_t t[3];
    int bad[3] = {0};
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, churn_thread, &bad[i]), 0);
    CU_ASSERT_EQUAL(churn(300, 9), 0);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(bad[i], 0);
    }
    pf_ev_alloc_thread_free();
}

PF_UNIT_MAIN("ev_alloc", PF_UNIT_TEST(test_drained_and_refilled_buffers_keep_their_bytes),
             PF_UNIT_TEST(test_threads_each_use_their_own_cache))
