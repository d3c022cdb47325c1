/* JSON string escaping. Bytes >= 0x80 pass through: the access log keeps what clients
 * sent, and llhttp already refused control bytes in targets and header values. */
#include "core/json.h"

#include <stdio.h>

size_t pf_json_escape(char *dst, size_t cap, const char *src, size_t len) {
    size_t out = 0;
    if (cap == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        char esc[8];
        size_t n;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c < 0x20 || c == 0x7f) {
            n = (size_t)snprintf(esc, sizeof esc, "\\u%04x", c);
        } else {
            esc[0] = (char)c;
            n = 1;
        }
        if (out + n >= cap)
            break;
        for (size_t k = 0; k < n; k++)
            dst[out++] = esc[k];
    }
    dst[out] = '\0';
    return out;
}
