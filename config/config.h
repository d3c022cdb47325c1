/* pilotfish configuration: JSON (jansson) turned into plain typed structs.
 * Every validation lives here, and every message names the file, the JSON path and
 * what is wrong, e.g. `pilotfish.json: $.clusters[1].endpoints[0]: port 70000 out of range`.
 * A pf_config is an immutable value once loaded: later modules build runtime objects
 * from it, and a reload is a new pf_config, never an edit of the old one. */
#ifndef PF_CONFIG_H
#define PF_CONFIG_H

#include "core/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Defaults: documented in README.md; change both together. */
#define PF_DEFAULT_ADMIN_ADDRESS "127.0.0.1:9901"
#define PF_DEFAULT_MAX_HEADER_BYTES (64u * 1024u)
#define PF_DEFAULT_MAX_TARGET_BYTES (8u * 1024u)
#define PF_DEFAULT_MAX_HEADERS 128u
#define PF_DEFAULT_HEADER_TIMEOUT_MS 10000u
#define PF_DEFAULT_IDLE_TIMEOUT_MS 60000u
#define PF_DEFAULT_CONNECT_TIMEOUT_MS 1000u
#define PF_DEFAULT_RESPONSE_TIMEOUT_MS 15000u
#define PF_DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS 30000u
#define PF_DEFAULT_MAX_IDLE_PER_ENDPOINT 64u
#define PF_DEFAULT_BUFFER_BYTES (64u * 1024u)
#define PF_DEFAULT_DRAIN_TIMEOUT_MS 15000u
#define PF_DEFAULT_WORKERS 1u
#define PF_MAX_WORKERS 64u

#define PF_NAME_MAX 64     /* listener and cluster names */
#define PF_HOST_MAX 256    /* route host patterns */
#define PF_PATH_MAX 1024   /* route path patterns */
#define PF_ADDRTEXT_MAX 64 /* "[v6]:port" as text */

/* A socket address parsed from "ip:port" or "[ipv6]:port". */
typedef struct pf_sockaddr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[PF_ADDRTEXT_MAX]; /* canonical "ip:port" / "[ip]:port" */
} pf_sockaddr;

typedef enum { PF_LB_ROUND_ROBIN, PF_LB_WEIGHTED_ROUND_ROBIN } pf_lb_policy;

typedef struct pf_config_endpoint {
    pf_sockaddr addr;
    uint32_t weight;   /* 1..10000, default 1 */
    uint32_t priority; /* failover tier, 0 = best; default 0 */
    char zone[PF_NAME_MAX];
} pf_config_endpoint;

typedef struct pf_config_cluster {
    char name[PF_NAME_MAX];
    pf_lb_policy lb_policy;
    pf_config_endpoint *endpoints;
    size_t endpoint_count;
    uint64_t connect_timeout_ms;
    uint64_t response_timeout_ms;      /* until the response headers are in */
    uint64_t upstream_idle_timeout_ms; /* how long a pooled connection may sit idle */
    uint32_t max_idle_per_endpoint;    /* per worker */
} pf_config_cluster;

typedef enum { PF_MATCH_HOST_ANY, PF_MATCH_HOST_EXACT, PF_MATCH_HOST_SUFFIX } pf_host_match;
typedef enum { PF_MATCH_PATH_PREFIX, PF_MATCH_PATH_EXACT } pf_path_match;

typedef struct pf_config_route {
    pf_host_match host_kind;
    char host[PF_HOST_MAX]; /* lower-case; for SUFFIX the part after '*', e.g. ".local" */
    int host_port;          /* -1: any port */
    pf_path_match path_kind;
    char path[PF_PATH_MAX]; /* "/" when no path was given */
    char cluster[PF_NAME_MAX];
    size_t cluster_index; /* index into pf_config.clusters, resolved at load */
} pf_config_route;

typedef struct pf_config_listener {
    char name[PF_NAME_MAX];
    pf_sockaddr addr;
    pf_config_route *routes;
    size_t route_count;
    uint32_t max_header_bytes;
    uint32_t max_target_bytes;
    uint32_t max_headers;
    uint32_t buffer_bytes;      /* per direction, before backpressure stops reading */
    uint64_t header_timeout_ms; /* whole request head must arrive within this */
    uint64_t idle_timeout_ms;   /* downstream keep-alive idle */
} pf_config_listener;

typedef struct pf_config {
    char *source; /* file name used in messages, owned */
    pf_sockaddr admin_addr;
    bool access_log;  /* JSON lines to stdout */
    uint32_t workers; /* 0 = not set in the file; the CLI may override */
    uint64_t drain_timeout_ms;
    pf_config_listener *listeners;
    size_t listener_count;
    pf_config_cluster *clusters;
    size_t cluster_count;
} pf_config;

/* Loads and validates a config file. On success returns 0 and *out (caller frees with
 * config_free). On failure returns PF_EINVAL, *out is NULL and errs holds one message per
 * problem, each prefixed "<file>: <json path>: ". Any thread. */
int config_load_file(const char *path, pf_config **out, pf_errlist *errs);

/* Same, from a string; `source` names it in messages. */
int config_load_string(const char *json, const char *source, pf_config **out, pf_errlist *errs);

/* Serialises the effective config (defaults filled in) as pretty JSON; caller frees. */
char *config_dump_json(const pf_config *cfg);

/* Parses "ip:port" or "[ipv6]:port" (no names). Returns 0 or PF_EINVAL with a reason. */
int config_parse_sockaddr(const char *text, pf_sockaddr *out, pf_error *err);

const char *config_lb_policy_name(pf_lb_policy policy);

void config_free(pf_config *cfg);

#endif
