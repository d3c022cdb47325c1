/* Kubernetes discovery at run time: libcurl's multi interface on the main loop, list and
 * watch loops per resource and scope, the stores they keep, and the clusters built from
 * them.
 *
 * Flow: a watch (k8s_watch) lists its resource page by page, applies the list to its store
 * as a diff, then watches from the list's resourceVersion. Every change to a store updates
 * the view (k8s_view: one configured cluster's Service, or an auto-discovered namespace)
 * that owns the watch, which marks the Services touched as dirty; a deferred event then
 * rebuilds and publishes their clusters' endpoint sets (equal sets publish nothing, so
 * relists and moves between slices never flap). Everything runs on the main thread: curl
 * calls back from curl_multi_socket_action, which only our libevent callbacks call. */
#include "core/random.h"
#include "discovery/kubernetes.h"
#include "core/log.h"
#include "core/time.h"
#include "discovery/dns.h"
#include "discovery/kubernetes_httproute.h"
#include "discovery/kubernetes_int.h"
#include "discovery/kubernetes_map.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#define TOKEN_MAX (16u * 1024u)      /* bound service-account tokens are ~1 KiB */
#define ERROR_BODY_MAX (64u * 1024u) /* a Status body; the rest is dropped */
#define WATCH_MIN_TIMEOUT_S 300      /* watches end server-side after 5-10 min, like client-go */
#define WATCH_MAX_TIMEOUT_S 600
#define WATCH_HEALTHY_MS 1000       /* a watch that lasted this long resets the backoff */
#define K8S_WATCH_RECV_BUFFER 4096u /* curl's receive buffer of a watch (lists keep 16 KiB) */
#define K8S_RETRY_AFTER_MAX_S 600   /* a longer Retry-After is taken as this */
#define PATH_MAX_K8S 1536           /* api server URL (1023) + "/apis/.../namespaces/NS/RESOURCE" */
#define CONT_MAX 4096               /* an encoded continue token; longer ones restart the list */
#define URL_MAX (PATH_MAX_K8S + CONT_MAX + 1024)
/* HTTP/2: streams pilotfish opens on one connection before it opens another. libcurl's own
 * default is 100; the API server announces its limit (100 on current ones, 250 on older
 * ones) and the lower of the two applies. Watches are bounded (per namespace and by
 * max_clusters), so connections are too: ceil(streams / limit). */
#define K8S_H2_MAX_STREAMS 1000L

static const char *const status_text[PF_K8S_STATUS_COUNT] = {
    [PF_K8S_OK] = "success",
    [PF_K8S_EUNAUTHORIZED] = "401 Unauthorized: the token is missing, wrong or expired",
    [PF_K8S_EFORBIDDEN] = "403 Forbidden: RBAC refused the request",
    [PF_K8S_EGONE] = "410 Gone: the resourceVersion is too old; relisting",
    [PF_K8S_EHTTP] = "the API server answered with an error status",
    [PF_K8S_ETRANSPORT] = "cannot talk to the API server (connect, TLS or read failed)",
    [PF_K8S_ETIMEOUT] = "the request timed out",
    [PF_K8S_ESTALLED] = "the watch stalled: nothing arrived, not even a bookmark",
    [PF_K8S_EMALFORMED] = "the API server sent malformed JSON",
    [PF_K8S_ETOOLONG] = "a watch event or list page exceeded its configured bound",
    [PF_K8S_ECLOSED] = "the API server ended the watch",
    [PF_K8S_ENOMEM] = "out of memory",
};

const char *discovery_k8s_strerror(int status) {
    if (status >= 0 && status < PF_K8S_STATUS_COUNT)
        return status_text[status];
    return "unknown Kubernetes status";
}

/* Error counters by code: the HTTP statuses worth telling apart, then ours. */
static const int http_codes[] = {400, 401, 403, 404, 409, 410, 422, 429, 500, 502, 503, 504};
#define HTTP_CODE_COUNT (sizeof http_codes / sizeof http_codes[0])
static const char *const failure_labels[] = {"other_http", "transport", "timeout",
                                             "stalled",    "malformed", "too_long"};
enum { FAIL_OTHER_HTTP, FAIL_TRANSPORT, FAIL_TIMEOUT, FAIL_STALLED, FAIL_MALFORMED, FAIL_TOOLONG };
#define FAILURE_COUNT (sizeof failure_labels / sizeof failure_labels[0])

static const char *const resource_names[K8S_KINDS_ALL] = {[K8S_KIND_SERVICE] = "services",
                                                          [K8S_KIND_SLICE] = "endpointslices",
                                                          [K8S_KIND_HTTPROUTE] = "httproutes"};
/* RBAC names for the 403 message. */
static const char *const resource_rbac[K8S_KINDS_ALL] = {
    [K8S_KIND_SERVICE] = "services (core API group)",
    [K8S_KIND_SLICE] = "endpointslices.discovery.k8s.io",
    [K8S_KIND_HTTPROUTE] = "httproutes.gateway.networking.k8s.io"};
static const char *const resource_groups[K8S_KINDS_ALL] = {
    [K8S_KIND_SERVICE] = "api/v1",
    [K8S_KIND_SLICE] = "apis/discovery.k8s.io/v1",
    [K8S_KIND_HTTPROUTE] = "apis/gateway.networking.k8s.io/v1"};

typedef struct k8s_view k8s_view;
typedef struct k8s_watch k8s_watch;

/* A namespace's feed: listing (its views keep their own watches), serving them, or handing
 * them back to their own watches (each view's own lists are in before the feed lets go). */
typedef enum { K8S_FEED_STARTING, K8S_FEED_ACTIVE, K8S_FEED_LEAVING } k8s_feed_state;
typedef struct k8s_svc k8s_svc;

typedef struct k8s_sock {
    curl_socket_t fd;
    struct event *ev;
} k8s_sock;

/* One HTTP request in flight: a list page or a watch stream. */
typedef struct k8s_req {
    k8s_watch *w;
    CURL *easy;
    struct curl_slist *headers;
    bool watch;
    long status;
    char *body; /* list page or error Status */
    size_t len, cap, max;
    k8s_lines lines;
    int abort; /* pf_k8s_status that made on_write stop the transfer */
    char abort_why[K8S_WHY_MAX];
    uint64_t started_ms;
    size_t events;
    bool running; /* added to the multi handle, curl has not reported it done */
    char errbuf[CURL_ERROR_SIZE];
} k8s_req;

struct k8s_watch {
    pf_k8s *k;
    k8s_view *view;
    k8s_kind kind;
    char selector[512]; /* "&labelSelector=..." or "&fieldSelector=...", encoded; or "" */
    char scope[160];    /* for logs: namespace and selector */
    k8s_map store;      /* key -> k8s_object */
    k8s_map fresh;      /* the list being paged in */
    char rv[K8S_RV_MAX];
    char *cont; /* continue token of the next page */
    bool synced;
    bool need_list; /* the next step is a list (start, 410, failed list), not a watch */
    k8s_req *req;
    struct event *timer; /* next list or watch */
    struct event *stall;
    unsigned failures;
    bool forbidden_logged;
    bool kind_missing; /* HTTPRoutes: the API answered 404, the kind (a CRD) is not installed */
    uint64_t last_event_ms, last_event_wall_us;
    pf_counter *connects, *relists, *events[K8S_EV_COUNT];
    bool rejoin_pending;    /* a fed view's own watch: its list to take over is not in yet */
    uint64_t down_since_ms; /* when its stream last broke; 0 once events flow again */
    bool fresh_connect;     /* its last watch stalled: the next request opens a connection */
};

#define K8S_MAX_FQDN_NAMES 64 /* names resolved per cluster for FQDN slices */

/* One cluster fed by one port of one Service. */
typedef struct k8s_binding {
    k8s_svc *svc;
    char cluster_name[PF_NAME_MAX];
    const pf_config_cluster *cluster;
    pf_config_cluster *owned; /* auto-discovered: our copy of the template */
    pf_endpoint_slot *slot;
    char want_name[PF_K8S_NAME_MAX];
    uint32_t want_number;
    size_t cookie;
    uint16_t svc_port; /* auto: the Service port */
    bool is_default;
    /* ExternalName: a resolver of our own publishing into slot */
    pf_dns *dns;
    pf_config_cluster *dns_cfg;
    struct k8s_fqdn *fqdns; /* FQDN slices: one resolver per name and port */
    size_t fqdn_count;
    bool published;
    size_t endpoints;
    bool using_terminating;
    uint64_t publishes;
    char last_error[PF_ERROR_MAX];
    uint64_t last_error_wall_us;
    struct k8s_binding *next;
} k8s_binding;

struct k8s_svc {
    k8s_view *view;
    char key[K8S_KEY_MAX]; /* "ns/name" */
    char ns[PF_K8S_NAME_MAX];
    char name[PF_K8S_NAME_MAX];
    const k8s_object *service; /* borrowed from the view's services store */
    const k8s_slice **slices;  /* borrowed from the slices store */
    const k8s_object **slice_objs;
    size_t slice_count, slice_cap;
    k8s_binding *bindings;
    bool dirty;
    bool pinned; /* a configured cluster's Service: kept even when nothing exists */
    k8s_svc *next_dirty;
};

struct k8s_view {
    pf_k8s *k;
    bool auto_discover;
    /* on_demand: a view of one Service (ns, service) that a request named, kept while
     * requests use it; wanted_ms is when the last request asked for it. */
    bool on_demand;
    char service[PF_K8S_NAME_MAX];
    uint64_t wanted_ms;
    char ns[PF_K8S_NAME_MAX]; /* "" : all namespaces */
    k8s_watch *watches[K8S_KIND_COUNT];
    k8s_map svcs;              /* "ns/name" -> k8s_svc */
    uint64_t pending_since_us; /* first change not yet published */
    /* on_demand, past max_watches_per_namespace Services in use in a namespace: one view
     * with namespace-wide watches (a "feed") serves them all. A fed view keeps its k8s_svc
     * and bindings but borrows its objects from the feed's stores; its own watches are
     * stopped (synced stays true: its Service is known, through the feed). */
    bool feed;
    k8s_feed_state feed_state; /* feed only */
    k8s_view *fed_by;          /* on_demand: the feed serving this view, or NULL */
};

struct pf_k8s {
    struct event_base *base;
    const pf_config *cfg;
    const pf_config_kubernetes *kc;
    pf_metrics *metrics;
    pf_metrics *dns_metrics; /* never rendered: ExternalName resolvers register here */
    char api[PF_K8S_TEXT_MAX];
    char token_file[PF_K8S_TEXT_MAX];
    char ca_file[PF_K8S_TEXT_MAX];
    char ns[PF_K8S_NAME_MAX];
    char *token;
    bool ports_refused; /* port_added refused a port (max_clusters): retried when asked */
    char *static_token; /* a kubeconfig's inline token, used when there is no token file */
    bool token_warned;
    char *ca_blob; /* kubeconfig certificate-authority-data (PEM) */
    size_t ca_blob_len;
    char cert_file[PF_K8S_TEXT_MAX], key_file[PF_K8S_TEXT_MAX]; /* client certificate */
    char *cert_blob, *key_blob;
    size_t cert_blob_len, key_blob_len;
    CURLM *multi;
    struct event *curl_timer;
    struct event *flush;
    k8s_view **views;
    size_t view_count;
    k8s_view **route_views; /* kubernetes.http_routes: one HTTPRoute watch per namespace */
    size_t route_view_count;
    k8s_svc *dirty;
    pf_k8s_auto_callbacks cb;
    bool auto_on;
    bool routes_changed;
    bool routes_built; /* the routes were rebuilt once after every HTTPRoute list was in */
    bool started, stopping;
    bool curl_loaded; /* curl_global_init done (curl_up) */
    uint64_t rng[2];
    /* requests added to the multi handle and not done yet */
    size_t reqs_running;
    pf_counter *http_errors[HTTP_CODE_COUNT];
    pf_counter *failures[FAILURE_COUNT];
    pf_histogram *event_to_publish;
};

/* ---- small helpers --------------------------------------------------------------------- */

static uint64_t k8s_random(pf_k8s *k) {
    return pf_xorshift128p(k->rng);
}

/* Exponential backoff with "full jitter": anywhere in [0, window], the window doubling per
 * failure up to backoff.max. After an API server restart every sidecar of a fleet fails at
 * the same moment; a fixed part would bring them back in step, full jitter spreads them
 * evenly over the window. */
static uint64_t backoff_ms(pf_k8s *k, unsigned failures) {
    uint64_t d = k->kc->backoff_base_ms;
    for (unsigned i = 1; i < failures && d < k->kc->backoff_max_ms; i++)
        d *= 2;
    if (d > k->kc->backoff_max_ms)
        d = k->kc->backoff_max_ms;
    return k8s_random(k) % (d + 1);
}

/* The wait before a relist that a 410 asked for. A fleet's watches all get their 410 at
 * once (the API server restarted and lost its watch cache, or compacted): each relist goes
 * at a random point of the whole backoff window (backoff.max), so that lists, the expensive
 * requests, reach the API server spread out instead of together: N sidecars with W watches
 * each list at about N*W/backoff.max a second. The set in use stays meanwhile, so the wait
 * costs freshness, not requests. */
static uint64_t relist_delay_ms(pf_k8s *k) {
    return k8s_random(k) % (k->kc->backoff_max_ms + 1);
}

static void count_http(pf_k8s *k, long status) {
    for (size_t i = 0; i < HTTP_CODE_COUNT; i++) {
        if (http_codes[i] == status) {
            metrics_inc(k->http_errors[i], 1);
            return;
        }
    }
    metrics_inc(k->failures[FAIL_OTHER_HTTP], 1);
}

/* Reads a small text file whole, without the trailing newline. Returns a malloc'd string
 * or NULL (errno set). */
static char *read_small_file(const char *path, size_t max) {
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int failed = ferror(f);
    fclose(f);
    if (!buf || failed || n > max) {
        free(buf);
        errno = failed ? EIO : EFBIG;
        return NULL;
    }
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    return buf;
}

/* The token is read before every request: bound service-account tokens rotate (the kubelet
 * rewrites the file), and the one read after a 401 is the fix for it. */
static void refresh_token(pf_k8s *k) {
    if (!k->token_file[0])
        return;
    char *t = read_small_file(k->token_file, TOKEN_MAX);
    if (!t) {
        if (!k->token_warned)
            log_warn("kubernetes: cannot read the token file=%s error=\"%s\"; keeping the "
                     "previous token",
                     k->token_file, strerror(errno));
        k->token_warned = true;
        return;
    }
    k->token_warned = false;
    free(k->token);
    k->token = t;
}

static bool url_unreserved(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Percent-encodes s into out; false when it does not fit. */
static bool url_encode(char *out, size_t cap, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (o + 4 > cap)
            return false;
        if (url_unreserved(c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return true;
}

/* ---- curl on libevent ------------------------------------------------------------------- */

static void check_done(pf_k8s *k);

static void on_sock_event(evutil_socket_t fd, short what, void *arg) {
    pf_k8s *k = arg;
    int running = 0;
    int flags =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(k->multi, fd, flags, &running);
    check_done(k);
}

static void on_curl_timeout(evutil_socket_t fd, short what, void *arg) {
    pf_k8s *k = arg;
    int running = 0;
    curl_multi_socket_action(k->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(k);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    pf_k8s *k = userp;
    k8s_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            event_free(s->ev);
            free(s);
        }
        curl_multi_assign(k->multi, fd, NULL);
        return 0;
    }
    short kind = (short)(EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
                         ((what & CURL_POLL_OUT) ? EV_WRITE : 0));
    if (!s) {
        if (!(s = calloc(1, sizeof *s)))
            return -1;
        s->fd = fd;
        curl_multi_assign(k->multi, fd, s);
    } else {
        event_free(s->ev);
    }
    s->ev = event_new(k->base, fd, kind, on_sock_event, k);
    if (!s->ev || event_add(s->ev, NULL) != 0)
        return -1;
    return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
    pf_k8s *k = userp;
    if (timeout_ms < 0) {
        evtimer_del(k->curl_timer);
    } else {
        struct timeval tv = pf_timeval_ms((uint64_t)timeout_ms);
        evtimer_add(k->curl_timer, &tv);
    }
    return 0;
}

/* ---- views: stores -> Services -> clusters ---------------------------------------------- */

static void schedule_flush(pf_k8s *k) {
    if (!k->stopping)
        event_active(k->flush, EV_TIMEOUT, 0);
}

static void mark_dirty(k8s_svc *s) {
    k8s_view *v = s->view;
    if (!v->pending_since_us)
        v->pending_since_us = pf_now_us();
    if (!s->dirty) {
        s->dirty = true;
        s->next_dirty = v->k->dirty;
        v->k->dirty = s;
    }
    schedule_flush(v->k);
}

static k8s_svc *svc_get(k8s_view *v, const char *ns, const char *name, bool create) {
    char key[K8S_KEY_MAX];
    snprintf(key, sizeof key, "%s/%s", ns, name);
    k8s_svc *s = k8s_map_get(&v->svcs, key);
    if (s || !create)
        return s;
    if (!(s = calloc(1, sizeof *s)))
        return NULL;
    s->view = v;
    memcpy(s->key, key, sizeof key);
    snprintf(s->ns, sizeof s->ns, "%s", ns);
    snprintf(s->name, sizeof s->name, "%s", name);
    if (k8s_map_put(&v->svcs, s->key, s, NULL) != PF_OK) {
        free(s);
        return NULL;
    }
    return s;
}

static void svc_remove_slice(k8s_svc *s, const k8s_object *obj) {
    for (size_t i = 0; i < s->slice_count; i++) {
        if (s->slice_objs[i] == obj) {
            s->slice_objs[i] = s->slice_objs[s->slice_count - 1];
            s->slices[i] = s->slices[s->slice_count - 1];
            s->slice_count--;
            return;
        }
    }
}

static int svc_add_slice(k8s_svc *s, const k8s_object *obj) {
    if (s->slice_count == s->slice_cap) {
        size_t cap = s->slice_cap ? s->slice_cap * 2 : 4;
        const k8s_slice **a = realloc(s->slices, cap * sizeof *a);
        if (!a)
            return PF_ENOMEM;
        s->slices = a;
        const k8s_object **b = realloc(s->slice_objs, cap * sizeof *b);
        if (!b)
            return PF_ENOMEM;
        s->slice_objs = b;
        s->slice_cap = cap;
    }
    s->slices[s->slice_count] = &obj->u.slice;
    s->slice_objs[s->slice_count++] = obj;
    return PF_OK;
}

static void feed_changed(k8s_view *feed, const k8s_object *prev, const k8s_object *cur);

/* A store changed from prev to cur (either may be NULL); called before prev is freed. */
static void view_changed(k8s_view *v, const k8s_object *prev, const k8s_object *cur) {
    if (v->feed) /* routed to the Services in use; indexed by Service below like any view */
        feed_changed(v, prev, cur);
    const k8s_object *any = cur ? cur : prev;
    if (any->kind == K8S_KIND_HTTPROUTE) {
        /* Routes are rebuilt whole, with the Services, at the next flush. */
        v->k->routes_changed = true;
        schedule_flush(v->k);
        return;
    }
    if (any->kind == K8S_KIND_SERVICE) {
        k8s_svc *s = svc_get(v, any->ns, any->name, cur != NULL);
        if (s) {
            s->service = cur;
            mark_dirty(s);
        }
        return;
    }
    if (prev && prev->u.slice.service[0]) {
        k8s_svc *s = svc_get(v, prev->ns, prev->u.slice.service, false);
        if (s) {
            svc_remove_slice(s, prev);
            mark_dirty(s);
        }
    }
    if (cur && cur->u.slice.service[0]) {
        k8s_svc *s = svc_get(v, cur->ns, cur->u.slice.service, true);
        if (s && svc_add_slice(s, cur) == PF_OK)
            mark_dirty(s);
        else
            log_error("kubernetes: out of memory indexing endpointslice %s", cur->key);
    }
}

static void mark_all_dirty_cb(void *arg, void *value) {
    mark_dirty(value);
}

/* ---- watches: list, watch, backoff -------------------------------------------------------- */

static void watch_schedule(k8s_watch *w, uint64_t delay_ms);
static void watch_list(k8s_watch *w);
static void free_object_cb(void *arg, void *value);
static void watch_watch(k8s_watch *w);

static void watch_note_error(k8s_watch *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Remembers the latest failure for /clusters on every binding the watch feeds. */
static void note_cb(void *arg, void *value) {
    const char *msg = arg;
    k8s_svc *s = value;
    for (k8s_binding *b = s->bindings; b; b = b->next) {
        snprintf(b->last_error, sizeof b->last_error, "%s", msg);
        b->last_error_wall_us = pf_wall_us();
    }
}

static void watch_note_error(k8s_watch *w, const char *fmt, ...) {
    char msg[PF_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    k8s_map_each(&w->view->svcs, note_cb, msg);
}

static k8s_req *req_new(k8s_watch *w, const char *url, bool watch) {
    pf_k8s *k = w->k;
    k8s_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->w = w;
    r->watch = watch;
    r->started_ms = pf_now_ms();
    r->max = watch ? ERROR_BODY_MAX : k->kc->max_list_bytes;
    k8s_lines_init(&r->lines, k->kc->max_line_bytes);
    refresh_token(k);
    char auth[TOKEN_MAX + 32];
    r->headers = curl_slist_append(NULL, "Accept: application/json");
    const char *token = k->token && k->token[0] ? k->token : k->static_token;
    if (r->headers && token && token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        struct curl_slist *h = curl_slist_append(r->headers, auth);
        if (h)
            r->headers = h;
    }
    r->easy = curl_easy_init();
    if (!r->easy || !r->headers) {
        curl_slist_free_all(r->headers);
        if (r->easy)
            curl_easy_cleanup(r->easy);
        free(r);
        return NULL;
    }
    return r;
}

static void req_free(k8s_req *r) {
    if (!r)
        return;
    pf_k8s *k = r->w->k;
    if (r->running && --k->reqs_running == 0 && k->kc->http2) {
        /* A stream ended early (watch let go, stalled, handed over) is reset with RST_STREAM,
         * which libcurl 7.88 only queues: it leaves with the connection's next write, or
         * when bytes of another stream come in. With no other request left nothing comes,
         * and the API server would keep serving the dead watch: the connection closes
         * instead (the next request opens a new one). */
        curl_easy_setopt(r->easy, CURLOPT_FORBID_REUSE, 1L);
    }
    if (r->easy) {
        curl_multi_remove_handle(r->w->k->multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    curl_slist_free_all(r->headers);
    k8s_lines_free(&r->lines);
    free(r->body);
    free(r);
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg);

static int req_start(k8s_req *r, const char *url) {
    pf_k8s *k = r->w->k;
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "pilotfish");
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
    if (k->kc->http2) {
        /* h2 through ALPN, HTTP/1.1 when the server does not offer it. PIPEWAIT: while the
         * first connection is still being set up, further requests wait to learn whether it
         * multiplexes instead of each opening its own (one TLS handshake per sidecar, not one
         * per watch). */
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    }
    /* A watch that stalled may sit on a connection that died without a word (no FIN, no
     * RST): on HTTP/2 every other stream would be put on it again. Its next request opens a
     * new connection; the dead one goes once its last stream has stalled too. */
    if (r->w->fresh_connect) {
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        r->w->fresh_connect = false;
    }
    /* TLS is always verified, against the cluster CA when we have one. */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (k->ca_file[0]) {
        curl_easy_setopt(e, CURLOPT_CAINFO, k->ca_file);
    } else if (k->ca_blob) {
        struct curl_blob ca = {k->ca_blob, k->ca_blob_len, CURL_BLOB_NOCOPY};
        curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &ca);
    }
    if (k->cert_blob) {
        struct curl_blob cert = {k->cert_blob, k->cert_blob_len, CURL_BLOB_NOCOPY};
        curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &cert);
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
    } else if (k->cert_file[0]) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, k->cert_file);
    }
    if (k->key_blob) {
        struct curl_blob key = {k->key_blob, k->key_blob_len, CURL_BLOB_NOCOPY};
        curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &key);
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
    } else if (k->key_file[0]) {
        curl_easy_setopt(e, CURLOPT_SSLKEY, k->key_file);
    }
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)k->kc->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    if (!r->watch)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)k->kc->request_timeout_ms);
    else /* held for as long as the watch runs: events are small, pieces are fine */
        curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)K8S_WATCH_RECV_BUFFER);
    if (curl_multi_add_handle(k->multi, e) != CURLM_OK)
        return PF_ENOMEM;
    r->running = true;
    k->reqs_running++;
    return PF_OK;
}

static void base_path(const k8s_watch *w, char *out, size_t cap) {
    const char *group = resource_groups[w->kind];
    if (w->view->ns[0])
        snprintf(out, cap, "%s/%s/namespaces/%s/%s", w->k->api, group, w->view->ns,
                 resource_names[w->kind]);
    else
        snprintf(out, cap, "%s/%s/%s", w->k->api, group, resource_names[w->kind]);
}

static void stall_arm(k8s_watch *w) {
    struct timeval tv = pf_timeval_ms(w->k->kc->stall_timeout_ms);
    evtimer_add(w->stall, &tv);
}

/* Starts the list or watch request; on failure (out of memory) retries after a backoff. */
static bool watch_send(k8s_watch *w, const char *url, bool watch) {
    k8s_req *r = req_new(w, url, watch);
    if (!r || req_start(r, url) != PF_OK) {
        req_free(r);
        log_error("kubernetes: out of memory starting a %s of %s", watch ? "watch" : "list",
                  resource_names[w->kind]);
        watch_schedule(w, backoff_ms(w->k, ++w->failures));
        return false;
    }
    w->req = r;
    return true;
}

static void watch_list(k8s_watch *w) {
    char path[PATH_MAX_K8S], url[URL_MAX], cont[CONT_MAX] = "";
    base_path(w, path, sizeof path);
    if (w->cont && !url_encode(cont, sizeof cont, w->cont)) {
        free(w->cont);
        w->cont = NULL;
        cont[0] = '\0';
    }
    if (!w->cont) {
        k8s_map_each(&w->fresh, free_object_cb, NULL);
        k8s_map_clear(&w->fresh);
    }
    snprintf(url, sizeof url, "%s?limit=%u%s%s%s", path, w->k->kc->page_size, w->selector,
             cont[0] ? "&continue=" : "", cont);
    if (!watch_send(w, url, false))
        return;
    log_debug("kubernetes: list resource=%s scope=\"%s\" page=%s", resource_names[w->kind],
              w->scope, w->cont ? "next" : "first");
}

static void watch_watch(k8s_watch *w) {
    char path[PATH_MAX_K8S], url[URL_MAX], rv[K8S_RV_MAX * 3 + 1];
    base_path(w, path, sizeof path);
    url_encode(rv, sizeof rv, w->rv);
    unsigned timeout = WATCH_MIN_TIMEOUT_S +
                       (unsigned)(k8s_random(w->k) % (WATCH_MAX_TIMEOUT_S - WATCH_MIN_TIMEOUT_S));
    snprintf(url, sizeof url,
             "%s?watch=1&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%u%s", path, rv,
             timeout, w->selector);
    if (!watch_send(w, url, true))
        return;
    metrics_inc(w->connects, 1);
    stall_arm(w);
    log_debug("kubernetes: watch resource=%s scope=\"%s\" resource_version=%s",
              resource_names[w->kind], w->scope, w->rv);
}

static void on_watch_timer(evutil_socket_t fd, short what, void *arg) {
    k8s_watch *w = arg;
    if (w->k->stopping)
        return;
    if (w->need_list || !w->rv[0])
        watch_list(w);
    else
        watch_watch(w);
}

static void watch_schedule(k8s_watch *w, uint64_t delay_ms) {
    struct timeval tv = pf_timeval_ms(delay_ms);
    evtimer_add(w->timer, &tv);
}

/* Applies one object change to the store and the view. Takes `obj` (may be NULL for a
 * deletion of `key`). */
static void store_apply(k8s_watch *w, const char *key, k8s_object *obj) {
    k8s_object *old = NULL;
    if (obj) {
        if (k8s_map_put(&w->store, obj->key, obj, (void **)&old) != PF_OK) {
            log_error("kubernetes: out of memory storing %s", obj->key);
            k8s_object_free(obj);
            return;
        }
    } else {
        old = k8s_map_del(&w->store, key);
        if (!old)
            return;
    }
    view_changed(w->view, old, obj);
    k8s_object_free(old);
}

typedef struct diff_ctx {
    k8s_watch *w;
    char **gone;
    size_t gone_count;
    bool oom;
} diff_ctx;

static void collect_gone(void *arg, void *value) {
    diff_ctx *d = arg;
    k8s_object *o = value;
    if (d->oom || k8s_map_get(&d->w->fresh, o->key))
        return;
    char **g = realloc(d->gone, (d->gone_count + 1) * sizeof *g);
    if (!g || !(g[d->gone_count] = strdup(o->key))) {
        d->gone = g ? g : d->gone;
        d->oom = true;
        return;
    }
    d->gone = g;
    d->gone_count++;
}

static void collect_fresh(void *arg, void *value) {
    k8s_object ***list = arg;
    *(*list)++ = value;
}

/* A finished list becomes the store as a diff: unchanged objects (same resourceVersion)
 * are kept as they are, so the clusters they feed see no change and publish nothing. */
static void apply_list(k8s_watch *w) {
    diff_ctx d = {.w = w};
    k8s_map_each(&w->store, collect_gone, &d);
    for (size_t i = 0; i < d.gone_count; i++) {
        store_apply(w, d.gone[i], NULL);
        free(d.gone[i]);
    }
    free(d.gone);
    size_t n = w->fresh.count;
    k8s_object **all = calloc(n ? n : 1, sizeof *all), **end = all;
    if (!all) {
        log_error("kubernetes: out of memory applying a list of %s", resource_names[w->kind]);
        return;
    }
    k8s_map_each(&w->fresh, collect_fresh, &end);
    k8s_map_clear(&w->fresh);
    size_t changed = 0;
    for (size_t i = 0; i < n; i++) {
        k8s_object *old = k8s_map_get(&w->store, all[i]->key);
        if (old && all[i]->rv[0] && strcmp(old->rv, all[i]->rv) == 0) {
            k8s_object_free(all[i]);
            continue;
        }
        changed++;
        store_apply(w, all[i]->key, all[i]);
    }
    free(all);
    log_info("kubernetes: listed resource=%s scope=\"%s\" objects=%zu changed=%zu deleted=%zu "
             "resource_version=%s",
             resource_names[w->kind], w->scope, n, changed, d.gone_count, w->rv);
}

/* ---- responses -------------------------------------------------------------------------- */

static int on_line(void *arg, const char *line, size_t len) {
    k8s_req *r = arg;
    k8s_watch *w = r->w;
    char why[K8S_WHY_MAX];
    k8s_event ev;
    if (k8s_event_parse(line, len, &ev, why) != PF_OK) {
        snprintf(r->abort_why, sizeof r->abort_why, "%s", why);
        return PF_K8S_EMALFORMED;
    }
    int rc = 0;
    metrics_inc(w->events[ev.type], 1);
    w->last_event_ms = pf_now_ms();
    w->last_event_wall_us = pf_wall_us();
    r->events++;
    switch (ev.type) {
    case K8S_EV_ERROR:
        snprintf(r->abort_why, sizeof r->abort_why, "ERROR event %d %.200s", ev.code, ev.message);
        if (ev.code)
            count_http(w->k, ev.code);
        rc = ev.code == 410 ? PF_K8S_EGONE : PF_K8S_EHTTP;
        break;
    case K8S_EV_BOOKMARK:
        break;
    case K8S_EV_DELETED:
    case K8S_EV_ADDED:
    case K8S_EV_MODIFIED: {
        k8s_object *obj = NULL;
        int prc = k8s_object_parse(ev.object, w->kind, &obj, why);
        if (prc == PF_ENOMEM) {
            snprintf(r->abort_why, sizeof r->abort_why, "out of memory");
            rc = PF_K8S_ENOMEM;
            break;
        }
        if (prc != PF_OK) {
            /* One bad object is skipped, not a reason to drop the stream. */
            metrics_inc(w->k->failures[FAIL_MALFORMED], 1);
            log_debug("kubernetes: skipped an object resource=%s why=\"%s\"",
                      resource_names[w->kind], why);
            break;
        }
        if (ev.type == K8S_EV_DELETED) {
            char key[K8S_KEY_MAX];
            memcpy(key, obj->key, sizeof key);
            k8s_object_free(obj);
            store_apply(w, key, NULL);
        } else {
            store_apply(w, obj->key, obj);
        }
        break;
    }
    default:
        break;
    }
    if (rc == 0 && ev.rv[0])
        snprintf(w->rv, sizeof w->rv, "%s", ev.rv);
    if (rc == 0)
        w->down_since_ms = 0;
    json_decref(ev.root);
    return rc;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg) {
    k8s_req *r = arg;
    size_t n = size * nmemb;
    if (!r->status)
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->watch && r->status == 200) {
        stall_arm(r->w);
        int rc = k8s_lines_feed(&r->lines, data, n, on_line, r);
        if (rc == 0)
            return n;
        if (rc == K8S_ELINE) {
            r->abort = PF_K8S_ETOOLONG;
            snprintf(r->abort_why, sizeof r->abort_why, "a watch event is longer than %u bytes",
                     r->w->k->kc->max_line_bytes);
        } else {
            r->abort = rc == PF_ENOMEM ? PF_K8S_ENOMEM : rc;
        }
        return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
    }
    if (r->len + n > r->max) {
        if (r->status == 200) {
            r->abort = PF_K8S_ETOOLONG;
            snprintf(r->abort_why, sizeof r->abort_why, "a list page is larger than %zu bytes",
                     r->max);
            return 0;
        }
        n = r->max - r->len; /* an error body: keep its start */
        if (n == 0)
            return size * nmemb;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 16384;
        while (cap < r->len + n + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) {
            r->abort = PF_K8S_ENOMEM;
            return 0;
        }
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return size * nmemb;
}

/* Parses a list page into w->fresh; returns PF_K8S_OK or PF_K8S_EMALFORMED/ENOMEM. */
static int take_page(k8s_watch *w, k8s_req *r, char *why, size_t cap) {
    json_error_t jerr;
    json_t *root = r->body ? json_loadb(r->body, r->len, 0, &jerr) : NULL;
    json_t *items = json_object_get(root, "items");
    json_t *meta = json_object_get(root, "metadata");
    if (!root || !(json_is_array(items) || json_is_null(items)) || !json_is_object(meta)) {
        snprintf(why, cap, "list body is not a list: %s",
                 root ? "no items or metadata" : jerr.text);
        json_decref(root);
        return PF_K8S_EMALFORMED;
    }
    for (size_t i = 0; i < json_array_size(items); i++) {
        char pwhy[K8S_WHY_MAX];
        k8s_object *obj = NULL, *old = NULL;
        int rc = k8s_object_parse(json_array_get(items, i), w->kind, &obj, pwhy);
        if (rc == PF_ENOMEM) {
            json_decref(root);
            return PF_K8S_ENOMEM;
        }
        if (rc != PF_OK) {
            metrics_inc(w->k->failures[FAIL_MALFORMED], 1);
            log_debug("kubernetes: skipped an object resource=%s why=\"%s\"",
                      resource_names[w->kind], pwhy);
            continue;
        }
        if (k8s_map_put(&w->fresh, obj->key, obj, (void **)&old) != PF_OK) {
            k8s_object_free(obj);
            json_decref(root);
            return PF_K8S_ENOMEM;
        }
        k8s_object_free(old);
    }
    const char *rv = json_string_value(json_object_get(meta, "resourceVersion"));
    const char *cont = json_string_value(json_object_get(meta, "continue"));
    snprintf(w->rv, sizeof w->rv, "%s", rv ? rv : "");
    free(w->cont);
    w->cont = cont && *cont ? strdup(cont) : NULL;
    json_decref(root);
    return PF_K8S_OK;
}

/* The HTTP status of a failed request as a pf_k8s_status, logging 403 once. */
static int http_failure(k8s_watch *w, k8s_req *r, const char *verb) {
    pf_k8s *k = w->k;
    int code = 0;
    char message[K8S_WHY_MAX] = "";
    json_t *status = r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    if (status)
        k8s_status_parse(status, &code, message, sizeof message);
    json_decref(status);
    count_http(k, r->status);
    const char *ns = w->view->ns[0] ? w->view->ns : "all namespaces";
    switch (r->status) {
    case 401:
        log_warn("kubernetes: %s %s in \"%s\": 401 Unauthorized; re-reading the token from %s "
                 "and retrying (%s)",
                 verb, resource_names[w->kind], ns, k->token_file[0] ? k->token_file : "(none)",
                 message);
        watch_note_error(w, "%s %s: 401 Unauthorized", verb, resource_names[w->kind]);
        return PF_K8S_EUNAUTHORIZED;
    case 403:
        if (!w->forbidden_logged)
            log_error("kubernetes: %s %s in \"%s\": 403 Forbidden; the service account needs "
                      "get/list/watch on %s%s%s (%s)",
                      verb, resource_names[w->kind], ns, resource_rbac[w->kind],
                      w->view->ns[0] ? " in namespace " : " cluster-wide",
                      w->view->ns[0] ? w->view->ns : "", message);
        w->forbidden_logged = true;
        watch_note_error(w, "%s %s in \"%s\": 403 Forbidden", verb, resource_names[w->kind], ns);
        return PF_K8S_EFORBIDDEN;
    case 410:
        return PF_K8S_EGONE;
    default:
        log_warn("kubernetes: %s %s in \"%s\": HTTP %ld (%s); retrying", verb,
                 resource_names[w->kind], ns, r->status, message);
        watch_note_error(w, "%s %s: HTTP %ld %s", verb, resource_names[w->kind], r->status,
                         message);
        return PF_K8S_EHTTP;
    }
}

static int transport_failure(k8s_watch *w, k8s_req *r, CURLcode cc, const char *verb) {
    bool timeout = cc == CURLE_OPERATION_TIMEDOUT;
    metrics_inc(w->k->failures[timeout ? FAIL_TIMEOUT : FAIL_TRANSPORT], 1);
    log_warn("kubernetes: %s %s failed: %s; retrying server=%s", verb, resource_names[w->kind],
             r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc), w->k->api);
    watch_note_error(w, "%s %s: %s", verb, resource_names[w->kind],
                     r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc));
    return timeout ? PF_K8S_ETIMEOUT : PF_K8S_ETRANSPORT;
}

/* The wait before retrying a failed request: the backoff, and when the API server said how
 * long to stay away (429 Too Many Requests or 503 with Retry-After, as API priority and
 * fairness does) at least that, plus the jitter so that the sidecars it told the same
 * time do not all come back in the same second. */
static uint64_t retry_delay_ms(k8s_watch *w, k8s_req *r) {
    uint64_t d = backoff_ms(w->k, ++w->failures);
    curl_off_t after = 0;
    if (r && r->easy && (r->status == 429 || r->status == 503) &&
        curl_easy_getinfo(r->easy, CURLINFO_RETRY_AFTER, &after) == CURLE_OK && after > 0) {
        if (after > K8S_RETRY_AFTER_MAX_S)
            after = K8S_RETRY_AFTER_MAX_S;
        log_info("kubernetes: %s %s: HTTP %ld with Retry-After %llds; waiting that long",
                 r->watch ? "watch" : "list", resource_names[w->kind], r->status, (long long)after);
        d += (uint64_t)after * 1000u;
    }
    return d;
}

static void feed_listed(k8s_view *feed);
static void rejoin_listed(k8s_watch *w);

/* ---- the HTTPRoute kind may not exist ------------------------------------------------------ */

static bool route_kind_missing_elsewhere(const k8s_watch *w) {
    for (size_t i = 0; i < w->k->route_view_count; i++)
        if (w->k->route_views[i]->watches[0] != w && w->k->route_views[i]->watches[0]->kind_missing)
            return true;
    return false;
}

/* HTTPRoutes are a CRD (the Gateway API's), not part of every cluster: a 404 on their list
 * means the kind is not installed, not a failure. Then there are no HTTPRoutes (a complete,
 * empty answer: /ready does not wait for it, and routes that were there go, as when the CRD
 * is deleted), it is said once, and the list is tried again every http_routes_recheck (a
 * random point in its second half, so that a fleet does not come back at once) until the
 * kind exists, when its routes apply without a restart. */
static void route_kind_missing(k8s_watch *w, k8s_req *r) {
    pf_k8s *k = w->k;
    count_http(k, r->status);
    if (!w->kind_missing && !route_kind_missing_elsewhere(w)) {
        char every[32];
        log_warn("kubernetes: %s is not installed (the API server answers 404 for its list); no "
                 "HTTPRoute applies; listing it again every %s",
                 resource_rbac[w->kind],
                 pf_duration_format(k->kc->http_routes_recheck_ms, every, sizeof every));
    }
    w->kind_missing = true;
    free(w->cont);
    w->cont = NULL;
    k8s_map_each(&w->fresh, free_object_cb, NULL);
    k8s_map_clear(&w->fresh);
    if (w->store.count)
        apply_list(w); /* nothing fresh: every route held goes */
    w->rv[0] = '\0';
    w->synced = true;
    w->failures = 0;
    w->need_list = true;
    uint64_t half = k->kc->http_routes_recheck_ms / 2;
    watch_schedule(w, half + k8s_random(k) % (half + 1));
}

static void route_kind_found(k8s_watch *w) {
    w->kind_missing = false;
    if (!route_kind_missing_elsewhere(w))
        log_info("kubernetes: %s is installed now; applying HTTPRoutes", resource_rbac[w->kind]);
}

static void list_done(k8s_watch *w, k8s_req *r, CURLcode cc) {
    pf_k8s *k = w->k;
    char why[K8S_WHY_MAX] = "";
    int st;
    if (r->abort)
        st = r->abort;
    else if (cc != CURLE_OK)
        st = transport_failure(w, r, cc, "list");
    else if (r->status == 404 && w->kind == K8S_KIND_HTTPROUTE) {
        route_kind_missing(w, r);
        return;
    } else if (r->status != 200)
        st = http_failure(w, r, "list");
    else
        st = take_page(w, r, why, sizeof why);
    if (st == PF_K8S_ETOOLONG)
        metrics_inc(k->failures[FAIL_TOOLONG], 1);
    if (st == PF_K8S_EMALFORMED) {
        metrics_inc(k->failures[FAIL_MALFORMED], 1);
        log_warn("kubernetes: list %s: %s; retrying", resource_names[w->kind], why);
    }
    if (st == PF_K8S_OK) {
        if (w->cont) {
            watch_list(w); /* next page */
            return;
        }
        if (w->synced)
            metrics_inc(w->relists, 1);
        if (w->kind_missing)
            route_kind_found(w);
        apply_list(w);
        w->down_since_ms = 0;
        w->failures = 0;
        w->forbidden_logged = false;
        w->need_list = false;
        w->last_event_ms = pf_now_ms();
        w->last_event_wall_us = pf_wall_us();
        if (!w->synced) {
            w->synced = true;
            k8s_map_each(&w->view->svcs, mark_all_dirty_cb, NULL);
            /* A Service asked for on demand is known now, present or missing: the routes
             * say which, and the requests waiting for it learn it from them. */
            if (w->view->on_demand) {
                k->routes_changed = true;
                schedule_flush(k);
            }
        }
        if (w->view->feed)
            feed_listed(w->view);
        else if (w->rejoin_pending)
            rejoin_listed(w);
        watch_watch(w);
        return;
    }
    /* A continue token expires like a resourceVersion (410): start the list over. */
    free(w->cont);
    w->cont = NULL;
    if (st == PF_K8S_ETOOLONG || st == PF_K8S_ENOMEM)
        log_error("kubernetes: list %s: %s; retrying", resource_names[w->kind],
                  r->abort_why[0] ? r->abort_why : discovery_k8s_strerror(st));
    watch_schedule(w, st == PF_K8S_EGONE ? relist_delay_ms(k) : retry_delay_ms(w, r));
}

static void watch_done(k8s_watch *w, k8s_req *r, CURLcode cc) {
    pf_k8s *k = w->k;
    uint64_t now = pf_now_ms(), lasted = now - r->started_ms;
    evtimer_del(w->stall);
    if (!w->down_since_ms || lasted >= WATCH_HEALTHY_MS)
        w->down_since_ms = now;
    int st;
    if (r->abort)
        st = r->abort;
    else if (cc != CURLE_OK)
        st = transport_failure(w, r, cc, "watch");
    else if (r->status == 404 && w->kind == K8S_KIND_HTTPROUTE) {
        /* the kind went (its CRD was deleted): the list says so, and what it means */
        w->need_list = true;
        watch_schedule(w, backoff_ms(k, ++w->failures));
        return;
    } else if (r->status != 200)
        st = http_failure(w, r, "watch");
    else
        st = PF_K8S_ECLOSED;
    switch (st) {
    case PF_K8S_EGONE:
        /* The resourceVersion was compacted away: relist, and apply it as a diff. */
        log_info("kubernetes: watch %s: resourceVersion %s is gone (410); relisting",
                 resource_names[w->kind], w->rv);
        w->need_list = true;
        /* The relist's random point counts from when the stream broke: the reconnects
         * that led here were spread by their own backoff, and waiting the whole window
         * again after them would put a restarted API server's last relists at reconnect
         * time + backoff.max instead of within backoff.max. */
        {
            uint64_t delay = relist_delay_ms(k), waited = now - w->down_since_ms;
            watch_schedule(w, delay > waited ? delay - waited : 0);
        }
        return;
    case PF_K8S_ECLOSED:
        /* A normal end (timeoutSeconds, API server restart): resume from the last
         * resourceVersion at once, unless streams keep ending right away. */
        log_debug("kubernetes: watch ended resource=%s events=%zu lasted_ms=%llu",
                  resource_names[w->kind], r->events, (unsigned long long)lasted);
        if (lasted >= WATCH_HEALTHY_MS || r->events > 0) {
            /* Resumed within the base window, not at once: an API server that shuts down
             * ends every stream of the fleet at the same moment. */
            w->failures = 0;
            watch_schedule(w, backoff_ms(k, 1));
        } else {
            watch_schedule(w, backoff_ms(k, ++w->failures));
        }
        return;
    case PF_K8S_EMALFORMED:
        metrics_inc(k->failures[FAIL_MALFORMED], 1);
        log_warn("kubernetes: watch %s: %s; resuming from resource_version=%s",
                 resource_names[w->kind], r->abort_why, w->rv);
        watch_note_error(w, "watch %s: %s", resource_names[w->kind], r->abort_why);
        break;
    case PF_K8S_ETOOLONG:
        metrics_inc(k->failures[FAIL_TOOLONG], 1);
        log_error("kubernetes: watch %s: %s; raise $.kubernetes.max_line_bytes if objects are "
                  "this large",
                  resource_names[w->kind], r->abort_why);
        watch_note_error(w, "watch %s: %s", resource_names[w->kind], r->abort_why);
        break;
    case PF_K8S_EHTTP:
        if (r->abort)
            log_warn("kubernetes: watch %s: %s; resuming", resource_names[w->kind], r->abort_why);
        break;
    default:
        break;
    }
    if (lasted >= WATCH_HEALTHY_MS && st != PF_K8S_EUNAUTHORIZED && st != PF_K8S_EFORBIDDEN)
        w->failures = 0;
    watch_schedule(w, retry_delay_ms(w, r));
}

static void on_stall(evutil_socket_t fd, short what, void *arg) {
    k8s_watch *w = arg;
    if (!w->req || !w->req->watch)
        return;
    metrics_inc(w->k->failures[FAIL_STALLED], 1);
    log_warn("kubernetes: watch %s stalled: nothing for %llums, not even a bookmark; "
             "reconnecting from resource_version=%s",
             resource_names[w->kind], (unsigned long long)w->k->kc->stall_timeout_ms, w->rv);
    watch_note_error(w, "watch %s stalled", resource_names[w->kind]);
    w->fresh_connect = true;
    req_free(w->req);
    w->req = NULL;
    watch_schedule(w, backoff_ms(w->k, ++w->failures));
}

static void check_done(pf_k8s *k) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(k->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        k8s_req *r = NULL;
        CURLcode cc = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (!r)
            continue;
        if (!r->status)
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
        k8s_watch *w = r->w;
        w->req = NULL;
        r->running = false;
        k->reqs_running--;
        if (r->watch)
            watch_done(w, r, cc);
        else
            list_done(w, r, cc);
        req_free(r);
    }
}

/* ---- publishing ----------------------------------------------------------------------------- */

/* A resolver of our own for one name (discovery/dns.h adds clusters only before start):
 * a copy of `base` made a DNS cluster for name:port (A records), publishing into slot. */
static pf_dns *dns_child_new(pf_k8s *k, const pf_config_cluster *base, const char *name,
                             uint16_t port, pf_endpoint_slot *slot, pf_config_cluster **cfg_out,
                             pf_error *err) {
    pf_config_cluster *cfg = malloc(sizeof *cfg);
    pf_dns *dns = NULL;
    if (!cfg) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    *cfg = *base;
    cfg->endpoints = NULL;
    cfg->endpoint_count = 0;
    /* $.clusters[].dns as if the file had said {"name": name, "port": port}: the schema's
     * defaults (A records, refresh and hold), so this cluster refreshes like a written one */
    pf_config_cluster_dns *d = &cfg->dns;
    config_cluster_dns_defaults(d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->port = port;
    dns = discovery_dns_new(k->base, k->cfg, k->dns_metrics, err);
    if (!dns || discovery_dns_add(dns, cfg, slot, err) != PF_OK ||
        discovery_dns_start(dns, err) != PF_OK) {
        discovery_dns_free(dns);
        free(cfg);
        return NULL;
    }
    *cfg_out = cfg;
    return dns;
}

static void binding_stop_dns(k8s_binding *b) {
    discovery_dns_free(b->dns);
    b->dns = NULL;
    free(b->dns_cfg);
    b->dns_cfg = NULL;
}

/* ExternalName: the cluster resolves the external name through DNS. */
static void binding_external(k8s_binding *b, const k8s_service *svc) {
    pf_k8s *k = b->svc->view->k;
    uint32_t port = b->want_number ? b->want_number : b->svc_port;
    for (size_t i = 0; !port && i < svc->port_count; i++)
        if (b->want_name[0] ? strcmp(svc->ports[i].name, b->want_name) == 0
                            : (int)i == k8s_default_port(svc))
            port = (uint32_t)svc->ports[i].port;
    if (b->dns && strcmp(b->dns_cfg->dns.name, svc->external_name) == 0 &&
        b->dns_cfg->dns.port == port)
        return;
    binding_stop_dns(b);
    if (!port) {
        snprintf(b->last_error, sizeof b->last_error,
                 "ExternalName Service %s has no port to dial; name one in \"port\"", b->svc->key);
        b->last_error_wall_us = pf_wall_us();
        discovery_slot_publish(b->slot, discovery_set_new(NULL, 0));
        return;
    }
    pf_error err = {{0}};
    b->dns = dns_child_new(k, b->cluster, svc->external_name, (uint16_t)port, b->slot, &b->dns_cfg,
                           &err);
    if (!b->dns) {
        log_error("kubernetes: ExternalName %s -> %s: %s", b->svc->key, svc->external_name,
                  err.msg);
        return;
    }
    log_info("kubernetes: cluster=%s is ExternalName %s:%u, resolved through DNS", b->cluster_name,
             svc->external_name, port);
}

/* One name of an FQDN EndpointSlice, resolved on its own into a private slot; every change
 * of its addresses rebuilds the cluster. */
typedef struct k8s_fqdn {
    k8s_binding *b;
    char name[PF_DNS_NAME_MAX];
    uint16_t port;
    pf_dns *dns;
    pf_config_cluster *cfg;
    pf_endpoint_slot *slot;
    pf_endpoint_set *held; /* acquired for one build */
    bool used;
    struct k8s_fqdn *next;
} k8s_fqdn;

static void on_fqdn_changed(void *arg) {
    k8s_fqdn *f = arg;
    mark_dirty(f->b->svc);
}

static void fqdn_free(k8s_fqdn *f) {
    discovery_dns_free(f->dns); /* publishes nothing more */
    discovery_slot_unsubscribe(f->slot, on_fqdn_changed, f);
    discovery_set_unref(f->held);
    discovery_slot_free(f->slot);
    free(f->cfg);
    free(f);
}

static const pf_endpoint_set *fqdn_lookup(void *arg, const char *name, uint16_t port) {
    k8s_binding *b = arg;
    k8s_fqdn *f = b->fqdns;
    while (f && !(f->port == port && strcmp(f->name, name) == 0))
        f = f->next;
    if (!f) {
        pf_error err = {{0}};
        if (b->fqdn_count >= K8S_MAX_FQDN_NAMES || !(f = calloc(1, sizeof *f)) ||
            !(f->slot = discovery_slot_new(name))) {
            free(f);
            log_warn("kubernetes: cluster=%s: cannot resolve FQDN endpoint %s (at most %d names)",
                     b->cluster_name, name, K8S_MAX_FQDN_NAMES);
            return NULL;
        }
        f->b = b;
        f->port = port;
        snprintf(f->name, sizeof f->name, "%s", name);
        discovery_slot_subscribe(f->slot, on_fqdn_changed, f);
        if (!(f->dns =
                  dns_child_new(b->svc->view->k, b->cluster, name, port, f->slot, &f->cfg, &err))) {
            log_error("kubernetes: cluster=%s: FQDN endpoint %s: %s", b->cluster_name, name,
                      err.msg);
            fqdn_free(f);
            return NULL;
        }
        f->next = b->fqdns;
        b->fqdns = f;
        b->fqdn_count++;
    }
    f->used = true;
    if (!f->held)
        f->held = discovery_slot_acquire(f->slot);
    return f->held;
}

/* After a build: drop the sets held for it, and the resolvers no slice names any more. */
static void fqdn_sweep(k8s_binding *b, bool keep_all) {
    for (k8s_fqdn **p = &b->fqdns; *p;) {
        k8s_fqdn *f = *p;
        discovery_set_unref(f->held);
        f->held = NULL;
        if (f->used || keep_all) {
            f->used = false;
            p = &f->next;
            continue;
        }
        *p = f->next;
        b->fqdn_count--;
        fqdn_free(f);
    }
}

static void binding_publish(k8s_binding *b) {
    k8s_svc *s = b->svc;
    k8s_view *v = s->view;
    if (!v->watches[K8S_KIND_SERVICE]->synced || !v->watches[K8S_KIND_SLICE]->synced)
        return;
    const k8s_service *svc = s->service ? &s->service->u.service : NULL;
    if (svc && svc->external) {
        binding_external(b, svc);
        return;
    }
    if (b->dns)
        binding_stop_dns(b);
    k8s_port_pick pick = k8s_pick_port(svc, b->want_name, b->want_number);
    pf_endpoint *eps = NULL;
    k8s_build_stats st;
    size_t n = k8s_build_endpoints(s->slices, s->slice_count, &pick, fqdn_lookup, b, &eps, &st);
    fqdn_sweep(b, eps == NULL);
    pf_endpoint_set *set = eps ? discovery_set_new(eps, n) : NULL;
    free(eps);
    if (!set) {
        log_error("kubernetes: out of memory building cluster=%s", b->cluster_name);
        return;
    }
    if (st.used_terminating && !b->using_terminating)
        log_info("kubernetes: cluster=%s has no ready endpoint; %zu terminating endpoints that "
                 "still serve stand in",
                 b->cluster_name, st.serving_only);
    b->using_terminating = st.used_terminating;
    b->endpoints = n;
    b->published = true;
    if (discovery_slot_publish(b->slot, set)) {
        b->publishes++;
        log_debug("kubernetes: published cluster=%s endpoints=%zu ready=%zu terminating=%zu "
                  "resource_version=%s wall_us=%llu",
                  b->cluster_name, n, st.ready, st.serving_only, v->watches[K8S_KIND_SLICE]->rv,
                  (unsigned long long)pf_wall_us());
    }
}

/* ---- auto-discovery: one cluster per Service port ------------------------------------------ */

static void port_view(const k8s_binding *b, pf_k8s_service_port *out) {
    out->namespace = b->svc->ns;
    out->service = b->svc->name;
    out->port_name = b->want_name;
    out->port = b->svc_port;
    out->is_default = b->is_default;
}

static void binding_free(k8s_binding *b) {
    binding_stop_dns(b);
    while (b->fqdns) {
        k8s_fqdn *f = b->fqdns;
        b->fqdns = f->next;
        fqdn_free(f);
    }
    free(b->owned);
    free(b);
}

static void binding_remove(pf_k8s *k, k8s_binding *b) {
    pf_k8s_service_port p;
    port_view(b, &p);
    if (k->cb.port_removed)
        k->cb.port_removed(k->cb.arg, &p, b->cookie);
    log_info("kubernetes: service port removed cluster=%s", b->cluster_name);
    binding_free(b);
    k->routes_changed = true;
}

/* Makes the Service's bindings match its TCP ports (auto-discovery only). */
static void sync_ports(k8s_svc *s) {
    pf_k8s *k = s->view->k;
    const k8s_service *svc = s->service ? &s->service->u.service : NULL;
    int def = k8s_default_port(svc);
    /* drop bindings whose port is gone */
    for (k8s_binding **p = &s->bindings; *p;) {
        k8s_binding *b = *p;
        bool keep = false;
        for (size_t i = 0; svc && i < svc->port_count && !keep; i++)
            keep = svc->ports[i].tcp && svc->ports[i].port == b->svc_port &&
                   strcmp(svc->ports[i].name, b->want_name) == 0;
        if (keep) {
            p = &b->next;
            continue;
        }
        *p = b->next;
        binding_remove(k, b);
    }
    for (size_t i = 0; svc && i < svc->port_count; i++) {
        const k8s_port *sp = &svc->ports[i];
        k8s_binding *b = s->bindings;
        while (b && !(b->svc_port == sp->port && strcmp(b->want_name, sp->name) == 0))
            b = b->next;
        if (b) {
            if (b->is_default != ((int)i == def)) {
                b->is_default = (int)i == def;
                k->routes_changed = true;
            }
            continue;
        }
        if (!sp->tcp)
            continue;
        if (!(b = calloc(1, sizeof *b)) || !(b->owned = malloc(sizeof *b->owned))) {
            free(b);
            log_error("kubernetes: out of memory adding %s port %d", s->key, sp->port);
            continue;
        }
        b->svc = s;
        b->svc_port = (uint16_t)sp->port;
        b->is_default = (int)i == def;
        snprintf(b->want_name, sizeof b->want_name, "%s", sp->name);
        /* named ports are picked by name; an unnamed (only) port by number */
        b->want_number = sp->name[0] ? 0 : (uint32_t)sp->port;
        *b->owned = *k->kc->auto_cluster;
        int len =
            snprintf(b->owned->name, sizeof b->owned->name, "%s.%s:%d", s->name, s->ns, sp->port);
        if (len < 0 || (size_t)len >= sizeof b->owned->name)
            log_warn("kubernetes: cluster name cut to %s", b->owned->name);
        memcpy(b->cluster_name, b->owned->name, sizeof b->cluster_name);
        b->cluster = b->owned;
        pf_k8s_service_port p;
        port_view(b, &p);
        b->slot = k->cb.port_added ? k->cb.port_added(k->cb.arg, &p, b->owned, &b->cookie) : NULL;
        if (!b->slot) {
            binding_free(b);
            k->ports_refused = true;
            continue;
        }
        log_info("kubernetes: service port added cluster=%s", b->cluster_name);
        b->next = s->bindings;
        s->bindings = b;
        k->routes_changed = true;
    }
}

static void feed_adopt(pf_k8s *k);
static bool httproute_lists_in(const pf_k8s *k);

static void on_flush(evutil_socket_t fd, short what, void *arg) {
    pf_k8s *k = arg;
    uint64_t now = pf_now_us();
    if (!k->stopping)
        feed_adopt(k);
    for (size_t i = 0; i < k->view_count; i++) {
        k8s_view *v = k->views[i];
        if (v->pending_since_us)
            metrics_observe_us(k->event_to_publish, now - v->pending_since_us);
        v->pending_since_us = 0;
    }
    while (k->dirty && !k->stopping) {
        k8s_svc *s = k->dirty;
        k->dirty = s->next_dirty;
        s->dirty = false;
        s->next_dirty = NULL;
        k8s_view *v = s->view;
        /* On demand, a port's cluster comes with its first set: a request that waited for
         * the Service is routed only once there is something to pick from. */
        if (v->auto_discover && v->watches[K8S_KIND_SERVICE]->synced &&
            (!v->on_demand || v->watches[K8S_KIND_SLICE]->synced))
            sync_ports(s);
        for (k8s_binding *b = s->bindings; b; b = b->next)
            binding_publish(b);
        /* Auto-discovery forgets Services that left no object and no cluster behind. */
        if (!s->pinned && !s->service && !s->slice_count && !s->bindings) {
            k8s_map_del(&v->svcs, s->key);
            free(s->slices);
            free(s->slice_objs);
            free(s);
        }
    }
    if (k->routes_changed && !k->stopping) {
        k->routes_changed = false;
        if (k->cb.changed)
            k->cb.changed(k->cb.arg);
        k->routes_built = k->routes_built || httproute_lists_in(k);
    }
}

/* ---- metrics ------------------------------------------------------------------------------- */

static void emit_event_age(void *arg, pf_metric_emit emit, void *emit_ctx) {
    pf_k8s *k = arg;
    uint64_t now = pf_now_ms();
    char labels[256];
    for (size_t i = 0; i < k->view_count; i++) {
        for (int kind = 0; kind < K8S_KIND_COUNT; kind++) {
            k8s_watch *w = k->views[i]->watches[kind];
            if (k->views[i]->fed_by && !w->req)
                continue; /* stopped: the namespace's feed watches for it */
            snprintf(labels, sizeof labels, "resource=\"%s\",scope=\"%s\"", resource_names[kind],
                     w->scope);
            emit(emit_ctx, labels,
                 w->last_event_ms && now > w->last_event_ms
                     ? (double)(now - w->last_event_ms) / 1000.0
                     : 0.0);
        }
    }
}

static void register_metrics(pf_k8s *k) {
    char labels[64];
    for (size_t i = 0; i < HTTP_CODE_COUNT; i++) {
        snprintf(labels, sizeof labels, "code=\"%d\"", http_codes[i]);
        k->http_errors[i] = metrics_counter(
            k->metrics, "pilotfish_kubernetes_api_errors_total",
            "Kubernetes API failures: HTTP status codes, and transport, timeout, stalled, "
            "malformed and too_long.",
            labels);
    }
    for (size_t i = 0; i < FAILURE_COUNT; i++) {
        snprintf(labels, sizeof labels, "code=\"%s\"", failure_labels[i]);
        k->failures[i] = metrics_counter(
            k->metrics, "pilotfish_kubernetes_api_errors_total",
            "Kubernetes API failures: HTTP status codes, and transport, timeout, stalled, "
            "malformed and too_long.",
            labels);
    }
    k->event_to_publish = metrics_histogram(
        k->metrics, "pilotfish_kubernetes_event_to_publish_seconds",
        "From a watch event's arrival to the endpoint sets it changed being published.", "");
    metrics_gauge_callback(k->metrics, "pilotfish_kubernetes_last_event_age_seconds",
                           "Seconds since the watch last received an event or a bookmark (or "
                           "completed a list).",
                           emit_event_age, k);
}

static void register_watch_metrics(pf_k8s *k, k8s_watch *w) {
    char labels[128];
    const char *res = resource_names[w->kind];
    snprintf(labels, sizeof labels, "resource=\"%s\"", res);
    w->connects = metrics_counter(k->metrics, "pilotfish_kubernetes_watch_connects_total",
                                  "Watch streams opened (first and resumed).", labels);
    w->relists = metrics_counter(k->metrics, "pilotfish_kubernetes_relists_total",
                                 "Lists after the first (410 Gone or continue expiry).", labels);
    for (int t = 0; t < K8S_EV_COUNT; t++) {
        snprintf(labels, sizeof labels, "resource=\"%s\",type=\"%s\"", res,
                 k8s_event_type_name((k8s_event_type)t));
        w->events[t] = metrics_counter(k->metrics, "pilotfish_kubernetes_events_total",
                                       "Watch events received, by type.", labels);
    }
}

/* ---- life cycle ---------------------------------------------------------------------------- */

static k8s_watch *watch_new(k8s_view *v, k8s_kind kind, const char *selector_key,
                            const char *selector) {
    pf_k8s *k = v->k;
    k8s_watch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->k = k;
    w->view = v;
    w->kind = kind;
    if (selector) {
        char enc[256];
        url_encode(enc, sizeof enc, selector);
        snprintf(w->selector, sizeof w->selector, "&%s=%s", selector_key, enc);
    }
    snprintf(w->scope, sizeof w->scope, "%s%s%s", v->ns[0] ? v->ns : "*", selector ? "/" : "",
             selector ? strchr(selector, '=') + 1 : "");
    w->need_list = true;
    w->timer = evtimer_new(k->base, on_watch_timer, w);
    w->stall = evtimer_new(k->base, on_stall, w);
    if (!w->timer || !w->stall) {
        if (w->timer)
            event_free(w->timer);
        if (w->stall)
            event_free(w->stall);
        free(w);
        return NULL;
    }
    register_watch_metrics(k, w);
    return w;
}

static void free_object_cb(void *arg, void *value) {
    k8s_object_free(value);
}

static void watch_free(k8s_watch *w) {
    if (!w)
        return;
    /* Views come and go on demand: their registrations of the shared series go with them. */
    metrics_release(w->k->metrics, w->connects);
    metrics_release(w->k->metrics, w->relists);
    for (int t = 0; t < K8S_EV_COUNT; t++)
        metrics_release(w->k->metrics, w->events[t]);
    req_free(w->req);
    event_free(w->timer);
    event_free(w->stall);
    k8s_map_each(&w->store, free_object_cb, NULL);
    k8s_map_clear(&w->store);
    k8s_map_each(&w->fresh, free_object_cb, NULL);
    k8s_map_clear(&w->fresh);
    free(w->cont);
    free(w);
}

static k8s_view *view_new(pf_k8s *k, const char *ns, const char *service) {
    k8s_view **grown = realloc(k->views, (k->view_count + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    k->views = grown;
    k8s_view *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->k = k;
    snprintf(v->ns, sizeof v->ns, "%s", ns);
    char label[128], field[128];
    snprintf(label, sizeof label, "kubernetes.io/service-name=%s", service ? service : "");
    snprintf(field, sizeof field, "metadata.name=%s", service ? service : "");
    v->watches[K8S_KIND_SERVICE] =
        watch_new(v, K8S_KIND_SERVICE, "fieldSelector", service ? field : NULL);
    v->watches[K8S_KIND_SLICE] =
        watch_new(v, K8S_KIND_SLICE, "labelSelector", service ? label : NULL);
    if (!v->watches[0] || !v->watches[1]) {
        watch_free(v->watches[0]);
        watch_free(v->watches[1]);
        free(v);
        return NULL;
    }
    k->views[k->view_count++] = v;
    return v;
}

static void free_svc_cb(void *arg, void *value) {
    k8s_svc *s = value;
    while (s->bindings) {
        k8s_binding *b = s->bindings;
        s->bindings = b->next;
        binding_free(b);
    }
    free(s->slices);
    free(s->slice_objs);
    free(s);
}

static void view_free(k8s_view *v) {
    k8s_map_each(&v->svcs, free_svc_cb, NULL);
    k8s_map_clear(&v->svcs);
    for (int i = 0; i < K8S_KIND_COUNT; i++)
        watch_free(v->watches[i]);
    free(v);
}

/* One setting from the first of: a flag, the config, the kubeconfig. */
static const char *first_of(const char *flag, const char *config, const char *kubeconfig) {
    if (flag && *flag)
        return flag;
    if (config && *config)
        return config;
    return kubeconfig && *kubeconfig ? kubeconfig : NULL;
}

/* Where the API server, credentials and namespace come from, per setting: the --k8s-*
 * flags, then $.kubernetes, then a kubeconfig (--kubeconfig; else $KUBECONFIG's first file
 * when no API server is configured), then the pod's environment and service account. */
static int resolve_connection(pf_k8s *k, const pf_k8s_options *opts, pf_error *err) {
    static const pf_k8s_options none = {0};
    const pf_config_kubernetes *kc = k->kc;
    const char *sa = PF_K8S_SERVICEACCOUNT_DIR;
    k8s_kubeconfig kube;
    char kube_path[PF_K8S_TEXT_MAX] = "";
    struct stat st;
    int rc = PF_OK;
    memset(&kube, 0, sizeof kube);
    if (!opts)
        opts = &none;
    if (opts->kubeconfig && *opts->kubeconfig)
        snprintf(kube_path, sizeof kube_path, "%s", opts->kubeconfig);
    else if (getenv("KUBECONFIG") && *getenv("KUBECONFIG") &&
             !first_of(opts->api_server, kc->api_server, NULL))
        snprintf(kube_path, sizeof kube_path, "%.*s", (int)strcspn(getenv("KUBECONFIG"), ":"),
                 getenv("KUBECONFIG"));
    if (kube_path[0] && (rc = k8s_kubeconfig_load(kube_path, &kube, err)) != PF_OK)
        return rc;

    const char *api = first_of(opts->api_server, kc->api_server, kube.server);
    if (api) {
        snprintf(k->api, sizeof k->api, "%s", api);
    } else if (getenv("KUBERNETES_SERVICE_HOST") && *getenv("KUBERNETES_SERVICE_HOST")) {
        const char *host = getenv("KUBERNETES_SERVICE_HOST");
        const char *port = getenv("KUBERNETES_SERVICE_PORT");
        bool v6 = strchr(host, ':') != NULL;
        snprintf(k->api, sizeof k->api, "https://%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "",
                 port && *port ? port : "443");
    } else {
        rc = pf_fail(err, PF_EINVAL,
                     "kubernetes: no API server: set $.kubernetes.api_server, --k8s-api-server "
                     "or --kubeconfig, or run in a pod (KUBERNETES_SERVICE_HOST)");
        goto done;
    }
    size_t n = strlen(k->api);
    while (n && k->api[n - 1] == '/')
        k->api[--n] = '\0';
    if (strncmp(k->api, "https://", 8) != 0) {
        rc = pf_fail(err, PF_EINVAL,
                     "kubernetes: API server \"%s\" must be https:// (TLS is always verified)",
                     k->api);
        goto done;
    }

    /* Credentials: a token file (re-read before each request), else a kubeconfig's inline
     * token; a client certificate and key may come with either. */
    const char *token_file = first_of(opts->token_file, kc->token_file, kube.token_file);
    bool explicit_token = token_file != NULL;
    if (!token_file && kube.token) {
        k->static_token = kube.token;
        kube.token = NULL;
    } else if (!token_file && !kube_path[0]) {
        snprintf(k->token_file, sizeof k->token_file, "%s/token", sa);
    }
    if (token_file)
        snprintf(k->token_file, sizeof k->token_file, "%s", token_file);
    if (k->token_file[0] && stat(k->token_file, &st) != 0) {
        if (explicit_token) {
            rc = pf_fail(err, PF_EINVAL, "kubernetes: token file %s: %s", k->token_file,
                         strerror(errno));
            goto done;
        }
        k->token_file[0] = '\0';
    }

    const char *ca = first_of(opts->ca_file, kc->ca_file, NULL);
    if (ca) {
        snprintf(k->ca_file, sizeof k->ca_file, "%s", ca);
    } else if (kube.ca_data) {
        k->ca_blob = kube.ca_data;
        k->ca_blob_len = kube.ca_len;
        kube.ca_data = NULL;
    } else if (kube.ca_file[0]) {
        snprintf(k->ca_file, sizeof k->ca_file, "%s", kube.ca_file);
        ca = k->ca_file;
    } else if (!kube_path[0]) {
        snprintf(k->ca_file, sizeof k->ca_file, "%s/ca.crt", sa);
    }
    if (k->ca_file[0] && stat(k->ca_file, &st) != 0) {
        if (ca) {
            rc = pf_fail(err, PF_EINVAL, "kubernetes: CA file %s: %s", k->ca_file, strerror(errno));
            goto done;
        }
        k->ca_file[0] = '\0'; /* the system's CAs, still verified */
    }
    snprintf(k->cert_file, sizeof k->cert_file, "%s", kube.cert_file);
    snprintf(k->key_file, sizeof k->key_file, "%s", kube.key_file);
    k->cert_blob = kube.cert_data;
    k->cert_blob_len = kube.cert_len;
    k->key_blob = kube.key_data;
    k->key_blob_len = kube.key_len;
    kube.cert_data = kube.key_data = NULL;

    const char *ns = first_of(opts->namespace, kc->namespace, kube.namespace);
    if (ns) {
        snprintf(k->ns, sizeof k->ns, "%s", ns);
    } else {
        char path[PF_K8S_TEXT_MAX];
        snprintf(path, sizeof path, "%s/namespace", sa);
        char *own = read_small_file(path, PF_K8S_NAME_MAX - 1);
        snprintf(k->ns, sizeof k->ns, "%s", own && *own ? own : "default");
        free(own);
    }
    if (kube_path[0])
        log_info("kubernetes: kubeconfig=%s server=%s", kube_path, kube.server);
done:
    k8s_kubeconfig_clear(&kube);
    return rc;
}

pf_k8s *discovery_k8s_new(struct event_base *base, const pf_config *cfg, const pf_k8s_options *opts,
                          pf_metrics *metrics, pf_error *err) {
    pf_k8s *k = calloc(1, sizeof *k);
    if (!k) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    k->base = base;
    k->cfg = cfg;
    k->kc = &cfg->kubernetes;
    k->metrics = metrics;
    /* libcurl comes with GnuTLS (through librtmp and libldap, which pilotfish never uses:
     * https only, on OpenSSL), whose constructor initializes GnuTLS and p11-kit on load:
     * 0.8 MiB of resident memory for nothing (measured with 5 Services in use). Told not
     * to, unless the environment says otherwise. Set here, at start, and not when libcurl
     * is loaded at the first Service: the workers run by then, and setenv is not safe
     * against another thread's getenv. */
    setenv("GNUTLS_NO_IMPLICIT_INIT", "1", 0);
    if (getrandom(k->rng, sizeof k->rng, 0) != sizeof k->rng || !(k->rng[0] | k->rng[1]))
        k->rng[0] = 0x9e3779b97f4a7c15ull, k->rng[1] = pf_now_us() | 1;
    if (resolve_connection(k, opts, err) != PF_OK) {
        free(k);
        return NULL;
    }
    k->curl_timer = evtimer_new(base, on_curl_timeout, k);
    k->flush = event_new(base, -1, 0, on_flush, k);
    k->dns_metrics = metrics_new();
    if (!k->curl_timer || !k->flush || !k->dns_metrics) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        discovery_k8s_free(k);
        return NULL;
    }
    register_metrics(k);
    refresh_token(k);
    log_info("kubernetes: api_server=%s token=%s ca=%s namespace=%s", k->api,
             k->token_file[0]  ? k->token_file
             : k->static_token ? "(kubeconfig)"
                               : "(none)",
             k->ca_file[0] ? k->ca_file
             : k->ca_blob  ? "(kubeconfig)"
                           : "(system CAs)",
             k->ns);
    return k;
}

int discovery_k8s_add(pf_k8s *k, const pf_config_cluster *cluster, pf_endpoint_slot *slot,
                      pf_error *err) {
    const pf_config_cluster_k8s *kc = &cluster->kubernetes;
    if (!kc->service[0])
        return pf_fail(err, PF_EINVAL, "cluster %s does not use Kubernetes", cluster->name);
    const char *ns = kc->namespace[0] ? kc->namespace : k->ns;
    k8s_view *v = view_new(k, ns, kc->service);
    k8s_svc *s = v ? svc_get(v, ns, kc->service, true) : NULL;
    k8s_binding *b = s ? calloc(1, sizeof *b) : NULL;
    if (!b)
        return pf_fail(err, PF_ENOMEM, "out of memory");
    s->pinned = true;
    b->svc = s;
    b->cluster = cluster;
    b->slot = slot;
    snprintf(b->cluster_name, sizeof b->cluster_name, "%s", cluster->name);
    snprintf(b->want_name, sizeof b->want_name, "%s", kc->port_name);
    b->want_number = kc->port_number;
    b->next = s->bindings;
    s->bindings = b;
    return PF_OK;
}

int discovery_k8s_auto_discover(pf_k8s *k, const pf_k8s_auto_callbacks *cb, pf_error *err) {
    const pf_config_kubernetes *kc = k->kc;
    if (!kc->auto_discover || !kc->auto_cluster)
        return pf_fail(err, PF_EINVAL, "kubernetes: auto_discover is not configured");
    k->cb = *cb;
    k->auto_on = true;
    if (kc->auto_mode == PF_K8S_ON_DEMAND)
        return PF_OK; /* nothing is watched until a request names a Service */
    size_t n = kc->all_namespaces ? 1 : kc->namespace_count;
    for (size_t i = 0; i < n; i++) {
        k8s_view *v = view_new(k, kc->all_namespaces ? "" : kc->namespaces[i], NULL);
        if (!v)
            return pf_fail(err, PF_ENOMEM, "out of memory");
        v->auto_discover = true;
    }
    return PF_OK;
}

const char *discovery_k8s_namespace(const pf_k8s *k) {
    return k->ns;
}

typedef struct foreach_ctx {
    void (*fn)(void *arg, const pf_k8s_service_port *port, size_t cookie);
    void *arg;
} foreach_ctx;

static void foreach_svc(void *arg, void *value) {
    foreach_ctx *c = arg;
    k8s_svc *s = value;
    for (k8s_binding *b = s->bindings; b; b = b->next) {
        pf_k8s_service_port p;
        port_view(b, &p);
        c->fn(c->arg, &p, b->cookie);
    }
}

void discovery_k8s_foreach_port(const pf_k8s *k,
                                void (*fn)(void *arg, const pf_k8s_service_port *port,
                                           size_t cookie),
                                void *arg) {
    foreach_ctx c = {fn, arg};
    for (size_t i = 0; i < k->view_count; i++)
        if (k->views[i]->auto_discover)
            k8s_map_each(&k->views[i]->svcs, foreach_svc, &c);
}

/* ---- Gateway API HTTPRoutes ----------------------------------------------------------------- */

/* A view of its own per namespace holds the HTTPRoute watch (in watches[0]) and no
 * Services: the watch plumbing (lists, resourceVersion, bookmarks, 410 relists, backoff)
 * is the same, and a change sets routes_changed, which rebuilds the routes. */
int discovery_k8s_watch_httproutes(pf_k8s *k, pf_error *err) {
    const pf_config_kubernetes *kc = k->kc;
    size_t n = kc->all_namespaces ? 1 : kc->namespace_count;
    k->route_views = calloc(n ? n : 1, sizeof *k->route_views);
    if (!k->route_views)
        return pf_fail(err, PF_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        k8s_view *v = calloc(1, sizeof *v);
        if (!v)
            return pf_fail(err, PF_ENOMEM, "out of memory");
        v->k = k;
        snprintf(v->ns, sizeof v->ns, "%s", kc->all_namespaces ? "" : kc->namespaces[i]);
        k->route_views[k->route_view_count++] = v;
        if (!(v->watches[0] = watch_new(v, K8S_KIND_HTTPROUTE, NULL, NULL)))
            return pf_fail(err, PF_ENOMEM, "out of memory");
    }
    return PF_OK;
}

typedef struct route_each_ctx {
    void (*fn)(void *arg, const pf_httproute *route);
    void *arg;
} route_each_ctx;

static void route_each(void *arg, void *value) {
    route_each_ctx *c = arg;
    const k8s_object *o = value;
    c->fn(c->arg, o->u.route);
}

void discovery_k8s_foreach_httproute(const pf_k8s *k,
                                     void (*fn)(void *arg, const pf_httproute *route), void *arg) {
    route_each_ctx c = {fn, arg};
    for (size_t i = 0; i < k->route_view_count; i++)
        k8s_map_each(&k->route_views[i]->watches[0]->store, route_each, &c);
}

static bool httproute_lists_in(const pf_k8s *k) {
    for (size_t i = 0; i < k->route_view_count; i++)
        if (!k->route_views[i]->watches[0]->synced)
            return false;
    return true;
}

/* Ready once the first lists are in and the routes were rebuilt from them; later changes
 * waiting for their rebuild do not make a ready sidecar unready. */
bool discovery_k8s_httproutes_synced(const pf_k8s *k) {
    return !k->route_view_count || k->routes_built || (httproute_lists_in(k) && !k->routes_changed);
}

void discovery_k8s_foreach_httproute_list(const pf_k8s *k,
                                          void (*fn)(void *arg, const pf_k8s_route_list_status *st),
                                          void *arg) {
    for (size_t i = 0; i < k->route_view_count; i++) {
        const k8s_watch *w = k->route_views[i]->watches[0];
        pf_k8s_route_list_status st = {.namespace = k->route_views[i]->ns,
                                       .synced = w->synced,
                                       .routes = w->store.count,
                                       .last_event_wall_us = w->last_event_wall_us};
        if (w->kind_missing)
            st.state = "not installed";
        else if (w->req)
            st.state = w->req->watch ? "watching" : "listing";
        else
            st.state = w->failures ? "backing off" : "idle";
        fn(arg, &st);
    }
}

/* ---- on demand ------------------------------------------------------------------------------ */

static int curl_up(pf_k8s *k, pf_error *err);
static bool feed_take(pf_k8s *k, k8s_view *v);
static void ns_balance(pf_k8s *k, const char *ns);

bool discovery_k8s_namespace_watched(const pf_k8s *k, const char *ns) {
    const pf_config_kubernetes *kc = k->kc;
    if (kc->all_namespaces)
        return true;
    for (size_t i = 0; i < kc->namespace_count; i++)
        if (strcmp(kc->namespaces[i], ns) == 0)
            return true;
    return false;
}

static k8s_view *find_on_demand(const pf_k8s *k, const char *ns, const char *service) {
    for (size_t i = 0; i < k->view_count; i++) {
        k8s_view *v = k->views[i];
        if (v->on_demand && strcmp(v->ns, ns) == 0 && strcmp(v->service, service) == 0)
            return v;
    }
    return NULL;
}

int discovery_k8s_want(pf_k8s *k, const char *ns, const char *service) {
    if (!k->auto_on || k->kc->auto_mode != PF_K8S_ON_DEMAND || k->stopping ||
        !discovery_k8s_namespace_watched(k, ns))
        return PF_EINVAL;
    k8s_view *v = find_on_demand(k, ns, service);
    if (v) {
        v->wanted_ms = pf_now_ms();
        return PF_OK;
    }
    pf_error err = {{0}};
    if (curl_up(k, &err) != PF_OK) {
        log_error("%s", err.msg);
        return PF_EIO;
    }
    /* One Service: its object by name and its slices by label, nothing else. */
    if (!(v = view_new(k, ns, service)))
        return PF_ENOMEM;
    v->auto_discover = true;
    v->on_demand = true;
    v->wanted_ms = pf_now_ms();
    snprintf(v->service, sizeof v->service, "%s", service);
    log_info("kubernetes: watching service=%s namespace=%s on demand", service, ns);
    if (k->started && !feed_take(k, v))
        for (int kind = 0; kind < K8S_KIND_COUNT; kind++)
            watch_schedule(v->watches[kind], 0);
    ns_balance(k, ns);
    return PF_OK;
}

static bool fed_has_service(const k8s_view *v);

/* Known absent: both lists are in and the Service is not there. */
static bool view_missing(const k8s_view *v) {
    if (v->on_demand && v->fed_by)
        return !fed_has_service(v);
    return v->on_demand && v->watches[K8S_KIND_SERVICE]->synced &&
           v->watches[K8S_KIND_SLICE]->synced && v->watches[K8S_KIND_SERVICE]->store.count == 0;
}

void discovery_k8s_foreach_missing(const pf_k8s *k,
                                   void (*fn)(void *arg, const char *ns, const char *service),
                                   void *arg) {
    for (size_t i = 0; i < k->view_count; i++)
        if (view_missing(k->views[i]))
            fn(arg, k->views[i]->ns, k->views[i]->service);
}

typedef struct sweep_ctx {
    pf_k8s *k;
    uint64_t (*last_used_ms)(void *arg, size_t cookie);
    void *arg;
    uint64_t last;
} sweep_ctx;

static void last_use_cb(void *arg, void *value) {
    sweep_ctx *c = arg;
    const k8s_svc *s = value;
    for (const k8s_binding *b = s->bindings; b; b = b->next) {
        uint64_t used = c->last_used_ms(c->arg, b->cookie);
        if (used > c->last)
            c->last = used;
    }
}

static void remove_svc_cb(void *arg, void *value) {
    pf_k8s *k = arg;
    k8s_svc *s = value;
    while (s->bindings) {
        k8s_binding *b = s->bindings;
        s->bindings = b->next;
        binding_remove(k, b);
    }
}

/* Stops a view's watches and forgets it: its clusters go (port_removed), the routes are
 * rebuilt at the next flush. */
static void view_remove(pf_k8s *k, size_t index) {
    k8s_view *v = k->views[index];
    for (k8s_svc **p = &k->dirty; *p;) {
        if ((*p)->view == v)
            *p = (*p)->next_dirty;
        else
            p = &(*p)->next_dirty;
    }
    k8s_map_each(&v->svcs, remove_svc_cb, k);
    view_free(v);
    memmove(&k->views[index], &k->views[index + 1], (k->view_count - index - 1) * sizeof *k->views);
    k->view_count--;
    k->routes_changed = true;
    schedule_flush(k);
}

size_t discovery_k8s_sweep(pf_k8s *k, uint64_t now_ms,
                           uint64_t (*last_used_ms)(void *arg, size_t cookie), void *arg) {
    size_t removed = 0;
    for (size_t i = 0; i < k->view_count;) {
        k8s_view *v = k->views[i];
        if (!v->on_demand) {
            i++;
            continue;
        }
        sweep_ctx c = {k, last_used_ms, arg, v->wanted_ms};
        k8s_map_each(&v->svcs, last_use_cb, &c);
        /* A missing Service is asked again after negative_ttl (if still wanted), so that a
         * misspelled name costs one list per negative_ttl, whatever the request rate. */
        bool missing = view_missing(v);
        uint64_t limit = missing ? k->kc->negative_ttl_ms : k->kc->idle_timeout_ms;
        if (c.last >= now_ms || now_ms - c.last < limit) { /* a worker may be ahead of now_ms */
            i++;
            continue;
        }
        log_info("kubernetes: stopped watching service=%s namespace=%s (%s)", v->service, v->ns,
                 missing ? "missing, negative_ttl over" : "unused for idle_timeout");
        view_remove(k, i);
        removed++;
    }
    /* Fewer Services in use: a namespace's feed may hand them back to their own watches. */
    for (size_t i = 0; removed && i < k->view_count; i++) {
        if (!k->views[i]->feed)
            continue;
        char ns[PF_K8S_NAME_MAX];
        snprintf(ns, sizeof ns, "%s", k->views[i]->ns);
        size_t before = k->view_count;
        ns_balance(k, ns);
        if (k->view_count < before)
            i--; /* the feed at i went; the next view moved into its place */
    }
    return removed;
}

static void svc_dirty_cb(void *arg, void *value) {
    (void)arg;
    mark_dirty(value);
}

void discovery_k8s_retry_refused_ports(pf_k8s *k) {
    if (!k->ports_refused)
        return;
    k->ports_refused = false;
    for (size_t i = 0; i < k->view_count; i++)
        if (!k->views[i]->feed)
            k8s_map_each(&k->views[i]->svcs, svc_dirty_cb, NULL);
    schedule_flush(k);
}

size_t discovery_k8s_watch_count(const pf_k8s *k) {
    size_t n = 0;
    for (size_t i = 0; i < k->route_view_count; i++)
        n += k->route_views[i]->watches[0]->req != NULL;
    for (size_t i = 0; i < k->view_count; i++)
        for (int kind = 0; kind < K8S_KIND_COUNT; kind++)
            n += k->views[i]->watches[kind]->req != NULL;
    return n;
}

/* ---- on demand: a namespace-wide watch past max_watches_per_namespace ------------------------ */

/* Each Service in use has two watches of its own (its object by name, its slices by
 * label). A namespace with many in use would cost the API server two watches per Service
 * per sidecar, so past max_watches_per_namespace Services in one namespace, one view
 * watches the whole namespace (one Service watch, one slice watch, the same
 * get/list/watch RBAC) and its events are filtered in process to the Services in use.
 * Below half of it (hysteresis: a namespace near the bound does not flap), they go back
 * to watches of their own. Neither switch ever empties a set: the new watches are listed
 * and applied first, and the old ones stop only then (a fed view takes the feed's objects
 * before dropping its own; a view going back merges both until its own lists are in,
 * which is invisible: an address counts once and the flush comes after the handover). */

static const char *object_owner(const k8s_object *o) {
    return o->kind == K8S_KIND_SERVICE ? o->name : o->u.slice.service;
}

static k8s_view *fed_view(const k8s_view *feed, const char *service) {
    if (!service[0])
        return NULL;
    k8s_view *v = find_on_demand(feed->k, feed->ns, service);
    return v && v->fed_by == feed ? v : NULL;
}

/* The feed's stores changed: the fed views of the Services the object belongs to (before
 * and after; a slice may change its service-name label) see the change. */
static void feed_changed(k8s_view *feed, const k8s_object *prev, const k8s_object *cur) {
    k8s_view *pv = prev ? fed_view(feed, object_owner(prev)) : NULL;
    k8s_view *cv = cur ? fed_view(feed, object_owner(cur)) : NULL;
    if (!pv && !cv) {
        /* a Service in use on its own watches until the feed agrees: the flush checks */
        const char *owner = object_owner(cur ? cur : prev);
        k8s_view *own = owner[0] ? find_on_demand(feed->k, feed->ns, owner) : NULL;
        if (own && !own->fed_by)
            schedule_flush(feed->k);
        return;
    }
    if (pv && pv == cv) {
        view_changed(pv, prev, cur);
        return;
    }
    if (pv)
        view_changed(pv, prev, NULL);
    if (cv)
        view_changed(cv, NULL, cur);
}

static bool fed_has_service_of(const k8s_view *feed, const char *service) {
    char key[K8S_KEY_MAX];
    snprintf(key, sizeof key, "%s/%s", feed->ns, service);
    return k8s_map_get(&feed->watches[K8S_KIND_SERVICE]->store, key) != NULL;
}

static bool fed_has_service(const k8s_view *v) {
    return fed_has_service_of(v->fed_by, v->service);
}

static void feed_move(k8s_view *feed, k8s_feed_state to) {
    static const char *const names[] = {"starting", "active", "leaving"};
    bool legal = (feed->feed_state == K8S_FEED_STARTING && to == K8S_FEED_ACTIVE) ||
                 (feed->feed_state == K8S_FEED_ACTIVE && to == K8S_FEED_LEAVING);
    if (!legal) {
        log_error("kubernetes: namespace watch of \"%s\": illegal move %s -> %s", feed->ns,
                  names[feed->feed_state], names[to]);
        return;
    }
    feed->feed_state = to;
}

/* Stops a view's own watches and frees their stores (nothing may point into them any
 * more). They stay "synced": the view's Service is known, through its feed. */
static void own_watches_stop(k8s_view *v) {
    for (int kind = 0; kind < K8S_KIND_COUNT; kind++) {
        k8s_watch *w = v->watches[kind];
        req_free(w->req);
        w->req = NULL;
        evtimer_del(w->timer);
        evtimer_del(w->stall);
        k8s_map_each(&w->store, free_object_cb, NULL);
        k8s_map_clear(&w->store);
        k8s_map_each(&w->fresh, free_object_cb, NULL);
        k8s_map_clear(&w->fresh);
        free(w->cont);
        w->cont = NULL;
        w->rv[0] = '\0';
        w->need_list = true;
        w->synced = true;
        w->failures = 0;
        w->rejoin_pending = false;
    }
}

typedef struct attach_ctx {
    k8s_svc *s;
    const char *service;
} attach_ctx;

/* Drops a view's own slice of its Service from its svc. */
static void attach_slice_cb(void *arg, void *value) {
    attach_ctx *c = arg;
    const k8s_object *o = value;
    if (strcmp(o->u.slice.service, c->service) == 0)
        svc_remove_slice(c->s, o);
}

/* Serves v from its namespace's feed (listed): the feed's objects of v's Service replace
 * v's own, and v's own watches stop. */
static void feed_attach(k8s_view *feed, k8s_view *v) {
    pf_k8s *k = v->k;
    k8s_svc *s = svc_get(v, v->ns, v->service, true);
    if (!s) {
        log_error("kubernetes: out of memory moving service=%s namespace=%s to the namespace "
                  "watch; it keeps its own",
                  v->service, v->ns);
        return;
    }
    /* the feed's own index of the namespace by Service */
    const k8s_svc *fs = svc_get(feed, v->ns, v->service, false);
    for (size_t i = 0; fs && i < fs->slice_count; i++)
        if (svc_add_slice(s, fs->slice_objs[i]) != PF_OK)
            log_error("kubernetes: out of memory indexing the slices of service=%s namespace=%s",
                      v->service, v->ns);
    attach_ctx drop = {s, v->service};
    k8s_map_each(&v->watches[K8S_KIND_SLICE]->store, attach_slice_cb, &drop);
    s->service = fs ? fs->service : NULL;
    own_watches_stop(v);
    v->fed_by = feed;
    mark_dirty(s);
    /* a Service first known now (or found missing) changes the routes */
    k->routes_changed = true;
    schedule_flush(k);
}

static k8s_view *feed_active(const pf_k8s *k, const char *ns) {
    for (size_t i = 0; i < k->view_count; i++) {
        k8s_view *f = k->views[i];
        if (f->feed && f->feed_state == K8S_FEED_ACTIVE && strcmp(f->ns, ns) == 0)
            return f;
    }
    return NULL;
}

/* A new Service in use, in a namespace a feed serves: attached at once when the feed holds
 * its Service object and a slice of it. Otherwise (not created yet, misspelled, or created a
 * moment ago and not on the feed's streams yet; the Service and its slices come on two
 * streams, in either order) the feed's silence is no proof: v lists it as usual, so its
 * first request waits for both, and the feed takes it over once both say the same
 * (feed_adopt). False when v needs its own watches. */
static bool feed_take(pf_k8s *k, k8s_view *v) {
    k8s_view *f = feed_active(k, v->ns);
    const k8s_svc *fs = f ? svc_get(f, v->ns, v->service, false) : NULL;
    if (!f || !fed_has_service_of(f, v->service) || !fs || fs->slice_count == 0)
        return false;
    feed_attach(f, v);
    return v->fed_by == f;
}

/* True when v's own stores and the feed's hold the same objects of v's Service, at the
 * same resourceVersions (compared for equality only: they are opaque): handing v over
 * then changes nothing it serves. */
static bool feed_agrees(const k8s_view *feed, const k8s_view *v) {
    char key[K8S_KEY_MAX];
    snprintf(key, sizeof key, "%s/%s", v->ns, v->service);
    const k8s_svc *fs = k8s_map_get(&feed->svcs, key);
    const k8s_map *own = &v->watches[K8S_KIND_SLICE]->store;
    const k8s_object *a = k8s_map_get(&v->watches[K8S_KIND_SERVICE]->store, key);
    const k8s_object *b = fs ? fs->service : NULL;
    if (!a != !b || (a && strcmp(a->rv, b->rv) != 0) || (fs ? fs->slice_count : 0) != own->count)
        return false;
    for (size_t i = 0; fs && i < fs->slice_count; i++) {
        const k8s_object *mine = k8s_map_get(own, fs->slice_objs[i]->key);
        if (!mine || strcmp(mine->rv, fs->slice_objs[i]->rv) != 0)
            return false;
    }
    return true;
}

/* Views of a fed namespace still on their own watches (see feed_take) go to the feed once
 * it agrees with them. Runs from the flush, outside libcurl's callbacks: stopping a watch
 * removes its transfer, which libcurl forbids from within one. */
static void feed_adopt(pf_k8s *k) {
    for (size_t i = 0; i < k->view_count; i++) {
        k8s_view *v = k->views[i];
        if (!v->on_demand || v->fed_by || !v->watches[K8S_KIND_SERVICE]->synced ||
            !v->watches[K8S_KIND_SLICE]->synced)
            continue;
        k8s_view *f = feed_active(k, v->ns);
        if (f && feed_agrees(f, v))
            feed_attach(f, v);
    }
}

/* A feed's list is in (first or relist): once both kinds are listed, it serves every
 * Service in use in its namespace, and their own watches stop. */
static void feed_listed(k8s_view *feed) {
    pf_k8s *k = feed->k;
    if (feed->feed_state != K8S_FEED_STARTING || !feed->watches[K8S_KIND_SERVICE]->synced ||
        !feed->watches[K8S_KIND_SLICE]->synced)
        return;
    feed_move(feed, K8S_FEED_ACTIVE);
    size_t n = 0;
    for (size_t i = 0; i < k->view_count; i++) {
        k8s_view *v = k->views[i];
        if (v->on_demand && !v->fed_by && strcmp(v->ns, feed->ns) == 0) {
            feed_attach(feed, v);
            n += v->fed_by == feed;
        }
    }
    log_info("kubernetes: namespace=%s served by one namespace-wide watch per kind services=%zu",
             feed->ns, n);
}

/* Starts v's own watches again, from a list; v stays fed until both are in. */
static void own_watches_rejoin(k8s_view *v) {
    for (int kind = 0; kind < K8S_KIND_COUNT; kind++) {
        k8s_watch *w = v->watches[kind];
        w->rejoin_pending = true;
        w->need_list = true;
        watch_schedule(w, 0);
    }
}

static size_t view_index(const pf_k8s *k, const k8s_view *v) {
    size_t i = 0;
    while (i < k->view_count && k->views[i] != v)
        i++;
    return i;
}

/* One of a returning view's own lists is in: when both are, the view lets go of the feed's
 * objects (its own ones are in its svc already) and the feed, when no one uses it any
 * more, stops. */
static void rejoin_listed(k8s_watch *w) {
    k8s_view *v = w->view;
    w->rejoin_pending = false;
    if (v->watches[K8S_KIND_SERVICE]->rejoin_pending ||
        v->watches[K8S_KIND_SLICE]->rejoin_pending || !v->fed_by)
        return;
    k8s_svc *s = svc_get(v, v->ns, v->service, false);
    if (s) {
        const k8s_map *own = &v->watches[K8S_KIND_SLICE]->store;
        for (size_t i = s->slice_count; i-- > 0;)
            if (k8s_map_get(own, s->slice_objs[i]->key) != s->slice_objs[i])
                svc_remove_slice(s, s->slice_objs[i]);
        s->service = k8s_map_get(&v->watches[K8S_KIND_SERVICE]->store, s->key);
        mark_dirty(s);
    }
    v->fed_by = NULL;
    ns_balance(v->k, v->ns);
}

/* Decides, for one namespace, between watches per Service and one feed (see above). */
static void ns_balance(pf_k8s *k, const char *ns) {
    uint32_t max = k->kc->max_watches_per_namespace;
    size_t used = 0, fed = 0;
    k8s_view *feed = NULL;
    for (size_t i = 0; i < k->view_count; i++) {
        k8s_view *v = k->views[i];
        if (strcmp(v->ns, ns) != 0)
            continue;
        if (v->feed)
            feed = v;
        else if (v->on_demand) {
            used++;
            fed += v->fed_by != NULL;
        }
    }
    if (!feed) {
        if (used <= max || !k->started)
            return;
        if (!(feed = view_new(k, ns, NULL))) {
            log_error("kubernetes: out of memory starting a namespace watch of \"%s\"", ns);
            return;
        }
        feed->feed = true;
        feed->feed_state = K8S_FEED_STARTING;
        log_info("kubernetes: namespace=%s has %zu services in use (max_watches_per_namespace "
                 "%u): listing it whole",
                 ns, used, max);
        for (int kind = 0; kind < K8S_KIND_COUNT; kind++)
            watch_schedule(feed->watches[kind], 0);
        return;
    }
    bool few = used * 2 < max;
    if (feed->feed_state == K8S_FEED_ACTIVE && few) {
        feed_move(feed, K8S_FEED_LEAVING);
        log_info("kubernetes: namespace=%s has %zu services in use: back to watches per service",
                 ns, used);
        for (size_t i = 0; i < k->view_count; i++)
            if (k->views[i]->fed_by == feed)
                own_watches_rejoin(k->views[i]);
    }
    /* A feed nobody is served by goes: one still listing once few are in use, one that
     * handed everyone back. Then the namespace is decided afresh. */
    if ((feed->feed_state == K8S_FEED_STARTING && few) ||
        (feed->feed_state == K8S_FEED_LEAVING && fed == 0)) {
        view_remove(k, view_index(k, feed));
        ns_balance(k, ns);
    }
}

/* Kubernetes DNS for Services (the names a pod may use): svc (the pod's own namespace),
 * svc.ns, svc.ns.svc and svc.ns.svc.<cluster domain>. Service names are DNS-1035 labels,
 * namespaces DNS-1123 labels. */
static bool dns_label(const char *p, size_t len, bool letter_first) {
    if (len == 0 || len > 63 || p[len - 1] == '-' ||
        (letter_first && !(p[0] >= 'a' && p[0] <= 'z')))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '-'))
            return false;
    return p[0] != '-';
}

int discovery_k8s_parse_service_host(const char *host, const char *own_namespace,
                                     const char *cluster_domain, char *service, char *ns) {
    const char *dot = strchr(host, '.');
    size_t svc_len = dot ? (size_t)(dot - host) : strlen(host);
    if (!dns_label(host, svc_len, true))
        return PF_EINVAL;
    const char *ns_at = dot ? dot + 1 : own_namespace;
    const char *ns_end = strchr(ns_at, '.');
    size_t ns_len = ns_end ? (size_t)(ns_end - ns_at) : strlen(ns_at);
    if (!dns_label(ns_at, ns_len, false))
        return PF_EINVAL;
    if (dot && ns_end) {
        const char *rest = ns_end + 1; /* "svc" or "svc.<domain>" */
        size_t dl = strlen(cluster_domain);
        if (strcmp(rest, "svc") != 0 && !(strncmp(rest, "svc.", 4) == 0 && strlen(rest + 4) == dl &&
                                          strncmp(rest + 4, cluster_domain, dl) == 0))
            return PF_EINVAL;
    }
    memcpy(service, host, svc_len);
    service[svc_len] = '\0';
    memcpy(ns, ns_at, ns_len);
    ns[ns_len] = '\0';
    return PF_OK;
}

/* libcurl and the multi handle, made on first need: a sidecar in on_demand mode that no
 * request has sent to a Service yet never loads libcurl and its ~30 libraries (about 6 MiB
 * resident, most of a Kubernetes-configured pilotfish's memory when idle). */
static int curl_up(pf_k8s *k, pf_error *err) {
    if (k->multi)
        return PF_OK;
    if (!k->curl_loaded) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return pf_fail(err, PF_EIO, "kubernetes: libcurl init failed");
        k->curl_loaded = true;
    }
    if (!(k->multi = curl_multi_init()))
        return pf_fail(err, PF_ENOMEM, "out of memory");
    curl_multi_setopt(k->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(k->multi, CURLMOPT_SOCKETDATA, k);
    curl_multi_setopt(k->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(k->multi, CURLMOPT_TIMERDATA, k);
    /* Every list and watch of this sidecar as a stream of one HTTP/2 connection (the API
     * server's own clients do the same): one TLS handshake and one connection's memory
     * instead of one per watch, and one connection at the API server per sidecar. */
    curl_multi_setopt(k->multi, CURLMOPT_PIPELINING,
                      k->kc->http2 ? (long)CURLPIPE_MULTIPLEX : (long)CURLPIPE_NOTHING);
    if (k->kc->http2)
        curl_multi_setopt(k->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, K8S_H2_MAX_STREAMS);
    return PF_OK;
}

int discovery_k8s_start(pf_k8s *k, pf_error *err) {
    int rc = k->view_count || k->route_view_count ? curl_up(k, err) : PF_OK;
    if (rc != PF_OK)
        return rc;
    k->started = true;
    for (size_t i = 0; i < k->route_view_count; i++)
        watch_schedule(k->route_views[i]->watches[0], 0);
    for (size_t i = 0; i < k->view_count; i++)
        for (int kind = 0; kind < K8S_KIND_COUNT; kind++)
            watch_schedule(k->views[i]->watches[kind], 0);
    return PF_OK;
}

bool discovery_k8s_synced(const pf_k8s *k) {
    /* Services asked for on demand are waited for by their requests, not by /ready. */
    for (size_t i = 0; i < k->view_count; i++)
        for (int kind = 0; kind < K8S_KIND_COUNT; kind++)
            if (!k->views[i]->on_demand && !k->views[i]->feed &&
                !k->views[i]->watches[kind]->synced)
                return false;
    /* kubernetes.http_routes: requests must not take the plain Service route before the
     * HTTPRoutes (splits, matches) are known. In on_demand mode too: their list is per
     * namespace, not per Service. */
    return discovery_k8s_httproutes_synced(k);
}

/* The first list of w as its log lines name it, with how it is going when it failed. */
static void pending_list(const k8s_watch *w, void (*fn)(void *arg, const char *what), void *arg) {
    const k8s_view *v = w->view;
    char line[PF_K8S_NAME_MAX + sizeof w->scope + 128];
    int n = snprintf(line, sizeof line, "kubernetes: list %s in \"%s\"", resource_names[w->kind],
                     v->ns[0] ? v->ns : "all namespaces");
    /* A configured cluster's lists select its Service: scope "ns/name" in the log. */
    const char *one = strchr(w->scope, '/');
    if (n > 0 && (size_t)n < sizeof line && one)
        n += snprintf(line + n, sizeof line - (size_t)n, " for Service %s", one + 1);
    if (n > 0 && (size_t)n < sizeof line && w->failures)
        snprintf(line + n, sizeof line - (size_t)n, " (failed %u times; retrying)", w->failures);
    fn(arg, line);
}

size_t discovery_k8s_foreach_pending(const pf_k8s *k, void (*fn)(void *arg, const char *what),
                                     void *arg) {
    size_t n = 0;
    /* The same lists, in the same order, as discovery_k8s_synced waits for. */
    for (size_t i = 0; i < k->view_count; i++)
        for (int kind = 0; kind < K8S_KIND_COUNT; kind++) {
            const k8s_watch *w = k->views[i]->watches[kind];
            if (!k->views[i]->on_demand && !k->views[i]->feed && !w->synced) {
                pending_list(w, fn, arg);
                n++;
            }
        }
    if (discovery_k8s_httproutes_synced(k))
        return n;
    for (size_t i = 0; i < k->route_view_count; i++)
        if (!k->route_views[i]->watches[0]->synced) {
            pending_list(k->route_views[i]->watches[0], fn, arg);
            n++;
        }
    if (httproute_lists_in(k)) {
        fn(arg, "kubernetes: HTTPRoutes listed; applying them");
        n++;
    }
    return n;
}

void discovery_k8s_stop(pf_k8s *k) {
    if (!k || k->stopping)
        return;
    k->stopping = true;
    for (size_t i = 0; i < k->route_view_count; i++) {
        k8s_watch *w = k->route_views[i]->watches[0];
        req_free(w->req);
        w->req = NULL;
        evtimer_del(w->timer);
        evtimer_del(w->stall);
    }
    for (size_t i = 0; i < k->view_count; i++) {
        for (int kind = 0; kind < K8S_KIND_COUNT; kind++) {
            k8s_watch *w = k->views[i]->watches[kind];
            req_free(w->req);
            w->req = NULL;
            evtimer_del(w->timer);
            evtimer_del(w->stall);
        }
    }
    if (k->flush)
        event_del(k->flush);
    if (k->curl_timer)
        evtimer_del(k->curl_timer);
}

void discovery_k8s_free(pf_k8s *k) {
    if (!k)
        return;
    discovery_k8s_stop(k);
    for (size_t i = 0; i < k->view_count; i++)
        view_free(k->views[i]);
    free(k->views);
    for (size_t i = 0; i < k->route_view_count; i++) {
        watch_free(k->route_views[i]->watches[0]);
        free(k->route_views[i]);
    }
    free(k->route_views);
    if (k->multi)
        curl_multi_cleanup(k->multi);
    if (k->curl_timer)
        event_free(k->curl_timer);
    if (k->flush)
        event_free(k->flush);
    metrics_free(k->dns_metrics);
    free(k->token);
    free(k->static_token);
    free(k->ca_blob);
    free(k->cert_blob);
    free(k->key_blob);
    if (k->curl_loaded)
        curl_global_cleanup();
    free(k);
}

/* ---- status -------------------------------------------------------------------------------- */

typedef struct find_ctx {
    const char *name;
    const k8s_binding *found;
} find_ctx;

static void find_binding(void *arg, void *value) {
    find_ctx *f = arg;
    const k8s_svc *s = value;
    for (const k8s_binding *b = s->bindings; b && !f->found; b = b->next)
        if (strcmp(b->cluster_name, f->name) == 0)
            f->found = b;
}

int discovery_k8s_cluster_status(const pf_k8s *k, const char *cluster, pf_k8s_cluster_status *out) {
    find_ctx f = {cluster, NULL};
    for (size_t i = 0; k && i < k->view_count && !f.found; i++)
        k8s_map_each(&k->views[i]->svcs, find_binding, &f);
    if (!f.found)
        return PF_ENOTFOUND;
    const k8s_binding *b = f.found;
    const k8s_svc *s = b->svc;
    /* a fed view's own watches are stopped: its namespace's feed tells */
    const k8s_view *src = s->view->fed_by ? s->view->fed_by : s->view;
    const k8s_watch *w = src->watches[K8S_KIND_SLICE];
    uint64_t now = pf_now_ms();
    memset(out, 0, sizeof *out);
    snprintf(out->namespace, sizeof out->namespace, "%s", s->ns);
    snprintf(out->service, sizeof out->service, "%s", s->name);
    if (b->want_name[0])
        snprintf(out->port, sizeof out->port, "%s", b->want_name);
    else if (b->want_number)
        snprintf(out->port, sizeof out->port, "%u", b->want_number);
    snprintf(out->resource_version, sizeof out->resource_version, "%s", w->rv);
    if (b->dns_cfg)
        snprintf(out->external_name, sizeof out->external_name, "%s", b->dns_cfg->dns.name);
    out->synced = w->synced && src->watches[K8S_KIND_SERVICE]->synced;
    if (w->req)
        out->watch_state = w->req->watch ? "watching" : "listing";
    else
        out->watch_state = w->failures ? "backing off" : "idle";
    const k8s_watch *sw = src->watches[K8S_KIND_SERVICE];
    uint64_t last_ms = w->last_event_ms > sw->last_event_ms ? w->last_event_ms : sw->last_event_ms;
    out->last_event_wall_us = w->last_event_wall_us > sw->last_event_wall_us
                                  ? w->last_event_wall_us
                                  : sw->last_event_wall_us;
    out->last_event_age_ms = last_ms && now > last_ms ? now - last_ms : 0;
    out->slices = s->slice_count;
    out->endpoints = b->endpoints;
    out->using_terminating = b->using_terminating;
    snprintf(out->last_error, sizeof out->last_error, "%s", b->last_error);
    out->last_error_wall_us = b->last_error_wall_us;
    out->publishes = b->publishes;
    return PF_OK;
}
