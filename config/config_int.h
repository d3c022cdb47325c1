/* Private to config/: the schema tables' types and the engine that walks them.
 * Each config object (the top level, a listener, a route, a cluster, a health check, ...)
 * is one `schema`: a table with one `key_def` row per JSON key saying its type, where its
 * value lives in the struct (offsetof), its bounds, its default and a one-line doc. The
 * engine (schema.c) drives defaults, parsing with the type and bounds messages, the dump,
 * the diff and the schema listing from these rows, so a key is written once; config.c
 * holds the tables and the few checks a row cannot express (cross-references, keys that
 * exclude each other), run after the table pass as each object's `finish`. */
#ifndef PF_CONFIG_INT_H
#define PF_CONFIG_INT_H

#include "config/config.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The deepest path is "$.kubernetes.auto_discover.cluster.health_check.expected_statuses[<20
 * digits>]", well under this, so paths are never cut. */
#define JPATH_MAX 128

/* User text echoed in a message is quoted and capped (see qstr). */
#define QUOTE_MAX 96

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* offsetof(st, f), refusing to compile unless st.f has type T: a row's type and its field
 * cannot disagree. */
#define FIELD_OF(st, f, T) (offsetof(st, f) + 0 * sizeof((T *){&((st *)0)->f}))

typedef struct loader {
    const char *source;
    pf_errlist *errs;
    size_t nerr; /* counted here: pf_errlist_add may drop a message when out of memory */
    bool oom;
    bool auto_discover; /* $.kubernetes.auto_discover is on: listeners may have no routes */
    bool policy_bad;    /* this cluster's lb_policy was refused: its settings are not judged */
} loader;

/* Builders that remember the first failure, so the dump code reads as a list of fields
 * and a single check at the end decides between the text and NULL. */
typedef struct dumper {
    bool failed;
} dumper;

typedef enum {
    KT_BOOL,     /* bool */
    KT_UINT,     /* uint32_t in [min, max] */
    KT_DURATION, /* uint64_t milliseconds from "250ms", "5s", ...; KF_POSITIVE refuses 0 */
    KT_TEXT,     /* char[size], 1 to size-1 characters */
    KT_ENUM,     /* int: names[i] stores name_base + i */
    KT_ADDR,     /* pf_sockaddr from "ip:port" */
    KT_OBJECT,   /* a nested object: sub's rows, at off */
    KT_ARRAY,    /* an array of sub objects: a pointer at off, a size_t count at count_off */
    KT_CUSTOM,   /* parse, init and dump are given by the row */
} key_type;

enum {
    KF_REQUIRED = 1u << 0,  /* "missing required key" when absent */
    KF_POSITIVE = 1u << 1,  /* durations: zero is refused */
    KF_OMIT_ZERO = 1u << 2, /* the dump leaves out 0 and "" (meaning "not set") */
    KF_LISTEN = 1u << 3,    /* addresses: the hint for names is about listen addresses */
    KF_ENDPOINT = 1u << 4,  /* addresses: the hint for names is about endpoints */
    KF_IN_FINISH = 1u << 5, /* parsed by the object's finish (it depends on other keys) */
    KF_PRESENT = 1u << 6,   /* objects: the bool at present_off says whether it was given */
};

typedef struct key_def key_def;
typedef struct schema schema;

/* v is the key's value (present), obj the JSON object holding it, path the key's path and
 * base the struct of the object the row belongs to. */
typedef void (*key_parse_fn)(loader *ld, json_t *obj, json_t *v, const char *path, void *base,
                             const key_def *k);
/* The key's value as JSON, or NULL to leave the key out of the dump. */
typedef json_t *(*key_dump_fn)(dumper *d, const void *base, const key_def *k);
typedef bool (*key_when_fn)(const void *base);

struct key_def {
    const char *name;
    key_type type;
    unsigned flags;
    size_t off;              /* of the value in the object's struct */
    uint64_t min, max;       /* KT_UINT bounds */
    uint64_t def;            /* default of KT_BOOL, KT_UINT, KT_DURATION, KT_ENUM */
    const char *def_text;    /* default of KT_TEXT and KT_ADDR; NULL: "" / none */
    size_t size;             /* KT_TEXT: capacity including the NUL */
    const char *doc;         /* one line, for the schema listing */
    const char *doc_default; /* the default as a reader sees it, when the row's is not it */
    const char *type_doc;    /* KT_CUSTOM: what the value is, for the schema listing */
    /* KT_ENUM: accepted names, then aliases; "unknown <noun> X; known <nouns>: ..." */
    const char *const *names;
    size_t name_count;
    int name_base;
    const char *const *alias_names;
    const int *alias_values;
    size_t alias_count;
    const char *noun, *nouns;
    const schema *sub;  /* KT_OBJECT, KT_ARRAY */
    size_t count_off;   /* KT_ARRAY */
    size_t present_off; /* KF_PRESENT */
    key_parse_fn parse; /* replaces the type's parser (which it may call: parse_value) */
    void (*init)(void *base, const key_def *k); /* KT_CUSTOM's default */
    key_dump_fn dump;                           /* replaces the type's dump */
    key_when_fn dump_if;                        /* dumped only when true */
    void (*after)(loader *ld, json_t *v, const char *path, void *base); /* KT_ARRAY: once all
                                                                           elements are in */
};

struct schema {
    const char *doc_name; /* "clusters[]", "health_check": how README.md names its keys */
    const key_def *keys;
    size_t count;
    size_t size; /* of one element, for arrays */
    /* Called when the object is given, before its keys. */
    void (*begin)(loader *ld, void *obj);
    /* Called after its keys when given (v is the object), and when absent (v is NULL):
     * the checks that involve more than one key, and defaults that depend on others. */
    void (*finish)(loader *ld, json_t *v, const char *path, void *obj);
    key_when_fn dumped; /* whether the object appears in the dump at all */
    const char *id_key; /* arrays: the key naming an element, for the diff; NULL: position */
    /* Arrays whose elements may be a string (endpoints: "ip:port"). */
    void (*from_string)(loader *ld, const char *s, const char *path, void *elem);
};

/* ---- helpers shared by config.c and schema.c ---- */
void errf(loader *ld, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void oom(loader *ld);
const char *qstr(char buf[QUOTE_MAX], const char *s);
const char *jkey(char buf[JPATH_MAX], const char *parent, const char *key);
const char *jidx(char buf[JPATH_MAX], const char *parent, size_t i);
const char *json_kind(json_t *v);
bool want(loader *ld, json_t *v, const char *path, const char *kind);
void put(dumper *d, json_t *obj, const char *key, json_t *val);
void push(dumper *d, json_t *arr, json_t *val);
json_t *json_duration(uint64_t ms);
/* config_parse_sockaddr with the hint for names that KF_LISTEN or KF_ENDPOINT asks for. */
int config_parse_sockaddr_for(const char *text, unsigned flags, pf_sockaddr *out, pf_error *err);

/* A comma-separated list for messages that stops with ", ..." rather than overflowing. */
typedef struct textlist {
    char buf[256];
    size_t len;
    bool full;
} textlist;
void textlist_add(textlist *tl, const char *item);
void textlist_join(textlist *tl, const char *const *items, size_t count);

/* ---- the engine (schema.c) ---- */
/* Writes every row's default into obj, nested objects included; arrays are left empty. */
void schema_defaults(const schema *s, void *obj);
/* Parses the JSON object v (of kind object) at path into obj, which holds its defaults. */
void schema_parse(loader *ld, const schema *s, json_t *v, const char *path, void *obj);
/* The row's type parser: what a row's own parse calls once its special checks passed. */
void parse_value(loader *ld, json_t *obj, json_t *v, const char *path, void *base,
                 const key_def *k);
/* The object as JSON, or NULL when failed is set. */
json_t *schema_dump(dumper *d, const schema *s, const void *obj);
/* Compares two objects of s and appends one change per key whose dump differs. */
int schema_diff(const schema *s, const void *a, const void *b, const char *path,
                pf_config_diff *out);
/* Appends the keys of s and of every object below it, each once, to arr. */
int schema_list(const schema *s, json_t *arr, const void **seen, size_t *nseen, size_t max);

/* $.access_log (access_log.c): a boolean or an object of access_log_schema's keys. */
extern const schema access_log_schema;
void config_init_access_log(void *base, const key_def *k);
void config_parse_access_log(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                             const key_def *k);
json_t *config_dump_access_log(dumper *d, const void *base, const key_def *k);

/* The tables (config.c). */
extern const schema root_schema;
extern const schema cluster_schema;
extern const schema cluster_dns_schema;

#endif
