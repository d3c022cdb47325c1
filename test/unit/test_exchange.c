/* Unit tests for proxy/exchange: the state table and its enforcement (an illegal move
 * aborts the process, checked in a child), and the pure decisions the exchange makes for
 * every codec: idempotent methods, which failures the retry policy names, the retry
 * verdict with its budget and breaker, backoff caps, attempt timeouts under a deadline,
 * and the memory of failed endpoints. */
#include "proxy/exchange_int.h"
#include "test/unit/unit.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the state table ------------------------------------------------------------------- */

/* The life of an exchange, written out independently of exchange.c's table. */
static const struct {
    pf_exchange_state from, to;
} legal[] = {
    {PF_EX_IDLE, PF_EX_WAITING},
    {PF_EX_IDLE, PF_EX_DONE},
    {PF_EX_IDLE, PF_EX_BACKOFF}, /* a fault delay before the first attempt */
    {PF_EX_WAITING, PF_EX_STREAMING},
    {PF_EX_WAITING, PF_EX_BACKOFF},
    {PF_EX_WAITING, PF_EX_DONE},
    {PF_EX_BACKOFF, PF_EX_WAITING},
    {PF_EX_BACKOFF, PF_EX_DONE},
    {PF_EX_STREAMING, PF_EX_DONE},
    {PF_EX_STREAMING, PF_EX_ABORTED},
    {PF_EX_DONE, PF_EX_IDLE},
    {PF_EX_ABORTED, PF_EX_IDLE},
    /* a 101 to an upgrade: a tunnel, which ends with the connection */
    {PF_EX_WAITING, PF_EX_TUNNEL},
    {PF_EX_TUNNEL, PF_EX_DONE},
    /* on demand: waiting for discovery to find the Service, then routed or answered */
    {PF_EX_IDLE, PF_EX_RESOLVING},
    {PF_EX_RESOLVING, PF_EX_WAITING},
    {PF_EX_RESOLVING, PF_EX_DONE},
};

static bool is_legal(pf_exchange_state from, pf_exchange_state to) {
    for (size_t i = 0; i < ARRAY_LEN(legal); i++)
        if (legal[i].from == from && legal[i].to == to)
            return true;
    return false;
}

static void test_transition_table_allows_exactly_the_life_of_an_exchange(void) {
    for (int from = 0; from < PF_EX_STATE_COUNT; from++)
        for (int to = 0; to < PF_EX_STATE_COUNT; to++)
            PF_CHECK(exchange_transition_allowed(from, to) == is_legal(from, to),
                     "%s -> %s: allowed %d, want %d", exchange_state_name(from),
                     exchange_state_name(to), exchange_transition_allowed(from, to),
                     is_legal(from, to));
    /* out-of-range states are never a legal end of a move */
    CU_ASSERT_FALSE(exchange_transition_allowed(PF_EX_IDLE, PF_EX_STATE_COUNT));
    CU_ASSERT_FALSE(exchange_transition_allowed(PF_EX_STATE_COUNT, PF_EX_IDLE));
    CU_ASSERT_STRING_EQUAL(exchange_state_name(PF_EX_STATE_COUNT), "invalid");
}

static void test_every_state_is_named_reachable_and_leads_back_to_idle(void) {
    bool from_idle[PF_EX_STATE_COUNT] = {[PF_EX_IDLE] = true};
    bool to_idle[PF_EX_STATE_COUNT] = {[PF_EX_IDLE] = true};
    /* closure over the table, forwards from idle and backwards to it */
    for (int round = 0; round < PF_EX_STATE_COUNT; round++) {
        for (int a = 0; a < PF_EX_STATE_COUNT; a++) {
            for (int b = 0; b < PF_EX_STATE_COUNT; b++) {
                if (!exchange_transition_allowed(a, b))
                    continue;
                from_idle[b] |= from_idle[a];
                to_idle[a] |= to_idle[b];
            }
        }
    }
    for (int s = 0; s < PF_EX_STATE_COUNT; s++) {
        PF_CHECK(from_idle[s], "%s is unreachable", exchange_state_name(s));
        PF_CHECK(to_idle[s], "%s never gets back to idle: a connection would be stuck",
                 exchange_state_name(s));
        PF_CHECK(strcmp(exchange_state_name(s), "invalid") != 0, "state %d has no name", s);
    }
}

/* Runs exchange_set_state(from -> to) in a child; returns its wait status. */
static int move_in_child(pf_exchange_state from, pf_exchange_state to) {
    pid_t pid = fork();
    if (pid == 0) {
        /* the abort is expected: keep its report quiet */
        FILE *devnull = freopen("/dev/null", "w", stderr);
        (void)devnull;
        pf_exchange ex;
        memset(&ex, 0, sizeof ex);
        ex.state = from;
        exchange_set_state(&ex, to);
        _exit(ex.state == to ? 0 : 3);
    }
    int status = -1;
    if (pid > 0)
        waitpid(pid, &status, 0);
    return status;
}

static void test_illegal_moves_abort_and_legal_moves_do_not(void) {
    static const struct {
        pf_exchange_state from, to;
    } illegal[] = {
        {PF_EX_IDLE, PF_EX_STREAMING}, /* a response head with no attempt */
        {PF_EX_DONE, PF_EX_STREAMING}, /* a second response */
        {PF_EX_DONE, PF_EX_DONE},      /* answering twice */
        {PF_EX_ABORTED, PF_EX_DONE},   /* completing a cut response */
        {PF_EX_BACKOFF, PF_EX_STREAMING} /* a head while no attempt is in flight */,
        {PF_EX_WAITING, PF_EX_IDLE}, /* forgetting an attempt in flight */
        {PF_EX_STREAMING, PF_EX_BACKOFF} /* retrying after the response started */,
        {PF_EX_TUNNEL, PF_EX_BACKOFF},   /* retrying after the protocol switched */
        {PF_EX_STREAMING, PF_EX_TUNNEL}, /* a switch after a final response started */
        {PF_EX_IDLE, PF_EX_TUNNEL},      /* a tunnel without a request */
    };
    for (size_t i = 0; i < ARRAY_LEN(illegal); i++) {
        int status = move_in_child(illegal[i].from, illegal[i].to);
        PF_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "%s -> %s: status %#x",
                 exchange_state_name(illegal[i].from), exchange_state_name(illegal[i].to), status);
    }
    for (size_t i = 0; i < ARRAY_LEN(legal); i++) {
        pf_exchange ex;
        memset(&ex, 0, sizeof ex);
        ex.state = legal[i].from;
        exchange_set_state(&ex, legal[i].to);
        PF_CHECK(ex.state == legal[i].to, "%s -> %s did not move",
                 exchange_state_name(legal[i].from), exchange_state_name(legal[i].to));
    }
}

/* ---- pure decisions -------------------------------------------------------------------- */

static void test_weighted_route_picks_clusters_in_proportion(void) {
    pf_config_route plain = {.cluster_index = 4};
    CU_ASSERT_EQUAL(exchange_route_cluster(&plain, 12345), 4);
    pf_config_route split = {.weighted_count = 3, .total_weight = 100};
    split.clusters[0] = (pf_config_weighted_cluster){.weight = 90, .cluster_index = 7};
    split.clusters[1] = (pf_config_weighted_cluster){.weight = 0, .cluster_index = 8};
    split.clusters[2] = (pf_config_weighted_cluster){.weight = 10, .cluster_index = 9};
    static const struct {
        uint64_t random;
        size_t want;
    } rows[] = {{0, 7}, {89, 7}, {90, 9}, {99, 9}, {100, 7}, {190, 9}, {UINT64_MAX, 7} /* 15 */};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(exchange_route_cluster(&split, rows[i].random) == rows[i].want,
                 "random %llu: got %zu, want %zu", (unsigned long long)rows[i].random,
                 exchange_route_cluster(&split, rows[i].random), rows[i].want);
    /* every point of the wheel once: exactly the weights, and weight 0 never */
    size_t count[10] = {0};
    for (uint64_t r = 0; r < 100; r++)
        count[exchange_route_cluster(&split, r)]++;
    CU_ASSERT_EQUAL(count[7], 90);
    CU_ASSERT_EQUAL(count[8], 0);
    CU_ASSERT_EQUAL(count[9], 10);
}

static void test_upgrade_refusal_follows_the_route_and_the_body(void) {
    pf_config_route ws = {.upgrade_count = 1}, none = {.upgrade_count = 0};
    pf_config_route two = {.upgrade_count = 2};
    strcpy(ws.upgrades[0], "websocket");
    strcpy(two.upgrades[0], "websocket");
    strcpy(two.upgrades[1], "h2c");
    static const char *const ok = NULL;
    const char *listed = "the protocol is not in the route's upgrades";
    const struct {
        const pf_config_route *route;
        const char *upgrade;
        bool body;
        const char *want;
    } rows[] = {
        {&ws, "websocket", false, ok},
        {&ws, "WebSocket", false, ok}, /* RFC 9110 7.8: case-insensitive */
        {&ws, "websocket/13", false, ok},
        {&ws, " websocket ", false, ok},
        {&ws, "h2c", false, listed},
        {&ws, "websocket, h2c", false, listed}, /* the server may pick any listed */
        {&ws, "websockets", false, listed},
        {&ws, "websocket", true, "an upgrade request with a body is not tunnelled"},
        {&ws, " , ", false, "empty Upgrade header"},
        {&none, "websocket", false, listed},
        {&two, "h2c, websocket/13", false, ok},
        {NULL, "websocket", false, ok}, /* a discovered service: websocket only */
        {NULL, "h2c", false, listed},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        const char *got = exchange_upgrade_refusal(rows[i].route, rows[i].upgrade,
                                                   strlen(rows[i].upgrade), rows[i].body);
        PF_CHECK((got == NULL && rows[i].want == NULL) ||
                     (got && rows[i].want && strcmp(got, rows[i].want) == 0),
                 "row %zu \"%s\": got %s, want %s", i, rows[i].upgrade, got ? got : "allowed",
                 rows[i].want ? rows[i].want : "allowed");
    }
}

static void test_idempotent_methods(void) {
    static const struct {
        const char *method;
        bool idempotent;
    } rows[] = {
        {"GET", true},  {"HEAD", true},     {"OPTIONS", true}, {"TRACE", true},
        {"PUT", true},  {"DELETE", true},   {"POST", false},   {"PATCH", false},
        {"get", false}, {"CONNECT", false}, {"", false},       {NULL, false},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(exchange_method_idempotent(rows[i].method) == rows[i].idempotent, "%s: want %d",
                 rows[i].method ? rows[i].method : "NULL", rows[i].idempotent);
}

static void test_retry_policy_names_failures(void) {
    pf_config_retry codes = {
        .on = PF_RETRY_STATUS_CODES, .status_codes = {429, 409}, .status_code_count = 2};
    static const struct {
        uint32_t on;
        pf_failure kind;
        int status;
        bool want;
    } rows[] = {
        {PF_RETRY_CONNECT_FAILURE, PF_FAIL_CONNECT, 503, true},
        {PF_RETRY_RESET, PF_FAIL_CONNECT, 503, false},
        {PF_RETRY_RESET, PF_FAIL_RESET, 502, true},
        {PF_RETRY_CONNECT_FAILURE, PF_FAIL_RESET, 502, false},
        {PF_RETRY_GATEWAY_ERROR, PF_FAIL_TIMEOUT, 504, true},
        {PF_RETRY_5XX, PF_FAIL_TIMEOUT, 504, true},
        {PF_RETRY_RESET | PF_RETRY_CONNECT_FAILURE, PF_FAIL_TIMEOUT, 504, false},
        {PF_RETRY_5XX, PF_FAIL_STATUS, 500, true},
        {PF_RETRY_GATEWAY_ERROR, PF_FAIL_STATUS, 500, false},
        {PF_RETRY_GATEWAY_ERROR, PF_FAIL_STATUS, 502, true},
        {PF_RETRY_GATEWAY_ERROR, PF_FAIL_STATUS, 503, true},
        {PF_RETRY_GATEWAY_ERROR, PF_FAIL_STATUS, 504, true},
        {PF_RETRY_5XX, PF_FAIL_STATUS, 429, false},
        {~0u, PF_FAIL_PROTOCOL, 502, false},
        {~0u, PF_FAIL_STALE, 502, false},
        /* gRPC: the grpc-status of a trailers-only answer */
        {PF_RETRY_GRPC_CANCELLED, PF_FAIL_GRPC, PF_GRPC_CANCELLED, true},
        {PF_RETRY_GRPC_DEADLINE_EXCEEDED, PF_FAIL_GRPC, PF_GRPC_DEADLINE_EXCEEDED, true},
        {PF_RETRY_GRPC_RESOURCE_EXHAUSTED, PF_FAIL_GRPC, PF_GRPC_RESOURCE_EXHAUSTED, true},
        {PF_RETRY_GRPC_UNAVAILABLE, PF_FAIL_GRPC, PF_GRPC_UNAVAILABLE, true},
        {PF_RETRY_GRPC_INTERNAL, PF_FAIL_GRPC, PF_GRPC_INTERNAL, true},
        {PF_RETRY_GRPC_ANY & ~PF_RETRY_GRPC_UNAVAILABLE, PF_FAIL_GRPC, PF_GRPC_UNAVAILABLE, false},
        {~0u, PF_FAIL_GRPC, PF_GRPC_OK, false},
        {~0u, PF_FAIL_GRPC, PF_GRPC_UNIMPLEMENTED, false},
        {~0u, PF_FAIL_GRPC, PF_GRPC_UNKNOWN, false},
        {PF_RETRY_5XX | PF_RETRY_GATEWAY_ERROR, PF_FAIL_GRPC, PF_GRPC_UNAVAILABLE, false},
        {PF_RETRY_GRPC_ANY, PF_FAIL_STATUS, 503, false},
        /* without the request's gRPC-ness, "unavailable" names no connection failure */
        {PF_RETRY_GRPC_UNAVAILABLE, PF_FAIL_CONNECT, 503, false},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        pf_config_retry r = {.on = rows[i].on};
        PF_CHECK(exchange_retry_wanted(&r, rows[i].kind, rows[i].status) == rows[i].want,
                 "row %zu: want %d", i, rows[i].want);
    }
    CU_ASSERT_TRUE(exchange_retry_wanted(&codes, PF_FAIL_STATUS, 429));
    CU_ASSERT_TRUE(exchange_retry_wanted(&codes, PF_FAIL_STATUS, 409));
    CU_ASSERT_FALSE(exchange_retry_wanted(&codes, PF_FAIL_STATUS, 503));
    codes.on = PF_RETRY_5XX; /* the list counts only when status_codes is on */
    CU_ASSERT_FALSE(exchange_retry_wanted(&codes, PF_FAIL_STATUS, 429));
}

static void test_retry_verdict(void) {
    pf_config_retry policy = {.on = PF_RETRY_CONNECT_FAILURE | PF_RETRY_5XX, .max_retries = 2};
    /* a retriable connect failure with room everywhere; each row changes one fact */
    const pf_retry_facts base = {
        .kind = PF_FAIL_CONNECT,
        .status = 503,
        .replayable = true,
        .retries = 0,
        .active_requests = 100,
        .other_retries = 0,
        .retry = &policy,
        .budget_percent = 20,
        .budget_min_concurrency = 3,
        .breaker_max_retries = 50,
    };
    struct row {
        const char *what;
        pf_retry_facts f;
        pf_retry_verdict want;
    } rows[32];
    size_t n = 0;
#define ROW(desc, field, value, verdict)                                                           \
    do {                                                                                           \
        rows[n] = (struct row){desc, base, verdict};                                               \
        rows[n].f.field = value;                                                                   \
        n++;                                                                                       \
    } while (0)
    ROW("plain", retries, 0, PF_RETRY_YES);
    ROW("response started", response_started, true, PF_RETRY_NO);
    ROW("not replayable", replayable, false, PF_RETRY_NO);
    ROW("no policy", retry, NULL, PF_RETRY_NO);
    ROW("retries spent", retries, 2, PF_RETRY_NO);
    ROW("one retry left", retries, 1, PF_RETRY_YES);
    ROW("not named", kind, PF_FAIL_RESET, PF_RETRY_NO);
    ROW("protocol error", kind, PF_FAIL_PROTOCOL, PF_RETRY_NO);
    ROW("stale first time", kind, PF_FAIL_STALE, PF_RETRY_YES);
    ROW("not idempotent", not_idempotent, true, PF_RETRY_NO);
    ROW("budget: 20% of 100 in flight", other_retries, 19, PF_RETRY_YES);
    ROW("budget spent", other_retries, 20, PF_RETRY_NO_BUDGET);
    ROW("budget floor", active_requests, 1, PF_RETRY_YES);
    ROW("breaker open", breaker_max_retries, 0, PF_RETRY_NO_BREAKER);
    ROW("deadline passed", deadline_us, 1000, PF_RETRY_NO);
    rows[n - 1].f.now_us = 1000;
    ROW("deadline ahead", deadline_us, 2000, PF_RETRY_YES);
    rows[n - 1].f.now_us = 1000;
#undef ROW
    /* the stale replay is free but once, and never after the response started */
    rows[n] = (struct row){"stale again", base, PF_RETRY_NO};
    rows[n].f.kind = PF_FAIL_STALE;
    rows[n].f.stale_retried = true;
    n++;
    rows[n] = (struct row){"stale with retries spent", base, PF_RETRY_YES};
    rows[n].f.kind = PF_FAIL_STALE;
    rows[n].f.retries = 2;
    n++;
    rows[n] = (struct row){"stale (refused h2 stream) of a POST", base, PF_RETRY_YES};
    rows[n].f.kind = PF_FAIL_STALE;
    rows[n].f.not_idempotent = true;
    n++;
    /* a gRPC call's connect failure or reset would end UNAVAILABLE: "unavailable" names it */
    static const pf_config_retry unavailable = {.on = PF_RETRY_GRPC_UNAVAILABLE, .max_retries = 2};
    rows[n] = (struct row){"gRPC connect failure, on unavailable", base, PF_RETRY_YES};
    rows[n].f.retry = &unavailable;
    rows[n].f.grpc = true;
    n++;
    rows[n] = (struct row){"gRPC reset, on unavailable", base, PF_RETRY_YES};
    rows[n].f.retry = &unavailable;
    rows[n].f.grpc = true;
    rows[n].f.kind = PF_FAIL_RESET;
    n++;
    rows[n] = (struct row){"plain connect failure, on unavailable", base, PF_RETRY_NO};
    rows[n].f.retry = &unavailable;
    n++;
    rows[n] = (struct row){"gRPC timeout, on unavailable", base, PF_RETRY_NO};
    rows[n].f.retry = &unavailable;
    rows[n].f.grpc = true;
    rows[n].f.kind = PF_FAIL_TIMEOUT;
    n++;
    rows[n] = (struct row){"budget floor of 3 with 2 others", base, PF_RETRY_YES};
    rows[n].f.active_requests = 0;
    rows[n].f.other_retries = 2;
    n++;
    rows[n] = (struct row){"budget floor of 3 with 3 others", base, PF_RETRY_NO_BUDGET};
    rows[n].f.active_requests = 0;
    rows[n].f.other_retries = 3;
    n++;
    for (size_t i = 0; i < n; i++) {
        pf_retry_verdict got = exchange_retry_verdict(&rows[i].f);
        PF_CHECK(got == rows[i].want, "%s: verdict %d, want %d", rows[i].what, got, rows[i].want);
    }
}

static void test_backoff_cap_doubles_up_to_the_maximum(void) {
    pf_config_retry r = {.backoff_base_ms = 25, .backoff_max_ms = 250};
    static const struct {
        unsigned retries;
        uint64_t cap;
    } rows[] = {{0, 25}, {1, 25}, {2, 50}, {3, 100}, {4, 200}, {5, 250}, {40, 250}};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(exchange_backoff_cap_ms(&r, rows[i].retries) == rows[i].cap,
                 "retry %u: cap %llu, want %llu", rows[i].retries,
                 (unsigned long long)exchange_backoff_cap_ms(&r, rows[i].retries),
                 (unsigned long long)rows[i].cap);
    pf_config_retry none = {0};
    CU_ASSERT_EQUAL(exchange_backoff_cap_ms(&none, 3), 0);
}

static void test_attempt_timeout_is_per_try_or_response_and_never_past_the_deadline(void) {
    static const struct {
        uint64_t per_try, response, deadline_us, now_us, want;
    } rows[] = {
        {0, 15000, 0, 0, 15000},              /* the cluster's response timeout */
        {500, 15000, 0, 0, 500},              /* the per-try timeout wins */
        {500, 15000, 10000000, 9900000, 100}, /* 100 ms left of the route's deadline */
        {0, 15000, 10000000, 9999001, 1},     /* less than a millisecond rounds up */
        {0, 15000, 10000000, 10000000, 1},    /* passed: still 1 ms, never 0 (no timer) */
        {0, 15000, 10000000, 20000000, 1},
        {500, 15000, 10000000, 0, 500}, /* plenty left */
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        uint64_t got = exchange_attempt_timeout_ms(rows[i].per_try, rows[i].response,
                                                   rows[i].deadline_us, rows[i].now_us);
        PF_CHECK(got == rows[i].want, "row %zu: %llu ms, want %llu", i, (unsigned long long)got,
                 (unsigned long long)rows[i].want);
    }
}

static void test_failed_endpoints_are_remembered_latest_first_without_duplicates(void) {
    pf_avoid a = {0};
    CU_ASSERT_FALSE(exchange_avoid_has(&a, 1));
    exchange_avoid_add(&a, 1);
    exchange_avoid_add(&a, 1);
    CU_ASSERT_EQUAL(a.count, 1);
    for (uint64_t h = 2; h <= PF_AVOID_MAX; h++)
        exchange_avoid_add(&a, h);
    CU_ASSERT_EQUAL(a.count, PF_AVOID_MAX);
    for (uint64_t h = 1; h <= PF_AVOID_MAX; h++)
        PF_CHECK(exchange_avoid_has(&a, h), "%llu forgotten too early", (unsigned long long)h);
    exchange_avoid_add(&a, 100); /* one more: the oldest (1) goes */
    CU_ASSERT_EQUAL(a.count, PF_AVOID_MAX);
    CU_ASSERT_FALSE(exchange_avoid_has(&a, 1));
    CU_ASSERT_TRUE(exchange_avoid_has(&a, 2));
    CU_ASSERT_TRUE(exchange_avoid_has(&a, 100));
}

static void test_grpc_content_type(void) {
    static const struct {
        const char *v;
        bool want;
    } rows[] = {
        {"application/grpc", true},
        {"application/grpc+proto", true},
        {"Application/GRPC+json", true},
        {"application/grpc; charset=x", true},
        {"application/grpc-web", false},
        {"application/grpcx", false},
        {"application/json", false},
        {"application/grp", false},
        {"", false},
        {"text/plain", false},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(exchange_grpc_content_type(rows[i].v, strlen(rows[i].v)) == rows[i].want,
                 "\"%s\": want %d", rows[i].v, rows[i].want);
}

static void test_grpc_status_of_our_own_answers(void) {
    static const struct {
        int status;
        bool overloaded;
        int want;
    } rows[] = {
        {503, false, PF_GRPC_UNAVAILABLE},       /* no endpoint, connect failure */
        {502, false, PF_GRPC_UNAVAILABLE},       /* reset, bad response */
        {504, false, PF_GRPC_DEADLINE_EXCEEDED}, /* response timeout, deadline */
        {503, true, PF_GRPC_RESOURCE_EXHAUSTED}, /* breaker */
        {502, true, PF_GRPC_RESOURCE_EXHAUSTED}, /* retry budget spent after a reset */
        {404, false, PF_GRPC_UNIMPLEMENTED},     /* no route */
        {400, false, PF_GRPC_INTERNAL},          {431, false, PF_GRPC_RESOURCE_EXHAUSTED},
        {418, false, PF_GRPC_UNKNOWN},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(exchange_grpc_status_of_reply(rows[i].status, rows[i].overloaded) == rows[i].want,
                 "%d overloaded=%d: want %d", rows[i].status, rows[i].overloaded, rows[i].want);
}

static void test_grpc_timeout_parse_and_format(void) {
    static const struct {
        const char *v;
        int rc;
        uint64_t us;
    } rows[] = {
        {"1H", PF_OK, 3600000000ull},
        {"2M", PF_OK, 120000000ull},
        {"3S", PF_OK, 3000000},
        {"250m", PF_OK, 250000},
        {"7u", PF_OK, 7},
        {"1500n", PF_OK, 2},
        {"1n", PF_OK, 1},
        {"0m", PF_OK, 1},
        {"99999999S", PF_OK, 99999999000000ull},
        {"123456789S", PF_EINVAL, 0},
        {"m", PF_EINVAL, 0},
        {"10", PF_EINVAL, 0},
        {"10x", PF_EINVAL, 0},
        {"-1S", PF_EINVAL, 0},
        {"1 S", PF_EINVAL, 0},
        {"", PF_EINVAL, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        uint64_t us = 0;
        int rc = exchange_grpc_timeout_parse(rows[i].v, strlen(rows[i].v), &us);
        PF_CHECK(rc == rows[i].rc && (rc != PF_OK || us == rows[i].us), "\"%s\": rc %d us %llu",
                 rows[i].v, rc, (unsigned long long)us);
    }
    static const struct {
        uint64_t us;
        const char *want;
    } out[] = {
        {1, "1u"},
        {99999999, "99999999u"},
        {100000000, "100000m"},
        {100000001, "100001m"}, /* rounded up to a whole unit */
        {99999999000001ull, "1666667M"},
        {UINT64_MAX / 2, "99999999H"},
    };
    for (size_t i = 0; i < ARRAY_LEN(out); i++) {
        char buf[24];
        exchange_grpc_timeout_format(buf, sizeof buf, out[i].us);
        PF_CHECK(strcmp(buf, out[i].want) == 0, "%llu: \"%s\", want \"%s\"",
                 (unsigned long long)out[i].us, buf, out[i].want);
        uint64_t back = 0;
        PF_CHECK(exchange_grpc_timeout_parse(buf, strlen(buf), &back) == PF_OK &&
                     (back >= out[i].us || i + 1 == ARRAY_LEN(out)),
                 "%s does not parse back to at least %llu", buf, (unsigned long long)out[i].us);
    }
}

static void test_grpc_status_values_and_their_outcome(void) {
    CU_ASSERT_EQUAL(exchange_grpc_status_parse("0", 1), 0);
    CU_ASSERT_EQUAL(exchange_grpc_status_parse("14", 2), 14);
    CU_ASSERT_EQUAL(exchange_grpc_status_parse("", 0), -1);
    CU_ASSERT_EQUAL(exchange_grpc_status_parse("1x", 2), -1);
    CU_ASSERT_EQUAL(exchange_grpc_status_parse("100", 3), -1);
    CU_ASSERT_EQUAL(exchange_grpc_http_status(PF_GRPC_UNAVAILABLE), 503);
    CU_ASSERT_EQUAL(exchange_grpc_http_status(PF_GRPC_DEADLINE_EXCEEDED), 504);
    CU_ASSERT_EQUAL(exchange_grpc_http_status(PF_GRPC_INTERNAL), 500);
    CU_ASSERT_EQUAL(exchange_grpc_http_status(PF_GRPC_UNKNOWN), 500);
    CU_ASSERT_EQUAL(exchange_grpc_http_status(PF_GRPC_DATA_LOSS), 500);
    /* the caller's mistakes and refusals are not the endpoint's failures */
    CU_ASSERT_EQUAL(exchange_grpc_http_status(PF_GRPC_OK), 200);
    CU_ASSERT_EQUAL(exchange_grpc_http_status(PF_GRPC_UNIMPLEMENTED), 200);
    CU_ASSERT_EQUAL(exchange_grpc_http_status(PF_GRPC_RESOURCE_EXHAUSTED), 200);
    CU_ASSERT_EQUAL(exchange_grpc_http_status(PF_GRPC_CANCELLED), 200);
    CU_ASSERT_EQUAL(exchange_grpc_http_status(-1), 200);
}

PF_UNIT_MAIN("exchange", PF_UNIT_TEST(test_transition_table_allows_exactly_the_life_of_an_exchange),
             PF_UNIT_TEST(test_every_state_is_named_reachable_and_leads_back_to_idle),
             PF_UNIT_TEST(test_illegal_moves_abort_and_legal_moves_do_not),
             PF_UNIT_TEST(test_upgrade_refusal_follows_the_route_and_the_body),
             PF_UNIT_TEST(test_weighted_route_picks_clusters_in_proportion),
             PF_UNIT_TEST(test_idempotent_methods), PF_UNIT_TEST(test_retry_policy_names_failures),
             PF_UNIT_TEST(test_retry_verdict),
             PF_UNIT_TEST(test_backoff_cap_doubles_up_to_the_maximum),
             PF_UNIT_TEST(test_attempt_timeout_is_per_try_or_response_and_never_past_the_deadline),
             PF_UNIT_TEST(test_failed_endpoints_are_remembered_latest_first_without_duplicates),
             PF_UNIT_TEST(test_grpc_content_type),
             PF_UNIT_TEST(test_grpc_status_of_our_own_answers),
             PF_UNIT_TEST(test_grpc_timeout_parse_and_format),
             PF_UNIT_TEST(test_grpc_status_values_and_their_outcome))
