/* Private to admin/: the admin server's state, shared by the JSON endpoints (admin.c) and
 * the HTML status page (status_page.c). */
#ifndef PF_ADMIN_INT_H
#define PF_ADMIN_INT_H

#include "admin/admin.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

/* Request totals at one moment, for the status page's rates (clusters or listeners, by
 * index). */
typedef struct admin_rate_sample {
    uint64_t *totals;
    uint64_t *series; /* whose totals they are (pf_proxy_cluster_status.series): a slot
                       * reused by another cluster starts a fresh series */
    size_t count;
    uint64_t at_us; /* pf_now_us(); 0: none yet */
} admin_rate_sample;

/* Rates over the last 10 to 20 s: the page keeps the two latest samples taken at least
 * ADMIN_RATE_WINDOW_US apart. Bounded by the number of clusters (listeners). */
typedef struct admin_rate_meter {
    admin_rate_sample older, newer;
} admin_rate_meter;

/* The bearer token of admin.api_token_file and what the file was when it was read, so that
 * a change (a rotated Secret) is read again. */
typedef struct admin_token {
    char *value; /* NULL: not read (or unreadable) */
    size_t len;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} admin_token;

struct pf_admin {
    struct evhttp *http;
    struct evconnlistener *listener; /* evhttp's, for pausing on EMFILE */
    struct event *accept_retry;
    const pf_config *cfg;
    pf_proxy *proxy;
    pf_metrics *metrics;
    pf_health *const *health; /* per cluster, may be NULL: see admin_set_health */
    size_t health_count;
    const pf_dns *dns;                 /* may be NULL: see admin_set_dns */
    const pf_k8s *k8s;                 /* may be NULL: see admin_set_kubernetes */
    json_t *(*http_routes)(void *arg); /* may be NULL: admin_set_http_routes */
    void *http_routes_arg;
    const char *version;                            /* "" until admin_set_version */
    admin_rate_meter cluster_rates, listener_rates; /* the status page's, main thread */
    pf_admin_config_api api;                        /* zero until admin_set_config_api */
    admin_token token;                              /* admin.api_token_file, as last read */
};

/* Sends a reply with Cache-Control: no-store. admin.c. */
void admin_reply(struct evhttp_request *req, int code, const char *reason, const char *content_type,
                 const char *body, size_t len);

/* admin/config_api.c: GET/PUT /config, POST /config/check, GET /config/history. */
void admin_handle_config(struct evhttp_request *req, void *arg);
void admin_handle_config_check(struct evhttp_request *req, void *arg);
void admin_handle_config_history(struct evhttp_request *req, void *arg);
/* /clusters/{name} and /listeners/{name}/routes; false when the path is neither. */
bool admin_handle_config_part(pf_admin *admin, struct evhttp_request *req);
void admin_token_free(admin_token *token);
/* The largest config body the API takes; more is answered 413. */
#define ADMIN_MAX_BODY (4u * 1024u * 1024u)

/* Appends `text` to `out` with & < > " ' replaced by character references, so that text
 * from config or discovery is inert in element content and in quoted attributes alike.
 * Returns 0 or PF_ENOMEM. Any thread. */
int admin_html_escape(struct evbuffer *out, const char *text);

/* Renders the status page for `admin` into `out` (and samples request totals for its
 * rates). Returns 0 or PF_ENOMEM. Main thread. */
int admin_status_render(pf_admin *admin, struct evbuffer *out);
/* Frees what the status page keeps between renders. Main thread. */
void admin_status_free(pf_admin *admin);

#define ADMIN_RATE_WINDOW_US (10u * 1000000u)
#define ADMIN_RATE_MIN_US (1u * 1000000u) /* a shorter span says too little */
/* Takes `totals` of `series` (count entries each, at now_us) as the newer sample once the
 * current one is ADMIN_RATE_WINDOW_US old (the current one becomes the older). Returns 0 or
 * PF_ENOMEM (then nothing changes). */
int admin_rate_update(admin_rate_meter *m, const uint64_t *totals, const uint64_t *series,
                      size_t count, uint64_t now_us);
/* Requests per second of entry i (`total` of `series` now), against the older sample, or
 * the newer one when the older has no total of that series (a slot reused since, an entry
 * added since) and the newer is at least ADMIN_RATE_MIN_US old; -1 when no sample of the
 * series tells. */
double admin_rate_of(const admin_rate_meter *m, size_t i, uint64_t total, uint64_t series,
                     uint64_t now_us);
void admin_rate_free(admin_rate_meter *m);

/* The Content-Security-Policy header value the page needs: nothing but its own inline
 * style and script (by hash) and requests back to the admin server. Static text. */
const char *admin_status_csp(void);

#endif
