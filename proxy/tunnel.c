/* Byte tunnels after a protocol switch: see tunnel_int.h. Memory is bounded by the streams'
 * read limits and `limit` per output: a side that sends faster than the other reads is
 * paused, never buffered without end.
 *
 * Reentrancy rule: `done` may free the tunnel and both streams, so every path returns at
 * once after calling it. */
#include "proxy/tunnel_int.h"
#include "core/time.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct pf_tunnel {
    const pf_tunnel_end_ops *ops[2];
    void *s[2];
    struct event *timer;
    uint64_t idle_ms;
    size_t limit;
    bool eof[2];    /* side i closed its write half: nothing more comes from it */
    bool shut[2];   /* we shut side i's write half (after passing on the other's EOF) */
    bool paused[2]; /* reading side i waits for room in the other side's output */
    uint64_t bytes[2];
    pf_counter *count[2][2]; /* optional counters of bytes[i] */
    pf_tunnel_done done;
    void *ctx;
};

static void on_idle(evutil_socket_t fd, short what, void *arg) {
    pf_tunnel *t = arg;
    t->done(t->ctx, "idle timeout");
}

static void touch(pf_tunnel *t) {
    struct timeval tv = pf_timeval_ms(t->idle_ms);
    evtimer_add(t->timer, &tv);
}

/* Over once both halves are closed and everything read was written out. */
static bool finished(const pf_tunnel *t) {
    for (int i = 0; i < 2; i++)
        if (!t->eof[i] || evbuffer_get_length(t->ops[i]->input(t->s[i])) > 0 ||
            evbuffer_get_length(t->ops[i]->output(t->s[i])) > 0)
            return false;
    return true;
}

/* Moves what side `from` sent into the other side's output, as far as its room allows;
 * the rest waits in the input with reading paused. Returns true when the tunnel ended. */
static bool pump(pf_tunnel *t, int from) {
    int to = 1 - from;
    struct evbuffer *in = t->ops[from]->input(t->s[from]), *out = t->ops[to]->output(t->s[to]);
    size_t have = evbuffer_get_length(in), queued = evbuffer_get_length(out);
    size_t room = queued < t->limit ? t->limit - queued : 0;
    size_t move = have < room ? have : room;
    if (move > 0) {
        evbuffer_remove_buffer(in, out, move);
        t->ops[to]->flush(t->s[to]);
        t->bytes[from] += move;
        for (int k = 0; k < 2; k++)
            if (t->count[from][k])
                metrics_inc(t->count[from][k], move);
        touch(t);
    }
    bool blocked = evbuffer_get_length(in) > 0;
    if (blocked != t->paused[from] && !t->eof[from]) {
        t->paused[from] = blocked;
        t->ops[from]->read_enable(t->s[from], !blocked);
    }
    /* RFC 9110 7.8: after the switch the bytes are the new protocol's, and a half-close is
     * part of it (a WebSocket close handshake may be followed by one), so pass it on. */
    if (t->eof[from] && !blocked && !t->shut[to]) {
        t->shut[to] = true;
        t->ops[to]->shutdown_write(t->s[to]);
    }
    if (finished(t)) {
        t->done(t->ctx, "closed");
        return true;
    }
    return false;
}

static struct evbuffer *end_input(void *s) {
    return stream_input(s);
}

static struct evbuffer *end_output(void *s) {
    return stream_output(s);
}

static void end_flush(void *s) {
    stream_flush(s);
}

static void end_read_enable(void *s, bool enable) {
    stream_read_enable(s, enable);
}

static void end_shutdown_write(void *s) {
    stream_shutdown_write(s);
}

const pf_tunnel_end_ops tunnel_stream_end_ops = {
    .input = end_input,
    .output = end_output,
    .flush = end_flush,
    .read_enable = end_read_enable,
    .shutdown_write = end_shutdown_write,
};

pf_tunnel *tunnel_new(struct event_base *base, pf_stream *client, pf_stream *upstream,
                      bool client_eof, size_t limit, uint64_t idle_ms, pf_tunnel_done done,
                      void *ctx) {
    return tunnel_new_ends(base, &tunnel_stream_end_ops, client, &tunnel_stream_end_ops, upstream,
                           client_eof, limit, idle_ms, done, ctx);
}

pf_tunnel *tunnel_new_ends(struct event_base *base, const pf_tunnel_end_ops *client_ops,
                           void *client, const pf_tunnel_end_ops *upstream_ops, void *upstream,
                           bool client_eof, size_t limit, uint64_t idle_ms, pf_tunnel_done done,
                           void *ctx) {
    pf_tunnel *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->timer = evtimer_new(base, on_idle, t);
    if (!t->timer) {
        free(t);
        return NULL;
    }
    t->ops[PF_TUNNEL_CLIENT] = client_ops;
    t->ops[PF_TUNNEL_UPSTREAM] = upstream_ops;
    t->s[PF_TUNNEL_CLIENT] = client;
    t->s[PF_TUNNEL_UPSTREAM] = upstream;
    t->eof[PF_TUNNEL_CLIENT] = client_eof;
    t->limit = limit;
    t->idle_ms = idle_ms;
    t->done = done;
    t->ctx = ctx;
    return t;
}

void tunnel_start(pf_tunnel *t) {
    touch(t);
    for (int i = 0; i < 2; i++)
        if (!t->eof[i])
            t->ops[i]->read_enable(t->s[i], true);
    if (pump(t, PF_TUNNEL_UPSTREAM))
        return;
    pump(t, PF_TUNNEL_CLIENT);
}

void tunnel_on_read(pf_tunnel *t, int side) {
    pump(t, side);
}

void tunnel_on_write(pf_tunnel *t, int side) {
    /* Side `side` took some of its output: the other side may send again. */
    pump(t, 1 - side);
}

void tunnel_on_event(pf_tunnel *t, int side, int what, int err) {
    if (what & PF_STREAM_ERROR) {
        t->done(t->ctx,
                side == PF_TUNNEL_CLIENT ? "client connection error" : "upstream connection error");
        return;
    }
    if (what & PF_STREAM_EOF) {
        t->eof[side] = true;
        pump(t, side);
    }
}

void tunnel_close(pf_tunnel *t, const char *reason) {
    t->done(t->ctx, reason);
}

void tunnel_count_bytes(pf_tunnel *t, int side, pf_counter *a, pf_counter *b) {
    t->count[side][0] = a;
    t->count[side][1] = b;
}

uint64_t tunnel_bytes(const pf_tunnel *t, int side) {
    return t ? t->bytes[side] : 0;
}

void tunnel_free(pf_tunnel *t) {
    if (!t)
        return;
    event_free(t->timer);
    free(t);
}
