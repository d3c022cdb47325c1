/* Route matching. Host patterns were lower-cased and validated by config/. */
#include "proxy/router.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

struct pf_router {
    size_t count;
    pf_config_route routes[];
};

pf_router *router_new(const pf_config_listener *listener, const size_t *cluster_slot) {
    pf_router *r = malloc(sizeof *r + listener->route_count * sizeof(pf_config_route));
    if (!r)
        return NULL;
    r->count = listener->route_count;
    if (r->count)
        memcpy(r->routes, listener->routes, r->count * sizeof(pf_config_route));
    for (size_t i = 0; cluster_slot && i < r->count; i++)
        r->routes[i].cluster_index = cluster_slot[r->routes[i].cluster_index];
    return r;
}

void router_free(pf_router *router) {
    free(router);
}

static bool valid_host_char(unsigned char c) {
    return isalnum(c) || c == '-' || c == '.' || c == '_';
}

int router_parse_authority(const char *authority, size_t len, char *host_out, size_t host_cap,
                           int *port_out) {
    const char *host = authority;
    size_t host_len = len;
    const char *port_text = NULL;
    size_t port_len = 0;
    if (len > 0 && authority[0] == '[') {
        const char *close = memchr(authority, ']', len);
        if (!close)
            return PF_EINVAL;
        host_len = (size_t)(close - authority) + 1;
        if (host_len < len) {
            if (authority[host_len] != ':')
                return PF_EINVAL;
            port_text = authority + host_len + 1;
            port_len = len - host_len - 1;
        }
    } else {
        const char *colon = memchr(authority, ':', len);
        if (colon) {
            host_len = (size_t)(colon - authority);
            port_text = colon + 1;
            port_len = len - host_len - 1;
        }
    }
    if (host_len == 0 || host_len >= host_cap)
        return PF_EINVAL;
    if (host[0] == '[') {
        /* An IP-literal (RFC 3986 3.2.2): brackets around an IPv6 address, nothing else. */
        char literal[INET6_ADDRSTRLEN];
        struct in6_addr ignored;
        size_t inner = host_len - 2;
        if (host_len < 3 || inner >= sizeof literal)
            return PF_EINVAL;
        memcpy(literal, host + 1, inner);
        literal[inner] = '\0';
        if (inet_pton(AF_INET6, literal, &ignored) != 1)
            return PF_EINVAL;
    }
    for (size_t i = 0; i < host_len; i++) {
        unsigned char c = (unsigned char)host[i];
        if (!(valid_host_char(c) || (host[0] == '[' && (c == ':' || c == '[' || c == ']'))))
            return PF_EINVAL;
        host_out[i] = (char)tolower(c);
    }
    host_out[host_len] = '\0';
    *port_out = -1;
    if (port_text) {
        if (port_len == 0 || port_len > 5)
            return PF_EINVAL;
        int port = 0;
        for (size_t i = 0; i < port_len; i++) {
            if (!isdigit((unsigned char)port_text[i]))
                return PF_EINVAL;
            port = port * 10 + (port_text[i] - '0');
        }
        if (port < 1 || port > 65535)
            return PF_EINVAL;
        *port_out = port;
    }
    return PF_OK;
}

static bool host_matches(const pf_config_route *route, const char *host, int port) {
    if (route->host_port >= 0 && route->host_port != (port < 0 ? 80 : port))
        return false;
    switch (route->host_kind) {
    case PF_MATCH_HOST_ANY:
        return true;
    case PF_MATCH_HOST_EXACT:
        return strcmp(route->host, host) == 0;
    case PF_MATCH_HOST_SUFFIX: {
        /* "*.local" matches "a.local" and "a.b.local", never "local" itself. */
        size_t hl = strlen(host), sl = strlen(route->host);
        return hl > sl && strcmp(host + hl - sl, route->host) == 0;
    }
    }
    return false;
}

static bool path_matches(const pf_config_route *route, const char *path, size_t path_len) {
    size_t rl = strlen(route->path);
    if (route->path_kind == PF_MATCH_PATH_EXACT)
        return rl == path_len && memcmp(route->path, path, rl) == 0;
    return rl <= path_len && memcmp(route->path, path, rl) == 0;
}

const pf_config_route *router_find(const pf_router *router, const char *host, int port,
                                   const char *path, size_t path_len) {
    for (size_t i = 0; i < router->count; i++) {
        const pf_config_route *route = &router->routes[i];
        if (host_matches(route, host, port) && path_matches(route, path, path_len))
            return route;
    }
    return NULL;
}

long router_match(const pf_router *router, const char *host, int port, const char *path,
                  size_t path_len) {
    const pf_config_route *route = router_find(router, host, port, path, path_len);
    return route ? (long)route->cluster_index : -1;
}
