/* Metrics registry. Series are kept in registration order, grouped by family, so the
 * rendered text has each family's HELP/TYPE once followed by its series. */
#include "core/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double pf_histogram_bounds[PF_HISTOGRAM_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

typedef enum {
    KIND_COUNTER,
    KIND_GAUGE,
    KIND_HISTOGRAM,
    KIND_GAUGE_FN,
    KIND_COUNTER_FN,
    KIND_HISTOGRAM_FN
} metric_kind;

typedef struct series {
    char *labels;
    union {
        pf_counter counter;
        pf_gauge gauge;
        pf_histogram histogram;
    } u;
    struct family *family;
    size_t refs; /* registrations not yet released (under the registry's lock) */
    struct series *prev, *next;
    struct series *hnext; /* the index bucket's chain */
} series;

typedef struct family {
    char *name;
    char *help;
    metric_kind kind;
    pf_gauge_fn fn;
    pf_histogram_fn histogram_fn;
    void *fn_arg;
    series *first, *last;
    struct family *next;
} family;

struct pf_metrics {
    pthread_mutex_t lock; /* guards registration; rendering reads atomics */
    family *first, *last;
    /* Series by family and labels: registering a cluster's few dozen series must not scan
     * every other cluster's (thousands of clusters come and go with reloads and
     * discovery). Power-of-two buckets, grown to keep chains short. */
    series **index;
    size_t index_size, series_count;
};

static size_t series_hash(const family *f, const char *labels) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)f;
    for (const unsigned char *p = (const unsigned char *)labels; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h ^ (h >> 32));
}

/* Doubles the index (or makes the first one); a failure keeps the old, longer chains. */
static void index_grow(pf_metrics *m) {
    size_t size = m->index_size ? m->index_size * 2 : 256;
    series **index = calloc(size, sizeof *index);
    if (!index)
        return;
    for (size_t i = 0; i < m->index_size; i++)
        for (series *s = m->index[i], *next; s; s = next) {
            next = s->hnext;
            size_t b = series_hash(s->family, s->labels) & (size - 1);
            s->hnext = index[b];
            index[b] = s;
        }
    free(m->index);
    m->index = index;
    m->index_size = size;
}

static void index_remove(pf_metrics *m, series *s) {
    series **p = &m->index[series_hash(s->family, s->labels) & (m->index_size - 1)];
    while (*p && *p != s)
        p = &(*p)->hnext;
    if (*p)
        *p = s->hnext;
    m->series_count--;
}

pf_metrics *metrics_new(void) {
    pf_metrics *m = calloc(1, sizeof *m);
    if (m)
        pthread_mutex_init(&m->lock, NULL);
    return m;
}

void metrics_free(pf_metrics *m) {
    if (!m)
        return;
    for (family *f = m->first, *fn; f; f = fn) {
        fn = f->next;
        for (series *s = f->first, *sn; s; s = sn) {
            sn = s->next;
            free(s->labels);
            free(s);
        }
        free(f->name);
        free(f->help);
        free(f);
    }
    pthread_mutex_destroy(&m->lock);
    free(m->index);
    free(m);
}

static family *find_family(pf_metrics *m, const char *name, const char *help, metric_kind kind) {
    for (family *f = m->first; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f->kind == kind ? f : NULL;
    family *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->name = strdup(name);
    f->help = strdup(help);
    f->kind = kind;
    if (!f->name || !f->help) {
        free(f->name);
        free(f->help);
        free(f);
        return NULL;
    }
    if (m->last)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    return f;
}

static series *find_series(pf_metrics *m, const char *name, const char *help, metric_kind kind,
                           const char *labels) {
    pthread_mutex_lock(&m->lock);
    series *s = NULL;
    family *f = find_family(m, name, help, kind);
    if (!f)
        goto out;
    if (m->series_count >= m->index_size)
        index_grow(m);
    size_t bucket = m->index_size ? series_hash(f, labels) & (m->index_size - 1) : 0;
    for (s = m->index_size ? m->index[bucket] : NULL; s; s = s->hnext) {
        if (s->family == f && strcmp(s->labels, labels) == 0) {
            s->refs++;
            goto out;
        }
    }
    if (!m->index_size)
        goto out; /* out of memory for the index */
    s = calloc(1, sizeof *s);
    if (!s)
        goto out;
    s->labels = strdup(labels);
    if (!s->labels) {
        free(s);
        s = NULL;
        goto out;
    }
    s->family = f;
    s->refs = 1;
    s->hnext = m->index[bucket];
    m->index[bucket] = s;
    m->series_count++;
    s->prev = f->last;
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
out:
    pthread_mutex_unlock(&m->lock);
    return s;
}

pf_counter *metrics_counter(pf_metrics *m, const char *name, const char *help, const char *labels) {
    series *s = find_series(m, name, help, KIND_COUNTER, labels);
    return s ? &s->u.counter : NULL;
}

pf_gauge *metrics_gauge(pf_metrics *m, const char *name, const char *help, const char *labels) {
    series *s = find_series(m, name, help, KIND_GAUGE, labels);
    return s ? &s->u.gauge : NULL;
}

pf_histogram *metrics_histogram(pf_metrics *m, const char *name, const char *help,
                                const char *labels) {
    series *s = find_series(m, name, help, KIND_HISTOGRAM, labels);
    return s ? &s->u.histogram : NULL;
}

void metrics_release(pf_metrics *m, const void *metric) {
    if (!m || !metric)
        return;
    /* Every handle is the union inside its series: step back to the series. */
    series *s = (series *)(void *)((char *)metric - offsetof(series, u));
    pthread_mutex_lock(&m->lock);
    if (--s->refs == 0) {
        family *f = s->family;
        index_remove(m, s);
        if (s->prev)
            s->prev->next = s->next;
        else
            f->first = s->next;
        if (s->next)
            s->next->prev = s->prev;
        else
            f->last = s->prev;
        free(s->labels);
        free(s);
    }
    pthread_mutex_unlock(&m->lock);
}

/* A family computed at scrape time: fn for values, histogram_fn for histograms. */
static int add_callback(pf_metrics *m, const char *name, const char *help, metric_kind kind,
                        pf_gauge_fn fn, pf_histogram_fn histogram_fn, void *arg) {
    pthread_mutex_lock(&m->lock);
    family *f = find_family(m, name, help, kind);
    if (f) {
        f->fn = fn;
        f->histogram_fn = histogram_fn;
        f->fn_arg = arg;
    }
    pthread_mutex_unlock(&m->lock);
    return f ? 0 : -2;
}

int metrics_gauge_callback(pf_metrics *m, const char *name, const char *help, pf_gauge_fn fn,
                           void *arg) {
    return add_callback(m, name, help, KIND_GAUGE_FN, fn, NULL, arg);
}

int metrics_counter_callback(pf_metrics *m, const char *name, const char *help, pf_gauge_fn fn,
                             void *arg) {
    return add_callback(m, name, help, KIND_COUNTER_FN, fn, NULL, arg);
}

int metrics_histogram_callback(pf_metrics *m, const char *name, const char *help,
                               pf_histogram_fn fn, void *arg) {
    return add_callback(m, name, help, KIND_HISTOGRAM_FN, NULL, fn, arg);
}

void metrics_observe_us(pf_histogram *h, uint64_t us) {
    double seconds = (double)us / 1e6;
    size_t i = 0;
    while (i < PF_HISTOGRAM_BUCKETS && seconds > pf_histogram_bounds[i])
        i++;
    if (i < PF_HISTOGRAM_BUCKETS)
        atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

double metrics_histogram_quantile(const pf_histogram *h, double q) {
    uint64_t counts[PF_HISTOGRAM_BUCKETS], total = 0;
    for (size_t i = 0; i < PF_HISTOGRAM_BUCKETS; i++) {
        counts[i] = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        total += counts[i];
    }
    /* The +Inf bucket holds what the bounded buckets do not; count may run ahead of the
     * buckets for an instant (relaxed updates), never behind in a way that matters. */
    uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
    if (count < total)
        count = total;
    if (count == 0)
        return -1;
    double rank = q * (double)count, below = 0, lower = 0;
    for (size_t i = 0; i < PF_HISTOGRAM_BUCKETS; i++) {
        double in = (double)counts[i];
        if (in > 0 && below + in >= rank)
            return lower + (pf_histogram_bounds[i] - lower) * ((rank - below) / in);
        below += in;
        lower = pf_histogram_bounds[i];
    }
    return INFINITY;
}

/* A growable text buffer for rendering. */
typedef struct text {
    char *data;
    size_t len, cap;
    bool failed;
} text;

static void text_printf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(text *t, const char *fmt, ...) {
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->data + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap + (size_t)n + 1) * 2;
        char *data = realloc(t->data, cap);
        if (!data) {
            t->failed = true;
            return;
        }
        t->data = data;
        t->cap = cap;
    }
}

static void braces(text *t, const char *name, const char *suffix, const char *labels,
                   const char *extra) {
    bool has_labels = labels && *labels, has_extra = extra && *extra;
    text_printf(t, "%s%s", name, suffix);
    if (has_labels || has_extra)
        text_printf(t, "{%s%s%s}", has_labels ? labels : "", has_labels && has_extra ? "," : "",
                    has_extra ? extra : "");
}

typedef struct emit_ctx {
    text *t;
    const char *name;
} emit_ctx;

static void emit_value(void *ctx, const char *labels, double value) {
    emit_ctx *e = ctx;
    braces(e->t, e->name, "", labels, NULL);
    text_printf(e->t, " %.17g\n", value);
}

static void render_histogram(text *t, const char *name, const char *labels, const pf_histogram *h) {
    uint64_t cumulative = 0;
    char le[48];
    for (size_t i = 0; i < PF_HISTOGRAM_BUCKETS; i++) {
        cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        snprintf(le, sizeof le, "le=\"%g\"", pf_histogram_bounds[i]);
        braces(t, name, "_bucket", labels, le);
        text_printf(t, " %llu\n", (unsigned long long)cumulative);
    }
    uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
    if (count < cumulative)
        count = cumulative;
    braces(t, name, "_bucket", labels, "le=\"+Inf\"");
    text_printf(t, " %llu\n", (unsigned long long)count);
    braces(t, name, "_sum", labels, NULL);
    text_printf(t, " %.6f\n", (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
    braces(t, name, "_count", labels, NULL);
    text_printf(t, " %llu\n", (unsigned long long)count);
}

static void emit_histogram(void *ctx, const char *labels, const pf_histogram *h) {
    emit_ctx *e = ctx;
    render_histogram(e->t, e->name, labels, h);
}

char *metrics_render(pf_metrics *m) {
    static const char *const type_names[] = {"counter", "gauge",   "histogram",
                                             "gauge",   "counter", "histogram"};
    text t = {0};
    pthread_mutex_lock(&m->lock);
    for (const family *f = m->first; f; f = f->next) {
        text_printf(&t, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                    type_names[f->kind]);
        if (f->kind == KIND_GAUGE_FN || f->kind == KIND_COUNTER_FN) {
            emit_ctx e = {&t, f->name};
            f->fn(f->fn_arg, emit_value, &e);
            continue;
        }
        if (f->kind == KIND_HISTOGRAM_FN) {
            emit_ctx e = {&t, f->name};
            f->histogram_fn(f->fn_arg, emit_histogram, &e);
            continue;
        }
        for (const series *s = f->first; s; s = s->next) {
            if (f->kind == KIND_HISTOGRAM) {
                render_histogram(&t, f->name, s->labels, &s->u.histogram);
                continue;
            }
            braces(&t, f->name, "", s->labels, NULL);
            if (f->kind == KIND_COUNTER)
                text_printf(&t, " %llu\n",
                            (unsigned long long)atomic_load_explicit(&s->u.counter.value,
                                                                     memory_order_relaxed));
            else
                text_printf(
                    &t, " %lld\n",
                    (long long)atomic_load_explicit(&s->u.gauge.value, memory_order_relaxed));
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (t.failed) {
        free(t.data);
        return NULL;
    }
    if (!t.data)
        return strdup("");
    return t.data;
}
