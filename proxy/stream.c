/* Socket streams: see stream.h for why they exist instead of bufferevents. */
#include "proxy/stream.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_CHUNK (16u * 1024u)

struct pf_stream {
    struct event *read_ev;  /* EV_READ | EV_PERSIST */
    struct event *write_ev; /* EV_WRITE | EV_PERSIST, armed only while the kernel pushes back */
    struct event *flush_ev; /* activated when output is added: writes after the callback */
    struct evbuffer *in, *out;
    int fd;
    size_t read_limit, write_low;
    pf_stream_callbacks cbs;
    void *ctx;
    int pending_error;
    bool want_read, read_armed, write_armed, flush_pending;
    bool connecting, shut;
};

static void arm_read(pf_stream *s) {
    bool want = s->want_read && evbuffer_get_length(s->in) < s->read_limit;
    if (want && !s->read_armed)
        event_add(s->read_ev, NULL);
    else if (!want && s->read_armed)
        event_del(s->read_ev);
    s->read_armed = want;
}

static void arm_write(pf_stream *s, bool want) {
    if (want && !s->write_armed)
        event_add(s->write_ev, NULL);
    else if (!want && s->write_armed)
        event_del(s->write_ev);
    s->write_armed = want;
}

static void on_readable(evutil_socket_t fd, short what, void *arg) {
    pf_stream *s = arg;
    size_t room = s->read_limit - evbuffer_get_length(s->in);
    if (room == 0 || !s->want_read) {
        arm_read(s);
        return;
    }
    if (room > READ_CHUNK)
        room = READ_CHUNK;
    struct evbuffer_iovec vec[2];
    int nvec = evbuffer_reserve_space(s->in, (ev_ssize_t)room, vec, 2);
    if (nvec < 1)
        return;
    size_t total = 0;
    for (int i = 0; i < nvec; i++) {
        if (vec[i].iov_len > room - total)
            vec[i].iov_len = room - total;
        total += vec[i].iov_len;
    }
    ssize_t n = readv(fd, (struct iovec *)vec, nvec);
    if (n < 0) {
        int err = errno;
        evbuffer_commit_space(s->in, vec, 0);
        if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
            return;
        s->want_read = false;
        arm_read(s);
        s->cbs.on_event(s, PF_STREAM_ERROR, err, s->ctx);
        return;
    }
    if (n == 0) {
        evbuffer_commit_space(s->in, vec, 0);
        s->want_read = false;
        arm_read(s);
        s->cbs.on_event(s, PF_STREAM_EOF, 0, s->ctx);
        return;
    }
    size_t left = (size_t)n;
    for (int i = 0; i < nvec; i++) {
        size_t take = vec[i].iov_len < left ? vec[i].iov_len : left;
        vec[i].iov_len = take;
        left -= take;
    }
    evbuffer_commit_space(s->in, vec, nvec);
    if (evbuffer_get_length(s->in) >= s->read_limit)
        arm_read(s);
    s->cbs.on_read(s, s->ctx);
}

/* Writes what the output holds. Calls back last: the callback may free the stream. */
static void write_out(pf_stream *s) {
    if (s->connecting)
        return;
    bool progress = false;
    while (evbuffer_get_length(s->out) > 0) {
        int n = evbuffer_write(s->out, s->fd);
        if (n > 0) {
            progress = true;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            break;
        int err = n < 0 ? errno : EPIPE;
        arm_write(s, false);
        s->cbs.on_event(s, PF_STREAM_ERROR, err, s->ctx);
        return;
    }
    size_t left = evbuffer_get_length(s->out);
    arm_write(s, left > 0);
    if (left == 0 && s->shut)
        shutdown(s->fd, SHUT_WR);
    if (progress && left <= s->write_low && s->cbs.on_write)
        s->cbs.on_write(s, s->ctx);
}

static void on_writable(evutil_socket_t fd, short what, void *arg) {
    pf_stream *s = arg;
    if (s->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == EINPROGRESS)
            return;
        s->connecting = false;
        if (err) {
            arm_write(s, false);
            s->cbs.on_event(s, PF_STREAM_ERROR, err, s->ctx);
            return;
        }
        arm_write(s, evbuffer_get_length(s->out) > 0);
        s->cbs.on_event(s, PF_STREAM_CONNECTED, 0, s->ctx);
        /* The callback may have failed the exchange and freed us: it then returns through
         * here only if the stream survived, which the owner guarantees by not freeing
         * streams from PF_STREAM_CONNECTED. */
    }
    write_out(s);
}

static void on_flush(evutil_socket_t fd, short what, void *arg) {
    pf_stream *s = arg;
    s->flush_pending = false;
    if (s->pending_error) {
        int err = s->pending_error;
        s->pending_error = 0;
        s->cbs.on_event(s, PF_STREAM_ERROR, err, s->ctx);
        return;
    }
    write_out(s);
}

static void schedule_flush(pf_stream *s) {
    if (!s->flush_pending) {
        s->flush_pending = true;
        event_active(s->flush_ev, 0, 0);
    }
}

static void on_output_change(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg) {
    if (info->n_added > 0)
        schedule_flush(arg);
}

static void on_input_change(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg) {
    pf_stream *s = arg;
    if (info->n_deleted > 0 && !s->read_armed)
        arm_read(s);
}

pf_stream *stream_new(struct event_base *base, int fd, size_t read_limit, size_t write_low,
                      const pf_stream_callbacks *cbs, void *ctx) {
    pf_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fd = fd;
    s->read_limit = read_limit;
    s->write_low = write_low;
    s->cbs = *cbs;
    s->ctx = ctx;
    s->in = evbuffer_new();
    s->out = evbuffer_new();
    s->read_ev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, s);
    s->write_ev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_writable, s);
    s->flush_ev = event_new(base, -1, 0, on_flush, s);
    if (!s->in || !s->out || !s->read_ev || !s->write_ev || !s->flush_ev) {
        s->fd = -1;
        stream_free(s);
        return NULL;
    }
    evbuffer_add_cb(s->out, on_output_change, s);
    evbuffer_add_cb(s->in, on_input_change, s);
    s->want_read = true;
    arm_read(s);
    return s;
}

void stream_connect(pf_stream *s, const struct sockaddr *sa, socklen_t len) {
    if (connect(s->fd, sa, len) < 0 && errno != EINPROGRESS) {
        /* Refused at once (common on loopback): report it from the loop, like the rest. */
        s->pending_error = errno;
        schedule_flush(s);
        return;
    }
    s->connecting = true;
    arm_write(s, true);
}

struct evbuffer *stream_input(pf_stream *s) {
    return s->in;
}

struct evbuffer *stream_output(pf_stream *s) {
    return s->out;
}

void stream_read_enable(pf_stream *s, bool enable) {
    s->want_read = enable;
    arm_read(s);
}

void stream_shutdown_write(pf_stream *s) {
    s->shut = true;
    if (evbuffer_get_length(s->out) == 0 && !s->connecting)
        shutdown(s->fd, SHUT_WR);
}

void stream_free(pf_stream *s) {
    if (!s)
        return;
    if (s->read_ev)
        event_free(s->read_ev);
    if (s->write_ev)
        event_free(s->write_ev);
    if (s->flush_ev)
        event_free(s->flush_ev);
    if (s->in)
        evbuffer_free(s->in);
    if (s->out)
        evbuffer_free(s->out);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}
