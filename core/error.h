/* Error codes and error lists shared by every module.
 * Functions return 0 or a negative PF_E* code; where a caller needs words, a pf_error
 * (fixed buffer) or a pf_errlist (many messages, e.g. config validation) carries them. */
#ifndef PF_CORE_ERROR_H
#define PF_CORE_ERROR_H

#include <stddef.h>

enum {
    PF_OK = 0,
    PF_EINVAL = -1, /* bad input */
    PF_ENOMEM = -2, /* allocation failed */
    PF_EIO = -3,    /* system call failed; errno-derived text in the pf_error */
    PF_ELIMIT = -4, /* a configured limit was hit */
    PF_ENOTFOUND = -5,
    PF_ECONFLICT = -6, /* the state changed since the caller looked (e.g. a config version) */
    PF_EINUSE = -7,    /* still referred to (e.g. a cluster a route names) */
};

#define PF_ERROR_MAX 512

typedef struct pf_error {
    char msg[PF_ERROR_MAX];
} pf_error;

/* Formats into err (if not NULL) and returns code, so callers can `return pf_fail(...)`. */
int pf_fail(pf_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Returns a static description of a PF_E* code. */
const char *pf_strerror(int code);

/* An append-only list of messages; owns its strings. */
typedef struct pf_errlist {
    char **items;
    size_t count;
    size_t cap;
} pf_errlist;

void pf_errlist_add(pf_errlist *list, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pf_errlist_free(pf_errlist *list);

#endif
