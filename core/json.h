/* Small JSON text helpers for hand-written JSON on hot paths (access log, admin). */
#ifndef PF_CORE_JSON_H
#define PF_CORE_JSON_H

#include <stddef.h>

/* Writes `src` (len bytes) as JSON string contents (no quotes) into dst, escaping quotes,
 * backslashes and control bytes; truncates on a character boundary to fit cap-1 bytes.
 * Returns the number of bytes written (dst is NUL-terminated). */
size_t pf_json_escape(char *dst, size_t cap, const char *src, size_t len);

#endif
