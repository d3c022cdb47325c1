/* Metrics registry: counters, gauges and histograms, rendered in the Prometheus text
 * format. Families and series are registered once at start (not on the request path);
 * updates are relaxed atomic operations, safe from any thread. */
#ifndef PF_CORE_METRICS_H
#define PF_CORE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pf_metrics pf_metrics;

typedef struct pf_counter {
    _Atomic uint64_t value;
} pf_counter;

typedef struct pf_gauge {
    _Atomic int64_t value;
} pf_gauge;

#define PF_HISTOGRAM_BUCKETS 15
/* Bucket upper bounds in seconds, shared by every histogram (request latencies): from
 * 0.5 ms, a sidecar's loopback hop, to 30 s, past the default timeouts. */
extern const double pf_histogram_bounds[PF_HISTOGRAM_BUCKETS];

typedef struct pf_histogram {
    _Atomic uint64_t buckets[PF_HISTOGRAM_BUCKETS]; /* non-cumulative; +Inf is count */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
} pf_histogram;

/* A gauge computed at scrape time: writes one value per label set through `emit`. */
typedef void (*pf_metric_emit)(void *emit_ctx, const char *labels, double value);
typedef void (*pf_gauge_fn)(void *arg, pf_metric_emit emit, void *emit_ctx);

pf_metrics *metrics_new(void);
void metrics_free(pf_metrics *m);

/* Each returns a series owned by the registry (valid until metrics_free), or NULL when out
 * of memory. `labels` is the inside of the braces, e.g. `cluster="web",code_class="2xx"`,
 * or "" for none. The same name+labels returns the same series. Startup thread only. */
pf_counter *metrics_counter(pf_metrics *m, const char *name, const char *help, const char *labels);
pf_gauge *metrics_gauge(pf_metrics *m, const char *name, const char *help, const char *labels);
pf_histogram *metrics_histogram(pf_metrics *m, const char *name, const char *help,
                                const char *labels);
/* Gives back one registration of a series (a pointer returned above; NULL is a no-op).
 * The series leaves the registry, and stops being rendered, when every registration of it
 * is given back; nothing may update it afterwards. For things that come and go at run time
 * (discovered clusters). Any thread. */
void metrics_release(pf_metrics *m, const void *metric);
int metrics_gauge_callback(pf_metrics *m, const char *name, const char *help, pf_gauge_fn fn,
                           void *arg);
/* The same for a counter computed at scrape time (rendered with TYPE counter). */
int metrics_counter_callback(pf_metrics *m, const char *name, const char *help, pf_gauge_fn fn,
                             void *arg);
/* A histogram family whose series are found at scrape time: `fn` calls `emit` once per
 * label set with a histogram it owns (read with relaxed loads during the call). */
typedef void (*pf_histogram_emit)(void *emit_ctx, const char *labels, const pf_histogram *h);
typedef void (*pf_histogram_fn)(void *arg, pf_histogram_emit emit, void *emit_ctx);
int metrics_histogram_callback(pf_metrics *m, const char *name, const char *help,
                               pf_histogram_fn fn, void *arg);

/* Registers the standard process metrics, read from /proc at scrape time:
 * process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds and process_start_time_seconds. Returns 0 or PF_ENOMEM.
 * Startup thread only. */
int metrics_register_process(pf_metrics *m);
/* When this process started, in seconds since the epoch (from /proc; the first call's time
 * when /proc cannot tell). Any thread. */
double metrics_process_start_time(void);

static inline void metrics_inc(pf_counter *c, uint64_t n) {
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}
static inline void metrics_gauge_add(pf_gauge *g, int64_t n) {
    atomic_fetch_add_explicit(&g->value, n, memory_order_relaxed);
}
void metrics_observe_us(pf_histogram *h, uint64_t us);
/* The q-quantile (0 < q < 1) in seconds, interpolated linearly inside its bucket as
 * Prometheus' histogram_quantile() does; the first bucket starts at 0. Returns -1 without
 * observations and +Inf when the rank falls past the last bound. Any thread. */
double metrics_histogram_quantile(const pf_histogram *h, double q);

/* Renders everything; returns a malloc'd NUL-terminated string, caller frees. Any thread. */
char *metrics_render(pf_metrics *m);

#endif
