/* One active health check: connect, send, read until the answer decides.
 *
 * HTTP checks keep their connection between checks when the server allows keep-alive, and
 * gRPC checks keep theirs (an HTTP/2 session, one stream per check) until the server ends it (as
 * Envoy does by default): a check is then one send and one read, not a TCP handshake, a
 * close and two epoll registrations, which is most of what checking a thousand endpoints a
 * second costs. A kept connection that the server closed meanwhile is no verdict on the
 * server: a check that finds it dead before any answer byte starts over on a new one. TCP
 * checks connect every time, because the connect is the check.
 *
 * Results found early (a refused connect) still reach the caller through the event loop,
 * never from inside probe_start, so the caller's bookkeeping never re-enters itself. */
#include "health/probe_int.h"
#include "core/error.h"
#include "core/time.h"
#include "health/verdict.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* An answer longer than this without a decision is not a health check answer. */
#define PROBE_ANSWER_MAX (64u * 1024u)
#define PROBE_READ_CHUNK 4096u

static const char *const result_names[PROBE_RESULTS] = {
    [PROBE_PASS] = "success",
    [PROBE_FAIL] = "failure",
    [PROBE_TIMEOUT] = "timeout",
    [PROBE_CONNECT_FAILURE] = "connect_failure",
};

const char *probe_result_name(probe_result r) {
    return (unsigned)r < PROBE_RESULTS ? result_names[r] : "unknown";
}

static int on_headers_complete(llhttp_t *parser) {
    probe *p = parser->data;
    p->status = parser->status_code;
    return 0;
}

static int on_message_complete(llhttp_t *parser) {
    probe *p = parser->data;
    /* RFC 9110 15.2: a 1xx is interim; the real response follows on the same connection. */
    if (p->status < 200) {
        p->status = 0;
        return 0;
    }
    p->complete = true;
    return HPE_PAUSED;
}

static llhttp_settings_t http_settings;
static bool http_settings_ready;

static void on_io(evutil_socket_t fd, short what, void *arg);

static void close_socket(probe *p) {
    if (p->io) {
        event_free(p->io);
        p->io = NULL;
    }
    if (p->ssl) {
        SSL_free(p->ssl); /* no close_notify: the check is over either way */
        p->ssl = NULL;
    }
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    p->io_events = 0;
    probe_grpc_end(p); /* a gRPC check's session lives as long as its connection */
}

/* Waits for `events` on the socket, touching epoll only when that changes. */
static int watch(probe *p, short events) {
    if (p->io && p->io_events == events)
        return PF_OK;
    if (!p->io) {
        p->io = event_new(p->base, p->fd, events | EV_PERSIST, on_io, p);
        if (!p->io)
            return PF_ENOMEM;
    } else {
        event_del(p->io);
        event_assign(p->io, p->base, p->fd, events | EV_PERSIST, on_io, p);
    }
    if (event_add(p->io, NULL) < 0)
        return PF_ENOMEM;
    p->io_events = events;
    return PF_OK;
}

/* Records the result and lets the deadline timer deliver it on the next loop turn. `keep`
 * leaves the connection open (and watched, so that a close by the server is noticed). */
static void decide(probe *p, bool keep, probe_result result, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void decide(probe *p, bool keep, probe_result result, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->detail, sizeof p->detail, fmt, ap);
    va_end(ap);
    if (!keep || watch(p, EV_READ) != PF_OK)
        close_socket(p);
    p->result = result;
    p->phase = PROBE_DECIDED;
    event_del(p->deadline);
    event_active(p->deadline, EV_TIMEOUT, 0);
}

static void decide_connect_error(probe *p, int err) {
    if (err == ECONNREFUSED)
        decide(p, false, PROBE_CONNECT_FAILURE, "connect refused");
    else if (err == ETIMEDOUT)
        decide(p, false, PROBE_TIMEOUT, "timeout");
    else
        decide(p, false, PROBE_CONNECT_FAILURE, "connect failed: %s", strerror(err));
}

static void connect_fresh(probe *p, const struct sockaddr *sa, socklen_t len);
static bool grpc_call_bytes(probe *p);
static ssize_t recv_some(probe *p, char *buf, size_t cap);

/* A kept connection found closed before any answer byte (for gRPC: before the call's
 * response head; a GOAWAY or a PING may have come): the server closed an idle connection,
 * which says nothing of its health. Start over on a new connection. */
static bool retry_fresh(probe *p) {
    bool answered = p->hc->type == PF_CHECK_GRPC ? p->h2_status != 0 : p->received > 0;
    if (!p->reused || answered)
        return false;
    close_socket(p);
    p->reused = false;
    p->sent = 0;
    p->received = 0;
    if (p->hc->type == PF_CHECK_GRPC && !grpc_call_bytes(p))
        return true; /* decided: out of memory */
    llhttp_init(&p->parser, HTTP_RESPONSE, &http_settings);
    p->parser.data = p;
    connect_fresh(p, (const struct sockaddr *)&p->addr.ss, p->addr.len);
    return true;
}

static void decide_closed(probe *p, int err) {
    if (retry_fresh(p))
        return;
    if (err == ECONNRESET || err == EPIPE)
        decide(p, false, PROBE_FAIL, "connection reset");
    else if (err)
        decide(p, false, PROBE_FAIL, "read failed: %s", strerror(err));
    else if (p->hc->type != PF_CHECK_TCP)
        decide(p, false, PROBE_FAIL, "connection closed before a response");
    else
        decide(p, false, PROBE_FAIL, "connection closed before the expected answer");
}

static void on_deadline(evutil_socket_t fd, short what, void *arg) {
    probe *p = arg;
    if (p->phase == PROBE_IDLE)
        return;
    if (p->phase != PROBE_DECIDED) {
        close_socket(p);
        p->result = PROBE_TIMEOUT;
        snprintf(p->detail, sizeof p->detail, "timeout");
    }
    p->phase = PROBE_IDLE;
    p->out = NULL;
    p->done(p->arg, p->result, p->detail);
}

/* What to do once everything is sent: read when there is something to check, else pass. */
static void after_send(probe *p) {
    if (p->hc->type != PF_CHECK_TCP || p->hc->expect_len) {
        p->phase = PROBE_READING;
        if (watch(p, EV_READ) != PF_OK)
            decide(p, false, PROBE_FAIL, "out of memory");
    } else {
        decide(p, false, PROBE_PASS, p->out_len ? "sent" : "connected");
    }
}

/* After a TLS call that returned n <= 0: waits for what OpenSSL needs and returns true, or
 * returns false with *err set to what ended the connection (0: closed cleanly). */
static bool tls_wait(probe *p, int n, int *err) {
    int e = SSL_get_error(p->ssl, n);
    *err = 0;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (watch(p, e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE) != PF_OK)
            *err = ENOMEM;
        return *err == 0;
    }
    if (e == SSL_ERROR_SYSCALL)
        *err = errno;
    else if (e != SSL_ERROR_ZERO_RETURN)
        *err = ECONNRESET;
    ERR_clear_error();
    return false;
}

/* Moves out bytes: the socket's send(), or SSL_write for TLS (-1 and errno EAGAIN while
 * it waits, its event armed). */
static ssize_t send_some(probe *p, const char *data, size_t len) {
    if (!p->ssl)
        return send(p->fd, data, len, MSG_NOSIGNAL);
    int n = SSL_write(p->ssl, data, (int)len);
    if (n > 0)
        return n;
    int err;
    errno = tls_wait(p, n, &err) ? EAGAIN : err ? err : EPIPE;
    return -1;
}

static void do_send(probe *p) {
    while (p->sent < p->out_len) {
        ssize_t n = send_some(p, p->out + p->sent, p->out_len - p->sent);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!p->ssl && watch(p, EV_WRITE) != PF_OK)
                    decide(p, false, PROBE_FAIL, "out of memory");
                return;
            }
            if (errno == EINTR)
                continue;
            decide_closed(p, errno);
            return;
        }
        p->sent += (size_t)n;
    }
    after_send(p);
}

/* The status decides; the connection is kept only after a whole keep-alive response with
 * nothing behind it. */
static void decide_status(probe *p, bool keep) {
    bool ok = health_status_expected(p->hc, p->status);
    decide(p, keep, ok ? PROBE_PASS : PROBE_FAIL, "HTTP %d", p->status);
}

/* Feeds answer bytes; returns true when they decided the check. */
static bool feed_http(probe *p, const char *data, size_t len) {
    llhttp_errno_t rc = llhttp_execute(&p->parser, data, len);
    if (rc == HPE_PAUSED && p->complete) {
        bool all_used = llhttp_get_error_pos(&p->parser) == data + len;
        decide_status(p, all_used && llhttp_should_keep_alive(&p->parser));
        return true;
    }
    if (rc != HPE_OK) {
        decide(p, false, PROBE_FAIL, "bad response: %s", llhttp_get_error_reason(&p->parser));
        return true;
    }
    return false;
}

/* Looks for the expect bytes across read boundaries: the window keeps the last
 * expect_len - 1 bytes of what came before. */
static bool feed_tcp(probe *p, const char *data, size_t len) {
    const pf_config_health_check *hc = p->hc;
    while (len > 0) {
        size_t room = sizeof p->window - p->window_len;
        size_t n = len < room ? len : room;
        memcpy(p->window + p->window_len, data, n);
        p->window_len += n;
        data += n;
        len -= n;
        if (memmem(p->window, p->window_len, hc->expect, hc->expect_len)) {
            decide(p, false, PROBE_PASS, "expected answer");
            return true;
        }
        size_t keep = hc->expect_len - 1;
        if (p->window_len > keep) {
            memmove(p->window, p->window + p->window_len - keep, keep);
            p->window_len = keep;
        }
    }
    return false;
}

/* Writes what the check's HTTP/2 session has to say (SETTINGS and PING acknowledgements,
 * window updates): a few small frames. What the socket does not take at once is not queued;
 * the connection is then not kept after the check. */
static void grpc_flush(probe *p) {
    const uint8_t *out;
    ssize_t n;
    while (!p->h2_unsent && (n = probe_grpc_pending(p, &out)) != 0) {
        if (n < 0 || send_some(p, (const char *)out, (size_t)n) != n)
            p->h2_unsent = true;
    }
    if (p->h2_unsent && p->ssl && p->phase == PROBE_READING && watch(p, EV_READ) != PF_OK)
        p->h2_goaway = true; /* cannot happen but out of memory; the deadline still decides */
}

static bool feed_grpc(probe *p, const char *data, size_t len) {
    probe_result result;
    char detail[PROBE_DETAIL_MAX];
    bool decided = probe_grpc_feed(p, data, len, &result, detail, sizeof detail);
    grpc_flush(p);
    if (!decided)
        return false;
    /* A kept connection the server closed under GOAWAY before taking the call: no verdict. */
    if (p->h2_status == 0 && p->h2_goaway && retry_fresh(p))
        return true;
    bool keep = p->h2_status != 0 && !p->h2_unsent && probe_grpc_kept(p);
    decide(p, keep, result, "%s", detail);
    return true;
}

/* Between checks the server may still speak on a kept gRPC connection (PING, SETTINGS, a
 * GOAWAY before it closes): answered here. False when the connection should close. */
static bool grpc_idle_read(probe *p) {
    char buf[PROBE_READ_CHUNK];
    for (;;) {
        ssize_t n = recv_some(p, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return probe_grpc_kept(p) && !p->h2_unsent && watch(p, EV_READ) == PF_OK;
        if (n <= 0 || !probe_grpc_absorb(p, buf, (size_t)n))
            return false;
        grpc_flush(p);
    }
}

/* The server closed: an HTTP response delimited by the close ends here, and one whose
 * status is in still counts by that status; anything else failed. */
static void on_eof(probe *p) {
    if (p->hc->type == PF_CHECK_HTTP && p->status) {
        llhttp_finish(&p->parser);
        decide_status(p, false);
        return;
    }
    decide_closed(p, 0);
}

/* Reads answer bytes: recv(), or SSL_read for TLS (-1 and errno EAGAIN while it waits, 0
 * at the end). */
static ssize_t recv_some(probe *p, char *buf, size_t cap) {
    if (!p->ssl)
        return recv(p->fd, buf, cap, 0);
    int n = SSL_read(p->ssl, buf, (int)cap);
    if (n > 0)
        return n;
    int err;
    if (tls_wait(p, n, &err)) {
        errno = EAGAIN;
        return -1;
    }
    errno = err;
    return err ? -1 : 0;
}

static void do_read(probe *p) {
    char buf[PROBE_READ_CHUNK];
    for (;;) {
        ssize_t n = recv_some(p, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                decide_closed(p, errno);
            return;
        }
        if (n == 0) {
            on_eof(p);
            return;
        }
        p->received += (size_t)n;
        bool decided = p->hc->type == PF_CHECK_HTTP   ? feed_http(p, buf, (size_t)n)
                       : p->hc->type == PF_CHECK_GRPC ? feed_grpc(p, buf, (size_t)n)
                                                      : feed_tcp(p, buf, (size_t)n);
        if (decided)
            return;
        if (p->received > PROBE_ANSWER_MAX) {
            if (p->hc->type == PF_CHECK_HTTP && p->status)
                decide_status(p, false); /* a large body: the status is in, no reuse */
            else
                decide(p, false, PROBE_FAIL,
                       p->hc->type == PF_CHECK_HTTP ? "response head larger than %u bytes"
                                                    : "expected answer not in the first %u bytes",
                       PROBE_ANSWER_MAX);
            return;
        }
    }
}

/* Why a TLS handshake failed, for the detail: the certificate check's verdict when it
 * failed, else OpenSSL's reason. */
static void decide_handshake_failed(probe *p) {
    long v = SSL_get_verify_result(p->ssl);
    unsigned long e = ERR_peek_error();
    const char *why = v != X509_V_OK ? X509_verify_cert_error_string(v)
                      : e            ? ERR_reason_error_string(e)
                                     : "connection closed";
    decide(p, false, PROBE_FAIL, "TLS handshake failed: %s", why ? why : "unknown");
    ERR_clear_error();
}

/* RFC 9113 3.3: over TLS a gRPC check speaks HTTP/2 only when ALPN chose "h2". */
static bool alpn_h2(probe *p) {
    const unsigned char *proto = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(p->ssl, &proto, &len);
    if (len == 2 && memcmp(proto, "h2", 2) == 0)
        return true;
    decide(p, false, PROBE_FAIL, "TLS: the endpoint did not choose h2 (ALPN)");
    return false;
}

static void do_handshake(probe *p) {
    int n = SSL_do_handshake(p->ssl);
    if (n == 1) {
        if (p->hc->type == PF_CHECK_GRPC && !alpn_h2(p))
            return;
        p->phase = PROBE_SENDING;
        do_send(p);
        return;
    }
    int e = SSL_get_error(p->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (watch(p, e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE) != PF_OK)
            decide(p, false, PROBE_FAIL, "out of memory");
        return;
    }
    decide_handshake_failed(p);
}

static void on_io(evutil_socket_t fd, short what, void *arg) {
    probe *p = arg;
    switch (p->phase) {
    case PROBE_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            decide_connect_error(p, err);
            return;
        }
        if (p->tls) {
            static const unsigned char h2[] = {2, 'h', '2'};
            if (!(p->ssl = p->tls(p->tls_arg, p->fd, p->addr.text)) ||
                (p->hc->type == PF_CHECK_GRPC && SSL_set_alpn_protos(p->ssl, h2, sizeof h2))) {
                decide(p, false, PROBE_FAIL, "out of memory");
                return;
            }
            p->phase = PROBE_HANDSHAKE;
            do_handshake(p);
            return;
        }
        p->phase = PROBE_SENDING;
        do_send(p);
        return;
    }
    case PROBE_HANDSHAKE:
        do_handshake(p);
        return;
    case PROBE_SENDING:
        do_send(p);
        return;
    case PROBE_READING:
        do_read(p);
        return;
    case PROBE_IDLE:
    case PROBE_DECIDED:
        /* A kept connection between checks: the server closed it (or spoke out of turn;
         * HTTP/2 servers may, and are answered). */
        if (!p->h2 || !grpc_idle_read(p))
            close_socket(p);
        return;
    }
}

static void connect_fresh(probe *p, const struct sockaddr *sa, socklen_t len) {
    p->phase = PROBE_CONNECTING;
    p->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0) {
        decide(p, false, PROBE_CONNECT_FAILURE, "no socket: %s", strerror(errno));
        return;
    }
    if (connect(p->fd, sa, len) < 0 && errno != EINPROGRESS) {
        decide_connect_error(p, errno);
        return;
    }
    if (watch(p, EV_WRITE) != PF_OK)
        decide(p, false, PROBE_CONNECT_FAILURE, "out of memory");
}

int probe_init(probe *p, struct event_base *base, const pf_config_health_check *hc,
               probe_done_fn done, void *arg) {
    memset(p, 0, sizeof *p);
    p->base = base;
    p->hc = hc;
    p->done = done;
    p->arg = arg;
    p->fd = -1;
    p->phase = PROBE_IDLE;
    /* Main thread only, like every probe: no race on the shared settings. */
    if (!http_settings_ready) {
        llhttp_settings_init(&http_settings);
        http_settings.on_headers_complete = on_headers_complete;
        http_settings.on_message_complete = on_message_complete;
        http_settings_ready = true;
    }
    p->deadline = evtimer_new(base, on_deadline, p);
    return p->deadline ? PF_OK : PF_ENOMEM;
}

void probe_start(probe *p, const pf_sockaddr *addr, const char *out, size_t out_len) {
    p->addr = *addr;
    p->out = out;
    p->out_len = out_len;
    p->sent = 0;
    p->received = 0;
    p->status = 0;
    p->complete = false;
    p->window_len = 0;
    p->detail[0] = '\0';
    llhttp_init(&p->parser, HTTP_RESPONSE, &http_settings);
    p->parser.data = p;
    struct timeval tv = pf_timeval_ms(p->hc->timeout_ms);
    event_add(p->deadline, &tv);
    if (p->hc->type == PF_CHECK_GRPC) {
        /* A new stream on the kept session, or a new connection when there is none. */
        if (!probe_grpc_kept(p) || p->h2_unsent)
            close_socket(p);
        p->h2_unsent = false;
        if (!grpc_call_bytes(p))
            return;
    }
    p->reused = p->fd >= 0;
    if (p->reused) {
        p->phase = PROBE_SENDING;
        do_send(p);
    } else {
        connect_fresh(p, (const struct sockaddr *)&addr->ss, addr->len);
    }
}

/* The check's call as bytes to send (p->out); a kept session that takes no more streams is
 * closed and the call made on a new one. False when decided (out of memory). */
static bool grpc_call_bytes(probe *p) {
    size_t len = 0;
    int rc = probe_grpc_begin(p, p->addr.text, &len);
    if (rc != PF_OK && p->fd >= 0) {
        close_socket(p);
        rc = probe_grpc_begin(p, p->addr.text, &len);
    }
    if (rc != PF_OK) {
        decide(p, false, PROBE_FAIL, "out of memory");
        return false;
    }
    p->out = (const char *)p->h2_out;
    p->out_len = len;
    return true;
}

void probe_cancel(probe *p) {
    close_socket(p);
    probe_grpc_end(p);
    if (p->deadline)
        event_del(p->deadline);
    p->phase = PROBE_IDLE;
    p->out = NULL;
}

void probe_release(probe *p) {
    probe_cancel(p);
    if (p->deadline)
        event_free(p->deadline);
    p->deadline = NULL;
}

bool probe_busy(const probe *p) {
    return p->phase != PROBE_IDLE;
}
