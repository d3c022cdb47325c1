/* Kubernetes discovery, private to discovery/kubernetes*.c and the unit tests: the API
 * objects as pilotfish keeps them, and the pure steps between the wire and an endpoint set
 * (watch-stream line assembly, watch events, EndpointSlices and Services to endpoints).
 * Nothing here does I/O or touches an event loop. */
#ifndef PF_DISCOVERY_KUBERNETES_INT_H
#define PF_DISCOVERY_KUBERNETES_INT_H

#include "config/config.h"
#include "core/error.h"
#include "discovery/endpoint_set.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define K8S_RV_MAX 64        /* resourceVersion: opaque text, an integer in practice */
#define K8S_OBJ_NAME_MAX 254 /* object names are DNS subdomains (253) */
#define K8S_KEY_MAX (PF_K8S_NAME_MAX + K8S_OBJ_NAME_MAX + 1) /* "namespace/name" */
#define K8S_MAX_PORTS 128            /* ports taken from one Service or slice */
#define K8S_MAX_SLICE_ENDPOINTS 1000 /* the API allows 1000 endpoints per slice */
#define K8S_WHY_MAX 256

typedef enum { K8S_KIND_SERVICE, K8S_KIND_SLICE, K8S_KIND_COUNT } k8s_kind;
/* Watched beside the views' two kinds, one watch per namespace (kubernetes.http_routes). */
#define K8S_KIND_HTTPROUTE ((k8s_kind)K8S_KIND_COUNT)
#define K8S_KINDS_ALL (K8S_KIND_COUNT + 1)
typedef enum { K8S_ADDR_IPV4, K8S_ADDR_IPV6, K8S_ADDR_FQDN } k8s_addr_type;

typedef struct k8s_port {
    char name[PF_K8S_NAME_MAX]; /* "" when unnamed (allowed for a Service's only port) */
    int32_t port;               /* slice: the endpoints' port; service: the Service port */
    bool tcp;                   /* protocol TCP (the API's default) */
} k8s_port;

typedef struct k8s_endpoint {
    char address[PF_DNS_NAME_MAX]; /* addresses[0]: an IP, or a name in FQDN slices */
    bool ready;                    /* conditions with the API's nil rules applied */
    bool serving;
    bool terminating;
    char zone[PF_NAME_MAX];
    char node_name[PF_NAME_MAX];
} k8s_endpoint;

typedef struct k8s_slice {
    char service[PF_K8S_NAME_MAX]; /* label kubernetes.io/service-name; "" when absent */
    k8s_addr_type addr_type;
    k8s_port *ports;
    size_t port_count;
    k8s_endpoint *endpoints;
    size_t endpoint_count;
} k8s_slice;

typedef struct k8s_service {
    bool external;                       /* type ExternalName */
    char external_name[PF_DNS_NAME_MAX]; /* lower-case, without a trailing "." */
    k8s_port *ports;
    size_t port_count;
} k8s_service;

/* One object of a store: immutable once parsed. */
typedef struct k8s_object {
    k8s_kind kind;
    char ns[PF_K8S_NAME_MAX];
    char name[K8S_OBJ_NAME_MAX];
    char key[K8S_KEY_MAX]; /* "ns/name" */
    char rv[K8S_RV_MAX];
    union {
        k8s_slice slice;
        k8s_service service;
        struct pf_httproute *route; /* K8S_KIND_HTTPROUTE: translated, owned */
    } u;
} k8s_object;

/* Parses an object of `kind` from its JSON. Returns 0 and *out (caller frees with
 * k8s_object_free), or PF_EINVAL with `why`, or PF_ENOMEM. */
int k8s_object_parse(json_t *obj, k8s_kind kind, k8s_object **out, char why[K8S_WHY_MAX]);
void k8s_object_free(k8s_object *obj);

/* ---- watch streams ------------------------------------------------------------------ */

/* Assembles newline-delimited JSON from a stream read in arbitrary pieces. A line longer
 * than max is an error, never an allocation past max. */
typedef struct k8s_lines {
    char *buf;
    size_t len, cap, max;
} k8s_lines;

/* Called once per complete line (without the newline); non-zero stops feeding and is
 * returned by k8s_lines_feed. Lines of only whitespace are skipped. */
typedef int (*k8s_line_cb)(void *arg, const char *line, size_t len);

#define K8S_ELINE 1 /* k8s_lines_feed: a line exceeded max */

void k8s_lines_init(k8s_lines *lb, size_t max);
/* Returns 0, K8S_ELINE, a callback's non-zero result, or PF_ENOMEM. */
int k8s_lines_feed(k8s_lines *lb, const char *data, size_t n, k8s_line_cb cb, void *arg);
void k8s_lines_reset(k8s_lines *lb);
void k8s_lines_free(k8s_lines *lb);

typedef enum {
    K8S_EV_ADDED,
    K8S_EV_MODIFIED,
    K8S_EV_DELETED,
    K8S_EV_BOOKMARK,
    K8S_EV_ERROR,
    K8S_EV_COUNT
} k8s_event_type;

const char *k8s_event_type_name(k8s_event_type type); /* "ADDED", ... */

typedef struct k8s_event {
    k8s_event_type type;
    json_t *root;   /* owned: json_decref when done */
    json_t *object; /* borrowed from root */
    char rv[K8S_RV_MAX];
    int code; /* ERROR: the Status code (410 for a compacted resourceVersion) */
    char message[K8S_WHY_MAX];
} k8s_event;

/* Parses one watch line. Returns 0 with *ev filled (caller json_decref(ev->root)), or
 * PF_EINVAL with why (malformed JSON, unknown type, object missing). */
int k8s_event_parse(const char *line, size_t len, k8s_event *ev, char why[K8S_WHY_MAX]);

/* A Status object (an error body or an ERROR event's object): its code and message. */
void k8s_status_parse(json_t *status, int *code, char *message, size_t cap);

/* ---- EndpointSlices to endpoints ----------------------------------------------------- */

/* Which port of a Service: a name, a Service port number, or neither ("the only port,
 * else the one named http"). Resolved against the Service when it is known. */
typedef struct k8s_port_pick {
    char name[PF_K8S_NAME_MAX];
    int32_t number; /* a slice port number, matched when name is "" and number > 0 */
    bool any;       /* no name nor number: a slice's only port */
} k8s_port_pick;

/* Decides which slice port a cluster wants. `want_name`/`want_number` come from config
 * (either may be empty/0); `svc` may be NULL when the Service is not (yet) known. */
k8s_port_pick k8s_pick_port(const k8s_service *svc, const char *want_name, uint32_t want_number);

/* Counts for logs and /clusters from one build. */
typedef struct k8s_build_stats {
    size_t ready;          /* ready endpoints found */
    size_t serving_only;   /* serving and terminating, used only when nothing is ready */
    size_t not_serving;    /* never used */
    size_t no_port;        /* slices without the wanted port */
    size_t fqdn;           /* endpoints of FQDN slices */
    size_t fqdn_pending;   /* ... whose names have no answer yet */
    size_t bad_address;    /* addresses that do not parse */
    bool used_terminating; /* no ready endpoint: serving terminating ones stand in */
} k8s_build_stats;

/* The addresses a name resolves to, for FQDN slices: a set borrowed until the build
 * returns (its endpoints' addr are used), or NULL while the name has no answer yet. */
typedef const pf_endpoint_set *(*k8s_fqdn_lookup)(void *arg, const char *name, uint16_t port);

/* Merges the endpoints of `slices` (one Service's; an address in several slices counts
 * once, with the best of its conditions, so an endpoint moving between slices never
 * flaps) for the port `pick`, and applies the condition rule: ready endpoints serve;
 * serving+terminating ones serve only when no endpoint is ready; others never. FQDN
 * endpoints become the addresses `lookup` gives, with the endpoint's conditions. Stores a
 * malloc'd array in *out (weight 1, priority 0, healthy, zone and nodeName kept; caller
 * frees) and returns its length; *out is NULL when out of memory. */
size_t k8s_build_endpoints(const k8s_slice *const *slices, size_t n, const k8s_port_pick *pick,
                           k8s_fqdn_lookup lookup, void *lookup_arg, pf_endpoint **out,
                           k8s_build_stats *stats);

/* The Service port that serves requests naming no port: the only one, else the one
 * named "http"; -1 when there is none. */
int k8s_default_port(const k8s_service *svc);

/* ---- kubeconfig ---------------------------------------------------------------------- */

/* What pilotfish takes from a kubeconfig's current context. *_data are decoded PEM
 * (certificate-authority-data, ...); *_file are paths (relative ones resolved against the
 * kubeconfig's directory). */
typedef struct k8s_kubeconfig {
    char server[PF_K8S_TEXT_MAX];
    char namespace[PF_K8S_NAME_MAX];
    char *token;
    char token_file[PF_K8S_TEXT_MAX];
    char ca_file[PF_K8S_TEXT_MAX];
    char *ca_data;
    size_t ca_len;
    char cert_file[PF_K8S_TEXT_MAX];
    char *cert_data;
    size_t cert_len;
    char key_file[PF_K8S_TEXT_MAX];
    char *key_data;
    size_t key_len;
} k8s_kubeconfig;

/* Parses kubeconfig YAML (`source` names it in messages, `dir` resolves relative paths).
 * Returns 0 with *out filled (free with k8s_kubeconfig_clear), or PF_EINVAL/PF_ENOMEM with
 * err: no current context, no server, a plugin user, insecure-skip-tls-verify. */
int k8s_kubeconfig_parse(const char *text, size_t len, const char *source, const char *dir,
                         k8s_kubeconfig *out, pf_error *err);
/* Reads and parses the file at path. */
int k8s_kubeconfig_load(const char *path, k8s_kubeconfig *out, pf_error *err);
void k8s_kubeconfig_clear(k8s_kubeconfig *kc);

#endif
