/*
 * GGUF reader. The file is mapped read-only; every string, array and
 * tensor below points into that mapping and lives as long as the
 * struct gguf_file. All offsets and sizes are checked against the file
 * size when the file is opened, so later accessors never read out of
 * bounds.
 */
#ifndef TAPHOUSE_ENG_GGUF_H
#define TAPHOUSE_ENG_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Metadata value types, numbered as in the GGUF specification. */
enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
};

/* Tensor element types, numbered as in ggml. */
enum ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_BF16 = 30,
};

#define GGUF_MAX_DIMS 4

/* A length-counted string inside the mapping; not NUL-terminated. */
struct gguf_str {
    uint64_t len;
    const char *data;
};

struct gguf_kv {
    struct gguf_str key;
    enum gguf_type type;
    union {
        uint64_t u64;      /* every unsigned integer type and bool */
        int64_t i64;       /* every signed integer type */
        double f64;        /* FLOAT32 and FLOAT64 */
        struct gguf_str str;
        struct {
            enum gguf_type type;   /* element type; never ARRAY */
            uint64_t count;
            const void *data;      /* raw little-endian elements */
            struct gguf_str *strs; /* for STRING arrays: count entries */
        } arr;
    } v;
};

struct gguf_tensor {
    struct gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the row length; unused = 1 */
    enum ggml_type type;
    uint64_t offset;            /* from the start of the data section */
    const void *data;
    size_t nbytes;
};

struct gguf_file {
    char *path;
    uint32_t version;           /* 2 or 3 */
    uint64_t alignment;
    uint64_t n_kv;
    struct gguf_kv *kv;
    uint64_t n_tensors;
    struct gguf_tensor *tensors;
    const uint8_t *map;
    size_t map_size;
};

/*
 * Open and validate PATH. On failure returns a negative value and writes
 * one line naming the file and the problem into ERR.
 */
int gguf_open(const char *path, struct gguf_file **out, char *err,
              size_t errlen);
void gguf_close(struct gguf_file *f);

/* Returns the key's entry, or NULL when the file has no such key. */
const struct gguf_kv *gguf_find_kv(const struct gguf_file *f,
                                   const char *key);
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f,
                                           const char *name);

/*
 * Typed getters: return 0 and store the value, or -1 when the key is
 * missing or has an incompatible type. Integer getters accept any integer
 * type whose value fits; gguf_get_f32 accepts floats and integers.
 */
int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out);
int gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out);
int gguf_get_f32(const struct gguf_file *f, const char *key, float *out);
int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out);
/* Returns a malloc'd NUL-terminated copy, or NULL. */
char *gguf_get_str_dup(const struct gguf_file *f, const char *key);

/* Bytes taken by N elements of TYPE (N a multiple of the block size);
 * 0 for an unsupported type. */
size_t ggml_row_size(enum ggml_type type, uint64_t n);
const char *ggml_type_name(enum ggml_type type);

/* IEEE half and bfloat16 to float. */
float ggml_fp16_to_fp32(uint16_t h);
float ggml_bf16_to_fp32(uint16_t h);

#endif
