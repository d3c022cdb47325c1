/* The schema engine: walks the key tables of config.c (config_int.h says what a row holds)
 * to write defaults, parse JSON with one message per problem, dump the effective config,
 * compare two configs and list the keys for the docs. Nothing here knows a key by name;
 * adding a key is adding a row. */
#include "config/config_int.h"
#include "core/time.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Paths of the diff: listener and cluster names and endpoint addresses in full. */
#define DIFF_PATH_MAX (JPATH_MAX * 2)

/* Where the row's value lives in the object's struct. */
#define AT(base, k, T) ((T *)(void *)((char *)(base) + (k)->off))
#define CAT(base, k, T) ((const T *)(const void *)((const char *)(base) + (k)->off))

/* ---- defaults ----------------------------------------------------------------------- */

void schema_defaults(const schema *s, void *obj) {
    for (size_t i = 0; i < s->count; i++) {
        const key_def *k = &s->keys[i];
        switch (k->type) {
        case KT_BOOL:
            *AT(obj, k, bool) = k->def != 0;
            break;
        case KT_UINT:
            *AT(obj, k, uint32_t) = (uint32_t)k->def;
            break;
        case KT_DURATION:
            *AT(obj, k, uint64_t) = k->def;
            break;
        case KT_ENUM:
            *AT(obj, k, int) = (int)k->def;
            break;
        case KT_TEXT:
            snprintf(AT(obj, k, char), k->size, "%s", k->def_text ? k->def_text : "");
            break;
        case KT_ADDR:
            /* a default address is a constant that a unit test parses; a bad one stays
             * empty rather than half-filled */
            memset(AT(obj, k, pf_sockaddr), 0, sizeof(pf_sockaddr));
            if (k->def_text)
                config_parse_sockaddr(k->def_text, AT(obj, k, pf_sockaddr), &(pf_error){{0}});
            break;
        case KT_OBJECT:
            schema_defaults(k->sub, AT(obj, k, char));
            break;
        case KT_ARRAY:
        case KT_CUSTOM:
            break;
        }
        if (k->init)
            k->init(obj, k);
    }
}

/* ---- parsing ------------------------------------------------------------------------ */

static bool is_known(const schema *s, const char *key) {
    for (size_t i = 0; i < s->count; i++)
        if (strcmp(s->keys[i].name, key) == 0)
            return true;
    return false;
}

static void check_keys(loader *ld, const schema *s, json_t *obj, const char *path) {
    for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
        const char *key = json_object_iter_key(it);
        if (is_known(s, key))
            continue;
        char q[QUOTE_MAX];
        textlist tl = {0};
        for (size_t i = 0; i < s->count; i++)
            textlist_add(&tl, s->keys[i].name);
        errf(ld, path, "unknown key %s; known keys: %s", qstr(q, key), tl.buf);
    }
}

static void parse_uint(loader *ld, json_t *v, const char *path, uint32_t *out, const key_def *k) {
    if (!want(ld, v, path, "integer"))
        return;
    json_int_t n = json_integer_value(v);
    if (n < (json_int_t)k->min || n > (json_int_t)k->max) {
        errf(ld, path, "%" JSON_INTEGER_FORMAT " out of range (%u-%u)", n, (unsigned)k->min,
             (unsigned)k->max);
        return;
    }
    *out = (uint32_t)n;
}

/* A bare number is the usual mistake, so it gets its own message rather than a type error. */
static void parse_duration(loader *ld, json_t *v, const char *path, uint64_t *out,
                           const key_def *k) {
    char q[QUOTE_MAX];
    if (json_is_integer(v)) {
        errf(ld, path,
             "%" JSON_INTEGER_FORMAT " is not a duration; durations are strings with a unit "
             "(use e.g. \"250ms\", \"5s\")",
             json_integer_value(v));
        return;
    }
    if (json_is_real(v)) {
        errf(ld, path,
             "%g is not a duration; durations are strings with a unit (use e.g. \"250ms\", "
             "\"5s\")",
             json_real_value(v));
        return;
    }
    if (!json_is_string(v)) {
        errf(ld, path, "expected a duration string (e.g. \"5s\"), found %s", json_kind(v));
        return;
    }
    const char *s = json_string_value(v);
    uint64_t ms;
    if (pf_duration_parse(s, &ms) != PF_OK) {
        errf(ld, path, "%s is not a duration (use e.g. \"250ms\", \"5s\")", qstr(q, s));
        return;
    }
    if ((k->flags & KF_POSITIVE) && ms == 0) {
        errf(ld, path, "%s must be greater than zero", qstr(q, s));
        return;
    }
    *out = ms;
}

static void parse_text(loader *ld, json_t *v, const char *path, char *out, const key_def *k) {
    char q[QUOTE_MAX];
    if (!want(ld, v, path, "string"))
        return;
    const char *s = json_string_value(v);
    size_t n = strlen(s);
    if (n == 0 || n >= k->size) {
        errf(ld, path, "%s must have 1-%zu characters", qstr(q, s), k->size - 1);
        return;
    }
    memcpy(out, s, n + 1);
}

static void parse_enum(loader *ld, json_t *v, const char *path, int *out, const key_def *k) {
    char q[QUOTE_MAX];
    if (!want(ld, v, path, "string"))
        return;
    const char *s = json_string_value(v);
    for (size_t i = 0; i < k->name_count; i++) {
        if (strcmp(s, k->names[i]) == 0) {
            *out = k->name_base + (int)i;
            return;
        }
    }
    for (size_t i = 0; i < k->alias_count; i++) {
        if (strcmp(s, k->alias_names[i]) == 0) {
            *out = k->alias_values[i];
            return;
        }
    }
    textlist tl = {0};
    textlist_join(&tl, k->names, k->name_count);
    textlist_join(&tl, k->alias_names, k->alias_count);
    errf(ld, path, "unknown %s %s; known %s: %s", k->noun, qstr(q, s), k->nouns, tl.buf);
}

static void parse_addr(loader *ld, json_t *v, const char *path, pf_sockaddr *out, const key_def *k);

static void parse_array(loader *ld, json_t *v, const char *path, void *base, const key_def *k) {
    char ep[JPATH_MAX];
    const schema *s = k->sub;
    size_t n = json_array_size(v);
    if (n == 0)
        return;
    char *elems = calloc(n, s->size);
    if (!elems) {
        oom(ld);
        return;
    }
    *AT(base, k, void *) = elems;
    *(size_t *)(void *)((char *)base + k->count_off) = n;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        void *elem = elems + i * s->size;
        jidx(ep, path, i);
        schema_defaults(s, elem);
        if (s->from_string && json_is_string(e))
            s->from_string(ld, json_string_value(e), ep, elem);
        else if (s->from_string && !json_is_object(e))
            errf(ld, ep, "expected string or object, found %s", json_kind(e));
        else if (want(ld, e, ep, "object"))
            schema_parse(ld, s, e, ep, elem);
    }
}

void parse_value(loader *ld, json_t *obj, json_t *v, const char *path, void *base,
                 const key_def *k) {
    switch (k->type) {
    case KT_BOOL:
        if (want(ld, v, path, "boolean"))
            *AT(base, k, bool) = json_is_true(v);
        break;
    case KT_UINT:
        parse_uint(ld, v, path, AT(base, k, uint32_t), k);
        break;
    case KT_DURATION:
        parse_duration(ld, v, path, AT(base, k, uint64_t), k);
        break;
    case KT_TEXT:
        parse_text(ld, v, path, AT(base, k, char), k);
        break;
    case KT_ENUM:
        parse_enum(ld, v, path, AT(base, k, int), k);
        break;
    case KT_ADDR:
        parse_addr(ld, v, path, AT(base, k, pf_sockaddr), k);
        break;
    case KT_OBJECT:
        if (!want(ld, v, path, "object"))
            break;
        if (k->flags & KF_PRESENT)
            *(bool *)(void *)((char *)base + k->present_off) = true;
        schema_parse(ld, k->sub, v, path, AT(base, k, char));
        break;
    case KT_ARRAY:
        if (!want(ld, v, path, "array"))
            break;
        parse_array(ld, v, path, base, k);
        if (k->after)
            k->after(ld, v, path, base);
        break;
    case KT_CUSTOM:
        break; /* a custom row always has its own parse */
    }
    (void)obj;
}

void schema_parse(loader *ld, const schema *s, json_t *v, const char *path, void *obj) {
    char p[JPATH_MAX];
    check_keys(ld, s, v, path);
    if (s->begin)
        s->begin(ld, obj);
    for (size_t i = 0; i < s->count; i++) {
        const key_def *k = &s->keys[i];
        if (k->flags & KF_IN_FINISH)
            continue;
        json_t *val = json_object_get(v, k->name);
        jkey(p, path, k->name);
        if (!val) {
            if (k->flags & KF_REQUIRED)
                errf(ld, path, "missing required key \"%s\"", k->name);
            else if (k->type == KT_OBJECT && k->sub->finish)
                k->sub->finish(ld, NULL, p, (char *)obj + k->off);
            continue;
        }
        if (k->parse)
            k->parse(ld, v, val, p, obj, k);
        else
            parse_value(ld, v, val, p, obj, k);
    }
    if (s->finish)
        s->finish(ld, v, path, obj);
}

static void parse_addr(loader *ld, json_t *v, const char *path, pf_sockaddr *out,
                       const key_def *k) {
    pf_error err;
    if (!want(ld, v, path, "string"))
        return;
    if (config_parse_sockaddr_for(json_string_value(v), k->flags, out, &err) != PF_OK)
        errf(ld, path, "%s", err.msg);
}

/* ---- dump --------------------------------------------------------------------------- */

static json_t *dump_array(dumper *d, const void *base, const key_def *k) {
    json_t *arr = json_array();
    const char *elems = *CAT(base, k, char *);
    size_t n = *(const size_t *)(const void *)((const char *)base + k->count_off);
    for (size_t i = 0; i < n; i++)
        push(d, arr, schema_dump(d, k->sub, elems + i * k->sub->size));
    return arr;
}

static json_t *dump_value(dumper *d, const void *base, const key_def *k) {
    switch (k->type) {
    case KT_BOOL:
        return json_boolean(*CAT(base, k, bool));
    case KT_UINT:
        if ((k->flags & KF_OMIT_ZERO) && *CAT(base, k, uint32_t) == 0)
            return NULL;
        return json_integer(*CAT(base, k, uint32_t));
    case KT_DURATION:
        if ((k->flags & KF_OMIT_ZERO) && *CAT(base, k, uint64_t) == 0)
            return NULL;
        return json_duration(*CAT(base, k, uint64_t));
    case KT_TEXT:
        if ((k->flags & KF_OMIT_ZERO) && !*CAT(base, k, char))
            return NULL;
        return json_string(CAT(base, k, char));
    case KT_ENUM: {
        int i = *CAT(base, k, int) - k->name_base;
        return i >= 0 && (size_t)i < k->name_count ? json_string(k->names[i]) : NULL;
    }
    case KT_ADDR:
        return json_string(CAT(base, k, pf_sockaddr)->text);
    case KT_OBJECT: {
        const void *sub = CAT(base, k, char);
        if ((k->flags & KF_PRESENT) &&
            !*(const bool *)(const void *)((const char *)base + k->present_off))
            return NULL;
        if (k->sub->dumped && !k->sub->dumped(sub))
            return NULL;
        return schema_dump(d, k->sub, sub);
    }
    case KT_ARRAY:
        return dump_array(d, base, k);
    case KT_CUSTOM:
        break;
    }
    return NULL;
}

json_t *schema_dump(dumper *d, const schema *s, const void *obj) {
    json_t *o = json_object();
    if (!o) {
        d->failed = true;
        return NULL;
    }
    for (size_t i = 0; i < s->count; i++) {
        const key_def *k = &s->keys[i];
        if (k->dump_if && !k->dump_if(obj))
            continue;
        json_t *v = k->dump ? k->dump(d, obj, k) : dump_value(d, obj, k);
        if (v)
            put(d, o, k->name, v);
    }
    return o;
}

/* ---- diff --------------------------------------------------------------------------- */

/* The diff walks the two structs row by row, with the dump's view of each key: a key the
 * dump leaves out (unset, off, not given) is absent, so going from absent to present is
 * "added". Rows with their own dump compare what that dump gives; nothing else is built,
 * so comparing a thousand clusters allocates nothing but the paths it reports. */

static int add_change(pf_config_diff *out, pf_change_kind kind, const char *path) {
    if (out->count == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 16;
        pf_config_change *grown = realloc(out->items, cap * sizeof *grown);
        if (!grown)
            return PF_ENOMEM;
        out->items = grown;
        out->cap = cap;
    }
    char *copy = strdup(path);
    if (!copy)
        return PF_ENOMEM;
    out->items[out->count++] = (pf_config_change){kind, copy};
    return PF_OK;
}

static const char *join_path(char buf[DIFF_PATH_MAX], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static const char *join_path(char buf[DIFF_PATH_MAX], const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, DIFF_PATH_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= DIFF_PATH_MAX)
        memcpy(buf + DIFF_PATH_MAX - 4, "...", 4);
    return buf;
}

/* Whether the dump of obj has the key of row k (rows without their own dump). */
static bool dumped_key(const void *obj, const key_def *k) {
    if (k->dump_if && !k->dump_if(obj))
        return false;
    switch (k->type) {
    case KT_UINT:
        return !(k->flags & KF_OMIT_ZERO) || *CAT(obj, k, uint32_t) != 0;
    case KT_DURATION:
        return !(k->flags & KF_OMIT_ZERO) || *CAT(obj, k, uint64_t) != 0;
    case KT_TEXT:
        return !(k->flags & KF_OMIT_ZERO) || *CAT(obj, k, char) != '\0';
    case KT_ENUM: {
        int i = *CAT(obj, k, int) - k->name_base;
        return i >= 0 && (size_t)i < k->name_count;
    }
    case KT_OBJECT:
        if ((k->flags & KF_PRESENT) &&
            !*(const bool *)(const void *)((const char *)obj + k->present_off))
            return false;
        return !k->sub->dumped || k->sub->dumped(CAT(obj, k, char));
    case KT_BOOL:
    case KT_ADDR:
    case KT_ARRAY:
    case KT_CUSTOM:
        break;
    }
    return true;
}

static bool same_value(const void *a, const void *b, const key_def *k) {
    switch (k->type) {
    case KT_BOOL:
        return *CAT(a, k, bool) == *CAT(b, k, bool);
    case KT_UINT:
        return *CAT(a, k, uint32_t) == *CAT(b, k, uint32_t);
    case KT_DURATION:
        return *CAT(a, k, uint64_t) == *CAT(b, k, uint64_t);
    case KT_ENUM:
        return *CAT(a, k, int) == *CAT(b, k, int);
    case KT_TEXT:
        return strcmp(CAT(a, k, char), CAT(b, k, char)) == 0;
    case KT_ADDR:
        return strcmp(CAT(a, k, pf_sockaddr)->text, CAT(b, k, pf_sockaddr)->text) == 0;
    case KT_OBJECT:
    case KT_ARRAY:
    case KT_CUSTOM:
        break;
    }
    return false;
}

static int diff_struct(const schema *s, const void *a, const void *b, const char *path,
                       pf_config_diff *out);

/* An element's id as text: the TEXT or ADDR row named by the schema's id_key. */
static const char *elem_id(const schema *s, const void *elem) {
    for (size_t i = 0; i < s->count; i++) {
        const key_def *k = &s->keys[i];
        if (strcmp(k->name, s->id_key) == 0)
            return k->type == KT_ADDR ? CAT(elem, k, pf_sockaddr)->text : CAT(elem, k, char);
    }
    return "";
}

typedef struct id_ref {
    const char *id;
    const void *elem;
} id_ref;

static int by_id(const void *x, const void *y) {
    return strcmp(((const id_ref *)x)->id, ((const id_ref *)y)->id);
}

/* The elements sorted by id, so that matching two lists of a thousand clusters is a
 * thousand binary searches, not a million comparisons. NULL when n is 0 or out of memory. */
static id_ref *index_by_id(const schema *s, const char *elems, size_t n) {
    id_ref *idx = n ? malloc(n * sizeof *idx) : NULL;
    for (size_t i = 0; idx && i < n; i++)
        idx[i] = (id_ref){elem_id(s, elems + i * s->size), elems + i * s->size};
    if (idx)
        qsort(idx, n, sizeof *idx, by_id);
    return idx;
}

static const void *find_id(const id_ref *idx, size_t n, const char *id) {
    id_ref key = {id, NULL};
    const id_ref *hit = n ? bsearch(&key, idx, n, sizeof *idx, by_id) : NULL;
    return hit ? hit->elem : NULL;
}

/* RFC 9535 2.3.5 filter selector naming one element by its id: [?@.name=="web"]. Ids are
 * names and addresses, which hold no quote. */
static int diff_array(const key_def *k, const void *a, const void *b, const char *path,
                      pf_config_diff *out) {
    char p[DIFF_PATH_MAX];
    const schema *s = k->sub;
    const char *ea = *CAT(a, k, char *), *eb = *CAT(b, k, char *);
    size_t na = *(const size_t *)(const void *)((const char *)a + k->count_off);
    size_t nb = *(const size_t *)(const void *)((const char *)b + k->count_off);
    int rc = PF_OK;
    if (!s->id_key) {
        for (size_t i = 0; i < na || i < nb; i++) {
            join_path(p, "%s[%zu]", path, i);
            if (i >= na)
                rc = add_change(out, PF_CHANGE_ADDED, p);
            else if (i >= nb)
                rc = add_change(out, PF_CHANGE_REMOVED, p);
            else
                rc = diff_struct(s, ea + i * s->size, eb + i * s->size, p, out);
            if (rc != PF_OK)
                return rc;
        }
        return PF_OK;
    }
    id_ref *ia = index_by_id(s, ea, na), *ib = index_by_id(s, eb, nb);
    if ((na && !ia) || (nb && !ib))
        rc = PF_ENOMEM;
    /* removed ones first, in the old order; then the new list in its order */
    for (size_t i = 0; i < na && rc == PF_OK; i++) {
        const char *id = elem_id(s, ea + i * s->size);
        if (!find_id(ib, nb, id))
            rc = add_change(out, PF_CHANGE_REMOVED,
                            join_path(p, "%s[?@.%s==\"%s\"]", path, s->id_key, id));
    }
    for (size_t i = 0; i < nb && rc == PF_OK; i++) {
        const void *e = eb + i * s->size, *old = find_id(ia, na, elem_id(s, e));
        join_path(p, "%s[?@.%s==\"%s\"]", path, s->id_key, elem_id(s, e));
        rc = old ? diff_struct(s, old, e, p, out) : add_change(out, PF_CHANGE_ADDED, p);
    }
    free(ia);
    free(ib);
    return rc;
}

/* A row with its own dump: compared as what the dump gives. */
static int diff_dumped(const key_def *k, const void *a, const void *b, const char *path,
                       pf_config_diff *out) {
    char p[DIFF_PATH_MAX];
    dumper d = {0};
    json_t *va = k->dump(&d, a, k), *vb = k->dump(&d, b, k);
    int rc = PF_OK;
    if (d.failed)
        rc = PF_ENOMEM;
    else if (va && !vb)
        rc = add_change(out, PF_CHANGE_REMOVED, join_path(p, "%s.%s", path, k->name));
    else if (!va && vb)
        rc = add_change(out, PF_CHANGE_ADDED, join_path(p, "%s.%s", path, k->name));
    else if (va && !json_equal(va, vb))
        rc = add_change(out, PF_CHANGE_CHANGED, join_path(p, "%s.%s", path, k->name));
    json_decref(va);
    json_decref(vb);
    return rc;
}

/* The key's path is written only when it is reported or descended into: most keys of a
 * large config are neither. */
static int diff_struct(const schema *s, const void *a, const void *b, const char *path,
                       pf_config_diff *out) {
    char p[DIFF_PATH_MAX];
    for (size_t i = 0; i < s->count; i++) {
        const key_def *k = &s->keys[i];
        int rc = PF_OK;
        if (k->dump) {
            bool ia = !k->dump_if || k->dump_if(a), ib = !k->dump_if || k->dump_if(b);
            if (ia && ib)
                rc = diff_dumped(k, a, b, path, out);
            else if (ia || ib)
                rc = add_change(out, ia ? PF_CHANGE_REMOVED : PF_CHANGE_ADDED,
                                join_path(p, "%s.%s", path, k->name));
        } else {
            bool ia = dumped_key(a, k), ib = dumped_key(b, k);
            if (!ia && !ib)
                continue;
            if (ia != ib)
                rc = add_change(out, ia ? PF_CHANGE_REMOVED : PF_CHANGE_ADDED,
                                join_path(p, "%s.%s", path, k->name));
            else if (k->type == KT_OBJECT)
                rc = diff_struct(k->sub, CAT(a, k, char), CAT(b, k, char),
                                 join_path(p, "%s.%s", path, k->name), out);
            else if (k->type == KT_ARRAY)
                rc = diff_array(k, a, b, join_path(p, "%s.%s", path, k->name), out);
            else if (!same_value(a, b, k))
                rc = add_change(out, PF_CHANGE_CHANGED, join_path(p, "%s.%s", path, k->name));
        }
        if (rc != PF_OK)
            return rc;
    }
    return PF_OK;
}

int schema_diff(const schema *s, const void *a, const void *b, const char *path,
                pf_config_diff *out) {
    return diff_struct(s, a, b, path, out);
}

/* ---- the schema listing -------------------------------------------------------------- */

static const char *const type_names[] = {
    [KT_BOOL] = "boolean",  [KT_UINT] = "integer", [KT_DURATION] = "duration",
    [KT_TEXT] = "string",   [KT_ENUM] = "string",  [KT_ADDR] = "address",
    [KT_OBJECT] = "object", [KT_ARRAY] = "array",  [KT_CUSTOM] = "custom",
};

/* The default as text: what README.md's default column would say first. */
static json_t *default_text(const key_def *k) {
    char buf[64];
    if (k->doc_default)
        return json_string(k->doc_default);
    if (k->flags & KF_REQUIRED)
        return json_string("required");
    switch (k->type) {
    case KT_BOOL:
        return json_string(k->def ? "true" : "false");
    case KT_UINT:
        if ((k->flags & KF_OMIT_ZERO) && !k->def)
            return json_string("none");
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)k->def);
        return json_string(buf);
    case KT_DURATION:
        if ((k->flags & KF_OMIT_ZERO) && !k->def)
            return json_string("none");
        return json_string(pf_duration_format(k->def, buf, sizeof buf));
    case KT_ENUM: {
        int i = (int)k->def - k->name_base;
        return json_string(i >= 0 && (size_t)i < k->name_count ? k->names[i] : "none");
    }
    case KT_TEXT:
    case KT_ADDR:
        return json_string(k->def_text && *k->def_text ? k->def_text : "none");
    case KT_OBJECT:
        /* an object that is always there (no presence of its own) has its keys' defaults */
        if (!(k->flags & KF_PRESENT) && !k->sub->dumped)
            return json_string("its keys' defaults");
        break;
    case KT_ARRAY:
    case KT_CUSTOM:
        break;
    }
    return json_string("none");
}

int schema_list(const schema *s, json_t *arr, const void **seen, size_t *nseen, size_t max) {
    char p[JPATH_MAX];
    for (size_t i = 0; i < *nseen; i++)
        if (seen[i] == s)
            return PF_OK;
    if (*nseen == max)
        return PF_ENOMEM;
    seen[(*nseen)++] = s;
    for (size_t i = 0; i < s->count; i++) {
        const key_def *k = &s->keys[i];
        if (s->doc_name[0])
            snprintf(p, sizeof p, "%s.%s", s->doc_name, k->name);
        else
            snprintf(p, sizeof p, "%s", k->name);
        json_t *row = json_pack("{s:s,s:s,s:o,s:s}", "path", p, "type",
                                k->type_doc ? k->type_doc : type_names[k->type], "default",
                                default_text(k), "doc", k->doc ? k->doc : "");
        /* integer rows checked by the engine carry their bounds */
        if (row && k->type == KT_UINT && !k->parse &&
            (json_object_set_new(row, "min", json_integer((json_int_t)k->min)) != 0 ||
             json_object_set_new(row, "max", json_integer((json_int_t)k->max)) != 0)) {
            json_decref(row);
            row = NULL;
        }
        if (!row || json_array_append_new(arr, row) != 0)
            return PF_ENOMEM;
    }
    for (size_t i = 0; i < s->count; i++) {
        const key_def *k = &s->keys[i];
        if ((k->type == KT_OBJECT || k->type == KT_ARRAY) &&
            schema_list(k->sub, arr, seen, nseen, max) != PF_OK)
            return PF_ENOMEM;
    }
    return PF_OK;
}
