/* The io_uring group writer: one call queues and submits a group of writes with its sync,
   one call reaps a batch of completions, so Python pays one call per group, not per I/O. */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <liburing.h>
#include "uring.h"

#ifndef RWF_DSYNC
#define RWF_DSYNC 0x00000002
#endif

#define REAP_CHUNK 64

struct lnc_ring {
    struct io_uring ring;
    struct iovec *bufs;   /* registered buffers, searched to pick WRITE_FIXED */
    unsigned nbufs;
    unsigned entries;
};

/* Refuse kernels that would drop completions or lack an opcode, so the caller falls
   back to the portable backend instead of failing later in the middle of a write. */
static int check_kernel(struct io_uring *ring)
{
    static const int needed[] = {IORING_OP_WRITE, IORING_OP_WRITE_FIXED, IORING_OP_FSYNC,
                                 IORING_OP_NOP};
    struct io_uring_probe *probe;
    unsigned i;
    int rc = 0;

    if (!(ring->features & IORING_FEAT_NODROP))
        return -ENOSYS;
    probe = io_uring_get_probe_ring(ring);
    if (!probe)
        return -ENOSYS;
    for (i = 0; i < sizeof needed / sizeof needed[0]; i++)
        if (!io_uring_opcode_supported(probe, needed[i]))
            rc = -ENOSYS;
    io_uring_free_probe(probe);
    return rc;
}

int lnc_ring_open(lnc_ring **out, unsigned entries, int eventfd)
{
    lnc_ring *r = calloc(1, sizeof *r);
    int rc;

    if (!r)
        return -ENOMEM;
    /* No COOP_TASKRUN: completions must wake a thread sleeping in epoll on the eventfd. */
    rc = io_uring_queue_init(entries, &r->ring, 0);
    if (rc < 0) {
        free(r);
        return rc;
    }
    rc = check_kernel(&r->ring);
    if (rc == 0 && eventfd >= 0)
        rc = io_uring_register_eventfd(&r->ring, eventfd);
    if (rc < 0) {
        io_uring_queue_exit(&r->ring);
        free(r);
        return rc;
    }
    r->entries = r->ring.sq.ring_entries;
    *out = r;
    return 0;
}

void lnc_ring_close(lnc_ring *r)
{
    if (!r)
        return;
    io_uring_queue_exit(&r->ring);
    free(r->bufs);
    free(r);
}

unsigned lnc_ring_capacity(lnc_ring *r)
{
    return r->entries;
}

int lnc_ring_register_buffers(lnc_ring *r, const lnc_piece *bufs, unsigned n)
{
    struct iovec *iov;
    unsigned i;
    int rc;

    if (r->nbufs)
        lnc_ring_unregister_buffers(r);
    iov = calloc(n ? n : 1, sizeof *iov);
    if (!iov)
        return -ENOMEM;
    for (i = 0; i < n; i++) {
        iov[i].iov_base = (void *)bufs[i].buf;
        iov[i].iov_len = bufs[i].len;
    }
    rc = io_uring_register_buffers(&r->ring, iov, n);
    if (rc < 0) {
        free(iov);
        return rc;
    }
    r->bufs = iov;
    r->nbufs = n;
    return 0;
}

int lnc_ring_unregister_buffers(lnc_ring *r)
{
    int rc = 0;

    if (r->nbufs)
        rc = io_uring_unregister_buffers(&r->ring);
    free(r->bufs);
    r->bufs = NULL;
    r->nbufs = 0;
    return rc;
}

/* Index of the registered buffer holding [buf, buf + len), or -1. */
static int fixed_index(const lnc_ring *r, const void *buf, uint32_t len)
{
    const char *p = buf;
    unsigned i;

    for (i = 0; i < r->nbufs; i++) {
        const char *base = r->bufs[i].iov_base;
        if (p >= base && p + len <= base + r->bufs[i].iov_len)
            return (int)i;
    }
    return -1;
}

static int submit_queued(lnc_ring *r)
{
    int rc;

    do
        rc = io_uring_submit(&r->ring);
    while (rc == -EINTR);
    /* On EAGAIN/EBUSY the SQEs stay queued in the ring; lnc_ring_flush submits them later. */
    if (rc == -EAGAIN || rc == -EBUSY)
        return 0;
    return rc < 0 ? rc : 0;
}

/* Queue and submit one group: write i gets user_data + i, the linked fdatasync (when
   asked for) user_data + n. Returns the number of SQEs (each yields one completion) or
   -errno; -EAGAIN when the submission queue has no room for the whole chain now. */
int lnc_ring_submit_group(lnc_ring *r, int fd, const lnc_piece *pieces, unsigned n,
                          int sync, uint64_t user_data, unsigned *fixed)
{
    int link_fsync = sync == LNC_SYNC_FSYNC || (sync != LNC_SYNC_NONE && n == 0);
    unsigned need = n + (link_fsync ? 1 : 0);
    unsigned nfixed = 0, i;
    struct io_uring_sqe *sqe;
    int rc;

    if (need == 0)
        return 0;
    if (need > r->entries)
        return -E2BIG;
    /* A link chain must go to the kernel in one submission, so it needs room as a whole. */
    if (io_uring_sq_space_left(&r->ring) < need) {
        rc = submit_queued(r);
        if (rc < 0)
            return rc;
        if (io_uring_sq_space_left(&r->ring) < need)
            return -EAGAIN;
    }
    for (i = 0; i < n; i++) {
        const lnc_piece *p = &pieces[i];
        int idx = fixed_index(r, p->buf, p->len);

        sqe = io_uring_get_sqe(&r->ring);
        if (idx >= 0) {
            io_uring_prep_write_fixed(sqe, fd, p->buf, p->len, p->offset, idx);
            nfixed++;
        } else {
            io_uring_prep_write(sqe, fd, p->buf, p->len, p->offset);
        }
        if (sync == LNC_SYNC_DSYNC)
            sqe->rw_flags = RWF_DSYNC;
        if (link_fsync)
            sqe->flags |= IOSQE_IO_LINK;
        io_uring_sqe_set_data64(sqe, user_data + i);
    }
    if (link_fsync) {
        sqe = io_uring_get_sqe(&r->ring);
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data64(sqe, user_data + n);
    }
    if (fixed)
        *fixed = nfixed;
    rc = submit_queued(r);
    return rc < 0 ? rc : (int)need;
}

int lnc_ring_flush(lnc_ring *r)
{
    return submit_queued(r);
}

unsigned lnc_ring_pending(lnc_ring *r)
{
    return io_uring_sq_ready(&r->ring);
}

/* A no-op whose completion wakes a thread blocked in lnc_ring_wait. */
int lnc_ring_kick(lnc_ring *r, uint64_t user_data)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

    if (!sqe)
        return -EAGAIN;
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, user_data);
    return submit_queued(r);
}

/* Block until at least one completion is ready, without consuming it, or for at most
   a few milliseconds: another thread (an event loop reaping through the eventfd) may
   consume the completion this one waits for, kick included, so the caller re-checks
   its condition after every return. Returns -EINTR on a signal so the caller can run
   its handlers. Touches only the completion queue. */
int lnc_ring_wait(lnc_ring *r)
{
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 5 * 1000 * 1000};
    int rc = io_uring_wait_cqe_timeout(&r->ring, &cqe, &ts);

    return rc == -ETIME ? 0 : rc;
}

unsigned lnc_ring_reap(lnc_ring *r, lnc_completion *out, unsigned max)
{
    struct io_uring_cqe *cqes[REAP_CHUNK];
    unsigned done = 0;

    while (done < max) {
        unsigned want = max - done < REAP_CHUNK ? max - done : REAP_CHUNK;
        unsigned got = io_uring_peek_batch_cqe(&r->ring, cqes, want);
        unsigned i;

        for (i = 0; i < got; i++) {
            out[done + i].user_data = cqes[i]->user_data;
            out[done + i].res = cqes[i]->res;
            out[done + i].pad = 0;
        }
        io_uring_cq_advance(&r->ring, got);
        done += got;
        if (got < want)
            break;
    }
    return done;
}
