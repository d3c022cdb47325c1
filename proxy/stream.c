/* Socket streams: see stream.h for why they exist instead of bufferevents. */
#include "proxy/stream.h"

#include "proxy/tls_int.h"

#include "core/log.h"

#include <errno.h>
#include <event2/event_struct.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

/* libevent sizes a chain as the bytes asked for plus its own header, rounded up to a power of
 * two: 16 KiB would take a 32 KiB block, 16 KiB less 512 takes 16 KiB. */
#define READ_CHUNK (16u * 1024u - 512u)
/* A read that brings less than this goes through the stack and is copied into a chain of
 * its own size (a small block from malloc's per-thread cache) instead of into a fresh
 * READ_CHUNK block; reads that fill their chunk go straight into the buffer. */
#define SMALL_READ 4096u
#define WRITE_VECS 16

/* Debug builds (sanitizers, or -DPF_STREAM_CHECKS) catch a writer that adds to an output
 * and never calls stream_flush: such a response would stall until a timeout. */
#if defined(__SANITIZE_ADDRESS__) && !defined(PF_STREAM_CHECKS)
#define PF_STREAM_CHECKS 1
#endif

/* A run of on_readable that epoll did not ask for: the stream's first read, tried before the
 * socket is registered (an accepted client has usually sent its request already), or the
 * decision whether to register, taken after the consumer has seen what that read brought. */
typedef enum { READ_PEND_NONE, READ_PEND_TRY, READ_PEND_ARM } stream_read_pend;

/* Where a TLS stream is: its handshake, the records after it, or failed for good. */
typedef enum { TLS_NONE, TLS_HANDSHAKE, TLS_OPEN, TLS_FAILED } stream_tls_state;

struct pf_stream {
    /* Embedded, not event_new'd: three fewer allocations per connection. */
    struct event read_ev;  /* EV_READ | EV_PERSIST */
    struct event write_ev; /* EV_WRITE | EV_PERSIST, armed only while the kernel pushes back */
    struct event flush_ev; /* deferred work: a first read, an error, a flush outside a callback */
    bool events_assigned;
    /* On the thread's list of streams written once the stream callback running now returns
     * (stream_flush); `dirty` says whether it is on it. */
    pf_stream *dirty_prev, *dirty_next;
    bool dirty;
#ifdef PF_STREAM_CHECKS
    struct event check_ev; /* runs after the callback that added output: was it flushed? */
    bool unflushed, check_pending;
#endif
    struct evbuffer *in, *out;
    /* on_input_change, registered only while the input is at its limit: libevent runs a
     * buffer's callbacks on every add and drain, two of each per request, for nothing. */
    struct evbuffer_cb_entry *in_cb;
    int fd;
    size_t read_limit, write_low;
    size_t read_chunk; /* the most one read takes */
    pf_stream_callbacks cbs;
    void *ctx;
    int pending_error;
    stream_read_pend read_pend;
    /* want_read: the consumer takes input. read_needed: it waits for input now; without it a
     * stream that is not registered yet stays out of epoll (one that is stays, see arm_read). */
    bool want_read, read_needed, read_armed, write_armed, flush_pending;
    bool connecting, shut;
    bool bulk; /* the last read filled its chunk: read straight into the buffer */
    /* TLS: NULL for plaintext, whose path below is untouched by it. */
    SSL *ssl;
    stream_tls_state tls;
    bool read_wants_write;  /* SSL_read needs the socket writable (a TLS 1.3 key update) */
    bool write_wants_read;  /* SSL_write needs the socket readable */
    size_t write_retry_len; /* SSL_write must be retried with the same length */
    uint64_t bytes_read, bytes_written; /* application bytes (decrypted for TLS), for logs */
};

/* Registers the read event when input is wanted and needed, and deregisters it when input is
 * not wanted. A registered stream whose consumer merely does not need input for now stays
 * registered: a keep-alive connection would otherwise pay two epoll_ctl per request. */
static void on_input_change(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);

static void arm_read(pf_stream *s) {
    bool full = evbuffer_get_length(s->in) >= s->read_limit;
    /* Full input grows only by a read, which comes through here: watch for the drain that
     * makes room. Removing the entry from inside its own callback is safe (libevent keeps
     * the next entry before it calls one). */
    if (full && !s->in_cb) {
        s->in_cb = evbuffer_add_cb(s->in, on_input_change, s);
    } else if (!full && s->in_cb) {
        evbuffer_remove_cb_entry(s->in, s->in_cb);
        s->in_cb = NULL;
    }
    bool want = s->want_read && !full;
    if (want && !s->read_armed && !s->read_needed)
        return; /* nothing to wait for: a request answered and closed never touches epoll */
    if (want && !s->read_armed) {
        event_add(&s->read_ev, NULL);
        /* A record already read from the socket may hold more than the input took: the
         * kernel will not say so again. */
        if (s->ssl && s->tls == TLS_OPEN && SSL_pending(s->ssl) > 0)
            event_active(&s->read_ev, EV_READ, 0);
    } else if (!want && s->read_armed) {
        event_del(&s->read_ev);
    }
    s->read_armed = want;
}

static void arm_write(pf_stream *s, bool want) {
    if (want && !s->write_armed)
        event_add(&s->write_ev, NULL);
    else if (!want && s->write_armed)
        event_del(&s->write_ev);
    s->write_armed = want;
}

static void tls_on_readable(pf_stream *s);

static void schedule_flush(pf_stream *s);

/* Schedules a run of read_pended in this loop turn. It rides on the flush event: the read
 * event itself must not be activated by hand, since libevent does not register an event
 * with epoll while it is active. */
static void read_pend(pf_stream *s, stream_read_pend what) {
    s->read_pend = what;
    schedule_flush(s);
}

static void on_readable(evutil_socket_t fd, short what, void *arg);

/* A TLS or connecting socket has nothing to read yet, and a registered one is read when
 * epoll says: those simply register (when input is needed). Calls back last. */
static void read_pended(pf_stream *s, stream_read_pend pend) {
    if (pend == READ_PEND_ARM || s->ssl || s->connecting || s->read_armed) {
        arm_read(s);
        return;
    }
    on_readable(s->fd, EV_READ, s);
}

/* What a read got: register when the consumer needs more, then call it back (last: it may
 * free the stream). */
static void read_done(pf_stream *s) {
    if (evbuffer_get_length(s->in) >= s->read_limit)
        arm_read(s);
    else if (!s->read_armed)
        read_pend(s, READ_PEND_ARM); /* after the consumer said whether it needs more */
    s->cbs.on_read(s, s->ctx);
}

/* A read failed (n < 0, errno in err) or met the end (n == 0). Calls back last. */
static void read_failed(pf_stream *s, ssize_t n, int err) {
    if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)) {
        arm_read(s); /* a first read found nothing: from now on epoll tells */
        return;
    }
    s->want_read = false;
    arm_read(s);
    if (n < 0)
        s->cbs.on_event(s, PF_STREAM_ERROR, err, s->ctx);
    else
        s->cbs.on_event(s, PF_STREAM_EOF, 0, s->ctx);
}

/* Requests and most responses are a few hundred bytes: read them on the stack and add them
 * to the input in a block of their size. A read that fills SMALL_READ is likely a stream of
 * bulk data: the next reads go straight into the buffer. */
static void read_small(pf_stream *s, int fd, size_t room) {
    char buf[SMALL_READ];
    if (room > sizeof buf)
        room = sizeof buf;
    ssize_t n = recv(fd, buf, room, 0);
    if (n <= 0) {
        read_failed(s, n, errno);
        return;
    }
    s->bytes_read += (uint64_t)n;
    s->bulk = (size_t)n == sizeof buf;
    if (evbuffer_add(s->in, buf, (size_t)n) != 0) {
        s->want_read = false;
        arm_read(s);
        s->cbs.on_event(s, PF_STREAM_ERROR, ENOMEM, s->ctx);
        return;
    }
    read_done(s);
}

static void on_readable(evutil_socket_t fd, short what, void *arg) {
    pf_stream *s = arg;
    if (s->ssl) {
        tls_on_readable(s);
        return;
    }
    size_t room = s->read_limit - evbuffer_get_length(s->in);
    if (room == 0 || !s->want_read) {
        arm_read(s);
        return;
    }
    if (room > s->read_chunk)
        room = s->read_chunk;
    if (!s->bulk) {
        read_small(s, fd, room);
        return;
    }
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
    /* One buffer is the usual case (a fresh chain): recv then, which skips readv's iovec copy. */
    ssize_t n = nvec == 1 ? recv(fd, vec[0].iov_base, vec[0].iov_len, 0)
                          : readv(fd, (struct iovec *)vec, nvec);
    if (n <= 0) {
        int err = errno;
        evbuffer_commit_space(s->in, vec, 0);
        read_failed(s, n, err);
        return;
    }
    s->bytes_read += (uint64_t)n;
    s->bulk = (size_t)n >= SMALL_READ;
    size_t left = (size_t)n;
    for (int i = 0; i < nvec; i++) {
        size_t take = vec[i].iov_len < left ? vec[i].iov_len : left;
        vec[i].iov_len = take;
        left -= take;
    }
    evbuffer_commit_space(s->in, vec, nvec);
    read_done(s);
}

static void tls_write_out(pf_stream *s);
static void shut_now(pf_stream *s);

/* Writes what the output holds. Calls back last: the callback may free the stream. */
static void write_out(pf_stream *s) {
    if (s->ssl) {
        tls_write_out(s);
        return;
    }
    if (s->connecting)
        return;
    bool progress = false;
    while (evbuffer_get_length(s->out) > 0) {
        struct evbuffer_iovec vec[WRITE_VECS];
        int nvec = evbuffer_peek(s->out, -1, NULL, vec, WRITE_VECS);
        if (nvec > WRITE_VECS)
            nvec = WRITE_VECS;
        /* A response usually sits in one chain: send then, else one writev for all. */
        ssize_t n = nvec == 1 ? send(s->fd, vec[0].iov_base, vec[0].iov_len, MSG_NOSIGNAL)
                              : writev(s->fd, (struct iovec *)vec, nvec);
        if (n > 0) {
            s->bytes_written += (uint64_t)n;
            size_t offered = 0;
            for (int i = 0; i < nvec; i++)
                offered += vec[i].iov_len;
            evbuffer_drain(s->out, (size_t)n);
            progress = true;
            if ((size_t)n < offered)
                break; /* the socket is full: the write event says when it has room */
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
        shut_now(s);
    if (progress && left <= s->write_low && s->cbs.on_write)
        s->cbs.on_write(s, s->ctx);
}

static void tls_on_writable(pf_stream *s);

static void on_writable(evutil_socket_t fd, short what, void *arg) {
    pf_stream *s = arg;
    if (s->ssl && !s->connecting) {
        tls_on_writable(s);
        return;
    }
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
        if (s->ssl) {
            tls_on_writable(s); /* the ClientHello; PF_STREAM_CONNECTED once the handshake ends */
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
    stream_read_pend pend = s->read_pend;
    if (pend != READ_PEND_NONE) {
        s->read_pend = READ_PEND_NONE;
        if (evbuffer_get_length(s->out) > 0)
            schedule_flush(s); /* the write runs next: the read may free the stream */
        read_pended(s, pend);
        return;
    }
    write_out(s);
}

static void schedule_flush(pf_stream *s) {
    if (!s->flush_pending) {
        s->flush_pending = true;
        event_active(&s->flush_ev, 0, 0);
    }
}

/* ---- flushing -------------------------------------------------------------------------- *
 * Writers add to an output and then call stream_flush. Inside a stream's event callback (a
 * read, a write, a deferred flush: where almost every response and request is produced) the
 * stream joins this thread's dirty list, and the list is written when that callback returns
 * to the stream layer: in the same loop turn, after the code that added, with all of a
 * batch's adds in one write, and without activating an event per flush. Outside one (a
 * timer, a DNS answer) the flush event does it, as after any callback. Either way the write
 * runs with nothing of the writer's on the stack, so its callbacks may free what they like.
 * One worker per thread: the list is the thread's. */
static _Thread_local pf_stream *dirty_head;
static _Thread_local int callback_depth;

static void dirty_remove(pf_stream *s) {
    if (s->dirty_prev)
        s->dirty_prev->dirty_next = s->dirty_next;
    else
        dirty_head = s->dirty_next;
    if (s->dirty_next)
        s->dirty_next->dirty_prev = s->dirty_prev;
    s->dirty_prev = s->dirty_next = NULL;
    s->dirty = false;
}

/* Writes every stream on the dirty list. A write's callback may free other streams (they
 * leave the list in stream_free) or flush more (they join it and are written here too). */
static void write_dirty(void) {
    callback_depth++;
    while (dirty_head) {
        pf_stream *s = dirty_head;
        dirty_remove(s);
        if (!s->flush_pending) /* else the flush event writes, after what it has to do first */
            write_out(s);
    }
    callback_depth--;
}

static void callback_enter(void) {
    callback_depth++;
}

static void callback_leave(void) {
    if (--callback_depth == 0 && dirty_head)
        write_dirty();
}

void stream_flush(pf_stream *s) {
#ifdef PF_STREAM_CHECKS
    s->unflushed = false;
#endif
    /* Nothing to write, or a write is due anyway: the flush event's, or the write event's
     * (armed while the kernel pushes back, and while a connect is under way). */
    if (s->dirty || s->flush_pending || s->write_armed || evbuffer_get_length(s->out) == 0)
        return;
    if (callback_depth == 0) {
        schedule_flush(s);
        return;
    }
    s->dirty = true;
    s->dirty_prev = NULL;
    s->dirty_next = dirty_head;
    if (dirty_head)
        dirty_head->dirty_prev = s;
    dirty_head = s;
}

/* libevent's entry points into a stream: each bracketed, so that what the callback flushed
 * is written when it returns. */
static void ev_readable(evutil_socket_t fd, short what, void *arg) {
    callback_enter();
    on_readable(fd, what, arg);
    callback_leave();
}

static void ev_writable(evutil_socket_t fd, short what, void *arg) {
    callback_enter();
    on_writable(fd, what, arg);
    callback_leave();
}

static void ev_flush(evutil_socket_t fd, short what, void *arg) {
    callback_enter();
    on_flush(fd, what, arg);
    callback_leave();
}

#ifdef PF_STREAM_CHECKS
static void on_output_check(evutil_socket_t fd, short what, void *arg) {
    pf_stream *s = arg;
    s->check_pending = false;
    if (s->unflushed && evbuffer_get_length(s->out) > 0) {
        log_error("stream: %zu bytes added to an output without stream_flush; they would wait "
                  "for a timeout",
                  evbuffer_get_length(s->out));
        abort();
    }
}

static void on_output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg) {
    pf_stream *s = arg;
    if (info->n_added == 0)
        return;
    s->unflushed = true;
    if (!s->check_pending) {
        s->check_pending = true;
        event_active(&s->check_ev, 0, 0);
    }
}
#endif

static void on_input_change(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg) {
    pf_stream *s = arg;
    /* Room again below the limit; other unregistered states are arm_read's own choice. */
    if (info->n_deleted > 0 && !s->read_armed && info->orig_size >= s->read_limit)
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
    s->read_chunk = READ_CHUNK;
    s->cbs = *cbs;
    s->ctx = ctx;
    s->in = evbuffer_new();
    s->out = evbuffer_new();
    s->events_assigned =
        event_assign(&s->read_ev, base, fd, EV_READ | EV_PERSIST, ev_readable, s) == 0 &&
        event_assign(&s->write_ev, base, fd, EV_WRITE | EV_PERSIST, ev_writable, s) == 0 &&
        event_assign(&s->flush_ev, base, -1, 0, ev_flush, s) == 0;
#ifdef PF_STREAM_CHECKS
    /* It runs after the callback that added: output still unflushed then is a writer's bug. */
    if (s->events_assigned)
        s->events_assigned = event_assign(&s->check_ev, base, -1, 0, on_output_check, s) == 0;
#endif
    if (!s->in || !s->out || !s->events_assigned) {
        s->fd = -1;
        stream_free(s);
        return NULL;
    }
#ifdef PF_STREAM_CHECKS
    evbuffer_add_cb(s->out, on_output_added, s);
#endif
    s->want_read = true;
    s->read_needed = true;
    read_pend(s, READ_PEND_TRY);
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

void stream_set_read_chunk(pf_stream *s, size_t bytes) {
    s->read_chunk = bytes ? bytes : READ_CHUNK;
}

void stream_bytes(const pf_stream *s, uint64_t *read, uint64_t *written) {
    *read = s->bytes_read;
    *written = s->bytes_written;
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

void stream_read_needed(pf_stream *s, bool needed) {
    s->read_needed = needed;
    arm_read(s);
}

/* TLS first says close_notify (RFC 8446 6.1), so the client knows the response is whole. */
static void shut_now(pf_stream *s) {
    if (s->ssl && s->tls == TLS_OPEN) {
        SSL_shutdown(s->ssl); /* one try: a full socket only loses the alert, not data */
        ERR_clear_error();
    }
    shutdown(s->fd, SHUT_WR);
}

void stream_shutdown_write(pf_stream *s) {
    s->shut = true;
    if (evbuffer_get_length(s->out) == 0 && !s->connecting && s->tls != TLS_HANDSHAKE)
        shut_now(s);
}

void stream_free(pf_stream *s) {
    if (!s)
        return;
    if (s->ssl) {
        if (s->tls == TLS_HANDSHAKE)
            tls_count_failure(s->ssl, PF_TLS_FAIL_TIMEOUT);
        /* A connection that did not fail keeps its session resumable: without this flag
         * SSL_free takes a close without close_notify for a truncation and voids it. */
        if (s->tls == TLS_OPEN)
            SSL_set_shutdown(s->ssl, SSL_SENT_SHUTDOWN);
        SSL_free(s->ssl);
    }
    if (s->dirty)
        dirty_remove(s);
    if (s->events_assigned) {
        event_del(&s->read_ev);
        event_del(&s->write_ev);
        event_del(&s->flush_ev);
#ifdef PF_STREAM_CHECKS
        event_del(&s->check_ev);
#endif
    }
    if (s->in)
        evbuffer_free(s->in);
    if (s->out)
        evbuffer_free(s->out);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

/* ---- TLS ----------------------------------------------------------------------------- *
 * The SSL reads and writes the socket itself (no memory BIOs: no copy, and the plaintext
 * path above stays as it was). The events keep their meaning: the read event drives the
 * handshake and SSL_read, the write event is armed only while OpenSSL waits for room.
 * Either direction may need the other (WANT_READ / WANT_WRITE); the two flags remember it. */

void stream_set_tls(pf_stream *s, SSL *ssl) {
    s->ssl = ssl;
    s->tls = TLS_HANDSHAKE;
}

SSL *stream_ssl(pf_stream *s) {
    return s->tls == TLS_OPEN ? s->ssl : NULL;
}

static void tls_fail(pf_stream *s, int ssl_error, bool eof) {
    if (s->tls == TLS_HANDSHAKE)
        tls_handshake_failed(s->ssl, ssl_error, eof);
    else
        ERR_clear_error();
    s->tls = TLS_FAILED;
    s->want_read = false;
    arm_read(s);
    arm_write(s, false);
    s->cbs.on_event(s, PF_STREAM_ERROR, EPROTO, s->ctx);
}

/* Moves the handshake on. Returns true when it is done and the stream lives on. */
static bool tls_handshake(pf_stream *s) {
    ERR_clear_error();
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        s->tls = TLS_OPEN;
        tls_count_handshake(s->ssl);
        arm_write(s, false);
        if (evbuffer_get_length(s->out) > 0)
            schedule_flush(s); /* what was queued while the handshake ran */
        /* an upstream is connected now; its owner never frees the stream from here */
        if (!SSL_is_server(s->ssl))
            s->cbs.on_event(s, PF_STREAM_CONNECTED, 0, s->ctx);
        return true;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        arm_write(s, false);
        return false;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        arm_write(s, true);
        return false;
    }
    tls_fail(s, e, e == SSL_ERROR_SYSCALL && errno == 0);
    return false;
}

/* Decrypts into the input up to read_limit. Calls back last. */
static void tls_read(pf_stream *s) {
    bool got = false;
    s->read_wants_write = false;
    while (s->want_read) {
        size_t room = s->read_limit - evbuffer_get_length(s->in);
        if (room == 0)
            break;
        if (room > READ_CHUNK)
            room = READ_CHUNK;
        struct evbuffer_iovec vec;
        if (evbuffer_reserve_space(s->in, (ev_ssize_t)room, &vec, 1) < 1)
            break;
        if (vec.iov_len > room)
            vec.iov_len = room;
        ERR_clear_error();
        int n = SSL_read(s->ssl, vec.iov_base, (int)vec.iov_len);
        if (n > 0) {
            s->bytes_read += (uint64_t)n;
            vec.iov_len = (size_t)n;
            evbuffer_commit_space(s->in, &vec, 1);
            got = true;
            continue;
        }
        evbuffer_commit_space(s->in, &vec, 0);
        int e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_WANT_WRITE) {
            s->read_wants_write = true;
            arm_write(s, true);
            break;
        }
        if (got) {
            /* What came before the end goes first, and the end on the next turn: the
             * callback may free the stream (event_free then cancels the activation). */
            event_active(&s->read_ev, EV_READ, 0);
            s->cbs.on_read(s, s->ctx);
            return;
        }
        /* close_notify, or a bare FIN (peers often skip the alert): an end either way */
        bool eof = e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0) ||
                   (e == SSL_ERROR_SSL &&
                    ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING);
        if (eof) {
            ERR_clear_error();
            s->want_read = false;
            arm_read(s);
            s->cbs.on_event(s, PF_STREAM_EOF, 0, s->ctx);
        } else {
            tls_fail(s, e, false);
        }
        return;
    }
    arm_read(s);
    if (got)
        s->cbs.on_read(s, s->ctx);
}

static void tls_on_readable(pf_stream *s) {
    if (s->connecting)
        return; /* a failed connect is reported by the write event */
    if (s->tls == TLS_HANDSHAKE && !tls_handshake(s))
        return;
    if (s->tls != TLS_OPEN)
        return;
    if (s->write_wants_read) {
        s->write_wants_read = false;
        schedule_flush(s);
    }
    tls_read(s);
}

static void tls_on_writable(pf_stream *s) {
    if (s->tls == TLS_HANDSHAKE) {
        if (tls_handshake(s))
            tls_read(s); /* the client's first request may be in the handshake's last read */
        return;
    }
    if (s->tls != TLS_OPEN) {
        arm_write(s, false);
        return;
    }
    if (s->read_wants_write) {
        tls_read(s);
        return; /* pending output: the write event stays armed and fires again */
    }
    tls_write_out(s);
}

static void tls_write_out(pf_stream *s) {
    if (s->tls != TLS_OPEN)
        return; /* kept until the handshake is done */
    bool progress = false;
    while (evbuffer_get_length(s->out) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(s->out, -1, NULL, &v, 1) < 1)
            break;
        size_t len = v.iov_len > READ_CHUNK ? READ_CHUNK : v.iov_len;
        if (s->write_retry_len)
            len = s->write_retry_len; /* the first chain only grows: the bytes are the same */
        ERR_clear_error();
        int n = SSL_write(s->ssl, v.iov_base, (int)len);
        if (n > 0) {
            s->bytes_written += (uint64_t)n;
            s->write_retry_len = 0;
            evbuffer_drain(s->out, (size_t)n);
            progress = true;
            continue;
        }
        int e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            s->write_retry_len = len;
            s->write_wants_read = e == SSL_ERROR_WANT_READ;
            if (s->write_wants_read && !s->read_armed) {
                event_add(&s->read_ev, NULL);
                s->read_armed = true;
            }
            break;
        }
        arm_write(s, false);
        tls_fail(s, e, false);
        return;
    }
    size_t left = evbuffer_get_length(s->out);
    arm_write(s, left > 0 && !s->write_wants_read);
    if (left == 0 && s->shut)
        shut_now(s);
    if (progress && left <= s->write_low && s->cbs.on_write)
        s->cbs.on_write(s, s->ctx);
}
