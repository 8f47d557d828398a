/* TLV encoding of a list of byte strings straight into a caller's buffer.
 *
 * The producer and append paths hand whole lists of values; this copies each
 * header and value into place (an aligned O_DIRECT buffer, or a frame) without
 * building intermediate Python objects. Only bytes-like values of one type.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_VALUE_LEN (16u * 1024u * 1024u)

static int value_of(PyObject *item, Py_ssize_t index, Py_buffer *view, const char **src, Py_ssize_t *len)
{
    if (PyBytes_CheckExact(item)) {
        *src = PyBytes_AS_STRING(item);
        *len = PyBytes_GET_SIZE(item);
        view->obj = NULL;
        return 0;
    }
    if (PyObject_GetBuffer(item, view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "record %zd is not bytes-like (%.80s)", index, Py_TYPE(item)->tp_name);
        return -1;
    }
    *src = (const char *)view->buf;
    *len = view->len;
    return 0;
}

/* encoded_size(values) -> bytes the TLV encoding of values takes */
static PyObject *encoded_size(PyObject *self, PyObject *arg)
{
    PyObject *fast = PySequence_Fast(arg, "values must be a sequence");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast), total = 0;
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view; const char *src; Py_ssize_t len;
        if (value_of(items[i], i, &view, &src, &len) < 0) { Py_DECREF(fast); return NULL; }
        if (view.obj) PyBuffer_Release(&view);
        if ((size_t)len > MAX_VALUE_LEN) {
            Py_DECREF(fast);
            return PyErr_Format(PyExc_ValueError, "record %zd: value of %zd bytes exceeds the %u-byte limit",
                                i, len, MAX_VALUE_LEN);
        }
        total += 5 + len;
    }
    Py_DECREF(fast);
    return PyLong_FromSsize_t(total);
}

/* encode_into(values, type, out, pos) -> position after the last record written */
static PyObject *encode_into(PyObject *self, PyObject *args)
{
    PyObject *seq; int rtype; Py_buffer out; Py_ssize_t pos;
    if (!PyArg_ParseTuple(args, "Oiw*n", &seq, &rtype, &out, &pos)) return NULL;
    PyObject *fast = PySequence_Fast(seq, "values must be a sequence");
    if (!fast) { PyBuffer_Release(&out); return NULL; }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    unsigned char *dst = (unsigned char *)out.buf;
    PyObject *result = NULL;
    if (rtype < 0 || rtype > 0xFC) {
        PyErr_Format(PyExc_ValueError, "record type 0x%X cannot be encoded as a plain record", rtype);
        goto done;
    }
    if (pos < 0 || pos > out.len) {
        PyErr_Format(PyExc_ValueError, "position %zd outside a buffer of %zd bytes", pos, out.len);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view; const char *src; Py_ssize_t len;
        if (value_of(items[i], i, &view, &src, &len) < 0) goto done;
        if ((size_t)len > MAX_VALUE_LEN || out.len - pos < 5 + len) {
            if (view.obj) PyBuffer_Release(&view);
            if ((size_t)len > MAX_VALUE_LEN)
                PyErr_Format(PyExc_ValueError, "record %zd: value of %zd bytes exceeds the %u-byte limit",
                             i, len, MAX_VALUE_LEN);
            else
                PyErr_Format(PyExc_BufferError, "record %zd does not fit: %zd bytes left at %zd",
                             i, out.len - pos, pos);
            goto done;
        }
        uint32_t l = (uint32_t)len;
        dst[pos] = (unsigned char)rtype;
        dst[pos + 1] = l & 0xFF; dst[pos + 2] = (l >> 8) & 0xFF;
        dst[pos + 3] = (l >> 16) & 0xFF; dst[pos + 4] = (l >> 24) & 0xFF;
        memcpy(dst + pos + 5, src, len);
        pos += 5 + len;
        if (view.obj) PyBuffer_Release(&view);
    }
    result = PyLong_FromSsize_t(pos);
done:
    Py_DECREF(fast);
    PyBuffer_Release(&out);
    return result;
}

/* encode(values, type) -> bytes: the TLV records, built in place in a new bytes object */
static PyObject *encode(PyObject *self, PyObject *args)
{
    PyObject *seq; int rtype;
    if (!PyArg_ParseTuple(args, "Oi", &seq, &rtype)) return NULL;
    PyObject *size = encoded_size(self, seq);
    if (!size) return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(size);
    Py_DECREF(size);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (!out) return NULL;
    PyObject *view = PyMemoryView_FromMemory(PyBytes_AS_STRING(out), n, PyBUF_WRITE);
    if (!view) { Py_DECREF(out); return NULL; }
    PyObject *call = Py_BuildValue("(OiOn)", seq, rtype, view, (Py_ssize_t)0);
    PyObject *end = call ? encode_into(self, call) : NULL;
    Py_XDECREF(call);
    Py_DECREF(view);
    if (!end) { Py_DECREF(out); return NULL; }
    Py_DECREF(end);
    return out;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS, "TLV records of one type as a new bytes object."},
    {"encoded_size", encoded_size, METH_O, "Bytes the TLV encoding of the values takes."},
    {"encode_into", encode_into, METH_VARARGS, "Write values as TLV records of one type into a buffer."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_encode", "TLV encoding into buffers.", -1, methods};

PyMODINIT_FUNC PyInit__encode(void) { return PyModule_Create(&module); }
