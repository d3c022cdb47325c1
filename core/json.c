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
        if (out + n >= cap) {
            /* Truncating: step back so the last UTF-8 sequence is not cut in half. */
            size_t end = out;
            while (end > 0 && ((unsigned char)dst[end - 1] & 0xc0) == 0x80)
                end--;
            if (end > 0 && ((unsigned char)dst[end - 1] & 0x80)) {
                unsigned char lead = (unsigned char)dst[end - 1];
                size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
                if (out - (end - 1) < need)
                    out = end - 1;
            }
            break;
        }
        for (size_t k = 0; k < n; k++)
            dst[out++] = esc[k];
    }
    dst[out] = '\0';
    return out;
}
