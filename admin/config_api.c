/* The config API on the admin server: GET /config (the effective config, its version in the
 * ETag), PUT /config (a whole config, validated and applied like a reload), POST
 * /config/check (validated only) and GET /config/history. Loading and applying belong to
 * cmd/ (pf_admin_config_api); this file is HTTP: the bearer token, body limits, If-Match
 * and the answers. Writes are off unless admin.api_token_file is set. */
#include "admin/admin_int.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A token file is a line, not a document. */
#define TOKEN_MAX 4096

static void reply_doc(struct evhttp_request *req, int code, const char *reason, json_t *doc) {
    char *text = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL;
    json_decref(doc);
    if (!text) {
        admin_reply(req, 500, "Internal Server Error", "text/plain; charset=utf-8",
                    "out of memory\n", 14);
        return;
    }
    size_t len = strlen(text);
    char *line = realloc(text, len + 2);
    if (line) {
        text = line;
        text[len++] = '\n';
        text[len] = '\0';
    }
    admin_reply(req, code, reason, "application/json", text, len);
    free(text);
}

static void reply_error(struct evhttp_request *req, int code, const char *reason,
                        const char *message) {
    reply_doc(req, code, reason, json_pack("{s:[s]}", "errors", message));
}

static void set_etag(struct evhttp_request *req, uint64_t version) {
    char etag[32];
    snprintf(etag, sizeof etag, "\"%llu\"", (unsigned long long)version);
    evhttp_add_header(evhttp_request_get_output_headers(req), "ETag", etag);
}

void admin_token_free(admin_token *token) {
    if (token->value) {
        explicit_bzero(token->value, token->len);
        free(token->value);
    }
    memset(token, 0, sizeof *token);
}

/* Reads the token file again when it changed (another inode, size or mtime: a rotated
 * Secret is a new file behind a symlink). Returns 0, or an error with the token cleared. */
static int load_token(pf_admin *admin, const char *path) {
    admin_token *t = &admin->token;
    struct stat st;
    if (stat(path, &st) != 0) {
        log_warn("admin: cannot read api_token_file %s: %s", path, strerror(errno));
        admin_token_free(t);
        return PF_EIO;
    }
    if (t->value && st.st_dev == t->dev && st.st_ino == t->ino && st.st_size == t->size &&
        st.st_mtim.tv_sec == t->mtime.tv_sec && st.st_mtim.tv_nsec == t->mtime.tv_nsec)
        return PF_OK;
    admin_token_free(t);
    char *buf = malloc(TOKEN_MAX + 1);
    int fd = buf ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    ssize_t n = fd >= 0 ? read(fd, buf, TOKEN_MAX + 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n < 0 || n > TOKEN_MAX) {
        log_warn("admin: cannot read api_token_file %s: %s", path,
                 n > TOKEN_MAX ? "longer than 4096 bytes" : strerror(errno));
        free(buf);
        return PF_EIO;
    }
    /* A trailing newline (echo, kubectl create secret --from-file) is not part of it. */
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        n--;
    if (n == 0) {
        log_warn("admin: api_token_file %s is empty; the config API's writes stay off", path);
        free(buf);
        return PF_EINVAL;
    }
    buf[n] = '\0';
    t->value = buf;
    t->len = (size_t)n;
    t->dev = st.st_dev;
    t->ino = st.st_ino;
    t->size = st.st_size;
    t->mtime = st.st_mtim;
    return PF_OK;
}

/* Equal without an early exit, so that the time taken says nothing about where a guess
 * goes wrong; the length is compared the same way. */
static bool same_secret(const char *a, size_t alen, const char *b, size_t blen) {
    volatile unsigned char diff = (unsigned char)(alen != blen);
    size_t n = alen > blen ? alen : blen;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < alen ? (unsigned char)a[i] : 0;
        unsigned char y = i < blen ? (unsigned char)b[i] : 0;
        diff |= (unsigned char)(x ^ y);
    }
    return diff == 0;
}

/* True when the request may write; otherwise it was answered (403 off or wrong token, 401
 * no token, 500 unreadable token file). */
static bool authorized(pf_admin *admin, struct evhttp_request *req) {
    const char *path = admin->cfg->admin_api_token_file;
    if (!path[0] || !admin->api.put || !admin->api.edit) {
        reply_error(req, 403, "Forbidden",
                    "the config API's writes are off: set admin.api_token_file (a file holding "
                    "the bearer token) and restart pilotfish");
        return false;
    }
    if (load_token(admin, path) != PF_OK) {
        reply_error(req, 500, "Internal Server Error",
                    "admin.api_token_file cannot be read or is empty; see the log");
        return false;
    }
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"pilotfish\"");
        reply_error(req, 401, "Unauthorized",
                    "send the token of admin.api_token_file as Authorization: Bearer TOKEN");
        return false;
    }
    const char *given = auth + 7;
    while (*given == ' ')
        given++;
    if (!same_secret(given, strlen(given), admin->token.value, admin->token.len)) {
        log_warn("admin: config API call with a wrong token refused");
        reply_error(req, 403, "Forbidden", "wrong token");
        return false;
    }
    return true;
}

/* The body as a NUL-terminated string (caller frees), or NULL when answered (413, 500).
 * evhttp refuses bodies over ADMIN_MAX_BODY itself; this catches exactly that size. */
static char *take_body(struct evhttp_request *req) {
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > ADMIN_MAX_BODY) {
        reply_error(req, 413, "Payload Too Large", "a config body may hold at most 4 MiB");
        return NULL;
    }
    char *body = malloc(len + 1);
    if (!body) {
        reply_error(req, 500, "Internal Server Error", "out of memory");
        return NULL;
    }
    evbuffer_copyout(in, body, len);
    body[len] = '\0';
    if (strlen(body) != len) {
        free(body);
        reply_error(req, 400, "Bad Request", "the body holds a NUL byte; send JSON text");
        return NULL;
    }
    return body;
}

/* If-Match: "7", W/"7", 7 or *. Returns true with *version (0 for * or absent), false for
 * anything else (then nothing can match). */
static bool parse_if_match(const char *h, uint64_t *version) {
    *version = 0;
    if (!h)
        return true;
    while (*h == ' ')
        h++;
    if (strcmp(h, "*") == 0)
        return true;
    if (strncmp(h, "W/", 2) == 0)
        h += 2;
    bool quoted = *h == '"';
    h += quoted;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(h, &end, 10);
    if (end == h || errno || v == 0 || (quoted && *end++ != '"'))
        return false;
    while (*end == ' ')
        end++;
    if (*end)
        return false;
    *version = v;
    return true;
}

static json_t *errors_json(const pf_errlist *errs) {
    json_t *list = json_array();
    for (size_t i = 0; list && i < errs->count; i++)
        json_array_append_new(list, json_string(errs->items[i]));
    return json_pack("{s:o}", "errors", list ? list : json_array());
}

static void put_config(pf_admin *admin, struct evhttp_request *req, bool check_only) {
    if (!authorized(admin, req))
        return;
    uint64_t if_match = 0;
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "If-Match");
    if (!check_only && !parse_if_match(h, &if_match)) {
        set_etag(req, admin->api.version(admin->api.ctx));
        reply_error(req, 412, "Precondition Failed",
                    "If-Match names no version of this config (use the ETag of GET /config)");
        return;
    }
    char *body = take_body(req);
    if (!body)
        return;
    pf_errlist errs = {0};
    uint64_t version = 0;
    int rc = admin->api.put(admin->api.ctx, body, check_only, if_match, &version, &errs);
    free(body);
    set_etag(req, version);
    if (rc == PF_OK)
        reply_doc(req, 200, "OK",
                  check_only ? json_pack("{s:b,s:I}", "valid", 1, "version", (json_int_t)version)
                             : json_pack("{s:I}", "version", (json_int_t)version));
    else if (rc == PF_ECONFLICT)
        reply_doc(req, 412, "Precondition Failed",
                  json_pack("{s:[s],s:I}", "errors",
                            "the config changed since the version If-Match names; GET /config "
                            "and try again",
                            "version", (json_int_t)version));
    else
        reply_doc(req, 400, "Bad Request", errors_json(&errs));
    pf_errlist_free(&errs);
}

/* `path` is PREFIX + a name (+ SUFFIX): the name, percent-decoded, into out. */
static bool name_in_path(const char *path, const char *prefix, const char *suffix, char *out,
                         size_t cap) {
    size_t plen = strlen(prefix), slen = strlen(suffix), len = strlen(path);
    if (strncmp(path, prefix, plen) != 0 || len < plen + slen + 1 ||
        strcmp(path + len - slen, suffix) != 0)
        return false;
    size_t nlen = len - plen - slen;
    char raw[PF_NAME_MAX * 3 + 1];
    if (nlen >= sizeof raw)
        return false;
    memcpy(raw, path + plen, nlen);
    raw[nlen] = '\0';
    char *decoded = evhttp_uridecode(raw, 0, NULL);
    bool ok = decoded && decoded[0] && !strchr(decoded, '/') && strlen(decoded) < cap;
    if (ok)
        snprintf(out, cap, "%s", decoded);
    free(decoded);
    return ok;
}

bool admin_handle_config_part(pf_admin *admin, struct evhttp_request *req) {
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    char name[PF_NAME_MAX];
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    pf_admin_edit what;
    const char *allow;
    if (!path)
        return false;
    if (name_in_path(path, "/clusters/", "", name, sizeof name)) {
        allow = "PUT, DELETE";
        what = cmd == EVHTTP_REQ_DELETE ? PF_ADMIN_DELETE_CLUSTER : PF_ADMIN_PUT_CLUSTER;
        if (cmd != EVHTTP_REQ_PUT && cmd != EVHTTP_REQ_DELETE)
            goto not_allowed;
    } else if (name_in_path(path, "/listeners/", "/routes", name, sizeof name)) {
        allow = "PUT";
        what = PF_ADMIN_PUT_ROUTES;
        if (cmd != EVHTTP_REQ_PUT)
            goto not_allowed;
    } else {
        return false;
    }
    if (!authorized(admin, req))
        return true;
    uint64_t if_match = 0;
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "If-Match");
    if (!parse_if_match(h, &if_match)) {
        set_etag(req, admin->api.version(admin->api.ctx));
        reply_error(req, 412, "Precondition Failed",
                    "If-Match names no version of this config (use the ETag of GET /config)");
        return true;
    }
    char *body = take_body(req);
    if (!body)
        return true;
    pf_errlist errs = {0};
    uint64_t version = 0;
    int rc = admin->api.edit(admin->api.ctx, what, name, body, if_match, &version, &errs);
    free(body);
    set_etag(req, version);
    if (rc == PF_OK)
        reply_doc(req, 200, "OK", json_pack("{s:I}", "version", (json_int_t)version));
    else if (rc == PF_ECONFLICT)
        reply_doc(req, 412, "Precondition Failed",
                  json_pack("{s:[s],s:I}", "errors",
                            "the config changed since the version If-Match names; GET /config "
                            "and try again",
                            "version", (json_int_t)version));
    else if (rc == PF_ENOTFOUND)
        reply_doc(req, 404, "Not Found", errors_json(&errs));
    else if (rc == PF_EINUSE)
        reply_doc(req, 409, "Conflict", errors_json(&errs));
    else
        reply_doc(req, 400, "Bad Request", errors_json(&errs));
    pf_errlist_free(&errs);
    return true;
not_allowed:
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    reply_error(req, 405, "Method Not Allowed", "GET /config for the config; see README");
    return true;
}

void admin_handle_config(struct evhttp_request *req, void *arg) {
    pf_admin *admin = arg;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd == EVHTTP_REQ_PUT) {
        put_config(admin, req, false);
        return;
    }
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD, PUT");
        reply_error(req, 405, "Method Not Allowed", "use GET, or PUT with a whole config");
        return;
    }
    char *text = config_dump_json(admin->cfg);
    if (!text) {
        reply_error(req, 500, "Internal Server Error", "out of memory");
        return;
    }
    if (admin->api.version)
        set_etag(req, admin->api.version(admin->api.ctx));
    admin_reply(req, 200, "OK", "application/json", text, strlen(text));
    free(text);
}

void admin_handle_config_check(struct evhttp_request *req, void *arg) {
    pf_admin *admin = arg;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        reply_error(req, 405, "Method Not Allowed", "POST a whole config to check it");
        return;
    }
    put_config(admin, req, true);
}

void admin_handle_config_history(struct evhttp_request *req, void *arg) {
    pf_admin *admin = arg;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_error(req, 405, "Method Not Allowed", "use GET");
        return;
    }
    if (!admin->api.history) {
        reply_error(req, 404, "Not Found", "no config history in this process");
        return;
    }
    set_etag(req, admin->api.version(admin->api.ctx));
    reply_doc(req, 200, "OK",
              json_pack("{s:I,s:o}", "version", (json_int_t)admin->api.version(admin->api.ctx),
                        "versions", admin->api.history(admin->api.ctx)));
}
