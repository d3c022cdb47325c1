/* Error helpers: formatted single errors and growable lists of messages. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pf_fail(pf_error *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *pf_strerror(int code) {
    switch (code) {
    case PF_OK:
        return "ok";
    case PF_EINVAL:
        return "invalid argument";
    case PF_ENOMEM:
        return "out of memory";
    case PF_EIO:
        return "i/o error";
    case PF_ELIMIT:
        return "limit reached";
    case PF_ENOTFOUND:
        return "not found";
    case PF_ECONFLICT:
        return "changed meanwhile";
    case PF_EINUSE:
        return "still in use";
    default:
        return "unknown error";
    }
}

void pf_errlist_add(pf_errlist *list, const char *fmt, ...) {
    char buf[PF_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 8;
        char **items = realloc(list->items, cap * sizeof *items);
        if (!items)
            return;
        list->items = items;
        list->cap = cap;
    }
    char *copy = strdup(buf);
    if (copy)
        list->items[list->count++] = copy;
}

void pf_errlist_free(pf_errlist *list) {
    for (size_t i = 0; i < list->count; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = list->cap = 0;
}
