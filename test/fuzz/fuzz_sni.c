/* libFuzzer harness for the ClientHello parser of TLS passthrough (proxy/sni.c), called as
 * tcp.c calls it: on whatever prefix of a connection's first bytes has arrived. Besides not
 * crashing, it checks what the relay relies on: a name found is a lower-case DNS name that
 * fits the buffer, the answer depends only on the bytes (the same twice), and a prefix of a
 * ClientHello that parses asks for more or gives the same answer, never refusing a client
 * whose bytes come slowly. */
#include "proxy/sni.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char name[PF_SNI_NAME_MAX], again[PF_SNI_NAME_MAX];
    pf_sni_result r = sni_parse(data, size, name, sizeof name);
    CHECK(sni_parse(data, size, again, sizeof again) == r && strcmp(name, again) == 0);
    size_t n = strlen(name);
    CHECK(r == PF_SNI_FOUND ? n > 0 && n < PF_SNI_NAME_MAX : n == 0);
    for (size_t i = 0; i < n; i++)
        CHECK((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
              name[i] == '-' || name[i] == '_' || name[i] == '.');
    if ((r == PF_SNI_FOUND || r == PF_SNI_NONE) && data[0] == 22 && size > 1) {
        /* a prefix picked by the input itself, and the one byte short */
        size_t cuts[2] = {(size_t)data[size - 1] * 131u % size, size - 1};
        for (size_t c = 0; c < 2; c++)
            if (cuts[c] > 0) {
                pf_sni_result p = sni_parse(data, cuts[c], again, sizeof again);
                CHECK(p == PF_SNI_MORE || (p == r && strcmp(name, again) == 0));
            }
    }
    return 0;
}
