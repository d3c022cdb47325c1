/* Listener TLS: one SSL_CTX per listener with safe defaults (TLS 1.2 and 1.3, security
 * level 2, no compression, no renegotiation, tickets and a bounded session cache), the
 * certificate chosen per handshake from the SNI name, and client certificates checked
 * against the CA and allowed_client_sans. The bytes themselves move in stream.c. */
#include "proxy/tls_int.h"

#include "core/log.h"
#include "core/time.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

/* The context new connections are made from. The main thread publishes a new one when
 * certificates or ticket keys rotate; each worker keeps a reference to the one it last
 * took, and takes the lock only when the generation says there is a newer one (once per
 * rotation, not per connection). Connections hold their context (SSL_new takes a
 * reference), so they keep their certificate until they close. */
typedef struct tls_worker_ctx {
    SSL_CTX *ctx;
    uint64_t generation;
    char pad[64 - sizeof(SSL_CTX *) - sizeof(uint64_t)]; /* one cache line per worker */
} tls_worker_ctx;

typedef struct tls_published {
    pthread_mutex_t lock;
    SSL_CTX *ctx; /* under lock */
    _Atomic uint64_t generation;
    tls_worker_ctx *workers;
    unsigned worker_count;
} tls_published;

static int published_init(tls_published *p, unsigned workers) {
    pthread_mutex_init(&p->lock, NULL);
    p->worker_count = workers ? workers : 1;
    p->workers = aligned_alloc(64, p->worker_count * sizeof *p->workers);
    if (!p->workers)
        return PF_ENOMEM;
    memset(p->workers, 0, p->worker_count * sizeof *p->workers);
    atomic_store(&p->generation, 1); /* the workers' 0: nothing taken yet */
    return PF_OK;
}

static void published_destroy(tls_published *p) {
    for (unsigned i = 0; p->workers && i < p->worker_count; i++)
        SSL_CTX_free(p->workers[i].ctx);
    free(p->workers);
    SSL_CTX_free(p->ctx);
    pthread_mutex_destroy(&p->lock);
}

/* Main thread: new connections use ctx from now on (the publisher owns the reference). */
static void published_set(tls_published *p, SSL_CTX *ctx) {
    pthread_mutex_lock(&p->lock);
    SSL_CTX *old = p->ctx;
    p->ctx = ctx;
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_mutex_unlock(&p->lock);
    SSL_CTX_free(old);
}

/* Worker `worker`: the current context, borrowed until the worker's next call. */
static SSL_CTX *published_get(tls_published *p, unsigned worker) {
    tls_worker_ctx *w = &p->workers[worker < p->worker_count ? worker : 0];
    if (atomic_load_explicit(&p->generation, memory_order_acquire) != w->generation) {
        pthread_mutex_lock(&p->lock);
        SSL_CTX *old = w->ctx;
        SSL_CTX_up_ref(p->ctx);
        w->ctx = p->ctx;
        w->generation = atomic_load_explicit(&p->generation, memory_order_relaxed);
        pthread_mutex_unlock(&p->lock);
        SSL_CTX_free(old);
    }
    return w->ctx;
}

/* Session ticket keys (RFC 5077 4's recommended construction: AES-256-CBC + HMAC-SHA256),
 * made and rotated by pilotfish so that they outlive certificate rotations and are not
 * kept forever. keys[0] seals new tickets; the others still open tickets they sealed. */
#define TICKET_KEYS 2
typedef struct tls_ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
} tls_ticket_key;

/* What one SSL_CTX serves; immutable once built, freed with its SSL_CTX (bundle_index). */
typedef struct tls_bundle {
    pf_tls_server *server;
    tls_cert certs[PF_TLS_MAX_CERTS];
    size_t cert_count;
    tls_ticket_key keys[TICKET_KEYS];
    size_t key_count;
} tls_bundle;

struct pf_tls_server {
    char name[PF_NAME_MAX];
    pf_config_listener_tls cfg; /* a copy: the listener's config may be replaced by a reload */
    pf_config_tls_cert certificates[PF_TLS_MAX_CERTS];
    tls_published pub;
    const tls_bundle *current; /* main thread: the bundle of pub's context */
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

/* Loads a certificate (then its chain) and its key; the message names the file at fault
 * and why, for the startup error and the rotation log alike. */
static int load_cert(tls_cert *c, const pf_config_tls_cert *cfg, pf_error *err) {
    FILE *f = fopen(cfg->cert_file, "r");
    if (!f)
        return pf_fail(err, PF_EIO, "%s: cannot read the certificate: %s", cfg->cert_file,
                       strerror(errno));
    c->leaf = PEM_read_X509(f, NULL, NULL, NULL);
    c->chain = sk_X509_new_null();
    X509 *x;
    while (c->leaf && c->chain && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
        if (!sk_X509_push(c->chain, x))
            X509_free(x);
    fclose(f);
    ERR_clear_error(); /* the end of the file ends the chain */
    if (!c->leaf || !c->chain)
        return pf_fail(err, PF_EINVAL, "%s: no PEM certificate", cfg->cert_file);
    f = fopen(cfg->key_file, "r");
    if (!f)
        return pf_fail(err, PF_EIO, "%s: cannot read the key: %s", cfg->key_file, strerror(errno));
    c->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    ERR_clear_error();
    if (!c->key)
        return pf_fail(err, PF_EINVAL, "%s: no PEM private key (or an encrypted one)",
                       cfg->key_file);
    if (X509_check_private_key(c->leaf, c->key) != 1) {
        ERR_clear_error();
        return pf_fail(err, PF_EINVAL, "%s: the key does not match the certificate in %s",
                       cfg->key_file, cfg->cert_file);
    }
    cert_names(c);
    return PF_OK;
}

/* Another reference to the same certificate, key and chain (a bundle with new ticket keys
 * serves the certificates of the one before). */
static int cert_copy(tls_cert *dst, const tls_cert *src) {
    memset(dst, 0, sizeof *dst);
    if (X509_up_ref(src->leaf) != 1)
        return PF_ENOMEM;
    dst->leaf = src->leaf;
    if (EVP_PKEY_up_ref(src->key) != 1)
        return PF_ENOMEM;
    dst->key = src->key;
    if (!(dst->chain = X509_chain_up_ref(src->chain)))
        return PF_ENOMEM;
    memcpy(dst->uri, src->uri, sizeof dst->uri);
    for (size_t i = 0; i < src->name_count; i++) {
        if (!(dst->names[i] = strdup(src->names[i])))
            return PF_ENOMEM;
        dst->name_count++;
    }
    return PF_OK;
}

static int bundle_index = -1; /* SSL_CTX ex_data slot of its tls_bundle */
static pthread_once_t bundle_once = PTHREAD_ONCE_INIT;

static void bundle_free(tls_bundle *b) {
    if (!b)
        return;
    for (size_t i = 0; i < b->cert_count; i++)
        cert_clear(&b->certs[i]);
    OPENSSL_cleanse(b->keys, sizeof b->keys);
    free(b);
}

/* OpenSSL frees a context's ex_data with it: its bundle goes when its last SSL is gone. */
static void bundle_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp) {
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    bundle_free(ptr);
}

static void bundle_index_init(void) {
    bundle_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, bundle_ex_free);
}

static const tls_bundle *bundle_of(SSL *ssl) {
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), bundle_index);
}

/* Picks the certificate for the SNI name: exact SAN names first, then wildcards; the
 * first certificate (already the context's) when nothing matches or no name was sent. */
static int select_cert(SSL *ssl, void *arg) {
    (void)arg;
    const tls_bundle *b = bundle_of(ssl);
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!b || !host || b->cert_count < 2)
        return 1;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < b->cert_count; i++)
            for (size_t j = 0; j < b->certs[i].name_count; j++) {
                const char *n = b->certs[i].names[j];
                bool wild = n[0] == '*';
                if (wild != (pass == 1) || !tls_name_matches(n, host))
                    continue;
                if (i == 0)
                    return 1;
                const tls_cert *c = &b->certs[i];
                return SSL_use_cert_and_key(ssl, c->leaf, c->key, c->chain, 1) == 1 ? 1 : 0;
            }
    return 1;
}

/* Seals tickets with keys[0]; opens those of any key still held, asking for a new ticket
 * when it was not keys[0] (return 2). An unknown key name: a full handshake (return 0). */
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc) {
    const tls_bundle *b = bundle_of(ssl);
    if (!b || b->key_count == 0)
        return enc ? -1 : 0;
    const tls_ticket_key *k = NULL;
    size_t i = 0;
    if (enc) {
        k = &b->keys[0];
        memcpy(key_name, k->name, sizeof k->name);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1)
            return -1;
    } else {
        for (i = 0; i < b->key_count && !k; i++)
            if (memcmp(key_name, b->keys[i].name, sizeof b->keys[i].name) == 0)
                k = &b->keys[i];
        if (!k)
            return 0;
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string("key", (void *)k->hmac, sizeof k->hmac),
        OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_CTX_set_params(hctx, params) != 1)
        return -1;
    int ok = enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv)
                 : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv);
    if (ok != 1)
        return -1;
    return enc || i == 1 ? 1 : 2;
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
    return verify_sans(preverify, store, &t->cfg.allowed_client_sans);
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
        snprintf(labels, sizeof labels, "listener=\"%s\",reason=\"%s\"", t->name, failure_names[i]);
        t->failures[i] = metrics_counter(
            m, "pilotfish_tls_handshake_failures_total",
            "TLS handshakes on a listener that did not complete, by reason.", labels);
    }
    for (int i = 0; i < 2; i++) {
        snprintf(labels, sizeof labels, "listener=\"%s\",resumed=\"%s\"", t->name,
                 i ? "true" : "false");
        t->handshakes[i] =
            metrics_counter(m, "pilotfish_tls_handshakes_total",
                            "Completed TLS handshakes on a listener, full or resumed.", labels);
    }
}

/* A context serving bundle b (which it owns from here on, even on failure). */
static SSL_CTX *build_ctx(pf_tls_server *t, tls_bundle *b, pf_error *err) {
    const pf_config_listener_tls *cfg = &t->cfg;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_set_ex_data(ctx, bundle_index, b) != 1) {
        bundle_free(b);
        SSL_CTX_free(ctx);
        pf_fail(err, PF_ENOMEM, "listener %s: cannot create a TLS context", t->name);
        return NULL;
    }
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
    /* Resumption: stateless tickets (TLS 1.2 and 1.3 PSK) sealed with pilotfish's own
     * rotating keys, valid while their key is held (one to two rotation periods), and, for
     * clients without ticket support, a bounded session-ID cache. The context id scopes
     * sessions to this listener. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)t->name, (unsigned)strlen(t->name));
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, SESSION_CACHE_MAX);
    uint64_t life_s = cfg->session_ticket_rotation_ms / 1000 * TICKET_KEYS;
    SSL_CTX_set_timeout(ctx, (long)(life_s ? life_s : 1));
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
    tls_cert *def = &b->certs[0];
    if (SSL_CTX_use_cert_and_key(ctx, def->leaf, def->key, def->chain, 1) != 1) {
        ERR_clear_error();
        SSL_CTX_free(ctx);
        pf_fail(err, PF_EINVAL,
                "%s: the certificate is refused (too weak a key for security level 2?)",
                t->certificates[0].cert_file);
        return NULL;
    }
    SSL_CTX_set_cert_cb(ctx, select_cert, NULL);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, t);
    if (cfg->client_ca_file[0]) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->client_ca_file);
        if (SSL_CTX_load_verify_locations(ctx, cfg->client_ca_file, NULL) != 1 || !names) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            ERR_clear_error();
            SSL_CTX_free(ctx);
            pf_fail(err, PF_EINVAL, "%s: no PEM CA certificate", cfg->client_ca_file);
            return NULL;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        int mode =
            SSL_VERIFY_PEER | (cfg->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
        SSL_CTX_set_verify(ctx, mode, verify_client);
    }
    return ctx;
}

static int new_ticket_key(tls_ticket_key *k) {
    return RAND_bytes((unsigned char *)k, sizeof *k) == 1 ? PF_OK : PF_EIO;
}

/* A bundle of the certificates in the files as they are now, and the current keys. */
static tls_bundle *bundle_load(pf_tls_server *t, pf_error *err) {
    tls_bundle *b = calloc(1, sizeof *b);
    if (!b) {
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    b->server = t;
    for (size_t i = 0; i < t->cfg.certificate_count; i++) {
        if (load_cert(&b->certs[i], &t->certificates[i], err) != PF_OK)
            goto fail;
        b->cert_count++;
    }
    if (b->cert_count == 0) {
        pf_fail(err, PF_EINVAL, "listener %s: tls has no certificate", t->name);
        goto fail;
    }
    if (t->current) {
        memcpy(b->keys, t->current->keys, sizeof b->keys);
        b->key_count = t->current->key_count;
    } else if (new_ticket_key(&b->keys[0]) == PF_OK) {
        b->key_count = 1;
    }
    return b;
fail:
    if (b->cert_count < PF_TLS_MAX_CERTS)
        cert_clear(&b->certs[b->cert_count]); /* the one that failed half-way */
    bundle_free(b);
    return NULL;
}

static int publish(pf_tls_server *t, tls_bundle *b, pf_error *err) {
    SSL_CTX *ctx = build_ctx(t, b, err);
    if (!ctx)
        return PF_EINVAL;
    t->current = b;
    published_set(&t->pub, ctx);
    return PF_OK;
}

pf_tls_server *tls_server_new(const pf_config_listener *cfg, unsigned workers, pf_metrics *m,
                              pf_error *err) {
    pthread_once(&bundle_once, bundle_index_init);
    pf_tls_server *t = calloc(1, sizeof *t);
    if (!t || published_init(&t->pub, workers) != PF_OK) {
        free(t);
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(t->name, sizeof t->name, "%s", cfg->name);
    t->cfg = cfg->tls;
    t->cfg.certificate_count = 0;
    for (size_t i = 0; i < cfg->tls.certificate_count && i < PF_TLS_MAX_CERTS; i++)
        t->certificates[t->cfg.certificate_count++] = cfg->tls.certificates[i];
    t->cfg.certificates = t->certificates;
    t->alpn_len = alpn_wire(&t->cfg.alpn, t->alpn);
    pf_error why = {{0}};
    tls_bundle *b = bundle_load(t, &why);
    if (!b || publish(t, b, &why) != PF_OK) {
        pf_fail(err, PF_EINVAL, "listener %s: %s", cfg->name, why.msg);
        goto fail;
    }
    register_metrics(t, m);
    return t;
fail:
    tls_server_free(t);
    return NULL;
}

void tls_server_free(pf_tls_server *t) {
    if (!t)
        return;
    published_destroy(&t->pub);
    free(t);
}

int tls_server_reload(pf_tls_server *t, pf_error *err) {
    tls_bundle *b = bundle_load(t, err);
    if (!b)
        return PF_EINVAL;
    for (size_t i = 0; i < b->cert_count; i++) {
        /* a valid pair, but already expired or not yet valid: the one in use stays */
        const ASN1_TIME *na = X509_get0_notAfter(b->certs[i].leaf);
        const ASN1_TIME *nb = X509_get0_notBefore(b->certs[i].leaf);
        if (X509_cmp_current_time(na) <= 0 || X509_cmp_current_time(nb) >= 0) {
            pf_fail(err, PF_EINVAL, "%s: the certificate is %s", t->certificates[i].cert_file,
                    X509_cmp_current_time(na) <= 0 ? "expired" : "not valid yet");
            bundle_free(b);
            return PF_EINVAL;
        }
    }
    return publish(t, b, err);
}

int tls_server_rotate_ticket_keys(pf_tls_server *t, pf_error *err) {
    const tls_bundle *cur = t->current;
    tls_bundle *b = calloc(1, sizeof *b);
    if (!b)
        return pf_fail(err, PF_ENOMEM, "out of memory");
    b->server = t;
    for (size_t i = 0; i < cur->cert_count; i++) {
        int rc = cert_copy(&b->certs[i], &cur->certs[i]);
        b->cert_count++;
        if (rc != PF_OK) {
            bundle_free(b);
            return pf_fail(err, rc, "out of memory");
        }
    }
    /* the new key seals; the one before still opens the tickets it sealed */
    if (new_ticket_key(&b->keys[0]) != PF_OK) {
        bundle_free(b);
        return pf_fail(err, PF_EIO, "no random bytes for a ticket key");
    }
    b->keys[1] = cur->keys[0];
    b->key_count = TICKET_KEYS;
    return publish(t, b, err);
}

uint64_t tls_server_ticket_rotation_ms(const pf_tls_server *t) {
    return t->cfg.session_ticket_rotation_ms;
}

const char *tls_server_name(const pf_tls_server *t) {
    return t->name;
}

SSL *tls_server_ssl(pf_tls_server *t, unsigned worker, int fd) {
    SSL *ssl = SSL_new(published_get(&t->pub, worker));
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

static void upstream_failed(SSL *ssl, unsigned long e);

pf_tls_failure tls_handshake_failed(SSL *ssl, int ssl_error, bool eof) {
    unsigned long e = ERR_peek_error();
    int reason = ERR_GET_REASON(e);
    if (!SSL_is_server(ssl)) {
        /* upstream: the owner counts a connect failure; the reason is told here */
        upstream_failed(ssl, e);
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
    const tls_bundle *b = SSL_is_server(ssl) ? bundle_of(ssl) : NULL;
    for (size_t i = 0; b && own && i < b->cert_count; i++)
        if (b->certs[i].leaf == own && b->certs[i].uri[0])
            add_field(buf, CAP, &len, "By", b->certs[i].uri, strlen(b->certs[i].uri));
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

/* Why a connection to an endpoint failed its handshake: the `reason` label of
 * pilotfish_upstream_tls_failures_total. */
typedef enum {
    UP_FAIL_EXPIRED,   /* the endpoint's certificate expired or is not valid yet */
    UP_FAIL_UNTRUSTED, /* it does not chain to ca_file (or the system's CAs) */
    UP_FAIL_NAME,      /* it does not name the host, address or SANs verified */
    UP_FAIL_CERT,      /* another certificate problem (revoked, bad purpose, ...) */
    UP_FAIL_HANDSHAKE, /* no certificate verdict: refused, a protocol alert, closed */
    UP_FAIL_COUNT
} up_failure;

static const char *const up_failure_names[UP_FAIL_COUNT] = {
    [UP_FAIL_EXPIRED] = "expired",     [UP_FAIL_UNTRUSTED] = "untrusted",
    [UP_FAIL_NAME] = "name_mismatch",  [UP_FAIL_CERT] = "certificate",
    [UP_FAIL_HANDSHAKE] = "handshake",
};

struct pf_tls_client {
    char name[PF_NAME_MAX];
    pf_metrics *metrics; /* where failures are registered: released with the client */
    pf_counter *failures[UP_FAIL_COUNT];
    /* The last failure, for /clusters; written by workers on failures only. */
    pthread_mutex_t last_lock;
    char last_endpoint[PF_ADDRTEXT_MAX];
    char last_name[PF_DNS_NAME_MAX];
    char last_reason[128];
    uint64_t last_wall_us;
    uintptr_t contexts;        /* contexts built so far: each is numbered (ctx_number_index) */
    pf_config_cluster_tls cfg; /* a copy: the cluster's config may be replaced by a reload */
    tls_published pub;
    unsigned char alpn[PF_TLS_MAX_ALPN * PF_TLS_ALPN_MAX];
    size_t alpn_len;
};

static int verify_upstream(int preverify, X509_STORE_CTX *store) {
    const pf_tls_client *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl_of_store(store)));
    return verify_sans(preverify, store, &t->cfg.verify_subject_alt_name);
}

/* A client context's number, and that of the context a session was made with: a session
 * from before a rotation carries the old client certificate, so it is not offered again. */
static int ctx_number_index = -1, session_number_index = -1;
static pthread_once_t client_once = PTHREAD_ONCE_INIT;

static void client_index_init(void) {
    ctx_number_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    session_number_index = SSL_SESSION_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* A session the endpoint gave us goes to the connection's slot, replacing the one before
 * (the pool moves it on to the endpoint and name's bucket). */
static int keep_session(SSL *ssl, SSL_SESSION *sess) {
    SSL_SESSION **slot = SSL_get_app_data(ssl);
    if (!slot)
        return 0;
    SSL_SESSION_set_ex_data(sess, session_number_index,
                            SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_number_index));
    SSL_SESSION_free(*slot);
    *slot = sess;
    return 1; /* the reference is ours */
}

/* A client context from the files as they are now. */
static SSL_CTX *client_ctx(pf_tls_client *t, pf_error *err) {
    const pf_config_cluster_tls *c = &t->cfg;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        pf_fail(err, PF_ENOMEM, "cluster %s: cannot create a TLS context", t->name);
        return NULL;
    }
    SSL_CTX_set_app_data(ctx, t);
    SSL_CTX_set_ex_data(ctx, ctx_number_index, (void *)++t->contexts);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_security_level(ctx, 2);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int ok = c->ca_file[0] ? SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL)
                           : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        ERR_clear_error();
        pf_fail(err, PF_EINVAL, "%s: no PEM CA certificate",
                c->ca_file[0] ? c->ca_file : "the system's CA store");
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_upstream);
    if (c->cert_file[0]) {
        tls_cert cert = {0};
        pf_config_tls_cert files;
        snprintf(files.cert_file, sizeof files.cert_file, "%s", c->cert_file);
        snprintf(files.key_file, sizeof files.key_file, "%s", c->key_file);
        int rc = load_cert(&cert, &files, err);
        if (rc == PF_OK && SSL_CTX_use_cert_and_key(ctx, cert.leaf, cert.key, cert.chain, 1) != 1)
            rc = pf_fail(err, PF_EINVAL, "%s: the certificate is refused (too weak a key?)",
                         c->cert_file);
        cert_clear(&cert);
        ERR_clear_error();
        if (rc != PF_OK)
            goto fail;
    }
    if (t->alpn_len && SSL_CTX_set_alpn_protos(ctx, t->alpn, (unsigned)t->alpn_len) != 0) {
        pf_fail(err, PF_ENOMEM, "cluster %s: cannot set ALPN", t->name);
        goto fail;
    }
    /* Sessions are kept by the pool (keep_session), not by OpenSSL's cache. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, keep_session);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

pf_tls_client *tls_client_new(const pf_config_cluster *cfg, unsigned workers, pf_metrics *m,
                              pf_error *err) {
    pthread_once(&client_once, client_index_init);
    pf_tls_client *t = calloc(1, sizeof *t);
    if (!t || published_init(&t->pub, workers + 1) != PF_OK) { /* + health checks' */
        free(t);
        pf_fail(err, PF_ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&t->last_lock, NULL);
    snprintf(t->name, sizeof t->name, "%s", cfg->name);
    t->metrics = m;
    char labels[PF_NAME_MAX + 64];
    for (int i = 0; i < UP_FAIL_COUNT; i++) {
        snprintf(labels, sizeof labels, "cluster=\"%s\",reason=\"%s\"", t->name,
                 up_failure_names[i]);
        t->failures[i] = metrics_counter(
            m, "pilotfish_upstream_tls_failures_total",
            "Connections to a cluster's endpoints whose TLS handshake failed, by reason "
            "(each is also a connect failure).",
            labels);
    }
    t->cfg = cfg->tls;
    t->alpn_len = alpn_wire(&t->cfg.alpn, t->alpn);
    pf_error why = {{0}};
    SSL_CTX *ctx = client_ctx(t, &why);
    if (!ctx) {
        pf_fail(err, PF_EINVAL, "cluster %s: %s", cfg->name, why.msg);
        tls_client_free(t);
        return NULL;
    }
    published_set(&t->pub, ctx);
    return t;
}

void tls_client_free(pf_tls_client *t) {
    if (!t)
        return;
    /* A removed cluster's series go with it (another cluster of the same name keeps its
     * own reference to them). */
    for (int i = 0; t->metrics && i < UP_FAIL_COUNT; i++)
        metrics_release(t->metrics, t->failures[i]);
    published_destroy(&t->pub);
    pthread_mutex_destroy(&t->last_lock);
    free(t);
}

static up_failure classify_upstream(long verify) {
    switch (verify) {
    case X509_V_OK:
        return UP_FAIL_HANDSHAKE;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return UP_FAIL_EXPIRED;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        return UP_FAIL_UNTRUSTED;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
    case X509_V_ERR_APPLICATION_VERIFICATION: /* verify_subject_alt_name */
        return UP_FAIL_NAME;
    default:
        return UP_FAIL_CERT;
    }
}

/* Counts, logs and remembers an endpoint's failed handshake. Worker thread. */
static void upstream_failed(SSL *ssl, unsigned long e) {
    pf_tls_client *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    long v = SSL_get_verify_result(ssl);
    up_failure why = classify_upstream(v);
    const char *reason = v != X509_V_OK ? X509_verify_cert_error_string(v)
                         : e            ? ERR_reason_error_string(e)
                                        : "connection closed";
    if (!reason)
        reason = "unknown";
    /* the endpoint, from the socket: the SSL knows only the name */
    char endpoint[PF_ADDRTEXT_MAX] = "-";
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char ip[INET6_ADDRSTRLEN];
    if (getpeername(SSL_get_fd(ssl), (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
            if (inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip))
                snprintf(endpoint, sizeof endpoint, "%s:%u", ip, ntohs(in->sin_port));
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
            if (inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip))
                snprintf(endpoint, sizeof endpoint, "[%s]:%u", ip, ntohs(in6->sin6_port));
        }
    }
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name)
        name = X509_VERIFY_PARAM_get0_peername(SSL_get0_param(ssl));
    log_info("upstream TLS handshake failed cluster=%s upstream=%s name=%s reason=\"%s\"",
             t ? t->name : "-", endpoint, name ? name : "-", reason);
    if (!t)
        return;
    if (t->failures[why])
        metrics_inc(t->failures[why], 1);
    pthread_mutex_lock(&t->last_lock);
    snprintf(t->last_endpoint, sizeof t->last_endpoint, "%s", endpoint);
    snprintf(t->last_name, sizeof t->last_name, "%s", name ? name : "");
    snprintf(t->last_reason, sizeof t->last_reason, "%s", reason);
    t->last_wall_us = pf_wall_us();
    pthread_mutex_unlock(&t->last_lock);
}

void tls_client_describe(pf_tls_client *t, json_t *into) {
    json_t *o = json_object();
    json_t *counts = json_object();
    for (int i = 0; i < UP_FAIL_COUNT; i++)
        json_object_set_new(
            counts, up_failure_names[i],
            json_integer(t->failures[i] ? (json_int_t)atomic_load_explicit(&t->failures[i]->value,
                                                                           memory_order_relaxed)
                                        : 0));
    json_object_set_new(o, "handshake_failures", counts);
    pthread_mutex_lock(&t->last_lock);
    if (t->last_wall_us) {
        json_t *last = json_object();
        json_object_set_new(last, "endpoint", json_string(t->last_endpoint));
        json_object_set_new(last, "name", json_string(t->last_name));
        json_object_set_new(last, "reason", json_string(t->last_reason));
        char when[40];
        time_t secs = (time_t)(t->last_wall_us / 1000000u);
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_set_new(last, "time", json_string(when));
        json_object_set_new(o, "last_failure", last);
    } else {
        json_object_set_new(o, "last_failure", json_null());
    }
    pthread_mutex_unlock(&t->last_lock);
    json_object_set_new(into, "tls", o);
}

int tls_client_reload(pf_tls_client *t, pf_error *err) {
    SSL_CTX *ctx = client_ctx(t, err);
    if (!ctx)
        return PF_EINVAL;
    published_set(&t->pub, ctx);
    return PF_OK;
}

const char *tls_client_name(const pf_tls_client *t) {
    return t->name;
}

/* Copies a host (or "host:port", "[v6]:port") without its port into buf. */
static const char *without_port(const char *from, size_t len, char *buf, size_t cap) {
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

const char *tls_upstream_name(const pf_config_cluster *cfg, const char *authority,
                              size_t authority_len, const char *endpoint, char *buf, size_t cap) {
    if (cfg->tls.sni[0])
        return cfg->tls.sni;
    if ((cfg->dns.name[0] || cfg->kubernetes.service[0]) && authority_len > 0)
        return without_port(authority, authority_len, buf, cap);
    return without_port(endpoint, strlen(endpoint), buf, cap);
}

const char *tls_check_name(const pf_config_cluster *cfg, const char *endpoint, char *buf,
                           size_t cap) {
    if (cfg->tls.sni[0])
        return cfg->tls.sni;
    const char *host = cfg->health_check.host[0] ? cfg->health_check.host : cfg->dns.name;
    return without_port(host[0] ? host : endpoint, strlen(host[0] ? host : endpoint), buf, cap);
}

SSL *tls_client_check_ssl(pf_tls_client *t, int fd, const char *name) {
    /* the publisher's last slot is the main thread's, where checks run */
    return tls_client_ssl(t, t->pub.worker_count - 1, fd, name, NULL, NULL);
}

SSL *tls_client_ssl(pf_tls_client *t, unsigned worker, int fd, const char *name, SSL_SESSION *offer,
                    SSL_SESSION **store) {
    SSL_CTX *ctx = published_get(&t->pub, worker);
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    /* a session made before the files changed carries the old client certificate */
    if (offer && SSL_SESSION_get_ex_data(offer, session_number_index) !=
                     SSL_CTX_get_ex_data(ctx, ctx_number_index))
        offer = NULL;
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    bool by_sans = t->cfg.verify_subject_alt_name.count > 0;
    int ok = SSL_set_fd(ssl, fd);
    /* RFC 6066 3: SNI carries host names only, never an address */
    if (ok == 1 && !is_ip)
        ok = SSL_set_tlsext_host_name(ssl, name);
    if (ok == 1 && !by_sans)
        ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name)
                   : SSL_set1_host(ssl, name);
    if (ok == 1 && offer)
        ok = SSL_set_session(ssl, offer);
    if (ok != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_app_data(ssl, store);
    SSL_set_connect_state(ssl);
    return ssl;
}

void tls_session_free(SSL_SESSION *session) {
    SSL_SESSION_free(session);
}
