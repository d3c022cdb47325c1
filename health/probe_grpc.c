/* gRPC health checks: one grpc.health.v1.Health/Check call per check over HTTP/2 (prior
 * knowledge, or ALPN "h2" over the cluster's TLS). The connection and its session are kept
 * between checks, one stream per check, as a gRPC client keeps its channel; a connection
 * the server ends (GOAWAY, close) is replaced at the next check. nghttp2 does the framing
 * and HPACK; the protobuf
 * messages are a few bytes, written and read by hand (field 1 of each):
 *   HealthCheckRequest  { string service = 1; }
 *   HealthCheckResponse { ServingStatus status = 1; }  SERVING = 1
 * The check passes on HTTP 200, grpc-status 0 and SERVING. */
#include "core/error.h"
#include "health/probe_int.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRPC_PREFIX 5 /* compressed flag, 4-byte big-endian length */
#define SERVING 1

size_t probe_grpc_request_message(const char *service, unsigned char *out, size_t cap) {
    size_t n = strlen(service);
    /* One length byte (a varint below 128) is all a service name up to 127 bytes needs. */
    size_t body = n ? 2 + n : 0;
    if (n > 127 || GRPC_PREFIX + body > cap)
        return 0;
    out[0] = 0;
    out[1] = out[2] = out[3] = 0;
    out[4] = (unsigned char)body;
    if (n) {
        out[5] = 0x0a; /* field 1, wire type 2 (length-delimited) */
        out[6] = (unsigned char)n;
        memcpy(out + 7, service, n);
    }
    return GRPC_PREFIX + body;
}

/* A varint at *pos (protobuf base 128, at most 10 bytes); false when cut or too long. */
static bool varint(const unsigned char *b, size_t len, size_t *pos, uint64_t *v) {
    *v = 0;
    for (unsigned shift = 0; *pos < len && shift < 70; shift += 7) {
        unsigned char c = b[(*pos)++];
        *v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return true;
    }
    return false;
}

int probe_grpc_response_status(const unsigned char *msg, size_t len) {
    if (len < GRPC_PREFIX || msg[0] != 0)
        return -1; /* compressed messages are not asked for */
    size_t body = (size_t)msg[1] << 24 | (size_t)msg[2] << 16 | (size_t)msg[3] << 8 | msg[4];
    if (body != len - GRPC_PREFIX)
        return -1;
    const unsigned char *b = msg + GRPC_PREFIX;
    size_t pos = 0;
    int status = 0;
    while (pos < body) {
        uint64_t key, v;
        if (!varint(b, body, &pos, &key))
            return -1;
        switch (key & 7) {
        case 0: /* varint */
            if (!varint(b, body, &pos, &v))
                return -1;
            if (key >> 3 == 1)
                status = v > 100 ? -1 : (int)v;
            break;
        case 1: /* 64-bit */
            pos += 8;
            break;
        case 2: /* length-delimited: skipped (unknown fields) */
            if (!varint(b, body, &pos, &v) || v > body - pos)
                return -1;
            pos += (size_t)v;
            break;
        case 5: /* 32-bit */
            pos += 4;
            break;
        default:
            return -1;
        }
        if (pos > body)
            return -1;
    }
    return status;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *arg) {
    probe *p = arg;
    int n = 0;
    bool number = valuelen > 0 && valuelen <= 3;
    for (size_t i = 0; number && i < valuelen; i++) {
        number = value[i] >= '0' && value[i] <= '9';
        n = n * 10 + (value[i] - '0');
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        p->h2_status = number ? n : 999;
    else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
        p->grpc_status = number ? n : 999;
    return 0;
}

static int on_data(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                   size_t len, void *arg) {
    probe *p = arg;
    size_t room = sizeof p->msg - p->msg_len;
    if (len > room) {
        p->msg_len = sizeof p->msg + 1; /* too long to be a HealthCheckResponse */
        return 0;
    }
    memcpy(p->msg + p->msg_len, data, len);
    p->msg_len += len;
    return 0;
}

static int on_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *arg) {
    probe *p = arg;
    if (id == p->h2_stream)
        p->h2_closed = true;
    return 0;
}

static int on_frame(nghttp2_session *session, const nghttp2_frame *frame, void *arg) {
    if (frame->hd.type == NGHTTP2_GOAWAY)
        ((probe *)arg)->h2_goaway = true; /* no new stream here: the next check reconnects */
    return 0;
}

static ssize_t read_request(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *arg) {
    probe *p = arg;
    unsigned char msg[GRPC_PREFIX + 2 + PF_CHECK_SERVICE_MAX];
    size_t n = probe_grpc_request_message(p->hc->service, msg, sizeof msg);
    if (n == 0 || n > length)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    memcpy(buf, msg, n);
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

void probe_grpc_end(probe *p) {
    nghttp2_session_del(p->h2);
    p->h2 = NULL;
    free(p->h2_out);
    p->h2_out = NULL;
}

/* A new client session: the preface and our SETTINGS go out with the first call. */
static int session_new(probe *p) {
    nghttp2_session_callbacks *cbs = NULL;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return PF_ENOMEM;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
    int rc = nghttp2_session_client_new(&p->h2, cbs, p);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0)
        return PF_ENOMEM;
    p->h2_goaway = false;
    if (nghttp2_submit_settings(p->h2, NGHTTP2_FLAG_NONE, NULL, 0) != 0) {
        probe_grpc_end(p);
        return PF_ENOMEM;
    }
    return PF_OK;
}

bool probe_grpc_kept(const probe *p) {
    return p->h2 && !p->h2_goaway && nghttp2_session_want_read(p->h2) &&
           nghttp2_session_check_request_allowed(p->h2);
}

int probe_grpc_begin(probe *p, const char *authority, size_t *len) {
    p->h2_status = 0;
    p->grpc_status = -1;
    p->h2_closed = false;
    p->msg_len = 0;
    free(p->h2_out);
    p->h2_out = NULL;
    if (!p->h2 && session_new(p) != PF_OK)
        return PF_ENOMEM;
    static const char path[] = "/grpc.health.v1.Health/Check";
#define NV(n, v, vlen)                                                                             \
    { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, vlen, NGHTTP2_NV_FLAG_NONE }
    const nghttp2_nv nv[] = {
        NV(":method", "POST", 4),
        NV(":scheme", "http", 4),
        NV(":authority", authority, strlen(authority)),
        NV(":path", path, sizeof path - 1),
        NV("content-type", "application/grpc", 16),
        NV("te", "trailers", 8),
        NV("user-agent", "pilotfish-health-check", 22),
    };
#undef NV
    nghttp2_data_provider dp = {.read_callback = read_request};
    p->h2_stream = nghttp2_submit_request(p->h2, NULL, nv, sizeof nv / sizeof nv[0], &dp, NULL);
    if (p->h2_stream < 0)
        goto fail;
    /* Everything the check sends goes out at once; the probe writes it like tcp "send". */
    size_t cap = 512, used = 0;
    p->h2_out = malloc(cap);
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(p->h2, &data);
        if (n < 0 || !p->h2_out)
            goto fail;
        if (n == 0)
            break;
        if (used + (size_t)n > cap) {
            unsigned char *bigger = realloc(p->h2_out, used + (size_t)n);
            if (!bigger)
                goto fail;
            p->h2_out = bigger;
            cap = used + (size_t)n;
        }
        memcpy(p->h2_out + used, data, (size_t)n);
        used += (size_t)n;
    }
    *len = used;
    return PF_OK;
fail:
    probe_grpc_end(p);
    return PF_ENOMEM;
}

ssize_t probe_grpc_pending(probe *p, const uint8_t **out) {
    return p->h2 ? nghttp2_session_mem_send(p->h2, out) : 0;
}

bool probe_grpc_absorb(probe *p, const char *data, size_t len) {
    return p->h2 && nghttp2_session_mem_recv(p->h2, (const uint8_t *)data, len) >= 0;
}

bool probe_grpc_feed(probe *p, const char *data, size_t len, probe_result *result, char *detail,
                     size_t cap) {
    ssize_t used = nghttp2_session_mem_recv(p->h2, (const uint8_t *)data, len);
    if (used < 0) {
        *result = PROBE_FAIL;
        snprintf(detail, cap, "bad HTTP/2: %s", nghttp2_strerror((int)used));
        p->h2_goaway = true; /* the session is broken: never kept */
        return true;
    }
    if (!p->h2_closed)
        return false;
    int serving = probe_grpc_response_status(p->msg, p->msg_len);
    *result = PROBE_FAIL;
    if (p->h2_status != 200)
        snprintf(detail, cap, p->h2_status ? "HTTP %d" : "stream reset", p->h2_status);
    else if (p->grpc_status != 0)
        snprintf(detail, cap, "grpc-status %d", p->grpc_status);
    else if (serving < 0)
        snprintf(detail, cap, "not a HealthCheckResponse");
    else if (serving != SERVING)
        snprintf(detail, cap, "%s",
                 serving == 2   ? "NOT_SERVING"
                 : serving == 3 ? "SERVICE_UNKNOWN"
                                : "UNKNOWN");
    else {
        *result = PROBE_PASS;
        snprintf(detail, cap, "SERVING");
    }
    return true;
}
