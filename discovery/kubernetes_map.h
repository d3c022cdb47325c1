/* A string-keyed hash map for Kubernetes discovery's stores and indexes (private). Keys are
 * borrowed from the values they map to, so a value must outlive its entry. */
#ifndef PF_DISCOVERY_KUBERNETES_MAP_H
#define PF_DISCOVERY_KUBERNETES_MAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct k8s_map_entry {
    const char *key;
    void *value;
    struct k8s_map_entry *next;
} k8s_map_entry;

typedef struct k8s_map {
    k8s_map_entry **buckets;
    size_t bucket_count;
    size_t count;
} k8s_map;

void *k8s_map_get(const k8s_map *m, const char *key);
/* Inserts or replaces; returns the value replaced (NULL if none) through *old. Returns 0 or
 * PF_ENOMEM. */
int k8s_map_put(k8s_map *m, const char *key, void *value, void **old);
/* Removes the entry; returns its value or NULL. */
void *k8s_map_del(k8s_map *m, const char *key);
/* Calls fn for each entry; fn must not change the map. */
void k8s_map_each(const k8s_map *m, void (*fn)(void *arg, void *value), void *arg);
/* Removes every entry (values are the caller's). */
void k8s_map_clear(k8s_map *m);

#endif
