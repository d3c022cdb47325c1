/* $.access_log: the schema rows of the access log's settings. The key takes `true` (JSON
 * lines on stdout, every field), `false` (off), or an object choosing the format, the fields
 * and their order, a file instead of stdout and a sampling rate. Kept apart from config.c's
 * tables because its two value kinds (a boolean or an object) need their own parse and dump. */
#include "config/config_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const field_names[PF_ALOG_FIELD_COUNT] = {
    [PF_ALOG_TIME] = "time",
    [PF_ALOG_CLIENT] = "client",
    [PF_ALOG_METHOD] = "method",
    [PF_ALOG_AUTHORITY] = "authority",
    [PF_ALOG_PATH] = "path",
    [PF_ALOG_STATUS] = "status",
    [PF_ALOG_BYTES_IN] = "bytes_in",
    [PF_ALOG_BYTES_OUT] = "bytes_out",
    [PF_ALOG_DURATION_MS] = "duration_ms",
    [PF_ALOG_CLUSTER] = "cluster",
    [PF_ALOG_UPSTREAM] = "upstream",
    [PF_ALOG_REQUEST_ID] = "request_id",
    [PF_ALOG_TRACE_ID] = "trace_id",
    [PF_ALOG_PROTOCOL] = "protocol",
    [PF_ALOG_GRPC_STATUS] = "grpc_status",
};

static const char *const format_names[] = {"json", "text"};

const char *config_access_log_field_name(int field) {
    return field >= 0 && field < PF_ALOG_FIELD_COUNT ? field_names[field] : NULL;
}

#define ALOG(base) ((pf_config_access_log *)(base))
#define CALOG(base) ((const pf_config_access_log *)(base))

static void init_fields(void *base, const key_def *k) {
    for (int i = 0; i < PF_ALOG_FIELD_COUNT; i++)
        ALOG(base)->fields[i] = (uint8_t)i;
    ALOG(base)->field_count = PF_ALOG_FIELD_COUNT;
    (void)k;
}

static void parse_fields(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                         const key_def *k) {
    char ep[JPATH_MAX], q[QUOTE_MAX];
    pf_config_access_log *a = ALOG(base);
    bool seen[PF_ALOG_FIELD_COUNT] = {0};
    size_t n = 0;
    if (!want(ld, v, p, "array"))
        return;
    if (json_array_size(v) == 0) {
        errf(ld, p, "empty; list at least one field");
        return;
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        jidx(ep, p, i);
        if (!want(ld, e, ep, "string"))
            continue;
        const char *name = json_string_value(e);
        int f = 0;
        while (f < PF_ALOG_FIELD_COUNT && strcmp(name, field_names[f]) != 0)
            f++;
        if (f == PF_ALOG_FIELD_COUNT) {
            textlist tl = {0};
            textlist_join(&tl, field_names, PF_ALOG_FIELD_COUNT);
            errf(ld, ep, "unknown field %s; known fields: %s", qstr(q, name), tl.buf);
        } else if (seen[f]) {
            errf(ld, ep, "field %s is listed twice", qstr(q, name));
        } else {
            seen[f] = true;
            a->fields[n++] = (uint8_t)f;
        }
    }
    a->field_count = n ? n : a->field_count; /* an error above already refuses the file */
    (void)obj;
    (void)k;
}

static json_t *dump_fields(dumper *d, const void *base, const key_def *k) {
    json_t *arr = json_array();
    if (!arr)
        d->failed = true;
    for (size_t i = 0; arr && i < CALOG(base)->field_count; i++)
        push(d, arr, json_string(field_names[CALOG(base)->fields[i]]));
    (void)k;
    return arr;
}

static void init_sample(void *base, const key_def *k) {
    ALOG(base)->sample_ppm = PF_ALOG_SAMPLE_ONE;
    (void)k;
}

static void parse_sample(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                         const key_def *k) {
    if (!json_is_number(v)) {
        errf(ld, p, "expected a number from 0.0 to 1.0, found %s", json_kind(v));
        return;
    }
    double x = json_number_value(v);
    if (!(x >= 0.0 && x <= 1.0)) {
        errf(ld, p, "%g out of range (0.0-1.0: the share of requests logged)", x);
        return;
    }
    ALOG(base)->sample_ppm = (uint32_t)lround(x * PF_ALOG_SAMPLE_ONE);
    (void)obj;
    (void)k;
}

static json_t *dump_sample(dumper *d, const void *base, const key_def *k) {
    (void)d;
    (void)k;
    return json_real((double)CALOG(base)->sample_ppm / PF_ALOG_SAMPLE_ONE);
}

static const key_def access_log_keys[] = {
    {.name = "format",
     .type = KT_ENUM,
     .off = FIELD_OF(pf_config_access_log, format, int),
     .names = format_names,
     .name_count = ARRAY_LEN(format_names),
     .name_base = PF_ALOG_JSON,
     .def = PF_ALOG_JSON,
     .noun = "format",
     .nouns = "formats",
     .doc = "json: one JSON object per line; text: one space-separated line"},
    {.name = "fields",
     .type = KT_CUSTOM,
     .type_doc = "array of field names",
     .doc = "what a line holds, in this order",
     .doc_default = "all",
     .parse = parse_fields,
     .init = init_fields,
     .dump = dump_fields},
    {.name = "path",
     .type = KT_TEXT,
     .flags = KF_OMIT_ZERO,
     .off = offsetof(pf_config_access_log, path),
     .size = sizeof(((pf_config_access_log *)0)->path),
     .doc = "a file to append to, reopened on SIGUSR1",
     .doc_default = "stdout"},
    {.name = "sample",
     .type = KT_CUSTOM,
     .type_doc = "number",
     .doc = "share of requests logged, 0.0 to 1.0",
     .doc_default = "1.0",
     .parse = parse_sample,
     .init = init_sample,
     .dump = dump_sample},
};

const schema access_log_schema = {
    .doc_name = "access_log", .keys = access_log_keys, .count = ARRAY_LEN(access_log_keys)};

void config_init_access_log(void *base, const key_def *k) {
    ((pf_config *)base)->access_log.enabled = true;
    (void)k;
}

void config_parse_access_log(loader *ld, json_t *obj, json_t *v, const char *p, void *base,
                             const key_def *k) {
    pf_config_access_log *a = &((pf_config *)base)->access_log;
    if (json_is_boolean(v)) {
        a->enabled = json_is_true(v);
        return;
    }
    if (!json_is_object(v)) {
        errf(ld, p, "expected boolean or object, found %s", json_kind(v));
        return;
    }
    a->enabled = true;
    parse_value(ld, obj, v, p, base, k);
}

/* false when off; otherwise every setting, defaults included, as --print-config shows. */
json_t *config_dump_access_log(dumper *d, const void *base, const key_def *k) {
    const pf_config_access_log *a = &((const pf_config *)base)->access_log;
    if (!a->enabled)
        return json_false();
    return schema_dump(d, k->sub, a);
}
