/* pilotfish: main(). Parses flags, loads the config, wires discovery sources into the
 * proxy's endpoint slots, starts the workers and the admin server, and turns SIGTERM and
 * SIGINT into a graceful drain. The only place that knows every module. */
#include "admin/admin.h"
#include "config/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"
#include "discovery/static_source.h"
#include "proxy/proxy.h"

#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PILOTFISH_VERSION "0.1.0"
#define DRAIN_POLL_MS 50

typedef struct app {
    struct event_base *base;
    pf_config *cfg;
    pf_metrics *metrics;
    pf_proxy *proxy;
    pf_admin *admin;
    struct event *sigterm, *sigint, *drain_timer;
    uint64_t drain_deadline_ms;
    int signals_seen;
} app;

static void usage(FILE *out) {
    fprintf(out,
            "usage: pilotfish --config FILE [--workers N] [--log-level LEVEL]\n"
            "       pilotfish --check-config FILE\n"
            "\n"
            "  -c, --config FILE        run with this JSON config\n"
            "      --check-config FILE  validate FILE, print every problem, exit 0 (valid) or 1\n"
            "  -w, --workers N          event-loop threads (1-%u; default: config, else %u)\n"
            "  -l, --log-level LEVEL    error, warn, info (default) or debug\n"
            "  -v, --version            print the version\n"
            "  -h, --help               this text\n"
            "\n"
            "Logs go to stderr; the access log (JSON lines) to stdout.\n"
            "SIGTERM or SIGINT drains: stop accepting, finish requests in flight, exit 0.\n",
            PF_MAX_WORKERS, PF_DEFAULT_WORKERS);
}

static int load_config(const char *path, pf_config **out) {
    pf_errlist errs = {0};
    int rc = config_load_file(path, out, &errs);
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "%s\n", errs.items[i]);
    if (rc != PF_OK && errs.count == 0)
        fprintf(stderr, "%s: cannot load config: %s\n", path, pf_strerror(rc));
    pf_errlist_free(&errs);
    return rc;
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg) {
    app *a = arg;
    long open = proxy_active_connections(a->proxy);
    if (open == 0) {
        log_info("drained: every connection closed");
        event_base_loopbreak(a->base);
    } else if (pf_now_ms() >= a->drain_deadline_ms) {
        log_warn("drain timeout: closing the remaining connections connections=%ld", open);
        event_base_loopbreak(a->base);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    app *a = arg;
    if (++a->signals_seen > 1) {
        log_warn("second signal: stopping now");
        event_base_loopbreak(a->base);
        return;
    }
    log_info("draining signal=%s timeout_ms=%llu", sig == SIGTERM ? "SIGTERM" : "SIGINT",
             (unsigned long long)a->cfg->drain_timeout_ms);
    proxy_drain(a->proxy);
    a->drain_deadline_ms = pf_now_ms() + a->cfg->drain_timeout_ms;
    struct timeval tick = pf_timeval_ms(DRAIN_POLL_MS);
    event_add(a->drain_timer, &tick);
}

static int publish_static_sets(app *a) {
    for (size_t i = 0; i < a->cfg->cluster_count; i++) {
        int rc = discovery_static_publish(&a->cfg->clusters[i], proxy_cluster_slot(a->proxy, i));
        if (rc != PF_OK)
            return rc;
    }
    return PF_OK;
}

static int run(app *a, unsigned workers) {
    pf_error err = {{0}};
    a->metrics = metrics_new();
    a->base = event_base_new();
    if (!a->metrics || !a->base) {
        log_error("out of memory");
        return 1;
    }
    a->proxy = proxy_new(a->cfg, workers, a->metrics, &err);
    if (!a->proxy) {
        log_error("%s", err.msg);
        return 1;
    }
    if (publish_static_sets(a) != PF_OK) {
        log_error("out of memory publishing endpoint sets");
        return 1;
    }
    a->admin = admin_new(a->base, a->cfg, a->proxy, a->metrics, &err);
    if (!a->admin || proxy_start(a->proxy, &err) != PF_OK) {
        log_error("%s", err.msg);
        return 1;
    }
    a->sigterm = evsignal_new(a->base, SIGTERM, on_signal, a);
    a->sigint = evsignal_new(a->base, SIGINT, on_signal, a);
    a->drain_timer = event_new(a->base, -1, EV_PERSIST, on_drain_tick, a);
    if (!a->sigterm || !a->sigint || !a->drain_timer || event_add(a->sigterm, NULL) ||
        event_add(a->sigint, NULL)) {
        log_error("cannot install signal handlers");
        return 1;
    }
    for (size_t i = 0; i < a->cfg->listener_count; i++)
        log_info("listening listener=%s address=%s", a->cfg->listeners[i].name,
                 a->cfg->listeners[i].addr.text);
    log_info("pilotfish started version=%s workers=%u admin=%s clusters=%zu", PILOTFISH_VERSION,
             workers, a->cfg->admin_addr.text, a->cfg->cluster_count);
    event_base_dispatch(a->base);
    log_info("pilotfish stopped");
    return 0;
}

static void app_free(app *a) {
    if (a->sigterm)
        event_free(a->sigterm);
    if (a->sigint)
        event_free(a->sigint);
    if (a->drain_timer)
        event_free(a->drain_timer);
    proxy_free(a->proxy);
    admin_free(a->admin);
    if (a->base)
        event_base_free(a->base);
    metrics_free(a->metrics);
    config_free(a->cfg);
}

int main(int argc, char **argv) {
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, 'C'},
        {"workers", required_argument, NULL, 'w'},
        {"log-level", required_argument, NULL, 'l'},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *check_path = NULL;
    unsigned workers = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:w:l:vh", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'C':
            check_path = optarg;
            break;
        case 'w': {
            char *end = NULL;
            unsigned long n = strtoul(optarg, &end, 10);
            if (!*optarg || *end || n < 1 || n > PF_MAX_WORKERS) {
                fprintf(stderr, "pilotfish: --workers takes a number from 1 to %u, not \"%s\"\n",
                        PF_MAX_WORKERS, optarg);
                return 2;
            }
            workers = (unsigned)n;
            break;
        }
        case 'l': {
            pf_log_level level;
            if (pf_log_level_parse(optarg, &level) != PF_OK) {
                fprintf(stderr,
                        "pilotfish: --log-level takes error, warn, info or debug, not \"%s\"\n",
                        optarg);
                return 2;
            }
            pf_log_set_level(level);
            break;
        }
        case 'v':
            printf("pilotfish %s\n", PILOTFISH_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pilotfish: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (check_path) {
        pf_config *cfg = NULL;
        int rc = load_config(check_path, &cfg);
        config_free(cfg);
        if (rc == PF_OK)
            printf("%s: ok\n", check_path);
        return rc == PF_OK ? 0 : 1;
    }
    if (!config_path) {
        fprintf(stderr, "pilotfish: --config FILE is required\n");
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    app a = {0};
    if (load_config(config_path, &a.cfg) != PF_OK)
        return 1;
    if (!workers)
        workers = a.cfg->workers ? a.cfg->workers : PF_DEFAULT_WORKERS;
    int rc = run(&a, workers);
    app_free(&a);
    return rc;
}
