/* TLV encoding of a list of byte strings straight into a caller's buffer, and the
 * filling of a whole write group (batch headers included) from the asyncio queue.
 *
 * The producer and append paths hand whole lists of values; this copies each
 * header and value into place (an aligned O_DIRECT buffer, or a frame) without
 * building intermediate Python objects. Only bytes-like values of one type.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include "crc32c.h"

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

/* Copy n values as TLV records of type rtype into dst[pos:cap]; the position after
   the last record, or -1 with an exception set. */
static Py_ssize_t put_values(PyObject **items, Py_ssize_t n, int rtype, unsigned char *dst,
                             Py_ssize_t cap, Py_ssize_t pos)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view; const char *src; Py_ssize_t len;
        if (value_of(items[i], i, &view, &src, &len) < 0) return -1;
        if ((size_t)len > MAX_VALUE_LEN || cap - pos < 5 + len) {
            if (view.obj) PyBuffer_Release(&view);
            if ((size_t)len > MAX_VALUE_LEN)
                PyErr_Format(PyExc_ValueError, "record %zd: value of %zd bytes exceeds the %u-byte limit",
                             i, len, MAX_VALUE_LEN);
            else
                PyErr_Format(PyExc_BufferError, "record %zd does not fit: %zd bytes left at %zd",
                             i, cap - pos, pos);
            return -1;
        }
        uint32_t l = (uint32_t)len;
        dst[pos] = (unsigned char)rtype;
        dst[pos + 1] = l & 0xFF; dst[pos + 2] = (l >> 8) & 0xFF;
        dst[pos + 3] = (l >> 16) & 0xFF; dst[pos + 4] = (l >> 24) & 0xFF;
        memcpy(dst + pos + 5, src, len);
        pos += 5 + len;
        if (view.obj) PyBuffer_Release(&view);
    }
    return pos;
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
    pos = put_values(items, n, rtype, dst, out.len, pos);
    if (pos < 0) goto done;
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

/* ---- group building ---------------------------------------------------------------- */

#define BATCH_OVERHEAD 77   /* TLV(0xFE, 72) + the 72-byte batch header, FORMAT.md section 3 */
#define SEQ_MASK ((1ULL << 40) - 1)

/* Fields of a queued batch (lance_store.groupfill.Queued, a NamedTuple). */
enum { Q_SIZE, Q_FUTURE, Q_DATA, Q_RTYPE, Q_COUNT, Q_TS, Q_PID, Q_PSEQ, Q_FIELDS };

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = v & 0xFF; p[1] = (v >> 8) & 0xFF; p[2] = (v >> 16) & 0xFF; p[3] = v >> 24;
}

static void put_le64(unsigned char *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

/* The 0xFE record in front of a batch: same bytes as BatchHeader.pack. */
static void put_header(unsigned char *h, uint64_t base, uint64_t ts, uint64_t low, uint64_t pid,
                       uint64_t pseq, uint32_t count, uint32_t plen, uint32_t pcrc)
{
    h[0] = 0xFE;
    put_le32(h + 1, 72);
    unsigned char *b = h + 5;
    memcpy(b, "LNCB", 4);
    b[4] = 1; b[5] = 0; b[6] = 0; b[7] = 0;      /* version, flags, reserved */
    put_le64(b + 8, base);
    put_le64(b + 16, ts);
    put_le64(b + 24, low);
    put_le64(b + 32, ts);                       /* last timestamp: one stamp per batch */
    put_le64(b + 40, pid);
    put_le64(b + 48, pseq);
    put_le32(b + 56, count);
    put_le32(b + 60, plen);
    put_le32(b + 64, pcrc);
    put_le32(b + 68, lnc_crc32c(0, b, 68));
}

static int as_u64(PyObject *o, uint64_t *out, const char *what, Py_ssize_t i)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "queued batch %zd: %s is not an unsigned 64-bit integer", i, what);
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *str_popleft;   /* interned "popleft" */

/* A tuple of the given type (a tuple subclass such as a NamedTuple) holding `n` new
   references, built the way tuple's own subtype constructor does it, without running a
   Python __new__; the references are stolen, also on failure. */
static PyObject *tuple_of(PyTypeObject *type, Py_ssize_t n, PyObject **items)
{
    PyObject *t = NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!items[i]) goto fail;
    t = type == &PyTuple_Type ? PyTuple_New(n) : type->tp_alloc(type, n);
    if (!t) goto fail;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(t, i, items[i]);
    return t;
fail:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

/* fill_group(queue, buf, fill, cursor, cursor_limit, wall_ns, last_ns, sequence, key_prefix,
 *            producers, result_type)
 *   -> (fill, cursor, last_ns, sequence, pending, waiters)
 *
 * Takes batches from the head of `queue` (a deque of groupfill.Queued) while they fit in buf and
 * below cursor_limit (the first is always taken), writing each as header + records at
 * buf[fill:], stamped with the hybrid clock's rule (timestamps strictly increase, key
 * sequences count records). pending gets (offset, ts, key_low) per batch for the index,
 * waiters (future, result_type(...)) for the completion; producers[pid] = (seq, offset).
 * The caller holds the topic's and the clock's locks. */
static PyObject *fill_group(PyObject *self, PyObject *args)
{
    PyObject *queue, *producers, *result_type;
    Py_buffer out;
    Py_ssize_t fill;
    unsigned long long cursor, cursor_limit, wall, last, seq, prefix;
    if (!PyArg_ParseTuple(args, "Ow*nKKKKKKOO", &queue, &out, &fill, &cursor, &cursor_limit, &wall,
                          &last, &seq, &prefix, &producers, &result_type))
        return NULL;
    unsigned char *dst = (unsigned char *)out.buf;
    PyObject *pending = PyList_New(0), *waiters = PyList_New(0), *ret = NULL;
    Py_ssize_t n_taken = 0;
    if (!pending || !waiters) goto done;
    for (Py_ssize_t taken = 0;; taken++) {
        if (PySequence_Length(queue) <= taken) break;
        PyObject *q = PySequence_GetItem(queue, taken);
        if (!q) goto done;
        if (!PyTuple_Check(q) || PyTuple_GET_SIZE(q) != Q_FIELDS) {
            Py_DECREF(q);
            PyErr_SetString(PyExc_TypeError, "queue entries must be groupfill.Queued tuples");
            goto done;
        }
        Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(q, Q_SIZE));
        if (size < 0) { Py_DECREF(q); if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "negative size"); goto done; }
        Py_ssize_t total = BATCH_OVERHEAD + size;
        if (total > out.len - fill || cursor + (unsigned long long)total > cursor_limit) {
            Py_DECREF(q);
            if (taken) break;
            PyErr_Format(PyExc_BufferError, "a batch of %zd bytes does not fit a group with %zd bytes left",
                         total, out.len - fill);
            goto done;
        }
        uint64_t pid, pseq, count, ts;
        PyObject *tso = PyTuple_GET_ITEM(q, Q_TS);
        if (as_u64(PyTuple_GET_ITEM(q, Q_PID), &pid, "producer_id", taken) < 0 ||
            as_u64(PyTuple_GET_ITEM(q, Q_PSEQ), &pseq, "producer_seq", taken) < 0 ||
            as_u64(PyTuple_GET_ITEM(q, Q_COUNT), &count, "record_count", taken) < 0 ||
            (tso != Py_None && as_u64(tso, &ts, "timestamp_ns", taken) < 0)) {
            Py_DECREF(q);
            goto done;
        }
        if (tso == Py_None) ts = wall;
        int rtype = _PyLong_AsInt(PyTuple_GET_ITEM(q, Q_RTYPE));
        PyObject *data = PyTuple_GET_ITEM(q, Q_DATA);
        Py_ssize_t start = fill + BATCH_OVERHEAD, end;
        if (rtype < 0) {
            Py_buffer view;
            if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) { Py_DECREF(q); goto done; }
            if (view.len != size) {
                PyBuffer_Release(&view); Py_DECREF(q);
                PyErr_Format(PyExc_ValueError, "queued batch %zd: payload of %zd bytes, size says %zd",
                             taken, view.len, size);
                goto done;
            }
            memcpy(dst + start, view.buf, size);
            PyBuffer_Release(&view);
            end = start + size;
        } else {
            PyObject *fast = PySequence_Fast(data, "values must be a sequence");
            if (!fast) { Py_DECREF(q); goto done; }
            end = put_values(PySequence_Fast_ITEMS(fast), PySequence_Fast_GET_SIZE(fast), rtype, dst,
                             start + size, start);
            Py_DECREF(fast);
            if (end < 0) { Py_DECREF(q); goto done; }
            if (end != start + size) {
                Py_DECREF(q);
                PyErr_Format(PyExc_ValueError, "queued batch %zd: records took %zd bytes, size says %zd",
                             taken, end - start, size);
                goto done;
            }
        }
        /* The hybrid clock's rule (sortkey.HybridClock.stamp). */
        ts = ts > last ? ts : last + 1;
        last = ts;
        uint64_t low = prefix | (seq & SEQ_MASK);
        seq = (seq + count) & SEQ_MASK;
        put_header(dst + fill, cursor, ts, low, pid, pseq, (uint32_t)count, (uint32_t)size,
                   lnc_crc32c(0, dst + start, (size_t)size));

        /* result_type(offset, next_offset, record_count, ts, key_low), and for the index
           (offset, ts, key_low): the three shared ints are made once. */
        PyObject *off_o = PyLong_FromUnsignedLongLong(cursor);
        PyObject *ts_o = PyLong_FromUnsignedLongLong(ts);
        PyObject *low_o = PyLong_FromUnsignedLongLong(low);
        PyObject *count_o = PyTuple_GET_ITEM(q, Q_COUNT);
        Py_XINCREF(off_o); Py_XINCREF(ts_o); Py_XINCREF(low_o); Py_INCREF(count_o);
        PyObject *rfields[5] = {off_o, PyLong_FromUnsignedLongLong(cursor + (unsigned long long)total),
                                count_o, ts_o, low_o};
        PyObject *result = tuple_of((PyTypeObject *)result_type, 5, rfields);
        PyObject *future = PyTuple_GET_ITEM(q, Q_FUTURE);
        Py_INCREF(future);
        PyObject *wfields[2] = {future, result};
        PyObject *w = tuple_of(&PyTuple_Type, 2, wfields);
        PyObject *pfields[3] = {off_o, ts_o, low_o};
        PyObject *pend = tuple_of(&PyTuple_Type, 3, pfields);
        int bad = !w || !pend || PyList_Append(waiters, w) < 0 || PyList_Append(pending, pend) < 0;
        Py_XDECREF(w);
        Py_XDECREF(pend);
        if (!bad && pid) {
            PyObject *key = PyLong_FromUnsignedLongLong(pid);
            PyObject *val = Py_BuildValue("(KK)", pseq, cursor);
            bad = !key || !val || PyDict_SetItem(producers, key, val) < 0;
            Py_XDECREF(key);
            Py_XDECREF(val);
        }
        Py_DECREF(q);
        if (bad) goto done;
        fill = end;
        cursor += total;
        n_taken = taken + 1;
    }
    /* Only a group that was filled whole leaves the queue: after an error every
       batch is still queued, where the caller fails them all. */
    for (Py_ssize_t i = 0; i < n_taken; i++) {
        PyObject *popped = PyObject_CallMethodNoArgs(queue, str_popleft);
        if (!popped) goto done;
        Py_DECREF(popped);
    }
    ret = Py_BuildValue("(nKKKOO)", fill, cursor, last, seq, pending, waiters);
done:
    Py_XDECREF(pending);
    Py_XDECREF(waiters);
    PyBuffer_Release(&out);
    return ret;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS, "TLV records of one type as a new bytes object."},
    {"encoded_size", encoded_size, METH_O, "Bytes the TLV encoding of the values takes."},
    {"encode_into", encode_into, METH_VARARGS, "Write values as TLV records of one type into a buffer."},
    {"fill_group", fill_group, METH_VARARGS, "Fill a group buffer with queued batches, headers included."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_encode", "TLV encoding into buffers.", -1, methods};

PyMODINIT_FUNC PyInit__encode(void)
{
    lnc_crc32c_init();
    str_popleft = PyUnicode_InternFromString("popleft");
    if (!str_popleft) return NULL;
    return PyModule_Create(&module);
}
