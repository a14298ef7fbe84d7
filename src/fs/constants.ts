/**
 * Kernel constants the fs layer hands to io_uring. open(2) flags differ between
 * architectures (O_DIRECT and O_DIRECTORY swap places on arm64), so they are chosen here once.
 */
import { StartupError } from "../core/errors.ts";

const arm64 = process.arch === "arm64";
if (process.arch !== "x64" && !arm64) {
  throw new StartupError("ERR_UNSUPPORTED_ARCH", `Shoal's fs layer knows the open(2) flags of x64 and arm64 only, not ${process.arch}`);
}

// open(2) flags.
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_ACCMODE = 3;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_DIRECT = arm64 ? 0o200000 : 0o40000;
export const O_DIRECTORY = arm64 ? 0o40000 : 0o200000;
export const O_NOFOLLOW = arm64 ? 0o100000 : 0o400000;
export const O_CLOEXEC = 0o2000000;

// *at(2) directory and flags.
export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_REMOVEDIR = 0x200;
export const AT_EMPTY_PATH = 0x1000;

// statx(2) mask bits.
export const STATX_BASIC_STATS = 0x7ff;
/** stx_dio_mem_align and stx_dio_offset_align are filled (Linux 6.1+). */
export const STATX_DIOALIGN = 0x2000;
/** stx_dio_read_offset_align is filled (Linux 6.14+; smaller read alignment on some file systems). */
export const STATX_DIO_READ_ALIGN = 0x20000;

// fallocate(2) modes, IORING_OP_FSYNC flags, renameat2(2) flags.
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;

export const IORING_FSYNC_DATASYNC = 1;
export const RENAME_NOREPLACE = 1;

/** File-system magic numbers (statfs f_type) Shoal names in messages and properties. */
export const fsMagic: Record<number, string> = {
  0xef53: "ext4",
  0x58465342: "xfs",
  0x9123683e: "btrfs",
  0xf2f52010: "f2fs",
  0xca451a4e: "bcachefs",
  0x2fc12fc1: "zfs",
  0x01021994: "tmpfs",
  0x858458f6: "ramfs",
  0x794c7630: "overlayfs",
  0x6969: "nfs",
  0xff534d42: "cifs",
  0x65735546: "fuse",
  0x9fa0: "proc",
  0x62656572: "sysfs",
};

/**
 * File systems that accept O_DIRECT but serve it from memory: tmpfs accepts O_DIRECT since
 * Linux 6.6 and ramfs-like mounts copy anyway, so there is no DMA and no device to schedule.
 */
export const memoryBackedFs = new Set([0x01021994, 0x858458f6]);

/** The name of a file-system magic number ("ext4"), or its hex value. */
export function fsName(magic: number): string {
  return fsMagic[magic] ?? `0x${magic.toString(16)}`;
}
