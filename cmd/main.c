/* pilotfish: main(). Parses flags, loads the config, wires discovery sources into the
 * proxy's endpoint slots, starts the workers and the admin server, and turns SIGTERM and
 * SIGINT into a graceful drain. The only place that knows every module. */
#include "admin/admin.h"
#include "cmd/app.h"
#include "cmd/autodiscover.h"
#include "cmd/httproutes.h"
#include "config/config.h"
#include "core/ev_alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"
#include "discovery/dns.h"
#include "discovery/kubernetes.h"
#include "discovery/static_source.h"
#include "health/health.h"
#include "proxy/proxy.h"

#include <event2/event.h>
#include <getopt.h>
#include <malloc.h>
#include <jansson.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PF_MALLOC_TRIM_BYTES (1024 * 1024)

#define PILOTFISH_VERSION "0.1.0"
#define DRAIN_POLL_MS 50

static void usage(FILE *out) {
    fprintf(out,
            "usage: pilotfish --config FILE [--workers N] [--log-level LEVEL]\n"
            "       pilotfish --listen ADDR --upstream UPSTREAM [--resolver IP:PORT]... "
            "[--admin ADDR]\n"
            "       pilotfish --check-config FILE\n"
            "\n"
            "  -c, --config FILE        run with this JSON config\n"
            "      --check-config FILE  validate FILE, print every problem, exit 0 (valid) or 1\n"
            "      --print-config       print the effective config as JSON and exit\n"
            "      --watch-config       reload when the config file changes (as on SIGHUP)\n"
            "  -w, --workers N          event-loop threads (1-%u; default: config, else %u)\n"
            "  -l, --log-level LEVEL    error, warn, info (default) or debug\n"
            "  -v, --version            print the version\n"
            "  -h, --help               this text\n"
            "\n"
            "Kubernetes (--k8s-* override $.kubernetes; in a pod the service account is the "
            "default):\n"
            "      --kubeconfig FILE     API server, CA, token or client certificate from the\n"
            "                            current context (default: $KUBECONFIG when no API\n"
            "                            server is configured)\n"
            "      --k8s-api-server URL  https://host:port of the API server\n"
            "      --k8s-token-file FILE bearer token, re-read before each request\n"
            "      --k8s-ca-file FILE    CA bundle the API server's certificate is checked "
            "against\n"
            "      --k8s-namespace NS    namespace of clusters that name none\n"
            "\n"
            "Standalone mode (no config file: one listener, every request to one cluster):\n"
            "      --listen ADDR        accept on ADDR, e.g. 127.0.0.1:15001\n"
            "      --upstream UPSTREAM  dns:NAME:PORT  the A records of NAME, each with PORT\n"
            "                           srv:NAME       SRV records, e.g. srv:_http._tcp.backend\n"
            "                           static:IP:PORT[,IP:PORT...]\n"
            "      --resolver IP:PORT   DNS server; repeat it or give a comma list\n"
            "                           (default: the servers of /etc/resolv.conf)\n"
            "      --admin ADDR         admin server address (default %s)\n"
            "\n"
            "The admin address serves a status page at / (open it in a browser), and\n"
            "/ready, /healthz, /clusters, /config and /stats/prometheus.\n"
            "Logs go to stderr; the access log (JSON lines, or access_log.format text) to\n"
            "stdout or access_log.path. Neither blocks: lines a full pipe does not take are\n"
            "dropped and counted. SIGUSR1 reopens access_log.path (after log rotation).\n"
            "SIGTERM or SIGINT drains: stop accepting, finish requests in flight, exit 0.\n"
            "SIGHUP reloads the config file; with --watch-config a change of the file (or of\n"
            "the symlink a Kubernetes ConfigMap swaps) does too. An invalid file, or one that\n"
            "changes what needs a restart (workers, admin, dns, kubernetes, ...), is refused\n"
            "and the running config stays.\n",
            PF_MAX_WORKERS, PF_DEFAULT_WORKERS, PF_DEFAULT_ADMIN_ADDRESS);
}

/* Standalone mode's flags. */
typedef struct standalone {
    const char *listen, *upstream, *admin;
    char resolvers[512]; /* comma list: --resolver may be repeated or hold a list */
    bool used;           /* any of these flags was given */
} standalone;

/* "a,b,c" as a JSON array of strings. */
static json_t *split_commas(const char *list) {
    json_t *arr = json_array();
    for (const char *p = list; arr;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        json_array_append_new(arr, json_stringn(p, n));
        if (!comma)
            break;
        p = comma + 1;
    }
    return arr;
}

/* "dns:NAME:PORT", "srv:NAME" or "static:A,B" as the cluster's JSON. Returns NULL with a
 * message on stderr when the form is wrong; the config loader checks the values. */
static json_t *standalone_cluster(const char *spec) {
    json_t *c = json_pack("{s:s}", "name", "upstream");
    if (!c)
        return NULL;
    if (strncmp(spec, "dns:", 4) == 0) {
        const char *name = spec + 4, *colon = strrchr(name, ':');
        char *end = NULL;
        unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
        if (!colon || colon == name || !colon[1] || *end || port < 1 || port > 65535) {
            fprintf(stderr,
                    "pilotfish: --upstream \"%s\": dns: takes a name and a port 1-65535, e.g. "
                    "dns:backend.internal:8080\n",
                    spec);
            json_decref(c);
            return NULL;
        }
        json_object_set_new(c, "dns",
                            json_pack("{s:s%,s:I}", "name", name, (size_t)(colon - name), "port",
                                      (json_int_t)port));
    } else if (strncmp(spec, "srv:", 4) == 0 && spec[4]) {
        json_object_set_new(c, "dns", json_pack("{s:s,s:s}", "name", spec + 4, "record", "SRV"));
    } else if (strncmp(spec, "static:", 7) == 0 && spec[7]) {
        json_object_set_new(c, "endpoints", split_commas(spec + 7));
    } else {
        fprintf(stderr,
                "pilotfish: --upstream \"%s\": expected dns:NAME:PORT, srv:NAME or "
                "static:IP:PORT[,IP:PORT...]\n",
                spec);
        json_decref(c);
        return NULL;
    }
    return c;
}

/* Standalone mode writes the JSON a user would have written and loads it like a file, so
 * every check and message of config/ applies: in a message, "$.clusters[0]" is --upstream,
 * "$.listeners[0]" --listen, "$.admin" --admin and "$.dns" --resolver. Takes `cluster`. */
static int standalone_config(const standalone *s, json_t *cluster, pf_config **out) {
    json_t *root = json_pack("{s:[{s:s,s:s,s:[{s:{s:s},s:s}]}],s:[o]}", "listeners", "name", "main",
                             "address", s->listen, "routes", "match", "prefix", "/", "cluster",
                             "upstream", "clusters", cluster);
    /* without --admin the schema's default address applies, as for a file without "admin" */
    if (root && s->admin)
        json_object_set_new(root, "admin", json_pack("{s:s}", "address", s->admin));
    if (root && s->resolvers[0])
        json_object_set_new(root, "dns",
                            json_pack("{s:o}", "resolvers", split_commas(s->resolvers)));
    char *text = root ? json_dumps(root, JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text) {
        fprintf(stderr, "pilotfish: out of memory\n");
        return PF_ENOMEM;
    }
    pf_errlist errs = {0};
    int rc = config_load_string(text, "command line", out, &errs);
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "%s\n", errs.items[i]);
    pf_errlist_free(&errs);
    free(text);
    return rc;
}

static int print_config(const pf_config *cfg) {
    char *text = config_dump_json(cfg);
    if (!text) {
        fprintf(stderr, "pilotfish: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

/* Every client, upstream and health-check connection is a descriptor; the usual soft
 * limit of 1024 is far below what a proxy needs, and the hard limit is ours to take. */
static void raise_fd_limit(void) {
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
            log_warn("cannot raise the open file limit: %s", strerror(errno));
    }
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

/* SIGUSR1: log rotation renamed the access log's file; open a new one by its name. */
static void on_sigusr1(evutil_socket_t sig, short what, void *arg) {
    app *a = arg;
    pf_error err;
    const char *path = proxy_access_log_path(a->proxy);
    if (!path)
        log_info("SIGUSR1: the access log has no file (access_log.path) to reopen; ignored");
    else if (proxy_access_log_reopen(a->proxy, &err) != PF_OK)
        log_error("SIGUSR1: %s; lines keep going to the old file", err.msg);
    else
        log_info("access log reopened path=%s", path);
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

/* Health sits between discovery and the proxy in every cluster, configured or not: sources
 * publish into the cluster's discovered slot, and its pf_health publishes the effective set
 * (discovery's verdicts combined with checks and ejections) into the proxy's slot. */
static int start_health(app *a, pf_error *err) {
    /* By the proxy's cluster index, which reloads add to. */
    a->discovered = calloc(PF_MAX_CLUSTERS, sizeof *a->discovered);
    a->health = calloc(PF_MAX_CLUSTERS, sizeof *a->health);
    if (!a->discovered || !a->health)
        return pf_fail(err, PF_ENOMEM, "out of memory");
    for (size_t i = 0; i < a->cfg->cluster_count; i++)
        if (app_cluster_start(a, i, err) != PF_OK)
            return PF_ENOMEM;
    return PF_OK;
}

int app_cluster_start(app *a, size_t i, pf_error *err) {
    /* The proxy's copy: it lives as long as the cluster, whatever reloads do. */
    const pf_config_cluster *c = proxy_cluster_config(a->proxy, i);
    if (!(a->discovered[i] = discovery_slot_new(c->name)))
        return pf_fail(err, PF_ENOMEM, "out of memory");
    a->health[i] =
        health_new(a->base, c, a->discovered[i], proxy_cluster_slot(a->proxy, i), a->metrics, err);
    if (!a->health[i])
        return PF_ENOMEM;
    proxy_cluster_set_health(a->proxy, i, a->health[i]);
    if (health_start(a->health[i]) != PF_OK)
        return pf_fail(err, PF_ENOMEM, "health: cannot start cluster %s", c->name);
    return PF_OK;
}

/* After the workers are gone (they report into health) and before the event base. */
static void stop_health(app *a) {
    for (size_t i = 0; a->health && i < PF_MAX_CLUSTERS; i++)
        health_free(a->health[i]);
    for (size_t i = 0; a->discovered && i < PF_MAX_CLUSTERS; i++)
        discovery_slot_free(a->discovered[i]);
    free(a->health);
    free(a->discovered);
}

/* DNS clusters publish their first set once their name answers (discovery/dns.h). */
static int start_dns(app *a, pf_error *err) {
    for (size_t i = 0; i < a->cfg->cluster_count; i++) {
        const pf_config_cluster *c = &a->cfg->clusters[i];
        if (!c->dns.name[0])
            continue;
        if (!a->dns && !(a->dns = discovery_dns_new(a->base, a->cfg, a->metrics, err)))
            return PF_EIO;
        int rc =
            discovery_dns_add(a->dns, proxy_cluster_config(a->proxy, i), a->discovered[i], err);
        if (rc != PF_OK)
            return rc;
    }
    return a->dns ? discovery_dns_start(a->dns, err) : PF_OK;
}

static int publish_static_sets(app *a) {
    for (size_t i = 0; i < a->cfg->cluster_count; i++) {
        if (a->cfg->clusters[i].dns.name[0] || a->cfg->clusters[i].kubernetes.service[0])
            continue;
        int rc = discovery_static_publish(&a->cfg->clusters[i], a->discovered[i]);
        if (rc != PF_OK)
            return rc;
    }
    return PF_OK;
}

/* Kubernetes clusters publish their first set once their Service and EndpointSlices are
 * listed (discovery/kubernetes.h); auto-discovery adds clusters as Services appear. */
static int start_kubernetes(app *a, pf_error *err) {
    const pf_config *cfg = a->cfg;
    bool used = cfg->kubernetes.auto_discover; /* "kubernetes" alone asks for nothing */
    for (size_t i = 0; i < cfg->cluster_count && !used; i++)
        used = cfg->clusters[i].kubernetes.service[0] != '\0';
    if (!used)
        return PF_OK;
    if (!(a->k8s = discovery_k8s_new(a->base, cfg, &a->k8s_opts, a->metrics, err)))
        return PF_EINVAL;
    for (size_t i = 0; i < cfg->cluster_count; i++) {
        if (!cfg->clusters[i].kubernetes.service[0])
            continue;
        int rc =
            discovery_k8s_add(a->k8s, proxy_cluster_config(a->proxy, i), a->discovered[i], err);
        if (rc != PF_OK)
            return rc;
    }
    if (cfg->kubernetes.auto_discover &&
        !(a->autodiscover =
              autodiscover_new(a->base, a->proxy, a->k8s, a->metrics, &cfg->kubernetes, err)))
        return PF_EINVAL;
    if (autodiscover_httproutes(a->autodiscover) &&
        httproutes_use_configured(autodiscover_httproutes(a->autodiscover), a->proxy, cfg, err))
        return PF_ENOMEM;
    if (a->autodiscover)
        autodiscover_set_tls_watch(a->autodiscover, a->tls_watch);
    return discovery_k8s_start(a->k8s, err);
}

static int run(app *a, unsigned workers) {
    pf_error err = {{0}};
    a->metrics = metrics_new();
    a->base = event_base_new();
    if (!a->metrics || !a->base) {
        log_error("out of memory");
        return 1;
    }
    /* From here on no log line waits for stderr's reader: the workers must not. */
    pf_log_init_output(metrics_counter(a->metrics, "pilotfish_log_dropped_total",
                                       "Log lines dropped because stderr took nothing more "
                                       "(nobody reading it).",
                                       ""));
    pf_gauge *build = metrics_gauge(a->metrics, "pilotfish_build_info",
                                    "Always 1; the labels say which pilotfish this is.",
                                    "version=\"" PILOTFISH_VERSION "\"");
    if (!build || metrics_register_process(a->metrics) != PF_OK) {
        log_error("out of memory");
        return 1;
    }
    metrics_gauge_add(build, 1);
    a->proxy = proxy_new(a->cfg, workers, a->metrics, &err);
    if (!a->proxy) {
        log_error("%s", err.msg);
        return 1;
    }
    if (!(a->tls_watch = tls_watch_new(a->base, a->proxy, a->metrics, &err)) ||
        start_health(a, &err) != PF_OK) {
        log_error("%s", err.msg);
        return 1;
    }
    if (publish_static_sets(a) != PF_OK) {
        log_error("out of memory publishing endpoint sets");
        return 1;
    }
    a->admin = admin_new(a->base, a->cfg, a->proxy, a->metrics, &err);
    if (a->admin) {
        admin_set_health(a->admin, a->health, PF_MAX_CLUSTERS);
        admin_set_version(a->admin, PILOTFISH_VERSION);
    }
    if (!a->admin || start_dns(a, &err) != PF_OK || start_kubernetes(a, &err) != PF_OK ||
        proxy_start(a->proxy, &err) != PF_OK) {
        log_error("%s", err.msg);
        return 1;
    }
    admin_set_dns(a->admin, a->dns);
    admin_set_kubernetes(a->admin, a->k8s);
    if (autodiscover_httproutes(a->autodiscover))
        admin_set_http_routes(a->admin, httproutes_report,
                              autodiscover_httproutes(a->autodiscover));
    a->sigterm = evsignal_new(a->base, SIGTERM, on_signal, a);
    a->sigint = evsignal_new(a->base, SIGINT, on_signal, a);
    a->sighup = evsignal_new(a->base, SIGHUP, app_on_sighup, a);
    a->sigusr1 = evsignal_new(a->base, SIGUSR1, on_sigusr1, a);
    a->drain_timer = event_new(a->base, -1, EV_PERSIST, on_drain_tick, a);
    if (!a->sigterm || !a->sigint || !a->sighup || !a->sigusr1 || !a->drain_timer ||
        event_add(a->sigterm, NULL) || event_add(a->sigint, NULL) || event_add(a->sighup, NULL) ||
        event_add(a->sigusr1, NULL)) {
        log_error("cannot install signal handlers");
        return 1;
    }
    if (app_reload_init(a, &err) != PF_OK) {
        log_error("%s", err.msg);
        return 1;
    }
    for (size_t i = 0; i < a->cfg->listener_count; i++)
        log_info("listening listener=%s address=%s", a->cfg->listeners[i].name,
                 a->cfg->listeners[i].addr.text);
    log_info("pilotfish started version=%s workers=%u admin=%s clusters=%zu max_connections=%u",
             PILOTFISH_VERSION, workers, a->cfg->admin_addr.text, a->cfg->cluster_count,
             proxy_max_connections(a->proxy));
    event_base_dispatch(a->base);
    log_info("pilotfish stopped");
    return 0;
}

static void app_free(app *a) {
    if (a->sigterm)
        event_free(a->sigterm);
    if (a->sigint)
        event_free(a->sigint);
    if (a->sighup)
        event_free(a->sighup);
    if (a->sigusr1)
        event_free(a->sigusr1);
    app_reload_free(a);
    if (a->drain_timer)
        event_free(a->drain_timer);
    discovery_dns_free(a->dns); /* publishes into the discovered slots: goes first */
    discovery_k8s_free(a->k8s); /* the same */
    proxy_free(a->proxy);
    autodiscover_free(a->autodiscover); /* health the workers reported into */
    admin_free(a->admin);
    tls_watch_free(a->tls_watch); /* after the admin server: a scrape reads it */
    stop_health(a);
    if (a->base)
        event_base_free(a->base);
    pf_log_close_output(); /* it counts into a->metrics */
    metrics_free(a->metrics);
    if (a->cfg != a->boot_cfg)
        config_free(a->cfg);
    config_free(a->boot_cfg);
}

int main(int argc, char **argv) {
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, 'C'},
        {"workers", required_argument, NULL, 'w'},
        {"log-level", required_argument, NULL, 'l'},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"listen", required_argument, NULL, 'L'},
        {"upstream", required_argument, NULL, 'U'},
        {"resolver", required_argument, NULL, 'R'},
        {"admin", required_argument, NULL, 'A'},
        {"print-config", no_argument, NULL, 'P'},
        {"watch-config", no_argument, NULL, 1006},
        {"k8s-api-server", required_argument, NULL, 1001},
        {"k8s-token-file", required_argument, NULL, 1002},
        {"k8s-ca-file", required_argument, NULL, 1003},
        {"k8s-namespace", required_argument, NULL, 1004},
        {"kubeconfig", required_argument, NULL, 1005},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *check_path = NULL;
    standalone sa = {0};
    pf_k8s_options k8s_opts = {0};
    bool print_only = false, watch = false;
    unsigned workers = 0;
    int opt;
    /* Relays (tcp listeners, tunnels) free and allocate 64 KiB buffers all the time; with
     * malloc's default trim threshold (128 KiB) the freed top of a heap went back to the
     * kernel and every next read page-faulted it in again (about 15% of a relay's CPU). At
     * most this much free heap is kept per arena instead. */
    mallopt(M_TRIM_THRESHOLD, PF_MALLOC_TRIM_BYTES);
    pf_ev_alloc_install(); /* before any other libevent call */
    while ((opt = getopt_long(argc, argv, "c:w:l:vh", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'C':
            check_path = optarg;
            break;
        case 'L':
            sa.listen = optarg;
            sa.used = true;
            break;
        case 'U':
            sa.upstream = optarg;
            sa.used = true;
            break;
        case 'A':
            sa.admin = optarg;
            sa.used = true;
            break;
        case 'R': {
            size_t len = strlen(sa.resolvers);
            int n = snprintf(sa.resolvers + len, sizeof sa.resolvers - len, "%s%s", len ? "," : "",
                             optarg);
            if (n < 0 || (size_t)n >= sizeof sa.resolvers - len) {
                fprintf(stderr, "pilotfish: --resolver: too many servers\n");
                return 2;
            }
            sa.used = true;
            break;
        }
        case 1001:
            k8s_opts.api_server = optarg;
            break;
        case 1002:
            k8s_opts.token_file = optarg;
            break;
        case 1003:
            k8s_opts.ca_file = optarg;
            break;
        case 1004:
            k8s_opts.namespace = optarg;
            break;
        case 1005:
            k8s_opts.kubeconfig = optarg;
            break;
        case 'P':
            print_only = true;
            break;
        case 1006:
            watch = true;
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
    if (watch && !config_path) {
        fprintf(stderr, "pilotfish: --watch-config needs --config FILE\n");
        return 2;
    }
    if (config_path && sa.used) {
        fprintf(stderr, "pilotfish: --config and the standalone flags (--listen, --upstream, "
                        "--resolver, --admin) exclude each other; put everything in the file\n");
        return 2;
    }
    if (sa.used && (!sa.listen || !sa.upstream)) {
        fprintf(stderr, "pilotfish: standalone mode needs --listen ADDR and --upstream UPSTREAM, "
                        "e.g. --listen 127.0.0.1:15001 --upstream dns:backend.internal:8080\n");
        return 2;
    }
    if (!config_path && !sa.used) {
        fprintf(stderr, "pilotfish: --config FILE (or --listen and --upstream) is required\n");
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);  /* until run() logs it (app_on_sighup): never the default exit */
    signal(SIGUSR1, SIG_IGN); /* the same: until run() reopens the access log on it */
    raise_fd_limit();
    app a = {0};
    a.k8s_opts = k8s_opts;
    a.config_path = config_path;
    a.watch = watch;
    json_t *upstream = sa.used ? standalone_cluster(sa.upstream) : NULL;
    if (sa.used && !upstream)
        return 2;
    int loaded =
        sa.used ? standalone_config(&sa, upstream, &a.cfg) : load_config(config_path, &a.cfg);
    if (loaded != PF_OK)
        return 1;
    if (print_only) {
        int status = print_config(a.cfg);
        config_free(a.cfg);
        return status;
    }
    a.boot_cfg = a.cfg;
    if (!workers)
        workers = a.cfg->workers ? a.cfg->workers : PF_DEFAULT_WORKERS;
    int rc = run(&a, workers);
    app_free(&a);
    return rc;
}
