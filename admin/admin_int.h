/* Private to admin/: the admin server's state, shared by the JSON endpoints (admin.c) and
 * the HTML status page (status_page.c). */
#ifndef PF_ADMIN_INT_H
#define PF_ADMIN_INT_H

#include "admin/admin.h"

#include <event2/buffer.h>
#include <stdint.h>

struct pf_admin {
    struct evhttp *http;
    const pf_config *cfg;
    pf_proxy *proxy;
    pf_metrics *metrics;
    pf_health *const *health; /* per cluster, may be NULL: see admin_set_health */
    size_t health_count;
    const pf_dns *dns;   /* may be NULL: see admin_set_dns */
    const pf_k8s *k8s;   /* may be NULL: see admin_set_kubernetes */
    const char *version; /* "" until admin_set_version */
};

/* Appends `text` to `out` with & < > " ' replaced by character references, so that text
 * from config or discovery is inert in element content and in quoted attributes alike.
 * Returns 0 or PF_ENOMEM. Any thread. */
int admin_html_escape(struct evbuffer *out, const char *text);

/* Renders the status page for `admin` into `out`. Returns 0 or PF_ENOMEM. Main thread. */
int admin_status_render(const pf_admin *admin, struct evbuffer *out);

/* The Content-Security-Policy header value the page needs: nothing but its own inline
 * style and script (by hash) and requests back to the admin server. Static text. */
const char *admin_status_csp(void);

#endif
