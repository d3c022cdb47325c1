/* Byte streams over a socket: the transport seam under the HTTP/1 code.
 *
 * A pf_stream owns a connected (or connecting) socket, an input and an output evbuffer, and
 * the events that move bytes between them. Reads go straight into the input (no FIONREAD).
 * The first read is tried before the socket is registered with epoll; it is registered only
 * when a read finds nothing or the consumer needs more (stream_read_needed), and then stays
 * registered for the stream's life. A writer adds to the output and then calls stream_flush;
 * the output is written as soon as the current callback returns, registering a write event
 * only when the kernel pushes back. That keeps a
 * keep-alive request at one read and one write per side without epoll_ctl, and a request on
 * a connection that closes after it (accept, read, write, close) out of epoll altogether.
 * A TLS stream (stream_set_tls) offers the same calls over an SSL: the input holds the
 * decrypted bytes and the output is encrypted on its way out. Streams belong to one worker's
 * event loop. */
#ifndef PF_PROXY_STREAM_H
#define PF_PROXY_STREAM_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct pf_stream pf_stream;
struct ssl_st;

enum { PF_STREAM_CONNECTED = 1, PF_STREAM_EOF = 2, PF_STREAM_ERROR = 4 };

typedef struct pf_stream_callbacks {
    /* New bytes are in the input. */
    void (*on_read)(pf_stream *s, void *ctx);
    /* A write made progress and the output holds no more than the low mark. */
    void (*on_write)(pf_stream *s, void *ctx);
    /* PF_STREAM_CONNECTED, _EOF (the peer closed its side) or _ERROR (errno in `err`). */
    void (*on_event)(pf_stream *s, int what, int err, void *ctx);
} pf_stream_callbacks;

/* Wraps `fd` (non-blocking; closed by stream_free). The input is not read past
 * `read_limit` bytes until the consumer drains it. Returns NULL when out of memory (fd is
 * then still the caller's). Reading starts enabled. */
pf_stream *stream_new(struct event_base *base, int fd, size_t read_limit, size_t write_low,
                      const pf_stream_callbacks *cbs, void *ctx);
/* Starts a non-blocking connect; the outcome arrives as PF_STREAM_CONNECTED or
 * PF_STREAM_ERROR, never from inside this call. Output may be queued meanwhile. */
void stream_connect(pf_stream *s, const struct sockaddr *sa, socklen_t len);
/* The most one read takes (default 16 KiB, what a request head or a small body needs):
 * bulk relays read larger pieces, for fewer system calls per byte. 0: the default. */
void stream_set_read_chunk(pf_stream *s, size_t bytes);
/* Bytes the stream read from and wrote to its peer so far (after TLS: the application's
 * bytes). Worker thread. */
void stream_bytes(const pf_stream *s, uint64_t *read, uint64_t *written);
struct evbuffer *stream_input(pf_stream *s);
/* The output: whoever adds to it calls stream_flush before its callback returns (debug
 * builds abort when output waits unflushed). Nothing watches the buffer itself: libevent
 * would run a watcher on every add and drain. */
struct evbuffer *stream_output(pf_stream *s);
/* The writer is done adding for now: the output is written once the stream callback running
 * on this thread returns (in the same loop turn, one write for everything added meanwhile),
 * or after the current event's callback when none is running. Never calls back, never
 * writes from inside: the writer's state is safe. Cheap when there is nothing to do. */
void stream_flush(pf_stream *s);
void stream_read_enable(pf_stream *s, bool enable);
/* Whether the consumer waits for input now (the default). When it does not (a request is
 * complete and being answered), a stream not yet registered with epoll stays out of it, and
 * input that comes meanwhile waits in the socket; a registered stream stays registered. */
void stream_read_needed(pf_stream *s, bool needed);
/* Stops writing and reading for good and shuts the write side (FIN) once the output is
 * flushed; used for lingering closes. */
void stream_shutdown_write(pf_stream *s);
void stream_free(pf_stream *s);

/* Makes the stream TLS before any byte moved: it owns `ssl` (set to the socket, in accept
 * or connect state) from now on. The handshake runs first (after the connect); the input
 * sees only application data, and output queued meanwhile waits for it. A client stream
 * reports PF_STREAM_CONNECTED when its handshake is done. A failed handshake is counted
 * (listeners) or logged (upstreams) and reported as PF_STREAM_ERROR (EPROTO). */
void stream_set_tls(pf_stream *s, struct ssl_st *ssl);
/* The SSL once the handshake is done, else NULL. */
struct ssl_st *stream_ssl(pf_stream *s);

#endif
