/* Reloading the config file on SIGHUP or, with --watch-config, when it changes. The file is
 * loaded and validated whole first; then what differs from the running config (config_diff)
 * decides, per cluster, whether it stays, changes in place, is added, replaced or retired,
 * and anything that cannot change while pilotfish runs refuses the reload. Only then does
 * proxy/reload.c apply it: a refused reload changes nothing. */
#include "cmd/app.h"
#include "cmd/reload.h"
#include "core/log.h"
#include "core/time.h"
#include "discovery/static_source.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

/* Changes of the file's directory come in bursts (an editor's temp file and rename, the
 * ConfigMap's ..data swap): one reload once it is quiet this long. */
#define WATCH_DEBOUNCE_MS 200u

/* Versions the admin API's history keeps, and the length of a summary line. */
#define HISTORY_MAX 16
#define HISTORY_SUMMARY_MAX 256

/* How often clusters a reload removed are looked at for freeing: about the workers'
 * heartbeat, on which they let go of them. */
#define RECLAIM_INTERVAL_MS 250u

typedef struct history_entry {
    uint64_t version;
    uint64_t time_ms; /* wall clock */
    char source[16];  /* start, file, signal, api */
    char summary[HISTORY_SUMMARY_MAX];
} history_entry;

struct app_reload {
    pf_counter *applied, *rejected;
    uint64_t version;    /* 1 for the config started with; +1 per applied change */
    uint64_t started_us; /* when the reload in progress began (signal, watch, request) */
    history_entry history[HISTORY_MAX];
    size_t history_next;
    uint64_t rejected_count;     /* refused reloads, and the latest one: for the status page */
    history_entry last_rejected; /* version: the one that stayed; summary: the first error */
    int inotify_fd;
    struct event *watch_event, *debounce;
    char dir[PATH_MAX];
    /* Clusters reloads removed, waiting for the workers to let go (PF_MAX_CLUSTERS room:
     * an index is in it at most once, from its removal until its slot is freed). */
    size_t *removing;
    size_t removing_count;
    struct event *reclaim_timer;
};

/* A cluster's endpoint source at run time: the static set, or a DNS name. */
static int start_source(app *a, size_t index, const pf_config_cluster *c, pf_error *err) {
    if (c->dns.name[0])
        return discovery_dns_add(a->dns, proxy_cluster_config(a->proxy, index),
                                 a->discovered[index], err);
    if (discovery_static_publish(c, a->discovered[index]) != PF_OK)
        return pf_fail(err, PF_ENOMEM, "out of memory publishing cluster %s", c->name);
    return PF_OK;
}

/* Routes no longer name it: its health stops and its set empties (requests still on it end
 * as they would with no endpoint left). */
static void retire_cluster(app *a, size_t index) {
    pf_endpoint_set *empty = discovery_set_new(NULL, 0);
    if (empty)
        discovery_slot_publish(a->discovered[index], empty);
    health_stop(a->health[index]);
    tls_watch_remove_cluster(a->tls_watch, index); /* its files no longer matter */
    proxy_cluster_retire(a->proxy, index);
}

/* Frees removed clusters every worker let go of: the proxy's slot (pools, balancer,
 * settings, metric series), then the health and discovered slot that fed it. The index
 * comes back from proxy_cluster_add. */
static void on_reclaim(evutil_socket_t fd, short what, void *arg) {
    app *a = arg;
    struct app_reload *r = a->reload;
    proxy_reload_reap(a->proxy); /* released configs hand their clusters to removal */
    size_t kept = 0, freed = 0;
    for (size_t i = 0; i < r->removing_count; i++) {
        size_t index = r->removing[i];
        if (proxy_cluster_reclaim(a->proxy, index) != PF_OK) {
            r->removing[kept++] = index;
            continue;
        }
        health_free(a->health[index]);
        discovery_slot_free(a->discovered[index]);
        a->health[index] = NULL;
        a->discovered[index] = NULL;
        freed++;
    }
    r->removing_count = kept;
    if (freed)
        log_info("reload: removed clusters freed count=%zu waiting=%zu", freed, kept);
    if (kept) {
        struct timeval tv = pf_timeval_ms(RECLAIM_INTERVAL_MS);
        evtimer_add(r->reclaim_timer, &tv);
    }
}

/* Index waits for on_reclaim to free it. */
static void reclaim_later(app *a, size_t index) {
    struct app_reload *r = a->reload;
    for (size_t i = 0; i < r->removing_count; i++)
        if (r->removing[i] == index)
            return;
    r->removing[r->removing_count++] = index;
    if (!evtimer_pending(r->reclaim_timer, NULL)) {
        struct timeval tv = pf_timeval_ms(RECLAIM_INTERVAL_MS);
        evtimer_add(r->reclaim_timer, &tv);
    }
}

static void log_rejected(app *a, const char *source, const pf_errlist *errs) {
    for (size_t i = 0; i < errs->count; i++)
        log_error("reload rejected source=%s: %s", source, errs->items[i]);
    log_warn("config reload rejected source=%s errors=%zu; the running config stays", source,
             errs->count);
    metrics_inc(a->reload->rejected, 1);
    struct app_reload *r = a->reload;
    r->rejected_count++;
    r->last_rejected.version = r->version;
    r->last_rejected.time_ms = pf_wall_us() / 1000;
    snprintf(r->last_rejected.source, sizeof r->last_rejected.source, "%s", source);
    snprintf(r->last_rejected.summary, sizeof r->last_rejected.summary, "%s",
             errs->count ? errs->items[0] : "");
}

/* One line of what changed, for the history: the count and the first paths. */
static void summarize(const pf_config_diff *diff, char *out, size_t cap) {
    size_t len = 0;
    int n = snprintf(out, cap, "%zu change%s:", diff->count, diff->count == 1 ? "" : "s");
    len = n > 0 ? (size_t)n : 0;
    for (size_t i = 0; i < diff->count && len < cap; i++) {
        n = snprintf(out + len, cap - len, "%s %s %s", i ? ";" : "",
                     config_change_kind_name(diff->items[i].kind), diff->items[i].path);
        if (n < 0 || (size_t)n >= cap - len) {
            /* cut: end with an ellipsis that says more followed */
            if (cap > 4)
                snprintf(out + cap - 5, 5, " ...");
            return;
        }
        len += (size_t)n;
    }
}

static void remember(app *a, const char *source, const char *summary) {
    struct app_reload *r = a->reload;
    history_entry *h = &r->history[r->history_next % HISTORY_MAX];
    r->history_next++;
    h->version = r->version;
    h->time_ms = pf_wall_us() / 1000;
    snprintf(h->source, sizeof h->source, "%s", source);
    snprintf(h->summary, sizeof h->summary, "%s", summary);
}

/* Checks `next` (taken) against the running config and, unless check_only, applies it.
 * Every problem goes to errs. Returns 0, or PF_EINVAL (nothing changed). */
static int apply(app *a, pf_config *next, const char *source, bool check_only,
                 pf_errlist *errs_out) {
    uint64_t started_us = a->reload->started_us, loaded_us = pf_now_us();
    pf_errlist errs = {0};
    pf_config_diff diff = {0};
    pf_proxy_update *u = NULL;
    size_t *slots = NULL;
    pf_error err = {{0}};
    int rc = PF_EINVAL;
    if (config_diff(a->cfg, next, &diff) != PF_OK) {
        pf_errlist_add(&errs, "out of memory comparing the configs");
        goto rejected;
    }
    reload_check_live(a->cfg, next, &diff, a->dns != NULL, &errs);
    if (errs.count)
        goto rejected;
    if (check_only) {
        rc = PF_OK;
        goto done;
    }
    if (diff.count == 0) {
        log_info("config reload: no change source=%s", source);
        metrics_inc(a->reload->applied, 1);
        rc = PF_OK;
        goto done;
    }
    if (!(u = proxy_update_new(a->proxy, next, &err)) ||
        !(slots = calloc(next->cluster_count + 1, sizeof *slots))) {
        pf_errlist_add(&errs, "%s", err.msg[0] ? err.msg : "out of memory");
        goto rejected;
    }
    /* Clusters first: new routes may name only clusters that exist. */
    size_t *retire = calloc(a->cfg->cluster_count + 1, sizeof *retire);
    size_t *republish = calloc(next->cluster_count + 1, sizeof *republish);
    size_t *fresh = calloc(next->cluster_count + 1, sizeof *fresh);
    size_t retire_count = 0, republish_count = 0, fresh_count = 0;
    if (!retire || !republish || !fresh) {
        free(retire);
        free(republish);
        free(fresh);
        pf_errlist_add(&errs, "out of memory");
        goto rejected;
    }
    size_t counts[4] = {0};
    for (size_t j = 0; j < next->cluster_count; j++) {
        const pf_config_cluster *c = &next->clusters[j];
        long index = proxy_cluster_find(a->proxy, c->name);
        bool endpoints_changed = false;
        reload_cluster_plan plan = index < 0
                                       ? RELOAD_CLUSTER_ADDED
                                       : reload_plan_cluster(&diff, c->name, &endpoints_changed);
        counts[plan]++;
        if (plan == RELOAD_CLUSTER_IN_PLACE || plan == RELOAD_CLUSTER_UNCHANGED) {
            slots[j] = (size_t)index;
            if (plan == RELOAD_CLUSTER_IN_PLACE &&
                proxy_update_cluster(u, (size_t)index, c) != PF_OK)
                log_error("cluster %s: out of memory; its old settings stay", c->name);
            if (endpoints_changed)
                republish[republish_count++] = j; /* after the commit: nothing changes before */
            continue;
        }
        long added = proxy_cluster_add(a->proxy, c);
        if (added < 0)
            snprintf(err.msg, sizeof err.msg, "%s",
                     added == PF_ELIMIT ? "no cluster slot left"
                     : added == PF_EINVAL
                         ? "its TLS certificate, key or CA files cannot be loaded (see the log)"
                         : "out of memory");
        if (added < 0 || app_cluster_start(a, (size_t)added, &err) != PF_OK ||
            start_source(a, (size_t)added, c, &err) != PF_OK ||
            tls_watch_add_cluster(a->tls_watch, (size_t)added) != PF_OK) {
            /* Clusters added so far take no traffic (no route names them yet). */
            log_error("reload: cluster %s: %s", c->name, err.msg[0] ? err.msg : "out of memory");
            if (added >= 0)
                fresh[fresh_count++] = (size_t)added;
            /* No route ever named the ones added so far: they may go at once. */
            for (size_t k = 0; k < fresh_count; k++) {
                retire_cluster(a, fresh[k]);
                proxy_cluster_remove(a->proxy, fresh[k]);
                reclaim_later(a, fresh[k]);
            }
            pf_errlist_add(&errs, "$.clusters[%zu]: cannot be added: %s", j,
                           err.msg[0] ? err.msg : "out of memory");
            free(retire);
            free(republish);
            free(fresh);
            goto rejected;
        }
        slots[j] = (size_t)added;
        fresh[fresh_count++] = (size_t)added;
        if (plan == RELOAD_CLUSTER_REPLACED)
            retire[retire_count++] = (size_t)index;
    }
    for (size_t i = 0; i < a->cfg->cluster_count; i++) {
        long index = proxy_cluster_find(a->proxy, a->cfg->clusters[i].name);
        if (index >= 0 && !reload_find_cluster(next, a->cfg->clusters[i].name))
            retire[retire_count++] = (size_t)index;
    }
    for (size_t i = 0; i < retire_count; i++)
        if (proxy_update_remove_cluster(u, retire[i]) != PF_OK)
            log_error("reload: out of memory; a removed cluster's slot stays in use index=%zu",
                      retire[i]);
    pf_config *old = a->cfg;
    /* The first config stays: the resolver and the Kubernetes client point into it. */
    proxy_update_commit(u, slots, old == a->boot_cfg ? NULL : old);
    u = NULL;
    for (size_t i = 0; i < republish_count; i++) {
        const pf_config_cluster *c = &next->clusters[republish[i]];
        if (discovery_static_publish(c, a->discovered[slots[republish[i]]]) != PF_OK)
            log_error("cluster %s: out of memory; its old endpoints stay", c->name);
    }
    for (size_t i = 0; i < retire_count; i++) {
        retire_cluster(a, retire[i]);
        reclaim_later(a, retire[i]);
    }
    free(retire);
    free(fresh);
    free(republish);
    a->cfg = next;
    next = NULL;
    admin_set_config(a->admin, a->cfg);
    metrics_inc(a->reload->applied, 1);
    uint64_t took_us = pf_now_us() - started_us;
    a->reload->version++;
    char summary[HISTORY_SUMMARY_MAX];
    summarize(&diff, summary, sizeof summary);
    remember(a, source, summary);
    log_info("config reload applied version=%llu source=%s changes=%zu clusters_in_place=%zu "
             "clusters_added=%zu clusters_replaced=%zu clusters_retired=%zu load_ms=%.3f "
             "took_ms=%.3f",
             (unsigned long long)a->reload->version, source, diff.count,
             counts[RELOAD_CLUSTER_IN_PLACE], counts[RELOAD_CLUSTER_ADDED],
             counts[RELOAD_CLUSTER_REPLACED], retire_count - counts[RELOAD_CLUSTER_REPLACED],
             (double)(loaded_us - started_us) / 1000.0, (double)took_us / 1000.0);
    for (size_t i = 0; i < diff.count && i < 20; i++)
        log_info("config change kind=%s path=%s", config_change_kind_name(diff.items[i].kind),
                 diff.items[i].path);
    rc = PF_OK;
    goto done;
rejected:
    if (!check_only)
        log_rejected(a, source, &errs);
done:
    proxy_update_free(u);
    free(slots);
    config_free(next);
    config_diff_free(&diff);
    for (size_t i = 0; errs_out && i < errs.count; i++)
        pf_errlist_add(errs_out, "%s", errs.items[i]);
    pf_errlist_free(&errs);
    return rc;
}

int app_reload(app *a, const char *source) {
    a->reload->started_us = pf_now_us();
    if (!a->config_path) {
        log_warn("reload: no config file (standalone mode); nothing to reload");
        return PF_EINVAL;
    }
    pf_config *next = NULL;
    pf_errlist errs = {0};
    int rc = config_load_file(a->config_path, &next, &errs);
    if (rc != PF_OK) {
        if (errs.count == 0)
            pf_errlist_add(&errs, "%s: cannot load config: %s", a->config_path, pf_strerror(rc));
        log_rejected(a, source, &errs);
        pf_errlist_free(&errs);
        return PF_EINVAL;
    }
    return apply(a, next, source, false, NULL);
}

/* ---- the admin API (PUT /config, POST /config/check, GET /config/history) ------------ */

/* admin.write_back: the running config replaces the file, atomically (a temporary file
 * beside it, fsync, rename, fsync of the directory), so a restart starts from it. */
static void write_back(app *a) {
    char tmp[PATH_MAX], dir[PATH_MAX];
    char *text = config_dump_json(a->cfg);
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", a->config_path, (long)getpid());
    snprintf(dir, sizeof dir, "%s", a->config_path);
    int fd = text && n > 0 && (size_t)n < sizeof tmp
                 ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)
                 : -1;
    size_t len = text ? strlen(text) : 0, done = 0;
    while (fd >= 0 && done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    bool ok = fd >= 0 && done == len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    int e = errno;
    if (fd >= 0 && close(fd) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (ok && rename(tmp, a->config_path) != 0) {
        ok = false;
        e = errno;
    }
    if (!ok) {
        if (fd >= 0)
            unlink(tmp);
        log_error("admin.write_back: cannot write %s: %s; the change is applied but a restart "
                  "loses it",
                  a->config_path, text ? strerror(e) : "out of memory");
    } else {
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd); /* the rename itself survives a crash */
            close(dfd);
        }
        log_info("admin.write_back: wrote the config to %s version=%llu", a->config_path,
                 (unsigned long long)a->reload->version);
    }
    free(text);
}

/* Loads `text` (from `source`: "body" or "config") and goes on like a reload. */
static int put_text(app *a, const char *text, const char *source, bool check_only,
                    uint64_t if_match, uint64_t *version, pf_errlist *errs) {
    a->reload->started_us = pf_now_us();
    *version = a->reload->version;
    pf_config *next = NULL;
    int rc = config_load_string(text, source, &next, errs);
    if (rc != PF_OK) {
        if (errs->count == 0)
            pf_errlist_add(errs, "%s: cannot load config: %s", source, pf_strerror(rc));
        if (!check_only)
            log_rejected(a, "api", errs);
        return PF_EINVAL;
    }
    /* Checked after validation: a broken body is a 400 whatever version it names. */
    if (!check_only && if_match && if_match != a->reload->version) {
        config_free(next);
        return PF_ECONFLICT;
    }
    uint64_t before = a->reload->version;
    rc = apply(a, next, check_only ? "check" : "api", check_only, errs);
    *version = a->reload->version;
    if (rc != PF_OK || check_only || !a->config_path || a->reload->version == before)
        return rc;
    if (a->cfg->admin_write_back)
        write_back(a);
    else
        log_info("config changed through the admin API version=%llu; the next reload of %s "
                 "replaces it (admin.write_back is off)",
                 (unsigned long long)a->reload->version, a->config_path);
    return rc;
}

static int api_put(void *ctx, const char *body, bool check_only, uint64_t if_match,
                   uint64_t *version, pf_errlist *errs) {
    return put_text(ctx, body, "body", check_only, if_match, version, errs);
}

/* The index of the element of `array` whose "name" is `name`, or -1. */
static long find_named(json_t *array, const char *name) {
    size_t i;
    json_t *item;
    json_array_foreach(array, i, item) {
        const char *n = json_string_value(json_object_get(item, "name"));
        if (n && strcmp(n, name) == 0)
            return (long)i;
    }
    return -1;
}

/* Every route (listener and position) that names cluster `name`, as messages. */
static size_t routes_naming(const pf_config *cfg, const char *name, pf_errlist *errs) {
    size_t found = 0;
    for (size_t i = 0; i < cfg->listener_count; i++)
        for (size_t j = 0; j < cfg->listeners[i].route_count; j++)
            if (strcmp(cfg->listeners[i].routes[j].cluster, name) == 0) {
                pf_errlist_add(errs,
                               "$.listeners[?@.name==\"%s\"].routes[%zu] names cluster \"%s\"; "
                               "route it elsewhere first (PUT /listeners/%s/routes)",
                               cfg->listeners[i].name, j, name, cfg->listeners[i].name);
                found++;
            }
    return found;
}

static int api_edit(void *ctx, pf_admin_edit what, const char *name, const char *body,
                    uint64_t if_match, uint64_t *version, pf_errlist *errs) {
    app *a = ctx;
    *version = a->reload->version;
    json_error_t jerr;
    json_t *part = NULL;
    if (what != PF_ADMIN_DELETE_CLUSTER) {
        part = json_loads(body, JSON_REJECT_DUPLICATES, &jerr);
        if (!part) {
            pf_errlist_add(errs, "body:%d:%d: JSON syntax error: %s", jerr.line, jerr.column,
                           jerr.text);
            return PF_EINVAL;
        }
    }
    char *dump = config_dump_json(a->cfg);
    json_t *root = dump ? json_loads(dump, 0, NULL) : NULL;
    free(dump);
    json_t *list = json_object_get(root, what == PF_ADMIN_PUT_ROUTES ? "listeners" : "clusters");
    long at = list ? find_named(list, name) : -1;
    int rc = PF_OK;
    if (!root || !list) {
        pf_errlist_add(errs, "out of memory");
        rc = PF_ENOMEM;
    } else if (at < 0 && what != PF_ADMIN_PUT_CLUSTER) {
        pf_errlist_add(errs, "no %s named \"%s\"",
                       what == PF_ADMIN_PUT_ROUTES ? "listener" : "cluster", name);
        rc = PF_ENOTFOUND;
    } else if (what == PF_ADMIN_PUT_ROUTES) {
        if (!json_is_array(part)) {
            pf_errlist_add(errs, "body: the routes must be a JSON array");
            rc = PF_EINVAL;
        } else {
            json_object_set(json_array_get(list, (size_t)at), "routes", part);
        }
    } else if (what == PF_ADMIN_DELETE_CLUSTER) {
        if (routes_naming(a->cfg, name, errs))
            rc = PF_EINUSE;
        else
            json_array_remove(list, (size_t)at);
    } else {
        const char *given = json_string_value(json_object_get(part, "name"));
        if (!json_is_object(part)) {
            pf_errlist_add(errs, "body: the cluster must be a JSON object");
            rc = PF_EINVAL;
        } else if (given && strcmp(given, name) != 0) {
            pf_errlist_add(errs, "body: $.name is \"%s\" but the path names \"%s\"", given, name);
            rc = PF_EINVAL;
        } else {
            json_object_set_new(part, "name", json_string(name));
            if (at >= 0)
                json_array_set(list, (size_t)at, part);
            else
                json_array_append(list, part);
        }
    }
    char *text = rc == PF_OK ? json_dumps(root, JSON_PRESERVE_ORDER) : NULL;
    if (rc == PF_OK && !text) {
        pf_errlist_add(errs, "out of memory");
        rc = PF_ENOMEM;
    }
    if (rc == PF_OK)
        rc = put_text(a, text, "config", false, if_match, version, errs);
    else if (rc == PF_ENOMEM)
        rc = PF_EINVAL;
    free(text);
    json_decref(root);
    json_decref(part);
    return rc;
}

static uint64_t api_version(void *ctx) {
    app *a = ctx;
    return a->reload->version;
}

/* "2026-12-04T19:21:19.123Z" */
static void format_time(uint64_t ms, char *out, size_t cap) {
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03uZ", (unsigned)(ms % 1000));
}

static json_t *api_history(void *ctx) {
    app *a = ctx;
    struct app_reload *r = a->reload;
    json_t *list = json_array();
    size_t n = r->history_next < HISTORY_MAX ? r->history_next : HISTORY_MAX;
    for (size_t i = 0; list && i < n; i++) {
        const history_entry *h = &r->history[(r->history_next - 1 - i) % HISTORY_MAX];
        char when[40];
        format_time(h->time_ms, when, sizeof when);
        json_array_append_new(list,
                              json_pack("{s:I,s:s,s:s,s:s}", "version", (json_int_t)h->version,
                                        "time", when, "source", h->source, "summary", h->summary));
    }
    return list;
}

static json_t *api_last_rejected(void *ctx) {
    app *a = ctx;
    const struct app_reload *r = a->reload;
    if (!r->rejected_count)
        return NULL;
    char when[40];
    format_time(r->last_rejected.time_ms, when, sizeof when);
    return json_pack("{s:I,s:s,s:s,s:s,s:I}", "count", (json_int_t)r->rejected_count, "time", when,
                     "source", r->last_rejected.source, "error", r->last_rejected.summary,
                     "version", (json_int_t)r->last_rejected.version);
}

void app_on_sighup(evutil_socket_t sig, short what, void *arg) {
    app *a = arg;
    log_info("SIGHUP: reloading the config file path=%s",
             a->config_path ? a->config_path : "(none)");
    app_reload(a, "signal");
}

/* ---- --watch-config ------------------------------------------------------------------ */

/* Any change in the directory arms the debounce: the file itself may be a symlink whose
 * target's directory is swapped (a ConfigMap's ..data), which a watch on the file would
 * miss. The reload compares nothing itself: a file that did not change diffs to nothing. */
static void on_watch(evutil_socket_t fd, short what, void *arg) {
    app *a = arg;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool any = false;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        any = true;
    }
    if (any) {
        struct timeval tv = pf_timeval_ms(WATCH_DEBOUNCE_MS);
        evtimer_add(a->reload->debounce, &tv);
    }
}

static void on_debounce(evutil_socket_t fd, short what, void *arg) {
    app *a = arg;
    log_info("config file changed: reloading path=%s", a->config_path);
    app_reload(a, "file");
}

int app_reload_init(app *a, pf_error *err) {
    struct app_reload *r = calloc(1, sizeof *r);
    if (!r)
        return pf_fail(err, PF_ENOMEM, "out of memory");
    a->reload = r;
    r->inotify_fd = -1;
    r->removing = calloc(PF_MAX_CLUSTERS, sizeof *r->removing);
    r->reclaim_timer = evtimer_new(a->base, on_reclaim, a);
    if (!r->removing || !r->reclaim_timer)
        return pf_fail(err, PF_ENOMEM, "out of memory");
    r->applied =
        metrics_counter(a->metrics, "pilotfish_config_reloads_total",
                        "Config reloads (signal, file watch), by result.", "result=\"applied\"");
    r->rejected =
        metrics_counter(a->metrics, "pilotfish_config_reloads_total",
                        "Config reloads (signal, file watch), by result.", "result=\"rejected\"");
    if (!r->applied || !r->rejected)
        return pf_fail(err, PF_ENOMEM, "out of memory");
    r->version = 1;
    remember(a, "start", "the config pilotfish started with");
    pf_admin_config_api api = {.put = api_put,
                               .edit = api_edit,
                               .version = api_version,
                               .history = api_history,
                               .last_rejected = api_last_rejected,
                               .ctx = a};
    admin_set_config_api(a->admin, &api);
    if (!a->watch)
        return PF_OK;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", a->config_path);
    snprintf(r->dir, sizeof r->dir, "%s", dirname(path));
    r->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (r->inotify_fd < 0 || inotify_add_watch(r->inotify_fd, r->dir,
                                               IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
                                                   IN_CREATE | IN_DELETE | IN_ATTRIB) < 0)
        return pf_fail(err, PF_EIO, "--watch-config: cannot watch %s: %s", r->dir, strerror(errno));
    r->watch_event = event_new(a->base, r->inotify_fd, EV_READ | EV_PERSIST, on_watch, a);
    r->debounce = evtimer_new(a->base, on_debounce, a);
    if (!r->watch_event || !r->debounce || event_add(r->watch_event, NULL) != 0)
        return pf_fail(err, PF_ENOMEM, "out of memory");
    log_info("watching the config file path=%s dir=%s", a->config_path, r->dir);
    return PF_OK;
}

void app_reload_free(app *a) {
    struct app_reload *r = a->reload;
    if (!r)
        return;
    if (r->watch_event)
        event_free(r->watch_event);
    if (r->debounce)
        event_free(r->debounce);
    if (r->reclaim_timer)
        event_free(r->reclaim_timer);
    free(r->removing);
    if (r->inotify_fd >= 0)
        close(r->inotify_fd);
    free(r);
    a->reload = NULL;
}
