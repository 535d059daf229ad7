/* ledger._walk: the inner loop of the whole-ledger walk (ledger/verify.py) in C.
 *
 * Optional accelerator. ledger/verify.py holds the reference walk in Python and uses this module
 * only when it was built; the tests run both and compare them. It changes nothing about what is
 * checked, only how fast:
 *
 *   check_chunk(rows, start_seq, head) -> bytes | None
 *       rows: list of (seq, canonical, leaf_hash, chain_hash). For each row, in order: seq is
 *       start_seq + i; the entry states that seq as a top-level key (the text check of
 *       verify._seq_stated; anything that needs a full parse is left to Python); the stored leaf
 *       hash is SHA-256(0x00 || canonical); the stored chain hash is SHA-256(previous head ||
 *       leaf), starting from `head`. Returns the recomputed leaf hashes concatenated (32 bytes
 *       each) if every row passes, None at the first doubt: the caller then walks the chunk entry
 *       by entry in Python, which names the first bad entry and what is wrong with it.
 *
 *   perfect_root(leaves, lo, width) -> bytes
 *       RFC 9162 root of the perfect subtree over leaf hashes [lo, lo + width) of the concatenated
 *       `leaves` (width a power of two): SHA-256(0x01 || left || right), level by level.
 *
 * SHA-256 is OpenSSL's low-level implementation (libcrypto, with its SHA-NI/AVX code): the
 * per-call cost of hashlib's EVP objects, not the hashing, is what bounds the Python walk.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HASH 32

/* Same text check as verify._seq_stated's fast branch: the last `"seq":` is followed by exactly
 * the digits of seq and a `,` or `}`, and no `}` stands between it and the final byte. */
static int
seq_stated(const char *c, Py_ssize_t len, long long seq)
{
    Py_ssize_t i = len - 6;
    for (; i > 0; i--) {
        if (c[i] == '"' && memcmp(c + i, "\"seq\":", 6) == 0)
            break;
    }
    if (i <= 0)
        return 0;
    char digits[32];
    int nd = snprintf(digits, sizeof digits, "%lld", seq);
    Py_ssize_t end = i + 6 + nd;
    if (end >= len || memcmp(c + i + 6, digits, (size_t)nd) != 0)
        return 0;
    if (c[end] != ',' && c[end] != '}')
        return 0;
    if (memchr(c + i, '}', (size_t)(len - 1 - i)) != NULL)
        return 0;
    return 1;
}

static int
stored_hash_equals(PyObject *obj, const unsigned char *hash)
{
    return PyBytes_CheckExact(obj) && PyBytes_GET_SIZE(obj) == HASH &&
           memcmp(PyBytes_AS_STRING(obj), hash, HASH) == 0;
}

static PyObject *
check_chunk(PyObject *self, PyObject *args)
{
    PyObject *rows;
    long long start;
    Py_buffer head;
    if (!PyArg_ParseTuple(args, "O!Ly*", &PyList_Type, &rows, &start, &head))
        return NULL;
    if (head.len != HASH) {
        PyBuffer_Release(&head);
        PyErr_SetString(PyExc_ValueError, "head must be 32 bytes");
        return NULL;
    }
    unsigned char prev[HASH];
    memcpy(prev, head.buf, HASH);
    PyBuffer_Release(&head);

    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * HASH);
    if (out == NULL)
        return NULL;
    unsigned char *leaves = (unsigned char *)PyBytes_AS_STRING(out);
    static const unsigned char zero = 0x00;

    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 4)
            goto doubt;
        PyObject *seq_obj = PyTuple_GET_ITEM(row, 0);
        if (!PyLong_CheckExact(seq_obj))
            goto doubt;
        int overflow = 0;
        long long seq = PyLong_AsLongLongAndOverflow(seq_obj, &overflow);
        if (overflow || (seq == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            goto doubt;
        }
        if (seq != start + i)
            goto doubt;

        PyObject *text = PyTuple_GET_ITEM(row, 1);
        const char *c;
        Py_ssize_t len;
        if (PyBytes_CheckExact(text)) {
            c = PyBytes_AS_STRING(text);
            len = PyBytes_GET_SIZE(text);
        }
        else if (PyUnicode_CheckExact(text)) {
            c = PyUnicode_AsUTF8AndSize(text, &len);
            if (c == NULL) {
                PyErr_Clear();
                goto doubt;
            }
        }
        else
            goto doubt;
        if (!seq_stated(c, len, seq))
            goto doubt;

        unsigned char *leaf = leaves + i * HASH;
        SHA256_CTX ctx;
        SHA256_Init(&ctx);
        SHA256_Update(&ctx, &zero, 1);
        SHA256_Update(&ctx, c, (size_t)len);
        SHA256_Final(leaf, &ctx);
        if (!stored_hash_equals(PyTuple_GET_ITEM(row, 2), leaf))
            goto doubt;

        SHA256_Init(&ctx);
        SHA256_Update(&ctx, prev, HASH);
        SHA256_Update(&ctx, leaf, HASH);
        SHA256_Final(prev, &ctx);
        if (!stored_hash_equals(PyTuple_GET_ITEM(row, 3), prev))
            goto doubt;
    }
    return out;

doubt:
    Py_DECREF(out);
    Py_RETURN_NONE;
}

static PyObject *
perfect_root(PyObject *self, PyObject *args)
{
    Py_buffer leaves;
    Py_ssize_t lo, width;
    if (!PyArg_ParseTuple(args, "y*nn", &leaves, &lo, &width))
        return NULL;
    if (lo < 0 || width < 1 || (width & (width - 1)) != 0 || (lo + width) * HASH > leaves.len) {
        PyBuffer_Release(&leaves);
        PyErr_SetString(PyExc_ValueError, "width must be a power of two within the leaves");
        return NULL;
    }
    unsigned char *level = malloc((size_t)width * HASH);
    if (level == NULL) {
        PyBuffer_Release(&leaves);
        return PyErr_NoMemory();
    }
    memcpy(level, (const unsigned char *)leaves.buf + lo * HASH, (size_t)width * HASH);
    PyBuffer_Release(&leaves);
    static const unsigned char one = 0x01;
    for (Py_ssize_t w = width; w > 1; w /= 2) {
        for (Py_ssize_t j = 0; j < w / 2; j++) {
            SHA256_CTX ctx;
            SHA256_Init(&ctx);
            SHA256_Update(&ctx, &one, 1);
            SHA256_Update(&ctx, level + 2 * j * HASH, 2 * HASH);
            SHA256_Final(level + j * HASH, &ctx);
        }
    }
    PyObject *root = PyBytes_FromStringAndSize((const char *)level, HASH);
    free(level);
    return root;
}

static PyMethodDef methods[] = {
    {"check_chunk", check_chunk, METH_VARARGS,
     "check_chunk(rows, start_seq, head) -> concatenated leaf hashes, or None at the first doubt"},
    {"perfect_root", perfect_root, METH_VARARGS,
     "perfect_root(leaves, lo, width) -> RFC 9162 root of a perfect subtree of concatenated leaf hashes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_walk", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__walk(void)
{
    return PyModule_Create(&module);
}
