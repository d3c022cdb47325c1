/* Private to proxy/: the tcp (L4) downstream codec (tcp.c). A connection accepted on a
 * listener with "protocol": "tcp" is relayed byte for byte to one endpoint of a cluster:
 * the cluster comes from the listener's routes by the SNI of a TLS ClientHello (peeked at,
 * never terminated) or from the listener's own cluster; the endpoint from the cluster's
 * balancer over its live set; the bytes move through a pf_tunnel (tunnel.c), which gives
 * backpressure both ways, half-close and the idle timeout. conn.c keeps owning the client
 * stream, the worker's connection list and the connection limits. */
#ifndef PF_PROXY_TCP_INT_H
#define PF_PROXY_TCP_INT_H

#include "proxy/proxy_int.h"
#include "proxy/stream.h"

typedef struct pf_tcp_conn pf_tcp_conn;

/* Why a tcp connection ended, for the access log and
 * pilotfish_tcp_listener_closed_total{reason}. */
typedef enum {
    PF_TCP_END_CLOSED,         /* both sides closed after relaying */
    PF_TCP_END_IDLE,           /* idle_timeout: no byte either way */
    PF_TCP_END_CLIENT_ERROR,   /* the client's connection failed */
    PF_TCP_END_UPSTREAM_ERROR, /* the endpoint's connection failed after connecting */
    PF_TCP_END_NO_ROUTE,       /* no route took the server name and no cluster is set */
    PF_TCP_END_NO_ENDPOINT,    /* the cluster has no healthy endpoint */
    PF_TCP_END_CONNECT_FAILED, /* every connect attempt failed */
    PF_TCP_END_OVERFLOW,       /* a circuit breaker of the cluster refused it */
    PF_TCP_END_PEEK_TIMEOUT,   /* no complete ClientHello within header_timeout */
    PF_TCP_END_BAD_HELLO,      /* a malformed or oversized ClientHello */
    PF_TCP_END_CLIENT_CLOSED,  /* the client left before anything was relayed */
    PF_TCP_END_INTERNAL,       /* out of memory or descriptors */
    PF_TCP_END_COUNT
} pf_tcp_end;

/* The name of an end reason (metrics label, access log). */
const char *tcp_end_name(pf_tcp_end e);

/* Takes over a freshly accepted connection of a tcp listener: `conn` owns `client` and
 * frees this object with it (conn_free). Starts peeking or connecting at once. Returns the
 * object, or NULL when out of memory (the caller frees the connection). Worker thread. */
pf_tcp_conn *tcp_conn_new(pf_conn *conn, pf_worker *w, pf_listener_rt *l, pf_stream *client,
                          const char *client_ip);
/* Starts: peeks at the ClientHello when a route matches on SNI, else connects at once. May
 * end (and free) the connection before it returns. */
void tcp_conn_start(pf_tcp_conn *t);
/* Frees the relay and the upstream connection (not the client stream). NULL is a no-op. */
void tcp_conn_free(pf_tcp_conn *t);
/* The client stream's callbacks, forwarded by conn.c. Each may free the connection. */
void tcp_conn_on_read(pf_tcp_conn *t);
void tcp_conn_on_write(pf_tcp_conn *t);
void tcp_conn_on_event(pf_tcp_conn *t, int what, int err);
/* pf_now_us() when the connection began while it still reads the routes and the cluster's
 * settings (peeking, connecting), 0 once it relays: what holds a config a reload replaced. */
uint64_t tcp_conn_start_us(const pf_tcp_conn *t);

#endif
