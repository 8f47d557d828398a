/* Declarations of the io_uring group writer; the cffi build reads this file as its cdef,
   so it holds only plain typedefs and prototypes (no preprocessor lines). */

/* One write of a group: `len` bytes from `buf` to file offset `offset`. */
typedef struct {
    const void *buf;
    uint32_t len;
    uint64_t offset;
} lnc_piece;

/* One completion: the user_data of its submission and the kernel's result. */
typedef struct {
    uint64_t user_data;
    int32_t res;
    uint32_t pad;
} lnc_completion;

typedef struct lnc_ring lnc_ring;

/* How a group is made durable: not at all, RWF_DSYNC on each write, or a linked
   fdatasync after the writes (IOSQE_IO_LINK chains them; nothing ever drains the ring). */
enum { LNC_SYNC_NONE = 0, LNC_SYNC_DSYNC = 1, LNC_SYNC_FSYNC = 2 };

int lnc_ring_open(lnc_ring **out, unsigned entries, int eventfd);
void lnc_ring_close(lnc_ring *r);
unsigned lnc_ring_capacity(lnc_ring *r);
int lnc_ring_register_buffers(lnc_ring *r, const lnc_piece *bufs, unsigned n);
int lnc_ring_unregister_buffers(lnc_ring *r);
int lnc_ring_submit_group(lnc_ring *r, int fd, const lnc_piece *pieces, unsigned n,
                          int sync, uint64_t user_data, unsigned *fixed);
int lnc_ring_flush(lnc_ring *r);
unsigned lnc_ring_pending(lnc_ring *r);
int lnc_ring_kick(lnc_ring *r, uint64_t user_data);
int lnc_ring_wait(lnc_ring *r);
unsigned lnc_ring_reap(lnc_ring *r, lnc_completion *out, unsigned max);
