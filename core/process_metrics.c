/* The standard process metrics (CPU time, memory, file descriptors, start time) under the
 * names every Prometheus client library uses, so that stock dashboards and alerts work.
 * Each value is read from /proc or the kernel at scrape time; nothing is sampled between. */
#include "core/error.h"
#include "core/metrics.h"

#include <dirent.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

static double timeval_seconds(struct timeval tv) {
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void emit_cpu(void *arg, pf_metric_emit emit, void *ctx) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        emit(ctx, "", timeval_seconds(ru.ru_utime) + timeval_seconds(ru.ru_stime));
}

/* /proc/self/statm: total program size and resident set, in pages. */
static int read_statm(unsigned long long *size, unsigned long long *resident) {
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f)
        return PF_EIO;
    int n = fscanf(f, "%llu %llu", size, resident);
    fclose(f);
    return n == 2 ? PF_OK : PF_EIO;
}

static void emit_memory(void *arg, pf_metric_emit emit, void *ctx) {
    unsigned long long size, resident;
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0 && read_statm(&size, &resident) == PF_OK)
        emit(ctx, "", (double)(arg ? size : resident) * (double)page);
}

static void emit_open_fds(void *arg, pf_metric_emit emit, void *ctx) {
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    emit(ctx, "", (double)(n ? n - 1 : 0)); /* not the descriptor of the listing itself */
}

static void emit_max_fds(void *arg, pf_metric_emit emit, void *ctx) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        emit(ctx, "", (double)rl.rlim_cur);
}

/* Field 22 of /proc/self/stat (clock ticks after boot) plus btime from /proc/stat. The
 * command name (field 2) may hold spaces and parentheses, so fields are counted after the
 * last ')'. Returns 0 when /proc cannot tell. */
static double start_time_from_proc(void) {
    char buf[1024];
    unsigned long long ticks = 0, btime = 0;
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    /* After ")" come fields 3, 4, ...: skip 19 of them to reach field 22. */
    for (int field = 3; p && field <= 22; field++) {
        p = strchr(p + 1, ' ');
        if (p && field == 22)
            ticks = strtoull(p + 1, NULL, 10);
    }
    f = fopen("/proc/stat", "re");
    if (!f)
        return 0;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %llu", &btime) == 1)
            break;
    fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    if (!p || !btime || hz <= 0)
        return 0;
    return (double)btime + (double)ticks / (double)hz;
}

static pthread_once_t start_once = PTHREAD_ONCE_INIT;
static double start_time;

static void find_start_time(void) {
    start_time = start_time_from_proc();
    if (start_time == 0) {
        struct timeval now;
        gettimeofday(&now, NULL);
        start_time = timeval_seconds(now);
    }
}

double metrics_process_start_time(void) {
    pthread_once(&start_once, find_start_time);
    return start_time;
}

/* Under AddressSanitizer malloc is its allocator, which counts what it handed out; glibc's
 * mallinfo2 would see nothing there. Weak: NULL in a build without the sanitizer. */
extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

/* Bytes allocated and not yet freed: what RSS would be without the allocator's caches,
 * arenas and (under ASan) quarantine, so that growth shows apart from their noise. */
static void emit_heap(void *arg, pf_metric_emit emit, void *ctx) {
    if (__sanitizer_get_current_allocated_bytes) {
        emit(ctx, "", (double)__sanitizer_get_current_allocated_bytes());
        return;
    }
    struct mallinfo2 mi = mallinfo2();
    emit(ctx, "", (double)(mi.uordblks + mi.hblkhd));
}

static void emit_start_time(void *arg, pf_metric_emit emit, void *ctx) {
    emit(ctx, "", metrics_process_start_time());
}

int metrics_register_process(pf_metrics *m) {
    static int virtual_arg; /* a non-NULL argument selects the virtual size */
    metrics_process_start_time();
    if (metrics_counter_callback(m, "process_cpu_seconds_total",
                                 "Total user and system CPU time spent in seconds.", emit_cpu,
                                 NULL) ||
        metrics_gauge_callback(m, "process_resident_memory_bytes", "Resident memory size in bytes.",
                               emit_memory, NULL) ||
        metrics_gauge_callback(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                               emit_memory, &virtual_arg) ||
        metrics_gauge_callback(m, "pilotfish_process_heap_bytes",
                               "Heap bytes allocated and not yet freed (the allocator's own "
                               "count, without its caches).",
                               emit_heap, NULL) ||
        metrics_gauge_callback(m, "process_open_fds", "Number of open file descriptors.",
                               emit_open_fds, NULL) ||
        metrics_gauge_callback(m, "process_max_fds", "Maximum number of open file descriptors.",
                               emit_max_fds, NULL) ||
        metrics_gauge_callback(m, "process_start_time_seconds",
                               "Start time of the process since unix epoch in seconds.",
                               emit_start_time, NULL))
        return PF_ENOMEM;
    return PF_OK;
}
