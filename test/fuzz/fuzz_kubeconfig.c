/* libFuzzer harness for kubeconfig files (k8s_kubeconfig_parse in
 * discovery/kubernetes_kubeconfig.c): YAML text, the current context's cluster and user,
 * base64 certificate data. The whole input is the file. */
#include "discovery/kubernetes_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* Decoded data is NUL-terminated (the TLS code hands it on as a string). */
static void check_pem(const char *data, size_t len) {
    if (data)
        CHECK(data[len] == '\0');
    else
        CHECK(len == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    k8s_kubeconfig kc;
    pf_error err;
    int rc = k8s_kubeconfig_parse((const char *)data, size, "fuzz", "/etc/kube", &kc, &err);
    CHECK(rc == PF_OK || rc == PF_EINVAL || rc == PF_ENOMEM);
    if (rc == PF_OK) {
        CHECK(kc.server[0] != '\0');
        check_pem(kc.ca_data, kc.ca_len);
        check_pem(kc.cert_data, kc.cert_len);
        check_pem(kc.key_data, kc.key_len);
    } else {
        CHECK(kc.token == NULL && kc.ca_data == NULL && kc.cert_data == NULL &&
              kc.key_data == NULL);
    }
    k8s_kubeconfig_clear(&kc);
    return 0;
}
