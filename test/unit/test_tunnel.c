/* Unit tests for proxy/tunnel through its side ops (the seam an HTTP/2 extended CONNECT
 * stream uses): bytes move up to the output limit and the reader pauses, write progress
 * resumes it, an EOF becomes the other side's half-close once its bytes are out, the tunnel
 * ends when both sides closed and everything was written, and an error ends it at once.
 * Every byte the tunnel adds to an output is flushed (else it would wait for a timeout). */
#include "proxy/tunnel_int.h"
#include "test/unit/unit.h"

#include <event2/buffer.h>
#include <event2/event.h>

typedef struct {
    struct evbuffer *in, *out;
    bool reading;
    int read_switches;
    bool shut;
    size_t flushed; /* the output's length at its last flush */
} fake_end;

static struct evbuffer *f_input(void *e) {
    return ((fake_end *)e)->in;
}

static struct evbuffer *f_output(void *e) {
    return ((fake_end *)e)->out;
}

static void f_flush(void *e) {
    fake_end *f = e;
    f->flushed = evbuffer_get_length(f->out);
}

/* Whatever the tunnel added to the end's output was flushed after. */
static bool all_flushed(const fake_end *f) {
    return f->flushed == evbuffer_get_length(f->out);
}

static void f_read_enable(void *e, bool enable) {
    fake_end *f = e;
    f->reading = enable;
    f->read_switches++;
}

static void f_shutdown_write(void *e) {
    ((fake_end *)e)->shut = true;
}

static const pf_tunnel_end_ops fake_ops = {.input = f_input,
                                           .output = f_output,
                                           .flush = f_flush,
                                           .read_enable = f_read_enable,
                                           .shutdown_write = f_shutdown_write};

static const char *ended;
static int done_calls;

static void on_done(void *ctx, const char *reason) {
    ended = reason;
    done_calls++;
}

static void end_init(fake_end *f) {
    f->in = evbuffer_new();
    f->out = evbuffer_new();
    f->reading = false;
    f->read_switches = 0;
    f->shut = false;
    f->flushed = 0;
}

static void end_free(fake_end *f) {
    evbuffer_free(f->in);
    evbuffer_free(f->out);
}

static void test_bytes_move_with_backpressure_and_half_closes(void) {
    struct event_base *base = event_base_new();
    fake_end c, u;
    end_init(&c);
    end_init(&u);
    ended = NULL;
    done_calls = 0;
    /* bytes the client sent before the switch move at the start */
    evbuffer_add(c.in, "early", 5);
    pf_tunnel *t =
        tunnel_new_ends(base, &fake_ops, &c, &fake_ops, &u, false, 8, 60000, on_done, NULL);
    CU_ASSERT_FATAL(t != NULL);
    tunnel_start(t);
    CU_ASSERT_TRUE(c.reading && u.reading);
    CU_ASSERT_EQUAL(evbuffer_get_length(u.out), 5);
    CU_ASSERT_TRUE(all_flushed(&u));
    /* 6 more: 3 fit under the limit of 8, the rest waits and the client is paused */
    evbuffer_add(c.in, "abcdef", 6);
    tunnel_on_read(t, PF_TUNNEL_CLIENT);
    CU_ASSERT_EQUAL(evbuffer_get_length(u.out), 8);
    CU_ASSERT_TRUE(all_flushed(&u));
    CU_ASSERT_EQUAL(evbuffer_get_length(c.in), 3);
    CU_ASSERT_FALSE(c.reading);
    /* the endpoint took its bytes: the rest moves and the client reads again */
    evbuffer_drain(u.out, 8);
    tunnel_on_write(t, PF_TUNNEL_UPSTREAM);
    CU_ASSERT_EQUAL(evbuffer_get_length(u.out), 3);
    CU_ASSERT_TRUE(all_flushed(&u));
    CU_ASSERT_TRUE(c.reading);
    CU_ASSERT_EQUAL(tunnel_bytes(t, PF_TUNNEL_CLIENT), 11);
    /* the client's EOF reaches the endpoint as a half-close; the endpoint still answers */
    tunnel_on_event(t, PF_TUNNEL_CLIENT, PF_STREAM_EOF, 0);
    CU_ASSERT_TRUE(u.shut);
    CU_ASSERT_FALSE(c.shut);
    evbuffer_add(u.in, "bye", 3);
    tunnel_on_read(t, PF_TUNNEL_UPSTREAM);
    CU_ASSERT_EQUAL(evbuffer_get_length(c.out), 3);
    CU_ASSERT_TRUE(all_flushed(&c));
    tunnel_on_event(t, PF_TUNNEL_UPSTREAM, PF_STREAM_EOF, 0);
    CU_ASSERT_TRUE(c.shut);
    CU_ASSERT_EQUAL(done_calls, 0); /* outputs not yet written */
    evbuffer_drain(u.out, 3);
    tunnel_on_write(t, PF_TUNNEL_UPSTREAM);
    CU_ASSERT_EQUAL(done_calls, 0);
    evbuffer_drain(c.out, 3);
    tunnel_on_write(t, PF_TUNNEL_CLIENT);
    CU_ASSERT_EQUAL(done_calls, 1);
    CU_ASSERT_STRING_EQUAL(ended, "closed");
    CU_ASSERT_EQUAL(tunnel_bytes(t, PF_TUNNEL_UPSTREAM), 3);
    tunnel_free(t);
    end_free(&c);
    end_free(&u);
    event_base_free(base);
}

static void test_errors_and_closes_end_the_tunnel_at_once(void) {
    struct event_base *base = event_base_new();
    fake_end c, u;
    end_init(&c);
    end_init(&u);
    done_calls = 0;
    pf_tunnel *t =
        tunnel_new_ends(base, &fake_ops, &c, &fake_ops, &u, false, 8, 60000, on_done, NULL);
    tunnel_start(t);
    tunnel_on_event(t, PF_TUNNEL_UPSTREAM, PF_STREAM_ERROR, 104);
    CU_ASSERT_EQUAL(done_calls, 1);
    CU_ASSERT_STRING_EQUAL(ended, "upstream connection error");
    tunnel_free(t);
    c.reading = u.reading = u.shut = false;
    t = tunnel_new_ends(base, &fake_ops, &c, &fake_ops, &u, true, 8, 60000, on_done, NULL);
    tunnel_start(t); /* the client half-closed before the switch: the endpoint is told */
    CU_ASSERT_TRUE(u.shut);
    CU_ASSERT_FALSE(c.reading);
    tunnel_close(t, "client reset the stream");
    CU_ASSERT_EQUAL(done_calls, 2);
    CU_ASSERT_STRING_EQUAL(ended, "client reset the stream");
    tunnel_free(t);
    end_free(&c);
    end_free(&u);
    event_base_free(base);
}

PF_UNIT_MAIN("tunnel", PF_UNIT_TEST(test_bytes_move_with_backpressure_and_half_closes),
             PF_UNIT_TEST(test_errors_and_closes_end_the_tunnel_at_once))
