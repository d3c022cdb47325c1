/* The server name (SNI) of a TLS ClientHello, read without terminating TLS: tcp listeners
 * route connections by it and pass the bytes on untouched (TLS passthrough). A pure parser
 * over the bytes the client sent so far, bounds-checked at every read; the fuzz harness
 * (test/fuzz/fuzz_sni.c) and the unit tables call it as the relay does. */
#ifndef PF_PROXY_SNI_H
#define PF_PROXY_SNI_H

#include <stddef.h>
#include <stdint.h>

/* A ClientHello is read over at most this many bytes (records included); a longer one is
 * refused (PF_SNI_BAD). Real ones are well under 2 KiB, post-quantum key shares included. */
#define PF_SNI_PEEK_MAX (16u * 1024u)
/* A DNS name is at most 253 characters (RFC 1035 2.3.4, without the trailing dot). */
#define PF_SNI_NAME_MAX 254u

typedef enum {
    PF_SNI_FOUND,   /* a complete ClientHello with a host_name: written, lower-case */
    PF_SNI_NONE,    /* a complete ClientHello without a server name */
    PF_SNI_MORE,    /* a valid beginning: more bytes are needed */
    PF_SNI_NOT_TLS, /* the first byte is no TLS handshake record: not TLS at all */
    PF_SNI_BAD,     /* TLS, but malformed, or longer than PF_SNI_PEEK_MAX */
} pf_sni_result;

/* Looks at the first `len` bytes of a connection. On PF_SNI_FOUND the server name is in
 * `name` (`cap` bytes, at least PF_SNI_NAME_MAX), NUL-terminated and lower-cased. Names
 * other than letters, digits, '-', '_' and dots between labels are PF_SNI_BAD. Pure. */
pf_sni_result sni_parse(const uint8_t *data, size_t len, char *name, size_t cap);

/* The result's name for logs and metric labels. */
const char *sni_result_name(pf_sni_result r);

#endif
