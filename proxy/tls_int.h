/* TLS contexts of listeners: certificates picked by SNI, client certificate checks (mTLS),
 * ALPN and the handshake failure counters. A listener with `tls` owns one pf_tls_server,
 * shared by all workers (an SSL_CTX may be used from many threads); each accepted
 * connection gets its own SSL from it, which the connection's pf_stream drives. */
#ifndef PF_PROXY_TLS_INT_H
#define PF_PROXY_TLS_INT_H

#include "config/config.h"
#include "core/error.h"
#include "core/metrics.h"

#include <jansson.h>
#include <openssl/ssl.h>
#include <stddef.h>

typedef struct pf_tls_server pf_tls_server;

/* Why a handshake did not finish; each is a `reason` label of
 * pilotfish_tls_handshake_failures_total. */
typedef enum {
    PF_TLS_FAIL_HTTP,        /* plaintext HTTP sent to a TLS port */
    PF_TLS_FAIL_PROTOCOL,    /* not TLS, or TLS we refuse (ciphers, a malformed message) */
    PF_TLS_FAIL_VERSION,     /* a protocol version below min_version */
    PF_TLS_FAIL_CLIENT_CERT, /* no, untrusted, or not-allowed client certificate */
    PF_TLS_FAIL_TRUNCATED,   /* the client closed in the middle of the handshake */
    PF_TLS_FAIL_TIMEOUT,     /* closed by pilotfish before it ended (header_timeout, drain) */
    PF_TLS_FAIL_COUNT
} pf_tls_failure;

/* Loads the listener's certificates and CAs and registers its metrics; `workers` is how
 * many worker threads will make connections. Returns NULL with the reason (naming the
 * file) in err. Startup thread only. */
pf_tls_server *tls_server_new(const pf_config_listener *cfg, unsigned workers, pf_metrics *m,
                              pf_error *err);
void tls_server_free(pf_tls_server *t);
/* A server-side SSL for an accepted socket, from the context published last, or NULL when
 * out of memory. The caller owns it (the stream frees it). Worker `worker` only. */
SSL *tls_server_ssl(pf_tls_server *t, unsigned worker, int fd);

/* Rotation (proxy/tls_rotation.c drives these; main thread only). Each builds a new
 * context that new handshakes use from then on; connections keep the one they began
 * with. On failure nothing changes and err names the file and the reason. */
/* Reads the certificate, key and CA files again (a valid, unexpired pair is required). */
int tls_server_reload(pf_tls_server *t, pf_error *err);
/* A new ticket key seals tickets from now on; the one before still opens its tickets. */
int tls_server_rotate_ticket_keys(pf_tls_server *t, pf_error *err);
uint64_t tls_server_ticket_rotation_ms(const pf_tls_server *t);
const char *tls_server_name(const pf_tls_server *t);

/* Classifies a failed handshake (from SSL_get_error's code and the error queue, which it
 * clears) and counts it on the SSL's listener. `eof`: the peer closed the connection. */
pf_tls_failure tls_handshake_failed(SSL *ssl, int ssl_error, bool eof);
/* Counts a failure already classified (a handshake cut short by pilotfish). */
void tls_count_failure(SSL *ssl, pf_tls_failure why);
/* Counts a completed handshake (full or resumed). */
void tls_count_handshake(SSL *ssl);
const char *tls_failure_name(pf_tls_failure why);

/* The x-forwarded-client-cert value for a connection whose client presented a verified
 * certificate: `By=<our URI SAN>;Hash=<sha256 of the DER certificate>;URI=...;DNS=...`.
 * Returns a malloc'd string (caller frees) or NULL when there is no client certificate. */
char *tls_client_cert_header(SSL *ssl);

/* Upstream TLS of a cluster: one client SSL_CTX (verification always on, the cluster's
 * client certificate). Returns NULL with the reason in err. Startup thread only. */
typedef struct pf_tls_client pf_tls_client;
pf_tls_client *tls_client_new(const pf_config_cluster *cfg, unsigned workers, pf_metrics *m,
                              pf_error *err);
/* Sets into["tls"]: handshake failures by reason and the last one (endpoint, name, reason,
 * time). Any thread. */
void tls_client_describe(pf_tls_client *t, json_t *into);
void tls_client_free(pf_tls_client *t);
/* Reads the CA, certificate and key files again (main thread; as tls_server_reload). */
int tls_client_reload(pf_tls_client *t, pf_error *err);
const char *tls_client_name(const pf_tls_client *t);
/* A client SSL on a connecting socket, verifying `name` (a host name, sent as SNI too, or an
 * address) unless verify_subject_alt_name is set. `offer`, when set and made with the
 * current files, is offered for resumption (the SSL takes its own reference); the sessions
 * the endpoint sends are stored in *store (replacing the one there; the slot must outlive
 * the SSL). Returns NULL when out of memory. Worker `worker` only. */
SSL *tls_client_ssl(pf_tls_client *t, unsigned worker, int fd, const char *name, SSL_SESSION *offer,
                    SSL_SESSION **store);
void tls_session_free(SSL_SESSION *session);
/* A client SSL for a health check (no session kept), verifying `name`. Main thread. */
SSL *tls_client_check_ssl(pf_tls_client *t, int fd, const char *name);
/* Pure: the name a health check verifies: tls.sni; else health_check.host; else the DNS
 * name; else the endpoint's address; without a port. Returns sni or buf. */
const char *tls_check_name(const pf_config_cluster *cfg, const char *endpoint, char *buf,
                           size_t cap);
/* Pure: the name an upstream connection verifies: tls.sni; else, for DNS and Kubernetes
 * clusters, the request's authority; else the endpoint's address; without a port. Returns
 * sni or buf. */
const char *tls_upstream_name(const pf_config_cluster *cfg, const char *authority,
                              size_t authority_len, const char *endpoint, char *buf, size_t cap);

/* Pure: whether a SAN is allowed by one pattern (exact, or a prefix ending in "/" then '*'). */
bool tls_san_allowed(const char *pattern, const char *san, size_t san_len);
/* Pure: whether a certificate name (exact or "*.domain") covers an SNI host name; both are
 * compared without case. */
bool tls_name_matches(const char *cert_name, const char *host);

#endif
