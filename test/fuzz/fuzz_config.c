/* libFuzzer harness for the config loader (config_load_string in config/config.c): JSON
 * text to typed structs with every validation. A config that loads must also survive the
 * round trip --print-config relies on: its dump loads again and dumps the same, and the
 * diff (config_diff, what a reload applies) between the two finds nothing. */
#include "config/config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    pf_config *cfg = NULL;
    pf_errlist errs = {0};
    int rc = config_load_string(text, "fuzz.json", &cfg, &errs);
    free(text);
    if (rc != PF_OK) {
        CHECK(cfg == NULL && errs.count > 0);
        pf_errlist_free(&errs);
        return 0;
    }
    CHECK(cfg != NULL);
    pf_errlist_free(&errs);

    char *dump = config_dump_json(cfg);
    CHECK(dump != NULL);
    pf_config *again = NULL;
    pf_errlist again_errs = {0};
    rc = config_load_string(dump, "dump.json", &again, &again_errs);
    CHECK(rc == PF_OK);
    char *dump2 = config_dump_json(again);
    CHECK(dump2 != NULL && strcmp(dump, dump2) == 0);
    pf_config_diff diff = {0};
    CHECK(config_diff(cfg, again, &diff) == PF_OK && diff.count == 0);
    config_diff_free(&diff);
    free(dump2);
    free(dump);
    pf_errlist_free(&again_errs);
    config_free(again);
    config_free(cfg);
    return 0;
}
