/*
 * A hostile FUSE file system for the shm access tests (root only: it mounts with mount(2)). It
 * serves one regular file, "seg" (4096 bytes, mode 0600, owned by the mounting uid), answers
 * INIT, LOOKUP, GETATTR, OPEN and RELEASE, and never answers FLUSH: every close(2) of an fd of
 * "seg" (the kernel sends FLUSH on each one) blocks until this process dies. Everything else
 * gets ENOSYS.
 *
 *   access-fuse <mountpoint>     prints "ready" once mounted, then serves until killed;
 *                                prints "flush" each time a FLUSH arrives (and is left waiting)
 *
 * The test unmounts the directory (lazily) and kills this process by pid; a killed daemon aborts
 * its connection, so whatever waited on it gets an error and goes on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define SEG_INODE 2
#define SEG_BYTES 4096
/* The kernel's request buffer must hold a max_write payload plus headers. */
#define BUF_BYTES (1 << 20)

static int dev;

static void reply(uint64_t unique, int error, const void *body, size_t len) {
  struct fuse_out_header h = { .len = sizeof h + (error ? 0 : len), .error = error, .unique = unique };
  struct iovec iov[2] = { { &h, sizeof h }, { (void *)body, error ? 0 : len } };
  if (writev(dev, iov, 2) < 0 && errno != ENOENT) perror("access-fuse: writev");
}

static void fill_attr(struct fuse_attr *a, uint64_t ino) {
  memset(a, 0, sizeof *a);
  a->ino = ino;
  a->nlink = 1;
  a->uid = getuid();
  a->gid = getgid();
  a->blksize = 4096;
  if (ino == FUSE_ROOT_ID) {
    a->mode = S_IFDIR | 0755;
  } else {
    a->mode = S_IFREG | 0600;
    a->size = SEG_BYTES;
    a->blocks = SEG_BYTES / 512;
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: access-fuse <mountpoint>\n");
    return 2;
  }
  dev = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (dev < 0) {
    perror("access-fuse: /dev/fuse");
    return 1;
  }
  char opts[128];
  snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=%u,group_id=%u,allow_other", dev, getuid(), getgid());
  if (mount("hotpath-fuse", argv[1], "fuse.hotpath", MS_NOSUID | MS_NODEV, opts) != 0) {
    perror("access-fuse: mount");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  char *buf = malloc(BUF_BYTES);
  for (;;) {
    ssize_t n = read(dev, buf, BUF_BYTES);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ENOENT) continue;
      return 0; /* ENODEV: unmounted */
    }
    struct fuse_in_header *in = (struct fuse_in_header *)buf;
    void *arg = buf + sizeof *in;
    switch (in->opcode) {
      case FUSE_INIT: {
        struct fuse_init_in *i = arg;
        struct fuse_init_out o = { .major = FUSE_KERNEL_VERSION, .minor = FUSE_KERNEL_MINOR_VERSION, .max_readahead = i->max_readahead, .max_write = 4096, .max_background = 16, .congestion_threshold = 12 };
        reply(in->unique, 0, &o, sizeof o);
        break;
      }
      case FUSE_LOOKUP: {
        if (in->nodeid != FUSE_ROOT_ID || strcmp((char *)arg, "seg") != 0) {
          reply(in->unique, -ENOENT, NULL, 0);
          break;
        }
        struct fuse_entry_out e = { .nodeid = SEG_INODE, .generation = 1, .entry_valid = 3600, .attr_valid = 3600 };
        fill_attr(&e.attr, SEG_INODE);
        reply(in->unique, 0, &e, sizeof e);
        break;
      }
      case FUSE_GETATTR: {
        struct fuse_attr_out a = { .attr_valid = 3600 };
        fill_attr(&a.attr, in->nodeid);
        reply(in->unique, 0, &a, sizeof a);
        break;
      }
      case FUSE_OPEN: {
        struct fuse_open_out o = { .fh = 1 };
        reply(in->unique, 0, &o, sizeof o);
        break;
      }
      case FUSE_FLUSH:
        printf("flush\n"); /* and never answered */
        fflush(stdout);
        break;
      case FUSE_INTERRUPT:
      case FUSE_FORGET:
      case FUSE_BATCH_FORGET:
        break; /* no reply expected (INTERRUPT: the FLUSH stays unanswered) */
      case FUSE_RELEASE:
        reply(in->unique, 0, NULL, 0);
        break;
      default:
        reply(in->unique, -ENOSYS, NULL, 0);
    }
  }
}
