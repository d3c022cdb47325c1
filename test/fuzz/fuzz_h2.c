/* libFuzzer harness for the HTTP/2 downstream path, run in process exactly as a worker runs
 * it: a real proxy (one worker, not started) built from a config, a socketpair whose one end
 * goes to conn_accept like an accepted client, the HTTP/2 preface and then the input's bytes
 * written to the other end, and the worker's event loop turned until everything was read.
 * conn.c detects the preface and hands the connection to h2_downstream.c; nghttp2 and our
 * callbacks decode the frames; each stream becomes an exchange that is routed (a route miss
 * answers 404, the cluster's empty endpoint set 503), so the reply path, trailers, resets,
 * the limits and the protocol error handling all run. The client then closes and the
 * connection must be freed.
 *
 * Checks: nothing crashes or leaks (the sanitizers), the connection is gone after the
 * client closed, and what pilotfish wrote is a sequence of whole HTTP/2 frames (after its
 * SETTINGS) of known types no longer than the default maximum frame size.
 *
 * The first byte steers: bits 0-3 the write size (1-15 bytes, or all at once for 0), bit 4
 * whether an empty SETTINGS frame is sent before the input (most clients do). */
#include "config/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "proxy/proxy.h"
#include "proxy/proxy_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define MAX_TURNS 10000    /* event loop turns per input: bounds the run, never reached */
#define MAX_FRAME 16384u   /* SETTINGS_MAX_FRAME_SIZE's default: pilotfish never raises it */
#define OUT_CAP (1u << 20) /* pilotfish's output kept for the frame check */

static const char *const config_json =
    "{\"access_log\": false,"
    " \"listeners\": [{\"name\": \"main\", \"address\": \"127.0.0.1:1\","
    "   \"max_header_bytes\": 4096, \"max_target_bytes\": 1024, \"buffer_bytes\": 16384,"
    "   \"routes\": [{\"match\": {\"prefix\": \"/\", \"host\": \"t.local\"}, \"cluster\": "
    "\"c\"}]}],"
    " \"clusters\": [{\"name\": \"c\", \"endpoints\": [\"127.0.0.1:1\"]}]}";

static pf_proxy *proxy;

static void setup(void) {
    pf_log_set_level(PF_LOG_ERROR);
    pf_config *cfg = NULL;
    pf_errlist errs = {0};
    if (config_load_string(config_json, "fuzz.json", &cfg, &errs) != PF_OK) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "%s\n", errs.items[i]);
        abort();
    }
    pf_metrics *m = metrics_new();
    pf_error err;
    proxy = proxy_new(cfg, 1, m, &err); /* lives as long as the process */
    CHECK(proxy);
}

/* Reads what pilotfish wrote into out (up to OUT_CAP; the rest is dropped). */
static void drain_output(int fd, uint8_t *out, size_t *len) {
    uint8_t buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            return;
        size_t take = (size_t)n;
        if (*len + take > OUT_CAP)
            take = OUT_CAP - *len;
        memcpy(out + *len, buf, take);
        *len += take;
    }
}

/* The output is whole frames of known types, each within the default maximum size. */
static void check_frames(const uint8_t *out, size_t len, bool capped) {
    size_t pos = 0;
    while (pos + 9 <= len) {
        uint32_t flen = (uint32_t)out[pos] << 16 | (uint32_t)out[pos + 1] << 8 | out[pos + 2];
        uint8_t type = out[pos + 3];
        CHECK(flen <= MAX_FRAME);
        CHECK(type <= 0x9); /* DATA .. CONTINUATION: pilotfish sends no extension frame */
        if (pos == 0)
            CHECK(type == 0x4); /* the server preface is a SETTINGS frame (RFC 9113 3.4) */
        pos += 9 + flen;
    }
    CHECK(capped || pos == len);
}

static int turn(pf_worker *w) {
    return event_base_loop(w->base, EVLOOP_NONBLOCK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint8_t out[OUT_CAP];
    if (!proxy)
        setup();
    if (size < 1)
        return 0;
    size_t step = data[0] & 0x0f;
    bool settings = data[0] & 0x10;
    data++;
    size--;
    if (step == 0)
        step = size ? size : 1;

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    pf_worker *w = &proxy->workers[0];
    pf_listener_rt *l = &proxy->listeners[0];
    /* The places admit() would have taken; worker_conn_closed gives them back. */
    atomic_fetch_add(&proxy->active_connections, 1);
    atomic_fetch_add(&l->open_connections, 1);
    metrics_gauge_add(l->connections_active, 1);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    CHECK(conn_accept(w, l, sv[0], (const struct sockaddr *)&sa, sizeof sa) == PF_OK);

    static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    static const uint8_t empty_settings[9] = {0, 0, 0, 0x4, 0, 0, 0, 0, 0};
    size_t out_len = 0;
    CHECK(write(sv[1], preface, sizeof preface - 1) == (ssize_t)(sizeof preface - 1));
    if (settings)
        CHECK(write(sv[1], empty_settings, sizeof empty_settings) == sizeof empty_settings);
    size_t pos = 0;
    int turns = 0;
    while (pos < size && w->conns && turns++ < MAX_TURNS) {
        size_t n = size - pos < step ? size - pos : step;
        ssize_t k = write(sv[1], data + pos, n);
        if (k > 0)
            pos += (size_t)k;
        else if (k < 0 && errno != EAGAIN)
            break; /* pilotfish closed the connection */
        turn(w);
        drain_output(sv[1], out, &out_len);
    }
    /* Let the loop settle (replies, flushes), then the client goes away. */
    for (int i = 0; i < 8 && w->conns; i++) {
        turn(w);
        drain_output(sv[1], out, &out_len);
    }
    close(sv[1]);
    for (turns = 0; w->conns && turns < MAX_TURNS; turns++)
        turn(w);
    CHECK(w->conns == NULL); /* a client that closed leaves nothing behind */
    check_frames(out, out_len, out_len == OUT_CAP);
    return 0;
}
