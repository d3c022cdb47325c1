/* Unit tests for core/: durations (parse and format, round trips, rounding), the metrics
 * registry's Prometheus text (HELP/TYPE once per family, labels, cumulative histogram
 * buckets, +Inf, _sum, _count, gauge callbacks), JSON string escaping and truncation, and
 * error lists. */
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"
#include "test/unit/unit.h"

#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- durations --------------------------------------------------------------------------- */

static void test_duration_format_then_parse_round_trips(void) {
    static const uint64_t units[] = {1, 1000, 60000, 3600000};
    size_t failures = 0;
    for (size_t u = 0; u < ARRAY_LEN(units); u++) {
        for (uint64_t k = 0; k < 5000; k++) {
            uint64_t ms = k * units[u], back = 0;
            char buf[32];
            pf_duration_format(ms, buf, sizeof buf);
            int rc = pf_duration_parse(buf, &back);
            if ((rc != PF_OK || back != ms) && failures++ < 5)
                PF_CHECK(false, "%llu ms formats as \"%s\" which parses to rc=%d %llu ms",
                         (unsigned long long)ms, buf, rc, (unsigned long long)back);
        }
    }
    static const uint64_t big[] = {86400000ull, 999999999999ull, 1000000000000000ull};
    for (size_t i = 0; i < ARRAY_LEN(big); i++) {
        char buf[32];
        uint64_t back = 0;
        pf_duration_format(big[i], buf, sizeof buf);
        PF_CHECK(pf_duration_parse(buf, &back) == PF_OK && back == big[i],
                 "\"%s\" does not parse back to %llu", buf, (unsigned long long)big[i]);
    }
    PF_CHECK(failures == 0, "%zu durations did not round-trip", failures);
}

static void test_duration_format_picks_the_largest_exact_unit(void) {
    static const struct {
        uint64_t ms;
        const char *text;
    } rows[] = {{0, "0ms"},        {1, "1ms"},        {999, "999ms"},   {1000, "1s"},
                {1001, "1001ms"},  {59000, "59s"},    {60000, "1m"},    {61000, "61s"},
                {120000, "2m"},    {3600000, "1h"},   {3660000, "61m"}, {7200000, "2h"},
                {86400000, "24h"}, {3601000, "3601s"}};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char buf[32];
        CU_ASSERT_PTR_EQUAL(pf_duration_format(rows[i].ms, buf, sizeof buf), buf);
        PF_CHECK(strcmp(buf, rows[i].text) == 0, "%llu ms: \"%s\", want \"%s\"",
                 (unsigned long long)rows[i].ms, buf, rows[i].text);
    }
    char small[4];
    pf_duration_format(123456, small, sizeof small); /* truncated, still terminated */
    CU_ASSERT_EQUAL(strlen(small), 3);
}

static void test_duration_with_decimal_fraction_parses_to_exact_milliseconds(void) {
    /* "2.007s" is 2007 ms exactly; 2.007 * 1000 in binary floating point is
     * 2007.0000000000002, which must not round up to 2008 */
    static const struct {
        const char *text;
        uint64_t ms;
    } rows[] = {{"1.5s", 1500},   {"0.25s", 250},   {"2.007s", 2007},  {"4.001s", 4001},
                {"8.3m", 498000}, {"1.61m", 96600}, {"0.07h", 252000}, {"0.14h", 504000},
                {"0.5ms", 1},     {"2.5m", 150000}};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        uint64_t ms = 0;
        int rc = pf_duration_parse(rows[i].text, &ms);
        PF_CHECK(rc == PF_OK && ms == rows[i].ms, "\"%s\": rc=%d %llu ms, want %llu", rows[i].text,
                 rc, (unsigned long long)ms, (unsigned long long)rows[i].ms);
    }
    /* every whole millisecond written as seconds with three decimals */
    size_t failures = 0;
    for (uint64_t want = 0; want < 20000; want++) {
        char text[32];
        uint64_t ms = 0;
        snprintf(text, sizeof text, "%llu.%03llus", (unsigned long long)(want / 1000),
                 (unsigned long long)(want % 1000));
        int rc = pf_duration_parse(text, &ms);
        if ((rc != PF_OK || ms != want) && failures++ < 5)
            PF_CHECK(false, "\"%s\": rc=%d %llu ms, want %llu", text, rc, (unsigned long long)ms,
                     (unsigned long long)want);
    }
    PF_CHECK(failures == 0, "%zu of 20000 \"S.mmms\" durations parse to the wrong millisecond",
             failures);
}

static void test_duration_below_a_millisecond_rounds_up(void) {
    static const struct {
        const char *text;
        uint64_t ms;
    } rows[] = {{"0us", 0},    {"1us", 1},   {"999us", 1},   {"1000us", 1},    {"1001us", 2},
                {"2000us", 2}, {"0.1ms", 1}, {"0.001ms", 1}, {"250000us", 250}};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        uint64_t ms = 0;
        int rc = pf_duration_parse(rows[i].text, &ms);
        PF_CHECK(rc == PF_OK && ms == rows[i].ms, "\"%s\": rc=%d %llu ms, want %llu", rows[i].text,
                 rc, (unsigned long long)ms, (unsigned long long)rows[i].ms);
    }
}

static void test_duration_rejects_what_is_not_number_and_unit(void) {
    static const char *const rows[] = {
        "",      "s",    "5",      "5 ms", "5ms ",  "+5s",  "-0s",    "5Ms",
        "5mss",  "5ms5", "1.5.5s", "nan",  "nanms", "infs", "1e400s", "2000000000000000ms",
        "1e20h", ".s",   "5min"};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        uint64_t ms = 777;
        int rc = pf_duration_parse(rows[i], &ms);
        PF_CHECK(rc == PF_EINVAL && ms == 777, "\"%s\" should be rejected: rc=%d ms=%llu", rows[i],
                 rc, (unsigned long long)ms);
    }
    uint64_t ms;
    CU_ASSERT_EQUAL(pf_duration_parse(NULL, &ms), PF_EINVAL);
}

static void test_duration_rejects_hex_numbers(void) {
    /* strtod reads C hex floats; a config duration is a decimal number */
    static const char *const rows[] = {"0x10s", "0x1p4ms", "0X1Fm"};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        uint64_t ms = 777;
        int rc = pf_duration_parse(rows[i], &ms);
        PF_CHECK(rc == PF_EINVAL, "\"%s\" should be rejected, got rc=%d %llu ms", rows[i], rc,
                 (unsigned long long)ms);
    }
}

static void test_timeval_and_clocks(void) {
    struct timeval tv = pf_timeval_ms(1500);
    CU_ASSERT_EQUAL(tv.tv_sec, 1);
    CU_ASSERT_EQUAL(tv.tv_usec, 500000);
    tv = pf_timeval_ms(999);
    CU_ASSERT_EQUAL(tv.tv_sec, 0);
    CU_ASSERT_EQUAL(tv.tv_usec, 999000);
    uint64_t a = pf_now_us(), b = pf_now_us();
    CU_ASSERT(b >= a);
    CU_ASSERT(pf_now_ms() >= a / 1000);
    CU_ASSERT(pf_wall_us() > 1600000000ull * 1000000ull); /* after September 2020 */
}

/* Reads the clock until it has moved past since (a bounded number of tries). */
static uint64_t now_after(uint64_t since) {
    uint64_t now = pf_now_us();
    for (long i = 0; i < 100000000 && now <= since; i++)
        now = pf_now_us();
    return now;
}

typedef struct {
    uint64_t first, later, again, next, after;
} turn_readings;

static void *read_turns(void *arg) {
    turn_readings *r = arg;
    pf_turn_clock_start();
    r->first = pf_turn_now_us();
    r->later = now_after(r->first);
    r->again = pf_turn_now_us();
    pf_turn_clock_next();
    r->next = pf_turn_now_us();
    r->after = pf_now_us();
    return NULL;
}

static void test_turn_clock_holds_one_reading_per_turn_on_its_own_thread(void) {
    turn_readings r = {0};
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, read_turns, &r), 0);
    pthread_join(t, NULL);
    CU_ASSERT(r.later > r.first);      /* the clock moved during the turn */
    CU_ASSERT_EQUAL(r.again, r.first); /* and the turn still reads its first reading */
    CU_ASSERT(r.next >= r.later);      /* a new turn reads afresh */
    CU_ASSERT(r.after >= r.next);      /* never later than the clock read after it */
    /* This thread never started it: each reading is the clock's. */
    uint64_t a = pf_turn_now_us();
    CU_ASSERT(now_after(a) > a);
    CU_ASSERT(pf_turn_now_us() > a);
}

/* ---- metrics ------------------------------------------------------------------------------ */

static void check_render(pf_metrics *m, const char *want) {
    char *got = metrics_render(m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    PF_CHECK(strcmp(got, want) == 0, "\n--- got\n%s--- want\n%s---", got, want);
    free(got);
}

static void test_counters_and_gauges_render_help_and_type_once_per_family(void) {
    pf_metrics *m = metrics_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    pf_counter *a = metrics_counter(m, "pf_requests_total", "Requests.", "cluster=\"a\"");
    pf_gauge *active = metrics_gauge(m, "pf_active", "Active connections.", "");
    pf_counter *b = metrics_counter(m, "pf_requests_total", "Requests.", "cluster=\"b\"");
    pf_counter *plain = metrics_counter(m, "pf_reloads_total", "Reloads.", "");
    CU_ASSERT_FATAL(a && b && active && plain);
    metrics_inc(a, 3);
    metrics_inc(b, 1);
    metrics_inc(b, 1);
    metrics_gauge_add(active, 5);
    metrics_gauge_add(active, -7);
    check_render(m, "# HELP pf_requests_total Requests.\n"
                    "# TYPE pf_requests_total counter\n"
                    "pf_requests_total{cluster=\"a\"} 3\n"
                    "pf_requests_total{cluster=\"b\"} 2\n"
                    "# HELP pf_active Active connections.\n"
                    "# TYPE pf_active gauge\n"
                    "pf_active -2\n"
                    "# HELP pf_reloads_total Reloads.\n"
                    "# TYPE pf_reloads_total counter\n"
                    "pf_reloads_total 0\n");
    metrics_free(m);
    metrics_free(NULL);
}

static void test_same_name_and_labels_give_the_same_series(void) {
    pf_metrics *m = metrics_new();
    pf_counter *a = metrics_counter(m, "c_total", "C.", "k=\"1\"");
    CU_ASSERT_PTR_EQUAL(metrics_counter(m, "c_total", "C.", "k=\"1\""), a);
    CU_ASSERT_PTR_NOT_EQUAL(metrics_counter(m, "c_total", "C.", "k=\"2\""), a);
    /* one name is one kind */
    CU_ASSERT_PTR_NULL(metrics_gauge(m, "c_total", "C.", "k=\"1\""));
    CU_ASSERT_PTR_NULL(metrics_histogram(m, "c_total", "C.", ""));
    CU_ASSERT_NOT_EQUAL(metrics_gauge_callback(m, "c_total", "C.", NULL, NULL), 0);
    metrics_free(m);
}

static void test_released_series_leave_after_their_last_registration(void) {
    pf_metrics *m = metrics_new();
    pf_counter *a = metrics_counter(m, "c_total", "C.", "cluster=\"a\"");
    pf_counter *b = metrics_counter(m, "c_total", "C.", "cluster=\"b\"");
    pf_histogram *h = metrics_histogram(m, "d_seconds", "D.", "cluster=\"a\"");
    pf_counter *c = metrics_counter(m, "c_total", "C.", "cluster=\"c\"");
    CU_ASSERT_FATAL(a && b && h && c);
    /* a second registration of b (a cluster re-added under its name before the first left) */
    CU_ASSERT_PTR_EQUAL(metrics_counter(m, "c_total", "C.", "cluster=\"b\""), b);
    metrics_inc(b, 2);
    metrics_release(m, a); /* the family's first */
    metrics_release(m, h); /* a family's only one: HELP and TYPE stay */
    metrics_release(m, b); /* still registered once */
    metrics_release(m, NULL);
    check_render(m, "# HELP c_total C.\n"
                    "# TYPE c_total counter\n"
                    "c_total{cluster=\"b\"} 2\n"
                    "c_total{cluster=\"c\"} 0\n"
                    "# HELP d_seconds D.\n"
                    "# TYPE d_seconds histogram\n");
    metrics_release(m, c); /* the family's last */
    metrics_release(m, b);
    check_render(m, "# HELP c_total C.\n"
                    "# TYPE c_total counter\n"
                    "# HELP d_seconds D.\n"
                    "# TYPE d_seconds histogram\n");
    /* registering again starts a fresh series at the end */
    pf_counter *a2 = metrics_counter(m, "c_total", "C.", "cluster=\"a\"");
    CU_ASSERT_PTR_NOT_NULL_FATAL(a2);
    check_render(m, "# HELP c_total C.\n"
                    "# TYPE c_total counter\n"
                    "c_total{cluster=\"a\"} 0\n"
                    "# HELP d_seconds D.\n"
                    "# TYPE d_seconds histogram\n");
    metrics_free(m);
}

/* Thousands of series in a family, released and registered again in turns (clusters that
 * come and go): each name and label set still finds its own series, the same labels in
 * another family another one, and released ones are gone from the index too. */
static void test_many_series_are_found_again_by_labels_after_releases(void) {
    pf_metrics *m = metrics_new();
    enum { N = 5000 };
    static pf_counter *first[N];
    char labels[64];
    for (int i = 0; i < N; i++) {
        snprintf(labels, sizeof labels, "cluster=\"c%d\"", i);
        first[i] = metrics_counter(m, "c_total", "C.", labels);
        CU_ASSERT_PTR_NOT_NULL_FATAL(first[i]);
        metrics_inc(first[i], (uint64_t)i);
    }
    pf_gauge *other = metrics_gauge(m, "g", "G.", "cluster=\"c7\"");
    CU_ASSERT_PTR_NOT_NULL_FATAL(other);
    CU_ASSERT_PTR_NOT_EQUAL((void *)other, (void *)first[7]);
    for (int i = 0; i < N; i += 2)
        metrics_release(m, first[i]);
    bool same = true, counted = true;
    for (int i = 0; i < N; i++) {
        snprintf(labels, sizeof labels, "cluster=\"c%d\"", i);
        pf_counter *again = metrics_counter(m, "c_total", "C.", labels);
        CU_ASSERT_PTR_NOT_NULL_FATAL(again);
        /* kept ones are the same series with their count, released ones start at 0 */
        uint64_t v = atomic_load(&again->value);
        if (i % 2)
            same &= again == first[i], counted &= v == (uint64_t)i;
        else
            counted &= v == 0;
    }
    CU_ASSERT(same);
    CU_ASSERT(counted);
    CU_ASSERT_PTR_EQUAL(metrics_gauge(m, "g", "G.", "cluster=\"c7\""), other);
    metrics_free(m);
}

static void test_histogram_buckets_are_cumulative_with_inf_sum_and_count(void) {
    pf_metrics *m = metrics_new();
    pf_histogram *h =
        metrics_histogram(m, "pf_duration_seconds", "Request duration.", "cluster=\"web\"");
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    metrics_observe_us(h, 100);      /* 0.0001 s: first bucket */
    metrics_observe_us(h, 1000);     /* exactly 0.001: le is inclusive */
    metrics_observe_us(h, 1001);     /* just above: next bucket */
    metrics_observe_us(h, 300000);   /* 0.3 s */
    metrics_observe_us(h, 10000000); /* exactly 10 s: le 10 */
    metrics_observe_us(h, 40000000); /* 40 s: past 30 s, only +Inf */
    check_render(m, "# HELP pf_duration_seconds Request duration.\n"
                    "# TYPE pf_duration_seconds histogram\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"0.0005\"} 1\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"0.001\"} 2\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"0.0025\"} 3\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"0.005\"} 3\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"0.01\"} 3\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"0.025\"} 3\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"0.05\"} 3\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"0.1\"} 3\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"0.25\"} 3\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"0.5\"} 4\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"1\"} 4\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"2.5\"} 4\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"5\"} 4\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"10\"} 5\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"30\"} 5\n"
                    "pf_duration_seconds_bucket{cluster=\"web\",le=\"+Inf\"} 6\n"
                    "pf_duration_seconds_sum{cluster=\"web\"} 50.302101\n"
                    "pf_duration_seconds_count{cluster=\"web\"} 6\n");
    metrics_free(m);
}

static void test_histogram_without_labels_and_without_observations(void) {
    pf_metrics *m = metrics_new();
    CU_ASSERT_PTR_NOT_NULL(metrics_histogram(m, "h_seconds", "H.", ""));
    char *text = metrics_render(m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\nh_seconds_bucket{le=\"0.0005\"} 0\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\nh_seconds_bucket{le=\"+Inf\"} 0\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\nh_seconds_sum 0.000000\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\nh_seconds_count 0\n"));
    /* 15 buckets + +Inf, _sum, _count, HELP, TYPE */
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    CU_ASSERT_EQUAL(lines, PF_HISTOGRAM_BUCKETS + 5);
    free(text);
    metrics_free(m);
}

static void emit_pools(void *arg, pf_metric_emit emit, void *emit_ctx) {
    int *calls = arg;
    (*calls)++;
    emit(emit_ctx, "cluster=\"a\",state=\"healthy\"", 3);
    emit(emit_ctx, "cluster=\"b\",state=\"healthy\"", 0);
    emit(emit_ctx, "", 1.5);
}

static void test_gauge_callback_emits_one_line_per_label_set_at_render(void) {
    pf_metrics *m = metrics_new();
    int calls = 0;
    CU_ASSERT_EQUAL(metrics_gauge_callback(m, "pf_endpoints", "Endpoints.", emit_pools, &calls), 0);
    CU_ASSERT_EQUAL(calls, 0);
    pf_counter *c = metrics_counter(m, "pf_after_total", "After.", "");
    metrics_inc(c, 1);
    check_render(m, "# HELP pf_endpoints Endpoints.\n"
                    "# TYPE pf_endpoints gauge\n"
                    "pf_endpoints{cluster=\"a\",state=\"healthy\"} 3\n"
                    "pf_endpoints{cluster=\"b\",state=\"healthy\"} 0\n"
                    "pf_endpoints 1.5\n"
                    "# HELP pf_after_total After.\n"
                    "# TYPE pf_after_total counter\n"
                    "pf_after_total 1\n");
    CU_ASSERT_EQUAL(calls, 1);
    check_render(m, "# HELP pf_endpoints Endpoints.\n"
                    "# TYPE pf_endpoints gauge\n"
                    "pf_endpoints{cluster=\"a\",state=\"healthy\"} 3\n"
                    "pf_endpoints{cluster=\"b\",state=\"healthy\"} 0\n"
                    "pf_endpoints 1.5\n"
                    "# HELP pf_after_total After.\n"
                    "# TYPE pf_after_total counter\n"
                    "pf_after_total 1\n");
    CU_ASSERT_EQUAL(calls, 2);
    metrics_free(m);
}

static void test_empty_registry_renders_empty_text(void) {
    pf_metrics *m = metrics_new();
    check_render(m, "");
    metrics_free(m);
}

static void test_counter_holds_large_values(void) {
    pf_metrics *m = metrics_new();
    pf_counter *c = metrics_counter(m, "big_total", "Big.", "");
    metrics_inc(c, 18446744073709551615ull);
    check_render(m, "# HELP big_total Big.\n# TYPE big_total counter\n"
                    "big_total 18446744073709551615\n");
    metrics_free(m);
}

static void test_histogram_quantile_interpolates_inside_the_bucket(void) {
    pf_metrics *m = metrics_new();
    pf_histogram *empty = metrics_histogram(m, "q0_seconds", "Q.", "");
    pf_histogram *h = metrics_histogram(m, "q_seconds", "Q.", "");
    pf_histogram *slow = metrics_histogram(m, "q2_seconds", "Q.", "");
    CU_ASSERT_FATAL(empty && h && slow);
    CU_ASSERT_EQUAL(metrics_histogram_quantile(empty, 0.5), -1);
    /* 100 observations: 50 in (0.001, 0.0025], 49 in (0.005, 0.01], 1 in (0.5, 1] */
    for (int i = 0; i < 50; i++)
        metrics_observe_us(h, 2000);
    for (int i = 0; i < 49; i++)
        metrics_observe_us(h, 8000);
    metrics_observe_us(h, 700000);
    static const struct {
        double q, want;
    } rows[] = {
        {0.5, 0.0025},                       /* rank 50: the top of the first filled bucket */
        {0.25, 0.001 + 0.0015 * 25.0 / 50},  /* halfway through it */
        {0.99, 0.01},                        /* rank 99: the top of the second */
        {0.995, 0.5 + 0.5 * 0.5},            /* rank 99.5: halfway into the last one */
        {0.75, 0.005 + 0.005 * 25.0 / 49.0}, /* rank 75 inside (0.005, 0.01] */
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        double got = metrics_histogram_quantile(h, rows[i].q);
        PF_CHECK(fabs(got - rows[i].want) < 1e-9, "q=%g: got %.9f, want %.9f", rows[i].q, got,
                 rows[i].want);
    }
    /* Past the last bound the answer is +Inf ("slower than 30 s"), not a made-up number. */
    metrics_observe_us(slow, 40000000);
    CU_ASSERT(isinf(metrics_histogram_quantile(slow, 0.5)));
    /* The first bucket starts at 0. */
    pf_histogram *fast = metrics_histogram(m, "q3_seconds", "Q.", "");
    metrics_observe_us(fast, 100);
    metrics_observe_us(fast, 100);
    CU_ASSERT(fabs(metrics_histogram_quantile(fast, 0.5) - 0.00025) < 1e-12);
    metrics_free(m);
}

static void emit_one(void *arg, pf_metric_emit emit, void *emit_ctx) {
    emit(emit_ctx, "", 2.5);
}

static void test_counter_callback_renders_as_a_counter(void) {
    pf_metrics *m = metrics_new();
    CU_ASSERT_EQUAL(metrics_counter_callback(m, "cpu_seconds_total", "CPU.", emit_one, NULL), 0);
    check_render(m, "# HELP cpu_seconds_total CPU.\n# TYPE cpu_seconds_total counter\n"
                    "cpu_seconds_total 2.5\n");
    metrics_free(m);
}

static void emit_two_histograms(void *arg, pf_histogram_emit emit, void *ctx) {
    const pf_histogram *h = arg;
    emit(ctx, "endpoint=\"a\"", &h[0]);
    emit(ctx, "endpoint=\"b\"", &h[1]);
}

/* Series found at scrape time render exactly like registered ones, one block per label set. */
static void test_histogram_callback_renders_each_emitted_series(void) {
    pf_metrics *m = metrics_new();
    pf_histogram h[2] = {0};
    metrics_observe_us(&h[0], 700);      /* 0.7 ms: the 1 ms bucket */
    metrics_observe_us(&h[1], 40000000); /* 40 s: past the last bound */
    CU_ASSERT_EQUAL(
        metrics_histogram_callback(m, "ep_seconds", "Per endpoint.", emit_two_histograms, h), 0);
    char *text = metrics_render(m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    static const char *const want[] = {
        "# TYPE ep_seconds histogram\n",
        "ep_seconds_bucket{endpoint=\"a\",le=\"0.0005\"} 0\n",
        "ep_seconds_bucket{endpoint=\"a\",le=\"0.001\"} 1\n",
        "ep_seconds_count{endpoint=\"a\"} 1\n",
        "ep_seconds_bucket{endpoint=\"b\",le=\"30\"} 0\n",
        "ep_seconds_bucket{endpoint=\"b\",le=\"+Inf\"} 1\n",
        "ep_seconds_sum{endpoint=\"b\"} 40.000000\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++)
        PF_CHECK(strstr(text, want[i]) != NULL, "missing %s in:\n%s", want[i], text);
    free(text);
    metrics_free(m);
}

static void test_process_metrics_have_their_standard_names_and_sane_values(void) {
    pf_metrics *m = metrics_new();
    CU_ASSERT_EQUAL_FATAL(metrics_register_process(m), PF_OK);
    char *text = metrics_render(m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    static const char *const names[] = {"process_cpu_seconds_total",
                                        "process_resident_memory_bytes",
                                        "process_virtual_memory_bytes",
                                        "process_open_fds",
                                        "process_max_fds",
                                        "process_start_time_seconds"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        char line[96];
        snprintf(line, sizeof line, "\n%s ", names[i]);
        const char *at = strstr(text, line);
        PF_CHECK(at != NULL, "%s missing from:\n%s", names[i], text);
        if (at)
            PF_CHECK(strtod(at + strlen(line), NULL) > 0, "%s is not positive", names[i]);
    }
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "# TYPE process_cpu_seconds_total counter\n"));
    double start = metrics_process_start_time(), now = (double)pf_wall_us() / 1e6;
    PF_CHECK(start > now - 3600 && start <= now + 1, "start %f, now %f", start, now);
    free(text);
    metrics_free(m);
}

/* ---- JSON escaping -------------------------------------------------------------------------- */

static void test_json_escape_quotes_backslashes_and_control_bytes(void) {
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } rows[] = {
        {"plain text", 10, "plain text"},
        {"a\"b", 3, "a\\\"b"},
        {"a\\b", 3, "a\\\\b"},
        {"\n\r\t", 3, "\\u000a\\u000d\\u0009"},
        {"\x01\x1f", 2, "\\u0001\\u001f"},
        {"\x7f", 1, "\\u007f"},
        {"a\0b", 3, "a\\u0000b"},
        {"/ ' <>", 6, "/ ' <>"},
        {"caf\xc3\xa9", 5, "caf\xc3\xa9"}, /* UTF-8 passes through */
        {"", 0, ""},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char out[128];
        size_t n = pf_json_escape(out, sizeof out, rows[i].in, rows[i].len);
        PF_CHECK(strcmp(out, rows[i].out) == 0 && n == strlen(rows[i].out),
                 "row %zu: \"%s\" (%zu), want \"%s\"", i, out, n, rows[i].out);
    }
}

static void test_json_escape_output_parses_back_to_the_input(void) {
    /* every ASCII byte, NUL included, survives a trip through a JSON parser */
    char in[128], out[1024], doc[1100];
    for (int c = 0; c < 128; c++)
        in[c] = (char)c;
    size_t n = pf_json_escape(out, sizeof out, in, sizeof in);
    CU_ASSERT_EQUAL(n, strlen(out));
    snprintf(doc, sizeof doc, "\"%s\"", out);
    json_error_t err;
    json_t *s = json_loads(doc, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    PF_CHECK(s != NULL, "jansson rejects the escaped text: %s", err.text);
    if (s) {
        CU_ASSERT_EQUAL(json_string_length(s), sizeof in);
        CU_ASSERT_EQUAL(memcmp(json_string_value(s), in, sizeof in), 0);
        json_decref(s);
    }
}

static void test_json_escape_truncates_without_splitting_an_escape(void) {
    static const struct {
        const char *in;
        size_t cap;
        const char *out;
    } rows[] = {
        {"abcdef", 4, "abc"}, {"abcdef", 7, "abcdef"},  {"abcdef", 1, ""},
        {"ab\"c", 3, "ab"},   {"ab\"c", 4, "ab"},       {"ab\"c", 5, "ab\\\""},
        {"a\x01", 7, "a"},    {"a\x01", 8, "a\\u0001"}, {"\\\\", 4, "\\\\"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char out[64];
        memset(out, 'Z', sizeof out);
        size_t n = pf_json_escape(out, rows[i].cap, rows[i].in, strlen(rows[i].in));
        PF_CHECK(strcmp(out, rows[i].out) == 0 && n == strlen(rows[i].out),
                 "\"%s\" cap %zu: \"%s\" (%zu), want \"%s\"", rows[i].in, rows[i].cap, out, n,
                 rows[i].out);
        PF_CHECK(out[rows[i].cap] == 'Z', "\"%s\" cap %zu: wrote past cap", rows[i].in,
                 rows[i].cap);
    }
    char untouched = 'Z';
    CU_ASSERT_EQUAL(pf_json_escape(&untouched, 0, "abc", 3), 0);
    CU_ASSERT_EQUAL(untouched, 'Z');
}

static void test_json_escape_truncation_does_not_split_a_utf8_character(void) {
    /* "truncates on a character boundary": a cut inside a multi-byte character would
     * leave invalid UTF-8 in the access log line */
    static const struct {
        const char *in;
        size_t cap;
        const char *out;
    } rows[] = {
        {"\xc3\xa9", 2, ""},       /* é: 2 bytes, room for 1 */
        {"a\xc3\xa9", 3, "a"},     /* aé */
        {"a\xe2\x82\xac", 3, "a"}, /* a€: 3-byte character */
        {"a\xe2\x82\xac", 4, "a"},    {"a\xe2\x82\xac", 5, "a\xe2\x82\xac"},
        {"\xf0\x9f\x90\x9f!", 4, ""}, /* a 4-byte fish */
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char out[64];
        size_t n = pf_json_escape(out, rows[i].cap, rows[i].in, strlen(rows[i].in));
        char shown[128] = "";
        for (size_t k = 0; k < n && strlen(shown) < sizeof shown - 5; k++)
            snprintf(shown + strlen(shown), sizeof shown - strlen(shown), "%02x ",
                     (unsigned char)out[k]);
        PF_CHECK(strcmp(out, rows[i].out) == 0, "row %zu (cap %zu): got bytes [%s], want %zu bytes",
                 i, rows[i].cap, shown, strlen(rows[i].out));
    }
}

/* ---- errors ------------------------------------------------------------------------------- */

static void test_errlist_collects_formatted_messages_in_order(void) {
    pf_errlist list = {0};
    for (int i = 0; i < 20; i++)
        pf_errlist_add(&list, "error %d of %s", i, "twenty");
    CU_ASSERT_EQUAL_FATAL(list.count, 20);
    CU_ASSERT(list.cap >= 20);
    for (int i = 0; i < 20; i++) {
        char want[64];
        snprintf(want, sizeof want, "error %d of twenty", i);
        PF_CHECK(strcmp(list.items[i], want) == 0, "item %d: \"%s\"", i, list.items[i]);
    }
    pf_errlist_free(&list);
    CU_ASSERT_EQUAL(list.count, 0);
    CU_ASSERT_EQUAL(list.cap, 0);
    CU_ASSERT_PTR_NULL(list.items);
    /* usable again after free, and freeing twice is harmless */
    pf_errlist_add(&list, "again");
    CU_ASSERT_EQUAL(list.count, 1);
    CU_ASSERT_STRING_EQUAL(list.items[0], "again");
    pf_errlist_free(&list);
    pf_errlist_free(&list);
}

static void test_errlist_truncates_long_messages(void) {
    char big[PF_ERROR_MAX * 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    pf_errlist list = {0};
    pf_errlist_add(&list, "%s", big);
    CU_ASSERT_EQUAL_FATAL(list.count, 1);
    CU_ASSERT_EQUAL(strlen(list.items[0]), PF_ERROR_MAX - 1);
    pf_errlist_free(&list);
}

static void test_fail_formats_and_returns_the_code(void) {
    pf_error err;
    CU_ASSERT_EQUAL(pf_fail(&err, PF_EIO, "open %s: %s", "x.json", "No such file"), PF_EIO);
    CU_ASSERT_STRING_EQUAL(err.msg, "open x.json: No such file");
    CU_ASSERT_EQUAL(pf_fail(NULL, PF_EINVAL, "ignored %d", 1), PF_EINVAL);
    static const struct {
        int code;
        const char *text;
    } rows[] = {{PF_OK, "ok"},
                {PF_EINVAL, "invalid argument"},
                {PF_ENOMEM, "out of memory"},
                {PF_EIO, "i/o error"},
                {PF_ELIMIT, "limit reached"},
                {PF_ENOTFOUND, "not found"},
                {-99, "unknown error"},
                {7, "unknown error"}};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        PF_CHECK(strcmp(pf_strerror(rows[i].code), rows[i].text) == 0, "%d: \"%s\"", rows[i].code,
                 pf_strerror(rows[i].code));
}

/* A pipe nobody reads: the sink fills it and then says "full" instead of blocking, takes
 * PIPE_BUF-sized writes whole or not at all, and leaves the original descriptor (shared
 * with whoever else holds it) blocking. */
static void test_log_sink_on_a_full_pipe_reports_full_without_blocking(void) {
    int p[2];
    if (!PF_CHECK(pipe(p) == 0, "pipe failed"))
        return;
    pf_log_sink sink;
    CU_ASSERT_EQUAL(pf_log_sink_open(&sink, p[1]), PF_OK);
    CU_ASSERT_TRUE(sink.owned);
    CU_ASSERT_EQUAL(sink.atomic_max, PIPE_BUF);
    CU_ASSERT_EQUAL(fcntl(p[1], F_GETFL) & O_NONBLOCK, 0);
    char chunk[PIPE_BUF];
    memset(chunk, 'x', sizeof chunk);
    size_t written = 0;
    ssize_t n = 0;
    for (int i = 0; i < 10000 && (n = pf_log_sink_write(&sink, chunk, sizeof chunk)) > 0; i++) {
        CU_ASSERT_EQUAL(n, (ssize_t)sizeof chunk); /* whole or nothing */
        written += (size_t)n;
    }
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_TRUE(written >= 4096 && written <= 16u * 1024u * 1024u);
    char drain[PIPE_BUF];
    CU_ASSERT_EQUAL(read(p[0], drain, sizeof drain), (ssize_t)sizeof drain);
    CU_ASSERT_EQUAL(pf_log_sink_write(&sink, chunk, 10), 10); /* room again */
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);                                 /* as pilotfish's main() does */
    CU_ASSERT_EQUAL(pf_log_sink_write(&sink, chunk, 10), -1); /* no reader: broken */
    pf_log_sink_close(&sink);
    close(p[1]);
}

static void test_log_sink_on_a_file_writes_as_is(void) {
    FILE *f = tmpfile();
    if (!f)
        return;
    pf_log_sink sink;
    CU_ASSERT_EQUAL(pf_log_sink_open(&sink, fileno(f)), PF_OK);
    CU_ASSERT_FALSE(sink.owned);
    CU_ASSERT_EQUAL(sink.atomic_max, 0);
    CU_ASSERT_EQUAL(pf_log_sink_write(&sink, "line\n", 5), 5);
    pf_log_sink_close(&sink);
    CU_ASSERT_EQUAL(lseek(fileno(f), 0, SEEK_CUR), 5);
    fclose(f);
    CU_ASSERT_EQUAL(pf_log_sink_open(&sink, 1000), PF_EIO); /* not open */
}

static size_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (size_t)st.st_size : (size_t)-1;
}

/* Log rotation: the file is renamed, the sink reopens its path and writes go to the new file
 * under the same descriptor; a path that became a FIFO is refused and the old file stays. */
static void test_log_sink_on_a_path_reopens_after_rename(void) {
    char dir[] = "/tmp/pf-sink-XXXXXX", path[64], rotated[64];
    if (!mkdtemp(dir))
        return;
    snprintf(path, sizeof path, "%s/access.log", dir);
    snprintf(rotated, sizeof rotated, "%s/access.log.1", dir);
    pf_log_sink sink;
    pf_error err;
    CU_ASSERT_EQUAL_FATAL(pf_log_sink_open_path(&sink, path, &err), PF_OK);
    CU_ASSERT_TRUE(sink.owned);
    CU_ASSERT_EQUAL(sink.atomic_max, 0);
    int fd = sink.fd;
    CU_ASSERT_EQUAL(pf_log_sink_write(&sink, "one\n", 4), 4);
    CU_ASSERT_EQUAL(rename(path, rotated), 0);
    CU_ASSERT_EQUAL(pf_log_sink_write(&sink, "two\n", 4), 4); /* still the renamed file */
    CU_ASSERT_EQUAL(pf_log_sink_reopen_path(&sink, path, &err), PF_OK);
    CU_ASSERT_EQUAL(sink.fd, fd);
    CU_ASSERT_EQUAL(pf_log_sink_write(&sink, "three\n", 6), 6);
    CU_ASSERT_EQUAL(file_size(rotated), 8);
    CU_ASSERT_EQUAL(file_size(path), 6);
    CU_ASSERT_EQUAL(fcntl(sink.fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);

    /* the path is now a FIFO with a reader: another kind of file, refused */
    CU_ASSERT_EQUAL(unlink(path), 0);
    CU_ASSERT_EQUAL(mkfifo(path, 0600), 0);
    int reader = open(path, O_RDONLY | O_NONBLOCK);
    CU_ASSERT_EQUAL(pf_log_sink_reopen_path(&sink, path, &err), PF_EINVAL);
    PF_CHECK(strstr(err.msg, "is now a FIFO") != NULL, "%s", err.msg);
    close(reader);
    /* and without a reader it cannot be opened at all (it would block) */
    CU_ASSERT_EQUAL(pf_log_sink_reopen_path(&sink, path, &err), PF_EIO);
    PF_CHECK(strstr(err.msg, "a FIFO nobody reads") != NULL, "%s", err.msg);
    CU_ASSERT_EQUAL(pf_log_sink_write(&sink, "four\n", 5), 5); /* the file kept (unlinked) */
    struct stat st;
    CU_ASSERT_EQUAL(fstat(sink.fd, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, 11);
    pf_log_sink_close(&sink);
    unlink(path);
    unlink(rotated);
    rmdir(dir);
    snprintf(path, sizeof path, "%s/none/x.log", dir);
    CU_ASSERT_EQUAL(pf_log_sink_open_path(&sink, path, &err), PF_EIO);
    PF_CHECK(strstr(err.msg, "No such file or directory") != NULL, "%s", err.msg);
}

PF_UNIT_MAIN("core", PF_UNIT_TEST(test_duration_format_then_parse_round_trips),
             PF_UNIT_TEST(test_duration_format_picks_the_largest_exact_unit),
             PF_UNIT_TEST(test_duration_with_decimal_fraction_parses_to_exact_milliseconds),
             PF_UNIT_TEST(test_duration_below_a_millisecond_rounds_up),
             PF_UNIT_TEST(test_duration_rejects_what_is_not_number_and_unit),
             PF_UNIT_TEST(test_duration_rejects_hex_numbers), PF_UNIT_TEST(test_timeval_and_clocks),
             PF_UNIT_TEST(test_turn_clock_holds_one_reading_per_turn_on_its_own_thread),
             PF_UNIT_TEST(test_counters_and_gauges_render_help_and_type_once_per_family),
             PF_UNIT_TEST(test_same_name_and_labels_give_the_same_series),
             PF_UNIT_TEST(test_released_series_leave_after_their_last_registration),
             PF_UNIT_TEST(test_many_series_are_found_again_by_labels_after_releases),
             PF_UNIT_TEST(test_histogram_buckets_are_cumulative_with_inf_sum_and_count),
             PF_UNIT_TEST(test_histogram_without_labels_and_without_observations),
             PF_UNIT_TEST(test_gauge_callback_emits_one_line_per_label_set_at_render),
             PF_UNIT_TEST(test_empty_registry_renders_empty_text),
             PF_UNIT_TEST(test_counter_holds_large_values),
             PF_UNIT_TEST(test_histogram_quantile_interpolates_inside_the_bucket),
             PF_UNIT_TEST(test_counter_callback_renders_as_a_counter),
             PF_UNIT_TEST(test_histogram_callback_renders_each_emitted_series),
             PF_UNIT_TEST(test_process_metrics_have_their_standard_names_and_sane_values),
             PF_UNIT_TEST(test_json_escape_quotes_backslashes_and_control_bytes),
             PF_UNIT_TEST(test_json_escape_output_parses_back_to_the_input),
             PF_UNIT_TEST(test_json_escape_truncates_without_splitting_an_escape),
             PF_UNIT_TEST(test_json_escape_truncation_does_not_split_a_utf8_character),
             PF_UNIT_TEST(test_errlist_collects_formatted_messages_in_order),
             PF_UNIT_TEST(test_errlist_truncates_long_messages),
             PF_UNIT_TEST(test_fail_formats_and_returns_the_code),
             PF_UNIT_TEST(test_log_sink_on_a_full_pipe_reports_full_without_blocking),
             PF_UNIT_TEST(test_log_sink_on_a_file_writes_as_is),
             PF_UNIT_TEST(test_log_sink_on_a_path_reopens_after_rename))
