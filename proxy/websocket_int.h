/* WebSocket handshake values pilotfish makes and checks itself: when an HTTP/2 client opens a
 * WebSocket with an extended CONNECT (RFC 8441), the HTTP/1.1 upstream needs the RFC 6455
 * handshake the client never made, so pilotfish sends its own Sec-WebSocket-Key and checks the
 * upstream's Sec-WebSocket-Accept against it. Pure functions, any thread. */
#ifndef PF_PROXY_WEBSOCKET_INT_H
#define PF_PROXY_WEBSOCKET_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A Sec-WebSocket-Key is 16 bytes in base64: 24 characters. */
#define PF_WS_KEY_LEN 24
/* A Sec-WebSocket-Accept is a SHA-1 in base64: 28 characters. */
#define PF_WS_ACCEPT_LEN 28

/* RFC 6455 4.1: the key from 16 random bytes (a and b, 8 each) into out (NUL-terminated,
 * PF_WS_KEY_LEN + 1 bytes). */
void websocket_key(uint64_t a, uint64_t b, char out[PF_WS_KEY_LEN + 1]);
/* RFC 6455 4.2.2: base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")) into out
 * (NUL-terminated). Returns 0, or PF_EINVAL when the key is longer than a key may be. */
int websocket_accept(const char *key, size_t len, char out[PF_WS_ACCEPT_LEN + 1]);
/* Whether `accept` (len bytes, surrounding blanks ignored) is the answer to `key`. */
bool websocket_accept_matches(const char *key, const char *accept, size_t len);

#endif
