/* One active health check in flight against one endpoint: a non-blocking connect, the
 * request or the tcp "send" bytes, then the answer read until it decides (an HTTP status
 * line and headers parsed by llhttp, or the tcp "expect" bytes). HTTP checks keep their
 * connection open between checks when the server allows keep-alive. Private to health/: a
 * probe is embedded in health.c's per-endpoint state and runs on health's event loop. */
#ifndef PF_HEALTH_PROBE_INT_H
#define PF_HEALTH_PROBE_INT_H

#include "config/config.h"

#include <event2/event.h>
#include <llhttp.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* How a check ended; each is a metric label (probe_result_name). */
typedef enum {
    PROBE_PASS,
    PROBE_FAIL,            /* answered, but not as expected (status, bytes, garbage, reset) */
    PROBE_TIMEOUT,         /* no decision within the check's timeout */
    PROBE_CONNECT_FAILURE, /* refused, unreachable, no socket */
    PROBE_RESULTS
} probe_result;

#define PROBE_DETAIL_MAX 96
#define PROBE_GRPC_MSG_MAX 64 /* a HealthCheckResponse is 7 bytes framed */

/* Called once per probe_start, never from inside probe_start; `detail` says what was seen
 * ("HTTP 503", "connect refused", "timeout") and is valid during the call only. */
typedef void (*probe_done_fn)(void *arg, probe_result result, const char *detail);

/* A check of a TLS cluster: the SSL for a connected socket (see health_set_tls). */
typedef SSL *(*probe_tls_fn)(void *arg, int fd, const char *endpoint);

typedef enum {
    PROBE_IDLE,
    PROBE_CONNECTING,
    PROBE_HANDSHAKE, /* TLS checks: connected, the handshake runs */
    PROBE_SENDING,
    PROBE_READING,
    PROBE_DECIDED
} probe_phase;

typedef struct probe {
    struct event_base *base;
    const pf_config_health_check *hc;
    probe_done_fn done;
    void *arg;
    probe_phase phase;
    int fd;           /* also open between checks: a kept-alive HTTP connection */
    SSL *ssl;         /* TLS checks: on fd, NULL without one */
    probe_tls_fn tls; /* NULL: plaintext checks */
    void *tls_arg;
    struct event *io;       /* on fd, NULL without one */
    short io_events;        /* what io waits for */
    bool reused;            /* this check started on a kept-alive connection */
    bool complete;          /* http: the whole response is in */
    struct event *deadline; /* the check's timeout; also delivers early results */
    pf_sockaddr addr;       /* of the check in flight */
    const char *out;        /* request bytes, borrowed until the check ends */
    size_t out_len, sent;
    size_t received; /* answer bytes read, bounded by PROBE_ANSWER_MAX */
    llhttp_t parser;
    int status; /* 0 until the response head is complete */
    /* tcp expect: the tail of the answer still able to start a match */
    char window[2 * PF_CHECK_PAYLOAD_MAX];
    size_t window_len;
    probe_result result;
    char detail[PROBE_DETAIL_MAX];
    /* grpc: the check's HTTP/2 client session and what it learnt (probe_grpc.c) */
    struct nghttp2_session *h2;
    unsigned char *h2_out; /* the preface, SETTINGS, the request's HEADERS and DATA */
    int h2_status;         /* :status; 0 before the response head */
    int grpc_status;       /* -1 before a grpc-status */
    bool h2_closed;        /* the check's stream ended (or was reset) */
    bool h2_goaway;        /* the server said GOAWAY, or the session broke: not kept */
    bool h2_unsent;        /* a control frame did not fit the socket: not kept */
    int32_t h2_stream;     /* the check's stream on the kept session */
    unsigned char msg[PROBE_GRPC_MSG_MAX];
    size_t msg_len;
} probe;

/* Prepares an idle probe (creates its timer). Returns 0 or PF_ENOMEM. */
int probe_init(probe *p, struct event_base *base, const pf_config_health_check *hc,
               probe_done_fn done, void *arg);
/* Starts a check of `addr` sending `out` (borrowed until done is called; for tcp checks
 * without send bytes, len 0). The probe must be idle. */
void probe_start(probe *p, const pf_sockaddr *addr, const char *out, size_t out_len);
/* Stops a check in flight without calling done; no-op when idle. */
void probe_cancel(probe *p);
/* Cancels and frees what probe_init made. */
void probe_release(probe *p);
bool probe_busy(const probe *p);
const char *probe_result_name(probe_result r);

/* ---- grpc checks (probe_grpc.c) ------------------------------------------------------ */

/* Sets up the check's call and the bytes to send (p->h2_out, *len of them): on a new
 * session the client preface and SETTINGS first, on a kept one (probe_grpc_kept) the new
 * stream only; then a grpc.health.v1.Health/Check call for hc->service. Returns 0 or
 * PF_ENOMEM (also when a kept session takes no more streams: end it and begin again). */
int probe_grpc_begin(probe *p, const char *authority, size_t *len);
/* Feeds answer bytes. Returns true once the call decided: *result and detail (cap bytes).
 * What the session has to send back meanwhile comes from probe_grpc_pending. */
bool probe_grpc_feed(probe *p, const char *data, size_t len, probe_result *result, char *detail,
                     size_t cap);
/* Bytes between checks (PING, SETTINGS, GOAWAY): false when they broke the session. */
bool probe_grpc_absorb(probe *p, const char *data, size_t len);
/* The next bytes the session has to send (acknowledgements, window updates): their length
 * and *out, 0 for none, negative for a session error. */
ssize_t probe_grpc_pending(probe *p, const uint8_t **out);
/* Whether the session may carry the next check: no GOAWAY, still reading, streams left. */
bool probe_grpc_kept(const probe *p);
/* Frees the session and its bytes; no-op without one. */
void probe_grpc_end(probe *p);

/* The gRPC message of a HealthCheckRequest for `service` ("" for the server): the 5-byte
 * gRPC prefix, then field 1 (string) when the service is not empty. Returns its length,
 * or 0 when it does not fit `cap`. */
size_t probe_grpc_request_message(const char *service, unsigned char *out, size_t cap);
/* The status (field 1, an enum: 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN) of a framed
 * HealthCheckResponse; 0 (UNKNOWN) when absent, -1 when the bytes are not one message. */
int probe_grpc_response_status(const unsigned char *msg, size_t len);

#endif
