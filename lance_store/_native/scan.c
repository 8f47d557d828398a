/* The C record scanner: the batch, record and legacy walkers over a segment (CRC-32C is crc32c.c).
   It reads untrusted files, so every read is checked against the buffer length first. */

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "scan.h"
#include "crc32c.h"

/* Keep in step with lance_store/_native/__init__.py (STATUS_*, REASONS). */
enum { ST_END = 0, ST_FAULT = 1, ST_FULL = 2 };
enum {
    R_NONE = 0,
    R_ZERO_TAIL,
    R_UNEXPECTED_TYPE,
    R_TORN_PADDING,
    R_PADDING_NOT_ZERO,
    R_BAD_HEADER_LENGTH,
    R_TORN_BATCH,
    R_BAD_MAGIC,
    R_BAD_VERSION,
    R_HEADER_CRC,
    R_BASE_OFFSET,
    R_PAYLOAD_CRC,
    R_TORN_RECORD,
    R_COUNT_MISMATCH,
    R_BATCH_OUTSIDE,
};

/* The format's constants, as lance_store/records.py and segment/header.py define them. */
#define TLV_HEADER 5u
#define EXT_HEADER 7u
#define TYPE_PADDING 0xFDu
#define TYPE_BATCH 0xFEu
#define TYPE_EXTENDED 0xFFu
#define BATCH_HEADER 72u
#define BATCH_OVERHEAD (TLV_HEADER + BATCH_HEADER)
#define BATCH_MAGIC 0x42434E4Cu /* "LNCB" read little-endian */
#define BATCH_VERSION 1u
#define FLAG_LZ4 1u

static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }

void lnc_init(void) { lnc_crc32c_init(); }

/* ---- batches ----------------------------------------------------------------------- */

int lnc_all_zero(const uint8_t *buf, size_t len, size_t pos)
{
    for (size_t i = pos; i < len; i++)
        if (buf[i])
            return 0;
    return 1;
}

static inline void set_fault(lnc_stop *stop, uint64_t pos, uint64_t offset, int reason, uint64_t expected,
                             uint64_t found)
{
    stop->status = ST_FAULT;
    stop->pos = pos;
    stop->reason = reason;
    stop->fault_pos = pos;
    stop->offset = offset;
    stop->expected = expected;
    stop->found = found;
}

/* Validates the batch whose 0xFE record starts at pos; 0 when valid, else the reason
   (with the details in stop). */
static int check_batch(const uint8_t *buf, size_t len, size_t pos, uint64_t seg_base, lnc_stop *stop)
{
    size_t rem = len - pos;
    uint64_t offset = seg_base + pos;
    if (rem < TLV_HEADER) {
        set_fault(stop, pos, offset, R_TORN_BATCH, BATCH_OVERHEAD, rem);
        return R_TORN_BATCH;
    }
    uint32_t hlen = le32(buf + pos + 1);
    if (hlen != BATCH_HEADER) {
        set_fault(stop, pos, offset, R_BAD_HEADER_LENGTH, BATCH_HEADER, hlen);
        return R_BAD_HEADER_LENGTH;
    }
    if (rem < BATCH_OVERHEAD) {
        set_fault(stop, pos, offset, R_TORN_BATCH, BATCH_OVERHEAD, rem);
        return R_TORN_BATCH;
    }
    const uint8_t *h = buf + pos + TLV_HEADER;
    uint32_t magic = le32(h);
    if (magic != BATCH_MAGIC) {
        set_fault(stop, pos, offset, R_BAD_MAGIC, BATCH_MAGIC, magic);
        return R_BAD_MAGIC;
    }
    if (h[4] != BATCH_VERSION) {
        set_fault(stop, pos, offset, R_BAD_VERSION, BATCH_VERSION, h[4]);
        return R_BAD_VERSION;
    }
    uint32_t stored = le32(h + 68);
    uint32_t computed = lnc_crc32c(0, h, 68);
    if (stored != computed) {
        set_fault(stop, pos, offset, R_HEADER_CRC, stored, computed);
        return R_HEADER_CRC;
    }
    uint64_t base = le64(h + 8);
    if (base != offset) {
        set_fault(stop, pos, offset, R_BASE_OFFSET, offset, base);
        return R_BASE_OFFSET;
    }
    uint32_t plen = le32(h + 60);
    if ((uint64_t)plen > rem - BATCH_OVERHEAD) {
        set_fault(stop, pos, offset, R_TORN_BATCH, (uint64_t)BATCH_OVERHEAD + plen, rem);
        return R_TORN_BATCH;
    }
    stored = le32(h + 64);
    computed = lnc_crc32c(0, buf + pos + BATCH_OVERHEAD, plen);
    if (stored != computed) {
        set_fault(stop, pos, offset, R_PAYLOAD_CRC, stored, computed);
        return R_PAYLOAD_CRC;
    }
    return R_NONE;
}

size_t lnc_scan_batches(const uint8_t *buf, size_t len, size_t pos, uint64_t seg_base, lnc_batch *out,
                        size_t cap, lnc_stop *stop)
{
    size_t k = 0;
    memset(stop, 0, sizeof *stop);
    while (pos < len) {
        size_t rem = len - pos;
        uint8_t type = buf[pos];
        if (type == TYPE_PADDING) {
            if (rem < TLV_HEADER) {
                set_fault(stop, pos, seg_base + pos, R_TORN_PADDING, TLV_HEADER, rem);
                break;
            }
            uint32_t plen = le32(buf + pos + 1);
            if ((uint64_t)plen > rem - TLV_HEADER) {
                set_fault(stop, pos, seg_base + pos, R_TORN_PADDING, (uint64_t)TLV_HEADER + plen, rem);
                break;
            }
            const uint8_t *v = buf + pos + TLV_HEADER;
            size_t i = 0;
            while (i < plen && !v[i])
                i++;
            if (i < plen) {
                set_fault(stop, pos, seg_base + pos, R_PADDING_NOT_ZERO, 0, v[i]);
                break;
            }
            stop->padding_bytes += TLV_HEADER + (size_t)plen;
            pos += TLV_HEADER + (size_t)plen;
            continue;
        }
        if (type != TYPE_BATCH) {
            if (lnc_all_zero(buf, len, pos))
                set_fault(stop, pos, seg_base + pos, R_ZERO_TAIL, 0, 0);
            else
                set_fault(stop, pos, seg_base + pos, R_UNEXPECTED_TYPE, TYPE_BATCH, type);
            break;
        }
        if (k >= cap) {
            stop->status = ST_FULL;
            break;
        }
        if (check_batch(buf, len, pos, seg_base, stop))
            break;
        const uint8_t *h = buf + pos + TLV_HEADER;
        lnc_batch *b = &out[k++];
        b->pos = pos;
        b->base_offset = le64(h + 8);
        b->first_ts = le64(h + 16);
        b->first_key = le64(h + 24);
        b->last_ts = le64(h + 32);
        b->producer_id = le64(h + 40);
        b->producer_seq = le64(h + 48);
        b->record_count = le32(h + 56);
        b->payload_length = le32(h + 60);
        b->header_crc = le32(h + 68);
        b->flags = h[5];
        memset(b->pad, 0, sizeof b->pad);
        pos += BATCH_OVERHEAD + (size_t)b->payload_length;
    }
    stop->pos = pos;
    return k;
}

int64_t lnc_find_batch(const uint8_t *buf, size_t len, size_t pos, uint64_t seg_base)
{
    lnc_stop scratch;
    while (pos < len) {
        const uint8_t *hit = memchr(buf + pos, TYPE_BATCH, len - pos);
        if (!hit)
            return -1;
        pos = (size_t)(hit - buf);
        if (check_batch(buf, len, pos, seg_base, &scratch) == R_NONE)
            return (int64_t)pos;
        pos++;
    }
    return -1;
}

/* ---- records ----------------------------------------------------------------------- */

/* Walks the TLV records in [start, end); writes the first `limit` of them (as long as
   out has room) and returns how many were parsed. */
static uint64_t walk(const uint8_t *buf, size_t start, size_t end, uint64_t delta, uint64_t ts, uint64_t key0,
                     uint32_t batch, uint64_t limit, lnc_records *out, size_t at, lnc_stop *stop)
{
    size_t p = start;
    uint64_t i = 0;
    stop->status = ST_END;
    while (p < end) {
        size_t rem = end - p;
        uint8_t type = buf[p];
        size_t hdr = type == TYPE_EXTENDED ? EXT_HEADER : TLV_HEADER;
        if (rem < hdr) {
            set_fault(stop, p, p + delta, R_TORN_RECORD, hdr, rem);
            break;
        }
        uint16_t ext = 0;
        uint32_t vlen;
        if (type == TYPE_EXTENDED) {
            ext = le16(buf + p + 1);
            vlen = le32(buf + p + 3);
        } else {
            vlen = le32(buf + p + 1);
        }
        if ((uint64_t)vlen > rem - hdr) {
            set_fault(stop, p, p + delta, R_TORN_RECORD, (uint64_t)hdr + vlen, rem);
            break;
        }
        if (out && i < limit) {
            if (at >= out->cap) {
                stop->status = ST_FULL;
                break;
            }
            out->offset[at] = p + delta;
            out->value_pos[at] = p + hdr;
            out->timestamp[at] = ts;
            out->key_low[at] = key0 + i;
            out->length[at] = vlen;
            out->batch[at] = batch;
            out->ext_type[at] = ext;
            out->type[at] = type;
            at++;
        }
        i++;
        p += hdr + (size_t)vlen;
    }
    stop->pos = p;
    return i;
}

size_t lnc_walk_records(const uint8_t *buf, size_t len, size_t start, size_t end, uint64_t delta, uint64_t ts,
                        uint64_t key0, uint32_t batch, uint64_t limit, lnc_records *out, lnc_stop *stop)
{
    memset(stop, 0, sizeof *stop);
    if (end > len)
        end = len;
    if (start > end)
        start = end;
    return (size_t)walk(buf, start, end, delta, ts, key0, batch, limit, out, 0, stop);
}

size_t lnc_batch_records(const uint8_t *buf, size_t len, const lnc_batch *batches, size_t nbatches,
                         lnc_records *out, lnc_stop *stop)
{
    size_t total = 0;
    memset(stop, 0, sizeof *stop);
    for (size_t b = 0; b < nbatches; b++) {
        const lnc_batch *h = &batches[b];
        if (h->flags & FLAG_LZ4)
            continue;
        if (h->pos > len || (uint64_t)h->payload_length > len - h->pos ||
            BATCH_OVERHEAD > len - h->pos - h->payload_length) {
            set_fault(stop, h->pos, h->base_offset, R_BATCH_OUTSIDE,
                      h->pos + BATCH_OVERHEAD + (uint64_t)h->payload_length, len);
            break;
        }
        size_t start = (size_t)h->pos + BATCH_OVERHEAD;
        size_t end = start + h->payload_length;
        uint64_t parsed = walk(buf, start, end, h->base_offset - h->pos, h->first_ts, h->first_key, (uint32_t)b,
                               h->record_count, out, total, stop);
        if (stop->status != ST_END)
            break;
        total += parsed < h->record_count ? (size_t)parsed : h->record_count;
        if (parsed != h->record_count) {
            set_fault(stop, h->pos, h->base_offset, R_COUNT_MISMATCH, h->record_count, parsed);
            break;
        }
    }
    if (stop->status == ST_END)
        stop->pos = len;
    return total;
}
