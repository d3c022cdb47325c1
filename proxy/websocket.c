/* WebSocket handshake values for HTTP/2 extended CONNECT: see websocket_int.h. */
#include "proxy/websocket_int.h"
#include "core/error.h"

#include <openssl/evp.h>
#include <string.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

void websocket_key(uint64_t a, uint64_t b, char out[PF_WS_KEY_LEN + 1]) {
    unsigned char raw[16];
    for (int i = 0; i < 8; i++) {
        raw[i] = (unsigned char)(a >> (8 * i));
        raw[8 + i] = (unsigned char)(b >> (8 * i));
    }
    EVP_EncodeBlock((unsigned char *)out, raw, sizeof raw); /* 24 characters and a NUL */
}

int websocket_accept(const char *key, size_t len, char out[PF_WS_ACCEPT_LEN + 1]) {
    char joined[128];
    /* A key is 24 characters; a little slack for what a client may send, no more. */
    if (len > sizeof joined - sizeof WS_GUID)
        return PF_EINVAL;
    memcpy(joined, key, len);
    memcpy(joined + len, WS_GUID, sizeof WS_GUID - 1);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    if (!EVP_Digest(joined, len + sizeof WS_GUID - 1, digest, &dlen, EVP_sha1(), NULL) ||
        dlen != 20)
        return PF_EINVAL;
    EVP_EncodeBlock((unsigned char *)out, digest, dlen); /* 28 characters and a NUL */
    return PF_OK;
}

bool websocket_accept_matches(const char *key, const char *accept, size_t len) {
    while (len > 0 && (accept[0] == ' ' || accept[0] == '\t')) {
        accept++;
        len--;
    }
    while (len > 0 && (accept[len - 1] == ' ' || accept[len - 1] == '\t'))
        len--;
    char want[PF_WS_ACCEPT_LEN + 1];
    return websocket_accept(key, strlen(key), want) == PF_OK && len == PF_WS_ACCEPT_LEN &&
           memcmp(want, accept, len) == 0;
}
