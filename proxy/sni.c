/* ClientHello parsing for TLS passthrough (see sni.h). The layout followed is RFC 8446
 * 5.1 (records), 4 and 4.1.2 (the handshake message and ClientHello, the same bytes as RFC
 * 5246 7.4.1.2 for TLS 1.2) and RFC 6066 3 (server_name). The handshake message may span
 * several records; their fragments are joined in a bounded local buffer first. Every read
 * goes through `take`, which refuses to step past the end. */
#include "proxy/sni.h"

#include <stdbool.h>
#include <string.h>

#define RECORD_HEADER 5u
#define RECORD_HANDSHAKE 22u
#define HANDSHAKE_CLIENT_HELLO 1u
#define EXT_SERVER_NAME 0u
#define NAME_TYPE_HOST 0u

typedef struct cursor {
    const uint8_t *p;
    size_t left;
} cursor;

static bool take(cursor *c, size_t n, const uint8_t **out) {
    if (c->left < n)
        return false;
    if (out)
        *out = c->p;
    c->p += n;
    c->left -= n;
    return true;
}

static bool u8(cursor *c, size_t *v) {
    const uint8_t *b;
    if (!take(c, 1, &b))
        return false;
    *v = b[0];
    return true;
}

static bool u16(cursor *c, size_t *v) {
    const uint8_t *b;
    if (!take(c, 2, &b))
        return false;
    *v = (size_t)b[0] << 8 | b[1];
    return true;
}

/* A sub-cursor over the next `n` bytes (a length-prefixed vector). */
static bool vec(cursor *c, size_t n, cursor *sub) {
    const uint8_t *b;
    if (!take(c, n, &b))
        return false;
    *sub = (cursor){b, n};
    return true;
}

/* RFC 6066 3: a host_name is a DNS name in ASCII, without a trailing dot. */
static bool copy_name(const uint8_t *s, size_t n, char *name, size_t cap) {
    if (n == 0 || n >= PF_SNI_NAME_MAX || n >= cap)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = (char)s[i];
        bool dot = ch == '.';
        if (dot && (i == 0 || i == n - 1 || s[i - 1] == '.'))
            return false;
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        else if (!dot && !(ch >= 'a' && ch <= 'z') && !(ch >= '0' && ch <= '9') && ch != '-' &&
                 ch != '_')
            return false;
        name[i] = ch;
    }
    name[n] = '\0';
    return true;
}

/* The body of a complete ClientHello. */
static pf_sni_result client_hello(cursor c, char *name, size_t cap) {
    size_t n;
    cursor sub;
    if (!take(&c, 2 + 32, NULL)) /* legacy_version, random */
        return PF_SNI_BAD;
    if (!u8(&c, &n) || n > 32 || !take(&c, n, NULL)) /* legacy_session_id */
        return PF_SNI_BAD;
    if (!u16(&c, &n) || n < 2 || n % 2 || !take(&c, n, NULL)) /* cipher_suites */
        return PF_SNI_BAD;
    if (!u8(&c, &n) || n < 1 || !take(&c, n, NULL)) /* legacy_compression_methods */
        return PF_SNI_BAD;
    if (c.left == 0)
        return PF_SNI_NONE; /* TLS 1.2 allows a ClientHello without extensions */
    cursor exts;
    if (!u16(&c, &n) || !vec(&c, n, &exts) || c.left != 0)
        return PF_SNI_BAD;
    while (exts.left > 0) {
        size_t type, len;
        cursor ext;
        if (!u16(&exts, &type) || !u16(&exts, &len) || !vec(&exts, len, &ext))
            return PF_SNI_BAD;
        if (type != EXT_SERVER_NAME)
            continue;
        cursor list;
        if (!u16(&ext, &n) || !vec(&ext, n, &list) || ext.left != 0 || n == 0)
            return PF_SNI_BAD;
        while (list.left > 0) {
            size_t kind;
            const uint8_t *s;
            if (!u8(&list, &kind) || !u16(&list, &n) || !vec(&list, n, &sub))
                return PF_SNI_BAD;
            if (kind != NAME_TYPE_HOST)
                continue;
            s = sub.p;
            return copy_name(s, n, name, cap) ? PF_SNI_FOUND : PF_SNI_BAD;
        }
        return PF_SNI_NONE; /* a server_name list with no host_name */
    }
    return PF_SNI_NONE;
}

static pf_sni_result parse(const uint8_t *data, size_t len, char *name, size_t cap);

pf_sni_result sni_parse(const uint8_t *data, size_t len, char *name, size_t cap) {
    pf_sni_result r = parse(data, len, name, cap);
    if (r != PF_SNI_FOUND && cap > 0)
        name[0] = '\0'; /* a name refused half-way may have been partly written */
    return r;
}

static pf_sni_result parse(const uint8_t *data, size_t len, char *name, size_t cap) {
    if (cap > 0)
        name[0] = '\0';
    if (len == 0)
        return PF_SNI_MORE;
    if (data[0] != RECORD_HANDSHAKE)
        return PF_SNI_NOT_TLS;
    if (len > PF_SNI_PEEK_MAX)
        len = PF_SNI_PEEK_MAX; /* what lies beyond is never looked at */
    uint8_t hs[PF_SNI_PEEK_MAX];
    size_t have = 0;
    cursor c = {data, len};
    for (;;) {
        size_t type, major, minor, rec_len;
        cursor rec;
        if (c.left < RECORD_HEADER)
            return len == PF_SNI_PEEK_MAX ? PF_SNI_BAD : PF_SNI_MORE;
        u8(&c, &type);
        u8(&c, &major);
        u8(&c, &minor);
        u16(&c, &rec_len);
        /* RFC 8446 5.1: legacy_record_version is 0x0301 (or 0x0300 from old clients), a
         * fragment is at most 2^14 bytes and a handshake one is never empty. */
        if (type != RECORD_HANDSHAKE || major != 3 || minor > 4 || rec_len == 0 || rec_len > 16384u)
            return PF_SNI_BAD;
        if (!vec(&c, rec_len, &rec)) {
            /* A partial first record already shows the message's type and length: a wrong
             * type or an oversized message is refused without waiting for the rest. */
            if (have == 0 && c.left >= 4 &&
                (c.p[0] != HANDSHAKE_CLIENT_HELLO ||
                 ((size_t)c.p[1] << 16 | (size_t)c.p[2] << 8 | c.p[3]) > sizeof hs - 4))
                return PF_SNI_BAD;
            return len == PF_SNI_PEEK_MAX ? PF_SNI_BAD : PF_SNI_MORE;
        }
        if (rec_len > sizeof hs - have)
            return PF_SNI_BAD;
        memcpy(hs + have, rec.p, rec_len);
        have += rec_len;
        if (have < 4)
            continue;
        size_t body = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
        if (hs[0] != HANDSHAKE_CLIENT_HELLO || body > sizeof hs - 4)
            return PF_SNI_BAD;
        if (have < 4 + body)
            continue;
        if (have > 4 + body)
            return PF_SNI_BAD; /* another message after the ClientHello: not a first flight */
        return client_hello((cursor){hs + 4, body}, name, cap);
    }
}

const char *sni_result_name(pf_sni_result r) {
    static const char *const names[] = {"found", "none", "more", "not_tls", "bad"};
    return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "?";
}
