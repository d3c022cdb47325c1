/* Listener TLS: one SSL_CTX per listener with safe defaults (TLS 1.2 and 1.3, security
 * level 2, no compression, no renegotiation, tickets and a bounded session cache), the
 * certificate chosen per handshake from the SNI name, and client certificates checked
 * against the CA and allowed_client_sans. The bytes themselves move in stream.c. */
#include "proxy/tls_int.h"

#include "core/log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SESSION_CACHE_MAX 4096 /* server-side sessions kept for ID resumption */
#define NAMES_MAX 64           /* SAN DNS names remembered per certificate for SNI */

typedef struct tls_cert {
    X509 *leaf;
    EVP_PKEY *key;
    STACK_OF(X509) * chain;
    char *names[NAMES_MAX]; /* lower-case SAN DNS names, "*.x" wildcards included */
    size_t name_count;
    char uri[PF_TLS_SAN_MAX]; /* the first URI SAN: our identity in XFCC's By= */
} tls_cert;

struct pf_tls_server {
    const pf_config_listener *cfg;
    SSL_CTX *ctx;
    tls_cert certs[PF_TLS_MAX_CERTS];
    size_t cert_count;
    unsigned char alpn[PF_TLS_MAX_ALPN * PF_TLS_ALPN_MAX]; /* wire format */
    size_t alpn_len;
    pf_counter *failures[PF_TLS_FAIL_COUNT];
    pf_counter *handshakes[2]; /* full, resumed */
};

static const char *const failure_names[PF_TLS_FAIL_COUNT] = {
    [PF_TLS_FAIL_HTTP] = "http_request",   [PF_TLS_FAIL_PROTOCOL] = "protocol",
    [PF_TLS_FAIL_VERSION] = "version",     [PF_TLS_FAIL_CLIENT_CERT] = "client_cert",
    [PF_TLS_FAIL_TRUNCATED] = "truncated", [PF_TLS_FAIL_TIMEOUT] = "timeout",
};

const char *tls_failure_name(pf_tls_failure why) {
    return why < PF_TLS_FAIL_COUNT ? failure_names[why] : "?";
}

bool tls_name_matches(const char *cert_name, const char *host) {
    if (cert_name[0] == '*' && cert_name[1] == '.') {
        /* RFC 6125 6.4.3: the wildcard stands for exactly one left-most label */
        const char *dot = strchr(host, '.');
        return dot && dot != host && strcasecmp(dot, cert_name + 1) == 0;
    }
    return strcasecmp(cert_name, host) == 0;
}

bool tls_san_allowed(const char *pattern, const char *san, size_t san_len) {
    size_t plen = strlen(pattern);
    if (plen >= 2 && pattern[plen - 1] == '*' && pattern[plen - 2] == '/')
        return san_len >= plen && memcmp(pattern, san, plen - 1) == 0;
    return san_len == plen && memcmp(pattern, san, plen) == 0;
}

static void cert_clear(tls_cert *c) {
    X509_free(c->leaf);
    EVP_PKEY_free(c->key);
    sk_X509_pop_free(c->chain, X509_free);
    for (size_t i = 0; i < c->name_count; i++)
        free(c->names[i]);
    memset(c, 0, sizeof *c);
}

/* The SAN DNS names SNI may pick the certificate by, and its first URI SAN. */
static void cert_names(tls_cert *c) {
    GENERAL_NAMES *sans = X509_get_ext_d2i(c->leaf, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        if (gn->type == GEN_URI && !c->uri[0]) {
            const ASN1_IA5STRING *s = gn->d.uniformResourceIdentifier;
            snprintf(c->uri, sizeof c->uri, "%.*s", s->length, (const char *)s->data);
        } else if (gn->type == GEN_DNS && c->name_count < NAMES_MAX) {
            const ASN1_IA5STRING *s = gn->d.dNSName;
            char *n = strndup((const char *)s->data, (size_t)s->length);
            if (!n)
                break;
            for (char *p = n; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            c->names[c->name_count++] = n;
        }
    }
    GENERAL_NAMES_free(sans);
}

static int load_cert(tls_cert *c, const pf_config_tls_cert *cfg, pf_error *err) {
    FILE *f = fopen(cfg->cert_file, "r");
    if (!f)
        return pf_fail(err, PF_EIO, "%s: cannot read the certificate", cfg->cert_file);
    c->leaf = PEM_read_X509(f, NULL, NULL, NULL);
    c->chain = sk_X509_new_null();
    X509 *x;
    while (c->leaf && c->chain && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
        if (!sk_X509_push(c->chain, x))
            X509_free(x);
    fclose(f);
    ERR_clear_error(); /* the end of the file ends the chain */
    f = fopen(cfg->key_file, "r");
    if (f) {
        c->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (!c->leaf || !c->chain || !c->key || X509_check_private_key(c->leaf, c->key) != 1) {
        ERR_clear_error();
        return pf_fail(err, PF_EINVAL, "%s / %s: not a certificate and its matching key",
                       cfg->cert_file, cfg->key_file);
    }
    cert_names(c);
    return PF_OK;
}

/* Picks the certificate for the SNI name: exact SAN names first, then wildcards; the
 * first certificate (already the context's) when nothing matches or no name was sent. */
static int select_cert(SSL *ssl, void *arg) {
    pf_tls_server *t = arg;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!host || t->cert_count < 2)
        return 1;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < t->cert_count; i++)
            for (size_t j = 0; j < t->certs[i].name_count; j++) {
                const char *n = t->certs[i].names[j];
                bool wild = n[0] == '*';
                if (wild != (pass == 1) || !tls_name_matches(n, host))
                    continue;
                if (i == 0)
                    return 1;
                tls_cert *c = &t->certs[i];
                return SSL_use_cert_and_key(ssl, c->leaf, c->key, c->chain, 1) == 1 ? 1 : 0;
            }
    return 1;
}

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
    pf_tls_server *t = arg;
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, t->alpn, (unsigned)t->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* RFC 7301 3.2: no_application_protocol */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* Whether the certificate carries one of the allowed names as a URI, DNS or e-mail SAN. */
static bool cert_has_san(X509 *x, const pf_config_sans *allowed) {
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    bool ok = false;
    for (int i = 0; !ok && sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        const ASN1_STRING *s = NULL;
        if (gn->type == GEN_URI)
            s = gn->d.uniformResourceIdentifier;
        else if (gn->type == GEN_DNS)
            s = gn->d.dNSName;
        else if (gn->type == GEN_EMAIL)
            s = gn->d.rfc822Name;
        if (!s)
            continue;
        for (size_t j = 0; !ok && j < allowed->count; j++)
            ok = tls_san_allowed(allowed->names[j], (const char *)s->data, (size_t)s->length);
    }
    GENERAL_NAMES_free(sans);
    return ok;
}

/* Checks the leaf against a SAN list once the chain checks passed (preverify). */
static int verify_sans(int preverify, X509_STORE_CTX *store, const pf_config_sans *allowed) {
    if (!preverify || X509_STORE_CTX_get_error_depth(store) != 0 || allowed->count == 0)
        return preverify;
    bool ok = cert_has_san(X509_STORE_CTX_get_current_cert(store), allowed);
    if (!ok)
        X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return ok;
}

static SSL *ssl_of_store(X509_STORE_CTX *store) {
    return X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
}

/* With allowed_client_sans, the client's certificate must carry one of them. */
static int verify_client(int preverify, X509_STORE_CTX *store) {
    const pf_tls_server *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl_of_store(store)));
    return verify_sans(preverify, store, &t->cfg->tls.allowed_client_sans);
}

/* ALPN's wire format: each id prefixed by its length. Returns the length written. */
static size_t alpn_wire(const pf_config_alpn *alpn, unsigned char *out) {
    size_t len = 0;
    for (size_t i = 0; i < alpn->count; i++) {
        size_t n = strlen(alpn->names[i]);
        out[len++] = (unsigned char)n;
        memcpy(out + len, alpn->names[i], n);
        len += n;
    }
    return len;
}

static void register_metrics(pf_tls_server *t, pf_metrics *m) {
    char labels[160];
    for (int i = 0; i < PF_TLS_FAIL_COUNT; i++) {
        snprintf(labels, sizeof labels, "listener=\"%s\",reason=\"%s\"", t->cfg->name,
                 failure_names[i]);
        t->failures[i] = metrics_counter(
            m, "pilotfish_tls_handshake_failures_total",
            "TLS handshakes on a listener that did not complete, by reason.", labels);
    }
    for (int i = 0; i < 2; i++) {
        snprintf(labels, sizeof labels, "listener=\"%s\",resumed=\"%s\"", t->cfg->name,
                 i ? "true" : "false");
        t->handshakes[i] =
            metrics_counter(m, "pilotfish_tls_handshakes_total",
                            "Completed TLS handshakes on a listener, full or resumed.", labels);
    }
}

static int build_ctx(pf_tls_server *t, pf_error *err) {
    const pf_config_listener_tls *cfg = &t->cfg->tls;
    SSL_CTX *ctx = t->ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return pf_fail(err, PF_ENOMEM, "listener %s: cannot create a TLS context", t->cfg->name);
    SSL_CTX_set_app_data(ctx, t);
    SSL_CTX_set_min_proto_version(ctx,
                                  cfg->min_version == PF_TLS_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_security_level(ctx, 2);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle connections give their 2 x 16 KiB record buffers back; the output may move
     * between a write that wanted to retry and its retry (evbuffer chains). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Resumption: stateless tickets (TLS 1.2 and 1.3 PSK) and, for clients without ticket
     * support, a bounded session-ID cache. The context id scopes sessions to this listener. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)t->cfg->name,
                                   (unsigned)strlen(t->cfg->name));
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, SESSION_CACHE_MAX);
    tls_cert *def = &t->certs[0];
    if (SSL_CTX_use_cert_and_key(ctx, def->leaf, def->key, def->chain, 1) != 1) {
        ERR_clear_error();
        return pf_fail(err, PF_EINVAL,
                       "listener %s: %s: the certificate is refused (too weak "
                       "a key for security level 2?)",
                       t->cfg->name, cfg->certificates[0].cert_file);
    }
    SSL_CTX_set_cert_cb(ctx, select_cert, t);
    t->alpn_len = alpn_wire(&cfg->alpn, t->alpn);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, t);
    if (cfg->client_ca_file[0]) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->client_ca_file);
        if (SSL_CTX_load_verify_locations(ctx, cfg->client_ca_file, NULL) != 1 || !names) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            ERR_clear_error();
            return pf_fail(err, PF_EINVAL, "listener %s: %s: no PEM CA certificate", t->cfg->name,
                           cfg->client_ca_file);
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        int mode =
            SSL_VERIFY_PEER | (cfg->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
        SSL_CTX_set_verify(ctx, mode, verify_client);
    }
    return PF_OK;
}

pf_tls_server *tls_server_new(const pf_config_listener *cfg, pf_metrics *m, pf_error *err) {
    pf_tls_server *t = calloc(1, sizeof *t);
    if (!t) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    t->cfg = cfg;
    for (size_t i = 0; i < cfg->tls.certificate_count && i < PF_TLS_MAX_CERTS; i++) {
        if (load_cert(&t->certs[i], &cfg->tls.certificates[i], err) != PF_OK)
            goto fail;
        t->cert_count++;
    }
    if (t->cert_count == 0) {
        pf_fail(err, PF_EINVAL, "listener %s: tls has no certificate", cfg->name);
        goto fail;
    }
    if (build_ctx(t, err) != PF_OK)
        goto fail;
    register_metrics(t, m);
    return t;
fail:
    tls_server_free(t);
    return NULL;
}

void tls_server_free(pf_tls_server *t) {
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    for (size_t i = 0; i < t->cert_count; i++)
        cert_clear(&t->certs[i]);
    free(t);
}

SSL *tls_server_ssl(pf_tls_server *t, int fd) {
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

/* The listener of a server-side SSL; NULL for a client (upstream) SSL. */
static pf_tls_server *server_of(SSL *ssl) {
    return SSL_is_server(ssl) ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
}

void tls_count_failure(SSL *ssl, pf_tls_failure why) {
    pf_tls_server *t = server_of(ssl);
    if (t && t->failures[why])
        metrics_inc(t->failures[why], 1);
}

void tls_count_handshake(SSL *ssl) {
    pf_tls_server *t = server_of(ssl);
    pf_counter *c = t ? t->handshakes[SSL_session_reused(ssl) ? 1 : 0] : NULL;
    if (c)
        metrics_inc(c, 1);
}

pf_tls_failure tls_handshake_failed(SSL *ssl, int ssl_error, bool eof) {
    unsigned long e = ERR_peek_error();
    int reason = ERR_GET_REASON(e);
    if (!SSL_is_server(ssl)) {
        /* upstream: the owner counts a connect failure; the reason is told here */
        long v = SSL_get_verify_result(ssl);
        log_info("upstream TLS handshake failed name=%s reason=\"%s\"",
                 SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)
                     ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)
                     : "-",
                 v != X509_V_OK ? X509_verify_cert_error_string(v)
                 : e            ? ERR_reason_error_string(e)
                                : "connection closed");
        ERR_clear_error();
        return PF_TLS_FAIL_PROTOCOL;
    }
    pf_tls_failure why = PF_TLS_FAIL_PROTOCOL;
    if (SSL_get_verify_result(ssl) != X509_V_OK ||
        reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ||
        reason == SSL_R_CERTIFICATE_VERIFY_FAILED)
        why = PF_TLS_FAIL_CLIENT_CERT;
    else if (reason == SSL_R_HTTP_REQUEST || reason == SSL_R_HTTPS_PROXY_REQUEST)
        why = PF_TLS_FAIL_HTTP;
    else if (reason == SSL_R_UNSUPPORTED_PROTOCOL)
        why = PF_TLS_FAIL_VERSION;
    else if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING ||
             (!e && (eof || ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN)))
        why = PF_TLS_FAIL_TRUNCATED;
    log_debug("tls handshake failed reason=%s detail=\"%s\"", failure_names[why],
              e ? ERR_reason_error_string(e) : "connection closed");
    ERR_clear_error();
    tls_count_failure(ssl, why);
    return why;
}

/* Appends ";KEY=value" (or "KEY=value" first) when it fits; values are SAN text, which
 * cannot hold the separators ';' ',' '"' in a valid certificate, so nothing is quoted. */
static void add_field(char *buf, size_t cap, size_t *len, const char *key, const char *v,
                      size_t vlen) {
    for (size_t i = 0; i < vlen; i++)
        if (v[i] == ';' || v[i] == ',' || v[i] == '"' || (unsigned char)v[i] < 0x21)
            return;
    int n = snprintf(buf + *len, cap - *len, "%s%s=%.*s", *len ? ";" : "", key, (int)vlen, v);
    if (n > 0 && (size_t)n < cap - *len)
        *len += (size_t)n;
    else
        buf[*len] = '\0';
}

char *tls_client_cert_header(SSL *ssl) {
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (!peer || SSL_get_verify_result(ssl) != X509_V_OK)
        return NULL;
    enum { CAP = 2048 };
    char *buf = malloc(CAP);
    if (!buf)
        return NULL;
    size_t len = 0;
    buf[0] = '\0';
    /* By=: the identity the client reached, our certificate's URI SAN (Envoy's format) */
    X509 *own = SSL_get_certificate(ssl);
    pf_tls_server *t = server_of(ssl);
    for (size_t i = 0; t && own && i < t->cert_count; i++)
        if (t->certs[i].leaf == own && t->certs[i].uri[0])
            add_field(buf, CAP, &len, "By", t->certs[i].uri, strlen(t->certs[i].uri));
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    if (X509_digest(peer, EVP_sha256(), md, &mdlen) == 1) {
        for (unsigned i = 0; i < mdlen; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
        add_field(buf, CAP, &len, "Hash", hex, 2 * mdlen);
    }
    GENERAL_NAMES *sans = X509_get_ext_d2i(peer, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        if (gn->type == GEN_URI)
            add_field(buf, CAP, &len, "URI", (const char *)gn->d.uniformResourceIdentifier->data,
                      (size_t)gn->d.uniformResourceIdentifier->length);
        else if (gn->type == GEN_DNS)
            add_field(buf, CAP, &len, "DNS", (const char *)gn->d.dNSName->data,
                      (size_t)gn->d.dNSName->length);
    }
    GENERAL_NAMES_free(sans);
    return buf;
}

/* ---- upstream (client) side ------------------------------------------------------------ */

struct pf_tls_client {
    const pf_config_cluster *cfg;
    SSL_CTX *ctx;
    unsigned char alpn[PF_TLS_MAX_ALPN * PF_TLS_ALPN_MAX];
    size_t alpn_len;
};

static int verify_upstream(int preverify, X509_STORE_CTX *store) {
    const pf_tls_client *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl_of_store(store)));
    return verify_sans(preverify, store, &t->cfg->tls.verify_subject_alt_name);
}

/* A session the endpoint gave us goes to the slot the connection was opened with (its
 * pool bucket), replacing the one before: one session per endpoint and worker. */
static int keep_session(SSL *ssl, SSL_SESSION *sess) {
    SSL_SESSION **slot = SSL_get_app_data(ssl);
    if (!slot)
        return 0;
    SSL_SESSION_free(*slot);
    *slot = sess;
    return 1; /* the reference is ours */
}

pf_tls_client *tls_client_new(const pf_config_cluster *cfg, pf_error *err) {
    const pf_config_cluster_tls *c = &cfg->tls;
    pf_tls_client *t = calloc(1, sizeof *t);
    if (!t || !(t->ctx = SSL_CTX_new(TLS_client_method()))) {
        pf_fail(err, PF_ENOMEM, "cluster %s: cannot create a TLS context", cfg->name);
        goto fail;
    }
    t->cfg = cfg;
    SSL_CTX *ctx = t->ctx;
    SSL_CTX_set_app_data(ctx, t);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_security_level(ctx, 2);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int ok = c->ca_file[0] ? SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL)
                           : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        ERR_clear_error();
        pf_fail(err, PF_EINVAL, "cluster %s: %s: no PEM CA certificate", cfg->name,
                c->ca_file[0] ? c->ca_file : "the system's CA store");
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_upstream);
    if (c->cert_file[0] && (SSL_CTX_use_certificate_chain_file(ctx, c->cert_file) != 1 ||
                            SSL_CTX_use_PrivateKey_file(ctx, c->key_file, SSL_FILETYPE_PEM) != 1 ||
                            SSL_CTX_check_private_key(ctx) != 1)) {
        ERR_clear_error();
        pf_fail(err, PF_EINVAL, "cluster %s: %s / %s: not a certificate and its matching key",
                cfg->name, c->cert_file, c->key_file);
        goto fail;
    }
    t->alpn_len = alpn_wire(&c->alpn, t->alpn);
    if (t->alpn_len && SSL_CTX_set_alpn_protos(ctx, t->alpn, (unsigned)t->alpn_len) != 0) {
        pf_fail(err, PF_ENOMEM, "cluster %s: cannot set ALPN", cfg->name);
        goto fail;
    }
    /* Sessions are kept by the pool (keep_session), not by OpenSSL's cache. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, keep_session);
    return t;
fail:
    tls_client_free(t);
    return NULL;
}

void tls_client_free(pf_tls_client *t) {
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

const char *tls_upstream_name(const pf_config_cluster *cfg, const char *authority,
                              size_t authority_len, const char *endpoint, char *buf, size_t cap) {
    if (cfg->tls.sni[0])
        return cfg->tls.sni;
    const char *from = endpoint;
    size_t len = strlen(endpoint);
    if ((cfg->dns.name[0] || cfg->kubernetes.service[0]) && authority_len > 0) {
        from = authority;
        len = authority_len;
    }
    /* drop the port: "[v6]:port" keeps what is inside the brackets, "host:port" the host */
    if (len > 0 && from[0] == '[') {
        const char *end = memchr(from, ']', len);
        len = end ? (size_t)(end - from) - 1 : len - 1;
        from++;
    } else {
        const char *colon = memchr(from, ':', len);
        if (colon)
            len = (size_t)(colon - from);
    }
    if (len >= cap)
        len = cap - 1;
    memcpy(buf, from, len);
    buf[len] = '\0';
    return buf;
}

SSL *tls_client_ssl(pf_tls_client *t, int fd, const char *name, SSL_SESSION **session) {
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl)
        return NULL;
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    bool by_sans = t->cfg->tls.verify_subject_alt_name.count > 0;
    int ok = SSL_set_fd(ssl, fd);
    /* RFC 6066 3: SNI carries host names only, never an address */
    if (ok == 1 && !is_ip)
        ok = SSL_set_tlsext_host_name(ssl, name);
    if (ok == 1 && !by_sans)
        ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name)
                   : SSL_set1_host(ssl, name);
    if (ok == 1 && session && *session)
        ok = SSL_set_session(ssl, *session);
    if (ok != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_app_data(ssl, session);
    SSL_set_connect_state(ssl);
    return ssl;
}

void tls_session_free(SSL_SESSION *session) {
    SSL_SESSION_free(session);
}
