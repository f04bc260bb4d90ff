/*
 * GGUF reader: maps a file read-only and validates its header, metadata
 * and tensor table before anything else touches it. Every length read
 * from the file is checked against the bytes that remain, with
 * overflow-safe arithmetic, so a truncated or hostile file produces one
 * error line ("PATH: problem") and never an out-of-bounds read.
 *
 * Assumes a little-endian host, as GGUF files are little-endian.
 */
#include "engine/eng_gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32

/* A cursor over the mapping; the first failure sticks in ERR. */
struct reader {
    const uint8_t *map;
    size_t size;
    size_t pos;
    const char *path;
    char *err;
    size_t errlen;
    int failed;
};

static void fail(struct reader *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Record the first error as "PATH: message". */
static void fail(struct reader *r, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    if (r->failed)
        return;
    r->failed = 1;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (r->err && r->errlen)
        snprintf(r->err, r->errlen, "%s: %s", r->path, msg);
}

static size_t remaining(const struct reader *r)
{
    return r->size - r->pos;
}

/* Copy N bytes at the cursor into DST; on short input, fail with WHAT. */
static int read_bytes(struct reader *r, void *dst, size_t n,
                      const char *what)
{
    if (r->failed)
        return -1;
    if (n > remaining(r)) {
        fail(r, "truncated file: %s at offset %zu needs %zu bytes, "
             "%zu remain", what, r->pos, n, remaining(r));
        return -1;
    }
    memcpy(dst, r->map + r->pos, n);
    r->pos += n;
    return 0;
}

static int read_u32(struct reader *r, uint32_t *v, const char *what)
{
    return read_bytes(r, v, sizeof(*v), what);
}

static int read_u64(struct reader *r, uint64_t *v, const char *what)
{
    return read_bytes(r, v, sizeof(*v), what);
}

/* Read a u64 length and point S at that many bytes inside the mapping. */
static int read_str(struct reader *r, struct gguf_str *s, const char *what)
{
    uint64_t len;

    if (read_u64(r, &len, what) < 0)
        return -1;
    if (len > remaining(r)) {
        fail(r, "%s at offset %zu has length %llu, past the end of the "
             "file (%zu bytes remain)", what, r->pos - 8,
             (unsigned long long)len, remaining(r));
        return -1;
    }
    s->len = len;
    s->data = (const char *)(r->map + r->pos);
    r->pos += (size_t)len;
    return 0;
}

/* Size in bytes of one scalar of TYPE; 0 for STRING, ARRAY and unknown. */
static size_t scalar_size(uint32_t type)
{
    switch (type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL:
        return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16:
        return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32:
        return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

/* Decode one little-endian scalar of TYPE at P into KV's union. */
static void decode_scalar(uint32_t type, const uint8_t *p,
                          struct gguf_kv *kv)
{
    uint8_t u8;
    int8_t i8;
    uint16_t u16;
    int16_t i16;
    uint32_t u32;
    int32_t i32;
    float f32;

    switch (type) {
    case GGUF_TYPE_UINT8:
        memcpy(&u8, p, 1);
        kv->v.u64 = u8;
        break;
    case GGUF_TYPE_BOOL:
        memcpy(&u8, p, 1);
        kv->v.u64 = u8 != 0;
        break;
    case GGUF_TYPE_INT8:
        memcpy(&i8, p, 1);
        kv->v.i64 = i8;
        break;
    case GGUF_TYPE_UINT16:
        memcpy(&u16, p, 2);
        kv->v.u64 = u16;
        break;
    case GGUF_TYPE_INT16:
        memcpy(&i16, p, 2);
        kv->v.i64 = i16;
        break;
    case GGUF_TYPE_UINT32:
        memcpy(&u32, p, 4);
        kv->v.u64 = u32;
        break;
    case GGUF_TYPE_INT32:
        memcpy(&i32, p, 4);
        kv->v.i64 = i32;
        break;
    case GGUF_TYPE_FLOAT32:
        memcpy(&f32, p, 4);
        kv->v.f64 = f32;
        break;
    case GGUF_TYPE_UINT64:
        memcpy(&kv->v.u64, p, 8);
        break;
    case GGUF_TYPE_INT64:
        memcpy(&kv->v.i64, p, 8);
        break;
    case GGUF_TYPE_FLOAT64:
        memcpy(&kv->v.f64, p, 8);
        break;
    default:
        break;
    }
}

/* Read an array value: element type, count, then the elements. */
static int read_array(struct reader *r, struct gguf_kv *kv, char *key)
{
    uint32_t etype;
    uint64_t count;

    if (read_u32(r, &etype, "array element type") < 0 ||
        read_u64(r, &count, "array length") < 0)
        return -1;
    kv->v.arr.type = (enum gguf_type)etype;
    kv->v.arr.count = count;
    kv->v.arr.data = r->map + r->pos;
    kv->v.arr.strs = NULL;

    if (etype == GGUF_TYPE_ARRAY) {
        fail(r, "key '%s': arrays of arrays are not supported", key);
        return -1;
    }
    if (etype == GGUF_TYPE_STRING) {
        /* Each string takes at least its 8-byte length. */
        if (count > remaining(r) / 8) {
            fail(r, "key '%s': string array of %llu entries does not fit "
                 "in the %zu bytes that remain", key,
                 (unsigned long long)count, remaining(r));
            return -1;
        }
        kv->v.arr.strs = calloc(count ? count : 1, sizeof(struct gguf_str));
        if (!kv->v.arr.strs) {
            fail(r, "key '%s': out of memory for %llu strings", key,
                 (unsigned long long)count);
            return -1;
        }
        for (uint64_t i = 0; i < count; i++)
            if (read_str(r, &kv->v.arr.strs[i], "array string") < 0)
                return -1;
        return 0;
    }

    size_t esize = scalar_size(etype);
    if (esize == 0) {
        fail(r, "key '%s': unknown array element type %u", key, etype);
        return -1;
    }
    if (count > remaining(r) / esize) {
        fail(r, "key '%s': array of %llu elements of %zu bytes runs past "
             "the end of the file", key, (unsigned long long)count, esize);
        return -1;
    }
    r->pos += (size_t)(count * esize);
    return 0;
}

/* Copy a key into BUF for messages, truncated and NUL-terminated. */
static void key_for_msg(const struct gguf_str *s, char *buf, size_t n)
{
    size_t len = s->len < n - 1 ? (size_t)s->len : n - 1;

    memcpy(buf, s->data, len);
    buf[len] = '\0';
}

static int str_eq(const struct gguf_str *s, const char *c)
{
    size_t n = strlen(c);

    return s->len == n && memcmp(s->data, c, n) == 0;
}

/* Read one key-value pair into KV. */
static int read_kv(struct reader *r, struct gguf_file *f, uint64_t idx)
{
    struct gguf_kv *kv = &f->kv[idx];
    char key[96];
    uint32_t type;

    if (read_str(r, &kv->key, "metadata key") < 0)
        return -1;
    key_for_msg(&kv->key, key, sizeof(key));
    for (uint64_t j = 0; j < idx; j++) {
        if (f->kv[j].key.len == kv->key.len &&
            memcmp(f->kv[j].key.data, kv->key.data, kv->key.len) == 0) {
            fail(r, "duplicate metadata key '%s'", key);
            return -1;
        }
    }
    if (read_u32(r, &type, "metadata value type") < 0)
        return -1;
    kv->type = (enum gguf_type)type;

    if (type == GGUF_TYPE_STRING)
        return read_str(r, &kv->v.str, "metadata string");
    if (type == GGUF_TYPE_ARRAY)
        return read_array(r, kv, key);

    size_t size = scalar_size(type);
    if (size == 0) {
        fail(r, "key '%s': unknown metadata value type %u", key, type);
        return -1;
    }
    if (size > remaining(r)) {
        fail(r, "truncated file: value of key '%s' at offset %zu", key,
             r->pos);
        return -1;
    }
    decode_scalar(type, r->map + r->pos, kv);
    r->pos += size;
    return 0;
}

/* Values per block and bytes per block of each supported tensor type. */
static int type_block(enum ggml_type type, uint64_t *blk, uint64_t *bytes)
{
    switch (type) {
    case GGML_TYPE_F32:
        *blk = 1;
        *bytes = 4;
        return 0;
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16:
        *blk = 1;
        *bytes = 2;
        return 0;
    case GGML_TYPE_Q8_0:
        *blk = 32;
        *bytes = 34;
        return 0;
    case GGML_TYPE_Q4_0:
        *blk = 32;
        *bytes = 18;
        return 0;
    }
    return -1;
}

size_t ggml_row_size(enum ggml_type type, uint64_t n)
{
    uint64_t blk, bytes;

    if (type_block(type, &blk, &bytes) < 0 || n % blk != 0)
        return 0;
    if (n / blk > SIZE_MAX / bytes)
        return 0;
    return (size_t)(n / blk * bytes);
}

const char *ggml_type_name(enum ggml_type type)
{
    switch (type) {
    case GGML_TYPE_F32:
        return "F32";
    case GGML_TYPE_F16:
        return "F16";
    case GGML_TYPE_BF16:
        return "BF16";
    case GGML_TYPE_Q8_0:
        return "Q8_0";
    case GGML_TYPE_Q4_0:
        return "Q4_0";
    }
    return "unknown";
}

/* Read one tensor's name, shape, type and offset; sizes come later. */
static int read_tensor_info(struct reader *r, struct gguf_tensor *t)
{
    char name[96];
    uint32_t type;

    if (read_str(r, &t->name, "tensor name") < 0)
        return -1;
    key_for_msg(&t->name, name, sizeof(name));
    if (read_u32(r, &t->n_dims, "tensor dimension count") < 0)
        return -1;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS) {
        fail(r, "tensor '%s': %u dimensions (must be 1 to %d)", name,
             t->n_dims, GGUF_MAX_DIMS);
        return -1;
    }
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (read_u64(r, &t->ne[d], "tensor dimension") < 0)
            return -1;
        if (t->ne[d] == 0 || t->ne[d] > INT64_MAX) {
            fail(r, "tensor '%s': invalid size %llu in dimension %u",
                 name, (unsigned long long)t->ne[d], d);
            return -1;
        }
    }
    if (read_u32(r, &type, "tensor type") < 0 ||
        read_u64(r, &t->offset, "tensor offset") < 0)
        return -1;
    t->type = (enum ggml_type)type;
    return 0;
}

/*
 * Check tensor T's type, shape and data range against a data section
 * that starts at DATA_START, and point T->data into the mapping.
 */
static int place_tensor(struct reader *r, struct gguf_file *f,
                        struct gguf_tensor *t, size_t data_start)
{
    char name[96];
    uint64_t blk, bytes, rows = 1;

    key_for_msg(&t->name, name, sizeof(name));
    if (type_block(t->type, &blk, &bytes) < 0) {
        fail(r, "tensor '%s': unknown tensor type %u (supported: F32, "
             "F16, BF16, Q8_0, Q4_0)", name, (unsigned)t->type);
        return -1;
    }
    if (t->ne[0] % blk != 0) {
        fail(r, "tensor '%s': row length %llu is not a multiple of the "
             "%s block size %llu", name, (unsigned long long)t->ne[0],
             ggml_type_name(t->type), (unsigned long long)blk);
        return -1;
    }
    for (int d = 1; d < GGUF_MAX_DIMS; d++) {
        if (t->ne[d] > UINT64_MAX / rows) {
            fail(r, "tensor '%s': element count overflows", name);
            return -1;
        }
        rows *= t->ne[d];
    }
    uint64_t row_bytes = t->ne[0] / blk * bytes; /* ne[0] < 2^63 */
    if (rows > UINT64_MAX / row_bytes) {
        fail(r, "tensor '%s': byte size overflows", name);
        return -1;
    }
    uint64_t nbytes = rows * row_bytes;
    if (t->offset % f->alignment != 0) {
        fail(r, "tensor '%s': data offset %llu is not a multiple of the "
             "alignment %llu", name, (unsigned long long)t->offset,
             (unsigned long long)f->alignment);
        return -1;
    }
    uint64_t avail = r->size - data_start;
    if (t->offset > avail || nbytes > avail - t->offset) {
        fail(r, "tensor '%s': data [%llu, +%llu) runs past the end of the "
             "file (data section holds %llu bytes)", name,
             (unsigned long long)t->offset, (unsigned long long)nbytes,
             (unsigned long long)avail);
        return -1;
    }
    t->nbytes = (size_t)nbytes;
    t->data = r->map + data_start + t->offset;
    return 0;
}

/* Read general.alignment when present: a power of two, default 32. */
static int read_alignment(struct reader *r, struct gguf_file *f)
{
    const struct gguf_kv *kv = gguf_find_kv(f, "general.alignment");
    int64_t a;

    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!kv)
        return 0;
    if (gguf_get_i64(f, "general.alignment", &a) < 0) {
        fail(r, "general.alignment is not an integer (type %d)",
             (int)kv->type);
        return -1;
    }
    if (a <= 0 || (a & (a - 1)) != 0) {
        fail(r, "general.alignment %lld is not a power of two",
             (long long)a);
        return -1;
    }
    f->alignment = (uint64_t)a;
    return 0;
}

/* Parse the header and both tables of the mapped file F. */
static int parse(struct reader *r, struct gguf_file *f)
{
    char magic[4];
    uint64_t min_kv = 8 + 4 + 1;       /* empty key, type, 1-byte value */
    uint64_t min_tensor = 8 + 4 + 8 + 4 + 8;

    if (read_bytes(r, magic, 4, "magic") < 0)
        return -1;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0) {
        fail(r, "not a GGUF file (bad magic)");
        return -1;
    }
    if (read_u32(r, &f->version, "version") < 0)
        return -1;
    if (f->version != 2 && f->version != 3) {
        fail(r, "unsupported GGUF version %u (supported: 2 and 3)",
             f->version);
        return -1;
    }
    if (read_u64(r, &f->n_tensors, "tensor count") < 0 ||
        read_u64(r, &f->n_kv, "metadata count") < 0)
        return -1;

    /* Bound both counts by the bytes left before allocating. */
    if (f->n_kv > remaining(r) / min_kv) {
        fail(r, "metadata count %llu does not fit in the file",
             (unsigned long long)f->n_kv);
        return -1;
    }
    if (f->n_tensors > remaining(r) / min_tensor) {
        fail(r, "tensor count %llu does not fit in the file",
             (unsigned long long)f->n_tensors);
        return -1;
    }
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof(*f->kv));
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1,
                        sizeof(*f->tensors));
    if (!f->kv || !f->tensors) {
        fail(r, "out of memory");
        return -1;
    }

    for (uint64_t i = 0; i < f->n_kv; i++)
        if (read_kv(r, f, i) < 0)
            return -1;
    if (read_alignment(r, f) < 0)
        return -1;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (read_tensor_info(r, &f->tensors[i]) < 0)
            return -1;

    /* The data section starts at the next multiple of the alignment. */
    size_t data_start = r->pos;
    size_t pad = (size_t)(f->alignment - data_start % f->alignment) %
                 f->alignment;
    if (f->n_tensors > 0 && pad > remaining(r)) {
        fail(r, "truncated file: data section missing");
        return -1;
    }
    data_start += pad;

    for (uint64_t i = 0; i < f->n_tensors; i++) {
        struct gguf_tensor *t = &f->tensors[i];
        for (uint64_t j = 0; j < i; j++) {
            if (f->tensors[j].name.len == t->name.len &&
                memcmp(f->tensors[j].name.data, t->name.data,
                       t->name.len) == 0) {
                char name[96];
                key_for_msg(&t->name, name, sizeof(name));
                fail(r, "duplicate tensor '%s'", name);
                return -1;
            }
        }
        if (place_tensor(r, f, t, data_start) < 0)
            return -1;
    }
    return 0;
}

int gguf_open(const char *path, struct gguf_file **out, char *err,
              size_t errlen)
{
    struct reader r = { .path = path, .err = err, .errlen = errlen };
    struct gguf_file *f = NULL;
    struct stat st;
    int fd = -1;

    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(path))) {
        fail(&r, "out of memory");
        goto fail;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fail(&r, "cannot open: %s", strerror(errno));
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        fail(&r, "cannot stat: %s", strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        fail(&r, "not a regular file");
        goto fail;
    }
    if (st.st_size < 24) {
        fail(&r, "truncated file: %lld bytes is shorter than a GGUF "
             "header", (long long)st.st_size);
        goto fail;
    }
    f->map_size = (size_t)st.st_size;
    void *map = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        fail(&r, "mmap failed: %s", strerror(errno));
        goto fail;
    }
    f->map = map;
    close(fd);
    fd = -1;

    r.map = f->map;
    r.size = f->map_size;
    if (parse(&r, f) < 0)
        goto fail;
    *out = f;
    return 0;

fail:
    if (fd >= 0)
        close(fd);
    gguf_close(f);
    return -1;
}

void gguf_close(struct gguf_file *f)
{
    if (!f)
        return;
    if (f->kv) {
        for (uint64_t i = 0; i < f->n_kv; i++)
            if (f->kv[i].type == GGUF_TYPE_ARRAY)
                free(f->kv[i].v.arr.strs);
        free(f->kv);
    }
    free(f->tensors);
    if (f->map)
        munmap((void *)f->map, f->map_size);
    free(f->path);
    free(f);
}

const struct gguf_kv *gguf_find_kv(const struct gguf_file *f,
                                   const char *key)
{
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (str_eq(&f->kv[i].key, key))
            return &f->kv[i];
    return NULL;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f,
                                           const char *name)
{
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (str_eq(&f->tensors[i].name, name))
            return &f->tensors[i];
    return NULL;
}

static int is_unsigned(enum gguf_type t)
{
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 ||
           t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_UINT64;
}

static int is_signed(enum gguf_type t)
{
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 ||
           t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64;
}

int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out)
{
    const struct gguf_kv *kv = gguf_find_kv(f, key);

    if (!kv)
        return -1;
    if (is_unsigned(kv->type) && kv->v.u64 <= UINT32_MAX) {
        *out = (uint32_t)kv->v.u64;
        return 0;
    }
    if (is_signed(kv->type) && kv->v.i64 >= 0 &&
        kv->v.i64 <= (int64_t)UINT32_MAX) {
        *out = (uint32_t)kv->v.i64;
        return 0;
    }
    return -1;
}

int gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out)
{
    const struct gguf_kv *kv = gguf_find_kv(f, key);

    if (!kv)
        return -1;
    if (is_signed(kv->type)) {
        *out = kv->v.i64;
        return 0;
    }
    if (is_unsigned(kv->type) && kv->v.u64 <= INT64_MAX) {
        *out = (int64_t)kv->v.u64;
        return 0;
    }
    return -1;
}

int gguf_get_f32(const struct gguf_file *f, const char *key, float *out)
{
    const struct gguf_kv *kv = gguf_find_kv(f, key);

    if (!kv)
        return -1;
    if (kv->type == GGUF_TYPE_FLOAT32 || kv->type == GGUF_TYPE_FLOAT64)
        *out = (float)kv->v.f64;
    else if (is_signed(kv->type))
        *out = (float)kv->v.i64;
    else if (is_unsigned(kv->type))
        *out = (float)kv->v.u64;
    else
        return -1;
    return 0;
}

int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out)
{
    const struct gguf_kv *kv = gguf_find_kv(f, key);

    if (!kv || kv->type != GGUF_TYPE_BOOL)
        return -1;
    *out = kv->v.u64 != 0;
    return 0;
}

char *gguf_get_str_dup(const struct gguf_file *f, const char *key)
{
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    char *s;

    if (!kv || kv->type != GGUF_TYPE_STRING)
        return NULL;
    s = malloc((size_t)kv->v.str.len + 1);
    if (!s)
        return NULL;
    memcpy(s, kv->v.str.data, (size_t)kv->v.str.len);
    s[kv->v.str.len] = '\0';
    return s;
}

/*
 * IEEE 754 binary16 to binary32 by bit manipulation: normals rebias the
 * exponent, subnormals are scaled exactly, and inf/NaN keep their payload.
 */
float ggml_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    float out;

    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else {
        /* Subnormal or zero: mant * 2^-24 is exact in float. */
        out = (float)mant * (1.0f / 16777216.0f);
        return sign ? -out : out;
    }
    memcpy(&out, &bits, sizeof(out));
    return out;
}

float ggml_bf16_to_fp32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float out;

    memcpy(&out, &bits, sizeof(out));
    return out;
}
