/* libcurl, loaded on first use. Only Kubernetes discovery talks HTTP itself, and linking
 * libcurl outright maps it and its ~30 dependencies (GnuTLS, Kerberos, LDAP, ...) into every
 * pilotfish at start: several MiB of resident memory for a sidecar that may never call it.
 * So pilotfish defines the few curl entry points it uses here, and the first call
 * (curl_global_init) dlopens libcurl and resolves them.
 *
 * The variadic setopt/getinfo calls take exactly one argument after the option, always
 * 64 bits wide on LP64 (long, curl_off_t, a data or a function pointer), all passed in the
 * same integer registers: forwarding it as one void * is exact there. */
#define CURL_DISABLE_TYPECHECK 1
#include "core/log.h"

#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

_Static_assert(sizeof(void *) == 8 && sizeof(long) == 8 && sizeof(curl_off_t) == 8,
               "curl_loader.c forwards variadic curl arguments as one 64-bit word");

#define LIBCURL_SONAME "libcurl.so.4"

static struct {
    CURLcode (*global_init)(long);
    void (*global_cleanup)(void);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    void (*easy_cleanup)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_add_handle)(CURLM *, CURL *);
    CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
    CURLMcode (*multi_cleanup)(CURLM *);
    CURLMsg *(*multi_info_read)(CURLM *, int *);
    CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
    CURLMcode (*multi_assign)(CURLM *, curl_socket_t, void *);
    CURLMcode (*multi_socket_action)(CURLM *, curl_socket_t, int, int *);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
} fn;

static bool loaded;

static void load(void) {
    /* GnuTLS, which libcurl pulls in, was told not to initialize itself on load
     * (GNUTLS_NO_IMPLICIT_INIT, set by discovery_k8s_new before any thread starts).
     * RTLD_LAZY: the symbols of the ~30 libraries are bound when first called, not all at
     * once. */
    void *lib = dlopen(LIBCURL_SONAME, RTLD_LAZY | RTLD_LOCAL);
    if (!lib) {
        log_error("cannot load %s: %s; Kubernetes discovery needs it (Debian: libcurl4)",
                  LIBCURL_SONAME, dlerror());
        return;
    }
    /* POSIX dlsym returns object pointers; converting them to function pointers is the
     * documented way to use it. */
#define RESOLVE(field, name)                                                                       \
    do {                                                                                           \
        *(void **)&fn.field = dlsym(lib, name);                                                    \
        if (!fn.field) {                                                                           \
            log_error("%s lacks %s", LIBCURL_SONAME, name);                                        \
            return;                                                                                \
        }                                                                                          \
    } while (0)
    RESOLVE(global_init, "curl_global_init");
    RESOLVE(global_cleanup, "curl_global_cleanup");
    RESOLVE(easy_init, "curl_easy_init");
    RESOLVE(easy_setopt, "curl_easy_setopt");
    RESOLVE(easy_getinfo, "curl_easy_getinfo");
    RESOLVE(easy_cleanup, "curl_easy_cleanup");
    RESOLVE(easy_strerror, "curl_easy_strerror");
    RESOLVE(multi_init, "curl_multi_init");
    RESOLVE(multi_add_handle, "curl_multi_add_handle");
    RESOLVE(multi_remove_handle, "curl_multi_remove_handle");
    RESOLVE(multi_cleanup, "curl_multi_cleanup");
    RESOLVE(multi_info_read, "curl_multi_info_read");
    RESOLVE(multi_setopt, "curl_multi_setopt");
    RESOLVE(multi_assign, "curl_multi_assign");
    RESOLVE(multi_socket_action, "curl_multi_socket_action");
    RESOLVE(slist_append, "curl_slist_append");
    RESOLVE(slist_free_all, "curl_slist_free_all");
#undef RESOLVE
    loaded = true;
}

CURLcode curl_global_init(long flags) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, load);
    return loaded ? fn.global_init(flags) : CURLE_FAILED_INIT;
}

/* Everything below runs only after curl_global_init succeeded. */
void curl_global_cleanup(void) {
    if (loaded)
        fn.global_cleanup();
}

CURL *curl_easy_init(void) {
    return fn.easy_init();
}

CURLcode curl_easy_setopt(CURL *curl, CURLoption option, ...) {
    va_list ap;
    va_start(ap, option);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fn.easy_setopt(curl, option, arg);
}

CURLcode curl_easy_getinfo(CURL *curl, CURLINFO info, ...) {
    va_list ap;
    va_start(ap, info);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fn.easy_getinfo(curl, info, arg);
}

void curl_easy_cleanup(CURL *curl) {
    fn.easy_cleanup(curl);
}

const char *curl_easy_strerror(CURLcode code) {
    return loaded ? fn.easy_strerror(code) : "libcurl is not loaded";
}

CURLM *curl_multi_init(void) {
    return fn.multi_init();
}

CURLMcode curl_multi_add_handle(CURLM *multi, CURL *curl) {
    return fn.multi_add_handle(multi, curl);
}

CURLMcode curl_multi_remove_handle(CURLM *multi, CURL *curl) {
    return fn.multi_remove_handle(multi, curl);
}

CURLMcode curl_multi_cleanup(CURLM *multi) {
    return fn.multi_cleanup(multi);
}

CURLMsg *curl_multi_info_read(CURLM *multi, int *msgs_in_queue) {
    return fn.multi_info_read(multi, msgs_in_queue);
}

CURLMcode curl_multi_setopt(CURLM *multi, CURLMoption option, ...) {
    va_list ap;
    va_start(ap, option);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fn.multi_setopt(multi, option, arg);
}

CURLMcode curl_multi_assign(CURLM *multi, curl_socket_t sockfd, void *sockp) {
    return fn.multi_assign(multi, sockfd, sockp);
}

CURLMcode curl_multi_socket_action(CURLM *multi, curl_socket_t s, int ev_bitmask,
                                   int *running_handles) {
    return fn.multi_socket_action(multi, s, ev_bitmask, running_handles);
}

struct curl_slist *curl_slist_append(struct curl_slist *list, const char *data) {
    return fn.slist_append(list, data);
}

void curl_slist_free_all(struct curl_slist *list) {
    if (loaded)
        fn.slist_free_all(list);
}
