/* Chained hash map (FNV-1a) with borrowed keys, grown at load 1: stores hold up to tens of
 * thousands of objects and are touched on every watch event. */
#include "discovery/kubernetes_map.h"
#include "core/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAP_MIN_BUCKETS 16u

static uint64_t hash(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static k8s_map_entry **find(const k8s_map *m, const char *key) {
    if (!m->bucket_count)
        return NULL;
    k8s_map_entry **p = &m->buckets[hash(key) & (m->bucket_count - 1)];
    while (*p && strcmp((*p)->key, key) != 0)
        p = &(*p)->next;
    return p;
}

void *k8s_map_get(const k8s_map *m, const char *key) {
    k8s_map_entry **p = find(m, key);
    return p && *p ? (*p)->value : NULL;
}

static int grow(k8s_map *m) {
    size_t n = m->bucket_count ? m->bucket_count * 2 : MAP_MIN_BUCKETS;
    k8s_map_entry **b = calloc(n, sizeof *b);
    if (!b)
        return PF_ENOMEM;
    for (size_t i = 0; i < m->bucket_count; i++) {
        for (k8s_map_entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            size_t at = hash(e->key) & (n - 1);
            e->next = b[at];
            b[at] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->bucket_count = n;
    return PF_OK;
}

int k8s_map_put(k8s_map *m, const char *key, void *value, void **old) {
    if (old)
        *old = NULL;
    if (m->count + 1 > m->bucket_count && grow(m) != PF_OK)
        return PF_ENOMEM;
    k8s_map_entry **p = find(m, key);
    if (*p) {
        if (old)
            *old = (*p)->value;
        (*p)->value = value;
        (*p)->key = key;
        return PF_OK;
    }
    k8s_map_entry *e = malloc(sizeof *e);
    if (!e)
        return PF_ENOMEM;
    e->key = key;
    e->value = value;
    e->next = NULL;
    *p = e;
    m->count++;
    return PF_OK;
}

void *k8s_map_del(k8s_map *m, const char *key) {
    k8s_map_entry **p = find(m, key);
    if (!p || !*p)
        return NULL;
    k8s_map_entry *e = *p;
    void *value = e->value;
    *p = e->next;
    free(e);
    m->count--;
    return value;
}

void k8s_map_each(const k8s_map *m, void (*fn)(void *arg, void *value), void *arg) {
    for (size_t i = 0; i < m->bucket_count; i++)
        for (k8s_map_entry *e = m->buckets[i]; e; e = e->next)
            fn(arg, e->value);
}

void k8s_map_clear(k8s_map *m) {
    for (size_t i = 0; i < m->bucket_count; i++) {
        for (k8s_map_entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(m->buckets);
    memset(m, 0, sizeof *m);
}
