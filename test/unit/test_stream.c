/* Unit tests for proxy/stream's output flushing over socketpairs: what a callback adds and
 * flushes is written when the callback returns, in the same loop turn; a flush outside any
 * stream callback is written by the loop; a stream freed while it waits on the thread's
 * list of streams to write is left out of it (ASan in `make asan` sees a use after free). */
#include "proxy/stream.h"
#include "test/unit/unit.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    pf_stream *s;     /* the stream under test */
    pf_stream *other; /* written to, then freed, from s's read callback (when not NULL) */
    int reads;
} fixture;

static void pair(int sv[2]) {
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
}

/* What the peer end has received so far (non-blocking), into buf; returns the length. */
static size_t peer_read(int fd, char *buf, size_t cap) {
    size_t got = 0;
    while (got < cap) {
        ssize_t n = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

/* One loop turn at a time, at most `turns`, until the fixture saw a read. */
static void run_until_read(struct event_base *base, fixture *f, int turns) {
    for (int i = 0; i < turns && f->reads == 0; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

static void on_read(pf_stream *s, void *ctx) {
    fixture *f = ctx;
    f->reads++;
    struct evbuffer *in = stream_input(s);
    evbuffer_drain(in, evbuffer_get_length(in));
    /* two adds, two flushes: one batch, written after this callback */
    evbuffer_add(stream_output(s), "po", 2);
    stream_flush(s);
    evbuffer_add(stream_output(s), "ng", 2);
    stream_flush(s);
    if (f->other) {
        evbuffer_add(stream_output(f->other), "lost", 4);
        stream_flush(f->other); /* joins the list to write... */
        stream_free(f->other);  /* ...and leaves it, freed before the write */
        f->other = NULL;
    }
}

static void on_write(pf_stream *s, void *ctx) {}

static void on_event(pf_stream *s, int what, int err, void *ctx) {}

static const pf_stream_callbacks callbacks = {on_read, on_write, on_event};

static void test_output_flushed_in_a_callback_is_written_when_it_returns(void) {
    struct event_base *base = event_base_new();
    int sv[2];
    pair(sv);
    CU_ASSERT_FATAL(send(sv[1], "ping", 4, 0) == 4);
    fixture f = {0};
    f.s = stream_new(base, sv[0], 4096, 2048, &callbacks, &f);
    CU_ASSERT_FATAL(f.s != NULL);
    run_until_read(base, &f, 8);
    CU_ASSERT_EQUAL(f.reads, 1);
    /* no further turn: the write happened as the read callback returned */
    char buf[16];
    size_t n = peer_read(sv[1], buf, sizeof buf);
    CU_ASSERT_EQUAL(n, 4);
    CU_ASSERT_TRUE(n == 4 && memcmp(buf, "pong", 4) == 0);
    stream_free(f.s);
    close(sv[1]);
    event_base_free(base);
}

static void test_flush_outside_a_stream_callback_is_written_by_the_loop(void) {
    struct event_base *base = event_base_new();
    int sv[2];
    pair(sv);
    fixture f = {0};
    f.s = stream_new(base, sv[0], 4096, 2048, &callbacks, &f);
    CU_ASSERT_FATAL(f.s != NULL);
    evbuffer_add(stream_output(f.s), "hello", 5);
    stream_flush(f.s);
    char buf[16];
    size_t n = 0;
    for (int i = 0; i < 8 && n < 5; i++) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        n += peer_read(sv[1], buf + n, sizeof buf - n);
    }
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT_TRUE(n == 5 && memcmp(buf, "hello", 5) == 0);
    stream_free(f.s);
    close(sv[1]);
    event_base_free(base);
}

static void test_stream_freed_while_waiting_to_be_written_is_skipped(void) {
    struct event_base *base = event_base_new();
    int a[2], b[2];
    pair(a);
    pair(b);
    fixture f = {0};
    f.s = stream_new(base, a[0], 4096, 2048, &callbacks, &f);
    fixture g = {0};
    f.other = stream_new(base, b[0], 4096, 2048, &callbacks, &g);
    CU_ASSERT_FATAL(f.s != NULL && f.other != NULL);
    /* both streams' first reads find nothing and they wait in epoll: no flush is pending */
    for (int i = 0; i < 4; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CU_ASSERT_FATAL(send(a[1], "ping", 4, 0) == 4);
    run_until_read(base, &f, 8);
    CU_ASSERT_EQUAL(f.reads, 1);
    CU_ASSERT_PTR_NULL(f.other);
    char buf[16];
    CU_ASSERT_EQUAL(peer_read(a[1], buf, sizeof buf), 4); /* the survivor was written */
    CU_ASSERT_EQUAL(peer_read(b[1], buf, sizeof buf), 0); /* the freed one never was */
    /* and the freed stream's socket is closed: its peer reads the end */
    CU_ASSERT_EQUAL(recv(b[1], buf, sizeof buf, MSG_DONTWAIT), 0);
    stream_free(f.s);
    close(a[1]);
    close(b[1]);
    event_base_free(base);
}

PF_UNIT_MAIN("stream", PF_UNIT_TEST(test_output_flushed_in_a_callback_is_written_when_it_returns),
             PF_UNIT_TEST(test_flush_outside_a_stream_callback_is_written_by_the_loop),
             PF_UNIT_TEST(test_stream_freed_while_waiting_to_be_written_is_skipped))
