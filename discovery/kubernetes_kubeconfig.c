/* Kubeconfig files (what kubectl reads): the current context's server, CA, client
 * certificate and key, token and namespace. YAML through libyaml's document API; only the
 * fields pilotfish uses are read, and "exec"/"auth-provider" users are refused with a
 * message, since pilotfish runs no plugins. Pure apart from reading the file. */
#include "discovery/kubernetes_int.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define KUBECONFIG_MAX (4u * 1024u * 1024u)

static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map, const char *key) {
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE &&
            strcmp((const char *)k->data.scalar.value, key) == 0)
            return yaml_document_get_node(doc, p->value);
    }
    return NULL;
}

static const char *scalar(yaml_node_t *n) {
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* The "name: X" entry of a list such as clusters/users/contexts, and its `field` mapping. */
static yaml_node_t *named(yaml_document_t *doc, yaml_node_t *root, const char *list,
                          const char *name, const char *field) {
    yaml_node_t *seq = map_get(doc, root, list);
    if (!seq || seq->type != YAML_SEQUENCE_NODE || !name)
        return NULL;
    for (yaml_node_item_t *i = seq->data.sequence.items.start; i < seq->data.sequence.items.top;
         i++) {
        yaml_node_t *item = yaml_document_get_node(doc, *i);
        const char *n = scalar(map_get(doc, item, "name"));
        if (n && strcmp(n, name) == 0)
            return map_get(doc, item, field);
    }
    return NULL;
}

static bool is_base64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* Standard, padded base64 -> malloc'd bytes (NUL-terminated, *len without the NUL), as
 * kubectl reads it: line breaks are skipped, anything else outside the alphabet is an
 * error, and '=' may only pad the last group (EVP_DecodeBlock alone would accept "===="
 * or trailing blanks and miscount the length). */
static char *decode64(const char *s, size_t *len) {
    size_t n = strlen(s);
    char *clean = malloc(n + 1);
    unsigned char *out = malloc(n / 4 * 3 + 4);
    size_t m = 0, pad = 0;
    bool ok = clean && out;
    for (size_t i = 0; ok && i < n; i++) {
        if (s[i] == '\r' || s[i] == '\n')
            continue;
        if (s[i] == '=')
            pad++;
        else if (pad > 0 || !is_base64_char(s[i]))
            ok = false;
        clean[m++] = s[i];
    }
    ok = ok && m % 4 == 0 && pad <= 2;
    int got = ok ? EVP_DecodeBlock(out, (const unsigned char *)clean, (int)m) : -1;
    free(clean);
    if (got < 0 || (size_t)got < pad) {
        free(out);
        return NULL;
    }
    *len = (size_t)got - pad;
    out[*len] = '\0';
    return (char *)out;
}

/* A relative path in a kubeconfig is relative to the file's directory. */
static void path_in(char *out, size_t cap, const char *dir, const char *p) {
    if (p[0] == '/' || !dir[0])
        snprintf(out, cap, "%s", p);
    else
        snprintf(out, cap, "%s/%s", dir, p);
}

/* "x-data" (base64) into *data, else "x" (a file) into file. */
static int take_pem(yaml_document_t *doc, yaml_node_t *map, const char *key, const char *dir,
                    char *file, size_t cap, char **data, size_t *len, pf_error *err,
                    const char *source) {
    char data_key[64];
    snprintf(data_key, sizeof data_key, "%s-data", key);
    const char *d = scalar(map_get(doc, map, data_key)), *f = scalar(map_get(doc, map, key));
    if (d) {
        if (!(*data = decode64(d, len)))
            return pf_fail(err, PF_EINVAL, "kubeconfig %s: %s is not valid base64", source,
                           data_key);
    } else if (f) {
        path_in(file, cap, dir, f);
    }
    return PF_OK;
}

int k8s_kubeconfig_parse(const char *text, size_t len, const char *source, const char *dir,
                         k8s_kubeconfig *out, pf_error *err) {
    memset(out, 0, sizeof *out);
    yaml_parser_t parser;
    yaml_document_t doc;
    int rc = PF_OK;
    if (!yaml_parser_initialize(&parser))
        return pf_fail(err, PF_ENOMEM, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = pf_fail(err, PF_EINVAL, "kubeconfig %s: YAML error at line %zu: %s", source,
                     parser.problem_mark.line + 1, parser.problem ? parser.problem : "unknown");
        yaml_parser_delete(&parser);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    const char *ctx_name = scalar(map_get(&doc, root, "current-context"));
    yaml_node_t *ctx = named(&doc, root, "contexts", ctx_name, "context");
    if (!ctx) {
        rc = pf_fail(err, PF_EINVAL, "kubeconfig %s: no context \"%s\" (current-context)", source,
                     ctx_name ? ctx_name : "");
        goto done;
    }
    const char *cluster_name = scalar(map_get(&doc, ctx, "cluster"));
    const char *user_name = scalar(map_get(&doc, ctx, "user"));
    const char *ns = scalar(map_get(&doc, ctx, "namespace"));
    yaml_node_t *cluster = named(&doc, root, "clusters", cluster_name, "cluster");
    yaml_node_t *user = named(&doc, root, "users", user_name, "user");
    const char *server = scalar(map_get(&doc, cluster, "server"));
    /* "server:" without a value is an empty scalar; kubectl refuses it too ("no server found") */
    if (!server || !*server) {
        rc = pf_fail(err, PF_EINVAL, "kubeconfig %s: cluster \"%s\" has no server", source,
                     cluster_name ? cluster_name : "");
        goto done;
    }
    snprintf(out->server, sizeof out->server, "%s", server);
    if (ns)
        snprintf(out->namespace, sizeof out->namespace, "%s", ns);
    if (map_get(&doc, cluster, "insecure-skip-tls-verify") &&
        strcmp(scalar(map_get(&doc, cluster, "insecure-skip-tls-verify")) ?: "", "true") == 0) {
        rc = pf_fail(err, PF_EINVAL,
                     "kubeconfig %s: insecure-skip-tls-verify is not supported; pilotfish "
                     "always verifies the API server (give certificate-authority-data)",
                     source);
        goto done;
    }
    if (map_get(&doc, user, "exec") || map_get(&doc, user, "auth-provider")) {
        rc = pf_fail(err, PF_EINVAL,
                     "kubeconfig %s: user \"%s\" authenticates with a plugin (exec or "
                     "auth-provider), which pilotfish does not run; use a token or a client "
                     "certificate",
                     source, user_name ? user_name : "");
        goto done;
    }
    const char *token = scalar(map_get(&doc, user, "token"));
    const char *token_file = scalar(map_get(&doc, user, "tokenFile"));
    if (token && !(out->token = strdup(token))) {
        rc = pf_fail(err, PF_ENOMEM, "out of memory");
        goto done;
    }
    if (token_file)
        path_in(out->token_file, sizeof out->token_file, dir, token_file);
    if ((rc = take_pem(&doc, cluster, "certificate-authority", dir, out->ca_file,
                       sizeof out->ca_file, &out->ca_data, &out->ca_len, err, source)) ||
        (rc = take_pem(&doc, user, "client-certificate", dir, out->cert_file, sizeof out->cert_file,
                       &out->cert_data, &out->cert_len, err, source)) ||
        (rc = take_pem(&doc, user, "client-key", dir, out->key_file, sizeof out->key_file,
                       &out->key_data, &out->key_len, err, source)))
        goto done;
done:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (rc != PF_OK)
        k8s_kubeconfig_clear(out);
    return rc;
}

int k8s_kubeconfig_load(const char *path, k8s_kubeconfig *out, pf_error *err) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "re");
    if (!f)
        return pf_fail(err, PF_EINVAL, "kubeconfig %s: %s", path, strerror(errno));
    char *text = malloc(KUBECONFIG_MAX);
    size_t n = text ? fread(text, 1, KUBECONFIG_MAX, f) : 0;
    bool failed = ferror(f) || n == KUBECONFIG_MAX;
    fclose(f);
    if (!text || failed) {
        free(text);
        return pf_fail(err, PF_EINVAL, "kubeconfig %s: cannot read it (or larger than %u bytes)",
                       path, KUBECONFIG_MAX);
    }
    char dir[PF_K8S_TEXT_MAX];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 0, path);
    int rc = k8s_kubeconfig_parse(text, n, path, dir, out, err);
    free(text);
    return rc;
}

void k8s_kubeconfig_clear(k8s_kubeconfig *kc) {
    free(kc->token);
    free(kc->ca_data);
    free(kc->cert_data);
    free(kc->key_data);
    memset(kc, 0, sizeof *kc);
}
