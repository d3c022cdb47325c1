/* Certificate rotation without restarts: the main thread stats every certificate, key and
 * CA file of the TLS listeners and clusters twice a second. stat() follows symlinks, so a
 * Kubernetes Secret update (a new `..data` directory swapped in by a rename) shows as a
 * new inode. A change that stayed put for one tick (so that a cert written before its key
 * is not judged half-way) is loaded; a valid pair replaces the context new handshakes use,
 * an invalid one is logged with the file and reason and counted, and the old one stays.
 * The same tick rotates the listeners' session ticket keys and keeps the expiry gauge.
 *
 * Files are a stat cache shared by their owners: thousands of auto-discovered clusters made
 * from one template name the same three files, so each file is stat()ed once per tick
 * whatever the number of owners, and owners are only looked at when some file changed in
 * this tick or the one before (a change settles one tick later). Owners come and go with
 * the clusters: configured ones at start, a reload's, auto-discovered ones. */
#include "proxy/proxy_int.h"
#include "proxy/tls_rotation.h"

#include "core/log.h"
#include "core/time.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define TICK_MS 500
#define OWNER_FILES (2 * PF_TLS_MAX_CERTS + 1) /* certificates and keys, plus a CA file */
#define WATCH_FILES_MAX 1024                   /* distinct files across all owners */

/* A file as stat() last saw it: any change of these is a change of content. */
typedef struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    bool missing;
} file_id;

typedef struct watched_file {
    char path[PF_TLS_FILE_MAX];
    unsigned refs;           /* owners that watch it; 0: a free entry (a removed cluster's file) */
    bool has_expiry;         /* a certificate or CA file */
    file_id id;              /* as the last stat() saw it */
    uint64_t version;        /* bumped whenever id changes: owners fingerprint these */
    uint64_t expiry_version; /* the version not_after was read from; 0: never */
    /* notAfter of the certificate (the earliest of a CA bundle), seconds since the epoch;
     * written by the main thread, read by the scrape */
    _Atomic int64_t not_after;
    _Atomic bool known;
} watched_file;

/* One listener's or cluster's TLS files, reloaded together. */
typedef struct owner {
    pf_tls_server *server; /* exactly one of server and client */
    pf_tls_client *client;
    size_t cluster;            /* a client's cluster index (the key of cluster_owner) */
    size_t files[OWNER_FILES]; /* indexes into the watcher's files */
    size_t file_count;
    uint64_t applied; /* fingerprint of the files in use */
    uint64_t seen;    /* at the last tick */
    uint64_t refused; /* the last refused state: logged once, not every tick */
    bool due;         /* its files changed and settled: a reload is waiting (drain) */
    uint64_t next_ticket_rotation_ms;
    pf_counter *reloads[2]; /* applied, rejected */
    pf_counter *ticket_rotations;
} owner;

struct pf_tls_watch {
    pf_proxy *proxy;
    struct event_base *base;
    pf_metrics *metrics;
    struct event *timer;
    bool expiry_registered;
    owner *owners;
    size_t owner_count, owner_cap; /* clusters a reload or discovery adds or removes */
    size_t *cluster_owner;         /* by cluster index: its owner's position + 1, 0: none */
    watched_file *files;
    size_t file_count;         /* entries used so far, free ones (refs 0) included */
    uint64_t versions;         /* the last version given to a file (versions are never reused) */
    bool changed_before;       /* some file changed at the previous tick: owners settle now */
    size_t due;                /* owners waiting for their reload (owner.due) */
    struct event *drain_event; /* the next slice of reloads */
    size_t round_applied, round_rejected;  /* reloads since the round began, for its log */
    char round_unlogged[PF_NAME_MAX + 16]; /* the first refused owner without a line */
    pf_counter *stats;                     /* pilotfish_tls_file_checks_total */
};

static file_id stat_file(const char *path) {
    struct stat st;
    file_id id;
    memset(&id, 0, sizeof id); /* padding too: fingerprint() hashes the bytes */
    if (stat(path, &st) != 0) {
        id.missing = true;
        return id;
    }
    id.dev = st.st_dev;
    id.ino = st.st_ino;
    id.size = st.st_size;
    id.mtime = st.st_mtim;
    id.ctime = st.st_ctim;
    return id;
}

/* Stats file i (the only place that does) and gives it a new version when it changed.
 * Returns whether it did. */
static bool refresh_file(pf_tls_watch *w, watched_file *f) {
    file_id id = stat_file(f->path);
    if (w->stats)
        metrics_inc(w->stats, 1);
    if (f->version && memcmp(&id, &f->id, sizeof id) == 0)
        return false;
    f->id = id;
    f->version = ++w->versions;
    return true;
}

/* FNV-1a over the versions of the owner's files, in its order: the state of its files as
 * the cache last saw them. */
static uint64_t fingerprint(const pf_tls_watch *w, const owner *o) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < o->file_count; i++) {
        uint64_t v = w->files[o->files[i]].version;
        for (int j = 0; j < 8; j++, v >>= 8)
            h = (h ^ (v & 0xff)) * 1099511628211ull;
    }
    return h;
}

/* Seconds since the epoch of an ASN1 time, via its distance from now. */
static int64_t asn1_epoch(const ASN1_TIME *t) {
    int days = 0, secs = 0;
    if (ASN1_TIME_diff(&days, &secs, NULL, t) != 1)
        return 0;
    return (int64_t)time(NULL) + (int64_t)days * 86400 + secs;
}

/* The earliest notAfter of the certificates in a PEM file; false when there is none. */
static bool file_not_after(const char *path, int64_t *out) {
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool found = false;
    X509 *x;
    for (int n = 0; n < 1000 && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL; n++) {
        int64_t t = asn1_epoch(X509_get0_notAfter(x));
        if (!found || t < *out)
            *out = t;
        found = true;
        X509_free(x);
    }
    fclose(f);
    ERR_clear_error();
    return found;
}

/* Reads notAfter of the owner's certificate files, each once per version of the file (many
 * owners share one). */
static void update_expiry(pf_tls_watch *w, const owner *o) {
    for (size_t i = 0; i < o->file_count; i++) {
        watched_file *f = &w->files[o->files[i]];
        int64_t t = 0;
        if (!f->has_expiry || f->expiry_version == f->version)
            continue;
        f->expiry_version = f->version;
        if (file_not_after(f->path, &t)) {
            atomic_store(&f->not_after, t);
            atomic_store(&f->known, true);
        }
    }
}

/* The file's index, added when new (in a free entry first); SIZE_MAX when the table is
 * full. Takes a reference. */
static size_t add_file(pf_tls_watch *w, const char *path, bool has_expiry) {
    size_t free_entry = SIZE_MAX;
    for (size_t i = 0; i < w->file_count; i++) {
        if (w->files[i].refs && strcmp(w->files[i].path, path) == 0) {
            if (has_expiry && !w->files[i].has_expiry)
                w->files[i].expiry_version = 0; /* read it at the next update_expiry */
            w->files[i].has_expiry |= has_expiry;
            w->files[i].refs++;
            return i;
        }
        if (!w->files[i].refs && free_entry == SIZE_MAX)
            free_entry = i;
    }
    if (free_entry == SIZE_MAX && w->file_count == WATCH_FILES_MAX)
        return SIZE_MAX;
    size_t i = free_entry != SIZE_MAX ? free_entry : w->file_count++;
    watched_file *f = &w->files[i];
    snprintf(f->path, sizeof f->path, "%s", path);
    f->has_expiry = has_expiry;
    f->refs = 1;
    f->version = 0;
    f->expiry_version = 0;
    atomic_store(&f->known, false);
    refresh_file(w, f); /* a new file is stat()ed once here, a shared one not at all */
    return i;
}

/* An owner let go of file i: a file nobody watches leaves the table and the expiry gauge. */
static void drop_file(pf_tls_watch *w, size_t i) {
    watched_file *f = &w->files[i];
    if (--f->refs)
        return;
    atomic_store(&f->known, false);
    f->has_expiry = false;
    f->path[0] = '\0';
}

static void owner_add_file(pf_tls_watch *w, owner *o, const char *path, bool has_expiry) {
    if (!path[0] || o->file_count == OWNER_FILES)
        return;
    size_t i = add_file(w, path, has_expiry);
    if (i != SIZE_MAX)
        o->files[o->file_count++] = i;
}

static const char *owner_kind(const owner *o) {
    return o->server ? "listener" : "cluster";
}

static const char *owner_name(const owner *o) {
    return o->server ? tls_server_name(o->server) : tls_client_name(o->client);
}

static void register_owner(pf_tls_watch *w, owner *o, pf_metrics *m) {
    char labels[200];
    for (int i = 0; i < 2; i++) {
        snprintf(labels, sizeof labels, "%s=\"%s\",result=\"%s\"", owner_kind(o), owner_name(o),
                 i ? "rejected" : "applied");
        o->reloads[i] = metrics_counter(
            m, "pilotfish_tls_certificate_reloads_total",
            "Certificate, key or CA files that changed and were loaded (applied) or refused "
            "(rejected: the files in use stay), per listener or cluster.",
            labels);
    }
    if (o->server) {
        snprintf(labels, sizeof labels, "listener=\"%s\"", owner_name(o));
        o->ticket_rotations =
            metrics_counter(m, "pilotfish_tls_ticket_key_rotations_total",
                            "Session ticket keys replaced by a new one on a listener.", labels);
    }
    o->applied = o->seen = fingerprint(w, o);
    update_expiry(w, o);
}

/* A change reloads every owner of a changed file, and a reload builds a context (a few
 * milliseconds): thousands of discovered clusters would hold the main thread (health
 * checks, discovery, the admin server) for seconds. Reloads run in slices of this long,
 * the event loop getting a turn between them. */
#define RELOAD_SLICE_US 20000
/* The first few owners reloaded in one round get a log line each, the rest one line
 * together (thousands of discovered clusters share the files that changed). */
#define ROUND_LOG_LINES 8

static void reload_owner(pf_tls_watch *w, owner *o) {
    uint64_t fp = fingerprint(w, o);
    pf_error err = {{0}};
    int rc = o->server ? tls_server_reload(o->server, &err) : tls_client_reload(o->client, &err);
    if (rc != PF_OK) {
        o->refused = fp;
        if (o->reloads[1])
            metrics_inc(o->reloads[1], 1);
        if (w->round_rejected++ < ROUND_LOG_LINES)
            log_warn("tls certificate reload rejected %s=%s reason=\"%s\"; the certificates in "
                     "use stay, and the files are tried again when they change",
                     owner_kind(o), owner_name(o), err.msg);
        else if (!w->round_unlogged[0])
            snprintf(w->round_unlogged, sizeof w->round_unlogged, "%s=%s", owner_kind(o),
                     owner_name(o));
        return;
    }
    o->applied = fp;
    o->refused = 0;
    if (o->reloads[0])
        metrics_inc(o->reloads[0], 1);
    update_expiry(w, o);
    if (w->round_applied++ < ROUND_LOG_LINES)
        log_info("tls certificates reloaded %s=%s", owner_kind(o), owner_name(o));
}

/* Reloads the owners due, RELOAD_SLICE_US at a time; the rest after the loop's next turn. */
static void drain(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    pf_tls_watch *w = arg;
    uint64_t start = pf_now_us();
    /* From the start each time: a removed owner's place is taken by the last one. */
    for (size_t i = 0; i < w->owner_count && w->due; i++) {
        owner *o = &w->owners[i];
        if (!o->due)
            continue;
        o->due = false;
        w->due--;
        reload_owner(w, o);
        if (w->due && pf_now_us() - start >= RELOAD_SLICE_US) {
            struct timeval now = {0, 0}; /* a timer: I/O is polled before it runs */
            evtimer_add(w->drain_event, &now);
            return;
        }
    }
    if (w->round_applied > ROUND_LOG_LINES)
        log_info("tls certificates reloaded for %zu more listeners and clusters",
                 w->round_applied - ROUND_LOG_LINES);
    if (w->round_rejected > ROUND_LOG_LINES)
        log_warn("tls certificate reload rejected for %zu more listeners and clusters (from %s "
                 "on, same reasons); the certificates in use stay, and the files are tried "
                 "again when they change",
                 w->round_rejected - ROUND_LOG_LINES, w->round_unlogged);
    w->round_applied = w->round_rejected = 0;
    w->round_unlogged[0] = '\0';
}

/* An owner whose files changed and then stayed put for a tick is due for a reload. */
static void check_owner(pf_tls_watch *w, owner *o) {
    uint64_t fp = fingerprint(w, o);
    bool settled = fp == o->seen;
    o->seen = fp;
    if (!settled || fp == o->applied || fp == o->refused || o->due)
        return;
    o->due = true;
    w->due++;
}

static void rotate_tickets(owner *o, uint64_t now) {
    if (!o->server || now < o->next_ticket_rotation_ms)
        return;
    uint64_t period = tls_server_ticket_rotation_ms(o->server);
    o->next_ticket_rotation_ms = now + period;
    pf_error err = {{0}};
    if (tls_server_rotate_ticket_keys(o->server, &err) != PF_OK)
        log_warn("tls ticket key rotation failed listener=%s reason=\"%s\"", owner_name(o),
                 err.msg);
    else if (o->ticket_rotations)
        metrics_inc(o->ticket_rotations, 1);
}

/* Stats every watched file once. Returns whether any changed. */
static bool refresh_files(pf_tls_watch *w) {
    bool changed = false;
    for (size_t i = 0; i < w->file_count; i++)
        if (w->files[i].refs)
            changed |= refresh_file(w, &w->files[i]);
    return changed;
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    pf_tls_watch *w = arg;
    uint64_t now = pf_now_ms();
    bool changed = refresh_files(w);
    /* With no change now nor at the tick before, every owner's fingerprint is the one it
     * saw and acted on: nothing to look at. */
    if (changed || w->changed_before) {
        bool draining = w->due > 0; /* a round still going on takes the new ones too */
        for (size_t i = 0; i < w->owner_count; i++)
            check_owner(w, &w->owners[i]);
        if (w->due && !draining)
            drain(-1, 0, w);
    }
    w->changed_before = changed;
    for (size_t i = 0; i < w->owner_count; i++)
        rotate_tickets(&w->owners[i], now);
}

/* pilotfish_tls_certificate_expiry_seconds{file}: seconds left (negative once expired). */
static void emit_expiry(void *arg, pf_metric_emit emit, void *emit_ctx) {
    pf_tls_watch *w = arg;
    int64_t now = (int64_t)time(NULL);
    char labels[PF_TLS_FILE_MAX + 16];
    for (size_t i = 0; i < w->file_count; i++) {
        const watched_file *f = &w->files[i];
        if (!f->refs || !f->has_expiry || !atomic_load(&f->known))
            continue;
        /* a path is text from the config; quotes and backslashes are escaped */
        size_t n = (size_t)snprintf(labels, sizeof labels, "file=\"");
        for (const char *p = f->path; *p && n + 3 < sizeof labels; p++) {
            if (*p == '"' || *p == '\\')
                labels[n++] = '\\';
            labels[n++] = *p == '\n' ? ' ' : *p;
        }
        labels[n++] = '"';
        labels[n] = '\0';
        emit(emit_ctx, labels, (double)(atomic_load(&f->not_after) - now));
    }
}

/* pilotfish_tls_watched{what="listeners"|"clusters"|"files"}. */
static void emit_watched(void *arg, pf_metric_emit emit, void *emit_ctx) {
    const pf_tls_watch *w = arg;
    size_t listeners = 0, files = 0;
    for (size_t i = 0; i < w->owner_count; i++)
        listeners += w->owners[i].server != NULL;
    for (size_t i = 0; i < w->file_count; i++)
        files += w->files[i].refs > 0;
    emit(emit_ctx, "what=\"listeners\"", (double)listeners);
    emit(emit_ctx, "what=\"clusters\"", (double)(w->owner_count - listeners));
    emit(emit_ctx, "what=\"files\"", (double)files);
}

/* The expiry gauge and the tick, from the first owner on. Returns 0 or PF_ENOMEM. */
static int start_watching(pf_tls_watch *w) {
    if (!w->expiry_registered) {
        w->stats = metrics_counter(w->metrics, "pilotfish_tls_file_checks_total",
                                   "stat() calls of the certificate watch: one per watched file "
                                   "per check (twice a second), however many listeners and "
                                   "clusters share the file.",
                                   "");
        if (!w->stats ||
            metrics_gauge_callback(w->metrics, "pilotfish_tls_watched",
                                   "Listeners and clusters whose certificate, key and CA files "
                                   "are watched for rotation, and the distinct files watched.",
                                   emit_watched, w) != PF_OK)
            return PF_ENOMEM;
        if (metrics_gauge_callback(w->metrics, "pilotfish_tls_certificate_expiry_seconds",
                                   "Seconds until a certificate file's certificate expires (the "
                                   "earliest of a CA bundle); negative once expired.",
                                   emit_expiry, w) != PF_OK)
            return PF_ENOMEM;
        w->expiry_registered = true;
    }
    if (!w->drain_event && !(w->drain_event = evtimer_new(w->base, drain, w)))
        return PF_ENOMEM;
    if (!w->timer) {
        w->timer = event_new(w->base, -1, EV_PERSIST, on_tick, w);
        struct timeval tv = {0, TICK_MS * 1000};
        if (!w->timer || event_add(w->timer, &tv) != 0)
            return PF_ENOMEM;
    }
    return PF_OK;
}

/* A cluster's owner: its CA, certificate and key files. */
static void add_cluster_owner(pf_tls_watch *w, size_t index) {
    pf_cluster_rt *c = &w->proxy->clusters[index];
    owner *o = &w->owners[w->owner_count++];
    memset(o, 0, sizeof *o);
    o->client = c->tls;
    o->cluster = index;
    w->cluster_owner[index] = w->owner_count;
    const pf_config_cluster_tls *t = &c->owned_cfg->tls;
    owner_add_file(w, o, t->ca_file, true);
    owner_add_file(w, o, t->cert_file, true);
    owner_add_file(w, o, t->key_file, false);
    register_owner(w, o, w->metrics);
}

int tls_watch_add_cluster(pf_tls_watch *w, size_t index) {
    if (!w || index >= PF_MAX_CLUSTERS)
        return PF_OK;
    pf_cluster_rt *c = &w->proxy->clusters[index];
    if (!c->tls || w->cluster_owner[index])
        return PF_OK;
    if (w->owner_count == w->owner_cap) {
        size_t cap = w->owner_cap ? w->owner_cap * 2 : 8;
        owner *more = realloc(w->owners, cap * sizeof *more);
        if (!more)
            return PF_ENOMEM;
        w->owners = more;
        w->owner_cap = cap;
    }
    add_cluster_owner(w, index);
    return start_watching(w);
}

void tls_watch_remove_cluster(pf_tls_watch *w, size_t index) {
    if (!w || index >= PF_MAX_CLUSTERS || !w->cluster_owner[index])
        return;
    size_t i = w->cluster_owner[index] - 1;
    owner *o = &w->owners[i];
    for (size_t k = 0; k < o->file_count; k++)
        drop_file(w, o->files[k]);
    metrics_release(w->metrics, o->reloads[0]);
    metrics_release(w->metrics, o->reloads[1]);
    if (o->due)
        w->due--;
    w->cluster_owner[index] = 0;
    /* the last owner takes its place: the order does not matter */
    *o = w->owners[--w->owner_count];
    if (i < w->owner_count && o->client)
        w->cluster_owner[o->cluster] = i + 1;
}

pf_tls_watch *tls_watch_new(struct event_base *base, pf_proxy *proxy, pf_metrics *m,
                            pf_error *err) {
    pf_tls_watch *w = calloc(1, sizeof *w);
    size_t n = 0;
    for (size_t i = 0; i < proxy->listener_count; i++)
        n += proxy->listeners[i].tls != NULL;
    for (size_t i = 0; i < proxy->cluster_count; i++)
        n += proxy->clusters[i].tls != NULL;
    if (!w || !(w->owners = calloc(n + 1, sizeof *w->owners)) ||
        !(w->files = calloc(WATCH_FILES_MAX, sizeof *w->files)) ||
        !(w->cluster_owner = calloc(PF_MAX_CLUSTERS, sizeof *w->cluster_owner)))
        goto nomem;
    w->owner_cap = n + 1;
    w->proxy = proxy;
    w->base = base;
    w->metrics = m;
    uint64_t now = pf_now_ms();
    for (size_t i = 0; i < proxy->listener_count; i++) {
        pf_listener_rt *l = &proxy->listeners[i];
        if (!l->tls)
            continue;
        owner *o = &w->owners[w->owner_count++];
        o->server = l->tls;
        const pf_config_listener_tls *t = &l->cfg->tls;
        for (size_t c = 0; c < t->certificate_count; c++) {
            owner_add_file(w, o, t->certificates[c].cert_file, true);
            owner_add_file(w, o, t->certificates[c].key_file, false);
        }
        owner_add_file(w, o, t->client_ca_file, true);
        o->next_ticket_rotation_ms = now + tls_server_ticket_rotation_ms(l->tls);
        register_owner(w, o, m);
    }
    for (size_t i = 0; i < proxy->cluster_count; i++) {
        if (proxy->clusters[i].tls)
            add_cluster_owner(w, i);
    }
    if (w->owner_count == 0)
        return w; /* nothing to watch (yet): no timer, no metric */
    if (start_watching(w) != PF_OK)
        goto nomem;
    return w;
nomem:
    tls_watch_free(w);
    pf_fail(err, PF_ENOMEM, "out of memory watching the TLS files");
    return NULL;
}

void tls_watch_free(pf_tls_watch *w) {
    if (!w)
        return;
    if (w->timer)
        event_free(w->timer);
    if (w->drain_event)
        event_free(w->drain_event);
    free(w->owners);
    free(w->files);
    free(w->cluster_owner);
    free(w);
}
