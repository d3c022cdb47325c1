/* Byte tunnels: what an HTTP/1 connection becomes after a 101 Switching Protocols (a
 * WebSocket, say). Two streams, the client's and the endpoint's, each side's input copied to
 * the other's output with backpressure (reading stops while the other output is full), a
 * half-close passed through as a shutdown of the other side's write half, and an idle timer
 * of its own. The tunnel borrows both streams; the codecs that own them forward their stream
 * events here. Worker thread only. */
#ifndef PF_PROXY_TUNNEL_INT_H
#define PF_PROXY_TUNNEL_INT_H

#include "core/metrics.h"
#include "proxy/stream.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct pf_tunnel pf_tunnel;

enum { PF_TUNNEL_CLIENT = 0, PF_TUNNEL_UPSTREAM = 1 };

/* Called once when the tunnel is over (both sides closed, an error, or the idle timeout)
 * with a short reason; the owner frees the tunnel and its streams from here. */
typedef void (*pf_tunnel_done)(void *ctx, const char *reason);

/* One side of a tunnel as the tunnel sees it: a byte input it takes from, an output it
 * adds to (and flushes after adding), a switch for reading, and a half-close. A pf_stream is one
 * (tunnel_new); an HTTP/2 stream carrying an extended CONNECT (RFC 8441) is another
 * (h2_downstream.c). The owner of a side reports its reads, write progress and EOF/errors like a
 * stream's. */
typedef struct pf_tunnel_end_ops {
    struct evbuffer *(*input)(void *end);
    struct evbuffer *(*output)(void *end);
    void (*flush)(void *end); /* done adding to the output for now (stream_flush) */
    void (*read_enable)(void *end, bool enable);
    void (*shutdown_write)(void *end);
} pf_tunnel_end_ops;

/* The side ops of a pf_stream. */
extern const pf_tunnel_end_ops tunnel_stream_end_ops;

/* Joins `client` and `upstream` (borrowed until tunnel_free). `limit`: bytes one output may
 * hold before the other side's reading stops. `client_eof`: the client already half-closed.
 * Bytes already in either input are forwarded at once. Returns NULL when out of memory. */
pf_tunnel *tunnel_new(struct event_base *base, pf_stream *client, pf_stream *upstream,
                      bool client_eof, size_t limit, uint64_t idle_ms, pf_tunnel_done done,
                      void *ctx);
/* The same for any two sides: `client` seen through `client_ops`, `upstream` through
 * `upstream_ops` (both borrowed until tunnel_free). */
pf_tunnel *tunnel_new_ends(struct event_base *base, const pf_tunnel_end_ops *client_ops,
                           void *client, const pf_tunnel_end_ops *upstream_ops, void *upstream,
                           bool client_eof, size_t limit, uint64_t idle_ms, pf_tunnel_done done,
                           void *ctx);
/* Starts forwarding (and may end the tunnel at once, through `done`). */
void tunnel_start(pf_tunnel *t);
/* Stream events of side PF_TUNNEL_CLIENT or PF_TUNNEL_UPSTREAM. Each may call `done`. */
void tunnel_on_read(pf_tunnel *t, int side);
void tunnel_on_write(pf_tunnel *t, int side);
void tunnel_on_event(pf_tunnel *t, int side, int what, int err);
/* Ends the tunnel now with `reason` (a side went away in a way its owner saw first, e.g. an
 * HTTP/2 stream reset): calls `done`. */
void tunnel_close(pf_tunnel *t, const char *reason);
/* Also counts the bytes read from `side` and forwarded into `a` and `b` (either may be
 * NULL) as they move, so long-lived tunnels show in metrics before they end. */
void tunnel_count_bytes(pf_tunnel *t, int side, pf_counter *a, pf_counter *b);
/* Bytes read from `side` and forwarded to the other (0 for NULL). */
uint64_t tunnel_bytes(const pf_tunnel *t, int side);
/* Frees the tunnel (not the streams). tunnel_free(NULL) is a no-op. */
void tunnel_free(pf_tunnel *t);

#endif
