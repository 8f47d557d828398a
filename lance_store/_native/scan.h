/* Declarations of the C record scanner; the cffi build reads this file as its cdef,
   so it holds only plain typedefs and prototypes (no preprocessor lines). */

/* One valid batch header, laid out to match BATCH_DTYPE in lance_store._native. */
typedef struct {
    uint64_t pos;
    uint64_t base_offset;
    uint64_t first_ts;
    uint64_t first_key;
    uint64_t last_ts;
    uint64_t producer_id;
    uint64_t producer_seq;
    uint32_t record_count;
    uint32_t payload_length;
    uint32_t header_crc;
    uint8_t flags;
    uint8_t pad[3];
} lnc_batch;

/* Why and where a scan stopped. */
typedef struct {
    uint64_t pos;
    uint64_t padding_bytes;
    uint64_t fault_pos;
    uint64_t offset;
    uint64_t expected;
    uint64_t found;
    int32_t status;
    int32_t reason;
} lnc_stop;

/* Column outputs of a record scan; cap is how many rows each column holds. */
typedef struct {
    uint64_t *offset;
    uint64_t *value_pos;
    uint64_t *timestamp;
    uint64_t *key_low;
    uint32_t *length;
    uint32_t *batch;
    uint16_t *ext_type;
    uint8_t *type;
    size_t cap;
} lnc_records;

void lnc_init(void);
int lnc_crc32c_accelerated(void);
uint32_t lnc_crc32c(uint32_t crc, const uint8_t *p, size_t n);
uint32_t lnc_crc32c_portable(uint32_t crc, const uint8_t *p, size_t n);
int lnc_all_zero(const uint8_t *buf, size_t len, size_t pos);
size_t lnc_scan_batches(const uint8_t *buf, size_t len, size_t pos, uint64_t seg_base,
                        lnc_batch *out, size_t cap, lnc_stop *stop);
int64_t lnc_find_batch(const uint8_t *buf, size_t len, size_t pos, uint64_t seg_base);
size_t lnc_walk_records(const uint8_t *buf, size_t len, size_t start, size_t end,
                        uint64_t delta, uint64_t ts, uint64_t key0, uint32_t batch,
                        uint64_t limit, lnc_records *out, lnc_stop *stop);
size_t lnc_batch_records(const uint8_t *buf, size_t len, const lnc_batch *batches,
                         size_t nbatches, lnc_records *out, lnc_stop *stop);
